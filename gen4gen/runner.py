"""The stage runner: a stage is a list of work items, each written into its own folder.

Contracts (DESIGN.md): an item is done when its ``meta.json`` exists and holds the current config
hash; every file is written to a temporary name and renamed, ``meta.json`` last; randomness comes
from ``(seed, item id)``; shards pick items by a stable hash of the id; bad input becomes one line in
``failures.jsonl`` and the run goes on.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol

import numpy as np
from PIL import Image

from gen4gen.console import console, progress, summary_table

log = logging.getLogger(__name__)
META = "meta.json"


class UserError(Exception):
    """A problem with the whole run (missing weights, empty input, no GPU): printed without a traceback."""


class ItemFailed(Exception):
    """A work item cannot be done; the message is the reason a user reads in failures.jsonl."""


@dataclass(frozen=True)
class Item:
    id: str  # stable, "/"-separated, e.g. "pets/cat/cat_01"
    out_dir: Path
    data: Any = None  # whatever the stage needs to process it
    fingerprint: str = ""  # of its inputs: a changed input redoes the item
    error: str | None = None  # found bad at discovery: recorded as a failure, never processed


@dataclass
class Summary:
    stage: str
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    out_dir: str = ""
    notes: dict = field(default_factory=dict)

    @property
    def nothing_done(self) -> bool:
        return self.done + self.skipped == 0


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


# ---------------------------------------------------------------- hashing and seeding
def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask under SLURM/taskset), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def stable_hash(text: str) -> int:
    """64-bit hash that is the same in every process (Python's hash() is salted)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def config_hash(cfg: Any) -> str:
    blob = json.dumps(cfg, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def item_rng(seed: int, item_id: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, stable_hash(item_id)])


def shard_key(item_id: str, whole_pipeline: bool) -> str:
    """What a shard owns. One stage at a time: single items. ``stage=all``: whole scenes, because a
    scene's compositions need every photo of that scene segmented first, so a shard must own the scene
    through every stage to run without waiting for the others."""
    return item_id.split("/", 1)[0] if whole_pipeline else item_id


def in_shard(item_id: str, index: int, count: int) -> bool:
    if not 0 <= index < count:
        raise ValueError(f"shard.index={index} must be in [0, shard.count={count})")
    return stable_hash(item_id) % count == index


def file_fingerprint(path: Path) -> str:
    h = hashlib.blake2b(digest_size=12)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- atomic writes
def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary sibling and rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def png_bytes(image: Image.Image | np.ndarray) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)  # 1: ~1.5x faster than 4 for ~7 % larger files
    return buf.getvalue()


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n").encode("utf-8")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return o.as_posix()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


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


def read_meta(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / META).read_text("utf-8"))
    except (OSError, ValueError):
        return None


def is_done(item: Item, chash: str) -> bool:
    meta = read_meta(item.out_dir)
    return bool(meta) and meta.get("config_hash") == chash and meta.get("fingerprint", "") == item.fingerprint


def done_items(root: Path) -> Iterable[tuple[Path, dict]]:
    """Every finished item below ``root`` (folders whose meta.json exists), in sorted order."""
    for meta_path in sorted(root.rglob(META)):
        meta = read_meta(meta_path.parent)
        if meta is not None:
            yield meta_path.parent, meta


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
    pending = []
    for it in items:
        if it.error:
            failures.append(_failure(stage.name, it, it.error))
        elif is_done(it, chash):
            summary.skipped += 1
        else:
            pending.append(it)

    prepare = getattr(stage, "prepare", None)
    if prepare and pending:
        prepare(pending)

    def work(it: Item) -> str | None:
        (it.out_dir / META).unlink(missing_ok=True)  # being redone: not done until meta lands again
        if it.out_dir.is_dir():
            for stale in it.out_dir.rglob(".*.tmp"):  # half-written files of a killed run
                stale.unlink(missing_ok=True)
        started = time.perf_counter()
        try:
            extra = stage.process(it, ItemWriter(it.out_dir), item_rng(cfg.seed, it.id))
        except ItemFailed as e:
            return str(e)
        except Exception as e:  # noqa: BLE001 - one bad item must not stop the run
            log.debug("item %s failed:\n%s", it.id, traceback.format_exc())
            return f"{type(e).__name__}: {e}"
        meta = {"id": it.id, "stage": stage.name, "config_hash": chash, "fingerprint": it.fingerprint,
                "seconds": round(time.perf_counter() - started, 4), **(extra or {})}
        write_atomic(it.out_dir / META, json_bytes(meta))
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
    finish = getattr(stage, "finish", None)
    if finish:
        finish(summary)
    summary.seconds = round(time.perf_counter() - t0, 2)
    return summary


def _failure(stage: str, item: Item, reason: str) -> dict:
    src = item.data.get("path") if isinstance(item.data, dict) else None
    return {"stage": stage, "id": item.id, "path": str(src or item.out_dir), "reason": reason,
            "item_dir": str(item.out_dir)}


def failures_path(out_root: Path, shard_index: int = 0, shard_count: int = 1) -> Path:
    name = "failures.jsonl" if shard_count == 1 else f"failures.shard-{shard_index}-of-{shard_count}.jsonl"
    return out_root / name


def _write_failures(out_root: Path, shard_index: int, shard_count: int, failures: list[dict]) -> None:
    lines = "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failures)
    write_atomic(failures_path(out_root, shard_index, shard_count), lines.encode("utf-8"))
    try:  # a copy beside Hydra's log, so each run dir tells its own story
        from hydra.core.hydra_config import HydraConfig

        run_dir = Path(HydraConfig.get().runtime.output_dir)
        with open(run_dir / "failures.jsonl", "a", encoding="utf-8") as f:
            f.write(lines)
    except Exception:  # noqa: BLE001 - not under Hydra (library use, tests)
        pass


def read_failures(out_root: Path) -> list[dict]:
    """The stage's failures, merged across shard files: one line per item (the newest file wins), and
    none for an item that has been done since (a later run with other shards or fixed input)."""
    rows: dict[str, dict] = {}
    for p in sorted(out_root.glob("failures*.jsonl"), key=lambda p: p.stat().st_mtime_ns):
        for line in p.read_text("utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                rows[row["id"]] = row
    return [r for _, r in sorted(rows.items())
            if not (r.get("item_dir") and (Path(r["item_dir"]) / META).is_file())]


def print_summaries(summaries: list[Summary]) -> None:
    console.print(summary_table(summaries))
