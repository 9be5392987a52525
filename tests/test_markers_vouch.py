"""Done markers vouch for their files (a changed or broken output redoes its item), and runs of other settings
never merge (issue 22, classes 4 and 5): cases generated over every file an item writes and every way to
damage it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gen4gen.io import png_bytes
from gen4gen.paths import STAGE_DIRS
from gen4gen.item_files import VERIFY_BYTES
from gen4gen.runner import Item, run_stage
from gen4gen.stages import export, s2_compose, s3_repaint, s4_caption
from gen4gen.tree import TreeView
from tests.helpers.trees import fake_s1


class TwoFiles:
    """A toy stage whose items write a small JSON file and an image bigger than ``VERIFY_BYTES``."""

    name = "two"

    def __init__(self, root: Path, ids: list[str]):
        self.out_root, self.ids = root, ids

    def discover(self):
        return [Item(i, self.out_root / i) for i in self.ids]

    def config(self):
        return {"v": 1}

    def process(self, item, out, rng):
        out.json("result.json", {"id": item.id, "draw": float(rng.random())})
        out.bytes("image.png", png_bytes((rng.random((160, 160, 3)) * 255).astype(np.uint8)))
        return {}


def _garble(p: Path) -> None:  # same size, other bytes
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))


DAMAGE = {
    "deleted": lambda p: p.unlink(),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "grown": lambda p: p.write_bytes(p.read_bytes() + b"\0"),
    "emptied": lambda p: p.write_bytes(b""),
    "a folder now": lambda p: (p.unlink(), p.mkdir()),
    "garbled, same size": _garble,
}
CASES = [(f, d) for f in ("result.json", "image.png") for d in DAMAGE
         if not (f == "image.png" and d == "garbled, same size")]  # a big file is checked by size (see below)


@pytest.mark.parametrize("name, damage", CASES)
def test_a_damaged_output_redoes_its_item_and_only_it(tmp_path, cfg_factory, name, damage):
    ids = [f"s/{k}" for k in range(4)]
    root = tmp_path / "two"
    cfg = cfg_factory("seed=1")
    run_stage(TwoFiles(root, ids), cfg)
    assert (root / "s/0/image.png").stat().st_size > VERIFY_BYTES >= (root / "s/0/result.json").stat().st_size
    good = {i: (root / i / name).read_bytes() for i in ids}
    target = root / "s/2" / name
    DAMAGE[damage](target)
    again = run_stage(TwoFiles(root, ids), cfg)
    assert again.notes["redone: a file changed or broke since it was done"] == 1
    if damage == "a folder now":  # not the runner's to delete: the item fails with one line, the others stand
        assert (again.done, again.skipped, again.failed) == (0, 3, 1)
        return
    assert (again.done, again.skipped) == (1, 3)
    assert {i: (root / i / name).read_bytes() for i in ids} == good  # the same bytes again
    third = run_stage(TwoFiles(root, ids), cfg)
    assert (third.done, third.skipped) == (0, 4)


def test_the_marker_lists_each_file_with_its_size_and_hash(tmp_path, cfg_factory):
    root = tmp_path / "two"
    run_stage(TwoFiles(root, ["a"]), cfg_factory())
    meta = json.loads((root / "a/meta.json").read_text())
    assert list(meta["outputs"]) == ["image.png", "result.json"]
    assert [v[0] for v in meta["outputs"].values()] == [(root / "a" / n).stat().st_size
                                                        for n in ("image.png", "result.json")]
    meta["outputs"] = "garbage"  # a marker whose list is unreadable vouches for nothing
    (root / "a/meta.json").write_text(json.dumps(meta))
    assert run_stage(TwoFiles(root, ["a"]), cfg_factory()).done == 1


def test_shards_run_with_other_settings_never_merge(tmp_path, cfg_factory):
    fake_s1(tmp_path / "stages", {"farm": {"cow": 1, "hen": 1}, "pets": {"cat": 1, "dog": 1}})
    base = ("compose.size=[96,96]", "shard.count=2")
    first = s2_compose.run(cfg_factory(*base, "shard.index=0", "compose.num_samples=2"))
    second = s2_compose.run(cfg_factory(*base, "shard.index=1", "compose.num_samples=3"))
    assert first.done + second.done == 5  # one scene each: 2 + 3 compositions on disk
    tree = TreeView(tmp_path / "stages")
    # the newest settings (num_samples=3) are s2's; the other shard's compositions are named, not merged
    assert len(tree.items("s2")) == 3 and tree.other_settings("s2") == 2 and tree.stale("s2") == 0
    s3 = s3_repaint.run(cfg_factory("compose.size=[96,96]"))
    made = {p.parent.parent.relative_to(tmp_path / "stages" / STAGE_DIRS["s3"]).as_posix()
            for p in (tmp_path / "stages" / STAGE_DIRS["s3"]).glob("*/*/*/meta.json")}
    assert made == set(tree.items("s2")) and s3.done == s3.total
    assert s3.notes["compositions of a shard run with other settings than s2's latest: ignored (run every shard "
                    "with the same settings)"] == 2
    # the export (at either setting: it reads what s2 recorded) takes shard 1's items only and says so
    cfg = cfg_factory("compose.size=[96,96]", "compose.num_samples=2", "export.formats=[mycanvas]",
                      "export.gallery=false")
    s4_caption.run(cfg)
    summary = export.run(cfg)
    assert summary.done == 3 and summary.notes[
        "compositions of a shard run with other settings than s2's latest: ignored (run every shard with the same "
        "settings)"] == 2
    rows = (tmp_path / "outputs/datasets/mycanvas/mycanvas/index.jsonl").read_text().splitlines()
    assert sorted(json.loads(r)["id"].rsplit("/", 1)[0] for r in rows) == sorted(tree.items("s2"))
    # run shard 0 again with the same settings as shard 1: one dataset again, nothing ignored
    s2_compose.run(cfg_factory(*base, "shard.index=0", "compose.num_samples=3"))
    tree = TreeView(tmp_path / "stages")
    assert len(tree.items("s2")) == 6 and tree.other_settings("s2") == 0
