"""Synthetic background photos for tests: a sky over a field with a known horizon and light."""
from __future__ import annotations

import numpy as np


def sky_over_ground(w=320, h=240, horizon=0.42, light=0.0, seed=0) -> np.ndarray:
    """A blue sky over a brown field, its horizon at ``horizon``; ``light`` > 0 brightens the right side."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.float32)
    hz = int(h * horizon)
    img[:hz] = (120, 170, 230)
    img[hz:] = (110, 90, 60)
    img *= (1.0 + 0.25 * light * np.linspace(-1, 1, w))[None, :, None]
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)
