"""Foreground segmenters: each maps an RGB photo (HxWx3 uint8) to a soft mask (HxW float32 in [0, 1]).

Chosen with ``segmenter=<name>``; each config node's ``_target_`` names a class here, so a user adds a
backend by writing a class with ``name`` and ``__call__`` and a yaml file in ``conf/segmenter/``.
A backend may also offer ``segment(rgb) -> (mask, info)``; s1 then records ``info`` in the item's meta
(the ONNX backends' zoom crop ``zoom_xyxy``, GrabCut's box ``frame_xyxy``, which its flags are judged by).
"""
from __future__ import annotations

from typing import Protocol

import numpy as np


class Segmenter(Protocol):
    name: str

    def __call__(self, rgb: np.ndarray) -> np.ndarray: ...
