"""s3 background repainting: mask preparation, background sources and the inpainting backends.

Every backend is a callable ``backend(jobs: list[RepaintJob]) -> list[np.ndarray]`` (uint8 HxWx3,
same size as the job) with a ``name``, a ``batch_size`` and ``describe() -> dict``; it must return
the job's concept pixels unchanged wherever ``job.repaint == 0``. ``thread_safe = True`` lets the
stage call it from several threads at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field

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
    ground: float | None = 0.0  # where the background's ground starts (fraction of H); None: it has none (sky)
    light: float = 0.0  # the background's light: -1 from the left .. 1 from the right
    # per layout object: its box (x, y, w, h) and the metered luminance of its own photo (None: unknown)
    exposures: list[tuple[list[int], float | None]] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


def keep_concepts(generated: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, repaint: np.ndarray,
                  under: np.ndarray | None = None) -> np.ndarray:
    """The final image: ``rgb`` exactly where ``repaint`` is 0, ``generated`` where it is 1, and in the band
    between the concept (over ``generated`` by its own ``alpha``) blended into ``generated``.

    Compositing the concept by its alpha first matters where the box-blurred mask keeps a pixel the
    concept does not cover (between a cat's legs): blending with the bare cut-out there would pull
    its black surround into the picture. Only the pixels that need it are computed (a thin band). ``under`` is
    what the kept concept lies over (default ``generated``); a backend whose ``generated`` already holds the
    concept (the classical one) passes its background, else the soft edge would take the concept twice.
    """
    out = generated.copy()
    band = (alpha > 0) & (repaint < 1) & (repaint > 0)
    if band.any():
        a = alpha[band][:, None].astype(np.float32)
        m = repaint[band][:, None].astype(np.float32)
        g = generated[band].astype(np.float32)
        base = g if under is None else under[band].astype(np.float32)
        concept = rgb[band].astype(np.float32) * a + base * (1.0 - a)
        out[band] = np.clip(concept * (1.0 - m) + g * m + 0.5, 0, 255).astype(np.uint8)
    np.copyto(out, rgb, where=(repaint <= 0)[..., None])  # bit-exact concept interiors
    return out
