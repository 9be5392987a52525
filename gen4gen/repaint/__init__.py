"""s3 background repainting: mask preparation, background sources and the inpainting backends.

Every backend is a callable ``backend(jobs: list[RepaintJob]) -> list[np.ndarray]`` (uint8 HxWx3,
same size as the job) with a ``name``, a ``batch_size`` and ``describe() -> dict``; it must return
the job's concept pixels unchanged wherever ``job.repaint == 0``. ``thread_safe = True`` lets the
stage call it from several threads at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RepaintJob:
    rgb: np.ndarray  # HxWx3 uint8: the concepts' colours (s2 image_rgba.png without alpha)
    alpha: np.ndarray  # HxW float32 0..1: s2's union soft mask
    repaint: np.ndarray  # HxW float32 0..1: 1 = repaint, 0 = keep exactly (gen4gen.repaint.mask)
    background: np.ndarray  # HxWx3 uint8: the starting background
    prompt: str = ""
    negative_prompt: str = ""
    seed: int = 0

    @property
    def size(self) -> tuple[int, int]:
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


def keep_concepts(generated: np.ndarray, exact: np.ndarray, repaint: np.ndarray) -> np.ndarray:
    """``exact`` where ``repaint`` is 0, ``generated`` where it is 1, a soft blend in the band between."""
    m = repaint[..., None].astype(np.float32)
    out = exact.astype(np.float32) * (1.0 - m) + generated.astype(np.float32) * m
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    keep = repaint <= 0.0
    out[keep] = exact[keep]  # bit-exact, whatever the float rounding did
    return out
