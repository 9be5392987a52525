"""A LoRA run in the files the web UIs read (AUTOMATIC1111 / Forge, ComfyUI, SD.Next, InvokeAI), in ``webui/``:

- ``<run>.safetensors``: the LoRA in kohya's key naming (``lora_unet_<module>.lora_down.weight`` /
  ``.lora_up.weight`` / ``.alpha``), from diffusers' ``convert_state_dict_to_kohya``. SD 1.x/2.x modules keep
  diffusers' names (as sd-scripts names them); SD-XL modules take the original (SGM) UNet's block names
  (``input_blocks.4.1``...), as sd-scripts' SD-XL LoRAs do. ``alpha`` is the run's LoRA alpha (the converter
  writes the rank, which would rescale a run trained with alpha != rank).
- ``embeddings/<run>_<token>.safetensors`` per modifier token, A1111's embedding layout: ``emb_params``
  ``[1, dim]`` (SD) or ``clip_l`` + ``clip_g`` (SD-XL). A web UI names an embedding after its file, so the
  prompt word is ``<run>_new1`` where gen4gen's captions say ``<new1>``.
"""
from __future__ import annotations

import logging
import re

log = logging.getLogger(__name__)
DIR = "webui"
# attention layers only: inside them the original UNet uses diffusers' names (resnets it names otherwise)
_BLOCK = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.attentions\.(\d+)\.(.*)$")


def sgm_name(module: str, layers_per_block: int) -> str:
    """A diffusers SD-XL UNet attention module path in the original UNet's naming: ``down_blocks.1.attentions.0.x``
    -> ``input_blocks.4.1.x`` (each down block: ``layers`` resnet+attention pairs, then a downsampler; each up
    block one pair more; the attention is the pair's second part)."""
    m = _BLOCK.match(module)
    if m:
        kind, block, layer, rest = m.groups()
        per = layers_per_block + 1
        index = 1 + int(block) * per + int(layer) if kind == "down_blocks" else int(block) * per + int(layer)
        return f"{'input_blocks' if kind == 'down_blocks' else 'output_blocks'}.{index}.1.{rest}"
    if module.startswith("mid_block.attentions.0."):
        return "middle_block.1." + module[len("mid_block.attentions.0."):]
    raise ValueError(f"no kohya name for UNet module {module!r} (attention layers only)")


def embedding_stem(run_name: str, token: str) -> str:
    return f"{run_name}_{token.strip('<>')}"


def save(out, run_name: str, base, lora, tokens: list[tuple[str, dict]]) -> list[str]:
    """Write the kohya LoRA and one A1111 embedding per ``(token, {encoder key: vector})`` through ``out`` (the
    runner's ItemWriter); returns the files (relative to the run folder)."""
    import safetensors.torch
    import torch
    from diffusers.utils import convert_state_dict_to_kohya
    from peft.utils import get_peft_model_state_dict

    layers = int(base.unet.config.layers_per_block) if base.kind == "sdxl" else 0
    files = []
    try:
        peft = {f"unet.{sgm_name(k, layers) if base.kind == 'sdxl' else k}": v.detach().float().cpu().contiguous()
                for k, v in get_peft_model_state_dict(base.unet).items()}
    except ValueError as e:  # adapters on layers kohya's SD-XL naming has no name for: the run keeps its own files
        log.warning("train: no kohya LoRA file for the web UIs: %s", e)
    else:
        alpha = torch.tensor(lora.alpha)
        state = {k: (alpha.clone() if k.endswith(".alpha") else v) for k, v in convert_state_dict_to_kohya(peft).items()}
        meta = {"ss_network_module": "networks.lora", "ss_network_dim": str(lora.rank),
                "ss_network_alpha": str(lora.alpha), "ss_output_name": run_name,
                **({"ss_base_model_version": "sdxl_base_v1-0"} if base.kind == "sdxl" else {})}
        files.append(f"{DIR}/{run_name}.safetensors")
        out.bytes(files[0], safetensors.torch.save(state, metadata=meta))
    for token, vectors in tokens:
        emb = ({"emb_params": vectors[token][None]} if base.kind == "sd" else
               {key: vectors[key][None] for key in ("clip_l", "clip_g")})
        files.append(f"{DIR}/embeddings/{embedding_stem(run_name, token)}.safetensors")
        out.bytes(files[-1], safetensors.torch.save({k: v.contiguous() for k, v in emb.items()}))
    return files
