"""stage=train (Custom Diffusion) against diffusers' examples/custom_diffusion/train_custom_diffusion.py: steps/s
and peak memory with the same model, data, resolution, batch and precision, side by side in one run.

    python benchmarks/train.py --script path/to/train_custom_diffusion.py [--steps 30] [--repeat 3]
        [--resolution 128] [--batch 2] [--base <diffusers folder>]

The script is not in any package and is never committed: pass its path. Without ``--base`` a small SD-style
pipeline (real CLIP tokenizer, random weights, VAE with the real 8x downsampling) is built from configs, so
the figures are CPU figures for a small model. Data: the two concepts of the shared ``pets_2objs`` photos
(instance folders for the script; the same files as ``train.data=sources`` for gen4gen).

Each tool runs in its own process, which records the wall and CPU clock at every optimiser step (``AdamW.step``,
which both call once per step): steps/s and CPU s/step are over the steps after the first two (steady state:
no loading, caching or saving). Peak memory is the process's peak RSS (CPU). The script runs with
``--dataloader_num_workers=0`` so its image decoding counts in its own process, as gen4gen's caching does.
Runs alternate between the two tools so machine load hits both alike.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def torchvision_transforms_stand_in() -> None:
    """torchvision has no CPU build here; the script imports ``torchvision.transforms`` but, without prior
    preservation, calls only ``RandomHorizontalFlip`` on instance images (its own numpy code resizes and
    crops them). That one is reproduced (PIL); every other transform raises if called."""
    import importlib.machinery
    import random
    import types

    import diffusers  # noqa: F401 - imported first: they probe for torchvision once, and must find none
    import transformers  # noqa: F401
    from PIL import Image

    class RandomHorizontalFlip:
        def __init__(self, p: float = 0.5):
            self.p = p

        def __call__(self, im):
            return im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if random.random() < self.p else im

    class Unused:
        def __init__(self, *a, **k):
            pass

        def __call__(self, *a, **k):
            raise AssertionError("torchvision stand-in: this transform is not reproduced (prior preservation?)")

    tf = types.ModuleType("torchvision.transforms")
    tf.RandomHorizontalFlip = RandomHorizontalFlip
    tf.Compose = tf.Resize = tf.CenterCrop = tf.RandomCrop = tf.ToTensor = tf.Normalize = Unused
    tf.InterpolationMode = types.SimpleNamespace(BILINEAR="bilinear")
    tv = types.ModuleType("torchvision")
    tv.transforms = tf
    for m in (tv, tf):
        m.__spec__ = importlib.machinery.ModuleSpec(m.__name__, None)
    sys.modules.update({"torchvision": tv, "torchvision.transforms": tf})


def child(out: str, argv: list[str]) -> None:
    """Run one training process (``-m gen4gen ...`` or a script path); record the clocks at every optimiser
    step, the process's CPU time and peak RSS."""
    import torch

    ticks: list[tuple[float, float]] = []
    step = torch.optim.AdamW.step

    def timed_step(self, *a, **k):
        result = step(self, *a, **k)
        ticks.append((time.perf_counter(), time.process_time()))
        return result

    torch.optim.AdamW.step = timed_step
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            torchvision_transforms_stand_in()
            sys.argv = argv
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:
        if e.code not in (None, 0):
            raise
    finally:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        Path(out).write_text(json.dumps({"ticks": ticks, "peak_rss_gb": ru.ru_maxrss / 2 ** 20}))


def build_base(root: Path) -> Path:
    """A small SD 1.x-style pipeline: UNet (32, 64) with cross-attention in both levels, 8x VAE, CLIP text encoder."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from tests.helpers.bench_tiny import BOS, BPE, EOS, VOCAB, clip_tokenizer
    from tests.conftest import SHARED

    tok = clip_tokenizer(str(SHARED / BPE), str(root))
    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=16,
                                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=64,
                                attention_head_dim=8, norm_num_groups=8)
    vae = AutoencoderKL(block_out_channels=[8, 16, 16, 16], norm_num_groups=8, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4)
    text = CLIPTextModel(CLIPTextConfig(bos_token_id=BOS, eos_token_id=EOS, pad_token_id=EOS, hidden_size=64,
                                        intermediate_size=128, num_attention_heads=4, num_hidden_layers=2,
                                        vocab_size=VOCAB, max_position_embeddings=77))
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=tok,
                                   scheduler=DDPMScheduler(beta_schedule="scaled_linear"), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(root / "base")
    return root / "base"


def build_data(root: Path) -> tuple[Path, Path]:
    """The same photos for both: an export-shaped dataset (gen4gen) and a concepts_list.json (the script)."""
    from tests.conftest import SHARED

    photos = SHARED / "source_images" / "pets_2objs"
    ds = root / "dataset"
    (ds / "mycanvas").mkdir(parents=True)
    tokens = {"cat": "<new1>", "dog": "<new2>"}
    refs = {}
    for c in tokens:  # linked into the dataset: an index names paths inside it, as the export writes them
        (ds / "mycanvas" / "references" / c).mkdir(parents=True)
        for p in sorted(p for p in (photos / c).iterdir() if p.is_file()):
            (ds / "mycanvas" / "references" / c / p.name).symlink_to(p)
            refs.setdefault(c, []).append(f"mycanvas/references/{c}/{p.name}")
    row = {"id": "refs", "image": "none.png", "concepts": list(tokens), "captions": {"personalized": ""},
           "modifier_tokens": tokens, "reference_images": refs}
    (ds / "mycanvas" / "index.jsonl").write_text(json.dumps(row) + "\n")
    concepts = [{"instance_prompt": f"a photo of a {t} {c}", "class_prompt": c,
                 "instance_data_dir": str(photos / c), "class_data_dir": str(root / "class" / c)}
                for c, t in tokens.items()]
    (root / "concepts_list.json").write_text(json.dumps(concepts))
    return ds, root / "concepts_list.json"


def run(argv: list[str], work: Path, tag: str, skip: int = 2) -> dict:
    out = work / f"{tag}.json"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", str(out), "--", *argv], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{tag} failed:\n{proc.stderr[-3000:]}")
    data = json.loads(out.read_text())
    (w0, c0), (w1, c1) = data["ticks"][skip - 1], data["ticks"][-1]
    n = len(data["ticks"]) - skip
    return {"steps": len(data["ticks"]), "steps_per_s": n / (w1 - w0), "cpu_s_per_step": (c1 - c0) / n,
            "peak_rss_gb": data["peak_rss_gb"], "process_wall_s": wall}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return child(sys.argv[2], sys.argv[4:])
    ap = argparse.ArgumentParser()
    ap.add_argument("--script", required=True, help="diffusers examples/custom_diffusion/train_custom_diffusion.py")
    ap.add_argument("--base", default=None, help="a diffusers SD folder (default: a small one built here)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--batch", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = Path(args.base) if args.base else build_base(work)
        ds, concepts = build_data(work)
        common = {"res": args.resolution, "batch": args.batch}

        def ours(n: int, k: int) -> list[str]:
            return ["-m", "gen4gen", "stage=train", f"train.base={base}", f"train.dataset={ds}", "train.data=sources",
                    "train.force_cpu=true", f"train.resolution={common['res']}", f"train.batch_size={common['batch']}",
                    f"train.max_steps={n}", "train.lr=1e-5", "train.checkpoint_every=1000000",
                    f"paths.outputs_dir={work / f'ours_{n}_{k}'}", f"hydra.run.dir={work / f'hydra_{n}_{k}'}"]

        def theirs(n: int, k: int) -> list[str]:
            return [str(Path(args.script).resolve()), f"--pretrained_model_name_or_path={base}",
                    f"--concepts_list={concepts}", "--modifier_token=<new1>+<new2>", "--initializer_token=cat+dog",
                    f"--resolution={common['res']}", f"--train_batch_size={common['batch']}",
                    f"--max_train_steps={n}", "--learning_rate=1e-5", "--lr_warmup_steps=0",
                    "--checkpointing_steps=1000000", "--mixed_precision=no", "--report_to=all",
                    "--dataloader_num_workers=0",
                    f"--output_dir={work / f'theirs_{n}_{k}'}"]

        rows = {"gen4gen stage=train": [], "diffusers train_custom_diffusion.py": []}
        for k in range(args.repeat):
            for name, argv in (("gen4gen stage=train", ours), ("diffusers train_custom_diffusion.py", theirs)):
                rows[name].append(run(argv(args.steps, k), work, f"{name[:4]}_{k}"))
                assert rows[name][-1]["steps"] == args.steps, rows[name][-1]
                print(f"run {k + 1}/{args.repeat} {name}: {rows[name][-1]}", flush=True)
        med = {n: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for n, rs in rows.items()}
        ref = med["diffusers train_custom_diffusion.py"]
        print(f"\nload average {os.getloadavg()[0]:.1f}; {args.steps} steps (first 2 not timed), resolution "
              f"{args.resolution}, batch {args.batch}, fp32, CPU, medians of {args.repeat}\n")
        print("| trainer | steps/s (wall) | ratio | CPU s/step | peak RSS GB | whole process (s) |")
        print("|---|---|---|---|---|---|")
        for name, m in med.items():
            print(f"| {name} | {m['steps_per_s']:.3f} | {m['steps_per_s'] / ref['steps_per_s']:.2f}x | "
                  f"{m['cpu_s_per_step']:.3f} | {m['peak_rss_gb']:.3f} | {m['process_wall_s']:.1f} |")


if __name__ == "__main__":
    main()
