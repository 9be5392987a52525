"""Ranked model search over a ModelIndex: the scores.

Scores per model (higher is better):
- ``first_moment``:   cos(q, mu_hat)                               (text; streamed matmul + argpartition, IVF or PQ scan)
- ``second_moment``:  tau q^T mu + 1/2 tau^2 q^T Sigma q           (text; the cumulant expansion of log E[exp(tau q^T x)])
- ``log_density``:    log N(x; mu, Sigma), cached logdet / Cholesky / Woodbury factors (image, sketch)
- ``frechet``:        -Frechet distance between the model Gaussians (model query)
- ``monte_carlo``:    log mean_i exp(tau q^T x_i) over the raw samples (baseline; needs raw features)
- ``multimodal``:     weighted sum of the per-query scores, each z-normalised over the models

The fast paths of first-moment search live beside: ``ivf.py`` (inverted file), ``pq.py`` (compressed scan),
``recall.py`` (how much of the exact top-10 a fast path finds).
"""
from __future__ import annotations

import math

import numpy as np

from gen4gen.encoders import unit
from gen4gen.search.index import ModelIndex, Space


CHUNK = 65536


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
