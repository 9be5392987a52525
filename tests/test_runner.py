"""Runner contracts (DESIGN.md): resumable after a kill, shard-independent, seeded by (seed, item id)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gen4gen.errors import ItemFailed
from gen4gen.io import png_bytes
from gen4gen.manifest import read_manifest
from gen4gen.markers import read_failures
from gen4gen.paths import STAGE_DIRS
from gen4gen.runner import Item, run_stage
from gen4gen.stages.s1_segment import SegmentStage
from tests.conftest import make_cfg
from tests.helpers.image_cases import disc
from tests.helpers.segmenters import Darkness, search_path

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("seconds",)


def photos(src: Path, n: int = 6) -> None:
    for k in range(n):
        d = src / ("scene_a" if k % 2 else "scene_b") / ("cat" if k % 3 else "dog")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(disc(48 + 4 * k, colour=(20 * k, 30, 40))).save(d / f"photo {k}.png")


def snapshot(root: Path) -> dict[str, object]:
    """Every output file's bytes; meta.json parsed with its timing fields removed (they differ per run)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name.startswith(("failures", "manifest")):  # per shard: compared merged
            continue
        rel = p.relative_to(root).as_posix()
        if p.name == "meta.json":
            meta = json.loads(p.read_text("utf-8"))
            out[rel] = {k: v for k, v in meta.items() if k not in TIMING and k != "rounds"}
            out[rel]["rounds"] = [{k: v for k, v in r.items() if k not in TIMING} for r in meta.get("rounds", [])]
        else:
            out[rel] = p.read_bytes()
    return out


def s1_cfg(tmp_path: Path, stages: str, *overrides: str):
    return make_cfg(tmp_path, search_path(tmp_path), "segmenter=darkness", f"paths.stages_dir={tmp_path / stages}",
                    *overrides)


def s1_out(cfg) -> Path:
    return Path(cfg.paths.stages_dir) / STAGE_DIRS["s1"]


def test_killed_run_resumes_to_exactly_the_uninterrupted_output(tmp_path):
    photos(tmp_path / "src", 8)
    ref_cfg = s1_cfg(tmp_path, "ref", "segmenter.sleep=0.4", "workers=1")
    run_stage(SegmentStage(ref_cfg), ref_cfg)
    expected = snapshot(s1_out(ref_cfg))
    assert len([k for k in expected if k.endswith("meta.json")]) == 8

    cli = [sys.executable, "-m", "gen4gen", "stage=s1", f"paths.source_dir={tmp_path / 'src'}",
           f"paths.stages_dir={tmp_path / 'killed'}", f"paths.outputs_dir={tmp_path / 'outputs'}",
           search_path(tmp_path), "segmenter=darkness", "segmenter.sleep=0.4", "workers=1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cli, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = tmp_path / "killed" / STAGE_DIRS["s1"]
    deadline = time.time() + 120
    while len(list(out.rglob("meta.json"))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(out.rglob("meta.json")))
    assert 2 <= done_before < 8, "the run must be killed part-way"
    # a write the kill interrupted: a temporary file that must not survive the rerun
    items = sorted(k.rsplit("/", 1)[0] for k in expected if k.endswith("meta.json"))
    stray = next(out / i for i in items if not (out / i / "meta.json").exists())
    stray.mkdir(parents=True, exist_ok=True)
    (stray / ".cutout.png.999.tmp").write_bytes(b"half")

    cfg = s1_cfg(tmp_path, "killed", "segmenter.sleep=0.4", "workers=1")
    summary = run_stage(SegmentStage(cfg), cfg)
    assert summary.skipped == done_before and summary.done == 8 - done_before and summary.failed == 0
    assert snapshot(out) == expected


def test_interrupted_in_process_run_resumes_and_skips_done_items(tmp_path, monkeypatch):
    photos(tmp_path / "src", 6)
    # two rounds: s1's prepare segments every photo once (its concept's choice needs them all), then each
    # item segments its second round in process(), where the interruption comes
    ref = s1_cfg(tmp_path, "ref", "segment.rounds=2")
    run_stage(SegmentStage(ref), ref)
    cfg = s1_cfg(tmp_path, "run", "workers=1", "segment.rounds=2")
    calls = []
    real = Darkness.__call__

    def dies_on_third(self, rgb):
        calls.append(1)
        if len(calls) == 6 + 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the third item
        return real(self, rgb)

    monkeypatch.setattr(Darkness, "__call__", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_stage(SegmentStage(cfg), cfg)
    monkeypatch.setattr(Darkness, "__call__", real)
    # the queue stops at the interruption (the one worker may already have taken the next item)
    done_before = len(list(s1_out(cfg).rglob("meta.json")))
    assert 2 <= done_before <= 3
    summary = run_stage(SegmentStage(cfg), cfg)
    assert (summary.skipped, summary.done) == (done_before, 6 - done_before)
    assert snapshot(s1_out(cfg)) == snapshot(s1_out(ref))
    # a third run does nothing; a changed config redoes everything
    assert run_stage(SegmentStage(cfg), cfg).skipped == 6
    changed = s1_cfg(tmp_path, "run", "workers=1", "segment.rounds=2", "io.min_side=8")
    assert run_stage(SegmentStage(changed), changed).done == 6


def test_changed_photo_is_redone(tmp_path):
    photos(tmp_path / "src", 3)
    cfg = s1_cfg(tmp_path, "run")
    run_stage(SegmentStage(cfg), cfg)
    p = next((tmp_path / "src").rglob("*.png"))
    Image.fromarray(disc(40)).save(p)
    s = run_stage(SegmentStage(cfg), cfg)
    assert (s.done, s.skipped) == (1, 2)


def test_union_of_three_shards_is_one_full_run(tmp_path):
    photos(tmp_path / "src", 9)
    full = s1_cfg(tmp_path, "full")
    run_stage(SegmentStage(full), full)
    counts = []
    for k in range(3):
        cfg = s1_cfg(tmp_path, "sharded", f"shard.index={k}", "shard.count=3")
        counts.append(run_stage(SegmentStage(cfg), cfg).done)
    assert sum(counts) == 9 and max(counts) < 9  # every item exactly once, split between shards
    assert snapshot(s1_out(full)) == snapshot(tmp_path / "sharded" / STAGE_DIRS["s1"])
    assert sorted(p.name for p in (tmp_path / "sharded" / STAGE_DIRS["s1"]).glob("failures*")) == [
        f"failures.shard-{k}-of-3.jsonl" for k in range(3)]
    merged = read_manifest(tmp_path / "sharded" / STAGE_DIRS["s1"]).items
    assert merged == read_manifest(s1_out(full)).items and len(merged) == 9  # the shards' manifests merge to the full one


class NoiseStage:
    """A toy stage whose output is nothing but its item's random draw."""

    name = "noise"

    def __init__(self, root: Path, ids: list[str], bad: str | None = None):
        self.out_root, self.ids, self.bad = root, ids, bad

    def discover(self):
        return [Item(i, self.out_root / i, {"path": i}) for i in self.ids]

    def config(self):
        return {"v": 1}

    def process(self, item, out, rng):
        if item.id == self.bad:
            raise ItemFailed("this one is bad")
        out.bytes("noise.png", png_bytes((rng.random((8, 8)) * 255).astype(np.uint8)))
        return {"first": float(rng.random())}


def test_same_seed_same_bytes_whatever_the_order_and_sharding(tmp_path, cfg_factory):
    ids = [f"s/c/{k}" for k in range(7)]
    a = tmp_path / "a"
    run_stage(NoiseStage(a, ids), cfg_factory("seed=3"))
    b = tmp_path / "b"
    for k in range(2):
        run_stage(NoiseStage(b, ids[::-1]), cfg_factory("seed=3", f"shard.index={k}", "shard.count=2"))
    c = tmp_path / "c"
    run_stage(NoiseStage(c, ids), cfg_factory("seed=4"))
    for i in ids:
        assert (a / i / "noise.png").read_bytes() == (b / i / "noise.png").read_bytes()
        assert (a / i / "noise.png").read_bytes() != (c / i / "noise.png").read_bytes()


def test_failed_item_is_recorded_and_retried(tmp_path, cfg_factory):
    ids = ["s/c/0", "s/c/1"]
    root = tmp_path / "n"
    s = run_stage(NoiseStage(root, ids, bad="s/c/1"), cfg_factory())
    assert (s.done, s.failed) == (1, 1)
    assert read_failures(root) == [{"stage": "noise", "id": "s/c/1", "path": "s/c/1", "reason": "this one is bad",
                                    "item_dir": "s/c/1"}]  # relative to the stage folder
    s = run_stage(NoiseStage(root, ids), cfg_factory())  # fixed: only the failed item runs again
    assert (s.done, s.skipped, s.failed) == (1, 1, 0) and read_failures(root) == []


def test_failures_of_shards_merge_without_duplicates_and_drop_items_done_since(tmp_path, cfg_factory):
    ids = [f"s/c/{i}" for i in range(6)]
    root = tmp_path / "n"
    for index in range(2):
        run_stage(NoiseStage(root, ids, bad="s/c/1"), cfg_factory(f"shard.index={index}", "shard.count=2"))
    run_stage(NoiseStage(root, ids, bad="s/c/1"), cfg_factory())  # the same failure, now in failures.jsonl too
    assert len(list(root.glob("failures*.jsonl"))) == 3
    assert [f["id"] for f in read_failures(root)] == ["s/c/1"]
    run_stage(NoiseStage(root, ids), cfg_factory())  # fixed input: the shard file's old line no longer counts
    assert read_failures(root) == []


class BatchStage(NoiseStage):
    """NoiseStage through the batch hook: items grouped by their id's middle part; a batch holding ``boom``
    raises as a whole (out of GPU memory), ``bad`` fails alone."""

    batch_size = 3

    def __init__(self, root: Path, ids: list[str], bad: str | None = None, boom: str | None = None):
        super().__init__(root, ids, bad)
        self.boom, self.calls = boom, []

    def batch_key(self, item):
        return item.id.split("/")[1]

    def process_batch(self, items, writers, rngs):
        self.calls.append([it.id for it in items])
        if any(it.id == self.boom for it in items):
            raise RuntimeError("CUDA out of memory")
        out = []
        for it, w, rng in zip(items, writers, rngs):
            try:
                out.append(self.process(it, w, rng))
            except ItemFailed as e:
                out.append(e)
        return out


def test_batch_hook_groups_by_key_in_order_and_keeps_markers_and_failures(tmp_path, cfg_factory):
    ids = [f"s/a/{k}" for k in range(4)] + ["s/b/0", "s/b/1"] + [f"s/a/{k}" for k in range(4, 6)]
    root = tmp_path / "batched"
    stage = BatchStage(root, ids, bad="s/a/1", boom="s/b/1")
    s = run_stage(stage, cfg_factory("seed=3"))
    # consecutive runs of one key, cut at batch_size; order kept
    assert stage.calls == [["s/a/0", "s/a/1", "s/a/2"], ["s/a/3"], ["s/b/0", "s/b/1"], ["s/a/4", "s/a/5"]]
    assert (s.total, s.done, s.failed) == (8, 5, 3)
    reasons = {f["id"]: f["reason"] for f in read_failures(root)}
    assert reasons == {"s/a/1": "this one is bad", "s/b/0": "batch of 2 failed: RuntimeError: CUDA out of memory",
                       "s/b/1": "batch of 2 failed: RuntimeError: CUDA out of memory"}
    # the same bytes as one by one: randomness is per item, not per batch
    one = tmp_path / "one"
    run_stage(NoiseStage(one, ids), cfg_factory("seed=3"))
    for i in ids:
        if i not in reasons:
            assert (root / i / "noise.png").read_bytes() == (one / i / "noise.png").read_bytes()
            meta = json.loads((root / i / "meta.json").read_text())
            assert meta["id"] == i and meta["first"] == json.loads((one / i / "meta.json").read_text())["first"]
    # a rerun redoes only the failed items, in batches of their own
    stage = BatchStage(root, ids)
    s = run_stage(stage, cfg_factory("seed=3"))
    assert (s.done, s.skipped, s.failed) == (3, 5, 0) and stage.calls == [["s/a/1"], ["s/b/0", "s/b/1"]]


def test_shared_folder_items_use_their_own_marker_and_temp_files(tmp_path, cfg_factory):
    """Items that share one folder (bench images) each have a ``<stem>.json`` marker and own only their stem's
    temporary files; a stale temp file of the stage folder itself is removed at the start of the next run."""
    root = tmp_path / "shared"

    class FileStage(NoiseStage):
        def discover(self):
            return [Item(i, self.out_root / "imgs", {"path": i}, marker=self.out_root / "imgs" / f"{i}.json")
                    for i in self.ids]

        def process(self, item, out, rng):
            out.bytes(f"{item.id}.png", b"png" + item.id.encode())
            return {"n": item.id}

    (root / "imgs").mkdir(parents=True)
    (root / "imgs" / ".a.png.999999.tmp").write_bytes(b"half")  # item a was killed mid-write
    (root / "imgs" / ".b.png.999999.tmp").write_bytes(b"b is being written by a live shard")
    (root / ".failures.jsonl.999999.tmp").write_bytes(b"disk full")  # pid 999999: not running
    live = root / f".failures.shard-1-of-2.jsonl.{os.getppid()}.tmp"  # a running writer's file stays
    live.write_bytes(b"")
    s = run_stage(FileStage(root, ["a"]), cfg_factory())
    assert s.done == 1 and json.loads((root / "imgs" / "a.json").read_text())["n"] == "a"
    assert sorted(p.name for p in root.rglob(".*.tmp")) == [".b.png.999999.tmp", live.name]
    assert run_stage(FileStage(root, ["a"]), cfg_factory()).skipped == 1
    (root / "imgs" / "a.json").unlink()  # a lost marker redoes that item alone
    assert run_stage(FileStage(root, ["a", "b"]), cfg_factory()).done == 2


def _sigint_mid_run(cli: list[str], cwd: Path, out: Path, at_least: int, env: dict | None = None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **(env or {})}
    proc = subprocess.Popen(cli, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while len(list(out.rglob("meta.json"))) < at_least and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, stdout + stderr


def test_ctrl_c_in_the_cli_prints_one_line_exits_130_and_the_rerun_resumes(tmp_path):
    photos(tmp_path / "src", 8)
    cli = [sys.executable, "-m", "gen4gen", "stage=s1", f"paths.source_dir={tmp_path / 'src'}",
           f"paths.stages_dir={tmp_path / 'stages'}", f"paths.outputs_dir={tmp_path / 'outputs'}",
           search_path(tmp_path), "segmenter=darkness", "segmenter.sleep=0.3", "workers=1"]
    out = tmp_path / "stages" / STAGE_DIRS["s1"]
    code, text = _sigint_mid_run(cli, tmp_path, out, at_least=2)
    done = len(list(out.rglob("meta.json")))
    assert code == 130 and 2 <= done < 8, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    assert [line for line in text.splitlines() if "interrupted" in line] == [
        f"interrupted: {done} items done, rerun to resume"]
    cfg = s1_cfg(tmp_path, "stages", "segmenter.sleep=0.3")  # the same config: finished items are kept
    summary = run_stage(SegmentStage(cfg), cfg)
    assert (summary.skipped, summary.done, summary.failed) == (done, 8 - done, 0)


def test_ctrl_c_while_waiting_for_the_llm_is_one_line_and_130(tmp_path):
    """The prepare phase (concurrent LLM calls, before any item runs): the same line, no asyncio traceback."""
    from tests.helpers.llm_server import LLMServer, Reply
    from tests.helpers.trees import fake_s1
    from tests.helpers.s2_llm_replies import good_content

    fake_s1(tmp_path / "stages", {"pets": {"cat": 1, "dog": 1}})
    with LLMServer(lambda body, n: Reply(good_content(body), delay=30)) as srv:
        cli = [sys.executable, "-m", "gen4gen", "stage=s2", "layout=llm", f"llm.base_url={srv.base_url}",
               f"paths.source_dir={tmp_path / 'src'}", f"paths.stages_dir={tmp_path / 'stages'}",
               f"paths.outputs_dir={tmp_path / 'outputs'}", f"paths.cache_dir={tmp_path / 'cache'}"]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OPENAI_API_KEY": "sk-test"}
        proc = subprocess.Popen(cli, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while not srv.requests and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        started = time.time()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    text = stdout + stderr
    assert proc.returncode == 130 and time.time() - started < 20, text  # not after the 30 s replies
    assert "Traceback" not in text and "interrupted: 0 items done, rerun to resume" in text


def test_failure_rows_of_a_copied_stage_folder_check_the_copy(tmp_path, cfg_factory):
    import shutil

    ids = ["s/c/0", "s/c/1"]
    root = tmp_path / "n"
    run_stage(NoiseStage(root, ids, bad="s/c/1"), cfg_factory())
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    run_stage(NoiseStage(root, ids), cfg_factory())  # the original's item is fixed; the copy's is not
    assert read_failures(root) == []
    assert [r["id"] for r in read_failures(copy)] == ["s/c/1"]
