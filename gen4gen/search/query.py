"""Ranked model search over a ModelIndex.

Scores per model (higher is better):
- ``first_moment``:   cos(q, mu_hat)                               (text; streamed matmul + argpartition, IVF or PQ scan)
- ``second_moment``:  tau q^T mu + 1/2 tau^2 q^T Sigma q           (text; the cumulant expansion of log E[exp(tau q^T x)])
- ``log_density``:    log N(x; mu, Sigma), cached logdet / Cholesky / Woodbury factors (image, sketch)
- ``frechet``:        -Frechet distance between the model Gaussians (model query)
- ``monte_carlo``:    log mean_i exp(tau q^T x_i) over the raw samples (baseline; needs raw features)
- ``multimodal``:     weighted sum of the per-query scores, each z-normalised over the models
"""
from __future__ import annotations

import json
import logging
import math

import numpy as np

from gen4gen.device import usable_cores
from gen4gen.encoders import unit
from gen4gen.io import json_bytes, write_atomic
from gen4gen.search.index import ModelIndex, Space, UnreadableArray

log = logging.getLogger(__name__)

CHUNK = 65536


# ---------------------------------------------------------------- first moment: the million-model path
def topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, best first (argpartition, then sort only k)."""
    k = min(k, scores.shape[-1])
    part = np.argpartition(-scores, k - 1, axis=-1)[..., :k]
    order = np.argsort(-np.take_along_axis(scores, part, -1), axis=-1, kind="stable")
    return np.take_along_axis(part, order, -1)


def scores_of(block: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``block @ q.T`` as float32. float16 rows go through torch's half-precision kernels: numpy has no
    fp16 BLAS and converting each chunk to float32 costs more than the product itself."""
    if block.dtype == np.float16:
        import warnings

        import torch

        with warnings.catch_warnings():  # memory-mapped rows are read-only; torch only reads them
            warnings.simplefilter("ignore", UserWarning)
            b = torch.from_numpy(np.asarray(block))
        return (b @ torch.from_numpy(np.ascontiguousarray(q.T, dtype=np.float16))).float().numpy()
    return np.asarray(block, np.float32) @ q.T


def first_moment_topk(mu_hat: np.ndarray, q: np.ndarray, k: int = 10, chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of ``mu_hat @ q`` for a batch of queries ``q`` (B, d), streamed in row chunks so the
    (memory-mapped) matrix never needs to be in memory at once. Returns (rows, scores), both (B, k)."""
    q = np.atleast_2d(np.asarray(q, np.float32))
    best_rows = np.zeros((len(q), 0), np.int64)
    best = np.zeros((len(q), 0), np.float32)
    for start in range(0, mu_hat.shape[0], chunk):
        s = scores_of(mu_hat[start:start + chunk], q).T
        top = topk(s, k)
        best_rows = np.concatenate([best_rows, top + start], 1)
        best = np.concatenate([best, np.take_along_axis(s, top, 1)], 1)
        if best.shape[1] > k:
            keep = topk(best, k)
            best_rows, best = np.take_along_axis(best_rows, keep, 1), np.take_along_axis(best, keep, 1)
    keep = topk(best, k)
    return np.take_along_axis(best_rows, keep, 1), np.take_along_axis(best, keep, 1)


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
        backend = "faiss" if _faiss() is not None else "numpy"
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
    if pq and _faiss() is not None:
        recall = _lists_recall(space, cent, assign, nprobe)
        # lists the self-check would refuse are not worth assigning every model: the codes serve instead
        if recall < MIN_RECALL and build_pq(space, seed=seed):
            _recalls(space, "ivf")[str(nprobe)] = recall
            write_atomic(root / f"{name}_ivf_recall.json", json_bytes(_recalls(space, "ivf")))
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
    qs, exact = _self_queries(space)
    probed = topk(qs @ cent.T, nprobe)
    rows = np.unique(exact)
    home = dict(zip(rows.tolist(), assign(np.asarray(space.mu_hat[rows], np.float32)).tolist()))
    return round(float(np.mean([[home[r] in p for r in e.tolist()] for p, e in zip(probed, exact)])), 4)


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    faiss.omp_set_num_threads(usable_cores())  # the cores this process may use, not the host's count
    return faiss


def _faiss_quantiser(x: np.ndarray, n_lists: int, iters: int, seed: int):
    """Spherical k-means (faiss), and the assignment of a model to its list through a small inverted file over
    the centroids themselves (sqrt(lists) groups, 6 probed): ~1/8 of the brute-force work, ~99% of the models
    land in the list brute force would pick (the rest in a neighbouring one, which a query probes as well)."""
    faiss = _faiss()
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


# ---------------------------------------------------------------- compressed full scan: features without clusters
# In isotropic features a query's 2nd-10th neighbours are a tail of near-equal scores (cos ~0.2 at d=512, gaps
# ~1e-3) spread over every inverted list. Scoring every model from 4-bit product-quantised codes (faiss fast
# scan) keeps the exact top-10 within the best few hundred approximate scores; those rows are rescored exactly.
# 2 dimensions a code (128 bytes a model at d=512, 1/16 of mu_hat): at 1e6 Gaussian models recall@10 is 0.998
# at 500 candidates, 4.6 ms a query; 4 dimensions a code halve the scan but need 8,000 candidates for 0.98,
# whose rescoring makes the query slower (5.8 ms).
PQ_SUBDIM = 2
PQ_CANDIDATES = 500
PQ_MIN_MODELS = 1000


def _pq_path(space: Space):
    return space._root / f"{space.name}_pq.faiss"


def has_pq(space: Space) -> bool:
    return _pq_path(space).is_file()


def can_build_pq(space: Space) -> bool:
    """faiss is installed, d is a multiple of 4 (two 4-bit codes a byte) and there are at least PQ_MIN_MODELS
    models (fewer are too few to train 16 centroids per code well; exact search is as fast there)."""
    m, d = space.mu_hat.shape
    return _faiss() is not None and not d % (2 * PQ_SUBDIM) and m >= PQ_MIN_MODELS


def build_pq(space: Space, sample: int = 65536, seed: int = 0) -> bool:
    """Product-quantised codes of every model's mu_hat for :func:`pq_topk`, written to ``<space>_pq.faiss``.
    False (nothing written) where :func:`can_build_pq` says no."""
    if not can_build_pq(space):
        return False
    faiss = _faiss()
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
    _drop_pq(space)
    tmp = _pq_path(space).with_suffix(".faiss.tmp")
    faiss.write_index(index, str(tmp))
    tmp.replace(_pq_path(space))
    return True


def _drop_pq(space: Space) -> None:
    """Removes the codes and their measured recall (and the open copy): a rebuild measures afresh."""
    _pq_path(space).unlink(missing_ok=True)
    (space._root / f"{space.name}_pq_recall.json").unlink(missing_ok=True)
    space._cache.pop("pq", None)
    space._cache.pop("pq_recall", None)


def pq_topk(space: Space, q: np.ndarray, k: int = 10, candidates: int = PQ_CANDIDATES) -> tuple[np.ndarray, np.ndarray]:
    """First-moment top-k of queries ``q`` (B, d): every model scored from its codes, the best ``candidates``
    rescored exactly from mu_hat. Returns (rows, scores), both (B, k)."""
    q = np.atleast_2d(np.asarray(q, np.float32))
    if "pq" not in space._cache:
        space._cache["pq"] = _faiss().read_index(str(_pq_path(space)))
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


# a fast path that finds less of the exact top-10 than this is not used: the next one, exact search last
MIN_RECALL = 0.95
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
    _drop_pq(space)


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
    """recall@10 of the inverted file at ``nprobe`` (:func:`_self_recall`, kept in ``<space>_ivf_recall.json``);
    where the build did not write the lists, what it measured then (0 for another nprobe: rebuild to try it)."""
    if not _has_lists(space):
        return float(_recalls(space, "ivf").get(str(nprobe), 0.0))
    return _self_recall(space, "ivf", nprobe, lambda q: ivf_topk(space, q, 10, nprobe, min_recall=0)[0])


def pq_recall(space: Space, candidates: int) -> float:
    """recall@10 of the compressed scan at ``candidates`` (kept in ``<space>_pq_recall.json``)."""
    return _self_recall(space, "pq", candidates, lambda q: pq_topk(space, q[None], 10, candidates)[0][0])


def _self_recall(space: Space, path_name: str, param: int, search) -> float:
    """recall@10 of ``search`` against exact search on :func:`_self_queries` (a model's neighbours are what a
    query near it should find). Measured once per ``param`` and kept in ``<space>_<path_name>_recall.json``."""
    known = _recalls(space, path_name)
    if str(param) not in known:
        qs, exact = _self_queries(space)
        found = [len(set(search(q).tolist()) & set(e.tolist())) / len(e) for q, e in zip(qs, exact)]
        known[str(param)] = round(float(np.mean(found)), 4)
        write_atomic(space._root / f"{space.name}_{path_name}_recall.json", json_bytes(known))
    return float(known[str(param)])


def _recalls(space: Space, path_name: str) -> dict:
    """The recalls measured so far (asked on every query: the file is read once)."""
    if f"{path_name}_recall" not in space._cache:
        try:
            known = json.loads((space._root / f"{space.name}_{path_name}_recall.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            known = {}
        space._cache[f"{path_name}_recall"] = known
    return space._cache[f"{path_name}_recall"]


def _self_queries(space: Space, queries: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The self-check's queries (the means of ``queries`` random models) and their exact top-10 rows (one streamed
    pass), once per opened index."""
    if "self_queries" not in space._cache:
        m = len(space.mu_hat)
        rows = np.sort(np.random.default_rng(seed).choice(m, size=min(queries, m), replace=False))
        qs = np.asarray(space.mu_hat[rows], np.float32)
        qs /= np.maximum(np.linalg.norm(qs, axis=1, keepdims=True), 1e-12)
        space._cache["self_queries"] = (qs, first_moment_topk(space.mu_hat, qs, k=10)[0])
    return space._cache["self_queries"]


def has_ivf(space: Space) -> bool:
    """The inverted file is on disk, or the compressed-scan codes that replaced it."""
    return _has_lists(space) or has_pq(space)


def _has_lists(space: Space) -> bool:
    return (space._root / f"{space.name}_ivf_centroids.npy").is_file()


# ---------------------------------------------------------------- full-score functions (every model)
def _chunks(m: int, chunk: int):
    for s in range(0, m, chunk):
        yield slice(s, min(s + chunk, m))


def first_moment(space: Space, q: np.ndarray) -> np.ndarray:
    q = unit(np.ravel(q), np.float32)
    return np.concatenate([scores_of(space.mu_hat[s], q[None])[:, 0] for s in _chunks(len(space.mu_hat), CHUNK)])


def quad_form(space: Space, q: np.ndarray, rows: slice) -> np.ndarray:
    """q^T Sigma q for the models in ``rows``."""
    if space.kind == "diag":
        return np.asarray(space.var[rows], np.float64) @ (q.astype(np.float64) ** 2)
    if space.kind == "full":
        cov = np.asarray(space.cov[rows], np.float64)
        return np.einsum("i,mij,j->m", q, cov, q)
    proj = np.einsum("mdr,d->mr", np.asarray(space.U[rows], np.float64), q)
    return (np.asarray(space.lam[rows], np.float64) * proj ** 2).sum(1) + np.asarray(space.noise[rows]) * float(q @ q)


def second_moment(space: Space, q: np.ndarray, tau: float) -> np.ndarray:
    q = unit(np.ravel(q), np.float32).astype(np.float64)
    chunk = _rows_per_chunk(space)
    return np.concatenate([tau * (np.asarray(space.mu[s], np.float64) @ q) + 0.5 * tau ** 2 * quad_form(space, q, s)
                           for s in _chunks(len(space.mu), chunk)])


def log_density(space: Space, x: np.ndarray) -> np.ndarray:
    """log N(x; mu_m, Sigma_m) for every model m, from the cached factorisations."""
    x = np.asarray(x, np.float64).ravel()
    d = space.dim
    out = []
    for s in _chunks(len(space.mu), _rows_per_chunk(space)):
        diff = x[None] - np.asarray(space.mu[s], np.float64)
        if space.kind == "diag":
            maha = (diff ** 2 / np.asarray(space.var[s], np.float64)).sum(1)
        elif space.kind == "full":
            z = np.linalg.solve(np.asarray(space.chol[s], np.float64), diff[..., None])[..., 0]  # L z = x - mu
            maha = (z ** 2).sum(1)
        else:  # Woodbury: Sigma^-1 = (I - U diag(lam / (lam + noise)) U^T) / noise
            lam, noise = np.asarray(space.lam[s], np.float64), np.asarray(space.noise[s], np.float64)
            proj = np.einsum("mdr,md->mr", np.asarray(space.U[s], np.float64), diff)
            maha = ((diff ** 2).sum(1) - (lam / (lam + noise[:, None]) * proj ** 2).sum(1)) / noise
        out.append(-0.5 * (maha + np.asarray(space.logdet[s], np.float64) + d * math.log(2 * math.pi)))
    return np.concatenate(out)


def frechet(space: Space, row: int, rerank: int = 256) -> np.ndarray:
    """Negative Frechet distance from model ``row`` to every model. Diagonal Sigmas are exact for all
    models; full and low-rank ones rank by mean distance first and compute the exact distance for the
    ``rerank`` nearest (the rest keep -inf)."""
    mu0 = np.asarray(space.mu[row], np.float64)
    m = len(space.mu)
    mean_d = np.concatenate([((np.asarray(space.mu[s], np.float64) - mu0) ** 2).sum(1) for s in _chunks(m, CHUNK)])
    if space.kind == "diag":
        v0 = np.sqrt(np.asarray(space.var[row], np.float64))
        tr = np.concatenate([((np.sqrt(np.asarray(space.var[s], np.float64)) - v0) ** 2).sum(1) for s in _chunks(m, CHUNK)])
        return -(mean_d + tr)
    out = np.full(m, -np.inf)
    for j in topk(-mean_d, rerank):
        out[j] = -(mean_d[j] + _cov_term(space, row, int(j)))
    return out


def _cov_term(space: Space, a: int, b: int) -> float:
    """tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)."""
    if space.kind == "full":
        ca, cb = np.asarray(space.cov[a], np.float64), np.asarray(space.cov[b], np.float64)
        root = np.sqrt(np.clip(np.linalg.eigvals(ca @ cb).real, 0, None)).sum()
        return float(np.trace(ca) + np.trace(cb) - 2 * root)
    # low rank + isotropic noise: both covariances act as s_a^2 s_b^2 I off span(U_a, U_b); only a
    # (<= 2r)-dimensional eigenproblem remains
    d = space.dim
    ua, ub = np.asarray(space.U[a], np.float64), np.asarray(space.U[b], np.float64)
    la, lb = np.asarray(space.lam[a], np.float64), np.asarray(space.lam[b], np.float64)
    na, nb = float(space.noise[a]), float(space.noise[b])
    basis, _ = np.linalg.qr(np.concatenate([ua, ub], 1))
    k = basis.shape[1]
    pa, pb = basis.T @ ua, basis.T @ ub
    sa = na * np.eye(k) + (pa * la) @ pa.T
    sb = nb * np.eye(k) + (pb * lb) @ pb.T
    root = np.sqrt(np.clip(np.linalg.eigvals(sa @ sb).real, 0, None)).sum() + (d - k) * math.sqrt(na * nb)
    return float(d * na + la.sum() + d * nb + lb.sum() - 2 * root)


def monte_carlo(space: Space, q: np.ndarray, tau: float) -> np.ndarray:
    """log mean_i exp(tau cos(q, x_i)) over each model's kept samples: the sampling baseline that the
    moment scores approximate."""
    q = unit(np.ravel(q), np.float32)
    out = np.full(len(space.mu), -np.inf)
    for row in range(len(space.mu)):
        x = space.samples(row)
        if len(x):
            s = tau * (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)) @ q
            out[row] = float(s.max() + np.log(np.mean(np.exp(s - s.max()))))
    return out


def combine(parts: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """Weighted sum of z-normalised score vectors (-inf entries score the minimum)."""
    total = np.zeros(len(parts[0][0]))
    for scores, weight in parts:
        s = np.asarray(scores, np.float64).copy()
        finite = np.isfinite(s)
        s[~finite] = s[finite].min() if finite.any() else 0.0
        total += weight * (s - s.mean()) / (s.std() + 1e-12)
    return total


def _rows_per_chunk(space: Space) -> int:
    per_row = space.dim * (space.dim if space.kind == "full" else space.meta.get("rank", 1) if space.kind == "lowrank" else 1)
    return max(1, min(CHUNK, 2 ** 25 // max(per_row, 1)))


def ranked(index: ModelIndex, scores: np.ndarray, k: int) -> list[dict]:
    rows = topk(np.where(np.isfinite(scores), scores, -np.inf), k)
    return [{"rank": r + 1, "model": index.names[i], "score": float(scores[i])} for r, i in enumerate(rows)]
