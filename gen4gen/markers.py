"""What the runner leaves behind for later stages and reruns: the ``meta.json`` completion marker of
each item and the stage's ``failures.jsonl`` (one file per shard)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

META = "meta.json"


def read_meta(out_dir: Path, name: str = META) -> dict | None:
    try:
        meta = json.loads((out_dir / name).read_text("utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: brackets nested thousands deep
        return None
    return meta if isinstance(meta, dict) else None


def done_items(root: Path) -> Iterable[tuple[Path, dict]]:
    """Every finished item below ``root`` (folders whose meta.json exists), in sorted order."""
    for meta_path in sorted(root.rglob(META)):
        meta = read_meta(meta_path.parent)
        if meta is not None:
            yield meta_path.parent, meta


def failures_path(out_root: Path, shard_index: int = 0, shard_count: int = 1) -> Path:
    name = "failures.jsonl" if shard_count == 1 else f"failures.shard-{shard_index}-of-{shard_count}.jsonl"
    return out_root / name


def write_failures(out_root: Path, shard_index: int, shard_count: int, failures: list[dict]) -> None:
    """The shard's failures file (replaced: it tells the latest run), and a copy beside Hydra's log so each run
    dir tells its own story."""
    from gen4gen.io import jsonl_bytes, write_atomic

    lines = jsonl_bytes(failures)
    write_atomic(failures_path(out_root, shard_index, shard_count), lines)
    try:
        from hydra.core.hydra_config import HydraConfig

        run_dir = Path(HydraConfig.get().runtime.output_dir)
        with open(run_dir / "failures.jsonl", "ab") as f:
            f.write(lines)
    except Exception:  # noqa: BLE001 - not under Hydra (library use, tests)
        pass


def read_failures(out_root: Path) -> list[dict]:
    """The stage's failures, merged across shard files: one line per item (the newest file wins), and
    none for an item that has been done since (a later run with other shards or fixed input)."""
    from gen4gen.io import read_jsonl

    rows: dict[str, dict] = {}
    for p in sorted(out_root.glob("failures*.jsonl"), key=lambda p: p.stat().st_mtime_ns):
        for row in read_jsonl(p):
            if "id" in row:
                rows[str(row["id"])] = row
    return [r for _, r in sorted(rows.items())
            if not (r.get("item_dir") and (out_root / str(r["item_dir"]) / META).is_file())]


def upstream_reasons(stages_dir: Path, stage: str, n: int = 3) -> str:
    """The first ``n`` failure lines of the stages before ``stage`` (all of s1..s4 for the export), as one
    sentence: when a stage has nothing to do, the real reason sits in an earlier stage's failures.jsonl."""
    from gen4gen.paths import STAGE_DIRS

    rows = []
    for name, folder in STAGE_DIRS.items():
        if name == stage:
            break
        if (Path(stages_dir) / folder).is_dir():
            rows += [(name, r) for r in read_failures(Path(stages_dir) / folder)]
    if not rows:
        return ""
    shown = "; ".join(f"{name} {r.get('id', '?')}: {r.get('reason', '?')}" for name, r in rows[:n])
    more = f" (and {len(rows) - n} more in the stages' failures.jsonl)" if len(rows) > n else ""
    return f"upstream failures: {shown}{more}"
