"""Shared test set-up: offline hub, real data location, a composed Hydra config per test."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import needs
from tests.helpers.needs import SHARED

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the LLM backends need a key to talk to the local test server (a missing one stops the stage)
for _key_env in ("OPENAI_API_KEY", "GEN4GEN_TEST_KEY"):
    os.environ.setdefault(_key_env, "sk-gen4gen-tests-local-server")



def pytest_configure(config):
    config.addinivalue_line("markers", "needs(*what): weights, chromium or shared_data; where one is missing the "
                                       "test skips, and the top of the run says what is missing and how to get it")


def pytest_sessionstart(session):
    """What the run lacks and how to get it, once, at the top (also under -q, which hides pytest's header; not
    from xdist's workers)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and not hasattr(session.config, "workerinput"):
        for line in needs.header():
            reporter.write_line(line, yellow=line.startswith("not here"))


def pytest_runtest_setup(item):
    for mark in item.iter_markers("needs"):
        needs.require(*mark.args)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skip for a missing need is reported at one place, so `-ra` folds every test waiting for it into one line
    (pytest reports a skip raised in a fixture at each test's own line)."""
    report = (yield).get_result()
    if report.skipped and isinstance(report.longrepr, tuple) and needs.SKIP_PREFIX in report.longrepr[2]:
        report.longrepr = (needs.__file__, needs.SKIP_LINE, report.longrepr[2])


def shared(*parts: str) -> Path:
    """A path in the shared real test data: without the data the test skips (said once at the top of the run);
    a file missing from data that is there is a failure (an outdated copy)."""
    needs.require("shared_data")
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.fail(f"{p} is missing from the shared test data at {SHARED}; update it")
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
