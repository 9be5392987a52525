"""Where a stage writes its run-level report: Hydra's run dir, else a timestamped outputs folder."""
from __future__ import annotations

import time
from pathlib import Path


def run_output_dir(cfg, stage: str) -> Path:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    # composed without @hydra.main (tests, notebooks): a fresh folder under outputs/
    path = Path(cfg.paths.outputs_dir) / "runs" / time.strftime("%Y-%m-%d") / f"{time.strftime('%H-%M-%S')}_{stage}"
    path.mkdir(parents=True, exist_ok=True)
    return path
