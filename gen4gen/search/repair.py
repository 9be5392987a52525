"""Damaged arrays of a model index, found before any query: every array of every space is opened and its shape
and kind checked against ``index.json`` and ``names.txt``, so a truncated, garbled, pickled or wrong-shaped
file (``image_mu.npy``, ``image_offsets.npy``...) is one warning and a rebuild from the samples (the build
calls :func:`damage`), as the IVF and PQ files are, instead of a raw error deep inside a query.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gen4gen.errors import UserError
from gen4gen.search.index import read_info

SPACES = ("image", "caption")  # the spaces a build writes: what clear_derived may remove files of


def expected(meta: dict, m: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """array name -> (shape, numpy kinds it may have) for one space of ``m`` models."""
    d, kind, r = int(meta["dim"]), meta["moment"], int(meta.get("rank") or 0)
    out = {"mu": ((m, d), "f"), "mu_hat": ((m, d), "f"), "count": ((m,), "iu"), "logdet": ((m,), "f")}
    if kind == "diag":
        out["var"] = ((m, d), "f")
    elif kind == "full":
        out.update(cov=((m, d, d), "f"), chol=((m, d, d), "f"))
    elif kind == "lowrank":
        out.update(U=((m, d, r), "f"), lam=((m, r), "f"), noise=((m,), "f"))
    else:
        raise ValueError(f"moment {kind!r}")
    if meta.get("raw"):
        out["offsets"] = ((m + 1,), "iu")
    return out


def damage(root: Path) -> str | None:
    """What is wrong with the index at ``root`` (the first file, and how), or None when every array opens and
    has the shape its ``index.json`` and ``names.txt`` say."""
    try:
        info = read_info(root)
        spaces = {name: expected(meta, len(info.names)) for name, meta in info.spaces.items()}
    except UserError as e:
        return str(e)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        return f"index.json has no usable spaces ({e!r})"
    for space, arrays in spaces.items():
        for key, (shape, kinds) in arrays.items():
            path = root / f"{space}_{key}.npy"
            try:
                a = np.load(path, mmap_mode="r")  # never allow_pickle: a pickled array is refused
            except Exception as e:  # noqa: BLE001 - OSError, ValueError, EOFError...: a file numpy cannot open
                return f"{path.name} is unreadable ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]})"
            if not isinstance(a, np.ndarray) or a.dtype.kind not in kinds or a.shape != shape:
                return f"{path.name} holds {getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}, " \
                       f"expected {shape}"
            if key == "offsets":
                raw = root / f"{space}_raw.npy"
                try:
                    r = np.load(raw, mmap_mode="r")
                except Exception as e:  # noqa: BLE001 - as above
                    return f"{raw.name} is unreadable ({type(e).__name__})"
                width = arrays["mu"][0][1]
                if not isinstance(r, np.ndarray) or r.dtype.kind != "f" or r.ndim != 2 or r.shape[1] != width:
                    return f"{raw.name} holds {getattr(r, 'dtype', '?')} {getattr(r, 'shape', '')}, " \
                           f"expected (rows, {width}) floats"
                rows = r.shape[0]
                if a[0] != 0 or a[-1] != rows or np.any(np.diff(a) < 0):
                    return f"{path.name} does not index the {rows} rows of {raw.name}"
    return None


def clear_derived(root: Path) -> None:
    """The fast-search files (inverted file, PQ codes, their recalls) are derived from ``mu_hat``: a rebuild drops
    them, so they are built again from the new arrays."""
    for space in SPACES:
        for pattern in (f"{space}_ivf_*", f"{space}_pq.*", f"{space}_pq_*"):
            for path in root.glob(pattern):
                path.unlink(missing_ok=True)
