"""Load a ``stage=train`` run into a diffusers pipeline: ``gen4gen.personalize.load(pipe, run_dir)``.

A run folder holds ``personalization.json`` (``gen4gen.artefacts.Manifest``), one embedding file per modifier
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

import re
from pathlib import Path

from gen4gen.artefacts import MANIFEST, Manifest
from gen4gen.errors import UserError

# what save_lora_weights writes for the UNet: peft's lora_A/lora_B, or the older lora.down/lora.up names
LORA_KEY = re.compile(r"unet\.(.+)\.lora(?:_|\.)(A|B|down|up)\.weight")
CD_KEY = re.compile(r"(.+\.attn2)\.processor\.(to_k|to_v)_custom_diffusion\.weight")


def load(pipe, run_dir: str | Path):
    """Install a train run's tokens and weights into ``pipe`` (a StableDiffusion[XL]Pipeline of the same base);
    returns the manifest. Everything is read and checked first, so a tampered run is one line naming the file
    and what is wrong (a path leading out of the run folder, a missing or garbled file, a tensor of the wrong
    shape) and leaves the pipeline as it was."""
    import torch

    run_dir = Path(run_dir)
    man = Manifest.load(run_dir)
    pairs = [(pipe.text_encoder, pipe.tokenizer, "clip_l")]
    if man.base_kind == "sdxl":
        pairs.append((pipe.text_encoder_2, pipe.tokenizer_2, "clip_g"))
    weights = run_file(run_dir, man.weights, "weights")
    vectors = []  # (token, encoder, tokenizer, vector)
    for t in man.tokens:
        path = run_file(run_dir, t.file, f"token {t.token}")
        state = read_tensors(path)
        for enc, tok, key in pairs:
            key = t.token if man.base_kind == "sd" else key
            width = enc.get_input_embeddings().weight.shape[1]
            vec = state.get(key)
            if not isinstance(vec, torch.Tensor) or vec.shape[-1:] != (width,) or vec.dim() not in (1, 2):
                got = "missing" if vec is None else f"shaped {tuple(vec.shape)}" if isinstance(vec, torch.Tensor) \
                    else type(vec).__name__
                raise UserError(f"{path}: {key!r} is {got}; the text encoder takes a vector of {width}")
            vectors.append((t.token, enc, tok, vec))
    if man.trainer == "custom_diffusion":
        updates = custom_diffusion_updates(pipe.unet, weights, read_tensors(weights))
    else:  # first: diffusers checks the adapters' keys and shapes itself, and its errors would not name the file
        lora_check(pipe.unet, weights, read_tensors(weights))
        try:
            pipe.load_lora_weights(str(run_dir), weight_name=man.weights)
        except Exception as e:  # noqa: BLE001 - keys or shapes of another base: one line naming the file
            raise UserError(f"{weights}: not LoRA weights for this pipeline "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None
    for token, enc, tok, vec in vectors:
        try:
            pipe.load_textual_inversion(vec.to(enc.dtype), token=token, text_encoder=enc, tokenizer=tok)
        except ValueError as e:  # e.g. the token is already in this pipeline's vocabulary (loaded twice)
            raise UserError(f"{run_dir}: cannot add token {token} to this pipeline ({e})") from None
    if man.trainer == "custom_diffusion":
        with torch.no_grad():
            for weight, value in updates:
                weight.copy_(value.to(weight.dtype))
    return man


def run_file(run_dir: Path, name: str, what: str) -> Path:
    """A file the manifest names: inside the run folder (links resolved) and present, else one line."""
    from gen4gen.contain import Escaped, contained

    try:
        path = contained(name, run_dir, f"{MANIFEST} {what}")
    except Escaped as e:
        raise UserError(f"{run_dir / MANIFEST}: {e}") from None
    try:
        present = path.is_file()
    except OSError as e:  # a name too long for the file system
        raise UserError(f"{run_dir / MANIFEST}: {what} {name[:80]!r}...: {e.strerror}") from None
    if not present:
        raise UserError(f"{run_dir}: {what} file {name[:200]} is missing")
    return path


def read_tensors(path: Path) -> dict:
    """A safetensors file, or a ``.bin`` state dict read with ``weights_only=True`` (no code runs); anything that
    is not a dict of named tensors is one line naming the file."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - SafetensorError, UnpicklingError, EOFError...: the file is bad
        raise UserError(f"{path}: unreadable ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
                        ) from None
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise UserError(f"{path}: not a state dict (a {type(state).__name__})")
    return state


def custom_diffusion_updates(unet, path: Path, state: dict) -> list:
    """(layer weight, trained value) for every key/value projection in a Custom Diffusion weights file; a key
    that names no cross-attention projection of this UNet, or a shape that differs, is one line."""
    import torch

    updates = []
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue  # a self-attention entry of the .bin file: nothing trained there
        m = CD_KEY.fullmatch(key)
        try:
            weight = getattr(unet.get_submodule(m.group(1)), m.group(2)).weight if m else None
        except AttributeError:
            weight = None
        if weight is None:
            raise UserError(f"{path}: {key!r} names no cross-attention key/value projection of this UNet")
        if weight.shape != value.shape:
            raise UserError(f"{path}: {key} is {tuple(value.shape)}, the base's layer is "
                            f"{tuple(weight.shape)}: trained on another base than this pipeline")
        updates.append((weight, value))
    if not updates:
        raise UserError(f"{path}: holds no Custom Diffusion weights")
    return updates


def lora_check(unet, path: Path, state: dict) -> None:
    """Every LoRA tensor names a layer of this UNet and fits it (A: rank x inputs, B: outputs x rank): diffusers
    itself loads a file of foreign keys as nothing at all, without a word."""
    ranks: dict[str, dict[str, int]] = {}
    for key, value in state.items():
        m = LORA_KEY.fullmatch(key)
        try:
            layer = unet.get_submodule(m.group(1)) if m else None
        except AttributeError:
            layer = None
        weight = getattr(getattr(layer, "base_layer", layer), "weight", None)
        if weight is None:
            raise UserError(f"{path}: {key!r} names no layer of this UNet")
        side = {"down": "A", "up": "B"}.get(m.group(2), m.group(2))
        fits = value.dim() == weight.dim() and (value.shape[1] == weight.shape[1] if side == "A"
                                                else value.shape[0] == weight.shape[0])
        if not fits:
            raise UserError(f"{path}: {key} is {tuple(value.shape)}, which does not fit the base's layer "
                            f"{tuple(weight.shape)}: trained on another base than this pipeline")
        ranks.setdefault(m.group(1), {})[side] = int(value.shape[0] if side == "A" else value.shape[1])
    if not ranks:
        raise UserError(f"{path}: holds no LoRA weights for the UNet")
    uneven = [name for name, r in ranks.items() if len(set(r.values())) != 1 or len(r) != 2]
    if uneven:
        raise UserError(f"{path}: {uneven[0]} has no matching lora_A/lora_B pair of one rank")
