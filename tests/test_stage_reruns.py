"""Export and route through the runner: a rerun on unchanged inputs is a skip that leaves every byte as it was, a
changed input redoes the work, Ctrl-C keeps the previous dataset, and failures land in the stage's failures.jsonl."""
import hashlib
import json
import os
from pathlib import Path

import pytest

from gen4gen.errors import Interrupted
from gen4gen.io import read_jsonl
from gen4gen.paths import STAGE_DIRS
from gen4gen.serve.review import Decision, ReviewStore, content_key
from gen4gen.stages import export, s4_caption
from gen4gen.tree import TreeView
from tests.conftest import make_cfg
from tests.helpers.trees import make_pipeline

FORMATS = ("export.formats=[mycanvas,imagefolder]", "export.gallery=false")


def digest(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def exported(root: Path):
    info = make_pipeline(root)
    cfg = make_cfg(root, *FORMATS)
    s4_caption.run(cfg)
    first = export.run(cfg)
    return info, cfg, first, root / "outputs" / "datasets" / "mycanvas"


def test_a_second_export_of_an_unchanged_tree_is_a_skip_with_the_same_bytes(tmp_path):
    info, cfg, first, ds = exported(tmp_path)
    assert (first.total, first.done, first.skipped, first.failed) == (2, 2, 0, 0)
    before = digest(ds)
    times = {p: p.stat().st_mtime_ns for p in ds.rglob("*")}
    second = export.run(cfg)
    assert (second.total, second.done, second.skipped, second.failed) == (2, 0, 2, 0)
    assert second.notes["already exported"].startswith("nothing changed")
    assert second.notes["dataset card"] == first.notes["dataset card"]  # the notes of the build, said again
    assert digest(ds) == before and {p: p.stat().st_mtime_ns for p in ds.rglob("*")} == times  # not rewritten
    marker = json.loads((tmp_path / "stages/export/mycanvas.meta.json").read_text())
    assert (marker["id"], marker["exported"], marker["images"]) == ("mycanvas", 2, 2)
    # s4 run again without changing anything (it rewrites its manifest): still a skip
    assert s4_caption.run(cfg).skipped == 2
    assert export.run(cfg).skipped == 2


def test_a_changed_caption_or_setting_redoes_the_export(tmp_path):
    info, cfg, _, ds = exported(tmp_path)
    before = digest(ds)
    stages = info["stages"]
    tree = TreeView(stages)
    item_id = sorted(tree.items("s3"))[0]
    captions = tree.captions(stages / STAGE_DIRS["s4"] / item_id)
    ReviewStore(stages).record(Decision(id=item_id, content=content_key(tree.items("s3")[item_id].meta, captions),
                                        status="keep", captions={"detailed": "An edited caption of this scene."}))
    again = export.run(cfg)
    assert (again.done, again.skipped) == (2, 0)
    rows = [json.loads(line) for line in (ds / "mycanvas/index.jsonl").read_text().splitlines()]
    assert next(r for r in rows if r["id"] == item_id)["captions"]["detailed"] == "An edited caption of this scene."
    after = digest(ds)
    assert after != before and after["mycanvas/index.jsonl"] != before["mycanvas/index.jsonl"]
    other = export.run(make_cfg(tmp_path, *FORMATS, "export.formats=[mycanvas]"))  # another setting: redone
    assert other.done == 2 and not (ds / "imagefolder").exists()


def test_a_file_edited_in_the_dataset_redoes_it_and_a_removed_dataset_comes_back(tmp_path):
    _, cfg, _, ds = exported(tmp_path)
    before = digest(ds)
    (ds / "imagefolder/metadata.jsonl").unlink()  # removed: the record no longer matches, rebuilt in full
    assert export.run(cfg).done == 2 and digest(ds) == before
    for p in sorted(ds.rglob("*"), key=lambda p: -len(p.parts)):
        p.rmdir() if p.is_dir() else p.unlink()
    ds.rmdir()
    assert export.run(cfg).done == 2 and digest(ds) == before


def test_ctrl_c_inside_the_export_keeps_the_previous_dataset(tmp_path, monkeypatch):
    from gen4gen.export import imagefolder

    _, cfg, _, ds = exported(tmp_path)
    before = digest(ds)
    marker = tmp_path / "stages/export/mycanvas.meta.json"
    changed = make_cfg(tmp_path, *FORMATS, "export.thumb_size=64")  # a new setting: the dataset is built again

    def interrupted(ctx):
        raise KeyboardInterrupt

    monkeypatch.setattr(imagefolder, "write", interrupted)
    with pytest.raises(Interrupted) as e:
        export.run(changed)
    assert e.value.done == 0
    assert digest(ds) == before  # not one byte of the previous dataset changed
    assert sorted(p.name for p in ds.parent.iterdir()) == ["mycanvas"]  # no half-built folder left
    assert not marker.exists()  # not done: the next run builds it
    monkeypatch.undo()
    assert export.run(changed).done == 2 and marker.exists()


def test_failures_go_to_the_stage_folder_and_the_dataset_and_stay_on_a_skip(tmp_path):
    info = make_pipeline(tmp_path)
    cfg = make_cfg(tmp_path, *FORMATS)
    s4_caption.run(cfg)
    broken = info["stages"] / f"{STAGE_DIRS['s2']}/pets/cat+dog_000/instances/dog_1.png"
    broken.write_bytes(broken.read_bytes()[:40])
    ds = tmp_path / "outputs/datasets/mycanvas"
    stage_file = tmp_path / "stages/export/failures.jsonl"
    for run in ("built", "skipped"):
        summary = export.run(cfg)
        assert (summary.total, summary.failed) == (2, 1)
        assert (summary.done, summary.skipped) == ((1, 0) if run == "built" else (0, 1))
        rows = read_jsonl(stage_file)
        assert [(r["stage"], r["id"]) for r in rows] == [("export", "pets/cat+dog_000/v0_procedural")]
        assert rows[0]["reason"].startswith("instance mask ") and "dog_1.png: not an image" in rows[0]["reason"]
        assert read_jsonl(ds / "failures.jsonl") == [{k: rows[0][k] for k in ("stage", "id", "path", "reason")}]


def test_a_route_rerun_with_the_same_settings_and_tables_reuses_the_report(tmp_path, cfg_factory):
    from gen4gen.stages import route
    from tests.test_route import COSTS, synthetic, write_cems

    write_cems(tmp_path / "train", synthetic(120, 0))
    args = ("stage=route", f"route.train_dir={tmp_path / 'train'}", "route.embedding=tfidf", "route.folds=3",
            *(f"+route.costs.{m}={c}" for m, c in COSTS.items()))
    first = route.run(cfg_factory(*args))
    out = Path(first.out_dir)
    assert (first.done, first.skipped) == (1, 0) and out.parent == tmp_path / "outputs" / "route"
    report = (out / "route_report.json").read_bytes()
    stamp = (out / "route_report.json").stat().st_mtime_ns
    second = route.run(cfg_factory(*args))
    assert (second.done, second.skipped, second.out_dir) == (0, 1, first.out_dir)
    assert second.notes["router"] == first.notes["router"] and "reused" in second.notes
    assert (out / "route_report.json").read_bytes() == report
    assert (out / "route_report.json").stat().st_mtime_ns == stamp  # not written again
    table = sorted((tmp_path / "train").glob("*.csv"))[0]
    os.utime(table, ns=(stamp + 10**9, stamp + 10**9))  # a table written again: the report is made again
    assert route.run(cfg_factory(*args)).done == 1
    other = route.run(cfg_factory(*args, "route.seed=1"))  # other settings: a report of their own
    assert other.done == 1 and other.out_dir != first.out_dir and (out / "route_report.json").is_file()
