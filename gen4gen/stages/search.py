"""search: rank the models of an index by a text, image, sketch or model query (or a mix).

``python -m gen4gen stage=search search.index=<folder of <model>/<images>> search.query.text="a watercolor cat"``
(or ``search.index=outputs/datasets/<name>``: an exported dataset, ``search/dataset.py``) builds the index when it
is missing, stale or damaged, prints the top models and writes ``search_results.json`` into the run's output dir.

The index is the runner's work item (``IndexStage``): its marker ``meta.json`` in the index folder holds the build
settings' hash and the samples' fingerprint, and the index's own array check (``search/repair.py``) is its intact
check, so a rerun with the same settings on unchanged samples reuses it and a damaged one is rebuilt. Queries run
and print on every run.
"""
from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from rich.table import Table

from gen4gen.console import Summary, console
from gen4gen.device import resolve_device
from gen4gen.errors import UserError
from gen4gen.io import json_bytes, read_jsonl, write_atomic
from gen4gen.markers import failures_path
from gen4gen.paths import run_output_dir
from gen4gen.runner import Item, ItemWriter, run_stage
from gen4gen.search.build import IndexPlan, build_index, plan_index, said_damaged, samples_of
from gen4gen.search.dataset import dataset_root, default_index_dir
from gen4gen.search.features import image_encoder, text_encoder
from gen4gen.search.index import ModelIndex, MomentSpec, is_index
from gen4gen.search.repair import damage
from gen4gen.search.searcher import FALLBACK_NOTE, PRIMARY, Searcher, run_queries
from gen4gen.settings import SearchSettings, section
from gen4gen.stage_settings import PathsSettings

ITEM = "index"


class IndexStage:
    """One item: the index folder, built from ``plan`` with the given encoders."""
    name = "search"

    def __init__(self, plan: IndexPlan, index_dir: Path, image_enc_factory, text_enc_factory, spec: MomentSpec,
                 keep_raw: bool, io_cfg=None, warned: bool = False):
        self.plan, self.out_root = plan, index_dir
        self.image_enc_factory, self.text_enc_factory = image_enc_factory, text_enc_factory
        self.spec, self.keep_raw, self.io_cfg = spec, keep_raw, io_cfg
        self.warned = warned  # the damage was said already (an index given directly)

    def discover(self) -> list[Item]:
        return [Item(ITEM, self.out_root, {"path": str(self.plan.root)}, fingerprint=self.plan.fingerprint)]

    def config(self) -> dict:
        return {k: v for k, v in self.plan.config.items() if k != "captions"}  # the captions are in the fingerprint

    def intact(self, item: Item, meta: dict) -> bool:
        """Every array opens with the shape its index.json says (one warning when not: it is rebuilt)."""
        why = damage(self.out_root)
        if why is not None and not self.warned:
            said_damaged(self.out_root, why)
            self.warned = True
        return why is None

    def process(self, item: Item, out: ItemWriter, rng) -> dict:
        plan = self.plan
        console.print(f"search: building the model index of {len(plan.models)} models from {plan.root} -> "
                      f"{self.out_root}")
        info = build_index(plan.root, self.out_root, plan.models, self.image_enc_factory(), self.text_enc_factory,
                           self.spec, self.keep_raw, plan.fingerprint, self.io_cfg, plan.captions)
        return {"models": len(info.names), "samples": str(plan.root)}


def index(root: Path, index_dir: Path, image_enc_factory, text_enc_factory, spec: MomentSpec, keep_raw: bool,
          config: dict, io_cfg=None) -> tuple[Path, Summary]:
    """The index of ``root`` in ``index_dir``, built through the runner when missing, stale or damaged. ``root``
    may itself be an index: used as it is, or, when damaged, rebuilt from the samples it was built from."""
    warned = False
    if is_index(root):
        why = damage(root)
        if why is None:
            return root, Summary(stage="search", total=1, skipped=1, out_dir=str(root))
        samples = samples_of(root, why)
        said_damaged(root, why)
        root, index_dir, warned = samples, root, True
    stage = IndexStage(plan_index(root, config), index_dir, image_enc_factory, text_enc_factory, spec, keep_raw,
                       io_cfg, warned)
    summary = run_stage(stage, OmegaConf.create({"seed": 0, "stage": "search", "shard": {"index": 0, "count": 1}}))
    if summary.failed:
        why = next((r.get("reason") for r in read_jsonl(failures_path(index_dir))), "see failures.jsonl")
        raise UserError(f"cannot build the model index {index_dir}: {why}")
    return index_dir, summary


def open_index(cfg: DictConfig, root: Path, device: str) -> tuple[Path, Summary]:
    """The index folder of the samples under ``root`` (built when missing, stale or damaged) and the build's summary."""
    sc = section(cfg, "search", SearchSettings)
    dataset = dataset_root(root)  # an exported dataset's index goes to the outputs folder, never into the dataset
    outputs = section(cfg, "paths", PathsSettings).outputs_dir
    index_dir = Path(sc.index_dir) if sc.index_dir else \
        default_index_dir(dataset, outputs) if dataset else root / ".gen4gen_index"
    spec = MomentSpec(sc.moment, sc.rank, sc.eps, sc.dtype)
    build_cfg = {"clip": sc.clip, "minilm": sc.minilm, "moment": sc.moment, "rank": sc.rank, "eps": sc.eps,
                 "dtype": sc.dtype, "keep_raw": sc.keep_raw, "dataset_by": sc.dataset_by}
    return index(root, index_dir, lambda: image_encoder(sc.clip, device, sc.batch_size),
                 lambda: text_encoder("minilm", minilm=sc.minilm, device=device, cache_dir=cfg.paths.cache_dir),
                 spec, sc.keep_raw, build_cfg, cfg.io)


def run(cfg: DictConfig) -> Summary:
    start = time.time()
    sc = section(cfg, "search", SearchSettings)
    if not sc.index:
        raise UserError("set search.index=<folder of <model>/<sample images>> (or a built index folder)")
    queries = {k: v for k, v in sc.query.model_dump().items() if k in PRIMARY and v not in (None, "")}
    device = resolve_device(cfg.device)  # checked now: encoders load lazily, maybe only after a long build
    path, summary = open_index(cfg, Path(sc.index), device)
    index = ModelIndex(path)
    summary.out_dir = str(path)
    summary.notes["index"] = ("built " if summary.done else "reused ") + str(path)
    summary.notes["models"] = len(index)
    if not queries:
        console.print(f"search: index of {len(index)} models ready at {path}; no query given "
                      "(search.query.text / .image / .sketch / .model)")
        summary.seconds = round(time.time() - start, 2)
        return summary
    searcher = Searcher(index, sc, device, cfg.paths.cache_dir, cfg.io)
    results = run_queries(searcher, queries, dict(sc.query.weights or {}), sc.top_k)
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
    summary.seconds = round(time.time() - start, 2)
    return summary
