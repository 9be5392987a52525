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
from tests.image_cases import disc
from tests.segmenters import Darkness, search_path

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
    ref = s1_cfg(tmp_path, "ref")
    run_stage(SegmentStage(ref), ref)
    cfg = s1_cfg(tmp_path, "run", "workers=1")
    calls = []
    real = Darkness.__call__

    def dies_on_third(self, rgb):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of an item
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
    changed = s1_cfg(tmp_path, "run", "workers=1", "io.min_side=8")
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
    merged = read_manifest(tmp_path / "sharded" / STAGE_DIRS["s1"])
    assert merged == read_manifest(s1_out(full)) and len(merged) == 9  # the shards' manifests merge to the full one


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
                                    "item_dir": str(root / "s/c/1")}]
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
