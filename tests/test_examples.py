"""`python -m gen4gen.examples`: real bundled photos, laid out as scenes, written only when absent."""
from __future__ import annotations

import hashlib

import pytest

from gen4gen.examples import main, make_examples
from gen4gen.images import read_image


def test_examples_make_two_multi_concept_scenes_once(tmp_path, capsys):
    dest = tmp_path / "s0"
    written = make_examples(dest)
    scenes = sorted(p for p in dest.iterdir() if p.is_dir())
    assert len(scenes) >= 2
    for scene in scenes:
        concepts = sorted(p for p in scene.iterdir() if p.is_dir())
        assert len(concepts) >= 2
        for concept in concepts:
            photos = sorted(concept.iterdir())
            assert len(photos) >= 2
            digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in photos}
            assert len(digests) == len(photos)  # distinct files, not copies
            for p in photos:
                assert min(read_image(p).shape[:2]) >= 200  # real photos, through the project's reader
    assert len(written) == sum(1 for _ in dest.rglob("*.jpg"))
    # idempotent: nothing rewritten, a user's edit survives, a deleted file comes back
    mine = written[0]
    mine.write_bytes(mine.read_bytes() + b"\0")
    before = mine.stat().st_mtime_ns
    gone = written[1]
    gone.unlink()
    assert make_examples(dest) == [gone]
    assert mine.stat().st_mtime_ns == before
    assert main(["--dest", str(dest)]) == 0
    assert "already present" in capsys.readouterr().out


@pytest.mark.needs("weights")
def test_default_s1_segments_the_example_scenes(tmp_path, cfg_factory):
    """The `make demo` path for s1: the embedded U²-Net-p finds each example concept."""
    import json

    from gen4gen.app import run

    make_examples(tmp_path / "src")
    assert run(cfg_factory("stage=s1")) == 0
    metas = [json.loads(p.read_text()) for p in (tmp_path / "stages").rglob("meta.json")]
    assert len(metas) == 12 and all(m["backend"] == "u2netp" and "empty" not in m["flags"] for m in metas)
    area = {m["concept"]: [] for m in metas}
    for m in metas:
        area[m["concept"]].append(m["area_fraction"])
    # the cup and saucer fill about half of the coffee photo; the rocket is a thin sliver of its photo
    assert all(0.35 < a < 0.6 for a in area["cup"]) and all(0.005 < a < 0.06 for a in area["rocket"])
    assert all(a > 0.4 for a in area["cat"] + area["astronaut"])
