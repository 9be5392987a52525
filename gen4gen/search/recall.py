"""How much of the exact first-moment top-10 a fast path finds: measured once per parameter on self-check
queries (the means of random models, whose neighbours a query near them should find), kept beside the index."""
from __future__ import annotations

import json

import numpy as np

from gen4gen.io import json_bytes, write_atomic
from gen4gen.search.index import Space
from gen4gen.search.scores import first_moment_topk


# a fast path that finds less of the exact top-10 than this is not used: the next one, exact search last
MIN_RECALL = 0.95


def recalls(space: Space, path_name: str) -> dict:
    """The recalls measured so far (asked on every query: the file is read once)."""
    if f"{path_name}_recall" not in space._cache:
        try:
            known = json.loads((space._root / f"{space.name}_{path_name}_recall.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            known = {}
        space._cache[f"{path_name}_recall"] = known
    return space._cache[f"{path_name}_recall"]


def self_recall(space: Space, path_name: str, param: int, search) -> float:
    """recall@10 of ``search`` against exact search on :func:`self_queries` (a model's neighbours are what a
    query near it should find). Measured once per ``param`` and kept in ``<space>_<path_name>_recall.json``."""
    known = recalls(space, path_name)
    if str(param) not in known:
        qs, exact = self_queries(space)
        found = [len(set(search(q).tolist()) & set(e.tolist())) / len(e) for q, e in zip(qs, exact)]
        known[str(param)] = round(float(np.mean(found)), 4)
        write_atomic(space._root / f"{space.name}_{path_name}_recall.json", json_bytes(known))
    return float(known[str(param)])


def self_queries(space: Space, queries: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The self-check's queries (the means of ``queries`` random models) and their exact top-10 rows (one streamed
    pass), once per opened index."""
    if "self_queries" not in space._cache:
        m = len(space.mu_hat)
        rows = np.sort(np.random.default_rng(seed).choice(m, size=min(queries, m), replace=False))
        qs = np.asarray(space.mu_hat[rows], np.float32)
        qs /= np.maximum(np.linalg.norm(qs, axis=1, keepdims=True), 1e-12)
        space._cache["self_queries"] = (qs, first_moment_topk(space.mu_hat, qs, k=10)[0])
    return space._cache["self_queries"]
