"""Whose a run folder is: a train run is written into ``<train.out_dir>/<train.name>/`` only when that folder is
empty, holds this configuration's run (finished: skipped; killed: resumed) or files that are not a run's. A
finished run of other settings, or a killed one with no checkpoint of this configuration, is never replaced:
one line naming the folder, what it holds and ``train.name``.
"""
from __future__ import annotations

from pathlib import Path

from gen4gen.errors import UserError
from gen4gen.markers import META, read_meta
from gen4gen.train import checkpoints


def check_run_folder(run_dir: Path, chash: str) -> None:
    """Raise unless a run of configuration ``chash`` may be written into ``run_dir``."""
    meta = read_meta(run_dir)
    if meta is not None and "config_hash" in meta:
        if meta.get("config_hash") == chash:
            return
        held = f"a finished run of other settings ({_describe(run_dir, meta)})"
    else:
        found = sorted(run_dir.joinpath(checkpoints.DIR).glob("step_*.pt")) if run_dir.is_dir() else []
        if not found or checkpoints.latest(run_dir, chash) is not None:
            return
        held = f"an unfinished run of other settings (checkpoint {found[-1].name})"
    raise UserError(f"{run_dir} holds {held}, which this run would replace; name this one with "
                    f"train.name=<another name>, or delete that folder to train it again")


def _describe(run_dir: Path, meta: dict) -> str:
    from gen4gen.personalize import Manifest

    try:
        method = Manifest.load(run_dir).method
    except UserError:
        method = "a run"
    steps = len(meta.get("losses") or [])
    return f"{method}, {steps} steps, {run_dir / META}" if steps else f"{method}, {run_dir / META}"
