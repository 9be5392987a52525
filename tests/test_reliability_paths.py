"""Paths read from files stay inside their folder (issue 22, class 2). Every reader of such a path (train's
``index.jsonl`` and Custom Diffusion lists, the export's stage files, the bench's references, the search's
samples; personalize in ``test_reliability_runs.py``) is given every kind of escape: ``../``, absolute, a
link pointing out, a chain of links, a link to a folder outside, a link loop, a NUL byte. Each one is
refused with one line, and no file outside the folder is ever read into the result."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gen4gen.contain import Escaped, contained
from gen4gen.paths import STAGE_DIRS
from gen4gen.train.data import load_examples
from tests.helpers.train_tiny import save_tiny_dataset

KINDS = ["parent", "absolute", "link out", "link chain", "link to a folder outside", "link loop", "nul byte",
         "parent inside a name"]
LINKS = [k for k in KINDS if k.startswith("link")]


def hostile(kind: str, folder: Path, target: Path) -> str:
    """A path as a file would hold it, relative to ``folder``, that leads to ``target`` (outside ``folder``)."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"evil_{KINDS.index(kind)}{target.suffix}"
    if kind == "parent":
        return os.path.relpath(target, folder)
    if kind == "absolute":
        return str(target)
    if kind == "parent inside a name":
        return "sub/../" + os.path.relpath(target, folder)
    if kind == "nul byte":
        return f"a\0{name}"
    link = folder / name
    if kind == "link out":
        link.symlink_to(target)
    elif kind == "link chain":
        (folder / f"hop_{name}").symlink_to(target)
        link.symlink_to(folder / f"hop_{name}")
    elif kind == "link to a folder outside":
        (folder / f"dir_{name}").symlink_to(target.parent, target_is_directory=True)
        return f"dir_{name}/{target.name}"
    elif kind == "link loop":
        link.symlink_to(link)
    return name


def outside_png(tmp_path: Path) -> Path:
    """A private image outside every folder a reader owns: it must never end up in a result."""
    path = tmp_path / "private" / "secret.png"
    path.parent.mkdir(parents=True)
    Image.fromarray(np.full((40, 48, 3), 7, np.uint8)).save(path)
    return path


def escapes(path, root: Path) -> bool:
    try:
        return not Path(path).resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError, ValueError):
        return True


# ---------------------------------------------------------------- the rule itself
@pytest.mark.parametrize("kind", KINDS)
def test_the_rule_refuses_every_kind_of_escape_with_one_line(tmp_path, kind):
    folder = tmp_path / "data"
    value = hostile(kind, folder, outside_png(tmp_path))
    with pytest.raises(Escaped) as e:
        contained(value, folder, "a list")
    assert "\n" not in str(e.value) and "a list" in str(e.value)


@pytest.mark.parametrize("value", ["a.png", "sub/b.png", "sub/../a.png", "link_in.png", "./a.png"])
def test_paths_inside_and_links_inside_are_kept(tmp_path, value):
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.png").write_bytes(b"x")
    (folder / "link_in.png").symlink_to(folder / "a.png")
    reached = tmp_path / "reached"
    reached.symlink_to(folder, target_is_directory=True)  # the folder itself reached through a link
    assert contained(value, reached, "a list") == reached / value


# ---------------------------------------------------------------- train: index.jsonl and Custom Diffusion lists
def _edit_index(ds: Path, edit) -> None:
    index = ds / "mycanvas" / "index.jsonl"
    rows = [json.loads(line) for line in index.read_text().splitlines()]
    edit(rows[0])
    index.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _first_row_id(ds: Path) -> str:
    """The promptset id of the index's first row (the one the cases edit)."""
    return json.loads((ds / "mycanvas" / "index.jsonl").read_text().splitlines()[0])["id"].replace("/", "__")


def _cd_dataset(ds: Path) -> Path:
    """The Custom Diffusion file lists of an export (no mycanvas index) with one composition."""
    cd = ds / "customdiffusion"
    comp = cd / "compositions"
    (comp / "images").mkdir(parents=True)
    (comp / "masks").mkdir()
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(comp / "images" / "0.png")
    Image.fromarray(np.full((40, 48), 255, np.uint8)).save(comp / "masks" / "0.png")
    (cd / "instance_images" / "cat").mkdir(parents=True)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(cd / "instance_images" / "cat" / "c.png")
    (cd / "concepts_list.json").write_text(json.dumps([{
        "instance_prompt": "photo of a <new1> cat", "class_prompt": "cat", "instance_data_dir": "instance_images/cat",
        "class_data_dir": "class_images/cat"}]))
    (comp / "images.txt").write_text("images/0.png\n")
    (comp / "captions.txt").write_text("<new1> cat on a sofa\n")
    (comp / "masks.txt").write_text("masks/0.png\n")
    return cd


def _set_line(path: Path, value: str) -> None:
    path.write_text(value + "\n")


# slot: (where the hostile path goes, the folder it is relative to, data= of load_examples)
TRAIN_SLOTS = {
    "index.jsonl image": (lambda ds, v: _edit_index(ds, lambda r: r.update(image=v)), "mycanvas", "mycanvas"),
    "index.jsonl mask": (lambda ds, v: _edit_index(ds, lambda r: r.update(mask=v)), "mycanvas", "mycanvas"),
    "index.jsonl reference image": (lambda ds, v: _edit_index(ds, lambda r: r["reference_images"].update(cat=[v])),
                                    "", "sources"),
    "images.txt": (lambda ds, v: _set_line(ds / "customdiffusion/compositions/images.txt", v),
                   "customdiffusion/compositions", "mycanvas"),
    "masks.txt": (lambda ds, v: _set_line(ds / "customdiffusion/compositions/masks.txt", v),
                  "customdiffusion/compositions", "mycanvas"),
    "concepts_list.json instance_data_dir": (
        lambda ds, v: (ds / "customdiffusion/concepts_list.json").write_text(json.dumps(
            [{"instance_prompt": "photo of a <new1> cat", "instance_data_dir": v}])), "customdiffusion", "both"),
}
TRAIN_CASES = [(slot, kind) for slot in TRAIN_SLOTS for kind in KINDS]


@pytest.mark.parametrize("slot,kind", TRAIN_CASES, ids=[f"{s}:{k}" for s, k in TRAIN_CASES])
def test_train_never_reads_an_image_from_outside_the_dataset(tmp_path, slot, kind):
    secret = outside_png(tmp_path)
    ds = save_tiny_dataset(tmp_path)
    plant, rel, data = TRAIN_SLOTS[slot]
    if rel.startswith("customdiffusion"):
        (ds / "mycanvas" / "index.jsonl").unlink()
        _cd_dataset(ds)
    target = secret.parent if slot.endswith("instance_data_dir") else secret
    plant(ds, hostile(kind, ds / rel, target))
    try:
        examples, _, problems = load_examples(ds, data)
    except Exception as e:  # noqa: BLE001 - only a one-line UserError may stop it (no example left at all)
        assert type(e).__name__ == "UserError" and "\n" not in str(e), repr(e)
        examples, problems = [], [str(e)]
    used = [p for e in examples for p in (e.image, e.mask) if p is not None]
    assert not [p for p in used if escapes(p, ds)]
    # a link is refused by the path rule; ../ and absolute paths already by the file's model (outputs.py)
    assert any("refused" in p or "not a MyCanvas index row" in p or "expected a relative path inside" in p
               for p in problems), problems


def test_a_link_in_a_concepts_instance_folder_pointing_out_is_left_out(tmp_path):
    secret = outside_png(tmp_path)
    ds = save_tiny_dataset(tmp_path)
    (ds / "mycanvas" / "index.jsonl").unlink()
    cd = _cd_dataset(ds)
    (cd / "instance_images" / "cat" / "stolen.png").symlink_to(secret)
    examples, _, problems = load_examples(ds, "sources")
    assert [e.image.name for e in examples] == ["c.png"]
    assert len(problems) == 1 and "stolen.png" in problems[0]


# ---------------------------------------------------------------- export: the stage files it ships
@pytest.fixture(scope="module")
def stage_tree(tmp_path_factory):
    from gen4gen.stages import s4_caption
    from tests.conftest import make_cfg
    from tests.helpers.trees import make_pipeline

    root = tmp_path_factory.mktemp("paths_export")
    info = make_pipeline(root)
    s4_caption.run(make_cfg(root))
    return root, info


def _layout_mask(stages: Path, item: str, v: str) -> None:
    layout = stages / STAGE_DIRS["s2"] / item.rsplit("/", 1)[0] / "layout.json"
    data = json.loads(layout.read_text())
    data["objects"][0]["mask"] = v
    layout.write_text(json.dumps(data))


def _replace_by_link(path: Path, kind: str, target: Path) -> None:
    value = hostile(kind, path.parent, target)
    path.unlink()
    (path.parent / value).rename(path) if kind != "link to a folder outside" else path.symlink_to(path.parent / value)


# slot: (plant(stages, item, kind, secret), kinds it takes)
EXPORT_SLOTS = {
    "s3 image.png": (lambda st, it, k, s: _replace_by_link(st / STAGE_DIRS["s3"] / it / "image.png", k, s), LINKS),
    "s2 mask.png": (lambda st, it, k, s: _replace_by_link(st / STAGE_DIRS["s2"] / it.rsplit("/", 1)[0] / "mask.png",
                                                           k, s), LINKS),
    "layout.json mask": (lambda st, it, k, s: _layout_mask(st, it, hostile(
        k, st / STAGE_DIRS["s2"] / it.rsplit("/", 1)[0], s)), KINDS),
}
EXPORT_CASES = [(slot, kind) for slot, (_, kinds) in EXPORT_SLOTS.items() for kind in kinds]


@pytest.mark.parametrize("slot,kind", EXPORT_CASES, ids=[f"{s}:{k}" for s, k in EXPORT_CASES])
def test_the_export_ships_nothing_from_outside_the_stages(stage_tree, tmp_path, slot, kind):
    from gen4gen.stages import export
    from tests.conftest import make_cfg

    root, info = stage_tree
    shutil.copytree(root / "stages", tmp_path / "stages", symlinks=True)
    secret = outside_png(tmp_path)
    item = info["finals"][0]
    EXPORT_SLOTS[slot][0](tmp_path / "stages", item, kind, secret)
    export.run(make_cfg(tmp_path, "export.name=demo"))
    ds = tmp_path / "outputs" / "datasets" / "demo"
    left = [json.loads(line) for line in (ds / "left_out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in left if r["stage"] == "export"] == [item], left
    assert "\n" not in left[0]["reason"]
    secret_bytes = secret.read_bytes()
    assert not [p for p in ds.rglob("*") if p.is_file() and p.read_bytes() == secret_bytes]
    assert item not in (ds / "mycanvas" / "index.jsonl").read_text()


@pytest.mark.parametrize("kind", ["absolute", "parent", "link to a folder outside"])
def test_an_s3_meta_naming_a_composition_folder_outside_the_stages_is_refused(tmp_path, kind):
    """s3's ``composition_dir`` (read by s4 and the export) leads to a real-looking composition elsewhere."""
    from gen4gen.artefacts import S3Meta

    stages = tmp_path / "stages"
    elsewhere = tmp_path / "elsewhere" / "comp"
    elsewhere.mkdir(parents=True)
    (elsewhere / "layout.json").write_text("{}")
    value = hostile(kind, stages / STAGE_DIRS["s2"], elsewhere / "layout.json").rsplit("/", 1)[0] \
        if kind != "absolute" else str(elsewhere)
    if kind != "absolute":
        value = f"{STAGE_DIRS['s2']}/{value}"
    meta = S3Meta.model_construct(composition="kitchen/x_000", composition_dir=value)
    with pytest.raises(Escaped, match="composition_dir"):
        meta.s2_dir(stages)
    own = stages / STAGE_DIRS["s2"] / "kitchen" / "x_000"
    own.mkdir(parents=True)
    assert S3Meta.model_construct(composition="kitchen/x_000", composition_dir=f"{STAGE_DIRS['s2']}/kitchen/x_000"
                                  ).s2_dir(stages) == own.absolute()


# ---------------------------------------------------------------- bench references, search samples
@pytest.mark.parametrize("kind", KINDS)
def test_bench_promptset_keeps_only_references_inside_the_dataset(tmp_path, kind, caplog):
    from gen4gen.bench.prompts import load_dataset

    secret = outside_png(tmp_path)
    ds = save_tiny_dataset(tmp_path)
    _edit_index(ds, lambda r: r["reference_images"].update(cat=[hostile(kind, ds, secret)]))
    problems: list[str] = []
    prompts = load_dataset("mycanvas", ds, problems=problems)
    refs = [p for pr in prompts for ps in pr.references.values() for p in ps]
    assert refs and not [p for p in refs if escapes(p, ds)]
    if problems:  # a path the row's model refuses (../, absolute): that row is left out with one line
        assert len(problems) == 1 and "reference_images" in problems[0] and "\n" not in problems[0], problems
        assert not [pr for pr in prompts if pr.id == _first_row_id(ds)]
    else:  # a path that parses but leads out (a link): the reference is dropped with a warning
        assert any("refused" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("kind", LINKS)
def test_search_never_indexes_a_sample_that_leads_outside(tmp_path, kind):
    from gen4gen.search.build import discover

    secret = outside_png(tmp_path)
    root = tmp_path / "samples"
    (root / "model_a").mkdir(parents=True)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / "model_a" / "own.png")
    hostile(kind, root / "model_a", secret)
    models = discover(root)
    assert [p.name for p in models["model_a"]] == ["own.png"]
