"""Hydra callbacks: the export of a sharded run happens once, after every shard is done; the bench of a
training sweep (``+experiment=personalize``) once every variant is trained."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from gen4gen.artefacts import ROSTER_ENTRY, read_roster_entry
from gen4gen.paths import swept_keys
from gen4gen.settings import top_level
from gen4gen.stage_settings import RunSettings

log = logging.getLogger("gen4gen")


def export_deferred(cfg: DictConfig) -> bool:
    """A shard sees only its own items, and shards finish in any order: the dataset, which needs all
    of them, is built once they are all done (by the callback below, or by ``stage=export``)."""
    return top_level(cfg, RunSettings).shard.count > 1


class ExportAfterShards(Callback):
    """After a multirun whose jobs ran the data pipeline in shards, export the merged result once."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if top_level(config, RunSettings).stage not in ("all", "export") or not _is_shard_sweep(config):
            return
        from gen4gen.app import run

        cfg = OmegaConf.create(OmegaConf.to_container(config, resolve=False))
        del cfg["hydra"]
        OmegaConf.update(cfg, "stage", "export")
        OmegaConf.update(cfg, "shard", {"index": 0, "count": 1})
        log.info("all shards done: exporting the merged dataset")
        run(cfg)


def _is_shard_sweep(config: DictConfig) -> bool:
    return "shard.index" in swept_keys(config.hydra.overrides.task) and export_deferred(config)


class BenchAfterTraining(Callback):
    """After a multirun of ``stage=train`` jobs, bench the base model and every run the sweep trained
    (``<job>/train/<run>/roster_entry.yaml``) on the configured promptsets: Gen4Gen's table."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from gen4gen.app import run
        from gen4gen.errors import UserError

        if top_level(config, RunSettings).stage != "train":
            return
        entries = []
        for path in trained_runs(Path(config.hydra.sweep.dir)):
            try:
                entries.append(read_roster_entry(path))
            except UserError as e:  # that run stays out of the bench, said in one line
                log.warning("%s", e)
        if not entries:
            log.warning("no trained run in %s: nothing to bench", config.hydra.sweep.dir)
            return
        cfg = OmegaConf.create(OmegaConf.to_container(config, resolve=False))
        del cfg["hydra"]
        base = entries[0].model_dump(include={"source", "pipeline", "resolution", "steps", "guidance"})
        models = [e.model_dump(by_alias=True, exclude_defaults=True) for e in entries]
        cfg.roster = OmegaConf.create({"name": str(config.bench.name),
                                       "models": [{"name": "base", **base, "tags": ["base"]}, *models]})
        OmegaConf.update(cfg, "stage", "bench")
        log.info("training sweep done: benching the base model and %d trained run(s)", len(entries))
        run(cfg)


def trained_runs(sweep_dir: Path) -> list[Path]:
    """The roster entry of each job's train run: ``train.out_dir/train.name`` from the job's saved config, or
    inside the job folder when the job was given its own outputs (a sweep over settings)."""
    found = []
    for saved in sorted(p for p in sweep_dir.rglob("config.yaml") if p.parent.name == ".hydra"):
        job = OmegaConf.load(saved)
        try:
            out_dir, name = str(OmegaConf.select(job, "train.out_dir")), str(OmegaConf.select(job, "train.name"))
        except Exception:  # noqa: BLE001 - an interpolation this process cannot resolve
            continue
        for run_dir in (saved.parent.parent / "train" / name, Path(out_dir) / name):
            if (run_dir / ROSTER_ENTRY).is_file():
                found.append(run_dir / ROSTER_ENTRY)
                break
    return found
