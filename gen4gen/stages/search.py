"""search: rank the models of an index by a text, image, sketch or model query (or a mix).

``python -m gen4gen stage=search search.index=<folder of <model>/<images>> search.query.text="a watercolor cat"``
(or ``search.index=outputs/datasets/<name>``: an exported dataset, ``search/dataset.py``) builds the index when it
is missing, stale or damaged, prints the top models and writes ``search_results.json``
into the run's output dir.
"""
from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig
from rich.table import Table

from gen4gen.console import Summary, console
from gen4gen.device import resolve_device
from gen4gen.errors import UserError
from gen4gen.io import json_bytes, write_atomic
from gen4gen.paths import run_output_dir
from gen4gen.search.build import ensure_index
from gen4gen.search.dataset import dataset_root, default_index_dir
from gen4gen.search.features import image_encoder, text_encoder
from gen4gen.search.index import ModelIndex, MomentSpec
from gen4gen.search.searcher import FALLBACK_NOTE, PRIMARY, Searcher, run_queries


def open_index(cfg: DictConfig, root: Path, device: str) -> tuple[Path, bool]:
    """The index folder of the samples under ``root`` (built when missing, stale or damaged) and whether it was built."""
    sc = cfg.search
    dataset = dataset_root(root)  # an exported dataset's index goes to the outputs folder, never into the dataset
    index_dir = Path(sc.index_dir) if sc.index_dir else \
        default_index_dir(dataset, Path(cfg.paths.outputs_dir)) if dataset else root / ".gen4gen_index"
    spec = MomentSpec(sc.moment, int(sc.rank), float(sc.eps), str(sc.dtype))
    build_cfg = {"clip": sc.clip, "minilm": sc.minilm, "moment": sc.moment, "rank": int(sc.rank), "eps": float(sc.eps),
                 "dtype": str(sc.dtype), "keep_raw": bool(sc.keep_raw), "dataset_by": str(sc.dataset_by)}
    return ensure_index(
        root, index_dir, lambda: image_encoder(sc.clip, device, int(sc.batch_size)),
        lambda: text_encoder("minilm", minilm=sc.minilm, device=device, cache_dir=cfg.paths.cache_dir),
        spec, bool(sc.keep_raw), build_cfg, cfg.io)


def run(cfg: DictConfig) -> Summary:
    start = time.time()
    sc = cfg.search
    if not sc.index:
        raise UserError("set search.index=<folder of <model>/<sample images>> (or a built index folder)")
    queries = {k: str(v) for k, v in sc.query.items() if k in PRIMARY and v not in (None, "")}
    device = resolve_device(cfg.device)  # checked now: encoders load lazily, maybe only after a long build
    path, built = open_index(cfg, Path(sc.index), device)
    index = ModelIndex(path)
    summary = Summary(stage="search", total=len(index), done=len(index), out_dir=str(path),
                      notes={"index": ("built " if built else "reused ") + str(path)})
    if not queries:
        console.print(f"search: index of {len(index)} models ready at {path}; no query given "
                      "(search.query.text / .image / .sketch / .model)")
        summary.seconds = time.time() - start
        return summary
    searcher = Searcher(index, sc, device, cfg.paths.cache_dir, cfg.io)
    results = run_queries(searcher, queries, dict(sc.query.weights or {}), int(sc.top_k))
    out_dir = run_output_dir(cfg, "search")
    payload = {"index": str(path), "n_models": len(index), "queries": queries, "notes": sorted(set(searcher.notes)),
               "text_fallback": FALLBACK_NOTE in searcher.notes, "results": results}
    write_atomic(out_dir / "search_results.json", json_bytes(payload))
    for method, hits in results.items():
        t = Table(title=f"{method}")
        for col in ("rank", "model", "score"):
            t.add_column(col, justify="left" if col == "model" else "right")
        for h in hits:
            t.add_row(str(h["rank"]), h["model"], f"{h['score']:.4f}")
        console.print(t)
    console.print(f"results: {out_dir / 'search_results.json'}")
    summary.out_dir = str(out_dir)
    summary.seconds = time.time() - start
    return summary
