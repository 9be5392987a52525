"""What kind of background an image shows, from colour statistics of three bands around the horizon:
the sky (or wall) above it, a strip just below it (where a beach has its sea), and the near ground.
Used to check that each scene phrase is drawn as what it says (tests and benchmarks/layout.py)."""
from __future__ import annotations

import numpy as np


def _band(img: np.ndarray, y0: float, y1: float) -> np.ndarray:
    h = img.shape[0]
    a, b = int(max(0.0, y0) * h), int(min(1.0, y1) * h)
    return img[a:max(b, a + 1)].reshape(-1, 3).astype(np.float64)


def _hue(rgb: np.ndarray) -> float:
    """Hue in degrees for colours between red and green (blue the smallest channel); -1 otherwise."""
    r, g, b = rgb
    if b > min(r, g):
        return -1.0
    return 60.0 * (g - b) / max(r - b, 1e-6) if r >= g else 120.0 - 60.0 * (r - b) / max(g - b, 1e-6)


def looks_like(img: np.ndarray, horizon: float) -> str:
    """The style a uint8 HxWx3 background looks like, given its horizon (fraction of H)."""
    sky = _band(img, 0.0, horizon - 0.1).mean(0)
    strip = _band(img, horizon + 0.01, horizon + 0.06).mean(0)
    ground_px = _band(img, horizon + 0.3, 1.0)
    ground = ground_px.mean(0)
    above = _band(img, horizon - 0.2, horizon)
    r, g, b = ground
    sat = ground.max() - ground.min()
    if sky.mean() < 45 and ground.mean() < 80:
        return "night"
    if sky.mean() < 45 and sat < 20:
        return "moon"
    if b > r + 40 and sky[2] > sky[0] + 40 and sky.mean() < 150:
        return "underwater"
    if ground.mean() > 200 and sat < 40:
        return "snow"
    if b > r + 20:
        return "water"
    if sat < 25:
        if ground.mean() > 200:
            return "snow"
        cols = _band(img, horizon + 0.3, 1.0).reshape(-1, img.shape[1], 3).mean((0, 2))
        return "city" if np.median(cols) - cols.min() > 0.08 * np.median(cols) else "studio"  # pavement joints
    if g > r + 15 and g > b + 15:
        barn = ((above[:, 0] > above[:, 1] + 70) & (above[:, 0] > above[:, 2] + 70)).mean()
        return "farm" if barn > 0.01 else "garden"
    if r > b + 30:
        if strip[2] > strip[0] + 20:
            return "beach"
        px = _band(img, 0.0, horizon - 0.1)
        if np.percentile(px[:, 2] - px[:, 0], 90) > 40:  # an open blue sky, not a wall: desert or savanna by hue
            return "savanna" if _hue(ground) > 40 else "desert"
        return "kitchen" if sky[0] > sky[2] + 15 else "room"  # a warm wall over a dark table, a cool one over a floor
    return "studio"
