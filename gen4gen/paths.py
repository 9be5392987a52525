"""Where stage artefacts live, and how a sweep job gets folders of its own."""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gen4gen.settings import section
from gen4gen.stage_reads import PIPELINE, first_changed
from gen4gen.stage_settings import PathsSettings

STAGE_DIRS = {
    "s1": "s1_segmented_foreground",
    "s2": "s2_object_compositions",
    "s3": "s3_background_repainting",
    "s4": "s4_captions",
}
# overrides that split or place the same work instead of changing it: jobs differing only in these share folders
NEUTRAL_KEYS = {"shard.index", "shard.count", "stage", "workers", "strict", "device"}
NEUTRAL_PREFIXES = ("paths.", "hydra")


def swept_keys(overrides: list[str]) -> set[str]:
    """The keys a multirun varies (``seed=0,1,2``, ``range(4)``...) among its command-line overrides;
    fixed overrides (``compose.size=[256,256]``) are the same in every job."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return {o.key_or_group for o in parsed if o.is_sweep_override()}


def _sweep_overrides(sweep_dir: Path) -> list[str]:
    """A job sees only its own expanded overrides; the sweep's are in the sweep folder's multirun.yaml."""
    try:
        return list(OmegaConf.load(sweep_dir / "multirun.yaml").hydra.overrides.task)
    except (OSError, AttributeError):
        return []


def isolate_sweep_job(cfg: DictConfig, stages: list[str]) -> Path | None:
    """In a multirun that sweeps settings (``layout=heuristic,llm seed=0,1,2``), give each job its own
    ``stages/`` and ``datasets/`` inside its Hydra job folder, whose ``.hydra/overrides.yaml`` says what
    it is. The stages before the first one that reads a swept setting (``gen4gen.stage_reads``) and the stages the
    job does not run are the shared folder's, through symlinks: ``-m stage=all repaint.scene=desert,lake`` segments
    once, and its second job skips s1's done items. Shard sweeps keep writing to the shared folders, which is how
    their outputs merge. Returns the job's folder."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hc = HydraConfig.get()
    swept = {k for k in swept_keys(_sweep_overrides(Path(hc.sweep.dir)))
             if k not in NEUTRAL_KEYS and not k.startswith(NEUTRAL_PREFIXES)}
    if not swept:
        return None
    first = first_changed(cfg, swept)
    # run here, written to the shared folder (an export always makes the job's own dataset)
    shared_runs = {s for s in stages if s in PIPELINE[:first] and s in STAGE_DIRS}
    job_dir = Path(hc.runtime.output_dir).resolve()
    paths = section(cfg, "paths", PathsSettings)
    shared = paths.stages_dir.resolve()
    own = job_dir / "stages"
    own.mkdir(parents=True, exist_ok=True)
    for stage, name in STAGE_DIRS.items():
        link = own / name
        if stage in shared_runs:
            (shared / name).mkdir(parents=True, exist_ok=True)
        if (stage not in stages or stage in shared_runs) and (shared / name).is_dir() and not link.exists():
            os.symlink(shared / name, link, target_is_directory=True)
    datasets = paths.outputs_dir.resolve() / "datasets"
    if "export" not in stages and datasets.is_dir() and not (job_dir / "datasets").exists():
        os.symlink(datasets, job_dir / "datasets", target_is_directory=True)  # a train job reads the export
    OmegaConf.update(cfg, "paths.stages_dir", str(own))
    OmegaConf.update(cfg, "paths.outputs_dir", str(job_dir))
    return job_dir


@contextmanager
def shared_stage(cfg: DictConfig, stage: str):
    """While a sweep job runs ``stage`` in the shared folder (a symlink from its own ``stages/``), it holds that
    folder alone: jobs that run at once (``hydra/launcher=joblib``) wait, then skip the items the first one did."""
    link = Path(cfg.paths.stages_dir) / STAGE_DIRS.get(stage, "")
    if stage not in STAGE_DIRS or not link.is_symlink():
        yield
        return
    import fcntl

    target = link.resolve()
    with open(target.parent / f".{target.name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
        yield


def run_output_dir(cfg: DictConfig, stage: str) -> Path:
    """Where a stage writes its run-level report: Hydra's run dir, else a timestamped outputs folder."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    # composed without @hydra.main (tests, notebooks): a fresh folder under outputs/
    path = section(cfg, "paths", PathsSettings).outputs_dir / "runs" / time.strftime("%Y-%m-%d") / f"{time.strftime('%H-%M-%S')}_{stage}"
    path.mkdir(parents=True, exist_ok=True)
    return path
