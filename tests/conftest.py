"""Shared test set-up: offline hub, real data location, a composed Hydra config per test."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the LLM backends need a key to talk to the local test server (a missing one stops the stage)
for _key_env in ("OPENAI_API_KEY", "GEN4GEN_TEST_KEY"):
    os.environ.setdefault(_key_env, "sk-gen4gen-tests-local-server")

SHARED = Path(os.environ.get("GEN4GEN_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")).resolve()


def shared(*parts: str) -> Path:
    """A path in the shared real test data; the test skips with a reason when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared test data not found at {p} (set GEN4GEN_SHARED_DATA)")
    return p


def make_cfg(tmp_path: Path, *overrides: str):
    """The app's real config (conf/), composed with paths inside ``tmp_path`` plus ``overrides``."""
    from hydra import compose, initialize_config_dir

    from gen4gen.__main__ import conf_dir

    base = [f"paths.source_dir={tmp_path / 'src'}", f"paths.stages_dir={tmp_path / 'stages'}",
            f"paths.outputs_dir={tmp_path / 'outputs'}", f"paths.cache_dir={tmp_path / 'cache'}"]
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=base + list(overrides))


@pytest.fixture
def cfg_factory(tmp_path):
    return lambda *overrides: make_cfg(tmp_path, *overrides)
