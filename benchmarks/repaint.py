"""Repainting (s3) benchmark.

    python benchmarks/repaint.py                       # CPU: classical backend throughput at 1024²
    python benchmarks/repaint.py --device cuda         # + SD-XL inpainting, Gen4Gen's settings vs ours
    python benchmarks/repaint.py --device cpu --tiny   # smoke run of the diffusion part with tiny models

The GPU part builds full-size SD-XL inpainting (UNet, VAE, both text encoders) and the SD-XL refiner
with random weights from the published configs below: speed does not depend on weight values, and no
download is needed. It times seconds per 1024² image for
  (a) Gen4Gen's settings: fp16, batch 1, 60 steps, strength 0.9, guidance 6, the refiner run again on
      the decoded images with denoising_start=0.75 (their s3_background_repainting.py), and
  (b) our backend at the same steps (batched, latents handed to the refiner, fused QKV, channels_last,
      no fp32 VAE upcast as with the fp16-fix VAE) and at few steps (Lightning-style: Euler trailing,
      8 steps, no CFG; a fused few-step LoRA costs nothing per step),
and prints the ratios side by side.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gen4gen.repaint import RepaintJob  # noqa: E402
from gen4gen.repaint.backgrounds import procedural  # noqa: E402
from gen4gen.repaint.classical import ClassicalInpainter  # noqa: E402
from gen4gen.repaint.mask import repaint_mask  # noqa: E402
from tests.helpers.settings import backend  # noqa: E402

COMPOSITIONS = Path(os.environ.get("GEN4GEN_SHARED_DATA", ROOT.parent / "shared" / "data")) / "compositions" / "gen4gen"
PROMPT = "a realistic photo of a cat and a lion in the garden"
NEGATIVE = "cartoon, drawing, low quality, blurry, deformed"

# ---------------------------------------------------------------- published SD-XL configs (diffusers format)
SDXL_INPAINT_UNET = dict(  # diffusers/stable-diffusion-xl-1.0-inpainting-0.1 unet/config.json
    sample_size=128, in_channels=9, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32)
SDXL_REFINER_UNET = dict(  # stabilityai/stable-diffusion-xl-refiner-1.0 unet/config.json
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(384, 768, 1536, 1536),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=4, attention_head_dim=(6, 12, 24, 24), cross_attention_dim=1280,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2560, norm_num_groups=32)
SDXL_VAE = dict(  # SD-XL vae/config.json
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=1024,
    scaling_factor=0.13025, force_upcast=True, norm_num_groups=32)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,  # text_encoder
              projection_dim=768, hidden_act="quick_gelu", vocab_size=49408, max_position_embeddings=77)
CLIP_BIGG = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,  # _2
                 projection_dim=1280, hidden_act="gelu", vocab_size=49408, max_position_embeddings=77)
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                 timestep_spacing="leading", num_train_timesteps=1000, prediction_type="epsilon")


def tiny(cfg: dict, **over) -> dict:
    """The same architecture shrunk for a CPU smoke run."""
    return {**cfg, **over}


TINY = {
    "unet": tiny(SDXL_INPAINT_UNET, block_out_channels=(16, 32), layers_per_block=1,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2),
                 attention_head_dim=(2, 4), cross_attention_dim=64, addition_time_embed_dim=8,
                 projection_class_embeddings_input_dim=6 * 8 + 32, norm_num_groups=8),
    "refiner": tiny(SDXL_REFINER_UNET, block_out_channels=(16, 32), layers_per_block=1,
                    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=1,
                    attention_head_dim=(2, 4), cross_attention_dim=32, addition_time_embed_dim=8,
                    projection_class_embeddings_input_dim=5 * 8 + 32, norm_num_groups=8),
    "vae": tiny(SDXL_VAE, block_out_channels=(8, 16), layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8),
    "te1": tiny(CLIP_L, hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                projection_dim=32),
    "te2": tiny(CLIP_BIGG, hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                projection_dim=32),
}
FULL = {"unet": SDXL_INPAINT_UNET, "refiner": SDXL_REFINER_UNET, "vae": SDXL_VAE, "te1": CLIP_L, "te2": CLIP_BIGG}


# ---------------------------------------------------------------- inputs
def compositions(n: int, size: int = 1024) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rgb, mask) pairs: Gen4Gen's own stage-2 outputs when the shared data is there, else synthetic."""
    from gen4gen.images import read_image

    pairs = []
    if COMPOSITIONS.is_dir():
        for img in sorted(COMPOSITIONS.glob("*_img_*.png")):
            mask = img.with_name(img.name.replace("_img_", "_mask_"))
            pairs.append((read_image(img), read_image(mask, mode="L")))
    if not pairs:
        from tests.helpers.tree import blob

        rng = np.random.default_rng(0)
        for k in range(3):
            a = np.maximum(blob(size, size, (100 + 40 * k, 300, 350, 600)), blob(size, size, (560, 250, 380, 700)))
            rgb = np.clip(rng.normal(140, 40, (size, size, 3)), 0, 255).astype(np.uint8)
            pairs.append((rgb, (a * 255).astype(np.uint8)))
    pairs = [(cv_resize(r, size), cv_resize(m, size)) for r, m in pairs]
    return [pairs[k % len(pairs)] for k in range(n)]


def cv_resize(a: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return a if a.shape[0] == size and a.shape[1] == size else cv2.resize(a, (size, size), interpolation=cv2.INTER_AREA)


def make_jobs(n: int, size: int) -> list[RepaintJob]:
    jobs = []
    for k, (rgb, mask) in enumerate(compositions(n, size)):
        bg = procedural("garden", size, size, np.random.default_rng(k))
        jobs.append(RepaintJob(rgb, mask / 255.0, repaint_mask(mask, blur=10), bg, PROMPT, NEGATIVE, seed=k))
    return jobs


# ---------------------------------------------------------------- CPU: classical
def bench_classical(n: int) -> list[tuple[str, str]]:
    pairs = compositions(n)
    rows = []

    def one(k: int, inpainter: ClassicalInpainter) -> None:
        rgb, mask = pairs[k]
        bg = procedural("garden", 1024, 1024, np.random.default_rng(k))
        inpainter([RepaintJob(rgb, mask / 255.0, repaint_mask(mask, blur=10), bg)])

    for label, inp, workers in (("classical (default), 1 thread", backend("inpainter", "classical"), 1),
                                ("classical (default), 2 threads", backend("inpainter", "classical"), 2),
                                ("classical + Poisson blending, 1 thread", backend("inpainter", "classical", poisson=True), 1)):
        one(0, inp)  # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda k: one(k, inp), range(n)))
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        # CPU seconds per image as well: on a shared machine wall time mostly measures the neighbours
        rows.append((label, f"{n / dt:.2f} img/s wall ({1000 * dt / n:.0f} ms/img), {1000 * cpu / n:.0f} ms CPU/img"))
    # where the time goes (1 thread, CPU time)
    rgb, mask = pairs[0]
    rep = repaint_mask(mask, blur=10)
    bg = procedural("garden", 1024, 1024, np.random.default_rng(0))
    parts = {"mask preparation": lambda k: repaint_mask(mask, blur=10),
             "procedural background": lambda k: procedural("garden", 1024, 1024, np.random.default_rng(k)),
             "classical compositing": lambda k: backend("inpainter", "classical")([RepaintJob(rgb, mask / 255.0, rep, bg)])}
    for name, fn in parts.items():
        c0 = time.process_time()
        for k in range(5):
            fn(k)
        rows.append((f"  {name}", f"{1000 * (time.process_time() - c0) / 5:.0f} ms CPU"))
    return rows


# ---------------------------------------------------------------- GPU: SD-XL inpainting
def build_sdxl(cfgs: dict, device: str, dtype):
    """Base inpainting pipeline + refiner (sharing text_encoder_2 and the VAE), random weights."""
    import torch
    import transformers
    from diffusers import (AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLInpaintPipeline,
                           UNet2DConditionModel)

    from tests.helpers.tiny_inpaint import clip_tokenizer

    tok = clip_tokenizer(Path(os.environ.get("TMPDIR", "/tmp")) / "gen4gen_bench_tokenizer")
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    with torch.device(device):
        te1 = transformers.CLIPTextModel(transformers.CLIPTextConfig(**cfgs["te1"], **ids))
        te2 = transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(**cfgs["te2"], **ids))
        unet = UNet2DConditionModel(**cfgs["unet"])
        ref_unet = UNet2DConditionModel(**cfgs["refiner"])
        vae = AutoencoderKL(**cfgs["vae"])
    mods = [m.to(dtype).eval() for m in (te1, te2, unet, ref_unet, vae)]
    te1, te2, unet, ref_unet, vae = mods
    base = StableDiffusionXLInpaintPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok,
                                            tokenizer_2=tok, unet=unet, scheduler=EulerDiscreteScheduler(**SCHEDULER),
                                            requires_aesthetics_score=False)
    refiner = StableDiffusionXLInpaintPipeline(vae=vae, text_encoder=None, text_encoder_2=te2, tokenizer=None,
                                               tokenizer_2=tok, unet=ref_unet,
                                               scheduler=EulerDiscreteScheduler(**SCHEDULER),
                                               requires_aesthetics_score=True)
    for p in (base, refiner):
        p.set_progress_bar_config(disable=True)
    return base, refiner


def gen4gen_baseline(base, refiner, jobs, steps: int, size: int) -> float:
    """Gen4Gen's loop: one image per call, the refiner re-encodes the decoded base images."""
    from PIL import Image

    from gen4gen.repaint.diffusion import initial_image

    t0 = time.perf_counter()
    for job in jobs:
        image = Image.fromarray(initial_image(job))
        mask = Image.fromarray((job.repaint * 255).astype(np.uint8))
        kw = dict(prompt=[job.prompt], negative_prompt=[job.negative_prompt], mask_image=mask, guidance_scale=6.0,
                  num_inference_steps=steps, strength=0.9, height=size, width=size)
        images = base(image=image, **kw).images
        refiner(image=images, denoising_start=0.75, **kw)
    _sync()
    return (time.perf_counter() - t0) / len(jobs)


def ours(backend, jobs) -> float:
    t0 = time.perf_counter()
    backend(jobs)
    _sync()
    return (time.perf_counter() - t0) / len(jobs)


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_diffusion(device: str, tiny_models: bool, images: int, batch: int, steps: int, few_steps: int,
                    compile_unet: bool) -> list[tuple[str, str]]:
    import torch

    from gen4gen.pipelines import quiet_diffusers

    quiet_diffusers()
    size = 64 if tiny_models else 1024
    dtype = torch.float32 if device == "cpu" else torch.float16
    t0 = time.perf_counter()
    base, refiner = build_sdxl(TINY if tiny_models else FULL, device, dtype)
    base.to(device)
    refiner.to(device)
    print(f"built random-weight SD-XL inpainting + refiner in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    jobs = make_jobs(images, size)
    rows = []
    # (a) baseline first: the pipelines are still as diffusers builds them
    gen4gen_baseline(base, refiner, jobs[:1], steps, size)  # warm-up
    t_base = gen4gen_baseline(base, refiner, jobs[:max(1, images // 2)], steps, size)
    rows.append((f"Gen4Gen settings: batch 1, {steps} steps, strength 0.9, refiner re-encodes", t_base))
    # (b) ours, same steps: batches, latents handed to the refiner, fused QKV, channels_last, no VAE upcast
    same = backend("inpainter", "sdxl", model="<random weights>", device=device, dtype=str(dtype).split(".")[-1],
                              steps=steps, guidance=6.0, strength=0.9, batch_size=batch, resolution=None,
                              refiner="<random weights>", refiner_split=0.75, vae_upcast=False,
                              compile=compile_unet)
    same.use_pipelines(base, refiner)
    ours(same, jobs[:batch])  # warm-up (and compilation)
    rows.append((f"ours: batch {batch}, {steps} steps, latent hand-off to the refiner", ours(same, jobs)))
    few = backend("inpainter", "sdxl", model="<random weights>", device=device, dtype=str(dtype).split(".")[-1],
                             steps=few_steps, guidance=0.0, strength=0.9, batch_size=batch, resolution=None,
                             scheduler="euler_trailing", vae_upcast=False)
    few.use_pipelines(base)
    ours(few, jobs[:batch])
    rows.append((f"ours: batch {batch}, {few_steps} steps (few-step LoRA + Euler trailing, no CFG), no refiner",
                 ours(few, jobs)))
    return [(label, f"{t:.3f} s/img, {t_base / t:.2f}x") for label, t in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu: classical only unless --tiny; cuda: also SD-XL timings")
    ap.add_argument("--images", type=int, default=12, help="images per CPU measurement")
    ap.add_argument("--gpu-images", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=60, help="Gen4Gen's steps")
    ap.add_argument("--few-steps", type=int, default=8)
    ap.add_argument("--compile", action="store_true", help="also torch.compile the UNet (long first batch)")
    ap.add_argument("--tiny", action="store_true", help="diffusion part with tiny models (a smoke run on the CPU)")
    args = ap.parse_args()

    rows = [("## classical (CPU, 1024²)", "")] + bench_classical(args.images)
    if args.device != "cpu" or args.tiny:
        steps = 4 if args.tiny else args.steps
        what = "64² tiny models" if args.tiny else "1024², random weights"
        rows += [(f"## SD-XL inpainting ({args.device}, {what})", "s/img, speed-up vs Gen4Gen")]
        rows += bench_diffusion(args.device, args.tiny, 4 if args.tiny else args.gpu_images,
                                2 if args.tiny else args.batch, steps, 2 if args.tiny else args.few_steps,
                                args.compile)
    width = max(len(r[0]) for r in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


if __name__ == "__main__":
    main()
