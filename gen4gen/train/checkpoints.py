"""Checkpoints of a train run: the trainable tensors, the optimiser (and fp16 loss-scaler) state, the step and
the loss history, every ``train.checkpoint_every`` steps. Every step draws its batch and noise from
``(seed, step)``, so that state is all a resumed run needs to end with the same weights as an uninterrupted one."""
from __future__ import annotations

import io
import re
from pathlib import Path

from gen4gen.io import write_atomic

DIR = "checkpoints"
_NAME = re.compile(r"step_(\d+)\.pt$")


def torch_bytes(obj) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save(run_dir: Path, step: int, state: dict, keep: int) -> Path:
    path = run_dir / DIR / f"step_{step:07d}.pt"
    write_atomic(path, torch_bytes({"step": step, **state}))  # atomic: a kill mid-write leaves the previous one
    for old in sorted(run_dir.joinpath(DIR).glob("step_*.pt"))[:-max(1, keep)]:
        old.unlink(missing_ok=True)
    return path


def latest(run_dir: Path, config_hash: str) -> dict | None:
    """The newest readable checkpoint written with this configuration (another one is not resumed)."""
    import torch

    for path in sorted(run_dir.joinpath(DIR).glob("step_*.pt"), reverse=True):
        if not _NAME.search(path.name):
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - torn or foreign file: try the one before
            continue
        if state.get("config_hash") == config_hash:
            return state
    return None


def clear(run_dir: Path) -> None:
    for path in run_dir.joinpath(DIR).glob("step_*.pt"):
        path.unlink(missing_ok=True)
    try:
        run_dir.joinpath(DIR).rmdir()
    except OSError:
        pass  # absent, or holds someone else's files
