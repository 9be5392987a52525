"""Reliability of the whole pipeline through the real CLI: SIGKILL at random points and resume,
shards through a Hydra launcher, determinism across shard counts and orders, secrets."""
from __future__ import annotations

import json
import random
import shutil
import signal
import time
from pathlib import Path

import pytest

from gen4gen.paths import STAGE_DIRS
from tests.helpers.llm_server import LLMServer
from tests.helpers.pipeline_run import FAST, assert_no_half_done, assert_same_outputs, cli, small_sources
from tests.helpers.s2_llm_replies import good_content
from tests.test_reliability_llm import good_caption, is_caption

pytestmark = [pytest.mark.slow, pytest.mark.needs("weights")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One uninterrupted, unsharded run of every data stage."""
    root = tmp_path_factory.mktemp("reference")
    small_sources(root / "src")
    cli(root, "stage=all", *FAST)
    assert (root / "outputs/datasets/mycanvas/mycanvas/index.jsonl").is_file()
    return root


def fresh(tmp_path: Path, reference: Path) -> Path:
    shutil.copytree(reference / "src", tmp_path / "src")
    return tmp_path


def _progress(root: Path, stage: str) -> set[str]:
    """What ``stage`` has made so far: its items' markers, or for export the dataset folders being built (a killed
    export's leftover is removed by the next one, so only a new name is progress)."""
    if stage == "export":
        datasets = root / "outputs" / "datasets"
        return {p.name for p in datasets.glob(".*partial*")} if datasets.is_dir() else set()
    folder = root / "stages" / STAGE_DIRS[stage]
    return {str(p) for p in folder.rglob("meta.json")} if folder.is_dir() else set()


def _kill_during(root: Path, stage: str, rng: random.Random) -> bool:
    """Start ``stage=all`` and SIGKILL it once ``stage`` has made something new; whether the kill landed."""
    start = _progress(root, stage)
    proc = cli(root, "stage=all", *FAST, background=True)
    deadline = time.monotonic() + 300
    while proc.poll() is None and not _progress(root, stage) - start and time.monotonic() < deadline:
        time.sleep(0.01)
    # somewhere inside the next item or between items: s1..s3 items take tens of milliseconds here (on an
    # idle machine s1's 8 photos are done within 50 ms of the first, so a longer wait kills s2, not s1)
    time.sleep(rng.uniform(0.0, 0.15 if stage == "export" else 0.01))
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert_no_half_done(root / "stages")  # no half-written item ever looks done
    final = root / "outputs/datasets/mycanvas"
    if final.exists():  # a dataset is there whole or not at all
        for line in (final / "mycanvas/index.jsonl").read_text().splitlines():
            assert (final / "mycanvas" / json.loads(line)["image"]).is_file()
    return killed


def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(tmp_path, reference):
    root = fresh(tmp_path, reference)
    rng = random.Random(7)
    kills = []
    # one kill per stage, in pipeline order, so each target still has work when its run starts (a second kill
    # aimed at s1 found s1 finished whenever the first landed late, and the run then went through s2 and s3 to the
    # end). A run that ended before its kill landed is tried again.
    for stage in ["s1", "s2", "s3", "export"]:
        for _ in range(3):
            if stage == "export":  # a finished export of an unchanged tree is a skip: without its marker it builds
                (root / "stages/export/mycanvas.meta.json").unlink(missing_ok=True)
            if _kill_during(root, stage, rng):
                kills.append(stage)
                break
    assert {"s1", "s2", "s3", "export"} <= set(kills), kills
    cli(root, "stage=all", *FAST)
    assert_same_outputs(reference, root)
    print(f"\ncrash campaign: SIGKILL during {kills}; resumed output equals the uninterrupted run")


def test_shards_through_submitit_local_equal_a_single_run(tmp_path, reference):
    root = fresh(tmp_path, reference)
    result = cli(root, "-m", "stage=all", "shard.count=2", "shard.index=0,1", "hydra/launcher=submitit_local", *FAST)
    assert "Traceback" not in result.stderr
    assert_same_outputs(reference, root)


def test_three_shards_in_reverse_order_equal_a_single_run(tmp_path, reference):
    root = fresh(tmp_path, reference)
    for index in (2, 1, 0):
        cli(root, "stage=all", "shard.count=3", f"shard.index={index}", *FAST)
    cli(root, "stage=export", *FAST)  # a sharded run exports once all shards are done
    assert_same_outputs(reference, root)


SENTINEL = "sk-live-SENTINEL-7d2a0b"


def test_api_key_reaches_the_server_and_no_file(tmp_path, reference):
    root = fresh(tmp_path, reference)

    def replies(body, n):
        from tests.helpers.llm_server import Reply

        return Reply(good_caption(body) if is_caption(body) else good_content(body))

    with LLMServer(replies) as srv:
        llm = [f"llm.base_url={srv.base_url}", "llm.model=m"]
        cli(root, "stage=all", "layout=llm", "captioner=llm", *llm, *FAST, env={"OPENAI_API_KEY": SENTINEL})
        # a second run logs cache hits and reuses the saved config: still nothing
        cli(root, "stage=all", "layout=llm", "captioner=llm", *llm, *FAST, env={"OPENAI_API_KEY": SENTINEL})
    assert srv.requests and all({k.lower(): v for k, v in h.items()}["authorization"] == f"Bearer {SENTINEL}"
                                for h in srv.headers)
    leaked = [p for p in root.rglob("*") if p.is_file() and SENTINEL.encode() in p.read_bytes()]
    assert leaked == []
    saved = list(root.glob("outputs/runs/*/*/.hydra/config.yaml"))
    assert saved and all("OPENAI_API_KEY" in p.read_text() for p in saved)  # the variable's name, not its value


def test_a_settings_sweep_writes_separate_self_describing_outputs(tmp_path, reference):
    root = fresh(tmp_path, reference)
    shutil.copytree(reference / f"stages/{STAGE_DIRS['s1']}", root / f"stages/{STAGE_DIRS['s1']}")
    run = cli(root, "-m", "stage=s2", "seed=0,1", "compose.augment.flip=false,true", *FAST)
    assert "searchpath" not in run.stdout + run.stderr  # no conf/ here: that is fine, and Hydra's warning about it is not shown
    jobs = sorted(p.parent.parent for p in root.glob("outputs/multiruns/*/*/*/.hydra/overrides.yaml"))
    assert len(jobs) == 4
    layouts = set()
    for job in jobs:
        overrides = (job / ".hydra/overrides.yaml").read_text()
        assert "seed=" in overrides and "compose.augment.flip=" in overrides  # says what it is
        s2 = job / f"stages/{STAGE_DIRS['s2']}"
        assert (job / f"stages/{STAGE_DIRS['s1']}").resolve() == (root / f"stages/{STAGE_DIRS['s1']}").resolve()
        files = sorted(s2.rglob("layout.json"))
        assert len(files) == 4
        layouts.add(b"".join(p.read_bytes() for p in files))
    assert len(layouts) == 4  # each job its own compositions, none overwritten
    assert not (root / f"stages/{STAGE_DIRS['s2']}").exists()  # the shared folder untouched


def test_a_sweep_of_later_settings_segments_once(tmp_path):
    """``-m stage=all repaint.scene=desert,lake`` segmented the same photos in every job: a job's stages before the
    first one a swept setting changes run in the shared folder, so s1 runs once and the other job skips its done
    items, even with jobs at once (joblib: the second waits for the folder); s2 on is each job's own."""
    import re

    small_sources(tmp_path / "src")
    cli(tmp_path, "-m", "stage=all", "compose.augment.flip=false,true", "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2", *FAST)
    jobs = sorted(p.parent.parent for p in tmp_path.glob("outputs/multiruns/*/*/*/.hydra/overrides.yaml"))
    assert len(jobs) == 2
    counts = sorted(re.search(r"s1: (\d+) done, (\d+) skipped, (\d+) failed", (job / "gen4gen.log").read_text())
                    .groups() for job in jobs)
    assert counts == [("0", "8", "0"), ("8", "0", "0")]  # one job segmented, the other reused
    shared = tmp_path / f"stages/{STAGE_DIRS['s1']}"
    assert len(list(shared.rglob("meta.json"))) == 8
    layouts = set()
    for job in jobs:
        assert (job / f"stages/{STAGE_DIRS['s1']}").resolve() == shared.resolve()
        s2 = job / f"stages/{STAGE_DIRS['s2']}"
        assert not s2.is_symlink()
        layouts.add(b"".join(p.read_bytes() for p in sorted(s2.rglob("layout.json"))))
    assert len(layouts) == 2  # each job its own compositions
    assert not (tmp_path / f"stages/{STAGE_DIRS['s2']}").exists()
