"""Typed settings per config section. The yaml (``conf/``) is where every default lives; these models hold the
types and bounds, with no defaults of their own. The start-up check (``config_problems``: one line per bad value,
naming its key, before any stage starts) and the code read the composed config through the same models, so
``seed=abc`` says "seed" instead of "invalid literal for int()" and no module keeps a second default.
"""
from __future__ import annotations

import os
from typing import Any, Literal, TypeVar

from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from gen4gen.errors import UserError
from gen4gen.stage_settings import (BackendNode, CaptionSettings, ComposeSettings, IOSettings, PathsSettings,
                                    RepaintSettings, SegmenterNode, SegmentSettings, TopSettings, canvas_size)
from gen4gen.tool_settings import RouteSettings, SearchSettings

M = TypeVar("M", bound=BaseModel)


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow")  # only the keys checked here; the rest is each stage's own


class Backbones(_Section):
    clip: str
    dino: str
    detector: str
    identity: Literal["clip", "dino", "efficientnet-lite0"]  # the image encoder of identity_mix


class BenchMetrics(_Section):
    """``bench.metrics``: which metrics, with which backbones (folders or hub ids)."""
    compute: list[str]
    backbones: Backbones
    detector_threshold: float = Field(ge=0, le=1)
    batch_size: int = Field(ge=1)
    chunk_size: int = Field(ge=1)  # images held in memory at once


class BenchReport(_Section):
    quality: str  # the quality axis of the Pareto plot and the leaderboard's order
    weights: dict[str, float]  # GEMRec ranking terms
    bootstrap: int = Field(ge=1)  # resamples behind every 95 % interval


class Counterfactual(_Section):
    enabled: bool
    max_images: int = Field(ge=1)
    target: float = Field(ge=0, le=1)  # the share of cases a metric must notice


class Promptset(_Section):
    """One of ``bench.promptsets``: its loader (``kind``) and file; the other keys are the loader's own."""
    kind: str
    path: str


class GenerateSettings(_Section):
    """What the generate step needs of ``bench``: which seeds, the call size, and how the models run."""
    seeds: list[int]
    prompt_seeds: bool  # a prompt with its own seed (GEMRec, DiffusionDB) uses it instead of ``seeds``
    use_prompt_size: bool
    batch_size: int = Field(ge=1)
    writers: int = Field(ge=0)
    warmup: bool
    safety_checker: bool
    force_cpu: bool


class BenchSettings(GenerateSettings):
    """``bench``: the steps, the run folder, the promptsets in use and the metrics, report and counterfactual check."""
    steps: list[Literal["generate", "metrics", "report"]]
    name: str | None  # null: the roster's name
    out_dir: str
    use: list[str]
    promptsets: dict[str, Promptset]
    metrics: BenchMetrics
    report: BenchReport
    counterfactual: Counterfactual


class KohyaSettings(BaseModel):
    """``export.kohya``: the captions, masks, bucket resolution and repeats of the ``kohya/`` folders."""
    model_config = ConfigDict(extra="forbid")
    caption: Literal["personalized", "detailed", "short"]
    masks: bool
    resolution: int = Field(ge=64)  # sd-scripts' bucket step: smaller has no bucket
    scene_repeats: int = Field(ge=1)
    reference_repeats: int = Field(ge=1)


class _CustomDiffusionExport(_Section):
    base: str  # train.sh's MODEL_NAME


class ExportSettings(_Section):
    """``export``: the dataset's name, formats, what goes in and the sizes of what it holds."""
    name: str
    formats: list[str]
    scenes: tuple[str, ...] | None  # null: every scene
    concepts: tuple[str, ...] | None  # null: every concept
    kohya: KohyaSettings
    customdiffusion: _CustomDiffusionExport
    gallery: bool
    gallery_per_scene: int = Field(ge=0)  # 0: every composition
    reference_size: int = Field(ge=16)
    thumb_size: int = Field(ge=16)
    shard_maxcount: int = Field(ge=1)
    shard_maxsize: int = Field(ge=1)
    mask_threshold: int = Field(ge=1, le=255)

    @field_validator("scenes", "concepts", mode="before")
    @classmethod
    def _names(cls, v, info):
        if v is None:
            return None
        if isinstance(v, str):  # export.scenes=pets: one name is a list of one
            v = [v]
        if not isinstance(v, (list, tuple)) or not v or not all(isinstance(n, str) and n for n in v):
            raise ValueError(f"expected a list of {info.field_name[:-1]} folder names, e.g. "
                             f"export.{info.field_name}=[a,b], or null for all")
        return tuple(sorted(set(v)))


class LLMSettings(BaseModel):
    """``llm``: the one OpenAI-compatible endpoint every LLM backend talks to."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    base_url: str
    model: str
    api_key_env: str | None  # the name of the variable holding the key; the key itself never enters the config
    concurrency: int = Field(ge=1)
    timeout: float = Field(gt=0)
    connect_timeout: float = Field(gt=0)
    max_reply_mb: float = Field(gt=0)
    max_retries: int = Field(ge=0)
    max_attempts: int = Field(ge=1)
    temperature: float = Field(ge=0)
    cache_dir: str | None
    fallback_on_unreachable: bool


class ServeSettings(BaseModel):
    """``serve``: the review app's address, token, sources and limits."""
    model_config = ConfigDict(extra="forbid")
    host: StrictStr
    port: int = Field(ge=1, le=65535)
    token: StrictStr | None = Field(min_length=8)  # null: none on 127.0.0.1, one made for any other host
    bench_run: StrictStr | None
    search_index: StrictStr | None
    page_size: int = Field(ge=1, le=500)
    thumb_size: int = Field(ge=32, le=1024)
    thumbs_dir: StrictStr
    max_upload_mb: float = Field(gt=0, le=1024)


class PriorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    class_dir: str | None  # <dir>/<concept>/*.png, captioned "a photo of a <class>"
    weight: float
    generate: int = Field(ge=0)  # fill each <class_dir>/<concept>/ up to this many images with the base model


class TrainSettings(BaseModel):
    """``train`` minus the paths: everything that changes the trained weights (its hash names a resumable run)."""
    model_config = ConfigDict(extra="ignore")
    base: str
    data: Literal["mycanvas", "sources", "both"]
    caption: Literal["personalized", "detailed", "short"]
    max_steps: int = Field(ge=1)
    lr: float = Field(gt=0)
    weight_decay: float
    batch_size: int = Field(ge=1)
    grad_accum: int = Field(ge=1)
    resolution: int
    seed: int
    mixed_precision: Literal["no", "fp16", "bf16"]
    gradient_checkpointing: bool
    max_grad_norm: float
    masked_loss: bool
    mask_background_weight: float = Field(ge=0, le=1)
    prior: PriorSettings

    @field_validator("resolution")
    @classmethod
    def _res(cls, v: int) -> int:
        if v < 8 or v % 8:
            raise ValueError(f"{v} is not a multiple of 8 (the VAE halves it three times)")
        return v


class TrainRun(BaseModel):
    """``train``'s keys that say where and how a run goes, not what it learns (outside the run's hash)."""
    model_config = ConfigDict(extra="ignore")
    name: str
    out_dir: str
    dataset: str
    checkpoint_every: int = Field(ge=1)
    keep_checkpoints: int = Field(ge=1)
    force_cpu: bool


class _Train(TrainSettings, TrainRun):
    """The start-up check of the whole ``train`` block."""


class _Config(TopSettings):
    """The start-up check: the run's keys and every typed section. The root stays open (``roster``, ``variant``...
    are read by their own stages)."""
    model_config = ConfigDict(extra="allow")
    paths: PathsSettings
    io: IOSettings
    segment: SegmentSettings
    segmenter: SegmenterNode
    compose: ComposeSettings
    layout: BackendNode
    repaint: RepaintSettings
    inpainter: BackendNode
    caption: CaptionSettings
    captioner: BackendNode
    export: ExportSettings
    bench: BenchSettings
    search: SearchSettings
    route: RouteSettings
    train: _Train
    llm: LLMSettings
    serve: ServeSettings


_WHAT = {"int_parsing": "expected a whole number", "int_type": "expected a whole number",
         "int_from_float": "expected a whole number", "float_parsing": "expected a number",
         "float_type": "expected a number", "bool_parsing": "expected true or false", "bool_type": "expected true or false",
         "dict_type": "expected a mapping, e.g. {cat: 2}", "path_type": "expected a folder",
         "model_type": "expected a group of keys",
         "model_attributes_type": "expected a group of keys", "missing": "missing; restore it or remove the override"}


def config_problems(cfg: DictConfig) -> list[str]:
    """One line per bad value of ``cfg``, each naming its key, the value and what is expected."""
    data, unresolved = {}, {}
    for key in _Config.model_fields:  # only what is checked here: another stage's interpolation is its own
        try:
            data |= section_data(cfg, [key])  # an absent key: pydantic says "missing"
        except Exception as e:  # noqa: BLE001 - an interpolation that does not resolve (${oc.env:...}, ~seed)
            unresolved[key] = f"{key}: a value does not resolve: {str(e).splitlines()[0]}"
    try:
        parsed = _Config.model_validate(data)
    except ValidationError as e:  # a value taken from another key (train.seed: ${seed}) is named at its source
        lines = [settings_line(err) for err in e.errors()
                 if err["loc"][0] not in unresolved and not _interpolated(cfg, err["loc"])]
        return lines or list(unresolved.values())  # a key that does not resolve is often one named above
    if unresolved:
        return list(unresolved.values())
    problems = []
    if parsed.shard.index >= parsed.shard.count:
        problems.append(f"shard.index={parsed.shard.index} is not below shard.count={parsed.shard.count}; "
                        f"use shard.index=0..{parsed.shard.count - 1}")
    try:
        canvas_size(parsed.compose.size, parsed.io.max_pixels)
    except UserError as e:
        problems.append(str(e))
    return problems


def _interpolated(cfg: DictConfig, loc: tuple) -> bool:
    parent = OmegaConf.select(cfg, ".".join(str(p) for p in loc[:-1])) if len(loc) > 1 else cfg
    key = str(loc[-1])
    return isinstance(parent, DictConfig) and key in parent and OmegaConf.is_interpolation(parent, key)


# the stages whose backend node may hold an ``llm`` block (layout=llm, captioner=llm|vlm)
LLM_USERS = {"s2": ("layout", "layout planner"), "s4": ("captioner", "captioner")}


def missing_key_notes(cfg: DictConfig, names: list[str]) -> list[str]:
    """For a run of several stages: one line per later stage that will ask an LLM whose key is not set, said
    before the earlier stages spend their time (that stage itself stops with the same reason, unless its
    replies are cached or ``llm.fallback_on_unreachable`` is set)."""
    llm = section(cfg, "llm", LLMSettings)
    env = llm.api_key_env
    if not env or os.environ.get(env) or llm.fallback_on_unreachable:
        return []
    notes = []
    for stage in names[1:]:
        group, what = LLM_USERS.get(stage, (None, ""))
        if group and "llm" in (cfg.get(group) or {}):
            notes.append(f"{stage}: its {what} asks the LLM, but {env} is not set: that stage will stop unless its "
                         f"replies are cached; export {env} now (or llm.fallback_on_unreachable=true)")
    return notes


def settings_line(err: dict, section: str = "") -> str:
    """One pydantic error as ``key=value: what is expected``."""
    key = ".".join([section] * bool(section) + [str(p) for p in err["loc"]])
    what = _WHAT.get(err["type"])
    if what is None:
        what = err["msg"][0].lower() + err["msg"][1:]
        what = what.removeprefix("value error, ")
        bounds = {"ge": "at least", "gt": "over", "le": "at most", "lt": "under"}
        what = next((f"must be {word} {err['ctx'][k]}" for k, word in bounds.items() if k in (err.get("ctx") or {})),
                    what)
    if err["type"] == "literal_error":
        what = f"choose one of {err['ctx']['expected']}"
    if err["type"] == "missing":
        return f"{key} is {what}"
    value = err.get("input")
    return f"{key}={value}: {what}"


def section(cfg: DictConfig, key: str, model: type[M]) -> M:
    """``cfg.<key>`` read through ``model`` (built once by the caller); a bad value is a UserError naming it."""
    return parse(OmegaConf.select(cfg, key), model, key)


def parse(node: Any, model: type[M], key: str) -> M:
    """A config node (or plain data) read through ``model``; ``key`` names it in the error line."""
    data = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise UserError("; ".join(settings_line(err, key) for err in e.errors())) from None


def top_level(cfg: DictConfig, model: type[M] = TopSettings) -> M:
    """The top-level keys of ``cfg`` (not its sections) read through ``model``; a bad value is a UserError."""
    return parse(section_data(cfg, model.model_fields), model, "")


def section_data(cfg: DictConfig, keys) -> dict:
    """The ``keys`` of ``cfg`` that it has, as plain data resolved against the whole config."""
    out = {}
    for key in keys:
        if key in cfg:
            node = cfg.get(key)
            out[key] = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    return out
