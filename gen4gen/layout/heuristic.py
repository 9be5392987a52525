"""The embedded planner: real-world size priors, a ground plane in perspective, controlled occlusion.

No model and no network: a table maps category keywords in a concept's name to a typical size and
aspect ratio (an unknown name is a medium thing, and layout.json says ``size_source: unknown``); the
category picks scenes that fit every concept (``layout/scenes.py``). Objects stand on a ground plane:
further back means a base higher on the canvas and a smaller drawing, pasted first. Every box meets
Gen4Gen's minimum area rule, and no two boxes overlap by more than ``max_overlap`` of the smaller one.
"""
from __future__ import annotations

import copy
import itertools
import re
from typing import Annotated

import numpy as np
from pydantic import Field

from gen4gen.backends import typed_settings
from gen4gen.hashing import stable_hash
from gen4gen.layout.closeups import closeup_box, shown_share
from gen4gen.layout.scenes import suggest_scenes as fitting_scenes
from gen4gen.layout.schema import (Plan, PlacedBox, PlanRequest, depth_order, hidden_share, min_box_area,
                                   overlap_fraction)

# keyword -> (category, typical longest side in cm, width / height of the usual photo of it)
SIZES: dict[str, tuple[str, float, float]] = {
    "cat": ("pet", 45, 1.1), "kitten": ("pet", 25, 1.1), "dog": ("pet", 70, 1.1), "puppy": ("pet", 35, 1.1),
    "rabbit": ("pet", 35, 0.9), "bunny": ("pet", 35, 0.9), "bird": ("pet", 20, 0.9),
    "parrot": ("pet", 35, 0.7), "lion": ("wild", 200, 1.5), "tiger": ("wild", 220, 1.6),
    "bear": ("wild", 200, 1.3), "elephant": ("wild", 500, 1.3), "giraffe": ("wild", 500, 0.6),
    "horse": ("farm", 220, 1.3), "cow": ("farm", 220, 1.5), "sheep": ("farm", 120, 1.3), "duck": ("farm", 40, 1.0),
    "houseplant": ("plant", 60, 0.75), "plant": ("plant", 50, 0.75), "flower": ("plant", 35, 0.7),
    "cactus": ("plant", 30, 0.6), "tree": ("plant", 500, 0.8),
    "cup": ("tableware", 10, 1.1), "mug": ("tableware", 11, 1.2), "teapot": ("tableware", 18, 1.3),
    "bowl": ("tableware", 16, 2.0), "vase": ("tableware", 30, 0.5), "bottle": ("tableware", 28, 0.35),
    "glass": ("tableware", 14, 0.6), "plate": ("tableware", 26, 2.5),
    "teddy": ("toy", 35, 0.8), "plush": ("toy", 30, 0.8), "toy": ("toy", 20, 1.0), "doll": ("toy", 30, 0.5),
    "robot": ("toy", 30, 0.7), "lego": ("toy", 15, 1.0), "ball": ("toy", 22, 1.0),
    "astronaut": ("space", 180, 0.5), "rocket": ("space", 3000, 0.3), "spaceship": ("space", 3000, 1.5),
    "car": ("vehicle", 450, 2.4), "bicycle": ("vehicle", 170, 1.7), "bike": ("vehicle", 170, 1.7),
    "motorcycle": ("vehicle", 210, 1.6), "person": ("person", 170, 0.4), "man": ("person", 175, 0.4),
    "woman": ("person", 165, 0.4), "child": ("person", 120, 0.45), "girl": ("person", 130, 0.45),
    "boy": ("person", 130, 0.45), "chair": ("furniture", 90, 0.6), "sofa": ("furniture", 200, 2.2),
    "lamp": ("furniture", 60, 0.5), "table": ("furniture", 150, 1.6), "backpack": ("object", 45, 0.75),
    "bag": ("object", 40, 0.9), "shoe": ("object", 28, 2.0), "sneaker": ("object", 28, 2.0),
    "hat": ("object", 30, 1.4), "guitar": ("object", 100, 0.4), "clock": ("object", 30, 1.0),
    "book": ("object", 25, 0.75), "laptop": ("object", 35, 1.4), "camera": ("object", 14, 1.4),
}
MEDIUM = ("object", 50.0, 1.0)  # unknown names: a medium thing, as wide as high
TOP_MARGIN = 0.03  # share of the canvas height kept above a whole subject standing far back beside a close-up

SIZES.update({
    "goat": ("farm", 130, 1.2), "pig": ("farm", 150, 1.5), "chicken": ("farm", 45, 1.0),
    "pigeon": ("small_animal", 30, 1.0),
    "donkey": ("farm", 180, 1.2), "deer": ("wild", 180, 1.1), "fox": ("wild", 90, 1.4), "zebra": ("wild", 240, 1.3),
    "camel": ("wild", 300, 1.1), "penguin": ("wild", 70, 0.5), "monkey": ("wild", 70, 0.8),
    "owl": ("wild", 40, 0.7), "squirrel": ("small_animal", 40, 0.9), "frog": ("small_animal", 10, 1.3),
    "hamster": ("small_animal", 12, 1.3), "turtle": ("small_animal", 25, 1.5), "mouse": ("small_animal", 10, 1.5),
})
_WORD = re.compile(r"[a-z]+")
Share = Annotated[float, Field(ge=0, le=1)]  # a fraction (of the canvas height, of a box)
Span = tuple[Share, Share]  # (low, high): drawn per composition


def size_prior(concept: str) -> tuple[str, float, float]:
    """(category, typical size in cm, aspect) from the first keyword found in the concept's name."""
    return _lookup(concept) or MEDIUM


def size_source(concept: str) -> str:
    """Where a concept's size comes from: "prior" (the table) or "unknown" (drawn as a medium thing)."""
    return "prior" if _lookup(concept) else "unknown"


def _lookup(concept: str) -> tuple[str, float, float] | None:
    name = concept.lower()
    words = _WORD.findall(name)
    for w in words:
        if w in SIZES:
            return SIZES[w]
        if w.endswith("s") and w[:-1] in SIZES:  # "cats"
            return SIZES[w[:-1]]
    for key in sorted(SIZES, key=len, reverse=True):  # "myhouseplant", "blackcat": long keywords inside a word
        if len(key) >= 3 and key in name.replace("_", "").replace(" ", ""):
            return SIZES[key]
    return None


def real_height(concept: str) -> float:
    """Typical standing height in cm: the longest side, less for things wider than high."""
    _, longest, aspect = size_prior(concept)
    return longest / max(aspect, 1.0)


def size_ratios(concepts: list[str]) -> dict[str, float]:
    """Real-world height relative to the biggest concept (1.0), unbounded: the planner meets Gen4Gen's
    lower bound by depth and, where depth is not enough, by a power that keeps the order."""
    sizes = {c: real_height(c) for c in concepts}
    top = max(sizes.values())
    return {c: round(v / top, 4) for c, v in sizes.items()}


def suggest_scenes(concepts: list[str], rng: np.random.Generator, k: int = 3) -> list[str]:
    """``k`` scene phrases that fit every concept's category and that s3 draws as what they say."""
    return fitting_scenes([size_prior(c)[0] for c in concepts], rng, k)


class HeuristicPlanner:
    """Objects stand on a ground plane seen by a pinhole camera: an object further back has its base
    higher on the canvas (towards the horizon) and is drawn smaller by the same factor, so the paste
    order far to near follows from the bases. Horizon, nearest ground line and camera height are drawn
    per seed. Heights follow real-world priors; Gen4Gen's bound (never under ``smallest_ratio`` of the
    largest drawn object) is met by moving small objects nearer first and only then by compressing the
    ratios with a power (order kept, never a tie). In an ``occlusion`` share of the compositions a nearer
    object stands in front of a farther neighbour, hiding up to ``max_overlap`` of its box; other boxes
    do not overlap unless the row is too crowded for the canvas (then by up to ``max_overlap`` of the
    smaller one)."""
    name = "heuristic"

    @typed_settings
    def __init__(self, *, max_overlap: Share, occlusion: Share, horizon: Span, near: Span, camera: tuple[float, float],
                 depth: Span, max_height: Share, aspect_jitter: float, smallest_ratio: Share):
        self.max_overlap = max_overlap
        self.occlusion = occlusion
        self.horizon = horizon  # fraction of H from the top
        self.near = near  # base of the nearest possible object, fraction of H
        self.camera = camera  # camera height / real height of the tallest object
        self.depth = (max(depth[0], smallest_ratio), depth[1])  # perspective factor range
        self.max_height, self.aspect_jitter, self.smallest_ratio = max_height, aspect_jitter, smallest_ratio

    def config(self) -> dict:
        return {k: v for k, v in vars(self).items()}

    def plan_many(self, requests: list[PlanRequest], on_done=None) -> list[Plan]:
        out = []
        for r in requests:
            out.append(self.plan(r))
            if on_done:
                on_done()
        return out

    def plan(self, request: PlanRequest, ratios: dict[str, float] | None = None,
             scenes: list[str] | None = None) -> Plan:
        """A layout for ``request``; ``ratios`` / ``scenes`` from elsewhere (an LLM) replace the priors."""
        rng = np.random.default_rng(int(request.seed) & 0xFFFFFFFF)
        concepts = [c.name for c in request.concepts]
        ratios = dict(ratios) if ratios else size_ratios(concepts)
        scenes = list(scenes) if scenes else list(request.scenes) or suggest_scenes(concepts, rng)
        pick = int(rng.integers(len(scenes)))
        background = scenes[0] if request.scenes else scenes[pick]  # a chosen photo's scene comes first
        if request.closeup is not None:
            boxes, camera, depth, occluding, order = self.place_closeup(request, ratios, rng)
        else:
            boxes, camera, depth, occluding = self.place(request, ratios, rng, self.occludes(request))
            order = depth_order(boxes)
        return Plan(size=tuple(request.size), boxes=boxes, paste_order=order,
                      scenes=scenes, background_prompt=background, planner=self.name, seed=int(request.seed),
                      size_ratios=ratios, size_source={c: size_source(c) for c in concepts}, camera=camera,
                      depth=depth, occluding=occluding, backdrop=request.backdrop)

    def occludes(self, request: PlanRequest) -> bool:
        """Whether this composition gets an overlap: samples of a concept set walk a golden-ratio sequence,
        so any run of them holds the configured share to within about one composition (a coin per
        composition would drift), and a re-drawn layout (new seed, same sample) keeps the decision."""
        offset = stable_hash("+".join(c.name for c in request.concepts)) / 2.0 ** 64
        return (offset + GOLDEN * int(request.sample)) % 1.0 < self.occlusion

    # -------------------------------------------------------------- geometry
    def place(self, request: PlanRequest, ratios: dict[str, float], rng: np.random.Generator,
              occlude: bool) -> tuple[list[PlacedBox], dict, dict, list[str] | None]:
        W, H = request.size
        inst = request.instances
        n = len(inst)
        if n == 0:
            return [], {}, {}, None
        u = rng.random(4 + n).tolist()  # one draw, each value with a fixed role
        horizon, near, cam = _lerp(self.horizon, u[0]), _lerp(self.near, u[1]), _lerp(self.camera, u[2])
        if request.horizon is not None:  # the background photo's own ground line (a table top: a low one)
            horizon = min(max(float(request.horizon), 0.05), near - 0.08)
        # boxes shaped like the cut-outs that will fill them when s1 told us, else like the category
        known = {c.name: c.aspect for c in request.concepts if c.aspect}
        jitter = np.exp(rng.normal(0.0, self.aspect_jitter, n)).tolist()
        aspect = [known.get(c) or size_prior(c)[2] * j for (c, _), j in zip(inst, jitter)]
        real = [max(1e-6, float(ratios.get(c, 1.0))) for c, _ in inst]
        top = max(real)
        real = [v / top for v in real]
        order = rng.permutation(n).tolist()  # left to right
        s = [_lerp(self.depth, u[4 + i]) for i in range(n)]  # 1: on the nearest ground line
        pair = None
        if occlude and n >= 2:
            k = int(rng.integers(n - 1))
            a, b = order[k], order[k + 1]
            far, close = (a, b) if s[a] <= s[b] else (b, a)
            gap = 0.2 * (self.depth[1] - self.depth[0])  # the occluder stands clearly in front
            if s[close] - s[far] < gap:
                s[close] = min(self.depth[1], s[far] + gap)
                s[far] = s[close] - gap
            pair = (far, close)
        # Gen4Gen's bound on the drawn heights: small objects come nearer first ...
        b = self.smallest_ratio
        tallest = max(r * d for r, d in zip(real, s))
        s = [min(self.depth[1], max(d, b * tallest / r)) for r, d in zip(real, s)]
        sized = self._size(real, s, aspect, pair, horizon, near, cam, W, H)
        if sized[-1] and n > 1:  # no room for every box at its size: the biggest to the back, the smallest in front
            lo, hi = self.depth
            for rank, i in enumerate(sorted(range(n), key=lambda i: -real[i])):
                s[i] = lo + (hi - lo) * rank / (n - 1)
            if pair:
                pair = tuple(sorted(pair, key=lambda i: s[i]))
            sized = self._size(real, s, aspect, pair, horizon, near, cam, W, H)
        gamma, base, w, h, _ = sized
        if pair:  # (farther, nearer) by where they stand now that the small ones came nearer
            pair = tuple(sorted(pair, key=lambda i: base[i]))

        def overlaps(a, b):  # they share a quarter of the smaller height: a real occlusion is possible
            return _rows_shared((a, b), base, h) > 0.25 * min(h[a], h[b]) and base[a] != base[b]

        if pair and not overlaps(*pair):  # the occluder's head is below the other's feet: bring the other forward
            far, close = pair
            step = 0.05 * (self.depth[1] - self.depth[0])
            forward = list(s)
            forward[far] = max(s[far], s[close] - step)
            # with compressed ratios a bigger thing is drawn small for its size: it must not come in front of a
            # smaller one, so the smaller ones come with it; no room for that: no overlap here (a crowded row)
            along = [max(d, forward[far]) if real[j] < real[far] else d for j, d in enumerate(forward)]
            for moved in (forward, along):
                again = self._size(real, moved, aspect, pair, horizon, near, cam, W, H)
                if not again[-1] and _in_depth(real, moved, again[0]):  # every box fits at its size
                    s, (gamma, base, w, h, _) = moved, again
                    break
        if pair and not overlaps(*pair):  # still apart: a neighbouring pair that stands in the same rows, else none
            cands = [(order[k], order[k + 1]) for k in range(n - 1) if overlaps(order[k], order[k + 1])]
            pair = tuple(sorted(cands[int(rng.integers(len(cands)))], key=lambda i: base[i])) if cands else None
            if pair is None:  # the row was sized for an overlap: size it for none
                gamma, base, w, h, _ = self._size(real, s, aspect, None, horizon, near, cam, W, H)
        if gamma < 1.0:  # compressed ratios draw a bigger thing small for its size: no smaller one stands behind it
            ahead = [max([d] + [s[j] for j in range(n) if real[j] > real[i]]) for i, d in enumerate(s)]
            again = self._size(real, ahead, aspect, pair, horizon, near, cam, W, H) if ahead != s else None
            if again and not again[-1]:  # only when every box still fits (the occluding pair keeps its rows)
                kept = (gamma, base, w, h)
                gamma, base, w, h, _ = again
                if pair and not overlaps(*pair):
                    gamma, base, w, h = kept
                else:
                    s = ahead
        for _ in range(20):
            xs = self._spread(order, w, h, base, W, pair, u[3], rng)
            boxes = [[x, max(0.0, y - hi), wi, min(hi, y)] for x, y, wi, hi in zip(xs, base, w, h)]
            if self._ok(boxes, pair):
                break
            w, h = [v * 0.95 for v in w], [v * 0.95 for v in h]  # very crowded sets: shrink a little and place again
        placed = [PlacedBox(concept=c, index=k, box=[float(v) for v in boxes[i]]) for i, (c, k) in enumerate(inst)]
        camera = {"horizon": round(horizon, 4), "near": round(near, 4), "height": round(cam, 4),
                  "height_cm": round(cam * max(real_height(c) for c, _ in inst), 1), "gamma": round(gamma, 4)}
        depth = {p.name: round(d, 4) for p, d in zip(placed, s)}
        occluding = [placed[pair[1]].name, placed[pair[0]].name] if pair else None
        return placed, camera, depth, occluding

    def place_closeup(self, request: PlanRequest, ratios: dict[str, float], rng: np.random.Generator):
        """The cut-off subject as a close-up in front (``closeups.closeup_box``), the other concepts standing on
        the ground in the rest of the width, planned as usual. Returns ``place``'s tuple and the paste order."""
        W, H = request.size
        c = request.closeup
        u = rng.random(3).tolist()
        others = tuple(o for o in request.concepts if o is not c)
        near = _lerp(self.near, u[2])
        box, side = closeup_box(c, c.aspect or size_prior(c.name)[2], (W, H), near, u, bool(others))
        hz = request.horizon if request.horizon is not None else _lerp(self.horizon, u[2])
        camera = {"horizon": round(hz, 4), "near": round(near, 4), "height": 1.0,
                  "height_cm": round(real_height(c.name), 1), "gamma": 1.0}
        depth, occluding, boxes = {}, None, []
        if others:
            wc = box.box[2]
            rest = PlanRequest(others, (max(1, int(W - wc)), H), request.seed, request.sample, request.key,
                               horizon=request.horizon)
            # sized among themselves as if in the front half of the ground (far back they would be specks);
            # where they stand comes from the close-up's perspective (_behind)
            front = copy.copy(self)
            front.depth = (max(self.depth[0], (self.depth[0] + self.depth[1]) / 2), self.depth[1])
            boxes, camera, depth, occluding = front.place(rest, ratios, rng, self.occludes(rest))
            x0 = wc if side == "left" else 0.0
            # behind a close-up nothing is a speck: the tallest other is at least 0.45 of it (Gen4Gen's bound
            # is 0.4), all grown alike within their part of the canvas
            grow = 0.45 * box.box[3] / max(b.box[3] for b in boxes)
            gs = [max(1.0, min(grow, (W - wc) / b.box[2], self.max_height * H / b.box[3])) for b in boxes]
            low = min(b.box[3] * g for b, g in zip(boxes, gs))  # one held by the strip's width: the others grow
            for b, g in zip(boxes, gs):  # only as far as keeps it over smallest_ratio of them
                x, y, w, h = b.box
                g = max(1.0, min(g, low / (self.smallest_ratio * h)))
                x = min(max(x + w / 2 - w * g / 2, 0.0), W - wc - w * g)
                b.box = [x + x0, y + h - h * g, w * g, h * g]
            self._no_larger(box, boxes, ratios, min_box_area((W, H), len(request.instances)) * 1.02)
            camera, depth, occluding = self._behind(box, boxes, ratios, {**camera, "near": round(near, 4)}, occluding,
                                                     (W, H), (x0, W - wc), rng)
        depth = {**depth, box.name: 1.0}
        return [*boxes, box], camera, depth, occluding, [*depth_order(boxes), box.name]

    def _no_larger(self, closeup: PlacedBox, boxes: list[PlacedBox], ratios, area_min: float):
        """Shrink each other concept drawn larger for its size than the close-up to the close-up's scale (it then
        stands on the nearest line, ``_behind``), never under Gen4Gen's minimum area, under ``smallest_ratio`` of
        the tallest, nor the tallest under 0.45 of the close-up: where those bounds stop it, a small thing stays
        larger than the close-up's scale (a cup beside a dog's close-up), on the nearest line."""
        unit = _closeup_scale(closeup, ratios)
        fit = [min(1.0, unit * _real(ratios, b.concept) / b.box[3]) for b in boxes]
        tallest = max(max(b.box[3] * f for b, f in zip(boxes, fit)),
                      min(0.45 * closeup.box[3], max(b.box[3] for b in boxes)))
        for b, f in zip(boxes, fit):
            x, y, w, h = b.box
            g = max(f, min(1.0, max((area_min / (w * h)) ** 0.5, self.smallest_ratio * tallest / h,
                                    tallest / h if h >= tallest else 0.0)))
            b.box = [x + (w - w * g) / 2, y + h - h * g, w * g, h * g]  # about its feet's middle: _behind sets them

    def _behind(self, closeup: PlacedBox, boxes: list[PlacedBox], ratios, camera, occluding, size, strip, rng):
        """Each other concept's feet where its drawn size puts it in the close-up's perspective: the close-up
        stands on the nearest ground line and sets the pixels per cm there (``shown_share`` of its subject
        in its box's height); a concept drawn at a share ``d`` of that for its own size stands at depth ``d``,
        its feet that far from the horizon towards the nearest line. Drawn larger than the close-up's scale
        (Gen4Gen's minimum size on a small thing): on the nearest line. Too tall to stand that far back
        inside the canvas: shrunk until it does. Returns the camera, depths and occluding pair."""
        W, H = size
        hz, near = camera["horizon"], camera["near"]
        unit = _closeup_scale(closeup, ratios)
        depth = {}
        top = min(TOP_MARGIN, hz / 2)  # a whole subject's head kept off the frame's top edge, as a photographer would
        for b in boxes:
            x, y, w, h = b.box
            at_near = unit * _real(ratios, b.concept)  # its height on the nearest line
            d = min(1.0, h / at_near)
            if h > (hz - top + d * (near - hz)) * H:  # top above the canvas (or at its edge): smaller, further back
                d = (hz - top) / (at_near / H - (near - hz))
                x, w, h = x + (w - w * d * at_near / h) / 2, w * d * at_near / h, d * at_near
            feet = (hz + d * (near - hz)) * H
            b.box, depth[b.name] = [x, feet - h, w, h], round(d, 4)
        boxes_xy = [b.box for b in boxes]
        pair = None
        if occluding:  # (farther, nearer) by where they stand now
            idx = {b.name: i for i, b in enumerate(boxes)}
            pair = tuple(sorted((idx[n] for n in occluding), key=lambda i: boxes_xy[i][1] + boxes_xy[i][3]))
        if not self._ok(boxes_xy, pair):  # rows shared differ now: place them along the strip again
            x0, width = strip
            order = sorted(range(len(boxes)), key=lambda i: boxes_xy[i][0])
            w, h = [b[2] for b in boxes_xy], [b[3] for b in boxes_xy]
            base = [b[1] + b[3] for b in boxes_xy]
            xs = self._spread(order, w, h, base, width, pair, float(rng.random()), rng)
            for b, xi in zip(boxes, xs):
                b.box[0] = x0 + xi
        if pair and hidden_share(boxes[pair[1]].box, boxes[pair[0]].box) <= 0:
            pair = None
        cam = (near - hz) * H / unit  # pinhole: height on the nearest line = (near - horizon) * real / camera
        camera = {"horizon": hz, "near": near, "height": round(cam, 4),
                  "height_cm": round(cam * max(real_height(c) for c in ratios), 1), "gamma": 1.0}
        occluding = [boxes[pair[1]].name, boxes[pair[0]].name] if pair else None
        return camera, depth, occluding

    def _size(self, real, s, aspect, pair, horizon, near, cam, W, H):
        """(gamma, bases, widths, heights, crowded) for perspective factors ``s``: heights by the pinhole model,
        one scale for all (so the order holds) within the canvas, the minimum area met where the row allows."""
        n = len(real)
        gamma = _gamma(real, s, self.smallest_ratio)  # compress only as much as depth could not do
        eff = [r ** gamma for r in real]  # r ** gamma keeps the order strictly: never a tie
        base = [(horizon + d * (near - horizon)) * H for d in s]
        # pinhole: height = (base - horizon) * real height / camera height; the tallest is 1 / cam of that
        K = (near - horizon) * H / cam
        unit = [e * d for e, d in zip(eff, s)]
        limit = min(min(self.max_height * H, y) / v for v, y in zip(unit, base))
        limit = min(limit, min(0.95 * W / (v * a) for v, a in zip(unit, aspect)))
        row = sum(v * a for v, a in zip(unit, aspect))  # the row of boxes side by side, an overlap subtracted
        if pair:
            row -= 0.9 * self.max_overlap * min(unit[pair[0]] * aspect[pair[0]], unit[pair[1]] * aspect[pair[1]])
        limit = min(limit, 0.98 * W / row)
        area_min = min_box_area((W, H), n) * 1.02  # a little over: rounding must not break the rule
        need = max(area_min / (v * v * a) for v, a in zip(unit, aspect)) ** 0.5
        K = min(max(K, need), limit)  # everything grows together, so the ratios hold
        h = [K * v for v in unit]
        w = [hi * a for hi, a in zip(h, aspect)]
        crowded = need > limit * (1 + 1e-9)
        if crowded:  # a very thin or flat thing, or too many: grow the small ones, then every bigger one as much
            for i in range(n):
                g = (area_min / (w[i] * h[i])) ** 0.5
                if g > 1.0:
                    g = max(1.0, min(g, self.max_height * H / h[i], base[i] / h[i], 0.95 * W / w[i]))
                    w[i], h[i] = w[i] * g, h[i] * g
            floor = 0.0
            for i in sorted(range(n), key=lambda i: real[i]):  # at the same depth a bigger thing stays bigger
                g = floor * s[i] / h[i]
                if g > 1.0:
                    g = max(1.0, min(g, self.max_height * H / h[i], base[i] / h[i], 0.95 * W / w[i]))
                    w[i], h[i] = w[i] * g, h[i] * g
                floor = max(floor, h[i] / s[i])
        return gamma, base, w, h, crowded

    def _spread(self, order, w, h, base, W, pair, t, rng) -> list[float]:
        """x of each box: left to right in ``order`` with random margins. The occluding pair overlaps: the
        nearer box stands in front of the farther one's body (up to inside its width), hiding at most
        ``max_overlap`` of the farther box; other neighbours overlap only when the row is too wide."""
        n = len(order)
        gaps = [0.0] * (n - 1)  # between the right edge so far and the next box; negative: an overlap
        free_gap = [True] * (n - 1)
        if pair:
            k = next(k for k in range(n - 1) if {order[k], order[k + 1]} == set(pair))
            a, b = order[k], order[k + 1]
            far = pair[0]
            iy = _rows_shared((a, b), base, h)
            if iy > 0:
                small, big = sorted((w[a], w[b]))
                ix = _lerp((0.4, 1.0), t) * small + _lerp((0.0, 0.35), t) * (big - small)
                gaps[k], free_gap[k] = -min(ix, 0.95 * self.max_overlap * w[far] * h[far] / iy), False
        free = W - self._extent(order, w, gaps)
        if free >= 0:  # margins and the other gaps split at random
            parts = (rng.dirichlet(np.full(sum(free_gap) + 2, 2.0)) * free).tolist()
            it = iter(parts[1:-1])
            gaps = [next(it) if f else g for g, f in zip(gaps, free_gap)]
            x0 = parts[0]
        else:  # too wide: neighbours overlap, each pair up to its share of the bound
            slack = [self._pair_slack(order[k], order[k + 1], w, h, base) if free_gap[k] else 0.0 for k in range(n - 1)]
            share = min(1.0, -free / max(sum(slack), 1e-9))
            gaps = [g - sl * share for g, sl in zip(gaps, slack)]
            x0 = 0.0
        xs = self._positions(order, w, gaps, x0)
        return [min(max(0.0, x), W - wi) for x, wi in zip(xs, w)]

    @staticmethod
    def _positions(order, w, gaps, x0: float) -> list[float]:
        xs, right = [0.0] * len(order), x0
        for k, i in enumerate(order):
            xs[i] = x0 if k == 0 else max(x0, right + gaps[k - 1])
            right = max(right, xs[i] + w[i])
        return xs

    def _extent(self, order, w, gaps) -> float:
        """Width of the row with every free gap at 0."""
        xs = self._positions(order, w, [min(g, 0.0) for g in gaps], 0.0)
        return max(x + wi for x, wi in zip(xs, w))

    def _pair_slack(self, i, j, w, h, base) -> float:
        """How far boxes i and j may overlap horizontally and stay within the overlap bound: a farther box
        overlaps a nearer one only in the rows they share."""
        iy = _rows_shared((i, j), base, h)
        if iy <= 0:
            return 0.9 * min(w[i], w[j])
        return min(0.9 * min(w[i], w[j]), 0.9 * self.max_overlap * min(w[i] * h[i], w[j] * h[j]) / iy)

    def _ok(self, boxes, pair=None) -> bool:
        """Every overlap within the bound: of the smaller box, or of the farther box for the planned pair."""
        for i, j in itertools.combinations(range(len(boxes)), 2):
            if pair and {i, j} == set(pair):
                if hidden_share(boxes[pair[1]], boxes[pair[0]]) > self.max_overlap + 1e-6:
                    return False
            elif overlap_fraction(boxes[i], boxes[j]) > self.max_overlap + 1e-6:
                return False
        return True


GOLDEN = 0.6180339887498949


def _lerp(bounds: tuple[float, float], t: float) -> float:
    return bounds[0] + (bounds[1] - bounds[0]) * t


def _rows_shared(pair, base, h) -> float:
    """Pixel rows two boxes standing on ``base`` share (<= 0: one is entirely above the other)."""
    i, j = pair
    return min(base[i], base[j]) - max(base[i] - h[i], base[j] - h[j])


def _real(ratios, concept: str) -> float:
    """A concept's real size in the plan's ratios (1 when it has none), never 0."""
    return max(float(ratios.get(concept, 1.0)), 1e-6)


def _closeup_scale(closeup: PlacedBox, ratios) -> float:
    """Pixels per unit of real size on the nearest ground line, where the close-up stands: its box's height over
    the part of its subject it shows."""
    return closeup.box[3] / (shown_share(closeup.cut_edges) * _real(ratios, closeup.concept))


def _in_depth(real: list[float], s: list[float], gamma: float) -> bool:
    """Nothing nearer (larger factor ``s``) is drawn at fewer pixels per unit of real size (r ** gamma * s / r)."""
    scale = [r ** (gamma - 1.0) * d for r, d in zip(real, s)]
    return gamma >= 1.0 or all(scale[i] >= scale[j] * (1 - 1e-6) for i in range(len(s)) for j in range(len(s))
                               if s[i] > s[j])


def _gamma(real: list[float], s: list[float], bound: float) -> float:
    """The largest power in [0, 1] for which every drawn height r**g * s is >= ``bound`` of the largest."""
    def ok(g: float) -> bool:
        d = [r ** g * x for r, x in zip(real, s)]
        return min(d) >= bound * max(d) - 1e-9

    if ok(1.0):
        return 1.0
    lo, hi = 0.0, 1.0  # ok(0): the depth range alone keeps the bound
    for _ in range(14):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo
