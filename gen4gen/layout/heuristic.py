"""The embedded planner: real-world size priors, a shared ground line, bounded overlap, seeded variety.

No model and no network: a table maps category keywords in a concept's name to a typical size,
aspect ratio and a few plausible scenes. Objects stand on a common ground line (a little depth
jitter), left-right order and spacing change with the seed, every box meets Gen4Gen's minimum
area rule, and no two boxes overlap by more than ``max_overlap`` of the smaller one.
"""
from __future__ import annotations

import re

import numpy as np

from gen4gen.layout.schema import Layout, PlacedBox, PlanRequest, depth_order, min_box_area, overlap_fraction

# keyword -> (category, typical longest side in cm, width / height of the usual photo of it)
SIZES: dict[str, tuple[str, float, float]] = {
    "cat": ("pet", 45, 1.1), "kitten": ("pet", 25, 1.1), "dog": ("pet", 70, 1.1), "puppy": ("pet", 35, 1.1),
    "rabbit": ("pet", 35, 0.9), "bunny": ("pet", 35, 0.9), "hamster": ("pet", 12, 1.3), "bird": ("pet", 20, 0.9),
    "parrot": ("pet", 35, 0.7), "turtle": ("pet", 25, 1.5), "lion": ("wild", 200, 1.5), "tiger": ("wild", 220, 1.6),
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

SCENES: dict[str, list[str]] = {
    "pet": ["in the garden", "in a cozy living room", "on a sunny lawn", "on a sofa"],
    "wild": ["on the savanna", "in a grassy field", "at the edge of a forest"],
    "farm": ["on a farm", "in a green meadow", "in front of a red barn"],
    "plant": ["in a bright living room", "by a sunny window", "on a balcony"],
    "tableware": ["on a kitchen table", "on a wooden desk", "in a cozy cafe"],
    "toy": ["on a bed", "in a playroom", "on a wooden floor"],
    "space": ["on a launch pad", "in the desert", "on the surface of the moon"],
    "vehicle": ["on a city street", "on a country road", "in a parking lot"],
    "person": ["in a park", "on a city street", "at the beach"],
    "furniture": ["in a bright living room", "in a modern apartment", "in a cozy bedroom"],
    "object": ["on a wooden table", "in a bright room", "in a park"],
}
_WORD = re.compile(r"[a-z]+")


def size_prior(concept: str) -> tuple[str, float, float]:
    """(category, typical size in cm, aspect) from the first keyword found in the concept's name."""
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
    return MEDIUM


def size_ratios(concepts: list[str], smallest: float = 0.4) -> dict[str, float]:
    """Real-world size relative to the biggest concept (1.0); Gen4Gen keeps the smallest at >= 0.4
    so a cup next to a car is still visible."""
    sizes = {c: size_prior(c)[1] for c in concepts}
    top = max(sizes.values())
    return {c: round(max(smallest, s / top), 3) for c, s in sizes.items()}


def suggest_scenes(concepts: list[str], rng: np.random.Generator, k: int = 3) -> list[str]:
    """The ``k`` scenes most concepts agree on (earlier in a category's list counts more), ties by rng."""
    score: dict[str, float] = {}
    for c in concepts:
        for rank, scene in enumerate(SCENES[size_prior(c)[0]]):
            score[scene] = score.get(scene, 0.0) + (len(SCENES) - rank)
    for scene in SCENES["object"]:  # always enough candidates
        score.setdefault(scene, 0.0)
    noise = {s: float(rng.random()) for s in sorted(score)}
    return sorted(score, key=lambda s: (-score[s], noise[s]))[:k]


class HeuristicPlanner:
    name = "heuristic"

    def __init__(self, max_overlap: float = 0.2, fill: tuple[float, float] = (0.7, 0.95),
                 ground: tuple[float, float] = (0.82, 0.95), depth: float = 0.04, max_height: float = 0.75,
                 aspect_jitter: float = 0.1, smallest_ratio: float = 0.4):
        self.max_overlap = float(max_overlap)
        self.fill = (float(fill[0]), float(fill[1]))
        self.ground = (float(ground[0]), float(ground[1]))
        self.depth = float(depth)
        self.max_height = float(max_height)
        self.aspect_jitter = float(aspect_jitter)
        self.smallest_ratio = float(smallest_ratio)

    def config(self) -> dict:
        return {k: v for k, v in vars(self).items()}

    def plan_many(self, requests: list[PlanRequest], on_done=None) -> list[Layout]:
        out = []
        for r in requests:
            out.append(self.plan(r))
            if on_done:
                on_done()
        return out

    def plan(self, request: PlanRequest, ratios: dict[str, float] | None = None,
             scenes: list[str] | None = None) -> Layout:
        """A layout for ``request``; ``ratios`` / ``scenes`` from elsewhere (an LLM) replace the priors."""
        rng = np.random.default_rng(int(request.seed) & 0xFFFFFFFF)
        concepts = [c.name for c in request.concepts]
        ratios = dict(ratios) if ratios else size_ratios(concepts, self.smallest_ratio)
        scenes = list(scenes) if scenes else suggest_scenes(concepts, rng)
        background = scenes[int(rng.integers(len(scenes)))]
        boxes = self.place(request, ratios, rng)
        return Layout(size=tuple(request.size), boxes=boxes, paste_order=depth_order(boxes),
                      scenes=scenes, background_prompt=background, planner=self.name, seed=int(request.seed),
                      size_ratios=ratios)

    # -------------------------------------------------------------- geometry
    def place(self, request: PlanRequest, ratios: dict[str, float], rng: np.random.Generator) -> list[PlacedBox]:
        W, H = request.size
        inst = request.instances
        n = len(inst)
        if n == 0:
            return []
        # boxes shaped like the cut-outs that will fill them when s1 told us, else like the category
        known = {c.name: c.aspect for c in request.concepts if c.aspect}
        jitter = np.exp(rng.normal(0, self.aspect_jitter, n))
        aspect = np.array([known.get(c) or size_prior(c)[2] * j for (c, _), j in zip(inst, jitter)])
        ratio = np.array([ratios.get(c, 1.0) for c, _ in inst])
        # a longest side proportional to the real-world ratio; width and height from the aspect
        h_unit = ratio / np.maximum(aspect, 1.0)
        w_unit = h_unit * aspect
        fill = rng.uniform(*self.fill)
        scale = min(fill * W / w_unit.sum(), self.max_height * H / h_unit.max())
        w, h = w_unit * scale, h_unit * scale
        a_min = min_box_area((W, H), n) * 1.02  # a little over: rounding must not break the rule
        grow = np.sqrt(np.maximum(1.0, a_min / (w * h)))
        w, h = w * grow, h * grow
        cap = np.minimum(1.0, np.minimum(0.95 * W / w, 0.95 * H / h))  # a huge aspect never leaves the canvas
        w, h = w * cap, h * cap

        order = list(rng.permutation(n))  # left-to-right order varies with the seed
        for _ in range(20):
            boxes = self._rows(order, w, h, W, H, rng)
            if self._ok(boxes):
                break
            w, h = w * 0.95, h * 0.95  # very crowded sets: shrink a little and place again
        return [PlacedBox(concept=c, index=k, box=[float(v) for v in boxes[i]]) for i, (c, k) in enumerate(inst)]

    def _rows(self, order, w, h, W, H, rng) -> list[list[float]]:
        """Split ``order`` into as few rows as fit, front row on the ground line, rows behind higher up."""
        rows: list[list[int]] = []
        for i in order:
            if rows and self._fits(rows[-1] + [i], w, h, W):
                rows[-1].append(i)
            else:
                rows.append([i])
        boxes: list[list[float] | None] = [None] * len(w)
        ground = rng.uniform(*self.ground) * H
        for row in rows:
            xs = self._spread(row, w, h, W, rng)
            for i, x in zip(row, xs):
                bottom = min(H, ground + rng.uniform(-self.depth, self.depth) * H)
                top = max(0.0, bottom - h[i])
                boxes[i] = [x, top, float(w[i]), float(min(h[i], H - top))]
            # the next row stands behind: its ground is high enough to keep vertical overlap bounded
            ground -= max(h[i] for i in row) * (1.0 - self.max_overlap * 0.5) + self.depth * H
        return boxes  # type: ignore[return-value]

    def _pair_slack(self, i, j, w, h) -> float:
        """How far boxes i and j may overlap horizontally and stay within the overlap bound."""
        return 0.9 * self.max_overlap * min(w[i] * h[i], w[j] * h[j]) / min(h[i], h[j])

    def _fits(self, row, w, h, W) -> bool:
        need = sum(w[i] for i in row) - W
        return need <= 0 or need <= sum(self._pair_slack(a, b, w, h) for a, b in zip(row, row[1:]))

    def _spread(self, row, w, h, W, rng) -> list[float]:
        widths = [float(w[i]) for i in row]
        free = W - sum(widths)
        if free >= 0:  # margins and gaps split at random
            parts = rng.dirichlet(np.full(len(row) + 1, 2.0)) * free
            xs, x = [], parts[0]
            for k, wi in enumerate(widths):
                xs.append(x)
                x += wi + parts[k + 1]
            return xs
        slack = [self._pair_slack(a, b, w, h) for a, b in zip(row, row[1:])]
        share = -free / max(sum(slack), 1e-9)
        xs, x = [], 0.0
        for k, wi in enumerate(widths):
            xs.append(x)
            x += wi - (slack[k] * share if k < len(slack) else 0.0)
        return [min(max(0.0, v), W - wi) for v, wi in zip(xs, widths)]

    def _ok(self, boxes) -> bool:
        return all(overlap_fraction(a, b) <= self.max_overlap + 1e-6
                   for i, a in enumerate(boxes) for b in boxes[i + 1:])

