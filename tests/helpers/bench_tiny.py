"""Tiny randomly initialised models for the bench tests, saved with ``save_pretrained`` so the code under
test loads them through the same ``from_pretrained`` calls a user's real checkpoints go through."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from tests.helpers.clip_tokenizer import build_clip_tokenizer

BPE = "tokenizers/bpe_simple_vocab_16e6.txt.gz"


N_MERGES = 2000  # of 48,894: a 2,514-token vocabulary
VOCAB = 2 * 256 + N_MERGES + 2
BOS, EOS = VOCAB - 2, VOCAB - 1


@lru_cache(maxsize=None)
def clip_tokenizer(bpe_gz: str, cache_dir: str):
    from transformers import CLIPTokenizer

    folder = build_clip_tokenizer(Path(bpe_gz), Path(cache_dir) / "clip_tokenizer", N_MERGES)
    tok = CLIPTokenizer.from_pretrained(str(folder), model_max_length=77)
    assert (len(tok), tok.bos_token_id, tok.eos_token_id) == (VOCAB, BOS, EOS)
    return tok


def _text_config(**kw):
    from transformers import CLIPTextConfig

    base = dict(bos_token_id=BOS, eos_token_id=EOS, pad_token_id=EOS, hidden_size=32, intermediate_size=37,
                layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=2, vocab_size=VOCAB,
                max_position_embeddings=77, hidden_act="gelu", projection_dim=32)
    base.update(kw)
    return CLIPTextConfig(**base)


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=[8, 16], in_channels=3, out_channels=3, norm_num_groups=8,
                         down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                         latent_channels=4, sample_size=32)


def save_tiny_sd(out: Path, tokenizer) -> Path:
    """A StableDiffusionPipeline: tiny UNet / VAE / CLIP text encoder, PNDM-free Euler scheduler."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=2, norm_num_groups=4)
    pipe = StableDiffusionPipeline(unet=unet, vae=_vae(), text_encoder=CLIPTextModel(_text_config()),
                                   tokenizer=tokenizer, scheduler=EulerDiscreteScheduler(steps_offset=1), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out)
    return out


def save_tiny_sdxl(out: Path, tokenizer) -> Path:
    """A StableDiffusionXLPipeline: two text encoders (the second with projection), text_time conditioning."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(1)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                                use_linear_projection=True, addition_embed_type="text_time",
                                addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
                                projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64,
                                norm_num_groups=4)
    pipe = StableDiffusionXLPipeline(unet=unet, vae=_vae(), text_encoder=CLIPTextModel(_text_config()),
                                     text_encoder_2=CLIPTextModelWithProjection(_text_config()), tokenizer=tokenizer,
                                     tokenizer_2=tokenizer, scheduler=EulerDiscreteScheduler(steps_offset=1, timestep_spacing="trailing"))
    pipe.save_pretrained(out)
    return out


def save_tiny_clip(out: Path, tokenizer, image_size: int = 32) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(2)
    vision = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                  image_size=image_size, patch_size=8, projection_dim=32)
    cfg = CLIPConfig(text_config=_text_config().to_dict(), vision_config=vision, projection_dim=32)
    CLIPModel(cfg).eval().save_pretrained(out)
    proc = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": image_size},
                                                            crop_size={"height": image_size, "width": image_size}),
                         tokenizer=tokenizer)
    proc.save_pretrained(out)
    return out


def save_tiny_dino(out: Path, image_size: int = 32) -> Path:
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(3)
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                       image_size=image_size, patch_size=8), add_pooling_layer=False).eval().save_pretrained(out)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(out)
    return out


def save_tiny_owlvit(out: Path, tokenizer, image_size: int = 32) -> Path:
    import torch
    from transformers import OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessor, OwlViTProcessor

    torch.manual_seed(4)
    vision = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                  image_size=image_size, patch_size=8)
    text = _text_config(max_position_embeddings=16).to_dict()
    cfg = OwlViTConfig(text_config=text, vision_config=vision, projection_dim=32)
    OwlViTForObjectDetection(cfg).eval().save_pretrained(out)
    proc = OwlViTProcessor(image_processor=OwlViTImageProcessor(size={"height": image_size, "width": image_size},
                                                                crop_size={"height": image_size, "width": image_size}),
                           tokenizer=tokenizer)
    proc.tokenizer.model_max_length = 16
    proc.save_pretrained(out)
    return out


def save_tiny_lora(pipeline_dir: Path, out: Path, rank: int = 4) -> Path:
    """A LoRA for the tiny SD UNet (random, non-zero up-projections so it changes the images), saved in the
    diffusers LoRA format that ``load_lora_weights`` reads."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(5)
    unet = UNet2DConditionModel.from_pretrained(pipeline_dir, subfolder="unet")
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(out, unet_lora_layers=layers, safe_serialization=True)
    return out
