"""What a command leaves and says (issue 22 class 9, issue 28): a command refused at the start (an unknown
stage, a bad value) or stopped at once by its stage (a missing API key,
``inpainter=sdxl`` without a GPU, nothing upstream) prints its one line, no empty summary table, exits 2 and
leaves no folder under ``outputs/runs/``; a command that did something leaves one, and ``keep_runs`` bounds how
many stay. Through the real CLI."""
from __future__ import annotations

from pathlib import Path

import pytest

from gen4gen.run_folders import discard, prune, run_folders
from tests.helpers.trees import fake_s1
from tests.helpers.pipeline_run import cli

# (overrides, a piece of the one line the user reads)
REFUSED = [
    (["stage=s9"], "unknown stage 's9'"),
    (["stage=S1"], "unknown stage 'S1'"),
    (["stage=''"], "unknown stage ''"),
    (["seed=abc"], "seed=abc: expected a whole number"),
    (["compose.num_samples=0"], "compose.num_samples=0"),
    (["stage=s2", "compose.sets=subset"], "compose.sets=subset: choose one of 'all' or 'subsets'"),
    (["stage=s2", "shard.index=5", "shard.count=2"], "shard.index=5 is not below shard.count=2"),
]
STOPPED = [
    (["stage=s2", "layout=llm", "llm.api_key_env=GEN4GEN_NO_SUCH_KEY", "llm.fallback_on_unreachable=false"],
     "GEN4GEN_NO_SUCH_KEY is not set"),
    (["stage=s3", "inpainter=sdxl"], "needs a CUDA GPU"),
    (["stage=s4"], "no s3 output"),
    (["stage=export"], "nothing to export"),
]


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("overrides,line", REFUSED + STOPPED, ids=[" ".join(o) for o, _ in REFUSED + STOPPED])
def test_a_refused_command_says_one_line_and_leaves_no_run_folder(tmp_path, overrides, line):
    fake_s1(tmp_path / "stages", {"pets": {"cat": 1, "dog": 1}}, size=(60, 50))
    result = cli(tmp_path, *overrides, check=False, env={"CUDA_VISIBLE_DEVICES": ""})
    err = _lines(result.stderr)
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(err) == 1 and line in err[0], err
    assert "gen4gen summary" not in result.stderr and "see the error above" not in result.stderr
    runs = tmp_path / "outputs" / "runs"
    assert not runs.exists() or not any(runs.iterdir()), sorted(runs.rglob("*"))


@pytest.mark.slow
def test_a_command_that_did_something_leaves_its_run_folder_and_keep_runs_bounds_them(tmp_path):
    fake_s1(tmp_path / "stages", {"pets": {"cat": 1, "dog": 1}}, size=(60, 50))
    old = tmp_path / "outputs" / "runs" / "2020-01-01"
    for t in ("10-00-00_s1", "11-00-00_s2", "12-00-00_s2"):
        (old / t / ".hydra").mkdir(parents=True)
    (tmp_path / "outputs" / "runs" / "mine").mkdir()  # not a run folder: never touched
    fast = ["stage=s2", "compose.num_samples=1", "compose.size=[64,64]", "keep_runs=2"]
    result = cli(tmp_path, *fast)
    assert "gen4gen summary" in result.stderr
    left = run_folders(tmp_path / "outputs" / "runs")
    assert len(left) == 2 and left[0].name == "12-00-00_s2" and left[1].name.endswith("_s2")
    assert (left[1] / "gen4gen.log").is_file() and (tmp_path / "outputs" / "runs" / "mine").is_dir()


def _fake_runs(root: Path, names: list[str]) -> None:
    for n in names:
        (root / n / ".hydra").mkdir(parents=True)
        (root / n / ".hydra" / "config.yaml").write_text("x: 1")


NAMES = [f"2026-01-0{d}/{h:02d}-00-00_s{d}" for d in range(1, 4) for h in (9, 13)]


@pytest.mark.parametrize("keep", [None, 0, 1, 3, 6, 10])
def test_prune_keeps_the_newest_run_folders_and_nothing_else_is_touched(tmp_path, keep):
    _fake_runs(tmp_path, NAMES)
    (tmp_path / "2026-01-01" / "notes").mkdir()  # not a run folder
    (tmp_path / "2026-01-02" / "10-00-00_x").mkdir()  # no .hydra: not Hydra's
    removed = prune(tmp_path, keep)
    left = [p.relative_to(tmp_path).as_posix() for p in run_folders(tmp_path)]
    want = NAMES if keep is None else NAMES[len(NAMES) - min(keep, len(NAMES)):] if keep else []
    assert left == want and removed == len(NAMES) - len(want)
    assert (tmp_path / "2026-01-01" / "notes").is_dir() and (tmp_path / "2026-01-02" / "10-00-00_x").is_dir()


def test_discard_removes_only_what_hydra_wrote(tmp_path):
    run = tmp_path / "2026-01-01" / "10-00-00_s9"
    _fake_runs(tmp_path, ["2026-01-01/10-00-00_s9"])  # the log Hydra opened: tested through the CLI above
    discard(run)
    assert not (tmp_path / "2026-01-01").exists()
    _fake_runs(tmp_path, ["2026-01-01/10-00-00_s9"])
    (run / "report.json").write_text("{}")  # a stage's own file: the folder stays
    discard(run)
    assert sorted(p.name for p in run.iterdir()) == ["report.json"]
