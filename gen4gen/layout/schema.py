"""What a planner takes and gives: the request (concepts, canvas, seed), the ``Plan`` it returns,
and the pydantic models that an LLM planner's replies are parsed into."""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from pydantic import BaseModel, Field

from gen4gen.llm.replies import clean_text


# ---------------------------------------------------------------- planner input and output
@dataclass(frozen=True)
class ConceptCount:
    name: str  # the concept's folder name: the only name that ever reaches a file path
    count: int = 1
    aspect: float | None = None  # width / height of its cut-outs (median), when known
    cut_edges: tuple[str, ...] = ()  # the edges of its photos it is cut by: it comes as a close-up from there


@dataclass(frozen=True)
class PlanRequest:
    concepts: tuple[ConceptCount, ...]
    size: tuple[int, int]  # canvas (W, H)
    seed: int
    sample: int = 0  # index of the composition among those of the same concept set
    key: str = ""  # the composition's item id, for logs
    scenes: tuple[str, ...] = ()  # fixed scene phrases (the user's background photo's first), else the planner's
    horizon: float | None = None  # fixed horizon (fraction of H): where that photo's ground starts
    backdrop: dict | None = None  # the background photo chosen for the composition, recorded in layout.json

    @property
    def closeup(self) -> ConceptCount | None:
        return next((c for c in self.concepts if c.cut_edges), None)

    @property
    def instances(self) -> list[tuple[str, int]]:
        """(concept, k) for every instance, in request order; k counts from 0 per concept."""
        return [(c.name, k) for c in self.concepts for k in range(max(1, c.count))]

    def reseeded(self, seed: int) -> "PlanRequest":
        return replace(self, seed=seed)


@dataclass
class PlacedBox:
    concept: str
    index: int
    box: list[float]  # [x, y, w, h] in canvas pixels
    cut_edges: tuple[str, ...] = ()  # a close-up: the canvas edges its cut edges lie on

    @property
    def name(self) -> str:
        return instance_name(self.concept, self.index)


@dataclass
class Plan:
    """A planner's answer in memory; what s2 writes of it (with the composed objects) is the one ``Layout``
    type, ``gen4gen.artefacts.Layout`` (``layout.json``), which every later reader uses."""
    size: tuple[int, int]
    boxes: list[PlacedBox]  # request order
    paste_order: list[str]  # instance names, back to front
    scenes: list[str]  # 3 background phrases, "in the garden"
    background_prompt: str
    planner: str  # "heuristic" | "llm": what made the boxes
    seed: int
    size_ratios: dict[str, float] | None = None
    fallback: str | None = None  # why the configured planner's answer was not used
    llm: dict | None = None  # attempts, cached, usage, errors, repairs
    size_source: dict[str, str] | None = None  # concept -> "prior" | "unknown" (drawn as a medium thing) | "llm"
    camera: dict | None = None  # horizon, near (fractions of H from the top), height (x the tallest), gamma
    depth: dict[str, float] | None = None  # instance -> perspective factor (1: on the nearest ground line)
    occluding: list[str] | None = None  # [nearer, farther] instance planned to overlap, None: no overlap planned
    backdrop: dict | None = None  # the user's background photo: path, scene, horizon, light

    def box_of(self, name: str) -> PlacedBox:
        return next(b for b in self.boxes if b.name == name)


def instance_name(concept: str, index: int) -> str:
    return f"{concept}_{index}"


def depth_order(boxes: list[PlacedBox]) -> list[str]:
    """Back to front: a box whose bottom edge is lower in the picture stands closer to the camera."""
    order = sorted(range(len(boxes)), key=lambda i: (boxes[i].box[1] + boxes[i].box[3], i))
    return [boxes[i].name for i in order]


# ---------------------------------------------------------------- min box area (Gen4Gen)
def min_box_area(size: tuple[int, int], n_objects: int) -> float:
    """Gen4Gen's rule: a box covers at least (canvas/5)^2 for <= 3 objects, /6 for 4, /8 beyond."""
    k = 5 if n_objects <= 3 else 6 if n_objects == 4 else 8
    return size[0] * size[1] / float(k * k)


def overlap_fraction(a: list[float], b: list[float]) -> float:
    """Intersection over the smaller box's area: 1.0 when one box hides inside the other."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    small = min(a[2] * a[3], b[2] * b[3])
    return ix * iy / small if small > 0 else 1.0


def hidden_share(near: list[float], far: list[float]) -> float:
    """The share of the farther box ``far`` that the nearer box ``near`` covers (what an occluder may hide)."""
    ix = max(0.0, min(near[0] + near[2], far[0] + far[2]) - max(near[0], far[0]))
    iy = max(0.0, min(near[1] + near[3], far[1] + far[3]) - max(near[1], far[1]))
    return ix * iy / (far[2] * far[3]) if far[2] * far[3] > 0 else 1.0


# ---------------------------------------------------------------- names a model sees
_NOT_WORD = re.compile(r"[^a-z0-9]+")


def prompt_label(concept: str, max_len: int = 40, max_words: int = 6) -> str:
    """The concept's folder name as a model may see it: printable words only, short, lowercase.
    A name that carries an instruction stays data: it is quoted in JSON and trimmed, and the model's
    reply is mapped back to the requested concepts, never used as a name itself."""
    words = _NOT_WORD.sub(" ", clean_text(concept).lower().replace("_", " ")).split()
    label = " ".join(words[:max_words])[:max_len].strip()
    return label or "object"


def norm_key(text: str) -> str:
    return _NOT_WORD.sub("", str(text).lower())


# ---------------------------------------------------------------- LLM replies (pydantic)
class ObjectBox(BaseModel):
    name: str = Field(description="the object's id exactly as given in the request")
    box: list[float] = Field(description="[x, y, width, height] in the 512x512 frame", min_length=4, max_length=4)


class LayoutReply(BaseModel):
    objects: list[ObjectBox]
    background_prompt: str = Field(default="", description="the background only, without the objects")


class ScenesReply(BaseModel):
    scenes: list[str] = Field(description="3 short background phrases, e.g. 'in the garden'")


class ObjectRatio(BaseModel):
    name: str
    ratio: float = Field(description="real-world size relative to the biggest object (1.0)")


class SizeRatiosReply(BaseModel):
    ratios: list[ObjectRatio]


def layout_fields(layout: Plan) -> dict:
    """The planner's part of layout.json (the composer adds objects and the composition id)."""
    return {"size": list(layout.size), "planner": layout.planner, "fallback": layout.fallback,
            "background_prompt": layout.background_prompt, "scenes": list(layout.scenes),
            "size_ratios": layout.size_ratios, "llm": layout.llm, "seed": int(layout.seed),
            "size_source": layout.size_source, "camera": layout.camera, "depth": layout.depth,
            "occluding": layout.occluding, "backdrop": layout.backdrop}


__all__ = ["ConceptCount", "PlanRequest", "PlacedBox", "Plan", "instance_name", "depth_order", "min_box_area",
           "overlap_fraction", "hidden_share", "prompt_label", "norm_key", "ObjectBox", "LayoutReply", "ScenesReply",
           "ObjectRatio", "SizeRatiosReply", "layout_fields"]
