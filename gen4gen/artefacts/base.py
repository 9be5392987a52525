"""The base of every artefact model (gen4gen.artefacts): field types, ``Record`` (unknown keys kept, key order
kept) and ``Artefact`` (one file: ``load`` / ``build`` / ``dump``, anything malformed one ``ItemFailed`` line
through ``explain``)."""
from __future__ import annotations

import json
import math
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, ClassVar

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, StrictFloat, StrictInt,
                      StrictStr, ValidationError, model_serializer, model_validator)

from gen4gen.errors import ItemFailed
from gen4gen.io import json_bytes
from gen4gen.markers import META


# ---------------------------------------------------------------- field types
def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError(f"expected a finite number, got {v!r}")
    return v


def _not_blank(v: str) -> str:
    if not v.strip():
        raise ValueError("expected a non-empty text")
    return v


def inner_path(v: str) -> str:
    p = PurePosixPath(v)
    if not v or p.is_absolute() or ".." in p.parts or "\\" in v:
        raise ValueError(f"expected a relative path inside the item folder, got {value_text(v)}")
    return v


def _file_name(v: str) -> str:
    if v in (".", "..") or any(c in v for c in "/\\\0") or len(v.encode("utf-8")) > 250:
        raise ValueError(f"expected a name that is one file name (no slashes, at most 250 bytes), got {value_text(v)}")
    return v


def _stage_path(v: str) -> str:
    p = PurePosixPath(v)
    if not v or (not p.is_absolute() and ".." in p.parts):
        raise ValueError(f"expected a path inside the stages folder, got {value_text(v)}")
    return v


# ints stay ints and floats stay floats (dump writes what was given); bools and numeric strings are refused
Number = Annotated[StrictInt | StrictFloat, AfterValidator(_finite)]
Text = Annotated[StrictStr, AfterValidator(_not_blank)]
Name = Annotated[Text, AfterValidator(_file_name)]  # instance and concept names become file and folder names
Count = Annotated[StrictInt, Field(ge=0)]
Box = Annotated[list[Number], Field(min_length=4, max_length=4)]  # [x, y, w, h]
Size = Annotated[list[Annotated[StrictInt, Field(ge=1, le=1 << 20)]], Field(min_length=2, max_length=2)]
InnerPath = Annotated[StrictStr, Field(max_length=4096), AfterValidator(inner_path)]
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
            raise ItemFailed(f"{name}: expected a JSON object, got {value_text(raw)}")
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


def value_text(v: Any) -> str:
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
    got = value_text(given)
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
