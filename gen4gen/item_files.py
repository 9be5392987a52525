"""An item's files: ``ItemWriter`` writes them atomically and records the size and hash of each, which the
runner writes into the item's marker (``outputs``); ``outputs_intact`` is the done check's look at them again."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from gen4gen.io import json_bytes, png_bytes, write_atomic

class ItemWriter:
    """Writes one item's files atomically; ``meta.json`` is written by the runner, last, with the size and hash
    of every file written here (``outputs``), so that a later done check notices a file changed or broken."""

    def __init__(self, out_dir: Path, steps=None):
        self.dir = out_dir
        self.files: dict[str, list] = {}  # name -> [size, blake2b hex]
        self._steps = steps

    def steps(self, description: str, total: int):
        """Progress inside one large item (a whole dataset): a line of its own under the stage's bar; returns
        the function that counts one step, which raises KeyboardInterrupt once Ctrl-C has stopped the run (the
        item runs in a worker thread: this is where it hears of it)."""
        if self._steps is None:
            return lambda: None
        return self._steps(description, total)

    def path(self, name: str) -> Path:
        return self.dir / name

    def image(self, name: str, image: Image.Image | np.ndarray) -> Path:
        return self.bytes(name, png_bytes(image))

    def json(self, name: str, obj: Any) -> Path:
        return self.bytes(name, json_bytes(obj))

    def text(self, name: str, text: str) -> Path:
        return self.bytes(name, text.encode("utf-8"))

    def bytes(self, name: str, data: bytes) -> Path:
        p = self.dir / name
        write_atomic(p, data)
        self.files[name] = [len(data), _digest(data)]
        return p


# a done check re-hashes recorded files up to this size (JSON, captions: cheap); larger ones (images, weights)
# are checked by size, so a rerun over 10,000 items stays a stat per file
VERIFY_BYTES = 1 << 16


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def outputs_intact(folder: Path, meta: dict) -> bool:
    """Every file the marker vouches for (``outputs``) is there with its size, and its hash when small."""
    outputs = meta.get("outputs", {})
    if not isinstance(outputs, dict):
        return False
    for name, rec in outputs.items():
        if not (isinstance(rec, list) and len(rec) == 2 and isinstance(rec[0], int)):
            return False
        p = folder / name
        try:
            if p.stat().st_size != rec[0] or (rec[0] <= VERIFY_BYTES and _digest(p.read_bytes()) != rec[1]):
                return False
        except OSError:
            return False
    return True
