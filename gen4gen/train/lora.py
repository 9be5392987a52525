"""LoRA (peft) on the UNet's attention projections, with the new token rows: the base weights stay frozen,
only the low-rank adapters and the token rows train. Saved as diffusers saves LoRAs
(``pytorch_lora_weights.safetensors``, ``unet.``-prefixed keys, the adapter config as metadata), so
``pipe.load_lora_weights(run_dir)`` reads it."""
from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import Field
from pydantic.dataclasses import dataclass

WEIGHTS = "pytorch_lora_weights.safetensors"


@dataclass
class Lora:
    """``trainer=lora``: rank, alpha and the attention projections adapted (conf/trainer/lora.yaml), validated
    when Hydra builds it (a pydantic dataclass: ``trainer.rank=abc`` is one line naming ``rank``)."""
    name: str
    rank: int = Field(ge=1)
    alpha: float = Field(gt=0)
    targets: list[str] = Field(min_length=1)

    def trainable(self, unet) -> dict:
        from peft import LoraConfig

        # B starts at zero: the adapted UNet computes exactly the base model until the first step
        unet.add_adapter(LoraConfig(r=self.rank, lora_alpha=self.alpha, init_lora_weights="gaussian",
                                    target_modules=self.targets))
        params = {n: p for n, p in unet.named_parameters() if "lora_" in n}
        for p in params.values():
            p.requires_grad_(True)
        return params

    def save(self, unet, out) -> list[str]:
        """Write the weights through ``out`` (the runner's ItemWriter: ``bytes(name, data)``); the file names."""
        from diffusers import StableDiffusionPipeline
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
        layers = {k: v.detach().float().cpu().contiguous() for k, v in layers.items()}
        meta = unet.peft_config["default"].to_dict()
        # diffusers writes a file of its own: write it into a temporary folder, then through ``out``
        with tempfile.TemporaryDirectory(dir=out.dir) as tmp:
            StableDiffusionPipeline.save_lora_weights(tmp, unet_lora_layers=layers, weight_name=WEIGHTS,
                                                      safe_serialization=True, unet_lora_adapter_metadata=meta)
            out.bytes(WEIGHTS, (Path(tmp) / WEIGHTS).read_bytes())
        return [WEIGHTS]


