"""What s1 records about a mask: box, area, border contact, a quality score and flags."""
from __future__ import annotations

import numpy as np


def mask_stats(mask: np.ndarray, border: int = 2) -> dict:
    """``mask``: HxW float in [0, 1]. The quality score (0..1) rewards a confident, compact, single
    object that does not fill the frame; it picks the best of several segmentation rounds."""
    hard = mask >= 0.5
    h, w = hard.shape
    area = float(hard.mean())
    ys, xs = np.nonzero(hard)
    bbox = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else None
    edges = [hard[:border].any(), hard[-border:].any(), hard[:, :border].any(), hard[:, -border:].any()]
    touching = [side for side, hit in zip(("top", "bottom", "left", "right"), edges) if hit]
    # confidence: how far soft values sit from 0.5 (a crisp mask is near 1)
    confidence = float(np.mean(np.abs(mask.astype(np.float32) - 0.5) * 2.0))
    if bbox:
        box_area = (bbox[2] - bbox[0]) * (bbox[3] - bbox[1])
        solidity = float(hard.sum() / max(box_area, 1))
    else:
        solidity = 0.0
    flags = []
    if area < 0.005:
        flags.append("empty")
    if area > 0.95:
        flags.append("almost_full")
    if touching:
        flags.append("touches_border")
    size_ok = 1.0 if 0.02 <= area <= 0.85 else 0.3
    score = 0.0 if "empty" in flags else confidence * size_ok * (0.5 + 0.5 * solidity) * (1.0 - 0.1 * len(touching))
    return {"bbox_xyxy": bbox, "area_fraction": round(area, 5), "border_contact": touching,
            "confidence": round(confidence, 4), "quality": round(float(score), 4), "flags": flags}
