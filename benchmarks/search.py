"""Model-search latency and memory vs number of models (synthetic, first-moment top-10).

    python benchmarks/search.py [--sizes 1000 10000 100000 1000000] [--dim 512] [--dtype float16]

For each size it writes a real index (memory-mapped mu_hat via IndexWriter) of clustered synthetic
model means, then times: exact streamed top-10 for one query, the same per query in batches of 64,
and the inverted file (IVF, built once) at two nprobe values with its recall@10 against exact search.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from gen4gen.search import query as Q  # noqa: E402
from gen4gen.search.index import IndexInfo, IndexWriter, ModelIndex, MomentSpec, write_info  # noqa: E402
from timing import timed  # noqa: E402  (benchmarks/timing.py: the script folder is on sys.path)


def synthetic_index(root: Path, n: int, d: int, dtype: str, seed: int = 0) -> ModelIndex:
    """Model means drawn around 2,000 'base model' families, as fine-tunes cluster around their base."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, d)).astype(np.float32)
    w = IndexWriter(root, "image", n, d, MomentSpec("diag", dtype=dtype))
    for s in range(0, n, 65536):
        m = min(65536, n - s)
        mu = centres[rng.integers(0, len(centres), m)] + 0.5 * rng.standard_normal((m, d)).astype(np.float32)
        w.arrays["mu_hat"][s:s + m] = mu / np.linalg.norm(mu, axis=1, keepdims=True)
    w.close()
    write_info(root, IndexInfo(names=[f"model_{i}" for i in range(n)],
                               spaces={"image": {"dim": d, "encoder": "synthetic", "moment": "diag", "rank": 0, "raw": False}}))
    return ModelIndex(root)



def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--dir", default=None, help="where the synthetic indexes go (default: a temp dir)")
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    table = Table(title=f"first-moment top-10, d={args.dim}, mu_hat {args.dtype}, {os.cpu_count()} CPU cores")
    for col in ("models", "index MB", "exact 1 query ms", "exact batch-64 ms/query", "IVF lists", "IVF build s",
                "IVF nprobe=8 ms", "recall@10", "IVF nprobe=32 ms", "recall@10 ", "peak RSS MB"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for n in args.sizes:
            root = Path(tmp) / str(n)
            index = synthetic_index(root, n, args.dim, args.dtype)
            space = index.spaces["image"]
            mb = (root / "image_mu_hat.npy").stat().st_size / 2 ** 20
            # queries near random models (a text query lands near the models that match it)
            picks = rng.integers(0, n, args.queries)
            qs = np.asarray(space.mu_hat[np.sort(picks)], np.float32) + 0.05 * rng.standard_normal((args.queries, args.dim))
            qs = (qs / np.linalg.norm(qs, axis=1, keepdims=True)).astype(np.float32)
            Q.first_moment_topk(space.mu_hat, qs[:1])  # warm the page cache
            exact_rows = Q.first_moment_topk(space.mu_hat, qs, k=10)[0]
            single = timed(lambda: [Q.first_moment_topk(space.mu_hat, q[None], k=10) for q in qs[:5]], 3) / 5
            batch = np.repeat(qs, max(1, 64 // len(qs) + 1), axis=0)[:64]
            batched = timed(lambda: Q.first_moment_topk(space.mu_hat, batch, k=10), 3) / 64
            t = time.perf_counter()
            Q.build_ivf(space)
            build = time.perf_counter() - t
            lists = len(space.ivf_centroids)
            ivf = []
            for nprobe in (8, 32):
                nprobe = min(nprobe, lists)
                ms = timed(lambda: [Q.ivf_topk(space, q, 10, nprobe) for q in qs], 3) / len(qs) * 1000
                recall = np.mean([len(set(Q.ivf_topk(space, q, 10, nprobe)[0].tolist()) & set(e.tolist())) / 10
                                  for q, e in zip(qs, exact_rows)])
                ivf += [f"{ms:.2f}", f"{recall:.3f}"]
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            table.add_row(f"{n:,}", f"{mb:.0f}", f"{single * 1000:.1f}", f"{batched * 1000:.2f}", str(lists),
                          f"{build:.1f}", *ivf, f"{peak:.0f}")
            Console(width=220).print(table)
            del index, space


if __name__ == "__main__":
    main()
