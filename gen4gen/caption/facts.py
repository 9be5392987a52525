"""What a caption may say about a composition, read from its ``layout.json``: which concepts, how many
of each, where they stand relative to each other, and the background phrase.

Relations come from the boxes (the tight boxes of visible pixels): overlapping boxes are ordered in
depth by their bottom edges (the lower one stands closer to the camera), separate boxes by the
direction between their centres.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from gen4gen.artefacts import Layout
from gen4gen.caption.check import markup_problem
from gen4gen.words import count_phrase, display_name, plural

log = logging.getLogger(__name__)

# boxes overlapping by more than this share of the smaller box count as "touching" (depth decides)
OVERLAP = 0.05
# bottom edges closer than this share of the image height stand on the same line: "next to"
SAME_FOOTING = 0.03


@dataclass
class Group:
    """All visible instances of one concept."""
    concept: str
    noun: str
    boxes: list[tuple[float, float, float, float]]  # x, y, w, h

    @property
    def count(self) -> int:
        return len(self.boxes)

    @property
    def phrase(self) -> str:  # "a cat" / "two dogs"
        return count_phrase(self.noun, self.count)

    @property
    def the(self) -> str:  # "the cat" / "the dogs"
        return f"the {self.noun if self.count == 1 else plural(self.noun)}"

    @property
    def be(self) -> str:
        return "is" if self.count == 1 else "are"

    @property
    def union(self) -> tuple[float, float, float, float]:
        x0 = min(b[0] for b in self.boxes)
        y0 = min(b[1] for b in self.boxes)
        x1 = max(b[0] + b[2] for b in self.boxes)
        y1 = max(b[1] + b[3] for b in self.boxes)
        return x0, y0, x1 - x0, y1 - y0

    @property
    def centre(self) -> tuple[float, float]:
        return (sum(b[0] + b[2] / 2 for b in self.boxes) / self.count,
                sum(b[1] + b[3] / 2 for b in self.boxes) / self.count)


@dataclass(frozen=True)
class Relation:
    subject: str  # concept
    relation: str  # "to the left of" | "to the right of" | "above" | "below" | "next to" | "in front of"
    object: str


@dataclass
class Facts:
    scene: str
    composition_id: str
    size: tuple[int, int]
    background: str  # "in the garden", or "" when the layout has none
    groups: list[Group]  # left to right
    relations: list[Relation] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {g.concept: g.count for g in self.groups}

    def group(self, concept: str) -> Group:
        return next(g for g in self.groups if g.concept == concept)

    def as_prompt(self) -> dict:
        """The facts an LLM is allowed to use, as plain JSON."""
        w, h = self.size
        return {
            "objects": [{"concept": g.noun, "count": g.count,
                         "boxes_xywh_fraction": [[round(b[0] / w, 3), round(b[1] / h, 3), round(b[2] / w, 3),
                                                  round(b[3] / h, 3)] for b in g.boxes]} for g in self.groups],
            "relations": [f"{self.group(r.subject).the} {self.group(r.subject).be} {r.relation} "
                          f"{self.group(r.object).the}" for r in self.relations],
            "background": self.background,
        }


def relation(a: tuple, b: tuple, height: float) -> str:
    """How box ``a`` stands relative to box ``b`` (both x, y, w, h)."""
    ax0, ay0, aw, ah = a
    bx0, by0, bw, bh = b
    iw = min(ax0 + aw, bx0 + bw) - max(ax0, bx0)
    ih = min(ay0 + ah, by0 + bh) - max(ay0, by0)
    inter = max(0.0, iw) * max(0.0, ih)
    if inter > OVERLAP * max(1e-9, min(aw * ah, bw * bh)):
        da = (ay0 + ah) - (by0 + bh)  # > 0: a's bottom edge is lower in the picture, so a is closer
        if da > SAME_FOOTING * height:
            return "in front of"
        if da < -SAME_FOOTING * height:
            return "behind"
        return "next to"
    dx = (ax0 + aw / 2) - (bx0 + bw / 2)
    dy = (ay0 + ah / 2) - (by0 + bh / 2)
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


def facts_from_layout(layout: Layout, background: str | None = None) -> Facts:
    """Facts of one composition; instances with no visible pixels are not counted. ``background``
    replaces the layout's phrase when the final image got another one (s3 matched a photo folder)."""
    size = tuple(layout.size)
    by_concept: dict[str, list] = {}
    for obj in layout.objects:
        if obj.box[2] <= 0 or obj.box[3] <= 0:
            continue
        by_concept.setdefault(obj.concept, []).append(tuple(float(v) for v in obj.box))
    if not by_concept:
        raise ValueError("layout has no visible objects")
    for c in by_concept:  # a concept's name is written into every caption
        if (why := markup_problem(display_name(c))):
            raise ValueError(f"concept name {c!r} cannot go into a caption: {why.removeprefix('it ')}")
    groups = [Group(c, display_name(c), sorted(boxes)) for c, boxes in by_concept.items()]
    groups.sort(key=lambda g: (g.centre[0], g.concept))
    relations = []
    for a, b in zip(groups, groups[1:]):  # neighbours left to right: n-1 sentences say where everything is
        rel = relation(a.union, b.union, size[1])
        relations.append(Relation(b.concept, "in front of", a.concept) if rel == "behind"
                         else Relation(a.concept, rel, b.concept))
    background = " ".join(str(background or layout.background_prompt or "").split())
    if markup_problem(background):  # a planner's phrase with markup: the caption goes without a background
        log.warning("%s: background phrase %r left out of the captions: %s", layout.composition_id or "layout",
                    background[:80], markup_problem(background))
        background = ""
    return Facts(layout.scene, layout.composition_id, size, background, groups, relations)
