"""Stable hashes: config hashes in meta files, per-item randomness, shard membership, file fingerprints."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np


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


def stat_fingerprint(paths) -> str:
    """A hash of each path with its size and modification time, files below a folder included (a stat each, no
    reading): what a rerun compares to tell whether the inputs of a report changed. A missing path counts as such."""
    h = hashlib.blake2b(digest_size=12)
    for path in paths:
        path = Path(path)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            try:
                st = f.stat()
                h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{f}|missing\n".encode())
    return h.hexdigest()
