"""Custom Diffusion (Kumari et al., CVPR'23): the key and value projections of every cross-attention layer
(``attn2.to_k`` / ``attn2.to_v``, the only weights that read the text) and the new token rows train; every
other weight stays frozen.

The projections train in place (plain ``attn2.to_k``, SDPA attention, nothing wrapped), and are saved in the
file diffusers' ``train_custom_diffusion.py`` writes: ``pytorch_custom_diffusion_weights.safetensors`` (and
``.bin``) with ``<layer>.processor.to_{k,v}_custom_diffusion.weight`` keys, plus one embedding file per token.
"""
from __future__ import annotations

from dataclasses import dataclass

from gen4gen.train.checkpoints import torch_bytes

WEIGHTS = "pytorch_custom_diffusion_weights"
KV = ("to_k", "to_v")


def cross_attention_kv(unet) -> dict:
    """``{parameter name: parameter}`` of the cross-attention key/value projections."""
    return {n: p for n, p in unet.named_parameters()
            if ".attn2." in n and n.rsplit(".", 2)[-2] in KV}


@dataclass
class CustomDiffusion:
    """``trainer=custom_diffusion``: what trains is fixed by the method; ``train.lr`` etc. are shared."""
    name: str

    def trainable(self, unet) -> dict:
        params = cross_attention_kv(unet)
        if not params:
            raise ValueError("the UNet has no cross-attention key/value projections (attn2.to_k / attn2.to_v)")
        for p in params.values():
            p.requires_grad_(True)
        return params

    def state_dict(self, unet) -> dict:
        """In diffusers' Custom Diffusion layout: one entry per attention processor, tensors for the cross
        attentions; self attentions get an empty dict (``.bin`` only: safetensors holds tensors only, which
        is why diffusers' own ``load_attn_procs`` cannot reload its safetensors file, see personalize.py)."""
        out: dict = {}
        for name in unet.attn_processors:  # "down_blocks.1.attentions.0.transformer_blocks.0.attn2.processor"
            layer = name[: -len(".processor")]
            if layer.endswith(".attn2"):
                attn = unet.get_submodule(layer)
                for kv in KV:
                    out[f"{name}.{kv}_custom_diffusion.weight"] = getattr(attn, kv).weight.detach().float().cpu().contiguous()
            else:
                out[name] = {}
        return out

    def save(self, unet, out) -> list[str]:
        """Write the weights through ``out`` (the runner's ItemWriter: ``bytes(name, data)``); the file names."""
        import safetensors.torch
        import torch

        state = self.state_dict(unet)
        tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        out.bytes(f"{WEIGHTS}.safetensors", safetensors.torch.save(tensors, metadata={"format": "pt"}))
        out.bytes(f"{WEIGHTS}.bin", torch_bytes(state))
        return [f"{WEIGHTS}.safetensors", f"{WEIGHTS}.bin"]
