"""The compressed full scan for features without clusters: product-quantised codes of every model's mu_hat
(faiss), the best candidates rescored exactly."""
from __future__ import annotations

import numpy as np

from gen4gen.device import usable_cores
from gen4gen.search.index import Space
from gen4gen.search.recall import self_recall
from gen4gen.search.scores import CHUNK, scores_of, topk


# In isotropic features a query's 2nd-10th neighbours are a tail of near-equal scores (cos ~0.2 at d=512, gaps
# ~1e-3) spread over every inverted list. Scoring every model from 4-bit product-quantised codes (faiss fast
# scan) keeps the exact top-10 within the best few hundred approximate scores; those rows are rescored exactly.
# 2 dimensions a code (128 bytes a model at d=512, 1/16 of mu_hat): at 1e6 Gaussian models recall@10 is 0.998
# at 500 candidates, 4.6 ms a query; 4 dimensions a code halve the scan but need 8,000 candidates for 0.98,
# whose rescoring makes the query slower (5.8 ms).
PQ_SUBDIM = 2


PQ_CANDIDATES = 500


PQ_MIN_MODELS = 1000


def faiss_module():
    try:
        import faiss
    except ImportError:
        return None
    faiss.omp_set_num_threads(usable_cores())  # the cores this process may use, not the host's count
    return faiss


def pq_path(space: Space):
    return space._root / f"{space.name}_pq.faiss"


def has_pq(space: Space) -> bool:
    return pq_path(space).is_file()


def can_build_pq(space: Space) -> bool:
    """faiss is installed, d is a multiple of 4 (two 4-bit codes a byte) and there are at least PQ_MIN_MODELS
    models (fewer are too few to train 16 centroids per code well; exact search is as fast there)."""
    m, d = space.mu_hat.shape
    return faiss_module() is not None and not d % (2 * PQ_SUBDIM) and m >= PQ_MIN_MODELS


def build_pq(space: Space, sample: int = 65536, seed: int = 0) -> bool:
    """Product-quantised codes of every model's mu_hat for :func:`pq_topk`, written to ``<space>_pq.faiss``.
    False (nothing written) where :func:`can_build_pq` says no."""
    if not can_build_pq(space):
        return False
    faiss = faiss_module()
    mu_hat = space.mu_hat
    m, d = mu_hat.shape
    index = faiss.IndexPQFastScan(d, d // PQ_SUBDIM, 4, faiss.METRIC_INNER_PRODUCT)
    rows = np.sort(np.random.default_rng(seed).choice(m, size=min(m, sample), replace=False))
    # d/2 tiny k-means (16 centroids) on one thread: with two, their thread barriers cost more than they share
    # (0.7 s vs 6-11 s for d/4 of them at 65k rows when another process holds a core)
    faiss.omp_set_num_threads(1)
    try:
        index.train(np.asarray(mu_hat[rows], np.float32))
    finally:
        faiss.omp_set_num_threads(usable_cores())
    for s in range(0, m, CHUNK):
        index.add(np.asarray(mu_hat[s:s + CHUNK], np.float32))
    drop_pq(space)
    tmp = pq_path(space).with_suffix(".faiss.tmp")
    faiss.write_index(index, str(tmp))
    tmp.replace(pq_path(space))
    return True


def drop_pq(space: Space) -> None:
    """Removes the codes and their measured recall (and the open copy): a rebuild measures afresh."""
    pq_path(space).unlink(missing_ok=True)
    (space._root / f"{space.name}_pq_recall.json").unlink(missing_ok=True)
    space._cache.pop("pq", None)
    space._cache.pop("pq_recall", None)


def pq_topk(space: Space, q: np.ndarray, k: int = 10, candidates: int = PQ_CANDIDATES) -> tuple[np.ndarray, np.ndarray]:
    """First-moment top-k of queries ``q`` (B, d): every model scored from its codes, the best ``candidates``
    rescored exactly from mu_hat. Returns (rows, scores), both (B, k)."""
    q = np.atleast_2d(np.asarray(q, np.float32))
    if "pq" not in space._cache:
        space._cache["pq"] = faiss_module().read_index(str(pq_path(space)))
    index = space._cache["pq"]
    k = min(k, index.ntotal)
    # one query: faiss's kernel for a single query (implem 15, 1.4x faster than its default at 1e6 models);
    # a batch: its default, which splits the queries over the threads
    index.implem = 15 if len(q) == 1 else 0
    cand = index.search(q, max(k, min(candidates, index.ntotal)))[1]
    out_rows, out = np.zeros((len(q), k), np.int64), np.zeros((len(q), k), np.float32)
    for i, c in enumerate(cand):
        c = np.sort(c[c >= 0])  # the memory-mapped rows read front to back
        s = scores_of(space.mu_hat[c], q[i:i + 1])[:, 0]
        top = topk(s, k)
        out_rows[i, :len(top)], out[i, :len(top)] = c[top], s[top]
    return out_rows, out


def pq_recall(space: Space, candidates: int) -> float:
    """recall@10 of the compressed scan at ``candidates`` (kept in ``<space>_pq_recall.json``)."""
    return self_recall(space, "pq", candidates, lambda q: pq_topk(space, q[None], 10, candidates)[0][0])
