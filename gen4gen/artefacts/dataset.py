"""The files of an exported dataset that a later step reads: ``mycanvas/index.jsonl`` rows (train's examples, the
bench's promptset, the search's samples) and ``customdiffusion/concepts_list.json`` (train reads a Custom Diffusion
export through it)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import Field, StrictStr, TypeAdapter, ValidationError, field_validator

from gen4gen.artefacts.base import Artefact, InnerPath, Name, Record, Text, explain
from gen4gen.errors import ItemFailed, UserError


class MyCanvasRow(Artefact):
    """One line of an exported ``mycanvas/index.jsonl``, as bench reads it back as a promptset and train as
    its examples (paths relative to ``mycanvas/``; reference images relative to the dataset)."""
    FILE: ClassVar[str] = "index.jsonl"
    id: Text
    image: InnerPath | None = None  # a promptset needs none; train leaves a row without one out
    mask: InnerPath | None = None  # the union of the instance masks
    scene: StrictStr = ""
    concepts: Annotated[list[Name], Field(min_length=1)]
    captions: dict[StrictStr, StrictStr | None]
    modifier_tokens: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    reference_images: dict[StrictStr, list[InnerPath]] = Field(default_factory=dict)

    @classmethod
    def read_index(cls, path: Path) -> tuple[list["MyCanvasRow"], list[str]]:
        """Every row of an ``index.jsonl``, and one line per row that does not parse: it is left out and the
        run goes on (train and the bench read the file alike). An unreadable file is one ``UserError``."""
        try:
            lines = Path(path).read_text("utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: unreadable ({getattr(e, 'strerror', None) or e})") from None
        rows, problems = [], []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except (ValueError, RecursionError) as e:
                problems.append(f"{path}:{n}: not a MyCanvas index row (not valid JSON: {str(e)[:200]})")
                continue
            try:
                rows.append(cls.parse(raw, cls.FILE))
            except ItemFailed as e:
                problems.append(f"{path}:{n}: not a MyCanvas index row ({e})")
        return rows, problems


class ConceptsListEntry(Record):
    """One concept of ``concepts_list.json`` (diffusers' ``train_custom_diffusion.py --concepts_list``)."""
    instance_prompt: Text  # "photo of a <new1> cat": holds the concept's token
    class_prompt: StrictStr = ""
    instance_data_dir: InnerPath  # relative to the list's folder; its last part is the concept's name
    class_data_dir: StrictStr = ""

    @field_validator("instance_prompt")
    @classmethod
    def _has_token(cls, v: str) -> str:
        if not re.search(r"<new\d+>", v):
            raise ValueError(f"expected a prompt with a <newK> token, got {v[:60]!r}")
        return v

    @property
    def token(self) -> str:
        return re.search(r"<new\d+>", self.instance_prompt).group(0)

    @property
    def concept(self) -> str:
        return Path(self.instance_data_dir).name


CONCEPTS_LIST = "concepts_list.json"
_ENTRIES = TypeAdapter(list[ConceptsListEntry])


def read_concepts_list(folder: Path) -> list[ConceptsListEntry]:
    """The concepts of ``<folder>/concepts_list.json``, or one ``UserError`` naming the file and field."""
    path = Path(folder) / CONCEPTS_LIST
    try:
        raw = json.loads(path.read_bytes())
    except OSError as e:
        raise UserError(f"{path}: unreadable ({e.strerror or e})") from None
    except (ValueError, RecursionError) as e:
        raise UserError(f"{path}: not valid JSON ({str(e)[:200]})") from None
    try:
        return _ENTRIES.validate_python(raw)
    except ValidationError as e:
        raise UserError(f"{path}: {explain(e).removeprefix(': ')}") from None
