"""Bad-input campaign end to end: a corpus of broken and odd files through ``stage=all`` on the CLI.
Every good item completes, every bad one has one clear line in failures.jsonl, the summary counts
match, and no traceback reaches the user."""
from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gen4gen.markers import read_failures
from gen4gen.paths import STAGE_DIRS
from tests.helpers import image_cases as cases
from tests.helpers.pipeline_run import FAST, cli

pytestmark = pytest.mark.slow


def animated(fmt: str) -> bytes:
    frames = [Image.fromarray(cases.disc(64, colour=(40 * k, 40, 40))) for k in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def make_corpus(src: Path) -> dict:
    thing = src / "mixed" / "thing"
    cases.write_corpus(thing, {**cases.GOOD, **cases.BAD})
    (thing / "wrong extension.jpg").write_bytes(cases.encode(Image.fromarray(cases.disc()), "PNG"))
    (thing / "animated.png").write_bytes(animated("PNG"))  # APNG: its first frame is used
    (thing / "animated.gif").write_bytes(animated("GIF"))  # not a photo format we take
    cases.write_corpus(src / "mixed" / "other", {"only one.jpg": lambda: cases.encode(
        Image.fromarray(cases.disc(80, colour=(200, 40, 40))), "JPEG", quality=95)})
    (src / "mixed" / "empty concept").mkdir()
    os.symlink(src / "mixed" / "loop", src / "mixed" / "loop")  # a folder link to itself
    cases.write_corpus(src / "lonely" / "solo", {"a.png": lambda: cases.encode(Image.fromarray(cases.disc()), "PNG")})
    good = [Path(n).stem for n in cases.GOOD] + ["wrong extension", "animated", "only one", "a"]
    bad = [*cases.BAD, "animated.gif", "empty concept", "loop"]
    return {"good": good, "bad": bad}


def summary_row(text: str, stage: str) -> list[int]:
    """items, done, skipped, failed from the printed summary table."""
    row = next(line for line in text.splitlines() if re.match(rf"^\W*{stage}\s*│", line))
    return [int(x) for x in re.findall(r"│\s*(\d+)\s*(?=│)", row)][:4]


@pytest.mark.needs("weights")
def test_bad_input_corpus_through_every_stage(tmp_path):
    expect = make_corpus(tmp_path / "src")
    result = cli(tmp_path, "stage=all", *FAST)
    shown = result.stdout + result.stderr
    assert result.returncode == 0
    assert "Traceback" not in shown

    stages = tmp_path / "stages"
    s1 = stages / STAGE_DIRS["s1"]
    assert sorted(p.parent.name for p in s1.rglob("meta.json")) == sorted(expect["good"])
    failures = read_failures(s1)
    names = sorted(Path(f["path"]).name for f in failures)
    assert names == sorted(expect["bad"])  # one line per bad item, none for a good one
    for f in failures:
        assert f["reason"] and "Traceback" not in f["reason"] and "\n" not in f["reason"]
    reasons = {Path(f["path"]).name: f["reason"] for f in failures}
    assert "symlink loop" in reasons["loop"] and "unsupported file type '.gif'" in reasons["animated.gif"]
    assert summary_row(result.stderr, "s1") == [len(expect["good"]) + len(expect["bad"]), len(expect["good"]), 0,
                                                len(expect["bad"])]

    # the scene with one concept cannot be composed: one clear line, the other scene goes on
    s2_failures = read_failures(stages / STAGE_DIRS["s2"])
    assert [f["id"].split("/")[0] for f in s2_failures] == ["lonely"]
    assert "concept" in s2_failures[0]["reason"]
    index = tmp_path / "outputs/datasets/mycanvas/mycanvas/index.jsonl"
    rows = [json.loads(line) for line in index.read_text().splitlines()]
    assert rows and all(r["scene"] == "mixed" and sorted(r["concepts"]) == ["other", "thing"] for r in rows)
    card = (tmp_path / "outputs/datasets/mycanvas/README.md").read_text()
    assert str(len(expect["bad"])) in card  # the dataset card counts what was left out upstream
    # the reader took the first frame of the animation and the right pixels of odd modes
    cut = np.asarray(Image.open(s1 / "mixed/thing/animated/cutout.png"))
    assert cut.shape == (64, 64, 4)
