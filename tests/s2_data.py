"""Synthetic s1 outputs (cutout.png, mask.png, meta.json per the s1 contract) for s2 tests and benchmarks."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from gen4gen.io import json_bytes, png_bytes, write_atomic

S1_DIR = "s1_segmented_foreground"


def cutout(h: int, w: int, seed: int, soft: bool = False, shape: str = "ellipse") -> np.ndarray:
    """An RGBA cut-out: a textured object (gradients + a pattern, so resampling errors show) on a
    transparent margin; alpha binary or soft-edged."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(40, 215, 3)
    rgb = np.stack([base[0] + 30 * np.sin(xx / 9.0), base[1] + 30 * np.cos(yy / 7.0),
                    base[2] + 25 * np.sin((xx + yy) / 13.0)], -1)
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    alpha = np.zeros((h, w), np.uint8)
    m = max(2, min(h, w) // 10)
    if shape == "ellipse":
        cv2.ellipse(alpha, (w // 2, h // 2), (w // 2 - m, h // 2 - m), 0, 0, 360, 255, -1)
    else:
        alpha[m:h - m, m:w - m] = 255
    if soft:
        alpha = cv2.GaussianBlur(alpha, (0, 0), 2.0)
    return np.dstack([rgb, alpha])


def fake_s1(stages_dir: Path, scenes: dict[str, dict[str, int]], size: tuple[int, int] = (240, 200),
            soft: bool = False, empty: set[tuple[str, str]] = frozenset(), seed: int = 0) -> list[Path]:
    """``scenes``: scene -> concept -> number of photos. ``empty``: (scene, concept) whose masks s1
    flagged empty. Returns the cut-out paths."""
    root = Path(stages_dir) / S1_DIR
    paths = []
    k = seed
    for scene, concepts in scenes.items():
        for concept, n in concepts.items():
            for i in range(n):
                k += 1
                h, w = size[1] + 17 * i, size[0] - 11 * i
                rgba = cutout(h, w, k, soft=soft, shape="ellipse" if k % 2 else "box")
                is_empty = (scene, concept) in empty
                if is_empty:
                    rgba[..., 3] = 0
                folder = root / scene / concept / f"photo_{i}"
                write_atomic(folder / "cutout.png", png_bytes(rgba))
                write_atomic(folder / "mask.png", png_bytes(rgba[..., 3]))
                ys, xs = np.nonzero(rgba[..., 3])
                bbox = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if ys.size else None
                meta = {"id": f"{scene}/{concept}/photo_{i}", "stage": "s1", "config_hash": "s1hash",
                        "fingerprint": f"fp{k}", "scene": scene, "concept": concept,
                        "source": f"/photos/{scene}/{concept}/photo_{i}.jpg", "size": [w, h], "bbox_xyxy": bbox,
                        "area_fraction": float((rgba[..., 3] > 127).mean()), "quality": 0.0 if is_empty else 0.9,
                        "flags": ["empty"] if is_empty else [], "backend": "synthetic"}
                write_atomic(folder / "meta.json", json_bytes(meta))
                paths.append(folder / "cutout.png")
    return paths


def real_s1(stages_dir: Path, photos: dict[str, dict[str, list[tuple[Path, Path]]]], max_side: int = 1024) -> None:
    """s1 outputs from real photos and reference masks: scene -> concept -> [(photo, mask)]; photos
    are shrunk to ``max_side`` first, which keeps the tests fast (PNG-encoding a 4k cut-out is slow)."""
    from gen4gen.images import read_image

    root = Path(stages_dir) / S1_DIR
    for scene, concepts in photos.items():
        for concept, pairs in concepts.items():
            for photo, mask_path in pairs:
                rgb = read_image(photo)
                mask = read_image(mask_path, mode="L")
                f = min(1.0, max_side / max(rgb.shape[:2]))
                size = (max(1, round(rgb.shape[1] * f)), max(1, round(rgb.shape[0] * f)))
                rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
                mask = cv2.resize(mask, size, interpolation=cv2.INTER_AREA)
                folder = root / scene / concept / photo.stem
                ys, xs = np.nonzero(mask >= 128)
                write_atomic(folder / "cutout.png", png_bytes(np.dstack([rgb, mask])))
                write_atomic(folder / "mask.png", png_bytes(mask))
                meta = {"id": f"{scene}/{concept}/{photo.stem}", "stage": "s1", "config_hash": "ref",
                        "fingerprint": photo.name, "scene": scene, "concept": concept, "source": str(photo),
                        "size": [rgb.shape[1], rgb.shape[0]], "flags": [], "backend": "reference mask",
                        "bbox_xyxy": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]}
                write_atomic(folder / "meta.json", json_bytes(meta))
