"""A clean cut-out from a soft mask: only the subject's parts, no see-through patches inside a solid
subject, and foreground colours with no trace of the old background.

- ``keep_region``: the chosen objects (``gen4gen.segment.objects``) grown by a margin, at the photo's size;
  a hard part outside it (a crate, a sliver of launch tower) and the soft haze around it are dropped, and so
  is a small, weakly held fragment inside it (the spark beside a rocket's base), with its own haze.
- ``fill_translucent``: a patch of partial alpha deep inside the subject and enclosed by opaque subject or by
  an edge of the photo that cuts it (a close-up's chest) is the segmenter's doubt, not glass: it is made
  opaque. A real hole (alpha near 0: the gap in a mug's handle) keeps its soft rim; a subject whose interior
  stays see-through after that (a glass) keeps its alpha and is flagged ``translucent``.
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

from gen4gen.segment.quality import CUT_OUTLINE, PART_OF_LARGEST, edge_outline
from gen4gen.segment.shared_colours import colour_index, histogram

LOW, HIGH = 0.05, 0.95  # partial alpha
# a fragment: a small part held weakly (under FIRM_CORE of its pixels at FIRM or more: a spark has none, an
# ant's leg tip none, a red seal beside calligraphy 15 %) that alpha >= BRIDGE does not join to the subject
# (a spark beside a rocket: joined at 0.25; a leg tip cut off by the 0.5 threshold: at 0.3-0.45)
FIRM, FIRM_CORE, BRIDGE = 0.9, 0.1, 0.3
# a see-through patch is filled with SHUT of its rim on opaque subject (or on an edge of the photo that cuts
# the subject), or ENCLOSED when it reaches further than twice the soft edge's depth from the opaque subject
SHUT, ENCLOSED = 0.9, 0.6
# a deep patch with less of its rim on the subject (down to HALF_SHUT) that reaches at least WIDE of the
# subject's scale (square root of its area) from the opaque subject, as large as a part of it, is filled when
# the photo's colours say it is the subject: at least OURS of its pixels in colour bins that the concept's other
# photos' subjects show more often than this photo's background does. By the mask alone u2netp's doubt over a
# solid part (the mirrored astronaut's helmet: 53 % of its rim on the subject) is the haze it leaves over old
# background (a motorcycle's shelves: 38 %); the photo's own subject and background do not tell them apart
# either (the helmet's black visor and white shell are the colours of the dark table and pale backdrop beside
# it). The other photos, where the helmet is solid, do, but narrowly: the helmet has 85 % of its pixels in the
# concept's colours, the shadowed floor under the right stereo photo's motorcycle 75 %, and the plate seen
# between a black desk lamp's arms 85-96 % (dark there too): the helmet reaches 0.62 of the astronaut's
# scale from her opaque body, those gaps 0.39 and less
HALF_SHUT, WIDE, OURS = 0.4, 0.5, 0.8
# a subject is translucent when at least TRANSLUCENT of its interior stays under SEE_THROUGH alpha: the
# background shows through most of a glass, not through a solid subject's doubtful streaks (a rocket's at
# 0.5-0.9 over 23 % of its body)
SEE_THROUGH, TRANSLUCENT = 0.9, 0.3
# blur fusion's box sizes (work px): the paper's, at about 1 MP
BLUR_FAR, BLUR_NEAR = 91, 7


def keep_region(focus: np.ndarray, width: int, height: int, margin: float = 0.1) -> np.ndarray:
    """``focus`` (bool, analysis size) grown by ``margin`` of its long side, at ``width`` x ``height``."""
    r = max(1, round(margin * max(focus.shape)))
    grown = cv2.dilate(focus.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    return cv2.resize(grown, (width, height), interpolation=cv2.INTER_LINEAR) > 0


def clean_alpha(mask: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, float]:
    """The mask with the parts that are not the subject removed, each with the soft pixels nearest to it; also
    the dropped share of the photo (hard pixels). A hard part (connected at alpha 0.5) goes when none of it
    lies inside ``region``, or when it is a fragment, however near it lies: small beside the subject (under
    ``PART_OF_LARGEST`` of its largest part), with no firm core, and separated from the subject by background
    (no path of alpha >= ``BRIDGE`` joins them). A segmenter that half-believes a small blob across the
    background from a subject it holds firmly is marking a spark, a splash or a reflection, not a part."""
    hard = (mask >= 0.5).astype(np.uint8)
    n, comp, stats, _ = cv2.connectedComponentsWithStats(hard, connectivity=8)
    keep = np.zeros(n, bool)
    keep[np.unique(comp[region & (hard > 0)])] = True
    keep[0] = False
    if keep.any():
        area = stats[:, cv2.CC_STAT_AREA]
        firm = np.bincount(comp[mask >= FIRM].ravel(), minlength=n) / np.maximum(area, 1)
        weak = keep & (area < PART_OF_LARGEST * area[keep].max()) & (firm < FIRM_CORE)
        if weak.any():  # joined to a part that stays by a path of alpha >= BRIDGE: a thin leg's tip, not a fragment
            _, bridged = cv2.connectedComponents((mask >= BRIDGE).astype(np.uint8), connectivity=8)
            held = np.zeros(int(bridged.max()) + 1, bool)
            held[bridged[(keep & ~weak)[comp] & (hard > 0)]] = True
            joined = np.zeros(n, bool)
            joined[comp[held[bridged] & (hard > 0)]] = True
            keep &= ~weak | joined
    kept = keep[comp]
    dropped = float((hard.astype(bool) & ~kept).mean())
    # a soft pixel goes with the hard part nearest to it, and stays only inside the region (every part kept:
    # whichever is nearest stays, no need to find it)
    near_kept = True if n > 1 and keep[1:].all() else keep[_nearest_part(comp, hard)]
    out = np.where(kept | (region & (hard == 0) & near_kept), mask, 0.0).astype(np.float32)
    return out, round(dropped, 5)


def _nearest_part(comp: np.ndarray, hard: np.ndarray) -> np.ndarray:
    """For every pixel, the label (in ``comp``) of the hard part nearest to it (0 when there is none)."""
    if not hard.any():
        return np.zeros_like(comp)
    _, near = cv2.distanceTransformWithLabels((hard == 0).astype(np.uint8), cv2.DIST_L2, 5,
                                              labelType=cv2.DIST_LABEL_PIXEL)
    # DIST_LABEL_PIXEL numbers the zero pixels (the hard ones): map each number back to its part
    owner = np.zeros(int(near.max()) + 1, comp.dtype)
    owner[near[hard > 0]] = comp[hard > 0]
    return owner[near]


def fill_translucent(mask: np.ndarray, depth: float = 0.02, rgb: np.ndarray | None = None,
                     concept: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """The mask with see-through patches inside a solid subject made opaque, and the filled share of the photo.

    The interior is what lies deeper than the soft edge (``depth`` of the subject's scale, at least 2 px)
    from the background (alpha <= ``LOW``); an edge of the photo that cuts the subject (``CUT_OUTLINE`` of
    its outline runs along it) is no background: a close-up's chest runs on past it. A patch of partial
    alpha in the interior is filled when it is enclosed, at least ``ENCLOSED`` of its rim on opaque subject
    or on a cutting edge of the photo (the cat's half-transparent chest, a doubtful eye, a held helmet); one
    that mostly meets the soft edge, as the body of a glass does, keeps its alpha, unless the photo ``rgb``
    shows it in the concept's colours (``concept``: ``shared_colours.concept_histogram`` of its other
    photos; see ``HALF_SHUT``). A real hole (alpha near 0: the gap in a mug's handle) is background: its soft
    rim stays soft."""
    deep, cut = _deep(mask, depth)
    partial = deep & (mask > LOW) & (mask < HIGH)
    if not partial.any():
        return mask, 0.0
    opaque = np.pad(mask >= HIGH, 1, constant_values=False)
    for side in cut:
        opaque[_band(side, 1)] = True
    n, comp = cv2.connectedComponents(np.pad(partial, 1).astype(np.uint8), connectivity=8)
    # each pixel beside a patch, labelled with that patch (the largest label where two patches meet)
    rim = cv2.dilate(comp.astype(np.float32), np.ones((3, 3), np.uint8)).astype(np.int32) * (comp == 0)
    total = np.bincount(rim.ravel(), minlength=n)
    closed = np.bincount(rim[opaque].ravel(), minlength=n)
    # how far a patch reaches from the opaque subject: the inner half of a wide soft edge is deep too, but a
    # strip of it lies along the opaque subject, as much on it as on the edge; a doubted chest reaches far
    solid = np.pad(mask >= HIGH, 1, constant_values=False)
    at = comp > 0
    dist = cv2.distanceTransform((~solid).astype(np.uint8), cv2.DIST_L2, 3)[at]
    # per patch, whether a pixel of it lies that far from the opaque subject
    far = np.bincount(comp[at][dist > 2 * _edge_depth(mask >= 0.5, depth)], minlength=n) > 0
    wide = np.bincount(comp[at][dist >= WIDE * np.sqrt((mask >= 0.5).sum())], minlength=n) > 0
    share = closed / np.maximum(total, 1)
    shut = (share >= SHUT) | ((share >= ENCLOSED) & far)
    maybe = ~shut & (share >= HALF_SHUT) & wide
    maybe[0] = False
    if rgb is not None and concept is not None and maybe.any():
        shut |= maybe & (_ours(np.pad(colour_index(rgb, mask.shape), 1), comp, n, np.pad(mask <= LOW, 1), concept)
                         >= OURS)
    shut[0] = False
    if not shut.any():  # nothing to fill: no need to look for holes
        return mask, 0.0
    shut[np.unique(comp[_opens_onto_hole(np.pad(mask, 1))])] = False
    fill = shut[comp][1:-1, 1:-1]
    out = mask.copy()
    out[fill] = 1.0
    return out, round(float(fill.mean()), 5)


def _ours(colours: np.ndarray, comp: np.ndarray, n: int, ground: np.ndarray, concept: np.ndarray) -> np.ndarray:
    """Per patch of ``comp``, the share of its pixels whose colour bin is more frequent in the ``concept``
    histogram than in the photo's background (``ground``); 0 for every patch when there is no background."""
    background = histogram(colours, ground)
    if background is None:
        return np.zeros(n)
    at = comp > 0
    ours = concept[colours[at]] > background[colours[at]]
    return np.bincount(comp[at], weights=ours, minlength=n) / np.maximum(np.bincount(comp[at], minlength=n), 1)


def translucent(mask: np.ndarray, depth: float = 0.02) -> bool:
    """Whether at least ``TRANSLUCENT`` of the subject's interior (its silhouette at alpha 0.5, holes filled,
    deeper than the soft edge as in ``fill_translucent``) stays under ``SEE_THROUGH``: glass, not a solid
    subject with a soft edge or a haze around it. Judged after ``fill_translucent`` and ``clean_alpha``."""
    hard = (mask >= 0.5).astype(np.uint8)
    if not hard.any():
        return False
    outside = np.pad(hard, 1)
    cv2.floodFill(outside, None, (0, 0), 2)
    inside = outside[1:-1, 1:-1] != 2
    interior = inside & _deep(mask, depth)[0]
    if not interior.any():
        return False
    see_through = interior & (mask < SEE_THROUGH)
    return float(see_through.sum()) >= TRANSLUCENT * float(interior.sum())


def _opens_onto_hole(mask: np.ndarray) -> np.ndarray:
    """The partial alpha joined (through partial alpha) to a hole inside the subject, background it encloses:
    a wheel between its spokes, the gap in a mug's handle. A patch there is the see-through hole itself."""
    hard = (mask >= 0.5).astype(np.uint8)
    outside = np.pad(hard, 1)
    cv2.floodFill(outside, None, (0, 0), 2)
    hole = (outside[1:-1, 1:-1] != 2) & (mask <= LOW)
    soft = (mask > LOW) & (mask < HIGH)
    if not hole.any():
        return np.zeros_like(soft)
    n, comp = cv2.connectedComponents(soft.astype(np.uint8), connectivity=8)
    opens = np.zeros(n, bool)
    opens[comp[cv2.dilate(hole.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0]] = True
    opens[0] = False
    return opens[comp]


def _band(side: str, width: int) -> tuple:
    """The index of the ``width`` outermost rows or columns on one side of an array."""
    return {"top": np.s_[:width], "bottom": np.s_[-width:], "left": np.s_[:, :width], "right": np.s_[:, -width:]}[side]


def _edge_depth(hard: np.ndarray, depth: float) -> float:
    """How deep a solid subject's soft edge may run: ``depth`` of its scale (square root of its area), >= 2 px."""
    return max(2.0, depth * float(np.sqrt(hard.sum())))


def _deep(mask: np.ndarray, depth: float) -> tuple[np.ndarray, list[str]]:
    """The pixels deeper than the soft edge from the background, and the edges of the photo that cut the
    subject (beyond them the subject goes on: no background there)."""
    hard = mask >= 0.5
    if not hard.any():
        return np.zeros_like(hard), []
    r = _edge_depth(hard, depth)
    cut = [side for side, share in edge_outline(hard).items() if share >= CUT_OUTLINE]
    pad = int(r) + 2
    ground = np.pad(mask > LOW, pad, constant_values=False)
    for side in cut:
        ground[_band(side, pad)] = True
    deep = cv2.distanceTransform(ground.astype(np.uint8), cv2.DIST_L2, 3)[pad:-pad, pad:-pad] > r
    return deep, cut


def estimate_foreground(rgb: np.ndarray, alpha: np.ndarray, work: int = 1024) -> np.ndarray:
    """Foreground colours (HxWx3 uint8) for a photo and its soft alpha, by two-pass blur fusion; opaque
    pixels keep the photo's colour. The blurred means are smooth, so they are computed with the long side at
    most ``work`` px and upsampled; the last step (the photo's own detail) is taken at full resolution. Only
    the soft edge's box (plus the means' reach) is worked on: the colours are those of the whole photo's means
    (at most 1 level off on a few pixels of a photo over ``work`` px), at a fraction of the cost when the
    subject is small."""
    h, w = alpha.shape
    out = rgb.copy()
    # the soft edge, and the transparent pixels right beside it (a resize that does not premultiply, as s2's,
    # mixes those into the edge); transparent pixels further out keep the photo's colour, unseen
    near = cv2.dilate((alpha > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    band = near & (alpha < 1.0)
    bx, by, bw, bh = cv2.boundingRect(band.astype(np.uint8))
    if not bw:
        return out
    s = min(1.0, work / max(h, w))
    size = (max(1, round(w * s)), max(1, round(h * s)))
    sx, sy = size[0] / w, size[1] / h
    # a mean at an edge pixel reads the work image within the two box radii, and its bilinear sample 1 px more
    reach = BLUR_FAR // 2 + BLUR_NEAR // 2 + 2
    x0, x1 = max(0, int(bx * sx) - reach), min(size[0], int(np.ceil((bx + bw) * sx)) + reach)
    y0, y1 = max(0, int(by * sy) - reach), min(size[1], int(np.ceil((by + bh) * sy)) + reach)
    if s < 1.0:
        small, a = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), cv2.resize(alpha.astype(np.float32), size,
                                                                                    interpolation=cv2.INTER_AREA)
    else:
        small, a = rgb, alpha
    image = small[y0:y1, x0:x1].astype(np.float32) / 255.0
    a = np.ascontiguousarray(a[y0:y1, x0:x1], np.float32)[..., None]
    f, b = _blur_fusion(image, image, image, a, BLUR_FAR)  # the paper's radii, at about 1 MP
    fg, bg = _means(f, b, a, BLUR_NEAR)
    if s < 1.0:  # at the photo's size, over the edge's box only
        fg, bg = (_upsample(x, (sx, sy), (x0, y0), (bx, by, bx + bw, by + bh)) for x in (fg, bg))
        x0, y0 = bx, by
    # the edge's pixels by flat index (far faster to gather than by row and column)
    at = np.flatnonzero(band)
    ys, xs = np.divmod(at, w)
    inner = (ys - y0) * fg.shape[1] + (xs - x0)
    f_soft, b_soft = fg.reshape(-1, 3).take(inner, 0), bg.reshape(-1, 3).take(inner, 0)
    i = rgb.reshape(-1, 3).take(at, 0).astype(np.float32) / 255.0
    al = alpha.reshape(-1).take(at)[:, None].astype(np.float32)
    est = np.clip(f_soft + al * (i - al * f_soft - (1 - al) * b_soft), 0.0, 1.0)
    out.reshape(-1, 3)[at] = (est * 255.0 + 0.5).astype(np.uint8)
    return out


def _upsample(img: np.ndarray, scale: tuple[float, float], offset: tuple[int, int], box: tuple[int, int, int, int]):
    """The work-resolution ``img`` (a crop at ``offset`` of an image ``scale`` times the photo's size) over the
    photo's pixels ``box`` (x0, y0, x1, y1), as ``cv2.resize(INTER_LINEAR)`` of the whole would give it."""
    (sx, sy), (ox, oy), (x0, y0, x1, y1) = scale, offset, box
    m = np.float64([[sx, 0, (x0 + 0.5) * sx - 0.5 - ox], [0, sy, (y0 + 0.5) * sy - 0.5 - oy]])
    return cv2.warpAffine(img, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def _means(f, b, a, r):
    """Alpha-weighted local means of the foreground and background colours (box of side ``r``)."""
    blur = lambda x: cv2.blur(x, (r, r))  # noqa: E731
    ba = blur(a[..., 0])[..., None]
    return blur(f * a) / (ba + 1e-5), blur(b * (1 - a)) / ((1 - ba) + 1e-5)


def _blur_fusion(image, f, b, a, r):
    bf, bb = _means(f, b, a, r)
    return np.clip(bf + a * (image - a * bf - (1 - a) * bb), 0.0, 1.0), bb
