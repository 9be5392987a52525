"""Foreground segmenters: each maps an RGB photo (HxWx3 uint8) to a soft mask (HxW float32 in [0, 1]).

Chosen with ``segmenter=<name>``; each config node's ``_target_`` names a class here, so a user adds a
backend by writing a class with ``name`` and ``__call__`` and a yaml file in ``conf/segmenter/``.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np


class Segmenter(Protocol):
    name: str

    def __call__(self, rgb: np.ndarray) -> np.ndarray: ...
