"""Whose a run folder is: a train run is written into ``<train.out_dir>/<train.name>/`` only when that folder is
empty, holds this configuration's run (finished: skipped; killed: resumed) or files that are not a run's. A
finished run of other settings, or a killed one with no checkpoint of this configuration, is never replaced:
one line naming the folder, what it holds and ``train.name``.
"""
from __future__ import annotations

from pathlib import Path

from gen4gen.artefacts import Manifest, TrainMeta
from gen4gen.errors import UserError
from gen4gen.markers import META
from gen4gen.train import checkpoints


def check_run_folder(run_dir: Path, run_hash: str) -> None:
    """Raise unless a run of ``run_hash`` (``TrainMeta.hash``: configuration and examples) may be written into
    ``run_dir``."""
    meta = TrainMeta.of(run_dir)
    if meta is not None:
        if meta.hash == run_hash:
            return
        held = f"a finished run of other settings ({_describe(run_dir, meta)})"
    else:
        found = sorted(run_dir.joinpath(checkpoints.DIR).glob("step_*.pt")) if run_dir.is_dir() else []
        if not found or checkpoints.latest(run_dir, run_hash) is not None:
            return
        held = f"an unfinished run of other settings (checkpoint {found[-1].name})"
    raise UserError(f"{run_dir} holds {held}, which this run would replace; name this one with "
                    f"train.name=<another name>, or delete that folder to train it again")


def _describe(run_dir: Path, meta: TrainMeta) -> str:
    try:
        method = Manifest.load(run_dir).method
    except UserError:
        method = "a run"
    steps = len(meta.losses)
    return f"{method}, {steps} steps, {run_dir / META}" if steps else f"{method}, {run_dir / META}"
