"""The files of a train run (``<train.out_dir>/<train.name>/``) that the bench and ``personalize.load`` read back:
``meta.json`` (the runner's done marker of the run, with what it trained on) and ``personalization.json`` (which
weights and token files to install, on which base)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import ConfigDict, Field, StrictStr

from gen4gen.artefacts.base import Artefact, Number, Record
from gen4gen.artefacts.stage import StageMeta
from gen4gen.errors import ItemFailed, UserError

MANIFEST = "personalization.json"
FORMAT = "gen4gen-personalization/1"
TRAINER_NAMES = {"custom_diffusion": "Custom Diffusion", "lora": "LoRA"}


class TrainMeta(StageMeta):
    """A train run's ``meta.json``, written last by the runner: the run is done when it holds the configuration's
    hash and the fingerprint of the examples it trained on (``hash``: what a bench image of the run depends on)."""
    id: StrictStr = ""  # a run written before train went through the runner has none: it still reads (and is kept)
    stage: StrictStr = "train"
    dataset: StrictStr = ""
    examples: Annotated[int, Field(ge=0)] = 0
    priors: Annotated[int, Field(ge=0)] = 0
    losses: list[Number] = Field(default_factory=list)
    resumed_from: Annotated[int, Field(ge=0)] | None = None
    heldout: list[list[StrictStr]] = Field(default_factory=list)  # concept sets split.json kept out of training

    @classmethod
    def of(cls, run_dir: Path) -> "TrainMeta | None":
        """The run's marker, or None when it has none or it does not read (not trained: train again)."""
        try:
            return cls.load(run_dir)
        except ItemFailed:
            return None


class TokenFile(Record):
    model_config = ConfigDict(extra="forbid")
    token: StrictStr  # "<new1>"
    concept: StrictStr  # "cat"
    noun: StrictStr  # the class words the token was started from, "cat"
    file: StrictStr  # "<new1>.safetensors": {token: [dim]} (SD) or {"clip_l": [dim], "clip_g": [dim2]} (SD-XL)


class Manifest(Artefact):
    """``personalization.json``: what ``gen4gen.personalize.load`` installs into a pipeline of the run's base."""
    FILE: ClassVar[str] = MANIFEST
    model_config = ConfigDict(extra="forbid")
    format: Literal["gen4gen-personalization/1"] = FORMAT
    trainer: Literal["custom_diffusion", "lora"]
    base: StrictStr
    base_kind: Literal["sd", "sdxl"]
    weights: StrictStr  # file name in the run folder
    tokens: list[TokenFile]
    data: StrictStr = ""  # mycanvas | sources | both (train.data)
    caption: StrictStr = ""  # the caption kind trained on

    @classmethod
    def load(cls, run_dir: Path) -> "Manifest":
        """The run's manifest, or one ``UserError`` line naming the run folder, the file and the field."""
        path = Path(run_dir) / MANIFEST
        try:
            data = path.read_bytes()
        except OSError:
            raise UserError(f"{run_dir} is not a train run: {MANIFEST} is missing (run stage=train)") from None
        try:
            return cls.from_bytes(data, path)
        except ItemFailed as e:
            raise UserError(f"{run_dir}: {e}") from None

    @property
    def method(self) -> str:
        """The row name in Gen4Gen's table: "Custom Diffusion on MyCanvas", "LoRA on sources"."""
        return f"{TRAINER_NAMES[self.trainer]} on {({'mycanvas': 'MyCanvas'}).get(self.data, self.data or '?')}"

    def class_words(self, text: str) -> str:
        """A personalised prompt as class words ("<new1> cat" -> "cat"): what CLIP-T scores."""
        from gen4gen.words import as_class_words

        return as_class_words(text, {t.token: t.noun for t in self.tokens})
