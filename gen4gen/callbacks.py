"""Hydra callbacks: the export of a sharded run happens once, after every shard is done."""
from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from gen4gen.paths import swept_keys

log = logging.getLogger("gen4gen")


def export_deferred(cfg: DictConfig) -> bool:
    """A shard sees only its own items, and shards finish in any order: the dataset, which needs all
    of them, is built once they are all done (by the callback below, or by ``stage=export``)."""
    return int(cfg.shard.count) > 1


class ExportAfterShards(Callback):
    """After a multirun whose jobs ran the data pipeline in shards, export the merged result once."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if str(config.stage) not in ("all", "export") or not _is_shard_sweep(config):
            return
        from gen4gen.app import run

        cfg = OmegaConf.create(OmegaConf.to_container(config, resolve=False))
        del cfg["hydra"]
        OmegaConf.update(cfg, "stage", "export")
        OmegaConf.update(cfg, "shard", {"index": 0, "count": 1})
        log.info("all shards done: exporting the merged dataset")
        run(cfg)


def _is_shard_sweep(config: DictConfig) -> bool:
    return "shard.index" in swept_keys(config.hydra.overrides.task) and int(config.shard.count) > 1
