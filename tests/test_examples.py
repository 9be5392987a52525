"""`python -m gen4gen.examples`: real bundled photos, laid out as scenes, written only when absent."""
from __future__ import annotations

import hashlib

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
