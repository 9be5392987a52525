"""What s1 records about a mask: box, area, border contact (which edges cut the subject, and how much of its
outline runs along each), its large parts, a quality score and flags."""
from __future__ import annotations

import cv2
import numpy as np

# a part counts as a second object when it is at least this fraction of the largest part and of the photo:
# the cup beside the cat, not a stray speck or a gap-separated ear
PART_OF_LARGEST = 0.15
PART_OF_PHOTO = 0.005
# an edge cuts the subject when at least this share of its outline runs along it: a paw tip or an ear
# touching the frame is not a close-up
CUT_OUTLINE = 0.02


def mask_stats(mask: np.ndarray, border: int = 2, frame: list[int] | None = None, objects: int | None = None) -> dict:
    """``mask``: HxW float in [0, 1]. The quality score (0..1) rewards a confident, compact, single
    object that does not fill the frame; it picks the best of several segmentation rounds.

    ``frame`` (``[x0, y0, x1, y1]``, default the photo) is the region the segmenter could mark at all, e.g.
    GrabCut's seed box: border contact and "almost full" are judged against it, so a mask cut off by the
    box or filling it is flagged like one that touches or fills the photo."""
    hard = mask >= 0.5
    h, w = hard.shape
    fx0, fy0, fx1, fy1 = frame or (0, 0, w, h)
    inside = hard[fy0:fy1, fx0:fx1]
    area = float(hard.mean())
    ys, xs = np.nonzero(hard)
    bbox = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else None
    edges = [inside[:border].any(), inside[-border:].any(), inside[:, :border].any(), inside[:, -border:].any()]
    touching = [side for side, hit in zip(("top", "bottom", "left", "right"), edges) if hit]
    # confidence: how far soft values sit from 0.5 (a crisp mask is near 1)
    confidence = float(np.mean(np.abs(mask.astype(np.float32) - 0.5) * 2.0))
    if bbox:
        box_area = (bbox[2] - bbox[0]) * (bbox[3] - bbox[1])
        solidity = float(hard.sum() / max(box_area, 1))
    else:
        solidity = 0.0
    parts = [round(a / (h * w), 5) for a in large_parts(hard)]
    multiple = (objects if objects is not None else len(parts)) > 1
    outline = edge_outline(inside)
    flags = []
    if area < 0.005:
        flags.append("empty")
    if float(inside.mean()) > 0.95:
        flags.append("almost_full")
    if touching:
        flags.append("touches_border")
    if multiple:
        flags.append("multiple_objects")
    size_ok = 1.0 if 0.02 <= area <= 0.85 else 0.3
    score = 0.0 if "empty" in flags else confidence * size_ok * (0.5 + 0.5 * solidity) * (1.0 - 0.1 * len(touching))
    return {"bbox_xyxy": bbox, "area_fraction": round(area, 5), "border_contact": touching,
            "cut_edges": [side for side, share in outline.items() if share >= CUT_OUTLINE], "cut_outline": outline,
            "confidence": round(confidence, 4), "quality": round(float(score), 4), "flags": flags,
            "multiple_objects": multiple, "parts": parts}


def edge_outline(hard: np.ndarray) -> dict[str, float]:
    """For each edge of the frame the subject touches, the share of its outline (boundary pixels, the
    frame's included) that runs along that edge."""
    if not hard.any():
        return {}
    inner = cv2.erode(hard.astype(np.uint8), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    outline = float((hard & (inner == 0)).sum())
    runs = {"top": hard[0].sum(), "bottom": hard[-1].sum(), "left": hard[:, 0].sum(), "right": hard[:, -1].sum()}
    return {side: round(float(n) / outline, 4) for side, n in runs.items() if n}


def large_parts(hard: np.ndarray) -> list[int]:
    """Pixel areas of the large connected parts of a boolean mask, largest first."""
    _, _, stats, _ = cv2.connectedComponentsWithStats(hard.astype(np.uint8), connectivity=8)
    areas = sorted((int(a) for a in stats[1:, cv2.CC_STAT_AREA]), reverse=True)
    least = max(PART_OF_LARGEST * areas[0], PART_OF_PHOTO * hard.size) if areas else 0
    return [a for a in areas if a >= least]


def keep_largest(mask: np.ndarray) -> np.ndarray:
    """The soft mask with every part but the largest removed (its soft edge, within a few pixels, kept)."""
    hard = mask >= 0.5
    n, labels, stats, _ = cv2.connectedComponentsWithStats(hard.astype(np.uint8), connectivity=8)
    if n <= 2:
        return mask
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    r = max(1, round(0.01 * max(mask.shape)))
    near = cv2.dilate((labels == largest).astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE,
                                                                                        (2 * r + 1, 2 * r + 1)))
    keep = (near > 0) & ((labels == largest) | ~hard)  # the largest part and its soft edge, no other part
    return np.where(keep, mask, 0.0).astype(mask.dtype)
