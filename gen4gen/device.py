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


class PoolSizes:
    """OpenCV's and torch's thread pools sized to ``threads`` while a stage's worker threads each run their own
    item, and put back after. A pool as wide as the machine, entered by every worker at once, oversubscribes
    the cores: its threads spin-wait for each other (torch's OpenMP threads most), CPU time that does no work,
    and far more of it when other processes share the cores (s1's stage on 2 loaded cores: 1.3-1.7 CPU s per
    photo with the default pools, 0.73-0.77 with one thread each; see benchmarks/RESULTS.md)."""

    def __init__(self, threads: int):
        self.threads = max(1, int(threads))
        self.saved: dict[str, int] = {}

    def opencv(self) -> None:
        import cv2

        self.saved.setdefault("opencv", cv2.getNumThreads())
        cv2.setNumThreads(self.threads)

    def torch(self) -> None:
        """In the calling thread: OpenMP keeps the width per thread, so each thread that runs torch calls this."""
        import torch

        self.saved.setdefault("torch", torch.get_num_threads())
        torch.set_num_threads(self.threads)

    def restore(self) -> None:
        if "opencv" in self.saved:
            import cv2

            cv2.setNumThreads(self.saved["opencv"])
        if "torch" in self.saved:
            import torch

            torch.set_num_threads(self.saved["torch"])
        self.saved.clear()


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
