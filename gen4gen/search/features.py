"""Which encoders search and routing use: image features (embedded EfficientNet-Lite0, or CLIP) and text
embeddings (embedded all-MiniLM-L6-v2, or CLIP text, behind an on-disk cache). The encoders themselves load in
``gen4gen.encoders``; every one returns float32 rows, ``normalised`` ones L2-normalised (cosine = dot product).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from gen4gen.encoders import Clip, EfficientNetLite0, MiniLM
from gen4gen.errors import UserError
from gen4gen.io import write_atomic

log = logging.getLogger(__name__)


class CachedTextEncoder:
    """Wraps a text encoder with a disk cache keyed by (encoder name, text hash): re-embedding the
    same prompts (9,000 CEMS prompts take minutes with MiniLM on 2 cores) is free after the first run."""

    def __init__(self, encoder, cache_dir: str | Path | None, progress_label: str = "embedding prompts"):
        self.encoder = encoder
        self.name = encoder.name
        self.dim = encoder.dim
        self.normalised = encoder.normalised
        self.label = progress_label
        self.dir = Path(cache_dir) / "text_embeddings" / _safe(encoder.name) if cache_dir else None
        self._mem: dict[bytes, np.ndarray] = {}
        if self.dir and self.dir.is_dir():
            for shard in sorted(self.dir.glob("*.npz")):
                try:
                    with np.load(shard) as z:
                        self._mem.update(zip(z["keys"].tolist(), z["vecs"]))
                except (OSError, ValueError, KeyError) as e:
                    log.warning("ignoring unreadable embedding cache shard %s: %s", shard, e)

    @staticmethod
    def key(text: str) -> bytes:
        return hashlib.blake2b(text.encode("utf-8"), digest_size=12).digest()

    def encode_texts(self, texts: Sequence[str], chunk: int = 512) -> np.ndarray:
        from gen4gen.console import progress

        keys = [self.key(t) for t in texts]
        missing = list({k: t for k, t in zip(keys, texts) if k not in self._mem}.items())
        if missing:
            with progress() as bar:
                task = bar.add_task(self.label, total=len(missing))
                for part in (missing[k:k + chunk] for k in range(0, len(missing), chunk)):
                    vecs = self.encoder.encode_texts([t for _, t in part]).astype(np.float32)
                    new = dict(zip([k for k, _ in part], vecs))
                    self._mem.update(new)
                    self._save(new)
                    bar.advance(task, len(part))
        if not keys:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._mem[k] for k in keys]).astype(np.float32)

    def _save(self, new: dict[bytes, np.ndarray]) -> None:
        if not self.dir:
            return
        import io

        buf = io.BytesIO()
        keys = np.array(list(new.keys()), dtype="S12")
        np.savez(buf, keys=keys, vecs=np.stack(list(new.values())))
        digest = hashlib.blake2b(keys.tobytes(), digest_size=8).hexdigest()
        write_atomic(self.dir / f"{digest}.npz", buf.getvalue())


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# ---------------------------------------------------------------- factories from config
def image_encoder(clip: str | None, device: str | None = "auto", batch_size: int = 16, section: str = "search"):
    return Clip(clip, device, batch_size, f"{section}.clip") if clip else EfficientNetLite0(device, batch_size)


def text_encoder(kind: str, clip: str | None = None, minilm: str | None = None, device: str | None = "auto",
                 cache_dir: str | Path | None = None, section: str = "search"):
    """``kind``: ``minilm`` (embedded default) or ``clip`` (needs ``clip`` weights); wrapped in the disk cache.
    ``section``: the config section whose ``clip`` / ``minilm`` keys name the weights (in error lines)."""
    if kind == "clip":
        if not clip:
            raise UserError(f"text embeddings 'clip' need CLIP weights: set {section}.clip (a folder or hub id)")
        enc = Clip(clip, device, setting=f"{section}.clip")
    elif kind == "minilm":
        enc = MiniLM(minilm, device, setting=f"{section}.minilm")
    else:
        raise UserError(f"unknown text encoder {kind!r}: choose minilm or clip")
    return CachedTextEncoder(enc, cache_dir)
