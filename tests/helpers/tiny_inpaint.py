"""Tiny, randomly initialised inpainting pipelines built from configs and saved with ``save_pretrained``,
so tests load them through the same ``from_pretrained`` path a user's hub model takes."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from tests.helpers.clip_tokenizer import build_clip_tokenizer
from tests.helpers.needs import SHARED

BPE = SHARED / "tokenizers" / "bpe_simple_vocab_16e6.txt.gz"


@lru_cache(maxsize=None)
def clip_tokenizer(folder: Path, bpe: Path = BPE):
    """The real CLIP BPE tokenizer (49,408 tokens) written from open_clip's merges file, offline;
    a tiny byte-level vocabulary when the shared file is absent. Built once per folder."""
    from transformers import CLIPTokenizer

    build_clip_tokenizer(bpe, folder)
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    return tok


def _text_encoder(tok, cls_name: str, hidden: int = 32):
    import transformers

    cfg = transformers.CLIPTextConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        projection_dim=32, max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return getattr(transformers, cls_name)(cfg).eval()


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=[8, 16], in_channels=3, out_channels=3, layers_per_block=1,
                         down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                         latent_channels=4, sample_size=64, norm_num_groups=8)


def _unet(in_channels: int, cross: int, **extra):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=32, in_channels=in_channels, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), cross_attention_dim=cross, norm_num_groups=8, **extra)


def _scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  steps_offset=1, timestep_spacing="leading")


def make_sdxl_inpaint(folder: Path, tok_dir: Path, seed: int = 0) -> Path:
    """SD-XL inpainting layout: 9-channel UNet with text-time embedding, two CLIP text encoders."""
    from diffusers import StableDiffusionXLInpaintPipeline

    torch.manual_seed(seed)
    tok = clip_tokenizer(tok_dir)
    te1 = _text_encoder(tok, "CLIPTextModel")
    te2 = _text_encoder(tok, "CLIPTextModelWithProjection")
    # text-time embedding input = 6 time ids x addition_time_embed_dim + text_encoder_2's projection (32)
    unet = _unet(9, 64, addition_embed_type="text_time", addition_time_embed_dim=8,
                 projection_class_embeddings_input_dim=6 * 8 + 32, use_linear_projection=True,
                 transformer_layers_per_block=(1, 2))
    pipe = StableDiffusionXLInpaintPipeline(vae=_vae(), text_encoder=te1, text_encoder_2=te2, tokenizer=tok,
                                            tokenizer_2=tok, unet=unet, scheduler=_scheduler(),
                                            requires_aesthetics_score=False)
    pipe.save_pretrained(folder)
    return folder


def make_sdxl_refiner(folder: Path, tok_dir: Path, seed: int = 1) -> Path:
    """SD-XL refiner layout (StableDiffusionXLImg2ImgPipeline): 4-channel UNet conditioned on
    text_encoder_2 only, aesthetic-score time ids (5 of them)."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    torch.manual_seed(seed)
    tok = clip_tokenizer(tok_dir)
    te2 = _text_encoder(tok, "CLIPTextModelWithProjection")
    unet = _unet(4, 32, addition_embed_type="text_time", addition_time_embed_dim=8,
                 projection_class_embeddings_input_dim=5 * 8 + 32, use_linear_projection=True,
                 transformer_layers_per_block=(1, 2))
    pipe = StableDiffusionXLImg2ImgPipeline(vae=_vae(), text_encoder=None, text_encoder_2=te2, tokenizer=None,
                                            tokenizer_2=tok, unet=unet, scheduler=_scheduler(),
                                            requires_aesthetics_score=True)
    pipe.save_pretrained(folder)
    return folder


def make_sd15_inpaint(folder: Path, tok_dir: Path, seed: int = 2) -> Path:
    """SD-1.5 inpainting layout: 9-channel UNet, one CLIP text encoder, no safety checker."""
    from diffusers import PNDMScheduler, StableDiffusionInpaintPipeline

    torch.manual_seed(seed)
    tok = clip_tokenizer(tok_dir)
    pipe = StableDiffusionInpaintPipeline(
        vae=_vae(), text_encoder=_text_encoder(tok, "CLIPTextModel"), tokenizer=tok, unet=_unet(9, 32),
        scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def make_unet_lora(folder: Path, pipeline_dir: Path, rank: int = 4, seed: int = 3) -> Path:
    """A LoRA for the tiny SD-XL UNet in the layout diffusers' training scripts save (what LCM-LoRA and
    SDXL-Lightning ship); random B matrices so loading it visibly changes the model."""
    from diffusers import StableDiffusionXLInpaintPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(pipeline_dir / "unet")
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionXLInpaintPipeline.save_lora_weights(folder, unet_lora_layers=layers)
    return folder
