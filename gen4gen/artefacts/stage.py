"""The stage tree's files: the ones one stage writes and a later stage reads, as pydantic models: s1 ``meta.json``, s2
``layout.json`` and ``meta.json``, s3 ``meta.json``, s4 ``captions.json`` and ``meta.json``.

Writers write through ``Model.build(fields).dump()`` (the same bytes as ``json_bytes``: keys in the order
given, numbers as given); readers read through ``Model.load(path)``, which turns anything malformed
into one ``ItemFailed`` naming the file, the field and what was wrong. The models are strict on what
later stages use (types, lengths, finite numbers, non-empty names, boxes inside the canvas) and keep
any other key as is, so trees written by older versions still load.

Paths between stages are stored relative to ``paths.stages_dir`` (``stage_rel``) and resolved against
the stages folder being read (``stage_path``), so a moved or copied stages folder works on its own files.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import AfterValidator, Field, StrictStr, model_validator

from gen4gen.artefacts.base import (Artefact, Box, Count, InnerPath, Name, Number, Record, Size, StagePath, Text,
                                    inner_path, value_text)
from gen4gen.markers import META
from gen4gen.paths import STAGE_DIRS


# ---------------------------------------------------------------- stage meta (the runner writes the first keys)
class StageMeta(Artefact):
    FILE: ClassVar[str] = META
    id: Text
    stage: StrictStr = ""
    config_hash: StrictStr
    fingerprint: StrictStr = ""

    @property
    def hash(self) -> str:
        """What a later stage's fingerprint is built from: a redone item changes it."""
        return f"{self.config_hash}:{self.fingerprint}"


def _edge(v: str) -> str:
    if v not in ("top", "bottom", "left", "right"):
        raise ValueError(f"expected top, bottom, left or right, got {value_text(v)}")
    return v


Edge = Annotated[StrictStr, AfterValidator(_edge)]
Fraction = Annotated[Number, Field(ge=0, le=1)]


class S1Object(Record):
    """One separate object of a photo: its area, its similarity to the concept's other photos (None when
    there was nothing to compare) and whether it is the concept (dropped unless ``keep`` is all/largest)."""
    area_fraction: Fraction
    concept_score: Number | None = None
    concept: Annotated[bool, Field(strict=True)] = True


class S1Meta(StageMeta):
    scene: Name
    concept: Name
    backend: StrictStr = ""
    size: Size | None = None
    bbox_xyxy: Box | None = None
    flags: list[StrictStr] = Field(default_factory=list)
    # the edges of the photo that cut the subject (a close-up), and the share of its outline along each edge
    cut_edges: list[Edge] = Field(default_factory=list)
    cut_outline: dict[Edge, Fraction] = Field(default_factory=dict)
    objects: list[S1Object] = Field(default_factory=list)

    @model_validator(mode="after")
    def _bbox_inside(self):
        if self.bbox_xyxy is not None:
            x0, y0, x1, y1 = self.bbox_xyxy
            w, h = self.size or (math.inf, math.inf)
            if not (0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h):
                raise ValueError(f"bbox_xyxy: {self.bbox_xyxy} is not a box inside the {_wh(self.size)} photo")
        return self

    @property
    def aspect(self) -> float | None:
        if self.bbox_xyxy is None:
            return None
        x0, y0, x1, y1 = self.bbox_xyxy
        return (x1 - x0) / (y1 - y0) if x1 > x0 and y1 > y0 else None


def _wh(size) -> str:
    return f"{size[0]}x{size[1]}" if size else "?"


class LayoutObject(Record):
    name: Name
    concept: Name
    index: Count = 0
    box: Box  # the tight box of the instance's visible pixels; [0, 0, 0, 0] when fully hidden
    mask: InnerPath | None = None
    source: StrictStr | None = None
    source_path: StagePath | None = None
    source_light: float | None = Field(default=None, ge=0)  # its photo's metered luminance (repaint/exposure.py)

    @property
    def mask_file(self) -> str:
        return self.mask or f"instances/{self.name}.png"


class Layout(Artefact):
    """``layout.json``: what s2 composed; s3 paints around it, s4 describes it, the export ships it."""
    FILE: ClassVar[str] = "layout.json"
    scene: StrictStr = ""
    composition_id: StrictStr = ""
    size: Size
    planner: StrictStr = ""
    fallback: StrictStr | None = None
    background_prompt: StrictStr = ""
    scenes: list[StrictStr] = Field(default_factory=list)
    camera: dict | None = None  # horizon, near, height, gamma (layout.schema.Plan)
    backdrop: dict | None = None  # the user's background photo s2 chose (layout.backdrop), read by s3
    closeup: dict | None = None  # the subject cut by its photo's frame: instance, edges, flags (layout.closeups)
    left_out: list[dict] = Field(default_factory=list)  # photos or concepts not used, each with its reason
    objects: Annotated[list[LayoutObject], Field(min_length=1)]

    @model_validator(mode="after")
    def _consistent(self):
        w, h = self.size
        names = set()
        for k, o in enumerate(self.objects):
            if o.name in names:
                raise ValueError(f"objects.{k}.name: {o.name!r} appears twice")
            names.add(o.name)
            x, y, bw, bh = o.box
            if bw < 0 or bh < 0 or x < 0 or y < 0 or x + bw > w + 1e-6 or y + bh > h + 1e-6:
                raise ValueError(f"objects.{k}.box: {o.box} is not inside the {w}x{h} canvas")
        return self

    @property
    def concepts(self) -> set[str]:
        return {o.concept for o in self.objects}


class S2Meta(StageMeta):
    """Later stages use its hash; the layout itself is in ``layout.json``."""
    scene: StrictStr = ""
    composition_id: StrictStr = ""


class S3Meta(StageMeta):
    composition: Annotated[Text, AfterValidator(inner_path)]  # "<scene>/<composition id>"
    composition_dir: StagePath | None = None
    variant: StrictStr = ""
    background: dict | None = None
    backend: StrictStr = ""
    size: Size | None = None

    def s2_dir(self, stages_dir: Path) -> Path:
        """The s2 folder this variant was repainted from, inside ``stages_dir``. An older tree stores an
        absolute path: the composition's own folder here wins, so a copied tree never reads the original."""
        own = Path(stages_dir) / STAGE_DIRS["s2"] / self.composition
        if self.composition_dir is None:
            return own
        try:
            mine = Path(self.composition_dir).is_absolute() and own.is_dir()
        except OSError:  # a name too long for the file system: the reader reports it
            mine = False
        if mine:
            return own
        from gen4gen.contain import contained  # an ItemFailed: a folder outside the s2 stage is refused

        given = stage_path(self.composition_dir, stages_dir).absolute()
        return contained(given, Path(stages_dir) / STAGE_DIRS["s2"], "s3 meta.json composition_dir")

    @property
    def phrase(self) -> str | None:
        value = (self.background or {}).get("phrase")
        return value if isinstance(value, str) else None


class Captions(Artefact):
    """``captions.json``: the three captions of a final image and the tokens of its concepts."""
    FILE: ClassVar[str] = "captions.json"
    short: Text
    detailed: Text
    personalized: Text
    modifier_tokens: dict[Text, Text]
    captioner: StrictStr = ""
    fallback: StrictStr | None = None


class S4Meta(StageMeta):
    captioner: StrictStr = ""
    fallback: StrictStr | None = None
    layout: StagePath | None = None
    s3_config_hash: StrictStr | None = None
    s3_fingerprint: StrictStr | None = None


META_MODELS: dict[str, type[StageMeta]] = {"s1": S1Meta, "s2": S2Meta, "s3": S3Meta, "s4": S4Meta}


# ---------------------------------------------------------------- paths between stages
def stage_rel(path: Path | str, stages_dir: Path | str) -> str:
    """``path`` as written into an artefact: relative to the stages folder when inside it."""
    path, stages_dir = Path(path), Path(stages_dir)
    for p, root in ((path, stages_dir), (path.absolute(), stages_dir.absolute())):
        try:
            return p.relative_to(root).as_posix()
        except ValueError:
            continue
    return path.as_posix()


def stage_path(value: str, stages_dir: Path | str) -> Path:
    """A path read from an artefact: relative ones are inside the stages folder being read."""
    p = Path(value)
    return p if p.is_absolute() else Path(stages_dir) / p
