"""The bench's image record: ``images/<model>/<set>/<prompt id>_s<seed>.json`` beside its PNG, the runner's done
marker of that image and the source of its row in ``results.{csv,jsonl}``, which the metrics and the report read."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import Field, StrictInt, StrictStr

from gen4gen.artefacts.base import InnerPath, Number, Text
from gen4gen.artefacts.stage import StageMeta
from gen4gen.errors import ItemFailed

Positive = Annotated[StrictInt, Field(ge=1)]
Seconds = Annotated[Number, Field(ge=0)]


class ImageRecord(StageMeta):
    """One generated image: what was asked (model, prompt, seed, call settings), what it cost, and where it is
    (``image``: relative to the bench run folder)."""
    FILE: ClassVar[str] = ""  # named per image: ``<prompt id>_s<seed>.json``
    model: Text
    set: Text
    prompt_id: Text
    prompt: StrictStr
    category: StrictStr = ""
    seed: StrictInt
    width: Positive
    height: Positive
    steps: Positive
    guidance: Number
    negative: StrictStr | None = None
    image: InnerPath
    latency_s: Seconds | None = None
    batch_size: Positive = 1
    batch_seconds: Seconds | None = None
    peak_memory_gb: Seconds | None = None
    memory_kind: StrictStr = ""
    cost_usd: Seconds | None = None
    device: StrictStr = ""
    pipeline: StrictStr = ""
    model_fingerprint: StrictStr
    settings_hash: StrictStr = ""

    @property
    def prompt_key(self) -> str:
        return f"{self.set}/{self.prompt_id}"

    @property
    def key(self) -> tuple:
        """The image among a run's rows: (model, set, prompt id, seed)."""
        return self.model, self.set, self.prompt_id, self.seed

    def row(self) -> dict:
        """The image's row in ``results.{csv,jsonl}``: the record without what the runner adds to every marker."""
        return {k: v for k, v in self.model_dump().items() if k not in StageMeta.model_fields
                and k not in ("seconds", "outputs")}


def read_records(run_dir: Path) -> tuple[list[ImageRecord], list[str]]:
    """Every finished image's record (all shards) in a stable order, and one line per record that does not read
    (left out of the tables; the runner redoes its image when it is still planned)."""
    records, problems = [], []
    for p in sorted((Path(run_dir) / "images").rglob("*.json")):
        try:
            records.append(ImageRecord.load(p))
        except ItemFailed as e:
            problems.append(f"{p.parent}/{e}")
    return records, problems

