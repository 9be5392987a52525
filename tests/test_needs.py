"""`make test` without the shared data: the run says once, at its top, what is missing and how to get it, and the
summary folds every test waiting for it into one line (it listed 48 reasons, one per test)."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers.pipeline_run import ROOT


def test_a_missing_need_is_said_once_at_the_top_and_folded_in_the_summary(tmp_path):
    env = {**os.environ, "GEN4GEN_SHARED_DATA": str(tmp_path / "absent"), "PYTHONPATH": str(ROOT)}
    # two tests that read the shared data through a fixture, one that reads it in its body, one that does not
    cmd = [sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:xdist", "-p", "no:cacheprovider",
           "tests/test_caption_template.py::test_short_caption_fits_clip_with_the_real_tokenizer",
           "tests/test_caption_template.py::test_rule_counter_never_undercounts_the_real_tokenizer",
           "tests/test_route.py::test_shared_cems_figures_are_reproduced_exactly",
           "tests/test_route.py::test_cems_cost_formula_and_overrides"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600).stdout
    lines = out.splitlines()
    assert lines[0] == (f"not here, so the tests that need it skip (shared_data): the shared real test data at "
                        f"{tmp_path / 'absent'}; to run them: set GEN4GEN_SHARED_DATA=/path/to/shared/data (photos "
                        "with reference masks, promptsets, the GEMRec roster, CEMS tables, the CLIP vocabulary)")
    skipped = [x for x in lines if x.startswith("SKIPPED")]
    assert skipped == [f"SKIPPED [3] tests/helpers/needs.py:{_require_line()}: needs the shared real test data at "
                       f"{tmp_path / 'absent'} (see the top of the run)"]
    assert lines[-1].startswith("1 passed, 3 skipped")


def _require_line() -> int:
    from tests.helpers import needs

    return needs.SKIP_LINE
