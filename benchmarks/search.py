"""Model-search latency, build time and recall vs number of models (synthetic, first-moment top-10): exact
search, the inverted file built by faiss (k-means coarse quantiser) side by side with the numpy spherical k-means,
and the compressed scan (PQ fast scan of every model + exact rescoring) that serves features without clusters.

    python benchmarks/search.py [--sizes 100000 1000000] [--sets clustered gaussian] [--dim 512]

For each set and size it writes a real index (memory-mapped mu_hat via IndexWriter), then times exact streamed
top-10 (one query, and per query in batches of 64), per IVF backend the build (wall and CPU seconds) and
per-query top-10 at several nprobe values with recall@10 against exact search, then the compressed scan's build
and per-query top-10 at several candidate counts, and the path the search stage picks by measured self-recall. Sets: ``clustered`` (models
around 2,000 base-model families, as fine-tunes cluster around their base) and ``gaussian`` (means drawn from
one isotropic Gaussian: no structure for the lists to follow).
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from gen4gen.search.index import IndexInfo, IndexWriter, ModelIndex, MomentSpec, Space, write_info  # noqa: E402
from gen4gen.search.ivf import build_ivf, ivf_recall, ivf_topk  # noqa: E402
from gen4gen.search.pq import PQ_CANDIDATES, PQ_SUBDIM, build_pq, has_pq, pq_path, pq_recall, pq_topk  # noqa: E402
from gen4gen.search.recall import MIN_RECALL  # noqa: E402
from gen4gen.search.scores import first_moment_topk  # noqa: E402
from timing import timed  # noqa: E402  (benchmarks/timing.py: the script folder is on sys.path)

def synthetic_index(root: Path, n: int, d: int, dtype: str, kind: str, seed: int = 0) -> ModelIndex:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, d)).astype(np.float32)
    w = IndexWriter(root, "image", n, d, MomentSpec("diag", dtype=dtype))
    for s in range(0, n, 65536):
        m = min(65536, n - s)
        if kind == "clustered":
            mu = centres[rng.integers(0, len(centres), m)] + 0.5 * rng.standard_normal((m, d)).astype(np.float32)
        else:
            mu = rng.standard_normal((m, d)).astype(np.float32)
        w.arrays["mu_hat"][s:s + m] = mu / np.linalg.norm(mu, axis=1, keepdims=True)
    w.close()
    write_info(root, IndexInfo(names=[f"model_{i}" for i in range(n)],
                               spaces={"image": {"dim": d, "encoder": "synthetic", "moment": "diag", "rank": 0, "raw": False}}))
    return ModelIndex(root)


def recall(rows, exact_rows: np.ndarray) -> float:
    """recall@10: the share of each query's exact top-10 among its found rows, averaged over the queries."""
    return float(np.mean([len(set(np.asarray(r).tolist()) & set(e.tolist())) / 10 for r, e in zip(rows, exact_rows)]))


def recall_at_10(space: Space, qs: np.ndarray, exact_rows: np.ndarray, nprobe: int) -> float:
    return recall([ivf_topk(space, q, 10, nprobe, min_recall=0)[0] for q in qs], exact_rows)


def measure(space: Space, qs: np.ndarray, backend: str, nprobes: list[int]) -> list[str]:
    """Build the IVF with ``backend``; its build wall/CPU seconds, then ms per query and recall@10 per nprobe."""
    exact_rows = first_moment_topk(space.mu_hat, qs, k=10)[0]
    wall, cpu = time.perf_counter(), time.process_time()
    build_ivf(space, backend=backend, pq=False)  # the compressed scan's codes are timed on their own
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    lists = len(space.ivf_centroids)
    # what the search stage would do: use the IVF at nprobe=8 only when its own recall check passes
    self_recall = ivf_recall(space, 8)
    cells = [backend, str(lists), f"{wall:.1f}", f"{cpu:.1f}",
             f"{self_recall:.3f} ({'IVF' if self_recall >= MIN_RECALL else 'exact'})"]
    for nprobe in nprobes:
        nprobe = min(nprobe, lists)
        ivf_topk(space, qs[0], 10, nprobe, min_recall=0)  # the probed lists' pages
        ms = timed(lambda nprobe=nprobe: [ivf_topk(space, q, 10, nprobe, min_recall=0) for q in qs], 3) / len(qs) * 1000
        cells.append(f"{ms:.2f} / {recall_at_10(space, qs, exact_rows, nprobe):.3f}")
    return cells


def measure_pq(space: Space, qs: np.ndarray, candidates: list[int], nprobe: int = 8) -> list[str]:
    """Build as the search stage does (lists where they pass, else codes), then the compressed scan's codes alone
    (wall/CPU seconds, MB); per candidate count its self-recall, ms for one query, ms per query in a batch of
    64 and recall@10; last, the path the stage takes at ``nprobe`` and the default candidate count, its ms per query
    and recall@10."""
    exact_rows = first_moment_topk(space.mu_hat, qs, k=10)[0]
    # the search stage's build: lists where their recall at nprobe passes, else the codes
    stage_wall, stage_cpu = time.perf_counter(), time.process_time()
    build_ivf(space, nprobe=nprobe)
    stage_wall, stage_cpu = time.perf_counter() - stage_wall, time.process_time() - stage_cpu
    stage = f"{stage_wall:.1f} / {stage_cpu:.1f} ({'codes' if has_pq(space) else 'lists'})"
    wall, cpu = time.perf_counter(), time.process_time()
    build_pq(space)  # the codes alone (rebuilt where the stage wrote them), for every set
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    mb = pq_path(space).stat().st_size / 2 ** 20
    cells = [f"{wall:.1f}", f"{cpu:.1f}", f"{mb:.0f}", stage]
    batch = np.repeat(qs, max(1, 64 // len(qs) + 1), axis=0)[:64]
    for c in candidates:
        found = recall(pq_topk(space, qs, 10, c)[0], exact_rows)
        single = timed(lambda c=c: [pq_topk(space, q[None], 10, c) for q in qs[:20]], 3) / 20 * 1000
        batched = timed(lambda c=c: pq_topk(space, batch, 10, c), 3) / 64 * 1000
        cells.append(f"{pq_recall(space, c):.3f} | {single:.2f} / {batched:.2f} / {found:.3f}")
    ivf_ok = ivf_recall(space, nprobe) >= MIN_RECALL
    path = "IVF" if ivf_ok else "PQ" if pq_recall(space, PQ_CANDIDATES) >= MIN_RECALL else "exact"
    ivf_topk(space, qs[0], 10, nprobe)
    stage = timed(lambda: [ivf_topk(space, q, 10, nprobe) for q in qs[:20]], 3) / 20 * 1000
    found = recall([ivf_topk(space, q, 10, nprobe)[0] for q in qs], exact_rows)
    return cells + [f"{path}: {stage:.2f} / {found:.3f}"]


def exact_ms(space: Space, qs: np.ndarray) -> tuple[float, float]:
    """Exact streamed top-10: ms for one query, and ms per query in a batch of 64."""
    first_moment_topk(space.mu_hat, qs[:1])  # warm the page cache
    single = timed(lambda: [first_moment_topk(space.mu_hat, q[None], k=10) for q in qs[:5]], 3) / 5
    batch = np.repeat(qs, max(1, 64 // len(qs) + 1), axis=0)[:64]
    return single * 1000, timed(lambda: first_moment_topk(space.mu_hat, batch, k=10), 3) / 64 * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--sets", nargs="+", default=["clustered", "gaussian"], choices=["clustered", "gaussian"])
    ap.add_argument("--backends", nargs="+", default=["numpy", "faiss"], choices=["numpy", "faiss"])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--nprobes", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--candidates", type=int, nargs="+", default=[250, 500, 1000, 2000])
    ap.add_argument("--dir", default=None, help="where the synthetic indexes go (default: a temp dir)")
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    print(f"load average at start: {os.getloadavg()}")
    table = Table(title=f"first-moment top-10, d={args.dim}, mu_hat {args.dtype}, {os.cpu_count()} CPU cores")
    for col in ("set", "models", "exact 1 query ms", "exact batch-64 ms/query", "IVF", "lists", "build s",
                "build CPU s", "self-recall nprobe=8 (stage uses)", *(f"nprobe={p} ms / recall@10" for p in args.nprobes), "load avg", "peak RSS MB"):
        table.add_column(col, justify="right")
    pq_table = Table(title=f"compressed scan: PQ fast scan (4 bits per {PQ_SUBDIM} dims) + exact rescoring of C candidates; "
                           "per C: self-recall | ms 1 query / ms per query in a batch of 64 / recall@10")
    for col in ("set", "models", "exact 1 query / batch-64 ms", "IVF (last backend) build s", "PQ build s",
                "PQ build CPU s", "codes MB", "stage build s / CPU s", *(f"C={c}" for c in args.candidates),
                f"stage path (nprobe=8, C={PQ_CANDIDATES}): ms / recall@10", "load avg"):
        pq_table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for kind in args.sets:
            for n in args.sizes:
                root = Path(tmp) / f"{kind}_{n}"
                space = synthetic_index(root, n, args.dim, args.dtype, kind).spaces["image"]
                # queries near random models (a text query lands near the models that match it)
                picks = np.sort(rng.integers(0, n, args.queries))
                qs = np.asarray(space.mu_hat[picks], np.float32) + 0.05 * rng.standard_normal((args.queries, args.dim))
                qs = (qs / np.linalg.norm(qs, axis=1, keepdims=True)).astype(np.float32)
                single, batched = exact_ms(space, qs)
                for backend in args.backends:
                    cells = measure(space, qs, backend, args.nprobes)
                    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                    table.add_row(kind, f"{n:,}", f"{single:.1f}", f"{batched:.2f}", *cells,
                                  f"{os.getloadavg()[0]:.1f}", f"{peak:.0f}")
                    Console(width=250).print(table)
                pq_table.add_row(kind, f"{n:,}", f"{single:.1f} / {batched:.2f}", cells[2],
                                 *measure_pq(space, qs, args.candidates), f"{os.getloadavg()[0]:.1f}")
                Console(width=250).print(pq_table)
                shutil.rmtree(root)  # 4 GB per set at 1e6 (mu_hat and the IVF's copy)


if __name__ == "__main__":
    main()
