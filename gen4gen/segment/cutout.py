"""A clean cut-out from a soft mask: only the subject's parts, no see-through patches inside a solid
subject, and foreground colours with no trace of the old background.

- ``keep_region``: the chosen objects (``gen4gen.segment.objects``) grown by a margin, at the photo's size;
  a hard part outside it (a crate, a sliver of launch tower) and the soft haze around it are dropped.
- ``fill_translucent``: inside a solid subject (most of its interior opaque), a patch of partial alpha
  that does not open onto a real hole (alpha near 0: the gap in a mug's handle) is the segmenter's doubt,
  not glass: it is made opaque. A subject that is not solid keeps its alpha and is flagged instead.
- ``estimate_foreground``: in the soft edge a pixel is ``alpha * F + (1 - alpha) * B``; pasting the photo's
  colour there pastes ``B``, the old background. F is estimated by blur fusion (Forte & Pitié, "Approximate
  fast foreground colour estimation", ICIP 2021): two passes of box-filter means of F and B, a few
  milliseconds per megapixel and no start-up cost, where pymatting's multi-level solver needs seconds and
  numba's JIT. Opaque pixels keep the photo's colour exactly; transparent ones beside the edge get the
  nearby foreground colour, so a later resize that does not premultiply bleeds no background either.
"""
from __future__ import annotations

import cv2
import numpy as np

LOW, HIGH = 0.05, 0.95  # partial alpha
SOLID = 0.9  # share of the interior that is opaque in a solid subject


def keep_region(focus: np.ndarray, width: int, height: int, margin: float = 0.1) -> np.ndarray:
    """``focus`` (bool, analysis size) grown by ``margin`` of its long side, at ``width`` x ``height``."""
    r = max(1, round(margin * max(focus.shape)))
    grown = cv2.dilate(focus.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    return cv2.resize(grown, (width, height), interpolation=cv2.INTER_LINEAR) > 0


def clean_alpha(mask: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, float]:
    """The mask with every hard part that lies outside ``region`` (none of its pixels inside) and every
    soft pixel outside it removed; also the dropped share of the photo (hard pixels)."""
    hard = (mask >= 0.5).astype(np.uint8)
    n, comp = cv2.connectedComponents(hard, connectivity=8)
    inside = np.zeros(n, bool)
    inside[np.unique(comp[region & (hard > 0)])] = True
    inside[0] = False
    keep = inside[comp]
    dropped = float((hard.astype(bool) & ~keep).mean())
    # soft pixels: kept inside the region and within the kept parts' own soft edge
    out = np.where(keep | (region & (hard == 0)), mask, 0.0).astype(np.float32)
    return out, round(dropped, 5)


def fill_translucent(mask: np.ndarray, depth: float = 0.02) -> tuple[np.ndarray, float, bool]:
    """The mask with see-through patches inside a solid subject made opaque; the filled share of the photo,
    and whether partial alpha was left inside a subject that is not solid (to flag)."""
    hard = (mask >= 0.5).astype(np.uint8)
    if not hard.any():
        return mask, 0.0, False
    h, w = hard.shape
    # the silhouette with its holes filled: everything not reachable from outside the photo
    outside = np.zeros((h + 2, w + 2), np.uint8)
    outside[1:-1, 1:-1] = hard
    cv2.floodFill(outside, None, (0, 0), 2)
    solid = outside[1:-1, 1:-1] != 2
    r = max(2.0, depth * np.sqrt(solid.sum()))
    inner = cv2.distanceTransform(np.pad(solid, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1] > r
    if not inner.any():
        return mask, 0.0, False
    partial = inner & (mask > LOW) & (mask < HIGH)
    if not partial.any():
        return mask, 0.0, False
    if float((mask[inner] >= HIGH).mean()) < SOLID:
        return mask, 0.0, True
    clear = cv2.dilate((solid & (mask <= LOW)).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    n, comp = cv2.connectedComponents(partial.astype(np.uint8), connectivity=8)
    opens = np.zeros(n, bool)
    opens[np.unique(comp[clear & partial])] = True
    fill = partial & ~opens[comp]
    out = mask.copy()
    out[fill] = 1.0
    return out, round(float(fill.mean()), 5), False


def estimate_foreground(rgb: np.ndarray, alpha: np.ndarray, work: int = 1024) -> np.ndarray:
    """Foreground colours (HxWx3 uint8) for a photo and its soft alpha, by two-pass blur fusion; opaque
    pixels keep the photo's colour. The blurred means are smooth, so they are computed with the long side at
    most ``work`` px and upsampled; the last step (the photo's own detail) is taken at full resolution."""
    h, w = alpha.shape
    out = rgb.copy()
    if not (alpha < 1.0).any() or not (alpha > 0).any():
        return out
    s = min(1.0, work / max(h, w))
    size = (max(1, round(w * s)), max(1, round(h * s)))
    image = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    a = cv2.resize(alpha.astype(np.float32), size, interpolation=cv2.INTER_AREA)[..., None]
    f, b = _blur_fusion(image, image, image, a, 91)  # the paper's radii, at about 1 MP
    fg, bg = _means(f, b, a, 7)
    if s < 1.0:
        fg = cv2.resize(fg, (w, h), interpolation=cv2.INTER_LINEAR)
        bg = cv2.resize(bg, (w, h), interpolation=cv2.INTER_LINEAR)
    # the soft edge, and the transparent pixels right beside it (a resize that does not premultiply, as s2's,
    # mixes those into the edge); transparent pixels further out keep the photo's colour, unseen
    near = cv2.dilate((alpha > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    ys, xs = np.nonzero(near & (alpha < 1.0))
    i, al = rgb[ys, xs].astype(np.float32) / 255.0, alpha[ys, xs, None].astype(np.float32)
    f_soft, b_soft = fg[ys, xs], bg[ys, xs]
    est = np.clip(f_soft + al * (i - al * f_soft - (1 - al) * b_soft), 0.0, 1.0)
    out[ys, xs] = (est * 255.0 + 0.5).astype(np.uint8)
    return out


def _means(f, b, a, r):
    """Alpha-weighted local means of the foreground and background colours (box of side ``r``)."""
    blur = lambda x: cv2.blur(x, (r, r))  # noqa: E731
    ba = blur(a[..., 0])[..., None]
    return blur(f * a) / (ba + 1e-5), blur(b * (1 - a)) / ((1 - ba) + 1e-5)


def _blur_fusion(image, f, b, a, r):
    bf, bb = _means(f, b, a, r)
    return np.clip(bf + a * (image - a * bf - (1 - a) * bb), 0.0, 1.0), bb
