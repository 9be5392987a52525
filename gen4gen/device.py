"""Where work runs: the one device policy (``resolve_device``) and the usable CPU cores."""
from __future__ import annotations

import os
from typing import Any

from gen4gen.errors import UserError


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask under SLURM/taskset), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_device(name: Any, key: str = "device") -> str:
    """``auto``: the GPU when one is visible, else the CPU. Asked for a GPU that is not there: a clear error
    naming the config key, never a silent fallback (a 'GPU' run on the CPU takes hours) nor a CUDA traceback."""
    import torch

    name = str(name or "auto").strip()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UserError(f"{key}={name}: no CUDA GPU visible; use {key}=cpu or auto")
        index = name.partition(":")[2]
        if index and not (index.isdigit() and int(index) < torch.cuda.device_count()):
            raise UserError(f"{key}={name}: {torch.cuda.device_count()} CUDA GPU(s) visible (cuda:0 ... "
                            f"cuda:{torch.cuda.device_count() - 1}); use one of them, {key}=cuda or auto")
        return name
    if name in ("cpu", "mps"):
        return name
    raise UserError(f"{key}={name}: not a device; use auto, cpu, cuda or cuda:N")
