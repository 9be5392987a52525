"""What the serve tests and benchmark start from: a small stages tree with captions, a tiny bench run, a folder
of model samples for search, and the real app on a free 127.0.0.1 port in a thread."""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np

from gen4gen.io import jsonl_bytes, png_bytes, write_atomic
from tests.conftest import make_cfg
from tests.helpers.trees import make_pipeline

# four models, two prompts, two seeds; fast_bad is cheapest, big_good the best on CLIP-T, dominated beaten by mid
# on both cost and quality (off the Pareto front)
BENCH = {"big_good": {"clip_t": 31.0, "mcos": 0.50, "cost_usd": 0.004, "latency_s": 2.0},
         "mid": {"clip_t": 29.0, "mcos": 0.30, "cost_usd": 0.002, "latency_s": 1.0},
         "fast_bad": {"clip_t": 24.0, "mcos": 0.60, "cost_usd": 0.001, "latency_s": 0.2},
         "dominated": {"clip_t": 26.0, "mcos": 0.70, "cost_usd": 0.005, "latency_s": 3.0}}
PROMPTS = {"p0": ("a red bicycle <b>leaning</b> on a wall", "objects"), "p1": ("two cats on a sofa", "animals")}
SEARCH_MODELS = {"crimson": (220, 30, 30), "azure": (30, 30, 220), "forest": (30, 190, 40)}


def stages_tree(root: Path, scenes: dict | None = None, variants=("v0_procedural", "v1_procedural")) -> dict:
    """s1..s4 of ``make_pipeline`` (two scenes, two variants each unless given)."""
    from gen4gen.stages import s4_caption

    info = make_pipeline(root, size=(160, 120), variants=variants, scenes=scenes)
    s4_caption.run(make_cfg(root))
    return info


def bench_run(root: Path) -> Path:
    """``root/bench/tiny``: ``metrics.jsonl`` and a PNG per (model, prompt, seed)."""
    run = root / "bench" / "tiny"
    rows = []
    for m, (model, metrics) in enumerate(BENCH.items()):
        for pid, (prompt, category) in PROMPTS.items():
            for seed in (0, 1):
                image = f"images/{model}/drawbench/{pid}_s{seed}.png"
                shade = np.full((32, 32, 3), (60 + 70 * m, 120 + 40 * seed, 200 - 60 * m), np.uint8)
                write_atomic(run / image, png_bytes(shade))
                rows.append({"model": model, "set": "drawbench", "prompt_id": pid, "category": category, "seed": seed,
                             "prompt": prompt, "image": image, "prompt_key": f"drawbench/{pid}",
                             **metrics, "clip_t": metrics["clip_t"] + 0.1 * seed})
    write_atomic(run / "metrics.jsonl", jsonl_bytes(rows))
    return run


def search_samples(root: Path) -> Path:
    """Three models of coloured squares with captions (the embedded encoders index them)."""
    rng = np.random.default_rng(0)
    out = root / "samples"
    for name, colour in SEARCH_MODELS.items():
        for i in range(3):
            a = np.clip(np.array(colour)[None, None] + rng.normal(0, 25, (40, 40, 3)), 0, 255).astype(np.uint8)
            write_atomic(out / name / f"{i}.png", png_bytes(a))
            (out / name / f"{i}.txt").write_text(f"a {name} coloured square, sample {i}")
    return out


def serve_cfg(root: Path, *overrides: str):
    return make_cfg(root, "device=cpu", f"serve.thumbs_dir={root / 'thumbs'}", *overrides)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """The app under uvicorn on 127.0.0.1:<free port>, in a thread (``with LiveServer(app) as url:``)."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
