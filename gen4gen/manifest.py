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
- Each manifest records the hash of the settings that made its items (what they hold and which items
  there are: ``compose.num_samples`` too). Shard files of other settings than the newest one describe
  another dataset: their items are not current, and the readers (gen4gen.tree) count them apart, so
  shard 0 at ``num_samples=2`` and shard 1 at ``3`` never merge into one dataset silently.

The reading side, with the typed metas, is ``gen4gen.tree.TreeView``.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, StrictStr, ValidationError

from gen4gen.artefacts import explain
from gen4gen.io import json_bytes, write_atomic

log = logging.getLogger(__name__)
_warned: set[Path] = set()  # unreadable manifest files already said
ORDER = ("s1", "s2", "s3", "s4")
_FILE = re.compile(r"manifest(?:\.shard-(\d+)-of-(\d+))?\.json")


def manifest_path(out_root: Path, shard_index: int = 0, shard_count: int = 1) -> Path:
    name = "manifest.json" if shard_count == 1 else f"manifest.shard-{shard_index}-of-{shard_count}.json"
    return out_root / name


def write_manifest(out_root: Path, stage: str, shard_index: int, shard_count: int,
                   entries: dict[str, dict], settings: str = "") -> None:
    """``entries``: item id -> ``{"hash": ..., "inputs": {upstream id: hash}}`` of this run's done items;
    ``settings``: the hash of every setting that decides what the stage makes and which items (gen4gen.runner)."""
    for p in out_root.glob("manifest*.json"):
        m = _FILE.fullmatch(p.name)
        if m and int(m.group(2) or 1) != shard_count:  # an earlier split of the work
            p.unlink(missing_ok=True)
    body = {"stage": stage, "shard": [shard_index, shard_count], "settings": settings,
            "items": dict(sorted(entries.items()))}
    write_atomic(manifest_path(out_root, shard_index, shard_count), json_bytes(body))


class _Entry(BaseModel):
    hash: StrictStr
    inputs: dict[StrictStr, StrictStr] = {}


class _Manifest(BaseModel):
    settings: StrictStr = ""  # written before settings were recorded: goes with any
    items: dict[StrictStr, _Entry]


@dataclass
class Manifest:
    items: dict[str, dict]  # id -> {"hash", "inputs"}, shard files of the latest settings merged
    settings: str  # the settings hash of the stage's latest run ("" when not recorded)
    other_settings: set[str]  # ids only in manifests of other settings (a shard run with other settings)


def read_manifest(out_root: Path) -> Manifest | None:
    """The merged manifest files of the stage; None when the folder has none (an older tree) or none of
    them can be read (said once per file: then every finished item counts, as in an older tree). Shard
    files written with other settings than the newest one are left out: their items are listed in
    ``other_settings``, so that runs of different settings never merge silently."""
    files = sorted((p for p in out_root.glob("manifest*.json") if _FILE.fullmatch(p.name)),
                   key=lambda p: p.stat().st_mtime_ns)
    read: list[_Manifest] = []
    for p in files:
        try:
            read.append(_Manifest.model_validate_json(p.read_bytes()))
        except (OSError, ValueError, RecursionError) as e:  # pydantic's ValidationError is a ValueError
            if p not in _warned:
                _warned.add(p)
                why = explain(e).removeprefix(": ") if isinstance(e, ValidationError) else str(e)[:200]
                log.warning("%s is unreadable (%s): it is ignored; rerun that stage to write it again", p, why)
    if not read:
        return None
    latest = next((m.settings for m in reversed(read) if m.settings), "")
    merged: dict[str, dict] = {}
    other: set[str] = set()
    for m in read:  # oldest first: the newest file wins for an id
        if m.settings and m.settings != latest:
            other |= set(m.items)
        else:
            merged |= {k: v.model_dump() for k, v in m.items.items()}
    return Manifest(merged, latest, other - set(merged))
