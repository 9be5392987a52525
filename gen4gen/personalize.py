"""Load a ``stage=train`` run into a diffusers pipeline: ``gen4gen.personalize.load(pipe, run_dir)``.

A run folder holds ``personalization.json`` (this module's ``Manifest``), one embedding file per modifier
token, and the trained weights in a format diffusers reads: Custom Diffusion's
``pytorch_custom_diffusion_weights.{safetensors,bin}`` or LoRA's ``pytorch_lora_weights.safetensors``.

Why not only diffusers' own calls (checked with diffusers 0.42.1; the code paths are the same since 0.40):
``pipe.unet.load_attn_procs(dir, weight_name=...)`` builds the Custom Diffusion processors but installs them
only when given the private ``_pipeline=pipe``, and the safetensors file cannot hold the empty entries of the
self-attention processors, so installing from it fails (processor count mismatch). The ``.bin`` file with
``_pipeline=pipe`` works (slower, non-SDPA processors). This loader writes the key/value weights straight
into ``attn2.to_k`` / ``attn2.to_v`` (what the processors compute, with the pipeline's own attention) and
loads the tokens with ``load_textual_inversion`` (SD-XL: into both text encoders).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from gen4gen.errors import UserError

MANIFEST = "personalization.json"
TRAINER_NAMES = {"custom_diffusion": "Custom Diffusion", "lora": "LoRA"}
FORMAT = "gen4gen-personalization/1"


class TokenFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str  # "<new1>"
    concept: str  # "cat"
    noun: str  # the class words the token was started from, "cat"
    file: str  # "<new1>.safetensors": {token: [dim]} (SD) or {"clip_l": [dim], "clip_g": [dim2]} (SD-XL)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["gen4gen-personalization/1"] = FORMAT
    trainer: Literal["custom_diffusion", "lora"]
    base: str
    base_kind: Literal["sd", "sdxl"]
    weights: str  # file name in the run folder
    tokens: list[TokenFile]
    data: str = ""  # mycanvas | sources | both (train.data)
    caption: str = ""  # the caption kind trained on

    @classmethod
    def load(cls, run_dir: Path) -> "Manifest":
        path = Path(run_dir) / MANIFEST
        try:
            return cls.model_validate_json(path.read_text("utf-8"))
        except OSError:
            raise UserError(f"{run_dir} is not a train run: {MANIFEST} is missing (run stage=train)") from None
        except ValidationError as e:
            err = e.errors()[0]
            raise UserError(f"{path}: {'.'.join(str(x) for x in err['loc'])}: {err['msg']}") from None

    def dump(self) -> bytes:
        return (self.model_dump_json(indent=2) + "\n").encode("utf-8")

    @property
    def method(self) -> str:
        """The row name in Gen4Gen's table: "Custom Diffusion on MyCanvas", "LoRA on sources"."""
        return f"{TRAINER_NAMES[self.trainer]} on {({'mycanvas': 'MyCanvas'}).get(self.data, self.data or '?')}"

    def class_words(self, text: str) -> str:
        """A personalised prompt as class words ("<new1> cat" -> "cat"): what CLIP-T scores."""
        from gen4gen.words import as_class_words

        return as_class_words(text, {t.token: t.noun for t in self.tokens})


def load(pipe, run_dir: str | Path):
    """Install a train run's tokens and weights into ``pipe`` (a StableDiffusion[XL]Pipeline of the same base);
    returns the manifest."""
    import torch
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    man = Manifest.load(run_dir)
    missing = [t.token for t in man.tokens if not (run_dir / t.file).is_file()]
    if missing:
        raise UserError(f"{run_dir}: token(s) {', '.join(missing)} have no embedding file")
    if not (run_dir / man.weights).is_file():
        raise UserError(f"{run_dir}: weights file {man.weights} is missing")
    pairs = [(pipe.text_encoder, pipe.tokenizer, "clip_l")]
    if man.base_kind == "sdxl":
        pairs.append((pipe.text_encoder_2, pipe.tokenizer_2, "clip_g"))
    for t in man.tokens:
        state = load_file(str(run_dir / t.file))
        for enc, tok, key in pairs:
            vec = state[t.token] if man.base_kind == "sd" else state[key]
            pipe.load_textual_inversion(vec.to(enc.dtype), token=t.token, text_encoder=enc, tokenizer=tok)
    if man.trainer == "custom_diffusion":
        path = run_dir / man.weights
        state = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, weights_only=True)
        with torch.no_grad():
            for key, value in state.items():
                if not isinstance(value, torch.Tensor):
                    continue  # a self-attention entry of the .bin file: nothing trained there
                layer, kv = key.rsplit(".processor.", 1)[0], key.rsplit(".", 2)[-2].replace("_custom_diffusion", "")
                weight = getattr(pipe.unet.get_submodule(layer), kv).weight
                if weight.shape != value.shape:
                    raise UserError(f"{path}: {key} is {tuple(value.shape)}, the base's layer is "
                                    f"{tuple(weight.shape)}: trained on another base than this pipeline")
                weight.copy_(value.to(weight.dtype))
    else:
        pipe.load_lora_weights(str(run_dir), weight_name=man.weights)
    return man
