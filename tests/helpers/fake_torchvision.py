"""Test-only stand-in for torchvision, which has no CPU build here.

segment-anything imports four torchvision functions at import time. gen4gen's SAM backend resizes
with OpenCV and calls none of them, so each stand-in raises if it is ever called."""
from __future__ import annotations

import importlib.machinery
import sys
import types

NAMES = {
    "torchvision": (),
    "torchvision.transforms": (),
    "torchvision.transforms.functional": ("resize", "to_pil_image"),
    "torchvision.ops": (),
    "torchvision.ops.boxes": ("batched_nms", "box_area"),
}


def _unused(name: str):
    def fn(*args, **kwargs):
        raise AssertionError(f"torchvision.{name} was called; gen4gen must not need torchvision")
    return fn


def install() -> list[str]:
    """Put the stand-in in ``sys.modules``; returns the names to remove afterwards."""
    for name, funcs in NAMES.items():
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        mod.__path__ = []
        for f in funcs:
            setattr(mod, f, _unused(f))
        sys.modules[name] = mod
    for name, _ in NAMES.items():
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, sys.modules[name])
    return list(NAMES)


def forget(prefixes=("torchvision", "segment_anything")) -> None:
    for name in [n for n in sys.modules if n.split(".")[0] in prefixes]:
        del sys.modules[name]
