"""The composer: s1 cut-outs pasted into a planned layout, back to front, on a black canvas.

Each instance gets a source cut-out (seeded), cropped to its mask box, optionally flipped, rotated
a little and shifted a little, scaled to its planned box's area with its aspect ratio kept (never
taller than the box, at most ``widen`` wider) and standing on the box's bottom edge. Compositing is
ordinary "over" with the soft alpha. Every canvas pixel that any cut-out touches belongs to the
front-most of them, so the per-instance masks are disjoint and add up exactly to the union mask;
a composition in which some instance keeps less than ``min_visible`` of its area is drawn again
(other sources and augmentations, a new heuristic layout when the heuristic made it), a bounded
number of times; so is a planned overlap that hid nothing (the occluder in front of thin legs),
so the occluded share follows ``compose.occlusion``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from gen4gen.errors import ItemFailed
from gen4gen.images import read_image
from gen4gen.layout.plausibility import occluded
from gen4gen.layout.schema import Plan, PlacedBox
from gen4gen.repaint.exposure import metered_light
from gen4gen.stage_settings import ComposeSettings, IOSettings


@dataclass(frozen=True)
class Source:
    item_id: str  # the s1 item, "<scene>/<concept>/<photo stem>"
    cutout: Path  # its cutout.png (RGBA)
    aspect: float | None = None  # width / height of its mask box (s1 meta bbox_xyxy)
    cut_edges: tuple[str, ...] = ()  # the photo edges the subject is cut by (layout/closeups.py)


@dataclass
class Sprite:
    name: str
    rgb: np.ndarray  # h x w x 3 uint8
    alpha: np.ndarray  # h x w uint8
    x: int  # top-left on the canvas
    y: int
    source: Source
    transform: dict
    light: float | None = None  # the metered luminance of its photo (repaint/exposure.py), None: unknown


@dataclass
class Composition:
    image: np.ndarray  # H x W x 3 uint8, concepts over black
    rgba: np.ndarray  # H x W x 4 uint8, straight (un-premultiplied) colour
    mask: np.ndarray  # H x W uint8, union of the soft alphas
    instances: dict[str, np.ndarray]  # name -> H x W uint8, visible part of the union mask
    objects: list[dict]  # layout.json "objects"
    layout: Plan
    attempts: int = 1
    rejected: list[str] = field(default_factory=list)


class Composer:
    def __init__(self, compose: ComposeSettings, io: IOSettings, cache_size: int = 16, widen: float = 0.5):
        """``compose``: the augmentation (rotation in degrees and shift as a share of the canvas side, each uniform
        in [-max, max]), ``min_visible`` and ``max_attempts``; ``io``: the bound of every cut-out read."""
        self.augment = compose.augment
        self.widen = widen  # a cut-out wider than its box may exceed the box width by this share
        self.min_visible, self.max_attempts = compose.min_visible, compose.max_attempts
        self.max_pixels, self.min_side = io.max_pixels, io.min_side
        # decoded, cropped cut-outs shared by the compositions (a 4k photo is read once, not once per use)
        self._load = functools.lru_cache(maxsize=cache_size)(self._load_cutout)

    def _load_cutout(self, path: Path) -> tuple[np.ndarray, np.ndarray, float | None]:
        rgba = read_image(path, mode="RGBA", max_pixels=self.max_pixels, min_side=self.min_side)
        return (*crop_cutout(rgba, path), metered_light(rgba[..., :3], rgba[..., 3]))

    def compose(self, layout: Plan, sources: dict[str, list[Source]], rng: np.random.Generator,
                replan: Callable[[int], Plan] | None = None) -> Composition:
        """Paste every instance of ``layout``; retry with new draws while an instance is too hidden."""
        rejected: list[str] = []
        spare = None  # a planned overlap that hid nothing (thin legs, a box corner): kept if no draw does better
        for attempt in range(self.max_attempts):
            if attempt and replan is not None:
                layout = replan(attempt)
            sprites = self._sprites(layout, sources, rng)
            comp = composite(sprites, layout)
            hidden = [o for o in comp.objects if o["visible_fraction"] < self.min_visible]
            if not hidden:
                comp.attempts, comp.rejected = attempt + 1, rejected
                if not layout.occluding or replan is None or occluded(comp.objects):
                    return comp
                spare = spare or comp
                rejected.append(f"{layout.occluding[0]} hides nothing of {layout.occluding[1]}")
                continue
            rejected.append(", ".join(f"{o['name']} keeps {o['visible_fraction']:.0%}" for o in hidden))
        if spare is not None:
            spare.rejected = rejected
            return spare
        raise ItemFailed(f"no composition keeps every instance at least {self.min_visible:.0%} visible "
                         f"(compose.min_visible) in {self.max_attempts} attempts; last: {rejected[-1]}. "
                         "Lower compose.min_visible, raise compose.max_attempts or use fewer objects per scene")

    # -------------------------------------------------------------- sprites
    def _sprites(self, layout: Plan, sources, rng) -> list[Sprite]:
        picks = _pick_sources(layout.boxes, sources, rng)
        by_name = {b.name: b for b in layout.boxes}
        shift_px = 2.0 * self.augment.max_shift * layout.size[0]  # two neighbours may shift towards each other
        sprites = []
        for name in layout.paste_order:
            box = by_name[name]
            src = picks[name]
            room = side_room(box.box, [b.box for b in layout.boxes if b is not box]) - shift_px  # shifts eat room
            widen = min(self.widen, max(0.0, 2.0 * room / box.box[2]))
            rgb, alpha, light = self._load(src.cutout)
            horizon = (layout.camera or {}).get("horizon")
            sprites.append(replace(self._sprite(box, src, rgb, alpha, layout.size, rng, widen, horizon), light=light))
        return sprites

    def _sprite(self, box: PlacedBox, src: Source, rgb, alpha, size, rng, widen: float = 0.0,
                horizon: float | None = None) -> Sprite:
        W, H = size
        # draws in a fixed order, whatever is enabled, so one setting does not reshuffle the others
        flip = bool(rng.random() < 0.5) and self.augment.flip
        angle = float(rng.uniform(-1, 1)) * self.augment.max_rotation
        shift = rng.uniform(-1, 1, 2) * self.augment.max_shift
        bx, by, bw, bh = box.box
        ch, cw = alpha.shape
        if box.cut_edges:  # a close-up: its cut edges go exactly onto the frame, so none is seen floating
            return self._closeup(box, src, rgb, alpha, size)
        if abs(angle) < 0.05:
            angle = 0.0
        # scale first (a 4k cut-out is never rotated at full size), to fit the rotated rectangle
        rad = np.deg2rad(angle)
        rw, rh = cw * abs(np.cos(rad)) + ch * abs(np.sin(rad)), cw * abs(np.sin(rad)) + ch * abs(np.cos(rad))
        scale = fit_scale(rw, rh, bw, bh, widen, W)
        rgb, alpha = resize(rgb, alpha, max(1, int(round(cw * scale))), max(1, int(round(ch * scale))))
        if flip:  # after scaling: mirroring the small sprite, not the photo
            rgb, alpha = np.ascontiguousarray(rgb[:, ::-1]), np.ascontiguousarray(alpha[:, ::-1])
        if angle:
            rgb, alpha = rotate(rgb, alpha, angle)
            rgb, alpha = rgb[:H, :W], alpha[:H, :W]  # rounding may add a pixel to a canvas-wide box
        nh, nw = alpha.shape
        x = bx + (bw - nw) / 2 + shift[0] * W  # centred, standing on the box's bottom edge
        # feet moved up or down are moved in depth: a share of how far below the planner's horizon they stand,
        # not of H (on a desk photo whose ground is an 80 px strip, +-3 % of H put the nearest object's feet
        # behind a farther one's, which then looked tiny beside it); H when the plan has no horizon
        below = by + bh - horizon * H if horizon is not None else H
        y = by + bh - nh + shift[1] * (below if below > 0 else H)
        x, y = int(round(min(max(x, 0), W - nw))), int(round(min(max(y, 0), H - nh)))
        dx = x - int(round(bx + (bw - nw) / 2))
        dy = y - int(round(by + bh - nh))
        return Sprite(box.name, rgb, alpha, x, y, src,
                      {"scale": round(scale, 5), "flip": flip, "rotation": round(angle, 3), "shift": [dx, dy]})


    @staticmethod
    def _closeup(box: PlacedBox, src: Source, rgb, alpha, size) -> Sprite:
        """The cut-off subject unrotated, unshifted and unmirrored, as big as fits its box, its cut edges on the
        box's edges (which the planner put on the canvas edges)."""
        W, H = size
        bx, by, bw, bh = box.box
        ch, cw = alpha.shape
        edges = set(box.cut_edges)
        tall = {"top", "bottom"} <= edges  # cut on top and bottom: frame-high, else its top cut floats in the scene
        scale = bh / ch if tall else min(bw / cw, bh / ch)
        nw = max(1, int(round(cw * scale)))
        rgb, alpha = resize(rgb, alpha, nw if tall else min(W, nw), min(H, max(1, int(round(ch * scale)))))
        if tall and nw > bw:  # wider than its box (at most the canvas): the canvas side it stands against crops it
            keep = np.s_[:, :int(bw)] if bx + bw >= W - 1 else np.s_[:, nw - int(bw):]
            rgb, alpha = rgb[keep], alpha[keep]
        nh, nw = alpha.shape
        x = bx if "left" in edges else bx + bw - nw if "right" in edges else bx + (bw - nw) / 2
        y = by if "top" in edges and "bottom" not in edges else by + bh - nh
        x, y = int(round(min(max(x, 0), W - nw))), int(round(min(max(y, 0), H - nh)))
        return Sprite(box.name, rgb, alpha, x, y, src, {"scale": round(scale, 5), "flip": False, "rotation": 0.0,
                                                        "shift": [0, 0], "closeup": sorted(edges)})


def fit_scale(rw: float, rh: float, bw: float, bh: float, widen: float, canvas_w: float) -> float:
    """Scale of an ``rw`` x ``rh`` cut-out in a ``bw`` x ``bh`` box: the box's area (a lying dog planned in a box
    shaped like its sitting photo keeps its size instead of shrinking to the box's width), never taller than
    the box (the planned height carries the size order), at most ``widen`` wider than it and the canvas."""
    return min((bw * bh / (rw * rh)) ** 0.5, bh / rh, (1.0 + widen) * bw / rw, canvas_w / rw)


def side_room(box: list[float], others: list[list[float]]) -> float:
    """Free width beside ``box`` (the smaller side) up to the next box standing in the same rows; boxes that
    already overlap it horizontally (a planned occluder, or one above or below it) do not count."""
    x0, y0, x1, y1 = box[0], box[1], box[0] + box[2], box[1] + box[3]
    room = float("inf")
    for o in others:
        if o[1] >= y1 or o[1] + o[3] <= y0 or (o[0] < x1 and o[0] + o[2] > x0):
            continue
        room = min(room, o[0] - x1 if o[0] >= x1 else x0 - (o[0] + o[2]))
    return max(0.0, room)


def _pick_sources(boxes: list[PlacedBox], sources: dict[str, list[Source]], rng) -> dict[str, Source]:
    """Instances of one concept get different photos while there are enough of them."""
    picks = {}
    for concept in sorted({b.concept for b in boxes}):
        pool = sources.get(concept) or []
        if not pool:
            raise ItemFailed(f"no usable s1 cut-out for concept {concept!r}")
        order = rng.permutation(len(pool))
        for b in boxes:
            if b.concept == concept:
                picks[b.name] = pool[int(order[b.index % len(pool)])]
    return picks


def load_cutout(path: Path, max_pixels: int = 80_000_000, min_side: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """An s1 cut-out as (rgb, alpha), cropped to the object (``crop_cutout``)."""
    return crop_cutout(read_image(path, mode="RGBA", max_pixels=max_pixels, min_side=min_side), path)


def crop_cutout(rgba: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(rgb, alpha) of a cut-out cropped to the object: the box of alpha >= 50% (as s1's bbox), widened by a
    margin for the soft edge. A soft saliency map also holds faint haze far from the object; a box around
    every non-zero pixel would shrink the object to a fraction of its planned box. Haze outside the crop is
    dropped."""
    alpha = rgba[..., 3]
    ys, xs = np.nonzero(alpha >= 128)
    if ys.size == 0:
        raise ItemFailed(f"cut-out {path} has an empty mask")
    h, w = alpha.shape
    margin = max(2, round(0.02 * max(ys.max() - ys.min(), xs.max() - xs.min())))
    y0, y1 = max(0, ys.min() - margin), min(h, ys.max() + 1 + margin)
    x0, x1 = max(0, xs.min() - margin), min(w, xs.max() + 1 + margin)
    return np.ascontiguousarray(rgba[y0:y1, x0:x1, :3]), np.ascontiguousarray(alpha[y0:y1, x0:x1])


def resize(rgb: np.ndarray, alpha: np.ndarray, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Area averaging when shrinking (no aliasing), bilinear when enlarging; colour premultiplied by alpha."""
    if (w, h) == (alpha.shape[1], alpha.shape[0]):
        return rgb, alpha
    interp = cv2.INTER_AREA if w < alpha.shape[1] else cv2.INTER_LINEAR
    return _premultiplied(lambda x: cv2.resize(x, (w, h), interpolation=interp), rgb, alpha)


def _premultiplied(resample: Callable[[np.ndarray], np.ndarray], rgb: np.ndarray, alpha: np.ndarray,
                   straight: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``resample`` applied to colour weighted by alpha, then divided by the resampled alpha. A soft-edge pixel
    averages its neighbours' colours by how much of them is subject: resampling straight colour would mix in
    the colour of transparent pixels (the old photo's background, or black), a dark or coloured fringe. Where
    the result is fully transparent the ``straight`` resample (default: ``resample``) is kept (unseen; a later
    bilinear step reads it)."""
    a = alpha.astype(np.float32) * np.float32(1.0 / 255.0)
    color = resample(rgb.astype(np.float32) * a[..., None])
    cover = resample(a)
    out_alpha = np.clip(cover * 255.0 + 0.5, 0, 255).astype(np.uint8)
    out = (straight or resample)(np.ascontiguousarray(rgb))
    solid = cover > 1.0 / 512  # under half a step of 8-bit alpha the division only amplifies rounding
    out[solid] = np.clip(color[solid] / cover[solid][:, None] + 0.5, 0, 255).astype(np.uint8)
    return out, out_alpha


def rotate(rgb: np.ndarray, alpha: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate about the centre on an enlarged canvas (premultiplied, as ``resize``), then crop back to the
    alpha's box."""
    h, w = alpha.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(np.ceil(h * sin + w * cos)), int(np.ceil(h * cos + w * sin))
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2

    def warp(x: np.ndarray, border: int = cv2.BORDER_CONSTANT) -> np.ndarray:  # alpha and colour x alpha: 0 outside
        return cv2.warpAffine(x, m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=border)

    # the straight colour, unseen where alpha is 0, is extended at the border (not black)
    rgb, alpha = _premultiplied(warp, rgb, alpha, lambda x: warp(x, cv2.BORDER_REPLICATE))
    ys, xs = np.nonzero(alpha)
    if ys.size == 0:
        return rgb, alpha
    sl = np.s_[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    return np.ascontiguousarray(rgb[sl]), np.ascontiguousarray(alpha[sl])


def composite(sprites: list[Sprite], layout: Plan) -> Composition:
    """Paste ``sprites`` (back to front) over black; masks, tight boxes and visibility per instance."""
    W, H = layout.size
    # work inside the rectangle the sprites cover; the rest of the canvas stays black
    x0, y0 = min(sp.x for sp in sprites), min(sp.y for sp in sprites)
    x1 = max(sp.x + sp.alpha.shape[1] for sp in sprites)
    y1 = max(sp.y + sp.alpha.shape[0] for sp in sprites)
    color = np.zeros((y1 - y0, x1 - x0, 3), np.float32)  # premultiplied colour
    cover = np.zeros((y1 - y0, x1 - x0), np.float32)  # union alpha
    owner = np.full((H, W), -1, np.int16)  # front-most sprite touching each pixel
    for z, sp in enumerate(sprites):
        h, w = sp.alpha.shape
        sl = np.s_[sp.y - y0:sp.y - y0 + h, sp.x - x0:sp.x - x0 + w]
        a = sp.alpha.astype(np.float32) * (1.0 / 255.0)
        color[sl] = color[sl] * (1.0 - a)[..., None] + sp.rgb * a[..., None]
        cover[sl] = cover[sl] * (1.0 - a) + a
        owner[_rect(sp)][sp.alpha > 0] = z
    # convex combinations of 0..255 stay in range: rounding needs no clip
    region = np.s_[y0:y1, x0:x1]
    mask = np.zeros((H, W), np.uint8)
    mask[region] = cover * 255.0 + 0.5
    image = np.zeros((H, W, 3), np.uint8)
    image[region] = color + 0.5
    straight = np.divide(color, cover[..., None], out=np.zeros_like(color), where=cover[..., None] > 0)
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[region + (slice(0, 3),)] = np.minimum(straight + 0.5, 255.0)
    rgba[..., 3] = mask
    by_name = {b.name: b for b in layout.boxes}
    instances, objects = {}, []
    for z, sp in enumerate(sprites):
        sl = _rect(sp)  # a sprite owns pixels only inside its own rectangle
        mine = owner[sl] == z
        inst = np.zeros((H, W), np.uint8)
        inst[sl][mine] = mask[sl][mine]
        instances[sp.name] = inst
        solid = sp.alpha >= 128  # the body of the object, not its soft halo
        visible = float((solid & mine).sum()) / max(1, int(solid.sum()))
        ys, xs = np.nonzero(inst[sl])
        tight = ([int(xs.min()) + sp.x, int(ys.min()) + sp.y, int(xs.max() - xs.min() + 1),
                  int(ys.max() - ys.min() + 1)] if ys.size else [0, 0, 0, 0])
        b = by_name[sp.name]
        objects.append({"name": sp.name, "concept": b.concept, "index": b.index, "box": tight,
                        "planned_box": [int(round(v)) for v in b.box],
                        "placed_box": [sp.x, sp.y, sp.alpha.shape[1], sp.alpha.shape[0]],
                        "source": sp.source.item_id, "source_path": str(sp.source.cutout),
                        "transform": sp.transform, "mask": f"instances/{sp.name}.png", "z": z,
                        "visible_fraction": round(visible, 4),
                        "source_light": None if sp.light is None else round(sp.light, 5)})
    order = [b.name for b in layout.boxes]
    objects.sort(key=lambda o: order.index(o["name"]))
    return Composition(image, rgba, mask, instances, objects, layout)


def _rect(sp: Sprite):
    h, w = sp.alpha.shape
    return np.s_[sp.y:sp.y + h, sp.x:sp.x + w]


def with_boxes(layout: Plan, other: Plan) -> Plan:
    """``layout`` with the geometry of ``other`` (a re-drawn heuristic layout): boxes, paste order, camera."""
    return replace(layout, boxes=other.boxes, paste_order=other.paste_order, camera=other.camera, depth=other.depth,
                   occluding=other.occluding)
