"""The stage runner: a stage is a list of work items, each written into its own folder.

Contracts (DESIGN.md): an item is done when its ``meta.json`` exists and holds the current config
hash; every file is written to a temporary name and renamed, ``meta.json`` last; randomness comes
from ``(seed, item id)``; shards pick items by a stable hash of the id; bad input becomes one line in
``failures.jsonl`` and the run goes on. A stage that works in batches (a GPU pipeline) declares a
batch size and gets its items in batches here, with the same markers and failures.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any, Iterable, Protocol

import numpy as np

from gen4gen.console import Summary, progress
from gen4gen.errors import Interrupted, ItemFailed, UserError
from gen4gen.hashing import config_hash, in_shard, item_rng, shard_key
from gen4gen.io import json_bytes, write_atomic
from gen4gen.manifest import write_manifest
from gen4gen.item_files import ItemWriter, outputs_intact
from gen4gen.markers import META, read_meta, write_failures
from gen4gen.settings import top_level
from gen4gen.stage_settings import RunSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    id: str  # stable, "/"-separated, e.g. "pets/cat/cat_01"
    out_dir: Path
    data: Any = None  # whatever the stage needs to process it
    fingerprint: str = ""  # of its inputs: a changed input redoes the item
    error: str | None = None  # found bad at discovery: recorded as a failure, never processed
    # the done-marker; None: ``out_dir/meta.json``. Items that share a folder (bench images) name their own
    # (``<image>.json``) and then own only the files of that stem there
    marker: Path | None = None
    inputs: dict = field(default_factory=dict)  # upstream item id -> its hash, for the manifest (gen4gen.manifest)

    @property
    def meta_path(self) -> Path:
        return self.marker if self.marker is not None else self.out_dir / META


class Stage(Protocol):
    name: str  # "s1"
    out_root: Path  # stages/s1_segmented_foreground

    def discover(self) -> Iterable[Item]: ...

    def config(self) -> dict:
        """Everything the outputs depend on; hashed into each item's meta."""

    def process(self, item: Item, out: ItemWriter, rng: np.random.Generator) -> dict:
        """Write the item's files through ``out`` and return extra meta fields."""

    # Optional hooks, looked up with getattr:
    #   prepare(pending: list[Item]) -> None   # work before the loop (load weights, LLM calls)
    #   finish(summary: Summary, metas: dict) -> None   # after the loop: stage-level files, notes; ``metas``:
    #                                           # item id -> meta (typed with meta_model) of every done item
    #   selection() -> dict                     # settings that choose which items exist (compose.num_samples):
    #                                           # hashed with config() into the manifest's settings hash
    #   workers: int                            # threads for process()/process_batch(); 1 when absent
    #   batch_size: int                         # > 1 with process_batch: items come in batches of at most this
    #   process_batch(items, writers, rngs) -> list[dict | ItemFailed]   # one result per item, in order;
    #                                           # used instead of process() when present
    #   batch_key(item) -> hashable             # only consecutive items with equal keys share a batch
    #   shard_key(item_id) -> str               # what a shard owns (default: the item; bench: a whole model)
    #   meta_model: type[StageMeta]             # the artefact model its meta.json is written through
    #   intact(item, meta) -> bool              # a done item's files are still what it wrote (default:
    #                                           # ``outputs_intact``; a dataset: its ownership record; an index:
    #                                           # its arrays)
    #   inner_failures() -> list[dict]          # failure lines of the parts of an item (the final images a dataset
    #                                           # could not take): written to failures.jsonl with the items' own
    # A UserError raised anywhere (process too) stops the run with its one line: it is about the run, not an item.


def done_meta(item: Item, chash: str) -> dict | None:
    """The item's marker when it is of a finished item of this configuration, else None (redo it); whether the
    files it vouches for are still what it wrote is ``outputs_intact``."""
    # no Path arithmetic for the usual marker: this runs for every item of every rerun
    meta = read_meta(item.out_dir) if item.marker is None else read_meta(item.marker.parent, item.marker.name)
    # ``redo``: usable now but made without a service that was down (an LLM fallback): tried again next run
    if (meta and meta.get("config_hash") == chash and meta.get("fingerprint", "") == item.fingerprint
            and not meta.get("redo")):
        return meta
    return None


def _vouched(item: Item, chash: str, meta_model=None, broken: list | None = None, intact=None):
    """``done_meta`` whose files are intact (``intact``: the stage's own check, else ``outputs_intact``), through
    the stage's meta model: a marker its own model refuses vouches for nothing. Items whose files changed or broke
    since are added to ``broken``."""
    meta = done_meta(item, chash)
    if meta is not None and not (intact(item, meta) if intact else outputs_intact(item.out_dir, meta)):
        if broken is not None:
            broken.append(item.id)
        return None
    if meta is None or meta_model is None:
        return meta
    try:
        return meta_model.parse(meta)
    except ItemFailed:
        return None


def batches(items: list[Item], size: int, key=None) -> list[list[Item]]:
    """Consecutive runs of items with equal ``key``, cut into batches of at most ``size``; order kept."""
    out: list[list[Item]] = []
    for _, run in groupby(items, key=key or (lambda it: None)):
        run = list(run)
        out += [run[k:k + size] for k in range(0, len(run), max(1, size))]
    return out


# ---------------------------------------------------------------- the loop
def run_stage(stage: Stage, cfg: Any) -> Summary:
    t0 = time.perf_counter()
    run = top_level(cfg, RunSettings)
    summary = Summary(stage=stage.name, out_dir=str(stage.out_root))
    try:
        return _run(stage, run, summary, t0)
    except KeyboardInterrupt:  # Ctrl-C anywhere in the stage: the caller reports how far it got
        raise Interrupted(summary.done) from None


def _run(stage: Stage, run: RunSettings, summary: Summary, t0: float) -> Summary:
    shard_index, shard_count = run.shard.index, run.shard.count
    failures: list[dict] = []
    chash = config_hash(stage.config())
    selection = getattr(stage, "selection", None)
    settings = config_hash({"config": chash, "selection": selection() if selection else {}})
    remove_stale_temps(Path(stage.out_root))

    whole = run.stage == "all"
    key = getattr(stage, "shard_key", None) or (lambda item_id: shard_key(item_id, whole))
    items = [it for it in stage.discover() if in_shard(key(it.id), shard_index, shard_count)]
    summary.total = len(items)
    meta_model = getattr(stage, "meta_model", None)
    intact = getattr(stage, "intact", None)
    pending, done = [], []
    metas: dict[str, Any] = {}  # id -> the meta of each done item, for finish()
    broken: list[str] = []  # done, but a file its marker vouches for changed or broke since: redone
    for it in items:
        if it.error:
            failures.append(_failure(stage, it, it.error))
        elif (meta := _vouched(it, chash, meta_model, broken, intact)) is not None:
            summary.skipped += 1
            done.append(it)
            metas[it.id] = meta
        else:
            pending.append(it)

    if broken:
        summary.notes["redone: a file changed or broke since it was done"] = len(broken)
        log.warning("%s: %d finished item(s) redone because a file changed or broke since (first: %s)",
                    stage.name, len(broken), ", ".join(broken[:3]))
    prepare = getattr(stage, "prepare", None)
    if prepare and pending:
        prepare(pending)

    process_batch = getattr(stage, "process_batch", None)
    size = max(1, int(getattr(stage, "batch_size", 1))) if process_batch else 1
    groups = batches(pending, size, getattr(stage, "batch_key", None)) if process_batch else [[it] for it in pending]

    live: dict = {}  # the bar, once it is drawn: items that report their own steps add a line to it
    stopping = threading.Event()  # Ctrl-C reached the loop: a large item stops at its next step

    def steps(description: str, total: int):
        bar = live["bar"]
        task = bar.add_task(f"{stage.name}: {description}", total=total)

        def advance() -> None:
            if stopping.is_set():
                raise KeyboardInterrupt
            bar.advance(task)
        return advance

    def work(batch: list[Item]) -> list[str | Any]:
        for it in batch:
            _reset(it)
        started = time.perf_counter()
        writers = [ItemWriter(it.out_dir, steps) for it in batch]
        try:
            if process_batch:
                results = process_batch(batch, writers, [item_rng(run.seed, it.id) for it in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{stage.name}.process_batch gave {len(results)} results for {len(batch)} items")
            else:
                it = batch[0]
                results = [stage.process(it, writers[0], item_rng(run.seed, it.id))]
        except ItemFailed as e:
            results = [e] * len(batch)
        except UserError:  # about the whole run (a dataset folder that is not the export's): stop with its line
            raise
        except Exception as e:  # noqa: BLE001 - one bad item (or batch: out of GPU memory) must not stop the run
            log.debug("%s failed:\n%s", batch[0].id if len(batch) == 1 else f"batch at {batch[0].id}",
                      traceback.format_exc())
            reason = f"{type(e).__name__}: {e}"
            if len(batch) > 1:
                reason = f"batch of {len(batch)} failed: {reason}"
            results = [ItemFailed(reason)] * len(batch)
        seconds = round((time.perf_counter() - started) / len(batch), 4)
        return [_finish_item(stage.name, it, res, chash, seconds, meta_model, w.files)
                for it, res, w in zip(batch, results, writers)]

    workers = max(1, int(getattr(stage, "workers", 1)))
    with progress() as bar:
        live["bar"] = bar
        task = bar.add_task(f"{stage.name}", total=len(pending))

        def count(batch: list[Item], results: list) -> None:
            for it, reason in zip(batch, results):
                if not isinstance(reason, str):  # the meta written: done
                    summary.done += 1
                    done.append(it)
                    metas[it.id] = reason
                else:
                    failures.append(_failure(stage, it, reason))
                    log.warning("%s: %s: %s", stage.name, it.id, reason)
                bar.advance(task)

        if workers == 1:  # in this thread: Ctrl-C stops the item being processed (a train run), not after it
            for batch in groups:
                count(batch, work(batch))
        else:
            _run_pool(work, groups, workers, count, summary, stopping)

    inner = getattr(stage, "inner_failures", None)
    if inner:
        failures += inner()
    summary.failed = len(failures)
    failures.sort(key=lambda f: f["id"])
    write_failures(stage.out_root, shard_index, shard_count, failures)
    write_manifest(stage.out_root, stage.name, shard_index, shard_count,
                   {it.id: {"hash": f"{chash}:{it.fingerprint}", "inputs": dict(sorted(it.inputs.items()))}
                    for it in done}, settings)
    finish = getattr(stage, "finish", None)
    if finish:
        finish(summary, {it.id: metas[it.id] for it in sorted(done, key=lambda it: it.id)})
    summary.seconds = round(time.perf_counter() - t0, 2)
    return summary


def _run_pool(work, groups: list[list[Item]], workers: int, count, summary: Summary, stopping: threading.Event) -> None:
    """``work`` over ``groups`` on ``workers`` threads, each batch's results given to ``count`` as it finishes;
    ``stopping`` is set when the loop stops, so a large item in a worker thread stops at its next step."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(work, batch): batch for batch in groups}
        counted = set()
        try:
            for fut in as_completed(futures):
                counted.add(fut)
                count(futures[fut], fut.result())
        except BaseException:  # Ctrl-C or a crash: stop now instead of running every queued item first
            stopping.set()
            pool.shutdown(wait=True, cancel_futures=True)
            # items that finished while we waited are done too: the count a user reads must match the disk
            summary.done += sum(not isinstance(r, str) for f in futures if f not in counted and f.done() and not f.cancelled()
                                and f.exception() is None for r in f.result())
            raise


def _reset(it: Item) -> None:
    """An item being redone is not done until its marker lands again; half-written files of a killed run go."""
    it.meta_path.unlink(missing_ok=True)
    if not it.out_dir.is_dir():
        return
    if it.marker is None:  # the folder is the item's own
        stale = it.out_dir.rglob(".*.tmp")
    else:  # a shared folder: only this item's files (same stem as its marker)
        stale = it.out_dir.glob(f".{it.marker.stem}.*.tmp")
    for p in stale:
        p.unlink(missing_ok=True)


def _finish_item(stage: str, it: Item, result: dict | ItemFailed, chash: str, seconds: float,
                 meta_model=None, files: dict | None = None) -> str | Any:
    """Write the item's marker (last); the failure reason, or the meta written (typed with ``meta_model``)."""
    if isinstance(result, ItemFailed):
        return str(result)
    meta = {"id": it.id, "stage": stage, "config_hash": chash, "fingerprint": it.fingerprint,
            "seconds": seconds, **(result or {}), "outputs": dict(sorted((files or {}).items()))}
    try:
        # a stage with an artefact model (gen4gen.artefacts) never writes a meta its readers would refuse
        typed = meta_model.build(meta) if meta_model else meta
        data = typed.dump() if meta_model else json_bytes(meta)
    except ItemFailed as e:
        return str(e)
    except (TypeError, ValueError) as e:  # a value JSON cannot hold: this item fails, the run goes on
        return f"{type(e).__name__}: {e}"
    try:
        write_atomic(it.meta_path, data)
    except OSError as e:  # disk full: this item is not done, the run goes on
        return f"cannot write {it.meta_path.name}: {e.strerror or e}"
    return typed


def remove_stale_temps(out_root: Path) -> None:
    """Temporary files that a killed or disk-full run left in the stage folder itself (``.failures.jsonl.<pid>.tmp``,
    indices). Items clean their own folders when they are redone. A file whose writer is still alive on this
    machine (another shard running now) is left alone."""
    if not out_root.is_dir():
        return
    for p in out_root.glob(".*.tmp"):
        pid = p.name.rsplit(".", 2)[-2]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        p.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _failure(stage: Stage, item: Item, reason: str) -> dict:
    src = item.data.get("path") if isinstance(item.data, dict) else None
    # item_dir relative to the stage folder: a copied stages folder checks its own items, not the original's
    try:
        item_dir = item.out_dir.relative_to(stage.out_root).as_posix()
    except ValueError:
        item_dir = str(item.out_dir)
    return {"stage": stage.name, "id": item.id, "path": str(src or item.out_dir), "reason": reason,
            "item_dir": item_dir}
