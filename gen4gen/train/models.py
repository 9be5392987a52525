"""The base model a run fine-tunes, loaded component by component with ``from_pretrained`` (SD 1.x/2.x: one
CLIP text encoder; SD-XL: two, the second pooled), the modifier tokens it learns, and prompt encoding the
way the diffusers pipelines do it (so a trained model sees at inference what it saw in training)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gen4gen.errors import UserError
from gen4gen.hub import local_copy, resolve
from gen4gen.pipelines import load_component

PIPELINES = {"StableDiffusionPipeline": "sd", "StableDiffusionXLPipeline": "sdxl"}


def base_kind(source: str) -> str:
    """``sd`` or ``sdxl`` from the base's ``model_index.json`` (a local folder, the hub cache, or the hub when it
    is reachable); anything else is one clear error naming ``train.base``."""
    path = Path(source)
    if path.exists() and not (path / "model_index.json").is_file():
        raise UserError(f"train.base={source!r}: a folder without model_index.json (not a diffusers pipeline)")
    local = local_copy(source)
    if local:
        index = Path(local) / "model_index.json"
    else:
        from huggingface_hub import hf_hub_download

        resolve(source, "train.base")  # one line at once when the hub is out of reach
        try:
            index = Path(hf_hub_download(source, "model_index.json"))
        except Exception as e:  # noqa: BLE001 - a typo, a gated repo: one line, not a traceback
            raise UserError(f"train.base={source!r}: not a local diffusers folder and not loadable from the hub "
                            f"({type(e).__name__})") from None
    try:
        name = json.loads(index.read_bytes()).get("_class_name", "")
    except (OSError, ValueError, AttributeError) as e:  # garbled, not UTF-8, or not an object
        raise UserError(f"base {source!r}: {index} is unreadable ({type(e).__name__}: {e})") from None
    if name not in PIPELINES:
        raise UserError(f"base {source!r} is a {name or 'unknown'} pipeline; train supports "
                        f"{', '.join(PIPELINES)} (SD 1.x/2.x and SD-XL)")
    return PIPELINES[name]


def guessed_kind(source: str) -> str:
    """The base's kind for the work estimate, without the network: read when the base is here or cached, else
    guessed from its name (SD-XL ids say ``xl``)."""
    local = local_copy(source)
    if local and (Path(local) / "model_index.json").is_file():
        return base_kind(local)
    return "sdxl" if "xl" in source.lower() else "sd"


@dataclass
class Base:
    kind: str  # sd | sdxl
    source: str
    unet: Any
    vae: Any
    scheduler: Any  # DDPMScheduler with the base's noise schedule
    tokenizers: list = field(default_factory=list)
    text_encoders: list = field(default_factory=list)


def load_base(source: str) -> Base:
    """Every part in float32 (training keeps fp32 master weights; mixed precision is autocast)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    kind = base_kind(source)
    parts = {"unet": UNet2DConditionModel, "vae": AutoencoderKL, "scheduler": DDPMScheduler,
             "tokenizer": CLIPTokenizer, "text_encoder": CLIPTextModel}
    if kind == "sdxl":
        parts.update(tokenizer_2=CLIPTokenizer, text_encoder_2=CLIPTextModelWithProjection)
    got = {sub: load_component(cls, source, "train.base", subfolder=sub) for sub, cls in parts.items()}
    encoders = [got["text_encoder"]] + ([got["text_encoder_2"]] if kind == "sdxl" else [])
    tokenizers = [got["tokenizer"]] + ([got["tokenizer_2"]] if kind == "sdxl" else [])
    for m in (got["unet"], got["vae"], *encoders):
        m.requires_grad_(False)
    return Base(kind, source, got["unet"], got["vae"], got["scheduler"], tokenizers, encoders)


# ---------------------------------------------------------------- modifier tokens
def token_module():
    import torch

    class TokenRows(torch.nn.Module):
        """An embedding whose rows from ``first`` on (the new tokens) come from a small trainable parameter and
        all others from the frozen table: only the new rows can change, whatever the optimiser does (weight
        decay included). ``merged()`` writes them into a plain ``nn.Embedding`` for saving and inference."""

        def __init__(self, base: torch.nn.Embedding, first: int):
            super().__init__()
            self.base, self.first = base, first
            self.rows = torch.nn.Parameter(base.weight[first:].detach().clone().float())

        def forward(self, ids):
            out = self.base(ids)
            new = (ids >= self.first).unsqueeze(-1)
            rows = self.rows.to(out.dtype)[(ids - self.first).clamp(min=0)]
            return torch.where(new, rows, out)

        def merged(self) -> torch.nn.Embedding:
            with torch.no_grad():
                self.base.weight[self.first:] = self.rows.to(self.base.weight.dtype)
            return self.base

    return TokenRows


def add_tokens(base: Base, tokens: list[str], nouns: list[str]) -> list:
    """Add ``tokens`` to every tokenizer and text encoder, each new row initialised with the mean embedding of
    its class words (Custom Diffusion starts from the class word); returns one ``TokenRows`` per encoder,
    installed as the encoder's input embedding."""
    import torch

    TokenRows = token_module()
    rows = []
    for tok, enc in zip(base.tokenizers, base.text_encoders):
        clash = [t for t in tokens if t in tok.get_vocab()]
        if clash:
            raise UserError(f"modifier token(s) {', '.join(clash)} already in the base's vocabulary")
        first = len(tok)
        tok.add_tokens(tokens)
        enc.resize_token_embeddings(len(tok), mean_resizing=False)  # rows set below
        emb = enc.get_input_embeddings()
        with torch.no_grad():
            for k, noun in enumerate(nouns):
                ids = tok(noun, add_special_tokens=False).input_ids
                if not ids:
                    raise UserError(f"class words {noun!r} give no token to start {tokens[k]} from")
                emb.weight[first + k] = emb.weight[ids].mean(0)
        wrapped = TokenRows(emb, first)
        enc.set_input_embeddings(wrapped)
        rows.append(wrapped)
    return rows


def merge_tokens(base: Base) -> None:
    """Put plain embeddings (with the learned rows written in) back into the text encoders."""
    for enc in base.text_encoders:
        emb = enc.get_input_embeddings()
        if hasattr(emb, "merged"):
            enc.set_input_embeddings(emb.merged())


# ---------------------------------------------------------------- prompts
def tokenize(base: Base, captions: list[str]) -> list:
    """Token ids per tokenizer, padded to 77 as the pipelines do."""
    return [tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True,
                return_tensors="pt").input_ids for tok in base.tokenizers]


def encode(base: Base, ids: list, encoders: list | None = None) -> tuple:
    """(prompt embeddings, pooled embeddings or None): SD uses the last hidden state; SD-XL concatenates the
    penultimate hidden states of both encoders and pools the second, like ``StableDiffusionXLPipeline``."""
    import torch

    encoders = encoders or base.text_encoders
    if base.kind == "sd":
        return encoders[0](ids[0])[0], None
    hidden, pooled = [], None
    for enc, x in zip(encoders, ids):
        out = enc(x, output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
        pooled = out[0]
    return torch.cat(hidden, dim=-1), pooled
