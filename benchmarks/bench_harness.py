"""Generation benchmark (bench): harness overhead, few-step latency, metric throughput.

    python benchmarks/bench_harness.py                 # CPU: harness vs bare loop on a small UNet, metric throughput
    python benchmarks/bench_harness.py --device cuda   # GPU: the same at SD scale + few-step latency at 512^2 / 1024^2

1. Harness vs bare diffusers loop: the same pipeline, prompts, seeds and batch size; the bare loop only calls
   ``pipe(...)``, the harness (``gen4gen.bench.generate.generate``) also writes each PNG + record atomically and
   measures memory. Overhead = bare images/s / harness images/s - 1 (target <= 10%).
2. (CUDA only) few-step latency with random weights built from the published architectures (SD 2.1 UNet/VAE/
   OpenCLIP-H text for SD-Turbo; SDXL for SDXL-Turbo / SDXL-Lightning / LCM-LoRA SDXL): seconds per image at
   512^2 and 1024^2 with each model's steps and CFG (speed does not depend on weight values).
3. Metric throughput (images/s): CLIP image+text, DINO, OWL-ViT detection + crops, with random-weight
   backbones of the published ViT-B/32 CLIP, ViT-S/16 DINO and OWL-ViT B/32 shapes (CPU) or the defaults' shapes.

Needs the CLIP BPE file (``$GEN4GEN_SHARED_DATA/tokenizers/bpe_simple_vocab_16e6.txt.gz``) to build tokenizers.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = Path(os.environ.get("GEN4GEN_SHARED_DATA", ROOT / ".." / "shared" / "data"))


def _tokenizer(tmp: Path, n_merges: int):
    from tests.helpers.clip_tokenizer import build_clip_tokenizer
    from transformers import CLIPTokenizer

    folder = build_clip_tokenizer(SHARED / "tokenizers" / "bpe_simple_vocab_16e6.txt.gz", tmp / f"tok{n_merges}",
                                  n_merges)
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=77)


# ---------------------------------------------------------------- pipelines from published configs
def _text(tok, hidden, layers, heads, inter, proj=None, act="quick_gelu"):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         intermediate_size=inter, projection_dim=proj or hidden, hidden_act=act,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    return CLIPTextModelWithProjection(cfg) if proj else CLIPTextModel(cfg)


def _sd_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[128, 256, 512, 512],
                         layers_per_block=2, down_block_types=["DownEncoderBlock2D"] * 4,
                         up_block_types=["UpDecoderBlock2D"] * 4, sample_size=512)


def sd21_pipeline(tok):
    """stabilityai/stable-diffusion-2-1(-base) = SD-Turbo's architecture."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel

    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20],
                                use_linear_projection=True, block_out_channels=[320, 640, 1280, 1280])
    return StableDiffusionPipeline(unet=unet, vae=_sd_vae(), text_encoder=_text(tok, 1024, 23, 16, 4096, act="gelu"),
                                   tokenizer=tok, scheduler=EulerDiscreteScheduler(timestep_spacing="trailing"),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def sdxl_pipeline(tok):
    """stabilityai/stable-diffusion-xl-base-1.0 = SDXL-Turbo / SDXL-Lightning / LCM-LoRA SDXL architecture."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=128, cross_attention_dim=2048, attention_head_dim=[5, 10, 20], use_linear_projection=True,
        block_out_channels=[320, 640, 1280], down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], transformer_layers_per_block=[1, 2, 10],
        addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)
    return StableDiffusionXLPipeline(
        unet=unet, vae=_sd_vae(), text_encoder=_text(tok, 768, 12, 12, 3072),
        text_encoder_2=_text(tok, 1280, 32, 20, 5120, proj=1280, act="gelu"), tokenizer=tok, tokenizer_2=tok,
        scheduler=EulerDiscreteScheduler(timestep_spacing="trailing"))


def small_pipeline(tok):
    """CPU stand-in: an SD-shaped pipeline small enough for a 2-core machine."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel

    unet = UNet2DConditionModel(block_out_channels=(32, 64, 64), layers_per_block=1, sample_size=32,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                                cross_attention_dim=64, attention_head_dim=4, norm_num_groups=8)
    vae = AutoencoderKL(block_out_channels=[16, 32, 32], down_block_types=["DownEncoderBlock2D"] * 3,
                        up_block_types=["UpDecoderBlock2D"] * 3, latent_channels=4, norm_num_groups=8)
    return StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=_text(tok, 64, 2, 4, 128, act="gelu"),
                                   tokenizer=tok, scheduler=EulerDiscreteScheduler(steps_offset=1),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


# ---------------------------------------------------------------- 1. harness vs bare loop
def harness_vs_bare(pipe_dir: Path, device: str, n_prompts: int, seeds: list[int], steps: int, res: int,
                    batch: int, repeats: int, dtype: str) -> dict:
    """Steady state after one warm-up call in both (the harness's own warm-up is a once-per-model cost);
    wall time and this process's CPU time, medians over ``repeats``, the two orders alternating."""
    import torch
    from hydra import compose, initialize_config_dir

    import gen4gen.bench.generate as G
    from gen4gen.__main__ import conf_dir
    from gen4gen.artefacts import Roster
    from gen4gen.bench.prompts import load_drawbench
    from gen4gen.settings import BenchSettings, section

    prompts = load_drawbench("drawbench", SHARED / "prompts" / "DrawBench.csv")[:n_prompts]
    entry = Roster.model_validate({"models": [{"name": "m", "source": str(pipe_dir), "steps": steps,
                                               "guidance": 0.0, "resolution": res, "dtype": dtype}]}).models[0]

    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):  # the app's config, as a run reads it
        cfg = compose(config_name="config", overrides=[
            f"bench.seeds=[{','.join(map(str, seeds))}]", "bench.prompt_seeds=false", "bench.use_prompt_size=false",
            f"bench.batch_size={batch}", "bench.warmup=true", "bench.safety_checker=false", "bench.force_cpu=true"])
    bench = section(cfg, "bench", BenchSettings)
    n = len(prompts) * len(seeds)

    def now():
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter(), time.process_time()

    def bare():
        pipe = G.load_pipeline(entry, device)
        jobs = [(p.text, s) for p in prompts for s in seeds]
        call = dict(num_inference_steps=steps, guidance_scale=0.0, width=res, height=res)
        pipe(prompt=[t for t, _ in jobs[:batch]], **{**call, "num_inference_steps": 1})  # warm-up
        t0 = now()
        for i in range(0, n, batch):
            chunk = jobs[i:i + batch]
            pipe(prompt=[t for t, _ in chunk], generator=[torch.Generator("cpu").manual_seed(s) for _, s in chunk], **call)
        t1 = now()
        return n / (t1[0] - t0[0]), n / (t1[1] - t0[1])

    def harness():
        # the clock runs from the end of the warm-up call to the stage's finish, when every image and record is on
        # disk (the runner's writers are done); the once-per-model costs (load, warm-up, freeing the model) are
        # left out, as for the bare loop
        from gen4gen.stages.bench import generate

        real_call, real_release, marks, last = G._call, G.Generator.release, [], []

        def marked(*a, **k):
            out = real_call(*a, **k)
            if not marks:
                marks.append(now())
            return out

        def released(self):  # before the first load too; the last call is the stage's finish
            last[:] = [now()]
            real_release(self)

        G._call, G.Generator.release = marked, released
        try:
            with tempfile.TemporaryDirectory() as run:
                result = generate(G.plan_jobs([entry], prompts, Path(run), bench), Path(run), device, cfg, bench)
        finally:
            G._call, G.Generator.release = real_call, real_release
        assert result.done == n, result.failures
        return n / (last[0][0] - marks[0][0]), n / (last[0][1] - marks[0][1])

    got = {"bare": [], "harness": []}
    for r in range(repeats):
        for name in (("bare", "harness") if r % 2 == 0 else ("harness", "bare")):
            got[name].append(bare() if name == "bare" else harness())
    med = {k: (statistics.median(v[0] for v in vs), statistics.median(v[1] for v in vs)) for k, vs in got.items()}
    return {"images": n, "bare_ips": med["bare"][0], "harness_ips": med["harness"][0],
            "overhead": med["bare"][0] / med["harness"][0] - 1, "bare_cpu_ips": med["bare"][1],
            "harness_cpu_ips": med["harness"][1], "overhead_cpu": med["bare"][1] / med["harness"][1] - 1}


# ---------------------------------------------------------------- 2. few-step latency (GPU)
FEWSTEP = [("sd-turbo", "sd21", 1, 0.0), ("sdxl-turbo", "sdxl", 1, 0.0), ("sdxl-lightning-4step", "sdxl", 4, 0.0),
           ("lcm-lora-sdxl (fused)", "sdxl", 4, 1.0)]


def fewstep_latency(tok, device: str, repeats: int = 5) -> list[dict]:
    import torch

    rows = []
    builders = {"sd21": sd21_pipeline, "sdxl": sdxl_pipeline}
    for arch in ("sd21", "sdxl"):
        pipe = builders[arch](tok).to(device, torch.float16)
        pipe.set_progress_bar_config(disable=True)
        for name, a, steps, cfg in FEWSTEP:
            if a != arch:
                continue
            for res in (512, 1024):
                kw = dict(prompt=["a photo of a cat on a sofa"], num_inference_steps=steps, guidance_scale=cfg,
                          width=res, height=res, generator=torch.Generator("cpu").manual_seed(0))
                pipe(**kw)  # warm-up
                times = []
                for _ in range(repeats):
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    t0 = time.perf_counter()
                    pipe(**kw)
                    torch.cuda.synchronize()
                    times.append(time.perf_counter() - t0)
                rows.append({"model": name, "res": res, "steps": steps, "seconds": statistics.median(times),
                             "peak_gb": torch.cuda.max_memory_allocated() / 2 ** 30})
        del pipe
        torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------- 3. metric throughput
def metric_throughput(tmp: Path, tok, device: str, n_images: int, size: str) -> list[dict]:
    import numpy as np
    import torch
    from PIL import Image
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, OwlViTConfig,
                              OwlViTForObjectDetection, OwlViTImageProcessor, OwlViTProcessor, ViTConfig,
                              ViTImageProcessor, ViTModel)

    from gen4gen.bench.metrics import Clip, Detector, Dino

    torch.manual_seed(0)
    text = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.eos_token_id)
    if size == "published":  # ViT-B/32 CLIP, ViT-S/16 DINO, OWL-ViT B/32 shapes
        cv, ct = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                      image_size=224, patch_size=32), dict(hidden_size=512, num_hidden_layers=12,
                                                           num_attention_heads=8, intermediate_size=2048, **text)
        dv = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                  image_size=224, patch_size=16)
        ov = dict(cv, image_size=768)
        px, opx, proj = 224, 768, 512
    else:  # tiny: what the tests use
        cv = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=32,
                  patch_size=8)
        ct = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, **text)
        dv, ov, px, opx, proj = cv, cv, 32, 32, 32
    CLIPModel(CLIPConfig(text_config=ct, vision_config=cv, projection_dim=proj)).save_pretrained(tmp / "clip")
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": px}, crop_size={"height": px, "width": px}),
                  tokenizer=tok).save_pretrained(tmp / "clip")
    ViTModel(ViTConfig(**dv), add_pooling_layer=False).save_pretrained(tmp / "dino")
    ViTImageProcessor(size={"height": px, "width": px}).save_pretrained(tmp / "dino")
    OwlViTForObjectDetection(OwlViTConfig(text_config={**ct, "max_position_embeddings": 16}, vision_config=ov,
                                          projection_dim=proj)).save_pretrained(tmp / "owl")
    op = OwlViTProcessor(image_processor=OwlViTImageProcessor(size={"height": opx, "width": opx},
                                                              crop_size={"height": opx, "width": opx}), tokenizer=tok)
    op.tokenizer.model_max_length = 16
    op.save_pretrained(tmp / "owl")

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)) for _ in range(n_images)]
    texts = [f"a photo of a cat and a dog number {i} in the garden" for i in range(n_images)]
    rows = []

    def timeit(name, fn):
        fn()  # warm-up (first call allocates)
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        rows.append({"metric": name, "images_per_s": n_images / (time.perf_counter() - t0)})

    clip = Clip(str(tmp / "clip"), device)
    timeit("clip image embeddings (CLIP-I, MCOS)", lambda: clip.encode_images(images))
    timeit("clip text + image (CLIP-T)", lambda: (clip.encode_images(images), clip.encode_long_texts(texts)))
    dino = Dino(str(tmp / "dino"), device)
    timeit("dino (DINO)", lambda: dino.encode_images(images))
    det = Detector(str(tmp / "owl"), device, threshold=0.0)

    def cp():
        boxes = det.best_boxes(images, [["cat", "dog"]] * n_images)
        clip.encode_images([im.crop(b) for im, bb in zip(images, boxes) for b in bb.values() if b])
    timeit("owl-vit detect 2 concepts + crop CLIP (CP-CLIP)", cp)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-metrics", action="store_true")
    ap.add_argument("--metric-images", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1: on a shared 2-core box more threads fight and the timings mean little)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)

    from gen4gen.device import resolve_device

    device = resolve_device(args.device)
    gpu = device.startswith("cuda")
    tmp = Path(tempfile.mkdtemp(prefix="bench_harness_"))
    print(f"device: {torch.cuda.get_device_name() if gpu else f'CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)'}")

    tok = _tokenizer(tmp, 48894 if gpu else 2000)
    pipe = (sd21_pipeline(tok) if gpu else small_pipeline(tok))
    pipe.save_pretrained(tmp / "pipe")
    del pipe
    res, steps = (512, 4) if gpu else (128, 4)
    r = harness_vs_bare(tmp / "pipe", device, n_prompts=8 if gpu else 8, seeds=[0, 1], steps=steps, res=res,
                        batch=4, repeats=args.repeats, dtype="float16" if gpu else "float32")
    print(f"\n1. harness vs bare diffusers loop ({'SD 2.1 architecture' if gpu else 'small SD-shaped UNet'}, "
          f"{res}x{res}, {steps} steps, batch 4, {r['images']} images, median of {args.repeats})")
    print(f"{'':24s}{'images/s (wall)':>16s}{'images/s (CPU time)':>21s}")
    print(f"{'bare pipe() loop':24s}{r['bare_ips']:16.2f}{r['bare_cpu_ips']:21.2f}")
    print(f"{'gen4gen harness':24s}{r['harness_ips']:16.2f}{r['harness_cpu_ips']:21.2f}")
    print(f"{'overhead':24s}{100 * r['overhead']:15.1f}%{100 * r['overhead_cpu']:20.1f}%  (target <= 10%)")

    if gpu:
        print("\n2. few-step latency, random weights from published configs, fp16, batch 1 (median of 5)")
        print(f"{'model':26s}{'res':>6s}{'steps':>6s}{'s/image':>10s}{'peak GB':>9s}")
        for row in fewstep_latency(_tokenizer(tmp, 48894), device):
            print(f"{row['model']:26s}{row['res']:6d}{row['steps']:6d}{row['seconds']:10.3f}{row['peak_gb']:9.2f}")
    else:
        print("\n2. few-step latency: needs CUDA (run with --device cuda on a GPU machine)")

    try:
        _metrics(args, tmp, tok, device, gpu)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _metrics(args, tmp: Path, tok, device: str, gpu: bool) -> None:
    for size in (() if args.skip_metrics else ("tiny", "published") if not gpu else ("published",)):
        rows = metric_throughput(tmp / f"metrics_{size}", tok, device, args.metric_images, size)
        print(f"\n3. metric throughput, {size} backbones, {args.metric_images} images of 512x512")
        print(f"{'metric':50s}{'images/s':>10s}")
        for row in rows:
            print(f"{row['metric']:50s}{row['images_per_s']:10.1f}")


if __name__ == "__main__":
    main()
