"""Matched light for pasted concepts: each object's brightness and colour cast moved part of the way toward
the place it stands in (a limited statistics transfer), the background's light wrapped softly over its outer
edge, and the photo's blur and noise next to it applied to it, so that a concept is neither brighter, cleaner
nor sharper than its surroundings. Each part has its own switch (``inpainter.match_light``, ``wrap``,
``grain``); every change is one per object, so the masks and boxes of s2 still hold.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

MAX_SHIFT = np.array([12.0, 5.0, 5.0], np.float32)  # Lab: the most an object's L / a / b mean may move


def light_match(rgb: np.ndarray, alpha: np.ndarray, solid: np.ndarray, bg: np.ndarray, band: int, strength: float,
                wrap: float, grain: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``rgb`` (HxWx3 uint8, the concepts' colours) relit for ``bg``; only pixels with ``alpha`` > 0 change.
    Also the blur ``grain`` gave each object (HxW float32 px, every pixel the sigma of its nearest object, 0:
    none), for ``soften``. Works inside the box around the concepts and their background ring: full-frame
    passes dominate otherwise."""
    blur = np.zeros(alpha.shape, np.float32)
    ys, xs = np.nonzero(alpha > 0)
    if len(ys) == 0:
        return rgb, blur
    pad = max(int(band) + 8, int(3 * BLURS[-1]) + 1)  # the room soften's widest blur needs
    box = np.s_[max(0, ys.min() - pad):ys.max() + pad + 1, max(0, xs.min() - pad):xs.max() + pad + 1]
    out = rgb.copy()
    whole = functools.cache(lambda: _plate_scale(bg, alpha == 0))  # a full-frame pass: only when a ring is plain
    out[box], blur[box] = _light_match(np.ascontiguousarray(rgb[box]), alpha[box], np.ascontiguousarray(solid[box]),
                                       np.ascontiguousarray(bg[box]), band, strength, wrap, grain, seed, whole)
    return out, blur


def _plate_scale(bg: np.ndarray, free: np.ndarray) -> float | None:
    """``blur_scale`` of the whole background where no concept covers it, None when it is plain (mean gradient
    under ``FLAT_PHOTO``): what an object beside a bare wall is matched to, the wall saying nothing itself."""
    grad, lap = _edges(cv2.cvtColor(bg, cv2.COLOR_RGB2GRAY).astype(np.float32))
    if not free.any() or grad[free].mean() < FLAT_PHOTO:
        return None
    return float(grad[free].sum() / max(float(lap[free].sum()), 1e-6))


def soften(rgb: np.ndarray, alpha: np.ndarray, blur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The concepts' colours and alpha with each object's outline blurred as ``light_match`` blurred its inside
    (``blur``: sigma per pixel, by nearest object): a defocused subject inside a crisp outline looks cut out.
    Premultiplied (colour x alpha blurred, then divided), so the cut-out's black surround stays out; the
    alpha-0.5 outline stays where it was (s2's masks still hold)."""
    rgb, alpha = rgb.copy(), alpha.copy()
    for sigma in np.unique(blur[blur > 0]):
        cell = blur == sigma
        ys, xs = np.nonzero(cell)
        box = np.s_[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        a0 = np.where(cell[box], alpha[box], 0.0).astype(np.float32)
        pre = cv2.GaussianBlur(rgb[box].astype(np.float32) * a0[..., None], (0, 0), float(sigma))
        a = cv2.GaussianBlur(a0, (0, 0), float(sigma))
        # colour only where there was none (outside the old outline): inside, light_match blurred it already
        new = cell[box] & (a0 == 0) & (a > 1e-3)
        rgb[box][new] = np.clip(pre[new] / a[new][:, None] + 0.5, 0, 255).astype(np.uint8)
        alpha[box][cell[box]] = np.where(a > 1e-3, a, 0.0)[cell[box]]
    return rgb, alpha


def _light_match(rgb, alpha, solid, bg, band, strength, wrap, grain, seed, whole) -> tuple[np.ndarray, np.ndarray]:
    inside = cv2.distanceTransform(solid, cv2.DIST_L2, 3)
    outside, near = cv2.distanceTransformWithLabels(1 - solid, cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_CCOMP)
    inner = (inside > 0) & (inside <= band)
    outer = (outside > 0) & (outside <= band)
    region = alpha > 0
    sigmas = np.zeros(int(near.max()) + 1, np.float32)
    if not region.any() or not outer.any():
        return rgb, sigmas[near]
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
        # the sharpness measure's filters reach 6 px (``_edges``): deeper still, or it sees the outline's step
        out = _grain(out, region, labels, rgb, bg, inner_g, outer_g, inner & (inside > 6), near, n, seed, sigmas,
                     whole)
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
    return res, sigmas[near]


def _grain(out, region, labels, rgb, bg, inner, outer, deep, near, n, seed, sigmas, whole) -> np.ndarray:
    """Per object: blur it until it is no sharper than the photo around it (``blur_scale``; where the ring around
    it is plain, ``whole()``'s: the whole photo's, None when that is plain too), or, where the photo is no
    softer, add the noise the photo has there and it lacks (the robust spread of a fine high-pass). Each
    object's blur goes into ``sigmas`` (by label)."""
    def gray(img: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)

    def fine(g: np.ndarray) -> np.ndarray:
        return np.abs(g - cv2.GaussianBlur(g, (0, 0), 1.0))

    g_c, g_b = gray(rgb), gray(bg)
    grad_b, lap_b = _edges(g_b)
    noise_b, nb = _means(fine(g_b)[outer][:, None], near[outer], n)
    scale_b = _ratio(grad_b[outer], lap_b[outer], near[outer], n)
    detail_b, _ = _means(grad_b[outer][:, None], near[outer], n)
    noise_c = fine(g_c)
    rng = np.random.default_rng(seed)
    for k in np.unique(labels):
        mine, ring = labels == k, inner & (near == k)
        if nb[k] < 16 or ring.sum() < 16:
            continue
        # a plain ring (a bare wall, a studio sweep) says nothing about how soft the photo is: the whole photo
        # does, unless it is plain too (a procedural sweep: no blur)
        target = float(scale_b[k]) if detail_b[k, 0] >= FLAT_PLATE else whole()
        sigma = 0.0 if target is None else _matching_blur(g_c, region, mine, deep & (near == k), target)
        if sigma > 0:  # a soft (upscaled) photo: its grain is as soft, so white noise would be sharper than it
            out[mine] = _soft_blur(out, region, mine, sigma)
            sigmas[k] = sigma
            continue
        lack = float(noise_b[k, 0]) ** 2 - float(noise_c[ring].mean()) ** 2
        extra = 1.25 * np.sqrt(max(0.0, lack))  # mean abs -> sigma
        if extra > 0.3:
            out[mine] += rng.normal(0.0, extra, (int(mine.sum()), 1)).astype(np.float32)
    return out


def blur_scale(gray: np.ndarray, where: np.ndarray) -> float:
    """How soft an image is over ``where``, in px: the sum of its gradient over that of its Laplacian. Across
    a step edge blurred by a Gaussian of sigma s the gradient sums to the step and the Laplacian to twice the
    gradient's peak, so the ratio grows with s whatever the contrast (a low-contrast wall reads as soft as a
    high-contrast fence of the same blur). Measured after a 1 px blur (``_edges``): ~1.2-1.5 on a sharp photo
    at its own size, ~2.8 blurred by 2 px, ~4.8 by 4 px, ~7.6 by 8 px, about the same on a texture."""
    grad, lap = _edges(gray.astype(np.float32))
    return float(grad[where].sum() / max(float(lap[where].sum()), 1e-6))


# blurs tried, px: the smallest that brings an object's blur_scale to the photo's wins (a photo upscaled 10x
# is about 6 px soft at the canvas' scale: a cap of 2 px left every subject sharper than such a photo)
BLURS = (0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.5, 8.0)
FLAT = 0.5  # grey levels per px: the mean gradient under which an object has no detail to soften
# grey levels per px: the mean gradient of the photo around an object (its ring) and of the whole photo under
# which their softness is unknown: a plain backdrop or smooth gradient reads as very soft. Measured on the
# benchmark's scenes, rings: 0.25-0.8 around the procedural studio, snow and sky, 0.3 beside the desk photos'
# bare wall, 1.5-8 around the photos' fields and rocks; whole photos: 0.08 for the procedural studio, 0.52 for
# its snow, 0.66-0.75 for the desk photos (wall, books), 1.4-8.9 for the others
FLAT_PLATE, FLAT_PHOTO = 1.0, 0.6


def _matching_blur(gray: np.ndarray, region: np.ndarray, mine: np.ndarray, ring: np.ndarray, target: float) -> float:
    """The smallest Gaussian sigma in ``BLURS`` that makes the object's ``blur_scale`` over ``ring`` (its inner
    ring) at least ``target`` (the photo's around it), by bisection, or the step before it when that comes
    nearer; 0 when it is already as soft. Works on the grey of the object's box only."""
    if ring.sum() < 16:
        return 0.0
    where = np.zeros(region.shape, bool)
    where[region] = mine
    ys, xs = np.nonzero(where)
    pad = int(3 * BLURS[-1]) + 1  # the widest blur's reach: the box's border stays outside the object
    box = np.s_[max(0, ys.min() - pad):ys.max() + pad + 1, max(0, xs.min() - pad):xs.max() + pad + 1]
    g, obj, ring = gray[box], where[box], ring[box]
    grad, _ = _edges(g)
    start = blur_scale(g, ring)
    if grad[ring].mean() < FLAT or start >= target:  # a flat object has no sharpness to lose
        return 0.0
    def scale(k: int) -> float:
        if k < 0:
            return start
        soft = _own_blur(g, obj, BLURS[k])  # as _soft_blur blurs it: its black surround stays out
        return blur_scale(np.where(obj, soft, g), ring)

    lo, hi = -1, len(BLURS) - 1  # BLURS[hi] is the answer when none before it is enough
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if scale(mid) >= target else (mid, hi)
    # the step whose softness is nearer the photo's: the one just short of it or the one just past it
    return BLURS[hi] if lo < 0 or scale(hi) - target <= target - scale(lo) else BLURS[lo]


def _edges(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient magnitude and absolute Laplacian after a 1 px Gaussian: without it the 8-bit steps of a smooth
    image read as fine detail, and a plate or object blurred more than ~3 px measured sharper again."""
    gray = cv2.GaussianBlur(gray, (0, 0), 1.0)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    return np.hypot(gx, gy), np.abs(cv2.Laplacian(gray, cv2.CV_32F))


def _ratio(num: np.ndarray, den: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(labels, num, n) / np.maximum(np.bincount(labels, den, n), 1e-6)


def _soft_blur(out: np.ndarray, region: np.ndarray, mine: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of one object's pixels, normalised by its own coverage (its black surround stays out)."""
    where = np.zeros(region.shape, bool)
    where[region] = mine
    ys, xs = np.nonzero(where)
    pad = int(3 * sigma) + 1
    box = np.s_[max(0, ys.min() - pad):ys.max() + pad + 1, max(0, xs.min() - pad):xs.max() + pad + 1]
    inside = where[box]
    img = np.zeros(inside.shape + (out.shape[1],), np.float32)
    img[inside] = out[mine]
    return _own_blur(img, inside, sigma)[inside]


def _own_blur(img: np.ndarray, obj: np.ndarray, sigma: float) -> np.ndarray:
    """``img`` (HxW or HxWxC) Gaussian-blurred over the object ``obj`` (HxW bool) alone, normalised by its own
    blurred coverage: what lies outside the object (the cut-out's black surround) does not bleed in."""
    inked = np.where(obj if img.ndim == 2 else obj[..., None], img, 0.0).astype(np.float32)
    cover = np.maximum(cv2.GaussianBlur(obj.astype(np.float32), (0, 0), sigma), 1e-3)
    blurred = cv2.GaussianBlur(inked, (0, 0), sigma)
    return blurred / (cover if img.ndim == 2 else cover[..., None])


def _lab(pixels: np.ndarray) -> np.ndarray:
    return cv2.cvtColor((pixels / np.float32(255.0)).astype(np.float32)[:, None, :], cv2.COLOR_RGB2LAB)[:, 0, :]


def _means(values: np.ndarray, labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    count = np.bincount(labels, minlength=n).astype(np.float64)
    sums = np.stack([np.bincount(labels, values[:, k], n) for k in range(values.shape[1])], 1)
    return (sums / np.maximum(count, 1.0)[:, None]).astype(np.float32), count


__all__ = ["light_match", "soften", "blur_scale", "MAX_SHIFT"]
