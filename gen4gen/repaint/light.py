"""Matched light for pasted concepts: each object's brightness and colour cast moved part of the way toward
the place it stands in (a limited statistics transfer), the background's light wrapped softly over its outer
edge, and the photo's blur and noise next to it applied to it, so that a concept is neither brighter, cleaner
nor sharper than its surroundings. Each part has its own switch (``inpainter.match_light``, ``wrap``,
``grain``); every change is one per object, so the masks and boxes of s2 still hold.
"""
from __future__ import annotations

import cv2
import numpy as np

MAX_SHIFT = np.array([12.0, 5.0, 5.0], np.float32)  # Lab: the most an object's L / a / b mean may move


def light_match(rgb: np.ndarray, alpha: np.ndarray, solid: np.ndarray, bg: np.ndarray, band: int, strength: float,
                wrap: float, grain: bool, seed: int) -> np.ndarray:
    """``rgb`` (HxWx3 uint8, the concepts' colours) relit for ``bg``; only pixels with ``alpha`` > 0 change.
    Works inside the box around the concepts and their background ring: full-frame passes dominate otherwise."""
    ys, xs = np.nonzero(alpha > 0)
    if len(ys) == 0:
        return rgb
    pad = int(band) + 8
    box = np.s_[max(0, ys.min() - pad):ys.max() + pad + 1, max(0, xs.min() - pad):xs.max() + pad + 1]
    out = rgb.copy()
    out[box] = _light_match(np.ascontiguousarray(rgb[box]), alpha[box], np.ascontiguousarray(solid[box]),
                            np.ascontiguousarray(bg[box]), band, strength, wrap, grain, seed)
    return out


def _light_match(rgb, alpha, solid, bg, band, strength, wrap, grain, seed) -> np.ndarray:
    inside = cv2.distanceTransform(solid, cv2.DIST_L2, 3)
    outside, near = cv2.distanceTransformWithLabels(1 - solid, cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_CCOMP)
    inner = (inside > 0) & (inside <= band)
    outer = (outside > 0) & (outside <= band)
    region = alpha > 0
    if not region.any() or not outer.any():
        return rgb
    n = int(near.max()) + 1
    out = rgb[region].astype(np.float32)
    labels = near[region]
    if strength > 0:  # per object: a share of the gap between its edge ring and the background ring around it
        mu_c, n_c = _means(_lab(rgb[inner]), near[inner], n)
        mu_b, n_b = _means(_lab(bg[outer]), near[outer], n)
        shift = np.clip(strength * (mu_b - mu_c), -MAX_SHIFT, MAX_SHIFT)
        shift[(n_c < 16) | (n_b < 16)] = 0.0
        lab = _lab(out) + shift[labels]
        out = cv2.cvtColor(lab[:, None, :], cv2.COLOR_LAB2RGB)[:, 0, :] * 255.0
    if grain:
        # rings away from the outline: the step from the cut-out's black surround is no noise
        inner_g, outer_g = inner & (inside > 2), outer & (outside > 2)
        out = _grain(out, region, labels, rgb, bg, inner_g, outer_g, near, n, seed)
    if wrap > 0:  # light from behind spills over the outline: the blurred background over the outer edge
        width = max(1.5, band / 8.0)
        ys, xs = np.nonzero(region)
        pad = int(3 * width) + 1
        box = np.s_[max(0, ys.min() - pad):ys.max() + pad + 1, max(0, xs.min() - pad):xs.max() + pad + 1]
        soft = np.zeros(bg.shape, np.float32)
        soft[box] = cv2.GaussianBlur(bg[box].astype(np.float32), (0, 0), width)
        w = (wrap * np.clip(1.0 - inside[region] / width, 0.0, 1.0))[:, None]
        out = out * (1.0 - w) + soft[region] * w
    res = rgb.copy()
    res[region] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return res


def _grain(out, region, labels, rgb, bg, inner, outer, near, n, seed) -> np.ndarray:
    """Per object: blur it when it is sharper than the photo around it, then add the noise the photo has there
    and it lacks (noise: the robust spread of a fine high-pass; sharpness: the spread of the Laplacian)."""
    def fine(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
        return np.abs(g - cv2.GaussianBlur(g, (0, 0), 1.0)), np.abs(cv2.Laplacian(g, cv2.CV_32F))

    hp_c, lap_c = fine(rgb)
    hp_b, lap_b = fine(bg)
    noise_c, _ = _means(hp_c[inner][:, None], near[inner], n)
    noise_b, nb = _means(hp_b[outer][:, None], near[outer], n)
    sharp_c, _ = _means(lap_c[inner][:, None], near[inner], n)
    sharp_b, _ = _means(lap_b[outer][:, None], near[outer], n)
    rng = np.random.default_rng(seed)
    for k in np.unique(labels):
        if nb[k] < 16:
            continue
        mine = labels == k
        ratio = float(sharp_c[k, 0] / max(sharp_b[k, 0], 1e-3))
        if ratio > 1.3:  # sharper than the photo there: a blur that roughly halves the Laplacian per step
            sigma = min(2.0, 0.6 * np.log2(ratio))
            out[mine] = _soft_blur(out, region, mine, sigma)
        extra = 1.25 * np.sqrt(max(0.0, float(noise_b[k, 0] ** 2 - noise_c[k, 0] ** 2)))  # mean abs -> sigma
        if extra > 0.3:
            out[mine] += rng.normal(0.0, extra, (int(mine.sum()), 1)).astype(np.float32)
    return out


def _soft_blur(out: np.ndarray, region: np.ndarray, mine: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of one object's pixels, normalised by its own coverage (its black surround stays out)."""
    h, w = region.shape
    img = np.zeros((h, w, 3), np.float32)
    cov = np.zeros((h, w), np.float32)
    where = np.zeros((h, w), bool)
    where[region] = mine
    img[where] = out[mine]
    cov[where] = 1.0
    ys, xs = np.nonzero(where)
    pad = int(3 * sigma) + 1
    box = np.s_[max(0, ys.min() - pad):ys.max() + pad + 1, max(0, xs.min() - pad):xs.max() + pad + 1]
    img[box] = cv2.GaussianBlur(img[box], (0, 0), sigma)
    cov[box] = cv2.GaussianBlur(cov[box], (0, 0), sigma)
    return img[where] / np.maximum(cov[where], 1e-3)[:, None]


def _lab(pixels: np.ndarray) -> np.ndarray:
    return cv2.cvtColor((pixels / np.float32(255.0)).astype(np.float32)[:, None, :], cv2.COLOR_RGB2LAB)[:, 0, :]


def _means(values: np.ndarray, labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    count = np.bincount(labels, minlength=n).astype(np.float64)
    sums = np.stack([np.bincount(labels, values[:, k], n) for k in range(values.shape[1])], 1)
    return (sums / np.maximum(count, 1.0)[:, None]).astype(np.float32), count


__all__ = ["light_match", "MAX_SHIFT"]
