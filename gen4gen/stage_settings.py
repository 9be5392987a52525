"""Typed settings of the run and of the data stages (s1 ``segment``, s2 ``compose``, s3 ``repaint``, s4 ``caption``,
``io``, ``shard`` and the backend nodes they read). Every field is required: the yaml (``conf/config.yaml``) is where
the defaults live. A stage builds its sections once, when it starts, and hands the typed values down; the start-up
check (``gen4gen.settings.config_problems``) reads the config through these same models.

The sections are closed (``extra="forbid"``: ``+compose.num_sample=5`` is a typo, not a setting). Only a backend
node is open: its other keys are the arguments of the class its ``_target_`` names (a user's own backend included).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from gen4gen.errors import UserError

MIN_CANVAS_SIDE = 64
SIZE_WANTED = "expected a side in pixels (1024) or [W, H]"


def _name(value: Any) -> Any:
    """A folder or scene name the command line gave as a number (``repaint.scene=2024``) is still a name."""
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


Name = Annotated[str, BeforeValidator(_name)]


def canvas_sides(value: Any) -> tuple[int, int]:
    """``compose.size``: 1024 or [W, H], at least 64 px a side (ValueError saying what is expected)."""
    try:
        w, h = (int(value), int(value)) if isinstance(value, (int, float)) else (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(SIZE_WANTED) from None
    if w < MIN_CANVAS_SIDE or h < MIN_CANVAS_SIDE:
        raise ValueError(f"too small ({w}x{h}); use at least {MIN_CANVAS_SIDE} px a side")
    return w, h


def canvas_size(value: Any, max_pixels: int | None = None) -> tuple[int, int]:
    """``compose.size`` within ``io.max_pixels``, the bound every input image gets (a 20000x20000 canvas took 104 s
    and 8 GB for one composition); UserError naming the key."""
    try:
        w, h = canvas_sides(value)
    except ValueError as e:
        raise UserError(f"compose.size={value}: {e}") from None
    if max_pixels is not None and w * h > max_pixels:
        raise UserError(f"compose.size={[w, h]} is {w}x{h} = {w * h / 1e6:.0f} MP, over the limit of "
                        f"{max_pixels / 1e6:.0f} MP (io.max_pixels); use a smaller canvas or raise the limit")
    return w, h


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# a folder given on the command line as a number (paths.stages_dir=2024) is still a folder
Folder = Annotated[Path, BeforeValidator(_name)]


class PathsSettings(_Closed):
    """``paths``: the source photos, the stage tree, the outputs (datasets, runs, train, bench) and the cache."""
    source_dir: Folder
    stages_dir: Folder
    outputs_dir: Folder
    cache_dir: Folder


class ShardSettings(_Closed):
    index: int = Field(ge=0)
    count: int = Field(ge=1)


class IOSettings(_Closed):
    """``io``: the decompression-bomb guard every image read gets."""
    max_pixels: int = Field(ge=1)
    min_side: int = Field(ge=1)


class RunSettings(BaseModel):
    """The top-level keys the runner reads: which items are this shard's and the seed they draw from."""
    model_config = ConfigDict(extra="ignore", frozen=True)  # the sections are read by their own models
    stage: str
    seed: int
    shard: ShardSettings


class TopSettings(RunSettings):
    """Every top-level key (not a section) of the config."""
    workers: int = Field(ge=1)
    device: str  # auto | cpu | cuda | cuda:N (gen4gen.device says what is wrong with another)
    strict: bool
    keep_runs: int | None = Field(ge=0)  # null: keep every run folder


FEATURES = "use efficientnet-lite0, clip:<model> or dino:<model>"


class SegmentSettings(_Closed):
    """``segment``: s1's rounds and the image features that tell a concept's subject from a second object."""
    rounds: int = Field(ge=1)
    features: str

    @field_validator("features")
    @classmethod
    def _features(cls, v: str) -> str:
        kind, _, path = v.partition(":")
        if not ((kind == "efficientnet-lite0" and not path) or (kind in ("clip", "dino") and path)):
            raise ValueError(FEATURES)
        return v


class BackendNode(BaseModel):
    """A backend node (``layout``, ``inpainter``, ``captioner``): open, its keys are its class's arguments."""
    model_config = ConfigDict(extra="allow", frozen=True)
    target: str = Field(alias="_target_")


class SegmenterNode(BackendNode):
    # what the cut-out keeps of a photo with several objects: the concept's (what the concept's photos share),
    # all of them, or the largest; the stage's choice, taken out before the backend is built
    keep: Literal["concept", "all", "largest"]


class AugmentSettings(_Closed):
    flip: bool
    max_rotation: float = Field(ge=0, le=180)
    max_shift: float = Field(ge=0, le=0.5)


class ComposeSettings(_Closed):
    """``compose``: which compositions s2 makes and how their concepts are pasted."""
    min_objects: int = Field(ge=1)
    sets: Literal["all", "subsets"]
    num_samples: int = Field(ge=1)
    size: tuple[int, int]  # (W, H); 1024 means [1024, 1024]
    min_visible: float = Field(ge=0, le=1)
    occlusion: float = Field(ge=0, le=1)
    max_attempts: int = Field(ge=1)
    counts: dict[str, int] | None  # instances per concept folder name; null: one of each
    augment: AugmentSettings

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, v):
        return canvas_sides(v)

    @field_validator("counts")
    @classmethod
    def _positive(cls, v):
        bad = {k: n for k, n in (v or {}).items() if n < 1}
        if bad:
            raise ValueError(f"each count must be at least 1, got {bad}")
        return v


class RepaintSettings(_Closed):
    """``repaint``: s3's background sources and the mask of what is repainted."""
    max_backgrounds: int = Field(ge=1)
    source: Literal["auto", "photo", "noise", "procedural"]
    backgrounds: Name | None  # a folder of background photos
    min_photo_side: int = Field(ge=1)
    scene: Name | None  # a sub-folder of `backgrounds`, or a phrase
    photo_blur: float = Field(ge=0)
    max_salient: float = Field(ge=0, le=1)
    blur: int = Field(ge=0)
    mask_low: float = Field(ge=0, le=255)
    mask_high: float = Field(ge=0, le=255)
    mask_solid: float = Field(ge=0, le=1)
    invert: bool
    prompt: str
    negative_prompt: str | None

    @property
    def kind(self) -> str:
        """The background source ``auto`` stands for: photo when ``backgrounds`` is set, else procedural."""
        if self.source == "auto":
            return "photo" if self.backgrounds else "procedural"
        return self.source


class CaptionSettings(_Closed):
    """``caption``: what every captioner's captions are checked against."""
    max_words: int = Field(ge=1)
    clip_tokenizer: str | None  # a local folder or a cached hub id; null: the conservative token count
