"""The run folders Hydra makes under ``outputs/runs/<date>/<time>_<stage>/`` (saved config, ``gen4gen.log``, a
stage's report). A command refused before it did anything (an unknown stage, a bad value, a stage that stops at
once with one line) leaves none: :func:`discard` removes the folder Hydra made for it. Old ones are removed at the
start of a run so that ``keep_runs`` remain (:func:`prune`). Only folders that Hydra's layout and its ``.hydra/``
mark as run folders are touched.
"""
from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
TIME = re.compile(r"\d{2}-\d{2}-\d{2}_.+")
HYDRA_FILES = (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml")


def current() -> Path | None:
    """This command's run folder, when Hydra made one (a single run, not a multirun job)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.RUN:
        return None
    return Path(HydraConfig.get().runtime.output_dir)


def discard(run_dir: Path | None) -> None:
    """Remove what Hydra wrote into ``run_dir`` for a refused command (its saved config and log), then the
    folder and its date folder once empty; anything else in it stays."""
    if run_dir is None or not run_dir.is_dir():
        return
    for handler in list(logging.getLogger().handlers):  # the log file Hydra opened there
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == run_dir.resolve():
            logging.getLogger().removeHandler(handler)
            handler.close()
            Path(handler.baseFilename).unlink(missing_ok=True)
    for name in HYDRA_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for folder in (run_dir / ".hydra", run_dir, run_dir.parent):
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (or already gone): leave it


def run_folders(runs: Path) -> list[Path]:
    """Hydra run folders under ``runs``, oldest first (their names sort by date and time)."""
    if not runs.is_dir():
        return []
    found = [t for d in runs.iterdir() if DATE.fullmatch(d.name) and d.is_dir() and not d.is_symlink()
             for t in d.iterdir() if TIME.fullmatch(t.name) and (t / ".hydra").is_dir() and not t.is_symlink()]
    return sorted(found, key=lambda p: (p.parent.name, p.name))


def prune(runs: Path, keep: int | None, current_dir: Path | None = None) -> int:
    """Remove the oldest run folders so that ``keep`` remain (this command's own counts and is never removed);
    returns how many were removed. ``keep`` None: keep all."""
    if keep is None:
        return 0
    folders = [p for p in run_folders(runs) if current_dir is None or p.resolve() != current_dir.resolve()]
    extra = folders[: max(0, len(folders) - max(0, int(keep) - (current_dir is not None)))]
    for folder in extra:
        shutil.rmtree(folder, ignore_errors=True)
        try:
            folder.parent.rmdir()
        except OSError:
            pass  # other runs of that day remain
    return len(extra)
