"""A roster's models (``conf/roster/<name>.yaml``: ``{name, models: [entry, ...]}``), and the entry a train run
writes as ``roster_entry.yaml`` for ``roster.models``: what to load (and how) for every text-to-image model of a
benchmark. A user writes these as config and train writes them as a file; both are read through these models, so
a typo is one clear message, not a crash an hour into a run (``gen4gen.bench.roster.load_roster`` names the entry)."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gen4gen.artefacts.base import explain, value_text
from gen4gen.artefacts.run import TrainMeta
from gen4gen.errors import UserError
from gen4gen.hashing import config_hash

ROSTER_ENTRY = "roster_entry.yaml"
# CEMS (CIKM'24) serverless price per GB-second of GPU memory, as published
CEMS_UNIT_PRICE = 0.0000166667
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraSpec(_Strict):
    """One LoRA loaded with ``pipe.load_lora_weights(source, weight_name=...)``."""
    source: str  # HF repo id, folder or .safetensors file
    weight_name: str | None = None
    scale: float = 1.0
    fuse: bool = True  # fused LoRAs cost nothing per step; unfused ones are slower (what a user would time)


class ComponentSpec(_Strict):
    """A pipeline component replaced before the pipeline is built (SDXL-Lightning UNet, YOSO transformer).

    ``weights`` (a .safetensors state dict, a local file or ``repo/file`` on the hub) is loaded into a model
    built from ``source``/``subfolder``'s config; without it the component is ``from_pretrained(source)``."""
    cls: str = Field(alias="class")  # diffusers class name: UNet2DConditionModel, PixArtTransformer2DModel, ...
    source: str
    subfolder: str | None = None
    weights: str | None = None


class SchedulerSpec(_Strict):
    model_config = ConfigDict(extra="allow")  # the rest are config overrides (timestep_spacing, prediction_type)
    cls: str = Field(alias="class")

    def overrides(self) -> dict:
        return dict(self.model_extra or {})


class CostSpec(_Strict):
    """``cems``: latency x ceil(peak memory GB) x unit_price (CEMS); ``gpu_second``: latency x per_gpu_second."""
    kind: Literal["cems", "gpu_second"] = "cems"
    unit_price: float = CEMS_UNIT_PRICE
    per_gpu_second: float | None = None

    @model_validator(mode="after")
    def _check(self):
        if self.kind == "gpu_second" and self.per_gpu_second is None:
            raise ValueError("cost.kind=gpu_second needs cost.per_gpu_second ($ per GPU-second)")
        return self

    def per_image(self, seconds: float | None, peak_memory_gb: float | None) -> float | None:
        if seconds is None:
            return None
        if self.kind == "gpu_second":
            return seconds * float(self.per_gpu_second)
        if peak_memory_gb is None:
            return None
        return seconds * max(1, math.ceil(peak_memory_gb)) * self.unit_price


class RosterEntry(_Strict):
    name: str
    source: str
    pipeline: str | None = None  # None: auto-detected (model_index.json, or the checkpoint's keys)
    single_file_config: str | None = None  # diffusers repo/folder whose configs a single .safetensors uses
    variant: str | None = None  # "fp16" to download the half-size weights
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    steps: int = 25
    guidance: float | None = None  # None: the prompt's own CFG (GEMRec promptset), else 7.5
    scheduler: SchedulerSpec | None = None
    resolution: list[int] = Field(default_factory=lambda: [512, 512])  # [width, height]
    loras: list[LoraSpec] = Field(default_factory=list)
    components: dict[str, ComponentSpec] = Field(default_factory=dict)
    call_kwargs: dict[str, Any] = Field(default_factory=dict)  # extra pipeline(...) arguments
    tags: list[str] = Field(default_factory=list)
    base_model: str | None = None
    popularity: float | None = None  # downloads (GEMRec ranking)
    cost: CostSpec = Field(default_factory=CostSpec)
    trained_words: list[str] = Field(default_factory=list)
    # a stage=train run folder (Custom Diffusion / LoRA + <newK> tokens) installed on the base by
    # gen4gen.personalize.load; such a model is given the personalised prompts, every other one class words
    train_run: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", v):
            raise ValueError(f"{v!r}: use letters, digits, '.', '_', '+', '-' (it names a folder)")
        return v

    @field_validator("resolution", mode="before")
    @classmethod
    def _res(cls, v: Any) -> list[int]:
        if isinstance(v, int):
            return [v, v]
        v = [int(x) for x in v]
        if len(v) != 2 or min(v) < 8:
            raise ValueError("resolution is [width, height] (or one int for a square)")
        return v

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: int) -> int:
        if v < 1:
            raise ValueError("steps must be >= 1")
        return v

    @property
    def is_single_file(self) -> bool:
        return self.source.endswith((".safetensors", ".ckpt"))

    def fingerprint(self) -> str:
        """Everything that changes the images (not tags, popularity or cost): a change redoes the model."""
        keep = self.model_dump(by_alias=True, exclude={"tags", "popularity", "cost", "base_model", "trained_words"})
        if self.train_run:  # retraining in the same folder changes the images
            meta = TrainMeta.of(Path(self.train_run))
            keep["train_run_hash"] = meta.hash if meta else None
        return config_hash(keep)


class Roster(_Strict):
    name: str = "roster"
    models: list[RosterEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self):
        names = [m.name for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"model names must be unique; repeated: {', '.join(dup)}")
        return self


def read_roster_entry(path: Path) -> RosterEntry:
    """A train run's ``roster_entry.yaml``, or one ``UserError`` line naming the file and the field."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text("utf-8"))
    except OSError as e:
        raise UserError(f"{path}: unreadable ({e.strerror or e})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping, got {value_text(raw)}")
    try:
        return RosterEntry.model_validate(raw)
    except ValidationError as e:
        raise UserError(f"{path}: {explain(e)}") from None
