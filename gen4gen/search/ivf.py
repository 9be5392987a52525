"""The inverted file of first-moment search (spherical k-means lists over mu_hat), and the choice per query
between it, the compressed scan (``pq.py``) and exact search by their measured recall (``recall.py``)."""
from __future__ import annotations

import logging
import math

import numpy as np

from gen4gen.io import json_bytes, write_atomic
from gen4gen.search.index import Space, UnreadableArray
from gen4gen.search.pq import PQ_CANDIDATES, build_pq, drop_pq, faiss_module, has_pq, pq_recall, pq_topk
from gen4gen.search.recall import MIN_RECALL, recalls, self_queries, self_recall
from gen4gen.search.scores import CHUNK, first_moment_topk, scores_of, topk

log = logging.getLogger(__name__)


# faiss's k-means is trained on this many models per list (its own advice: at least 39), not on every model
TRAIN_PER_LIST = 40


def build_ivf(space: Space, n_lists: int | None = None, iters: int = 10, sample: int = 100_000, seed: int = 0,
              backend: str = "auto", pq: bool = True, nprobe: int = 8) -> str:
    """Inverted file over mu_hat (spherical k-means): first-moment queries then scan ``nprobe`` lists instead
    of every model. ``faiss`` (the ``faiss`` extra; ``auto`` uses it when installed) trains the k-means and
    assigns the models through a two-level quantiser; ``numpy`` does both by brute force (assigning 1e6 models to
    2,000 lists is 1e12 multiply-adds). Writes ``<space>_ivf_{centroids,order,offsets,vecs}.npy`` next to the
    index, the rows of a list contiguous. With ``pq`` (when faiss is installed) it first measures the lists'
    recall at ``nprobe``; under MIN_RECALL (features without clusters) it writes the codes of the compressed scan
    (:func:`build_pq`) instead of the lists. Returns the backend used."""
    from numpy.lib.format import open_memmap

    mu_hat = space.mu_hat
    m, d = mu_hat.shape
    n_lists = n_lists or max(1, round(2 * math.sqrt(m)))  # ~sqrt(M)/2 models per list
    rng = np.random.default_rng(seed)
    if backend == "auto":
        backend = "faiss" if faiss_module() is not None else "numpy"
    if backend not in ("faiss", "numpy"):
        raise ValueError(f"IVF backend {backend!r}: faiss, numpy or auto")
    size = min(m, max(n_lists, sample if backend == "numpy" else min(sample, TRAIN_PER_LIST * n_lists)))
    x = np.asarray(mu_hat[np.sort(rng.choice(m, size=size, replace=False))], np.float32)
    if backend == "faiss":
        cent, assign = _faiss_quantiser(x, n_lists, iters, seed)
    else:
        cent = _spherical_kmeans(x, n_lists, iters, rng)

        def assign(rows: np.ndarray) -> np.ndarray:
            return _assign(rows, cent)
    root, name = space._root, space.name
    drop_fast_paths(space)  # files measured or built for models before
    if pq and faiss_module() is not None:
        recall = _lists_recall(space, cent, assign, nprobe)
        # lists the self-check would refuse are not worth assigning every model: the codes serve instead
        if recall < MIN_RECALL and build_pq(space, seed=seed):
            recalls(space, "ivf")[str(nprobe)] = recall
            write_atomic(root / f"{name}_ivf_recall.json", json_bytes(recalls(space, "ivf")))
            log.info("search: an inverted file would find %.0f%% of the exact top-10 at nprobe=%d (features without "
                     "clusters?): not built, the compressed scan serves", 100 * recall, nprobe)
            return backend
    lists = np.concatenate([assign(np.asarray(mu_hat[s:s + CHUNK], np.float32)) for s in range(0, m, CHUNK)])
    order = np.argsort(lists, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(np.bincount(lists, minlength=n_lists))])
    vecs = open_memmap(root / f"{name}_ivf_vecs.npy", mode="w+", dtype=mu_hat.dtype, shape=(m, d))
    for s in range(0, m, CHUNK):  # rows of one list are contiguous: a probe reads a few slices
        vecs[s:s + CHUNK] = mu_hat[order[s:s + CHUNK]]
    vecs.flush()
    np.save(root / f"{name}_ivf_centroids.npy", cent.astype(np.float32))
    np.save(root / f"{name}_ivf_order.npy", order.astype(np.int64))
    np.save(root / f"{name}_ivf_offsets.npy", offsets.astype(np.int64))
    return backend


def _lists_recall(space: Space, cent: np.ndarray, assign, nprobe: int) -> float:
    """What :func:`ivf_recall` will measure, before any list is written: the share of the self-check queries'
    exact top-10 whose list is among the ``nprobe`` a query probes."""
    qs, exact = self_queries(space)
    probed = topk(qs @ cent.T, nprobe)
    rows = np.unique(exact)
    home = dict(zip(rows.tolist(), assign(np.asarray(space.mu_hat[rows], np.float32)).tolist()))
    return round(float(np.mean([[home[r] in p for r in e.tolist()] for p, e in zip(probed, exact)])), 4)


def _faiss_quantiser(x: np.ndarray, n_lists: int, iters: int, seed: int):
    """Spherical k-means (faiss), and the assignment of a model to its list through a small inverted file over
    the centroids themselves (sqrt(lists) groups, 6 probed): ~1/8 of the brute-force work, ~99% of the models
    land in the list brute force would pick (the rest in a neighbouring one, which a query probes as well)."""
    faiss = faiss_module()
    d = x.shape[1]
    kmeans = faiss.Kmeans(d, n_lists, niter=iters, seed=seed, spherical=True, max_points_per_centroid=len(x),
                          min_points_per_centroid=1)
    kmeans.train(x)
    cent = kmeans.centroids
    groups = max(1, round(math.sqrt(n_lists)))
    quantiser = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, groups, faiss.METRIC_INNER_PRODUCT)
    quantiser.cp.min_points_per_centroid = 1  # `groups` centroids of n_lists points: few by design
    quantiser.train(cent)
    quantiser.add(cent)
    quantiser.nprobe = min(6, groups)

    def assign(rows: np.ndarray) -> np.ndarray:
        return quantiser.search(np.ascontiguousarray(rows, np.float32), 1)[1][:, 0].astype(np.int64)

    return cent, assign


def _spherical_kmeans(x: np.ndarray, n_lists: int, iters: int, rng: np.random.Generator) -> np.ndarray:
    cent = x[rng.choice(len(x), size=n_lists, replace=False)].copy()
    for _ in range(iters):
        assign = _assign(x, cent)
        sums = np.zeros_like(cent)
        np.add.at(sums, assign, x)
        empty = np.bincount(assign, minlength=n_lists) == 0
        sums[empty] = x[rng.choice(len(x), size=int(empty.sum()))]  # re-seed empty lists
        cent = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return cent


def _assign(x: np.ndarray, cent: np.ndarray) -> np.ndarray:
    return np.argmax(x @ cent.T, axis=1)


_said: set[tuple] = set()


def _say_once(key: tuple, level: int, msg: str, *args) -> None:
    if key not in _said:
        _said.add(key)
        log.log(level, msg, *args)


def ivf_topk(space: Space, q: np.ndarray, k: int = 10, nprobe: int = 16, min_recall: float = MIN_RECALL,
             candidates: int = PQ_CANDIDATES) -> tuple[np.ndarray, np.ndarray]:
    """First-moment top-k of one query through the inverted file, when the file's measured recall at this
    ``nprobe`` reaches ``min_recall``; else through the compressed scan (:func:`pq_topk`) when its measured
    recall at ``candidates`` does (features without clusters defeat any IVF, not a full scan); else exact.
    Fast-path files that cannot be read (truncated, garbled) are removed and the query is answered exactly:
    they are derived from mu_hat, and the next search rebuilds them."""
    q = np.asarray(q, np.float32).ravel()
    try:
        return _fast_topk(space, q, k, nprobe, min_recall, candidates)
    except (UnreadableArray, RuntimeError, ValueError, IndexError, TypeError, KeyError, EOFError) as e:
        if min_recall <= 0:  # the lists themselves were asked for (a recall measurement): no fallback
            raise
        # faiss says RuntimeError, a garbled recall file TypeError/KeyError, a truncated array ValueError
        what = f"{e.file} ({e.reason})" if isinstance(e, UnreadableArray) else \
            f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
        _say_once((str(space._root), space.name, "unreadable"), logging.WARNING,
                  "search: a fast-search file of %s is unreadable, %s: searching exactly; the next search "
                  "rebuilds them", space._root, what)
        drop_fast_paths(space)
        rows, scores = first_moment_topk(space.mu_hat, q[None], k)
        return rows[0], scores[0]


def drop_fast_paths(space: Space) -> None:
    """Removes the inverted file, the codes and their measured recalls (and any open copy of them)."""
    for f in ("centroids", "order", "offsets", "vecs", "recall"):
        (space._root / f"{space.name}_ivf_{f}.{'json' if f == 'recall' else 'npy'}").unlink(missing_ok=True)
        space._cache.pop(f"ivf_{f}", None)
    drop_pq(space)


def _fast_topk(space: Space, q: np.ndarray, k: int, nprobe: int, min_recall: float,
               candidates: int) -> tuple[np.ndarray, np.ndarray]:
    if min_recall > 0:
        key = (str(space._root), space.name, nprobe, candidates)
        recall = ivf_recall(space, nprobe)
        if recall < min_recall:
            pq = pq_recall(space, candidates) if has_pq(space) else 0.0
            if pq >= min_recall:
                _say_once(key, logging.INFO, "search: the inverted file finds %.0f%% of the exact top-10 at nprobe=%d "
                          "on this index (features without clusters?); the compressed scan rescoring %d candidates "
                          "finds %.0f%%: using it", 100 * recall, nprobe, candidates, 100 * pq)
                rows, scores = pq_topk(space, q[None], k, candidates)
                return rows[0], scores[0]
            _say_once(key, logging.WARNING, "search: the inverted file finds %.0f%% of the exact top-10 at nprobe=%d "
                      "on this index (features without clusters?)%s: searching exactly; a larger search.ivf.nprobe "
                      "or search.ivf.candidates may reach %.0f%%", 100 * recall, nprobe,
                      f", the compressed scan {100 * pq:.0f}% at {candidates} candidates" if has_pq(space) else "",
                      100 * min_recall)
            rows, scores = first_moment_topk(space.mu_hat, q[None], k)
            return rows[0], scores[0]
        _say_once(key, logging.INFO, "search: the inverted file finds %.0f%% of the exact top-10 at nprobe=%d: "
                  "using it", 100 * recall, nprobe)
    cent, offsets = space.ivf_centroids, space.ivf_offsets
    lists = np.sort(topk(cent @ q, nprobe))  # in file order: the probed slices are read front to back
    vecs = space.ivf_vecs
    # each list's rows are scored where they lie (a memory-mapped slice), never copied into one block
    s = np.concatenate([scores_of(vecs[offsets[c]:offsets[c + 1]], q[None])[:, 0] for c in lists])
    pos = np.concatenate([np.arange(offsets[c], offsets[c + 1]) for c in lists])
    top = topk(s, k)
    return np.asarray(space.ivf_order[pos[top]]), s[top]


def ivf_recall(space: Space, nprobe: int) -> float:
    """recall@10 of the inverted file at ``nprobe`` (:func:`self_recall`, kept in ``<space>_ivf_recall.json``);
    where the build did not write the lists, what it measured then (0 for another nprobe: rebuild to try it)."""
    if not _has_lists(space):
        return float(recalls(space, "ivf").get(str(nprobe), 0.0))
    return self_recall(space, "ivf", nprobe, lambda q: ivf_topk(space, q, 10, nprobe, min_recall=0)[0])


def has_ivf(space: Space) -> bool:
    """The inverted file is on disk, or the compressed-scan codes that replaced it."""
    return _has_lists(space) or has_pq(space)


def _has_lists(space: Space) -> bool:
    return (space._root / f"{space.name}_ivf_centroids.npy").is_file()
