"""The stage runner: a stage is a list of work items, each written into its own folder.

Contracts (DESIGN.md): an item is done when its ``meta.json`` exists and holds the current config
hash; every file is written to a temporary name and renamed, ``meta.json`` last; randomness comes
from ``(seed, item id)``; shards pick items by a stable hash of the id; bad input becomes one line in
``failures.jsonl`` and the run goes on.
"""
from __future__ import annotations

import logging
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol

import numpy as np
from PIL import Image

from gen4gen.console import Summary, progress
from gen4gen.errors import ItemFailed
from gen4gen.hashing import config_hash, in_shard, item_rng, shard_key
from gen4gen.io import json_bytes, jsonl_bytes, png_bytes, write_atomic
from gen4gen.manifest import write_manifest
from gen4gen.markers import META, failures_path, read_meta

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    id: str  # stable, "/"-separated, e.g. "pets/cat/cat_01"
    out_dir: Path
    data: Any = None  # whatever the stage needs to process it
    fingerprint: str = ""  # of its inputs: a changed input redoes the item
    error: str | None = None  # found bad at discovery: recorded as a failure, never processed
    inputs: dict = field(default_factory=dict)  # upstream item id -> its hash, for the manifest (gen4gen.manifest)


class Stage(Protocol):
    name: str  # "s1"
    out_root: Path  # stages/s1_segmented_foreground

    def discover(self) -> Iterable[Item]: ...

    def config(self) -> dict:
        """Everything the outputs depend on; hashed into each item's meta."""

    def process(self, item: Item, out: "ItemWriter", rng: np.random.Generator) -> dict:
        """Write the item's files through ``out`` and return extra meta fields."""

    # Optional hooks, looked up with getattr:
    #   prepare(pending: list[Item]) -> None   # batched or concurrent work before the loop (LLM calls)
    #   finish(summary: Summary) -> None        # stage-level files (indices) after the loop
    #   workers: int                            # threads for process(); 1 when absent
    #   meta_model: type[StageMeta]             # the artefact model its meta.json is written through


# ---------------------------------------------------------------- item files
class ItemWriter:
    """Writes one item's files atomically; ``meta.json`` is written by the runner, last."""

    def __init__(self, out_dir: Path):
        self.dir = out_dir

    def path(self, name: str) -> Path:
        return self.dir / name

    def image(self, name: str, image: Image.Image | np.ndarray) -> Path:
        return self.bytes(name, png_bytes(image))

    def json(self, name: str, obj: Any) -> Path:
        return self.bytes(name, json_bytes(obj))

    def text(self, name: str, text: str) -> Path:
        return self.bytes(name, text.encode("utf-8"))

    def bytes(self, name: str, data: bytes) -> Path:
        p = self.dir / name
        write_atomic(p, data)
        return p


def is_done(item: Item, chash: str) -> bool:
    meta = read_meta(item.out_dir)
    return bool(meta) and meta.get("config_hash") == chash and meta.get("fingerprint", "") == item.fingerprint


# ---------------------------------------------------------------- the loop
def run_stage(stage: Stage, cfg: Any) -> Summary:
    t0 = time.perf_counter()
    shard_index, shard_count = int(cfg.shard.index), int(cfg.shard.count)
    summary = Summary(stage=stage.name, out_dir=str(stage.out_root))
    failures: list[dict] = []
    chash = config_hash(stage.config())

    whole = str(cfg.get("stage", "")) == "all"
    items = [it for it in stage.discover() if in_shard(shard_key(it.id, whole), shard_index, shard_count)]
    summary.total = len(items)
    pending, done = [], []
    for it in items:
        if it.error:
            failures.append(_failure(stage.name, it, it.error))
        elif is_done(it, chash):
            summary.skipped += 1
            done.append(it)
        else:
            pending.append(it)

    prepare = getattr(stage, "prepare", None)
    if prepare and pending:
        prepare(pending)

    meta_model = getattr(stage, "meta_model", None)

    def work(it: Item) -> str | None:
        (it.out_dir / META).unlink(missing_ok=True)  # being redone: not done until meta lands again
        if it.out_dir.is_dir():
            for stale in it.out_dir.rglob(".*.tmp"):  # half-written files of a killed run
                stale.unlink(missing_ok=True)
        started = time.perf_counter()
        try:
            extra = stage.process(it, ItemWriter(it.out_dir), item_rng(cfg.seed, it.id))
            meta = {"id": it.id, "stage": stage.name, "config_hash": chash, "fingerprint": it.fingerprint,
                    "seconds": round(time.perf_counter() - started, 4), **(extra or {})}
            # a stage with an artefact model (gen4gen.artefacts) never writes a meta its readers would refuse
            data = meta_model.build(meta).dump() if meta_model else json_bytes(meta)
        except ItemFailed as e:
            return str(e)
        except Exception as e:  # noqa: BLE001 - one bad item must not stop the run
            log.debug("item %s failed:\n%s", it.id, traceback.format_exc())
            return f"{type(e).__name__}: {e}"
        write_atomic(it.out_dir / META, data)
        return None

    workers = max(1, int(getattr(stage, "workers", 1)))
    with progress() as bar:
        task = bar.add_task(f"{stage.name}", total=len(pending))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(work, it): it for it in pending}
            try:
                for fut in as_completed(futures):
                    it = futures[fut]
                    reason = fut.result()
                    if reason is None:
                        summary.done += 1
                        done.append(it)
                    else:
                        failures.append(_failure(stage.name, it, reason))
                        log.warning("%s: %s: %s", stage.name, it.id, reason)
                    bar.advance(task)
            except BaseException:  # Ctrl-C or a crash: stop now instead of running every queued item first
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    summary.failed = len(failures)
    failures.sort(key=lambda f: f["id"])
    _write_failures(stage.out_root, shard_index, shard_count, failures)
    write_manifest(stage.out_root, stage.name, shard_index, shard_count,
                   {it.id: {"hash": f"{chash}:{it.fingerprint}", "inputs": dict(sorted(it.inputs.items()))}
                    for it in done})
    finish = getattr(stage, "finish", None)
    if finish:
        finish(summary)
    summary.seconds = round(time.perf_counter() - t0, 2)
    return summary


def _failure(stage: str, item: Item, reason: str) -> dict:
    src = item.data.get("path") if isinstance(item.data, dict) else None
    return {"stage": stage, "id": item.id, "path": str(src or item.out_dir), "reason": reason,
            "item_dir": str(item.out_dir)}


def _write_failures(out_root: Path, shard_index: int, shard_count: int, failures: list[dict]) -> None:
    lines = jsonl_bytes(failures)
    write_atomic(failures_path(out_root, shard_index, shard_count), lines)
    try:  # a copy beside Hydra's log, so each run dir tells its own story
        from hydra.core.hydra_config import HydraConfig

        run_dir = Path(HydraConfig.get().runtime.output_dir)
        with open(run_dir / "failures.jsonl", "ab") as f:
            f.write(lines)
    except Exception:  # noqa: BLE001 - not under Hydra (library use, tests)
        pass
