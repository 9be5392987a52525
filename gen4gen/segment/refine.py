"""Edge-aware refinement of a low-resolution soft mask: the fast guided filter (He & Sun, 2015).

A saliency map computed at 320 px and stretched to a 4000 px photo has a blurred edge many pixels
wide. The guided filter fits, in every small window, a linear map from the photo's colours to the
mask; the coefficients are fitted at ``work`` px and applied to the full-resolution photo, so the
mask's edge follows the photo's own edges at full resolution for the price of a few box filters.
"""
from __future__ import annotations

import cv2
import numpy as np


def _box(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)


def guided_refine(rgb: np.ndarray, soft: np.ndarray, work: int = 512, radius: int = 2, eps: float = 1e-4,
                  contrast: float = 4.0) -> np.ndarray:
    """``rgb`` HxWx3 uint8 (the guide), ``soft`` a mask of any size in [0, 1] -> HxW float32 mask.

    ``contrast`` steepens the mask around 0.5 before filtering so the filter moves edges instead of
    only blurring them; ``radius`` is in pixels of the ``work`` resolution."""
    h, w = rgb.shape[:2]
    s = min(1.0, work / max(h, w))
    ws = (max(1, round(w * s)), max(1, round(h * s)))
    guide = cv2.resize(rgb, ws, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    p = cv2.resize(soft.astype(np.float32), ws, interpolation=cv2.INTER_LINEAR)
    p = np.clip((p - 0.5) * contrast + 0.5, 0.0, 1.0)
    a, b = _coefficients(guide, p, radius, eps)
    a = cv2.resize(_box(a, radius), (w, h), interpolation=cv2.INTER_LINEAR)
    b = cv2.resize(_box(b, radius), (w, h), interpolation=cv2.INTER_LINEAR)
    full = rgb.astype(np.float32) / 255.0
    return np.clip(np.einsum("hwc,hwc->hw", a, full) + b, 0.0, 1.0).astype(np.float32)


def _coefficients(guide: np.ndarray, p: np.ndarray, r: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel ``a`` (HxWx3) and ``b`` (HxW) of the colour guided filter: q = a . I + b."""
    guide, p = guide.astype(np.float64), p.astype(np.float64)  # the determinant of eps-sized variances needs it
    mean_i = _box(guide, r)
    mean_p = _box(p, r)
    cov_ip = _box(guide * p[..., None], r) - mean_i * mean_p[..., None]
    # the 3x3 colour covariance of each window (symmetric), regularised by eps
    v = {(i, j): _box(guide[..., i] * guide[..., j], r) - mean_i[..., i] * mean_i[..., j] + (eps if i == j else 0.0)
         for i in range(3) for j in range(i, 3)}
    # its inverse in closed form (adjugate / determinant): far faster than a batched np.linalg.solve
    inv = {
        (0, 0): v[1, 1] * v[2, 2] - v[1, 2] ** 2, (0, 1): v[0, 2] * v[1, 2] - v[0, 1] * v[2, 2],
        (0, 2): v[0, 1] * v[1, 2] - v[0, 2] * v[1, 1], (1, 1): v[0, 0] * v[2, 2] - v[0, 2] ** 2,
        (1, 2): v[0, 1] * v[0, 2] - v[0, 0] * v[1, 2], (2, 2): v[0, 0] * v[1, 1] - v[0, 1] ** 2,
    }
    det = v[0, 0] * inv[0, 0] + v[0, 1] * inv[0, 1] + v[0, 2] * inv[0, 2]
    a = np.stack([sum(inv[min(i, j), max(i, j)] * cov_ip[..., j] for j in range(3)) for i in range(3)], -1) / det[..., None]
    b = mean_p - np.einsum("hwc,hwc->hw", a, mean_i)
    return a.astype(np.float32), b.astype(np.float32)
