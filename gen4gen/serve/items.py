"""What the review pages show: the final images of the stages tree, read once at start-up.

This is the app's only reader of the stages tree. It goes through the tree's typed view (gen4gen.tree) and
the export's collection (the same complete, current items a dataset would hold), so the grid shows exactly what
``stage=export`` would write; everything else of the app works on ``ReviewItem``s.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from gen4gen.export.items import collect
from gen4gen.paths import STAGE_DIRS
from gen4gen.serve.review import CAPTION_KEYS, content_key
from gen4gen.tree import TreeView


@dataclass
class Source:
    """A cut-out an object of the composition was pasted from."""
    name: str  # the layout object: "dog_1"
    concept: str
    cutout: Path | None


@dataclass
class ReviewItem:
    id: str  # "<scene>/<composition id>/<variant>"
    scene: str
    composition: str
    variant: str
    concepts: list[str]
    captions: dict[str, str]  # as s4 wrote them
    flags: list[str]
    content: str  # the key decisions are made on (see review.content_key)
    image: Path
    composed: Path  # the s2 composition before repainting
    size: tuple[int, int]
    objects: list[dict]  # name, concept, box [x, y, w, h], visible_fraction, mask (a path), z
    background: str
    sources: list[Source] = field(default_factory=list)
    text: str = ""  # lower-case captions, ids and concepts: what the caption filter searches


@dataclass
class Catalog:
    items: list[ReviewItem]
    left_out: list[dict]  # final images that are not complete: {stage, id, reason}
    stale: int
    by_id: dict[str, ReviewItem] = field(default_factory=dict)
    variants: dict[str, list[str]] = field(default_factory=dict)  # composition -> its item ids

    def __post_init__(self):
        self.by_id = {it.id: it for it in self.items}
        for it in self.items:
            self.variants.setdefault(it.composition, []).append(it.id)

    @cached_property
    def facets(self) -> dict[str, list[str]]:
        """What the filters offer (the catalog does not change while the app runs)."""
        return {"scene": sorted({it.scene for it in self.items}),
                "concept": sorted({c for it in self.items for c in it.concepts}),
                "flag": sorted({f for it in self.items for f in it.flags})}


def load_catalog(stages_dir: Path) -> Catalog:
    stages_dir = Path(stages_dir)
    tree = TreeView(stages_dir)
    collected, left_out = collect(tree)
    s1 = {iid: list(e.meta.flags) for iid, e in tree.finished("s1").items() if e.meta.flags}
    items = []
    for ex in collected:
        objects, sources, flags = [], [], set()
        for obj in ex.layout.objects:
            src = obj.source or ""
            cut = stages_dir / STAGE_DIRS["s1"] / src / "cutout.png" if src else None
            sources.append(Source(obj.name, obj.concept, cut if cut and cut.is_file() else None))
            flags.update(f"cut-out {f}" for f in s1.get(src, ()))
            # visible_fraction and z: kept by the layout model as unknown keys (s2 writes them)
            visible, z = getattr(obj, "visible_fraction", None), getattr(obj, "z", None)
            objects.append({"name": obj.name, "concept": obj.concept, "box": list(obj.box),
                            "visible_fraction": visible, "z": z, "mask": ex.s2_dir / obj.mask_file})
            if isinstance(visible, (int, float)) and visible < 0.5:
                flags.add("mostly hidden object")
        if ex.layout.fallback:
            flags.add("planner fallback")
        if ex.captions.fallback:
            flags.add("caption fallback")
        if (ex.s3_meta.background or {}).get("fallback"):
            flags.add("background fallback")
        captions = {k: getattr(ex.captions, k) for k in CAPTION_KEYS}
        concepts = sorted({o["concept"] for o in objects})
        size = tuple(ex.layout.size)
        background = ex.layout.background_prompt or ex.s3_meta.phrase or ""
        it = ReviewItem(ex.id, ex.scene, ex.composition, ex.variant, concepts, captions, sorted(flags),
                        content_key(ex.s3_meta, ex.captions), ex.image_path, ex.s2_dir / "image.png",
                        (int(size[0]), int(size[1])), objects, background, sources)
        it.text = " ".join([it.id, *concepts, *captions.values()]).lower()
        items.append(it)
    # finished final images that are not current (of any kind: leftovers, outdated, other settings)
    return Catalog(items, left_out, tree.stale("s3") + tree.other_settings("s3"))
