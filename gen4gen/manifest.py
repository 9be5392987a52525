"""Which finished items are current: produced by a stage's latest run and built from current inputs.

A finished item folder alone does not say that the current configuration still makes it: after
``compose.num_samples=5`` then 3, compositions 003 and 004 stay on disk; after s1 is rerun with other
settings, s2's compositions were built from cut-outs that no longer exist. The rule, once:

- At the end of a run, the runner writes ``manifest.json`` in the stage folder (one
  ``manifest.shard-<i>-of-<n>.json`` per shard): every item of the run that is done, with its hash
  (``config_hash:fingerprint`` of its meta) and the hashes of the upstream items it was made from.
- An item is *current* when it is in its stage's manifest (shard files merged, the newest file wins
  for an id), its ``meta.json`` still has that hash, and every input it lists is current with the hash
  it recorded. Downstream discovery and the export take only current items and count the others as
  stale in their summary.
- A run with ``shard.count=n`` removes the manifests of other shard counts: they describe an earlier
  split of the work. Shards of one count write separate files, so concurrent shards never clash.
- A run that stops early (Ctrl-C, a crash) writes none: the previous manifest stands, so items it
  redid with other settings are current only once a run of the stage finishes.
- A stage folder without any manifest (written before manifests existed) counts every finished
  item as current, so older trees still work; so does one whose every manifest is unreadable (torn,
  garbled, another shape: one warning names it), so a damaged manifest never hides finished work.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

from pydantic import BaseModel, StrictStr, ValidationError

from gen4gen.artefacts import explain
from gen4gen.io import json_bytes, write_atomic
from gen4gen.markers import done_items
from gen4gen.paths import STAGE_DIRS

log = logging.getLogger(__name__)
_warned: set[Path] = set()  # unreadable manifest files already said
ORDER = ("s1", "s2", "s3", "s4")
_FILE = re.compile(r"manifest(?:\.shard-(\d+)-of-(\d+))?\.json")


def manifest_path(out_root: Path, shard_index: int = 0, shard_count: int = 1) -> Path:
    name = "manifest.json" if shard_count == 1 else f"manifest.shard-{shard_index}-of-{shard_count}.json"
    return out_root / name


def write_manifest(out_root: Path, stage: str, shard_index: int, shard_count: int,
                   entries: dict[str, dict]) -> None:
    """``entries``: item id -> ``{"hash": ..., "inputs": {upstream id: hash}}`` of this run's done items."""
    for p in out_root.glob("manifest*.json"):
        m = _FILE.fullmatch(p.name)
        if m and int(m.group(2) or 1) != shard_count:  # an earlier split of the work
            p.unlink(missing_ok=True)
    body = {"stage": stage, "shard": [shard_index, shard_count], "items": dict(sorted(entries.items()))}
    write_atomic(manifest_path(out_root, shard_index, shard_count), json_bytes(body))


class _Entry(BaseModel):
    hash: StrictStr
    inputs: dict[StrictStr, StrictStr] = {}


class _Manifest(BaseModel):
    items: dict[StrictStr, _Entry]


def read_manifest(out_root: Path) -> dict[str, dict] | None:
    """The merged entries of the stage's manifest files; None when the folder has none (an older tree) or
    none of them can be read (said once per file: then every finished item counts, as in an older tree)."""
    files = sorted((p for p in out_root.glob("manifest*.json") if _FILE.fullmatch(p.name)),
                   key=lambda p: p.stat().st_mtime_ns)
    merged: dict[str, dict] | None = None
    for p in files:
        try:
            items = _Manifest.model_validate_json(p.read_bytes()).items
        except (OSError, ValueError, RecursionError) as e:  # pydantic's ValidationError is a ValueError
            if p not in _warned:
                _warned.add(p)
                why = explain(e).removeprefix(": ") if isinstance(e, ValidationError) else str(e)[:200]
                log.warning("%s is unreadable (%s): it is ignored; rerun that stage to write it again", p, why)
            continue
        merged = (merged or {}) | {k: v.model_dump() for k, v in items.items()}
    return merged



def meta_hash(meta: dict) -> str:
    return f"{meta.get('config_hash', '')}:{meta.get('fingerprint', '')}"


class Currency:
    """The current items of every stage under ``stages_dir``, computed once, upstream first."""

    def __init__(self, stages_dir: Path):
        self.stages_dir = Path(stages_dir)
        self._current: dict[str, dict[str, str]] = {}
        self.stale: dict[str, int] = {}  # per stage: finished items that are not current

    def current(self, stage: str) -> dict[str, str]:
        """item id -> hash of the stage's current items."""
        if stage in self._current:
            return self._current[stage]
        upstream = self.current(ORDER[ORDER.index(stage) - 1]) if ORDER.index(stage) > 0 else {}
        root = self.stages_dir / STAGE_DIRS[stage]
        done = {folder.relative_to(root).as_posix(): meta_hash(meta) for folder, meta in done_items(root)} \
            if root.is_dir() else {}
        manifest = read_manifest(root) if root.is_dir() else None
        if manifest is None:
            current = done
        else:
            current = {}
            for iid, entry in manifest.items():
                h, inputs = entry.get("hash"), entry.get("inputs") or {}
                if done.get(iid) == h and isinstance(inputs, dict) and \
                        all(upstream.get(u) == uh for u, uh in inputs.items()):
                    current[iid] = h
        self.stale[stage] = sum(1 for iid in done if iid not in current)
        self._current[stage] = current
        return current

    def is_current(self, stage: str, item_id: str, meta: dict | None = None) -> bool:
        h = self.current(stage).get(item_id)
        return h is not None and (meta is None or meta_hash(meta) == h)
