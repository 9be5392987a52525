"""`python -m gen4gen stage=...`: the one entry point (Hydra)."""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

import gen4gen
from gen4gen.console import quiet_libraries


def conf_dir() -> str:
    """Top-level ``conf/`` in a checkout (editable install); ``gen4gen/conf`` inside a wheel."""
    pkg = Path(gen4gen.__file__).resolve().parent
    checkout = pkg.parent / "conf"
    return str(checkout if (checkout / "config.yaml").is_file() else pkg / "conf")


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="config")
def _hydra_main(cfg: DictConfig) -> int:
    from gen4gen.app import run

    return run(cfg)


def main() -> None:
    from gen4gen.overrides import override_problem

    quiet_libraries()
    problem = override_problem(conf_dir(), sys.argv[1:])  # before Hydra's raw lines about it
    if problem:
        print(f"gen4gen: {problem}", file=sys.stderr)
        sys.exit(2)
    try:
        _hydra_main()
    except KeyboardInterrupt:  # before a stage started (imports, config): nothing done yet
        from gen4gen.app import interrupted

        interrupted(0)


if __name__ == "__main__":
    main()
