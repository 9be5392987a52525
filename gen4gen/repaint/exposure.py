"""A pasted concept re-exposed for the place it is pasted into.

A cut-out keeps the exposure of the photo it came from: a dog shot against a bright sky was exposed for the
sky and is dark; pasted onto a dim meadow it stays as dark, or a dog shot indoors stays bright on snow. In a
photograph the subject and the ground right around it are lit by the same light, so what the camera records is
the ratio of their reflectances, and that ratio is what the subject keeps from its own photo. Re-exposing the
cut-out scales its linear light by ``around(new place) / around(its own photo)``, "around" being the mean
luminance of a ring of background around the subject (spot metering of its surroundings): it then stands to
its new surroundings as it stood to its old ones, and the subject/surround contrast of the composites keeps the
spread it has in real photographs. Moving a subject's brightness toward its surroundings instead
(``harmonize``, ``match_light``) removes that contrast (benchmarks/RESULTS.md, "Scenes on the CPU path").

s2 meters the ring in the cut-out's photo (``metered_light``: s1 keeps the photo's colours outside the subject)
and records it per object in ``layout.json`` (``source_light``); s3 meters the same ring, relative to the
object's size, on the background plate and applies the gain (``expose``). Exposure is a gain on luminance only:
colour balance is left alone (the cameras white-balanced both photos; the measured colour-cast spread of the
composites already matches real photographs).
"""
from __future__ import annotations

import cv2
import numpy as np

# sRGB <-> linear light (IEC 61966-2-1), as 8-bit lookup tables: a concept's pixels are converted in place
_LINEAR = np.where((c := np.arange(256) / 255.0) <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)
_LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)  # linear RGB -> relative luminance Y
METER_SIDE = 256  # px: the long side a cut-out's photo is metered at (a mean needs no detail)
RING = (0.02, 0.15)  # the metered ring around a subject, from / to, in units of the subject's size
ALPHA_0 = 0.05  # alpha under this is background
MIN_RING = 30  # px: fewer in the ring meter nothing
RECOLOURED = 2  # px: s1's foreground estimate also recolours transparent pixels this close to the matte
DARK = 0.002  # linear Y: a transparent pixel this dark is a cut-out's black surround, not a photo


def to_linear(rgb: np.ndarray) -> np.ndarray:
    """uint8 sRGB -> float32 linear light 0..1."""
    return _LINEAR[rgb]


def to_srgb(linear: np.ndarray) -> np.ndarray:
    """float linear light -> float sRGB 0..255 (unrounded, clipped at white)."""
    c = np.clip(linear, 0.0, 1.0)
    return 255.0 * np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.power(c, 1 / 2.4) - 0.055)


def ring(solid: np.ndarray, alpha: np.ndarray, outside: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """The background ring around each part (``labels`` of the nearest part, ``outside`` its distance): pixels
    with no alpha between ``RING[0]`` and ``RING[1]`` of the part's size (square root of its area) from it."""
    size = np.sqrt(np.bincount(labels[solid], minlength=n).astype(np.float32))
    lo, hi = (np.maximum(RING[0] * size, 1.0), np.maximum(RING[1] * size, 3.0))
    return (alpha < ALPHA_0) & (outside > lo[labels]) & (outside <= hi[labels])


def metered_light(rgb: np.ndarray, alpha: np.ndarray) -> float | None:
    """The mean linear luminance of the ring of photo around a cut-out's subject (``rgb`` the whole photo as s1
    stores it, ``alpha`` uint8), on a small copy; None when there is too little photo there (a subject that fills
    the frame) or it is a black surround (a cut-out with no photo around its subject)."""
    h, w = alpha.shape
    f = min(1.0, METER_SIDE / max(h, w))
    size = (max(1, round(w * f)), max(1, round(h * f)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA) if f < 1 else rgb
    a = (cv2.resize(alpha, size, interpolation=cv2.INTER_AREA) if f < 1 else alpha).astype(np.float32) / 255.0
    solid = a >= 0.5
    if not solid.any():
        return None
    # only the photo as it was shot: s1 recolours every pixel of the matte with alpha > 0 (a segmenter's faint haze
    # reaches far) and those within RECOLOURED px of it with the estimated foreground, which darkened the
    # surroundings of a dark subject up to 3x (benchmarks/RESULTS.md, "Light on the subjects' own photos")
    matte = alpha > 0
    touched = (cv2.resize(matte.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0) if f < 1 else matte
    r = int(np.ceil(RECOLOURED * f))
    touched = cv2.dilate(touched.astype(np.uint8), np.ones((2 * r + 1,) * 2, np.uint8)) > 0
    outside = cv2.distanceTransform((~solid).astype(np.uint8), cv2.DIST_L2, 3)
    around = ring(solid, a, outside, np.ones(solid.shape, np.int32), 2) & ~touched  # the subject as one part
    y = to_linear(small[around]) @ _LUMA
    if y.size < MIN_RING or (y > DARK).mean() < 0.5:
        return None
    return float(y.mean())


def exposure_gains(target: np.ndarray, sources: np.ndarray, strength: float, max_gain: float) -> np.ndarray:
    """Per object: ``(target / source) ** strength``, within ``[1 / max_gain, max_gain]``; 1 where the source is
    unknown (NaN)."""
    known = np.isfinite(sources) & (sources > 0) & (target > 0)
    ratio = np.where(known, target / np.where(known, sources, 1.0), 1.0)
    return np.clip(ratio ** strength, 1.0 / max_gain, max_gain).astype(np.float32)


def object_lights(solid: np.ndarray,
                  lights: list[tuple[list[int], float | None]]) -> tuple[int, np.ndarray, np.ndarray]:
    """Connected parts of ``solid``: their count, labels (HxW) and per label the metered light of the layout
    object whose box (x, y, w, h) covers most of that part's box (NaN: none). Objects that overlap on the canvas
    are one part."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(solid.astype(np.uint8), connectivity=8)
    out = np.full(n, np.nan, np.float64)
    for k in range(1, n):
        x, y, bw, bh = (int(v) for v in stats[k, :4])
        best = 0
        for (ox, oy, ow, oh), light in lights:
            overlap = max(0, min(x + bw, ox + ow) - max(x, ox)) * max(0, min(y + bh, oy + oh) - max(y, oy))
            if overlap > best and light is not None:
                best, out[k] = overlap, light
    return n, labels, out


def expose(rgb: np.ndarray, alpha: np.ndarray, solid: np.ndarray, background: np.ndarray,
           lights: list[tuple[list[int], float | None]], strength: float, max_gain: float) -> np.ndarray:
    """``rgb`` (the concepts' colours) with each object's linear light scaled by the ratio of the ring of
    ``background`` around it to the ring around it in its own photo; only pixels with ``alpha`` > 0 change,
    soft-edge pixels with the gain of the nearest part."""
    n, labels, sources = object_lights(solid, lights)
    if not np.isfinite(sources).any():
        return rgb
    # every pixel labelled with its nearest solid part (CCOMP numbers the parts in its own order: mapped back)
    outside, near = cv2.distanceTransformWithLabels((labels == 0).astype(np.uint8), cv2.DIST_L2, 3,
                                                    labelType=cv2.DIST_LABEL_CCOMP)
    remap = np.zeros(int(near.max()) + 1, np.int32)
    remap[near[labels > 0]] = labels[labels > 0]
    near = remap[near]
    around = ring(labels > 0, alpha, outside, near, n)
    y = to_linear(background[around]) @ _LUMA
    count = np.bincount(near[around], minlength=n)
    target = np.bincount(near[around], y, minlength=n) / np.maximum(count, 1)
    sources[count < MIN_RING] = np.nan
    gains = exposure_gains(target, sources, strength, max_gain)
    region = alpha > 0
    out = rgb.copy()
    out[region] = np.clip(to_srgb(to_linear(rgb[region]) * gains[near[region]][:, None]) + 0.5, 0, 255).astype(np.uint8)
    return out


__all__ = ["metered_light", "exposure_gains", "expose", "object_lights", "ring", "to_linear", "to_srgb"]
