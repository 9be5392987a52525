"""The model index: per model, the first and second moments of its sample features, in
memory-mapped ``.npy`` files so a million models fit without loading them.

Layout of an index folder::

    index.json                 format, spaces, encoder names, moment type, input fingerprint
    names.txt                  one model name per line (row i of every array)
    <space>_mu.npy             (M, d) float32  mean feature
    <space>_mu_hat.npy         (M, d) float32|float16  mu / |mu|: first-moment search reads only this
    <space>_count.npy          (M,) int32     samples behind each row
    <space>_var.npy            (M, d)         diag: per-dimension variance (+ eps)
    <space>_cov.npy, _chol.npy (M, d, d)      full: covariance (+ eps I) and its Cholesky factor
    <space>_U.npy, _lam.npy, _noise.npy       lowrank: Sigma = U diag(lam) U^T + noise I (probabilistic PCA)
    <space>_logdet.npy         (M,)           cached log|Sigma| for log-densities
    <space>_raw.npy, _offsets.npy             optional raw sample features (Monte-Carlo baseline)

Spaces: ``image`` (EfficientNet-Lite0 or CLIP image features) and ``caption`` (MiniLM embeddings of
the sample captions, diagonal moments; the text-query fallback when there is no CLIP).
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gen4gen.errors import UserError
from gen4gen.io import json_bytes, write_atomic

log = logging.getLogger(__name__)
FORMAT = "gen4gen-model-index/1"
MOMENTS = ("diag", "full", "lowrank")


@dataclass(frozen=True)
class MomentSpec:
    kind: str = "diag"  # diag | full | lowrank
    rank: int = 8  # lowrank only
    # shrinkage of Sigma toward (mean variance) * I, in [0, 1): few samples in many dimensions give
    # noisy, near-singular covariances that make log-densities meaningless without it
    eps: float = 0.1
    # of mu_hat, the matrix first-moment search streams: float32 for BLAS speed, float16 for half the memory
    dtype: str = "float32"

    def __post_init__(self):
        if self.kind not in MOMENTS:
            raise UserError(f"search.moment={self.kind!r}: choose one of {', '.join(MOMENTS)}")


def gaussian_moments(x: np.ndarray, spec: MomentSpec) -> dict[str, np.ndarray]:
    """Moments of one model's (n, d) sample features, as the arrays stored per row."""
    x = np.asarray(x, np.float64)
    n, d = x.shape
    mu = x.mean(0)
    xc = x - mu
    out = {"mu": mu}
    if not 0 <= spec.eps < 1:
        raise UserError(f"search.eps={spec.eps} must be in [0, 1)")
    if spec.kind == "diag":
        var = (xc ** 2).mean(0)
        var = (1 - spec.eps) * var + spec.eps * var.mean() + 1e-8
        out.update(var=var, logdet=np.log(var).sum())
    elif spec.kind == "full":
        cov = (1 - spec.eps) * (xc.T @ xc / n)
        cov[np.diag_indices(d)] += spec.eps * (xc ** 2).sum() / n / d + 1e-8
        chol = np.linalg.cholesky(cov)
        out.update(cov=cov, chol=chol, logdet=2 * np.log(np.diag(chol)).sum())
    else:
        r = min(spec.rank, d)
        # eigen-decomposition through the n x n Gram matrix when n < d (few samples, wide features)
        if n < d:
            evals, v = np.linalg.eigh(xc @ xc.T / n)
            evals, v = evals[::-1][:r], v[:, ::-1][:, :r]
            u = xc.T @ v / np.sqrt(np.maximum(evals, 1e-12) * n)
        else:
            evals, u = np.linalg.eigh(xc.T @ xc / n)
            evals, u = evals[::-1][:r], u[:, ::-1][:, :r]
        evals = np.maximum(evals, 0.0)
        total = (xc ** 2).sum() / n
        rest = max(total - evals.sum(), 0.0) / max(d - r, 1)  # PPCA: the residual variance, spread evenly
        noise = (1 - spec.eps) * rest + spec.eps * total / d + 1e-8
        lam = np.zeros(spec.rank)
        lam[:r] = (1 - spec.eps) * np.maximum(evals - rest, 0.0)
        big_u = np.zeros((d, spec.rank))
        big_u[:, :r] = u
        out.update(U=big_u, lam=lam, noise=np.float64(noise),
                   logdet=np.log(lam + noise).sum() + (d - spec.rank) * np.log(noise))
    return out


class IndexWriter:
    """Creates the memory-mapped arrays of one space and fills them row by row (or in blocks)."""

    def __init__(self, root: Path, space: str, n_models: int, dim: int, spec: MomentSpec, raw_rows: int = 0):
        from numpy.lib.format import open_memmap

        self.root, self.space, self.spec, self.dim = root, space, spec, dim
        m, d = n_models, dim
        shapes = {"mu": ((m, d), np.float32), "mu_hat": ((m, d), np.dtype(spec.dtype)), "count": ((m,), np.int32),
                  "logdet": ((m,), np.float32)}
        if spec.kind == "diag":
            shapes["var"] = ((m, d), np.float32)
        elif spec.kind == "full":
            shapes.update(cov=((m, d, d), np.float32), chol=((m, d, d), np.float32))
        else:
            shapes.update(U=((m, d, spec.rank), np.float32), lam=((m, spec.rank), np.float32), noise=((m,), np.float32))
        if raw_rows:
            shapes.update(raw=((raw_rows, d), np.float32), offsets=((m + 1,), np.int64))
        root.mkdir(parents=True, exist_ok=True)
        self.arrays = {k: open_memmap(root / f"{space}_{k}.npy", mode="w+", dtype=dt, shape=shape)
                       for k, (shape, dt) in shapes.items()}
        self.raw_pos = 0
        if raw_rows:
            self.arrays["offsets"][0] = 0

    def add(self, row: int, feats: np.ndarray) -> None:
        """Moments of model ``row`` from its sample features."""
        mom = gaussian_moments(feats, self.spec)
        self.set_rows(slice(row, row + 1), count=np.array([len(feats)]), **{k: np.asarray(v)[None] for k, v in mom.items()})
        if "raw" in self.arrays:
            self.arrays["raw"][self.raw_pos:self.raw_pos + len(feats)] = feats
            self.raw_pos += len(feats)
            self.arrays["offsets"][row + 1] = self.raw_pos

    def set_rows(self, rows: slice, **values: np.ndarray) -> None:
        """Write precomputed moments for a block of rows (synthetic indexes, merges)."""
        for k, v in values.items():
            self.arrays[k][rows] = v
        if "mu" in values:
            mu = np.asarray(values["mu"], np.float32)
            self.arrays["mu_hat"][rows] = mu / np.maximum(np.linalg.norm(mu, axis=1, keepdims=True), 1e-12)

    def close(self) -> None:
        for a in self.arrays.values():
            a.flush()
        self.arrays.clear()


@dataclass
class IndexInfo:
    names: list[str]
    spaces: dict  # space -> {"dim", "encoder", "moment", "rank", "raw"}
    fingerprint: str = ""
    format: str = FORMAT
    notes: dict | None = None


def write_info(root: Path, info: IndexInfo) -> None:
    """Names and index.json are written last: a folder without index.json is not an index."""
    write_atomic(root / "names.txt", ("\n".join(info.names) + "\n").encode("utf-8"))
    write_atomic(root / "index.json", json_bytes({k: v for k, v in asdict(info).items() if k != "names"}))


def is_index(path: Path) -> bool:
    return (Path(path) / "index.json").is_file()


def read_info(root: Path) -> IndexInfo:
    try:
        meta = json.loads((root / "index.json").read_text(encoding="utf-8"))
        names = (root / "names.txt").read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as e:
        raise UserError(f"unreadable model index at {root}: {e}") from e
    if meta.get("format") != FORMAT:
        raise UserError(f"{root}: not a {FORMAT} index (format {meta.get('format')!r}); rebuild it")
    return IndexInfo(names=names, spaces=meta["spaces"], fingerprint=meta.get("fingerprint", ""), notes=meta.get("notes"))


class UnreadableArray(UserError):
    """An array file of the index that numpy cannot open."""

    def __init__(self, root: Path, file: str, reason: str):
        self.file, self.reason = file, reason
        super().__init__(f"model index {root}: {file} is unreadable ({reason}); rebuild the index")


class Space:
    """Read-only view of one space's memory-mapped moments."""

    def __init__(self, root: Path, name: str, meta: dict):
        self.name, self.meta = name, meta
        self.dim, self.kind, self.encoder = int(meta["dim"]), meta["moment"], meta["encoder"]
        self._root = root
        self._cache: dict[str, np.ndarray] = {}

    def __getattr__(self, key: str) -> np.ndarray:
        if key.startswith("_"):
            raise AttributeError(key)
        if key not in self._cache:
            path = self._root / f"{self.name}_{key}.npy"
            if not path.is_file():
                raise AttributeError(f"index space {self.name!r} has no {key!r} array")
            try:
                self._cache[key] = np.load(path, mmap_mode="r")
            except (OSError, ValueError, EOFError) as e:  # a truncated or garbled file
                raise UnreadableArray(self._root, path.name, str(e)) from None
        return self._cache[key]

    @property
    def has_raw(self) -> bool:
        return (self._root / f"{self.name}_raw.npy").is_file()

    def samples(self, row: int) -> np.ndarray:
        return np.asarray(self.raw[self.offsets[row]:self.offsets[row + 1]], np.float32)


class ModelIndex:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.info = read_info(self.root)
        self.names = self.info.names
        try:
            self.spaces = {name: Space(self.root, name, meta) for name, meta in self.info.spaces.items()}
        except (KeyError, TypeError, ValueError, AttributeError) as e:  # index.json of another shape
            raise UserError(f"model index {self.root}: index.json has no usable spaces ({e!r}); "
                            "rebuild the index") from None
        for space in self.spaces.values():  # a row count or width the names and index.json do not say: scores
            shape = space.mu_hat.shape       # would name the wrong models or fail deep in a query
            if shape != (len(self.names), space.dim):
                raise UserError(f"model index {self.root}: {space.name}_mu_hat.npy holds {shape[0]} x "
                                f"{shape[1] if len(shape) > 1 else '?'} values, index.json and names.txt say "
                                f"{len(self.names)} x {space.dim}; rebuild the index")
        self._row = {n: i for i, n in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    def row(self, name: str) -> int:
        if name not in self._row:
            close = [n for n in self.names if name.lower() in n.lower()][:5]
            raise UserError(f"model {name!r} is not in the index" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        return self._row[name]
