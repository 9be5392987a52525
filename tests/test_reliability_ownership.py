"""The export owns only what it wrote (issue 22, class 1): whatever else is in or at the dataset folder (a
user's notes, a thesis, a file added inside a format folder, an edited caption file, a link, a file where the
folder would be) is never deleted or overwritten; the export refuses with one line naming ``export.name``,
and the previous dataset stays as it was. Cases are generated: every kind of foreign entry at every depth
of the dataset, in a folder with and without the export's record."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from gen4gen.errors import UserError
from gen4gen.export import owned
from gen4gen.stages import export, s4_caption
from tests.conftest import make_cfg
from tests.helpers.trees import make_pipeline

NAME = "demo"
FORMATS = "export.formats=[mycanvas,customdiffusion,imagefolder,coco,webdataset]"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("owned")
    make_pipeline(root)
    cfg = make_cfg(root, f"export.name={NAME}", FORMATS)
    s4_caption.run(cfg)
    export.run(cfg)
    return root, root / "outputs" / "datasets" / NAME


def digest(folder: Path) -> dict:
    """Every entry under ``folder`` (links as their target text, never followed) with its bytes' hash."""
    out = {}
    for top, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(top) / name
            rel = p.relative_to(folder).as_posix()
            out[rel] = ("link", os.readlink(p)) if p.is_symlink() else \
                ("dir",) if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def portable(folder: Path) -> dict:
    """``digest`` of a dataset, its own absolute path (the card and dataset.toml name it) read as a placeholder,
    and so the ownership record's size and hash of the files that name it: two exports of one tree compare
    equal wherever each was written."""
    here, out, named = str(folder.resolve()).encode(), digest(folder), []
    for rel, v in out.items():
        if isinstance(v, str) and here in (data := (folder / rel).read_bytes()):
            named.append(rel)
            out[rel] = hashlib.sha256(data.replace(here, b"<dataset>")).hexdigest()
    if (folder / owned.RECORD).is_file():
        record = json.loads((folder / owned.RECORD).read_text("utf-8"))
        record["files"].update({rel: "<names the dataset path>" for rel in named})
        out[owned.RECORD] = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
    return out


# ---------------------------------------------------------------- generated cases
def _add_file(at: Path, outside: Path) -> None:
    at.parent.mkdir(parents=True, exist_ok=True)
    at.write_text("the user's own words\n")


def _add_link(at: Path, outside: Path) -> None:
    at.parent.mkdir(parents=True, exist_ok=True)
    at.symlink_to(outside)


def _add_dir(at: Path, outside: Path) -> None:
    at.mkdir(parents=True)


ADD = {"file": _add_file, "link": _add_link, "empty folder": _add_dir}
WHERE = ["notes.txt", "thesis/ch1.tex", "mycanvas/extra.png", "mycanvas/{item}/note.txt", ".hidden",
         "webdataset/shard-999999.tar", "coco/annotations/mine.json"]


def _edit(mode: str):
    def edit(path: Path) -> None:
        data = path.read_bytes()
        if mode == "same size":
            path.write_bytes(bytes([data[0] ^ 1]) + data[1:])
        elif mode == "appended":
            path.write_bytes(data + b"\n")
        elif mode == "truncated":
            path.write_bytes(data[: len(data) // 2])
        elif mode == "link":
            path.unlink()
            path.symlink_to(path.with_name("elsewhere"))
    return edit


EDITS = ["same size", "appended", "truncated", "link"]
OWN_FILES = ["README.md", "mycanvas/index.jsonl", "mycanvas/{item}/captions.json", "imagefolder/metadata.jsonl",
             "customdiffusion/compositions/captions.txt"]

CASES = [(f"added {kind} at {where}", "add", kind, where) for kind in ADD for where in WHERE] + \
        [(f"own file {where} {mode}", "edit", mode, where) for mode in EDITS for where in OWN_FILES]


def _item(ds: Path) -> str:
    return json.loads((ds / "mycanvas" / "index.jsonl").read_text().splitlines()[0])["id"]


@pytest.mark.parametrize("with_record", [True, False], ids=["a dataset of the export", "no record"])
@pytest.mark.parametrize("case,action,kind,where", CASES, ids=[c[0] for c in CASES])
def test_nothing_the_export_did_not_write_is_deleted_or_overwritten(exported, tmp_path, case, action, kind, where,
                                                                     with_record):
    root, good = exported
    ds = tmp_path / "outputs" / "datasets" / NAME
    shutil.copytree(good, ds, symlinks=True)
    if not with_record:
        (ds / owned.RECORD).unlink()
    at = ds / where.format(item=_item(ds))
    if action == "add":
        ADD[kind](at, tmp_path / "outside.txt")
    else:
        _edit(kind)(at)
    before = digest(ds)
    cfg = make_cfg(tmp_path, f"paths.stages_dir={root / 'stages'}", f"export.name={NAME}", FORMATS)
    with pytest.raises(UserError) as err:
        export.run(cfg)
    line = str(err.value)
    assert "\n" not in line and "export.name=" in line and str(ds) in line
    assert digest(ds) == before  # not one byte changed, nothing removed
    assert sorted(p.name for p in ds.parent.iterdir()) == [NAME]  # no half-built folder left behind


@pytest.mark.parametrize("kind", ["a file", "a link to a folder", "a dangling link"])
def test_a_file_or_link_at_the_dataset_path_is_refused(exported, tmp_path, kind):
    root, _ = exported
    datasets = tmp_path / "outputs" / "datasets"
    datasets.mkdir(parents=True)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("chapter 1")
    at = datasets / NAME
    if kind == "a file":
        at.write_text("not a folder")
    else:
        at.symlink_to(tmp_path / ("mine" if kind == "a link to a folder" else "gone"))
    before = digest(tmp_path)
    with pytest.raises(UserError, match="export.name="):
        export.run(make_cfg(tmp_path, f"paths.stages_dir={root / 'stages'}", f"export.name={NAME}"))
    assert digest(tmp_path) == before


def test_an_empty_folder_or_the_exports_own_dataset_is_replaced(exported, tmp_path):
    root, good = exported
    ds = tmp_path / "outputs" / "datasets" / NAME
    ds.mkdir(parents=True)
    cfg = make_cfg(tmp_path, f"paths.stages_dir={root / 'stages'}", f"export.name={NAME}", FORMATS)
    export.run(cfg)
    first = digest(ds)
    assert portable(ds) == portable(good)
    export.run(cfg)  # its own dataset, untouched: rewritten to the same bytes
    assert digest(ds) == first
    record = owned.Record.read(ds)
    assert sorted(record.files) == sorted(k for k, v in first.items() if v != ("dir",) and k != owned.RECORD)


def test_a_file_added_while_the_export_runs_survives(exported, tmp_path, monkeypatch):
    """Checked again at the swap: a file that appeared in the old dataset meanwhile stops the swap."""
    root, good = exported
    ds = tmp_path / "outputs" / "datasets" / NAME
    shutil.copytree(good, ds, symlinks=True)
    from gen4gen.export import gallery

    real = gallery.write

    def write_and_meddle(ctx):
        (ds / "mycanvas" / "added_meanwhile.txt").write_text("mine")
        return real(ctx)

    monkeypatch.setattr(gallery, "write", write_and_meddle)
    before = digest(good)
    with pytest.raises(UserError, match="added_meanwhile.txt"):
        export.run(make_cfg(tmp_path, f"paths.stages_dir={root / 'stages'}", f"export.name={NAME}", FORMATS))
    after = digest(ds)
    assert after.pop("mycanvas/added_meanwhile.txt")
    assert after == before
    assert sorted(p.name for p in ds.parent.iterdir()) == [NAME]


def test_leftovers_of_a_killed_export_are_cleared_by_their_record_only(exported, tmp_path):
    root, good = exported
    datasets = tmp_path / "outputs" / "datasets"
    old = datasets / f".{NAME}.old-99999"
    shutil.copytree(good, old, symlinks=True)
    (old / "mycanvas" / "mine.txt").write_text("added to the old dataset")
    partial = datasets / f".{NAME}.partial-99998"
    (partial / "mycanvas").mkdir(parents=True)
    backup = datasets / f".{NAME}.backup-1"  # a user's folder that only looks like a leftover
    backup.mkdir()
    (backup / "x.txt").write_text("keep")
    export.run(make_cfg(tmp_path, f"paths.stages_dir={root / 'stages'}", f"export.name={NAME}", FORMATS))
    assert not partial.exists()
    assert digest(old) == {"mycanvas": ("dir",), "mycanvas/mine.txt": hashlib.sha256(b"added to the old dataset")
                           .hexdigest()}
    assert digest(backup) == {"x.txt": hashlib.sha256(b"keep").hexdigest()}
    assert portable(datasets / NAME) == portable(good)


def test_what_the_workflow_adds_to_a_dataset_is_carried_into_the_next_export(exported, tmp_path):
    """``split.json`` (bench.split) and the class images ``customdiffusion/train.sh`` generates are the dataset's
    own: a re-export keeps them byte for byte (not refused, not deleted), and lists them in no record."""
    from gen4gen.bench import split

    root, good = exported
    ds = tmp_path / "outputs" / "datasets" / NAME
    shutil.copytree(good, ds, symlinks=True)
    assert split.main([str(ds), "--holdout", "0.5"]) == 0
    klass = ds / "customdiffusion" / "class_images" / "cat"
    klass.mkdir(parents=True)
    (klass / "0.png").write_bytes(b"\x89PNG generated for prior preservation")
    added = {rel: v for rel, v in digest(ds).items() if owned.kept(rel)}
    assert set(added) == {"split.json", "customdiffusion/class_images", "customdiffusion/class_images/cat",
                          "customdiffusion/class_images/cat/0.png"}
    cfg = make_cfg(tmp_path, f"paths.stages_dir={root / 'stages'}", f"export.name={NAME}", FORMATS)
    for _ in range(2):  # the second rerun sees them as part of the dataset the first one made
        export.run(cfg)
        now = digest(ds)
        assert {rel: v for rel, v in now.items() if owned.kept(rel)} == added
        assert not any(owned.kept(rel) for rel in owned.Record.read(ds).files)
        assert sorted(p.name for p in ds.parent.iterdir()) == [NAME]  # no old folder left holding them
    assert portable(ds) == {**portable(good), **{rel: v for rel, v in now.items() if owned.kept(rel)}}


def test_kept_files_left_in_an_old_folder_by_a_killed_export_are_carried_over(exported, tmp_path):
    root, good = exported
    datasets = tmp_path / "outputs" / "datasets"
    shutil.copytree(good, datasets / NAME, symlinks=True)
    old = datasets / f".{NAME}.old-99999"  # killed between putting the new dataset in place and carrying over
    shutil.copytree(good, old, symlinks=True)
    (old / "split.json").write_text('{"seed": 0, "holdout": [], "train": []}\n')
    export.run(make_cfg(tmp_path, f"paths.stages_dir={root / 'stages'}", f"export.name={NAME}", FORMATS))
    assert (datasets / NAME / "split.json").read_text() == '{"seed": 0, "holdout": [], "train": []}\n'
    assert sorted(p.name for p in datasets.iterdir()) == [NAME]
