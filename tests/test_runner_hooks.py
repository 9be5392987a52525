"""The runner's hooks for a stage whose one item is a whole folder (a dataset, an index): its own intact check,
failure lines of the item's parts, steps under the stage's bar, and a UserError from ``process`` that stops the run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from gen4gen.errors import UserError
from gen4gen.io import read_jsonl
from gen4gen.runner import Item, run_stage


class FolderStage:
    """One item, a folder of parts; a part named ``bad`` is listed as a failure of that part."""
    name = "folder"

    def __init__(self, root: Path, parts: list[str], refuse: bool = False):
        self.out_root, self.parts, self.refuse = root, parts, refuse
        self.failed: list[dict] = []
        self.checked: list[str] = []
        self.steps: list[int] = []

    def discover(self):
        return [Item("all", self.out_root / "all", {"path": "all"}, fingerprint=",".join(self.parts))]

    def config(self):
        return {"v": 1}

    def intact(self, item, meta):
        self.checked.append(item.id)
        return (item.out_dir / "parts.txt").is_file() and not (item.out_dir / "stray").exists()

    def process(self, item, out, rng):
        if self.refuse:
            raise UserError("the folder is not this stage's")
        step = out.steps("parts", len(self.parts))
        for p in self.parts:
            if p == "bad":
                self.failed.append({"stage": "folder", "id": f"all/{p}", "path": p, "reason": "unreadable part"})
            self.steps.append(1)
            step()
        (item.out_dir / "parts.txt").parent.mkdir(parents=True, exist_ok=True)
        (item.out_dir / "parts.txt").write_text("\n".join(self.parts))
        return {"parts": len(self.parts)}

    def inner_failures(self):
        return self.failed


def test_a_folder_item_is_checked_by_the_stages_own_intact_and_lists_its_parts_failures(tmp_path, cfg_factory):
    root = tmp_path / "folder"
    first = run_stage(FolderStage(root, ["a", "bad", "c"]), cfg_factory())
    assert (first.done, first.failed) == (1, 1)
    rows = read_jsonl(root / "failures.jsonl")
    assert rows == [{"stage": "folder", "id": "all/bad", "path": "bad", "reason": "unreadable part"}]
    again = FolderStage(root, ["a", "bad", "c"])
    s = run_stage(again, cfg_factory())
    assert (s.done, s.skipped) == (0, 1) and again.checked == ["all"] and again.steps == []
    (root / "all" / "stray").write_text("x")  # the stage's own check says the folder changed: redone
    broken = FolderStage(root, ["a", "bad", "c"])
    s = run_stage(broken, cfg_factory())
    assert s.done == 1 and s.notes["redone: a file changed or broke since it was done"] == 1
    assert broken.checked == ["all"] and broken.steps == [1, 1, 1] and len(read_jsonl(root / "failures.jsonl")) == 1
    fewer = run_stage(FolderStage(root, ["a", "c"]), cfg_factory())  # another input: redone, without checking
    assert fewer.done == 1 and read_jsonl(root / "failures.jsonl") == []
    assert json.loads((root / "all" / "meta.json").read_text())["parts"] == 2


def test_a_user_error_inside_process_stops_the_run_with_its_line(tmp_path, cfg_factory):
    root = tmp_path / "folder"
    with pytest.raises(UserError, match="not this stage's"):
        run_stage(FolderStage(root, ["a"], refuse=True), cfg_factory())
    assert not (root / "all" / "meta.json").exists() and not (root / "manifest.json").exists()


def test_ctrl_c_stops_a_large_item_at_its_next_step(tmp_path, cfg_factory):
    """Ctrl-C reaches the runner's loop (the main thread) while one large item runs in a worker: the item hears of it
    at its next step instead of running to its end, and nothing is marked done."""
    import signal
    import threading
    import time

    from gen4gen.errors import Interrupted

    class Long(FolderStage):
        def process(self, item, out, rng):
            step = out.steps("parts", 500)
            for k in range(500):
                if k == 3:
                    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # Ctrl-C meanwhile
                time.sleep(0.005)
                self.steps.append(k)
                step()
            return {}

    root = tmp_path / "folder"
    stage = Long(root, ["a"])
    with pytest.raises(Interrupted) as e:
        run_stage(stage, cfg_factory())
    assert e.value.done == 0 and len(stage.steps) < 100 and not (root / "all" / "meta.json").exists()
