"""The files one stage writes and a later stage reads, as pydantic models: s1 ``meta.json``, s2
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

import json
import math
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, StrictFloat, StrictInt,
                      StrictStr, ValidationError, model_serializer, model_validator)

from gen4gen.errors import ItemFailed
from gen4gen.io import json_bytes
from gen4gen.markers import META
from gen4gen.paths import STAGE_DIRS


# ---------------------------------------------------------------- field types
def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError(f"expected a finite number, got {v!r}")
    return v


def _not_blank(v: str) -> str:
    if not v.strip():
        raise ValueError("expected a non-empty text")
    return v


def _inner_path(v: str) -> str:
    p = PurePosixPath(v)
    if not v or p.is_absolute() or ".." in p.parts or "\\" in v:
        raise ValueError(f"expected a relative path inside the item folder, got {_kind(v)}")
    return v


def _file_name(v: str) -> str:
    if v in (".", "..") or any(c in v for c in "/\\\0") or len(v.encode("utf-8")) > 250:
        raise ValueError(f"expected a name that is one file name (no slashes, at most 250 bytes), got {_kind(v)}")
    return v


def _stage_path(v: str) -> str:
    p = PurePosixPath(v)
    if not v or (not p.is_absolute() and ".." in p.parts):
        raise ValueError(f"expected a path inside the stages folder, got {_kind(v)}")
    return v


# ints stay ints and floats stay floats (dump writes what was given); bools and numeric strings are refused
Number = Annotated[StrictInt | StrictFloat, AfterValidator(_finite)]
Text = Annotated[StrictStr, AfterValidator(_not_blank)]
Name = Annotated[Text, AfterValidator(_file_name)]  # instance and concept names become file and folder names
Count = Annotated[StrictInt, Field(ge=0)]
Box = Annotated[list[Number], Field(min_length=4, max_length=4)]  # [x, y, w, h]
Size = Annotated[list[Annotated[StrictInt, Field(ge=1, le=1 << 20)]], Field(min_length=2, max_length=2)]
InnerPath = Annotated[StrictStr, Field(max_length=4096), AfterValidator(_inner_path)]
# relative to paths.stages_dir (absolute in trees written before paths were relative)
StagePath = Annotated[StrictStr, Field(max_length=4096), AfterValidator(_stage_path)]


class Record(BaseModel):
    """A JSON object that keeps unknown keys and dumps its keys in the order it was given them."""
    model_config = ConfigDict(extra="allow")
    _order: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_order(cls, data: Any, handler):
        obj = handler(data)
        if isinstance(data, dict) and isinstance(obj, Record):
            obj._order = [str(k) for k in data]
        return obj

    @model_serializer(mode="wrap")
    def _ordered(self, handler) -> dict:
        d = handler(self)
        if not self._order:
            return d
        return {k: d[k] for k in self._order if k in d}


class Artefact(Record):
    FILE: ClassVar[str] = ""

    @classmethod
    def load(cls, path: Path | str):
        """The file at ``path`` (or ``FILE`` in the folder ``path``), or ``ItemFailed`` with one clear reason."""
        path = cls._file(path)
        return cls.from_bytes(cls.read_bytes(path), path)

    @classmethod
    def _file(cls, path: Path | str) -> Path:
        path = Path(path)
        return path / cls.FILE if cls.FILE and path.name != cls.FILE else path

    @classmethod
    def read_bytes(cls, path: Path | str) -> bytes:
        """The file's bytes (one open), or ``ItemFailed`` naming it."""
        path = cls._file(path)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ItemFailed(f"cannot read {_label(path)}: No such file: {path}") from None
        except OSError as e:
            raise ItemFailed(f"cannot read {_label(path)}: {e.strerror or e}") from None

    @classmethod
    def from_bytes(cls, data: bytes, path: Path | str):
        """The model of a file's bytes read before (``path`` names it in messages)."""
        name = _label(cls._file(path))
        try:
            raw = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ItemFailed(f"cannot read {name}: {e}") from None
        except (ValueError, RecursionError) as e:  # RecursionError: brackets nested thousands deep
            raise ItemFailed(f"{name} is not valid JSON: {str(e)[:200]}") from None
        return cls.parse(raw, name)

    @classmethod
    def parse(cls, raw: Any, name: str | None = None):
        name = name or cls.FILE or cls.__name__
        if not isinstance(raw, dict):
            raise ItemFailed(f"{name}: expected a JSON object, got {_kind(raw)}")
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            raise ItemFailed(f"{name}: {explain(e)}") from None

    @classmethod
    def build(cls, fields: dict):
        """What a writer writes: ``fields`` as JSON holds them (numpy numbers, tuples and paths become
        plain values, exactly as ``json_bytes`` writes them), validated."""
        return cls.parse(json.loads(json_bytes(fields)), cls.FILE)

    def dump(self) -> bytes:
        return json_bytes(self.model_dump())


def _label(path: Path) -> str:
    """``layout.json`` or ``s2 meta.json``: the file as a user finds it."""
    if path.name == META:
        for part in reversed(path.parts[:-1]):
            if part[:2] in ("s1", "s2", "s3", "s4") and part[2:3] == "_":
                return f"{part[:2]} {META}"
    return path.name


def _kind(v: Any) -> str:
    if isinstance(v, (dict, list)) and not v:
        return "{}" if isinstance(v, dict) else "[]"
    if isinstance(v, (dict, list)) or v is None:
        return type(v).__name__ if v is not None else "null"
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


_EXPECTED = {"string_type": "expected a string", "list_type": "expected a list", "dict_type": "expected an object",
             "int_type": "expected a number", "float_type": "expected a number", "model_type": "expected an object",
             "model_attributes_type": "expected an object", "int_from_float": "expected a whole number"}


def explain(e: ValidationError) -> str:
    """The first problem of a validation error as ``objects.0.box: expected 4 numbers, got 'abc'``."""
    err = e.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"]]
    # drop pydantic's union-branch and validator labels: keep field names and list indices
    loc = [p for p in loc if not p.startswith(("function-", "constrained-")) and p not in ("int", "float", "str")]
    where = ".".join(loc)
    given = err.get("input")
    got = _kind(given)
    kind = err["type"]
    if kind == "missing":
        return f"{where}: missing"
    if kind == "value_error":  # our own checks say what they got
        msg = str(err["msg"]).removeprefix("Value error, ")
        return f"{where}: {msg}" if where else msg
    if "box" in loc:  # boxes are read most, so their message is the most specific
        at = len(loc) - 1 - loc[::-1].index("box")
        if at == len(loc) - 1 and isinstance(given, list):
            got = f"{len(given)} values"
        return f"{'.'.join(loc[:at + 1])}: expected 4 numbers, got {got}"
    if kind in ("too_short", "too_long"):
        ctx = err.get("ctx") or {}
        n = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        size = len(given) if hasattr(given, "__len__") else "?"
        return f"{where}: expected {'at least' if kind == 'too_short' else 'at most'} {n} entries, got {size}"
    msg = _EXPECTED.get(kind) or str(err["msg"]).removeprefix("Value error, ").lower()
    return f"{where}: {msg}, got {got}"


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
        raise ValueError(f"expected top, bottom, left or right, got {_kind(v)}")
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
    composition: Annotated[Text, AfterValidator(_inner_path)]  # "<scene>/<composition id>"
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


__all__ = ["Number", "Text", "Name", "Box", "Size", "Record", "Artefact", "explain", "StageMeta", "S1Meta",
           "LayoutObject", "Layout", "S2Meta", "S3Meta", "Captions", "S4Meta", "META_MODELS",
           "stage_rel", "stage_path"]
