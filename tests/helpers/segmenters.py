"""Test-only segmenters: deterministic, instant, no weights. Plugged in the way a user adds a backend:
a yaml file with ``_target_`` in a ``segmenter/`` config folder on ``hydra.searchpath``."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np


class Darkness:
    """Soft mask = how dark each pixel is (dark objects on a light background)."""

    name = "darkness"

    def __init__(self, sleep: float = 0.0):
        self.sleep = sleep

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        if self.sleep:
            time.sleep(self.sleep)
        return 1.0 - rgb.astype(np.float32).mean(-1) / 255.0


def search_path(tmp_path: Path) -> str:
    """A config folder offering ``segmenter=darkness``; returns the ``hydra.searchpath`` override."""
    d = tmp_path / "extra_conf" / "segmenter"
    d.mkdir(parents=True, exist_ok=True)
    (d / "darkness.yaml").write_text("_target_: tests.helpers.segmenters.Darkness\nsleep: 0.0\nkeep: concept\n")
    return f"hydra.searchpath=[file://{d.parent}]"


class NotWhite:
    """Mask = every pixel that is not pure white: subjects pasted on white give their exact masks."""

    name = "notwhite"

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        return (rgb.min(-1) < 250).astype(np.float32)


def notwhite_path(tmp_path: Path) -> str:
    """``segmenter=notwhite`` on ``hydra.searchpath`` (beside ``darkness``)."""
    d = tmp_path / "extra_conf" / "segmenter"
    d.mkdir(parents=True, exist_ok=True)
    (d / "notwhite.yaml").write_text("_target_: tests.helpers.segmenters.NotWhite\nkeep: concept\n")
    return search_path(tmp_path)
