"""An evaluation set with exact masks, made from the shared real photos (nothing is copied into the project).

Every shared segmentation photo gives a subject (its pixels with the reference mask as alpha: the U²-Net
masks for the u2net set, the authors' IS-Net masks for the pets) and a background plate (the same photo
with its subject inpainted away at low resolution, so no second salient object competes; only photos whose
subject covers at most ``MAX_HOLE`` of the frame, as a bigger hole leaves a ghost). Each subject is
pasted once per size band onto another photo's plate (long side ``FRAME`` px), at a random position; the
pasted alpha thresholded at 0.5 is the ground truth. Thin subjects (bike spokes, whisk, rifles, masts,
horse legs) are in the u2net set. Seeded, so the set is the same on every run.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from gen4gen.images import read_image

FRAME = 1024
# subject's box area as a fraction of the frame
BANDS = [(0.05, 0.10), (0.10, 0.20), (0.20, 0.40), (0.40, 0.60)]
SOURCES = [("u2net", "u2net_ref"), ("gen4gen", "isnet_ref")]
# a photo whose subject covers more than this leaves too big a hole to fill: it is not used as a background
MAX_HOLE = 0.25


@dataclass
class Case:
    name: str
    rgb: np.ndarray  # HxWx3 uint8
    truth: np.ndarray  # HxW bool
    band: str
    plate: str  # the photo whose background it is pasted on
    subject: str = ""  # the photo whose subject it is: a subject's four cases are one concept's photos
    # the pasted subject's own colours and soft alpha (its box only, placed at ``at``): the exact foreground
    fg: np.ndarray | None = None
    alpha: np.ndarray | None = None
    at: tuple[int, int] = (0, 0)


def band_name(lo: float, hi: float) -> str:
    return f"{round(lo * 100)}-{round(hi * 100)} %"


def _subjects(shared: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    out = []
    for s, ref in SOURCES:
        for p in sorted((shared / "segmentation" / s / "images").iterdir()):
            rgb = read_image(p)
            alpha = read_image(shared / "segmentation" / s / ref / f"{p.stem}.png", mode="L")
            out.append((p.stem, rgb, alpha))
    return out


def _fit(rgb: np.ndarray, long_side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    s = long_side / max(h, w)
    return cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)


def plate(rgb: np.ndarray, alpha: np.ndarray, work: int = 64) -> np.ndarray:
    """The photo with its subject inpainted away: Telea at ``work`` px (a coarse fill is smooth; a fine one
    leaves salient streaks), upsampled, blurred and feathered into the hole only."""
    h, w = rgb.shape[:2]
    hole = cv2.dilate((alpha > 16).astype(np.uint8), np.ones((15, 15), np.uint8), iterations=2)
    s = min(1.0, work / max(h, w))
    ws = (max(1, round(w * s)), max(1, round(h * s)))
    small = cv2.inpaint(cv2.resize(rgb, ws, interpolation=cv2.INTER_AREA),
                        cv2.resize(hole, ws, interpolation=cv2.INTER_NEAREST), 5, cv2.INPAINT_TELEA)
    filled = cv2.GaussianBlur(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), (0, 0), max(h, w) / 100)
    k = max(h, w) // 50 * 2 + 1
    a = cv2.GaussianBlur(hole.astype(np.float32), (k, k), 0)[..., None]
    return (filled * a + rgb * (1 - a) + 0.5).astype(np.uint8)


def build(shared: Path, seed: int = 0) -> list[Case]:
    rng = np.random.default_rng(seed)
    subjects = _subjects(shared)
    plates = {k: _fit(plate(rgb, a), FRAME) for k, (_, rgb, a) in enumerate(subjects) if (a >= 128).mean() <= MAX_HOLE}
    cases = []
    for i, (name, rgb, alpha) in enumerate(subjects):
        ys, xs = np.nonzero(alpha >= 128)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        fg, fa = rgb[y0:y1, x0:x1], alpha[y0:y1, x0:x1]
        for lo, hi in BANDS:
            j = int(rng.choice([k for k in plates if k != i]))
            bg = plates[j]
            H, W = bg.shape[:2]
            frac = rng.uniform(lo, hi)
            s = np.sqrt(frac * W * H / (fg.shape[0] * fg.shape[1]))
            s = min(s, W / fg.shape[1], H / fg.shape[0])  # a long subject may not reach the band's top
            w, h = max(1, round(fg.shape[1] * s)), max(1, round(fg.shape[0] * s))
            interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
            f = cv2.resize(fg, (w, h), interpolation=interp).astype(np.float32)
            a = cv2.resize(fa, (w, h), interpolation=interp).astype(np.float32)[..., None] / 255
            x, y = int(rng.integers(0, W - w + 1)), int(rng.integers(0, H - h + 1))
            out = bg.astype(np.float32)
            out[y:y + h, x:x + w] = out[y:y + h, x:x + w] * (1 - a) + f * a
            truth = np.zeros((H, W), bool)
            truth[y:y + h, x:x + w] = a[..., 0] >= 0.5
            cases.append(Case(f"{name}_on_{subjects[j][0]}_{round(frac * 100)}", (out + 0.5).astype(np.uint8),
                              truth, band_name(lo, hi), subjects[j][0], name,
                              (f + 0.5).astype(np.uint8), a[..., 0].astype(np.float16), (x, y)))
    return cases
