"""Nothing a stage reads can stop the run (issue 14): every field of every artefact a later stage reads,
replaced by a wrong type, null, empty or huge value; every image of a finished tree truncated; moved,
copied and stale stage trees. The export always ends with a complete dataset of the good items and one
``left_out`` line per bad item, and a rerun after repairing the bad file includes it again."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image

from gen4gen.artefacts import Captions, Layout, LayoutObject, S1Meta, S2Meta, S3Meta, S4Meta
from gen4gen.errors import UserError
from gen4gen.export import owned
from gen4gen.hashing import file_fingerprint
from gen4gen.io import json_bytes, write_atomic
from gen4gen.paths import STAGE_DIRS
from gen4gen.stages import export, s1_segment, s2_compose, s3_repaint, s4_caption
from gen4gen.tree import TreeView
from tests.conftest import make_cfg
from tests.helpers.tree import StageTree
from tests.helpers.trees import SCENES, fake_s1, make_pipeline

FORMATS = "export.formats=[mycanvas,customdiffusion,imagefolder,coco,webdataset]"


# ---------------------------------------------------------------- bad values, generated from the models
def bad_values(value) -> list[tuple[str, object]]:
    """A wrong type, null, an empty and a huge value for a field that now holds ``value``."""
    wrong = 12345 if isinstance(value, str) else "abc"
    if isinstance(value, list):
        empty, huge = [], [1e308] * max(4, len(value)) if all(isinstance(v, (int, float)) for v in value) \
            else value * 5000
    elif isinstance(value, dict):
        empty, huge = {}, {f"k{i}": "v" * 50 for i in range(5000)}
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        empty, huge = 0, 1e308
    else:
        empty, huge = "", "x" * 200_000
    return [("wrong type", wrong), ("null", None), ("empty", empty), ("huge", huge)]


# what the fields hold in a good file (text unless listed), so each gets values of other types
SAMPLES = {"size": [100, 100], "box": [1, 2, 3, 4], "objects": [{}], "modifier_tokens": {"cat": "<new1>"},
           "scenes": ["x"], "index": 0, "background": {"phrase": "in the garden"}}
# (file in an item folder, stage folder, model, where in the JSON the model's fields live)
FILES = [("layout.json", "s2", Layout, ()), ("layout.json", "s2", LayoutObject, ("objects", 0)),
         ("meta.json", "s3", S3Meta, ()), ("captions.json", "s4", Captions, ()), ("meta.json", "s4", S4Meta, ())]
CASES = [(f"{stage}/{name}:{'.'.join(map(str, at)) + '.' if at else ''}{field}:{kind}", stage, name, at, field, bad)
         for name, stage, model, at in FILES for field in model.model_fields
         for kind, bad in bad_values(SAMPLES.get(field, "text"))]


class Raw(bytes):
    """A whole file's bytes, not JSON-encoded."""


# and whole files that hold no object at all, or no JSON
CASES += [(f"{stage}/{name}:whole:{kind}", stage, name, None, None, bad)
          for name, stage, _, at in FILES if not at
          for kind, bad in (("list", []), ("number", 3), ("truncated", ...), ("nested", Raw(b"[" * 100_000)))]


def item_file(stages: Path, stage: str, name: str, item_id: str) -> Path:
    folder = stages / STAGE_DIRS[stage] / (item_id.rsplit("/", 1)[0] if stage == "s2" else item_id)
    return folder / name


def mutate(path: Path, at, field, bad) -> None:
    if field is None:
        path.write_bytes(path.read_bytes()[:40] if bad is ... else bad if isinstance(bad, Raw) else json_bytes(bad))
        return
    data = json.loads(path.read_text("utf-8"))
    node = data
    for key in at or ():
        node = node[key]
    node[field] = bad
    path.write_bytes(json_bytes(data))


def dataset_ids(ds: Path) -> list[str]:
    """The exported items, checked to be the same in every format."""
    ids = [json.loads(line)["id"] for line in (ds / "mycanvas/index.jsonl").read_text().splitlines()]
    n = len(ids)
    assert len((ds / "imagefolder/metadata.jsonl").read_text().splitlines()) == n
    assert len(json.loads((ds / "coco/annotations/instances.json").read_text())["images"]) == n
    captions = (ds / "customdiffusion/compositions/captions.txt").read_text().splitlines()
    assert len(captions) == n and all(c.strip() for c in captions)
    import tarfile

    samples = {m.name.split(".")[0] for t in sorted((ds / "webdataset").glob("*.tar"))
               for m in tarfile.open(t).getmembers()}
    assert len(samples) == n
    assert f"| {n} |" in (ds / "README.md").read_text()
    for p in ds.rglob("*.png"):  # nothing truncated got through
        with Image.open(p) as im:
            im.load()
    return ids


def scenes(n: int) -> dict:
    return {f"scene{k:03d}": SCENES["pets" if k % 2 else "kitchen"] for k in range(n)}


def test_every_field_of_every_artefact_bad_loses_only_its_item(tmp_path):
    info = make_pipeline(tmp_path, scenes=scenes(len(CASES) + 2))
    cfg = make_cfg(tmp_path, FORMATS)
    assert s4_caption.run(cfg).done == len(CASES) + 2
    stages = info["stages"]
    finals = info["finals"]
    cases = dict(zip(finals, CASES))  # two items stay good
    originals = {}
    for item_id, (_, stage, name, at, field, bad) in cases.items():
        path = item_file(stages, stage, name, item_id)
        originals[path] = path.read_bytes()
        mutate(path, at, field, bad)

    summary = export.run(cfg)
    ds = tmp_path / "outputs/datasets/mycanvas"
    ids = dataset_ids(ds)
    left = [json.loads(line) for line in (ds / "left_out.jsonl").read_text().splitlines()]
    per_item = {}
    for row in left:
        per_item.setdefault(row["id"], []).append(row["reason"])
    assert set(finals) - set(cases) <= set(ids)  # the good items are all there
    for item_id, (label, *_) in cases.items():
        lines = per_item.get(item_id, [])
        assert (item_id in ids) != bool(lines), label  # exported, or left out: never both, never lost
        assert len(lines) <= 1, (label, lines)
        if lines:
            assert lines[0].strip(), label
    assert summary.done == len(ids) and "stale" not in " ".join(summary.notes)
    lost = sorted(label for item_id, (label, *_) in cases.items() if item_id not in ids)
    assert len(lost) > len(CASES) // 2  # most bad values are refused (an accepted one is valid data, e.g. a long text)
    (tmp_path / "cases.json").write_text(json.dumps({"cases": len(CASES), "left_out": len(lost)}))

    for path, data in originals.items():  # repaired: everything is back
        path.write_bytes(data)
    assert export.run(cfg).done == len(finals)
    assert dataset_ids(ds) == finals


def test_bad_s1_and_s2_meta_fail_one_item_downstream(tmp_path):
    """s2 reads s1 meta, s3 reads s2 meta: a bad field skips that cut-out or fails that composition only."""
    fake_s1(tmp_path / "stages", {"pets": {"cat": 2, "dog": 2}})
    tree = StageTree(tmp_path / "stages")
    s1_meta = tree.dir("s1") / "pets/cat/photo_0/meta.json"
    for field in S1Meta.model_fields:
        for _, bad in bad_values(json.loads(s1_meta.read_text()).get(field, "text")):
            good = s1_meta.read_bytes()
            mutate(s1_meta, (), field, bad)
            found, _, ignored = s2_compose.read_s1(TreeView(tree.stages))
            cats = len(found["pets"]["cat"])
            assert (cats, ignored) in ((1, 1), (2, 0)), (field, bad)  # refused and counted, or valid
            s1_meta.write_bytes(good)
    cfg = make_cfg(tmp_path, "compose.size=[128,128]", "compose.num_samples=3")
    assert s2_compose.run(cfg).done == 3
    comp = tree.dir("s2") / "pets/cat+dog_001"
    write_atomic(comp / "meta.json", json_bytes({**json.loads((comp / "meta.json").read_text()), "config_hash": 7}))
    summary = s3_repaint.run(cfg)
    assert (summary.done, summary.failed) == (2, 1)
    reasons = [json.loads(line)["reason"] for line in (tree.dir("s3") / "failures.jsonl").read_text().splitlines()]
    assert reasons == ["s2 meta.json: config_hash: expected a string, got 7"]
    assert S2Meta.model_fields["config_hash"].is_required()


def truncate_draws(files: list[Path], n: int, seed: int) -> dict[Path, int]:
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(files), size=min(n, len(files)), replace=False)
    return {files[i]: int(rng.integers(8, files[i].stat().st_size - 1)) for i in sorted(picks)}


@pytest.mark.parametrize("gallery", [True, False])
def test_truncated_images_never_reach_the_dataset(tmp_path, gallery):
    info = make_pipeline(tmp_path, scenes=scenes(8))
    cfg = make_cfg(tmp_path, FORMATS, f"export.gallery={str(gallery).lower()}")
    s4_caption.run(cfg)
    pngs = sorted(p for p in info["stages"].rglob("*.png"))
    draws = truncate_draws(pngs, 20, seed=14 + gallery)
    originals = {p: p.read_bytes() for p in draws}
    for p, offset in draws.items():
        p.write_bytes(originals[p][:offset])
    summary = export.run(cfg)  # no exception escapes: each bad file costs its item or reference
    ds = tmp_path / "outputs/datasets/mycanvas"
    ids = dataset_ids(ds)
    assert (ds / "gallery").is_dir() == gallery
    left = {json.loads(line)["id"] for line in (ds / "left_out.jsonl").read_text().splitlines()}
    s2, s3 = (info["stages"] / STAGE_DIRS[s] for s in ("s2", "s3"))
    for item_id in info["finals"]:
        comp = s2 / item_id.rsplit("/", 1)[0]
        # what the dataset holds or draws: the s2 composition only appears in the gallery
        read = [s3 / item_id / "image.png", *([comp / "image.png"] if gallery else []), comp / "mask.png",
                *sorted((comp / "instances").glob("*.png"))]
        if any(p in draws for p in read):
            assert item_id not in ids and item_id in left
        else:
            assert item_id in ids
    assert summary.done == len(ids)
    for p, data in originals.items():
        p.write_bytes(data)
    assert export.run(cfg).done == len(info["finals"])


# ---------------------------------------------------------------- moved and copied trees
def finished_tree(root: Path) -> dict:
    """s1..s3 written, then s3 and s4 run for real, and exported."""
    info = make_pipeline(root)
    shutil.rmtree(info["stages"] / STAGE_DIRS["s3"])
    cfg = make_cfg(root, FORMATS)
    assert s3_repaint.run(cfg).done == 2 and s4_caption.run(cfg).done == 2
    export.run(cfg)
    return info


def dataset_bytes(root: Path) -> dict[str, bytes]:
    """Every file's bytes, the dataset's own absolute path (the card names it) read as a placeholder. The
    export's ownership record must vouch for every file as it is; for the files that name that path, its size
    and hash are then read as placeholders too (they differ by where the dataset is)."""
    ds = root / "outputs/datasets/mycanvas"
    here = str(ds.resolve()).encode()
    out = {p.relative_to(ds).as_posix(): p.read_bytes() for p in sorted(ds.rglob("*")) if p.is_file()}
    record = json.loads(out[owned.RECORD])
    for name, entry in record["files"].items():
        assert (entry["size"], entry["blake2b"]) == (len(out[name]), file_fingerprint(ds / name)), name
        if here in out[name]:
            entry.update(size="<size>", blake2b="<hash>")
    out[owned.RECORD] = json_bytes(record)
    return {name: data.replace(here, b"<dataset>") for name, data in out.items()}


def test_a_moved_stages_folder_resumes_on_its_own_files(tmp_path):
    finished_tree(tmp_path / "a")
    before = dataset_bytes(tmp_path / "a")
    (tmp_path / "b").mkdir()
    shutil.move(tmp_path / "a" / "stages", tmp_path / "b" / "stages")
    cfg = make_cfg(tmp_path / "b", FORMATS)
    s3, s4 = s3_repaint.run(cfg), s4_caption.run(cfg)
    assert (s3.skipped, s3.done, s4.skipped, s4.done) == (2, 0, 2, 0)  # nothing redone
    export.run(cfg)
    assert dataset_bytes(tmp_path / "b") == before


def test_a_copied_stages_folder_never_reads_the_original(tmp_path):
    finished_tree(tmp_path / "a")
    before = dataset_bytes(tmp_path / "a")
    shutil.copytree(tmp_path / "a" / "stages", tmp_path / "c" / "stages")
    shutil.rmtree(tmp_path / "a" / "stages")  # the original is gone
    cfg = make_cfg(tmp_path / "c", FORMATS)
    assert s4_caption.run(cfg).skipped == 2
    export.run(cfg)
    assert dataset_bytes(tmp_path / "c") == before


def test_an_old_tree_with_absolute_paths_reads_its_own_copy(tmp_path):
    """Trees written before paths were relative hold absolute ones: a copy still reads its own files."""
    info = make_pipeline(tmp_path / "a")
    s3 = info["stages"] / STAGE_DIRS["s3"]
    for meta_path in s3.rglob("meta.json"):
        meta = json.loads(meta_path.read_text())
        meta["composition_dir"] = str(info["stages"] / meta["composition_dir"])
        write_atomic(meta_path, json_bytes(meta))
    cfg = make_cfg(tmp_path / "a", FORMATS)
    s4_caption.run(cfg)
    shutil.copytree(tmp_path / "a" / "stages", tmp_path / "c" / "stages")
    layout = info["stages"] / STAGE_DIRS["s2"] / "pets/cat+dog_000/layout.json"
    layout.write_text("[]")  # the original's layout is broken: the copy must not notice
    summary = export.run(make_cfg(tmp_path / "c", FORMATS))
    assert summary.done == 2


# ---------------------------------------------------------------- stale items
def test_compositions_the_current_config_does_not_make_never_reach_the_dataset(tmp_path):
    fake_s1(tmp_path / "stages", {"pets": {"cat": 1, "dog": 1}})
    five = make_cfg(tmp_path, FORMATS, "compose.size=[128,128]", "compose.num_samples=5")
    for stage in (s2_compose, s3_repaint, s4_caption):
        assert stage.run(five).done == 5
    assert export.run(five).done == 5
    three = make_cfg(tmp_path, FORMATS, "compose.size=[128,128]", "compose.num_samples=3")
    s2 = s2_compose.run(three)
    assert s2.skipped == 3  # right after the run: what was left on disk, and that nothing needs rerunning
    assert s2.notes["compositions left on disk that these settings do not make (e.g. a larger compose.num_samples "
                    "before)"] == "2: later stages and the export leave them out; nothing needs rerunning"
    summary = export.run(three)  # s3 and s4 not rerun: their 003 and 004 are left out all the same
    left = "{} left on disk that {} latest run does not make (e.g. a larger compose.num_samples or " \
           "repaint.max_backgrounds before): ignored, nothing needs rerunning"
    assert summary.done == 3 and not any("rerun" in k and "nothing" not in k for k in summary.notes)
    assert (summary.notes[left.format("compositions", "s2's")], summary.notes[left.format("images", "s3's")]) == (2, 2)
    assert all(i.split("/")[1].rsplit("_", 1)[1] in ("000", "001", "002")
               for i in dataset_ids(tmp_path / "outputs/datasets/mycanvas"))
    s3 = s3_repaint.run(three)
    assert (s3.total, s3.skipped) == (3, 3) and s3.notes[left.format("compositions", "s2's")] == 2


def test_items_built_from_an_earlier_s1_never_reach_the_dataset(tmp_path):
    """s1 rerun with ``segment.rounds=3`` (a real run): nothing made from the old cut-outs is exported
    until s2..s4 have run again on the new ones."""
    from tests.helpers.image_cases import disc
    from tests.helpers.segmenters import search_path

    for k in range(4):
        d = tmp_path / "src" / "pets" / ("cat" if k % 2 else "dog")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(disc(64 + 8 * k, colour=(30 * k, 30, 40))).save(d / f"photo{k}.png")
    common = (FORMATS, search_path(tmp_path), "segmenter=darkness", "compose.size=[128,128]", "compose.num_samples=2")
    one, three = make_cfg(tmp_path, *common), make_cfg(tmp_path, *common, "segment.rounds=3")
    for stage in (s1_segment, s2_compose, s3_repaint, s4_caption):
        assert stage.run(one).failed == 0
    assert export.run(one).done == 2
    assert s1_segment.run(three).done == 4  # new cut-outs; s2..s4 not rerun
    with pytest.raises(UserError, match="nothing to export"):
        export.run(three)
    s3 = s3_repaint.run(three)
    assert s3.total == 0  # the compositions are stale too: s2 must run first, and s3 says so
    assert s3.notes == {**s3.notes, "compositions made before their inputs or settings changed: ignored "
                                    "(rerun stage=s2)": 2}
    assert s2_compose.run(three).done == 2  # redone from the new cut-outs
    assert s3_repaint.run(three).done == 2 and s4_caption.run(three).done == 2
    assert export.run(three).done == 2


def test_bench_and_train_read_an_exported_index_alike(tmp_path):
    """One policy for a bad ``index.jsonl`` row in both readers: left out with one line, the run goes on."""
    from gen4gen.bench.prompts import load_dataset
    from gen4gen.train.data import read_rows

    index = tmp_path / "ds" / "mycanvas" / "index.jsonl"
    index.parent.mkdir(parents=True)
    good = {"id": "pets/cat+dog_000/v0", "scene": "pets", "concepts": ["cat", "dog"], "image": "pets/image.png",
            "captions": {"short": "a cat and a dog", "detailed": "A cat and a dog.", "personalized": "<new1> cat"},
            "modifier_tokens": {"cat": "<new1>"}, "reference_images": {"cat": ["mycanvas/references/cat/a.png"]}}
    for bad, why in (({**good, "concepts": "cat"}, "index.jsonl:2: not a MyCanvas index row .*concepts: expected a list"),
                     ("[[[", "index.jsonl:2: not a MyCanvas index row .*not valid JSON"),
                     ({**good, "reference_images": {"cat": ["/etc/passwd"]}}, "index.jsonl:2: .*reference_images.cat.0")):
        index.write_text(json.dumps(good) + "\n" + (bad if isinstance(bad, str) else json.dumps(bad)) + "\n")
        problems: list[str] = []
        (prompt,) = load_dataset("mc", tmp_path / "ds", novel_backgrounds=[], problems=problems)
        rows, train_problems = read_rows(tmp_path / "ds")
        assert [r.id for r in rows] == [good["id"]] and prompt.id == "pets__cat+dog_000__v0"
        assert len(problems) == 1 and re.search(why, problems[0]) and train_problems == problems
    index.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "x", "captions": {"detailed": ""}}) + "\n")
    problems = []
    (prompt,) = load_dataset("mc", tmp_path / "ds", novel_backgrounds=[], problems=problems)
    assert problems == [f"{index}: x: captions.detailed: expected a non-empty text"]
    assert prompt.text == "A cat and a dog."
    assert prompt.references["cat"] == [str(tmp_path / "ds/mycanvas/references/cat/a.png")]


def test_manifests_of_shards_merge_and_a_new_split_replaces_them(tmp_path):
    from gen4gen.manifest import read_manifest, write_manifest

    root = tmp_path / "s2"
    root.mkdir()
    assert read_manifest(root) is None  # an older tree: no manifest, everything finished counts
    write_manifest(root, "s2", 0, 1, {f"a/{k}": {"hash": "h", "inputs": {}} for k in range(5)})
    write_manifest(root, "s2", 0, 2, {"a/0": {"hash": "h2", "inputs": {}}})
    write_manifest(root, "s2", 1, 2, {"a/1": {"hash": "h2", "inputs": {}}})
    # the unsharded run's list is gone: the two shards of the new split are what s2 makes now
    assert sorted(p.name for p in root.iterdir()) == ["manifest.shard-0-of-2.json", "manifest.shard-1-of-2.json"]
    assert read_manifest(root).items == {"a/0": {"hash": "h2", "inputs": {}}, "a/1": {"hash": "h2", "inputs": {}}}
    (root / "manifest.shard-1-of-2.json").write_text("[not json")  # torn: describes nothing
    assert list(read_manifest(root).items) == ["a/0"]
    # every manifest unreadable (torn, another shape, wrong types): as in an older tree, nothing finished is hidden
    for bad in ('{"items": 5}', "null", '{"stage": "s2", "items": {"a/0": 123}}', '{"items": {"a/0": {"hash": 7}}}'):
        (root / "manifest.shard-0-of-2.json").write_text(bad)
        assert read_manifest(root) is None, bad


def test_names_near_the_file_name_limit_export_in_every_format(tmp_path):
    """Concept and scene names of 120 bytes make item keys and thumbnail names longer than a file system
    allows: they are cut with a hash, nothing raises out of the export's thread pools."""
    cat, dog, scene = "c" * 120, "dög" * 30, "s" * 120  # the composition id: 245 bytes
    make_pipeline(tmp_path, scenes={scene: (f"{cat}+{dog}_000", "in the garden",
                                            [(dog, 0, (50, 30, 20, 40)), (cat, 0, (6, 40, 24, 30))])})
    cfg = make_cfg(tmp_path, FORMATS)
    assert s4_caption.run(cfg).done == 1
    assert export.run(cfg).done == 1
    ds = tmp_path / "outputs/datasets/mycanvas"
    assert dataset_ids(ds) == [f"{scene}/{cat}+{dog}_000/v0_procedural"]
    assert all(len(p.name.encode()) <= 255 for p in ds.rglob("*"))
    html = (ds / "gallery/index.html").read_text()
    assert all(f"thumbs/{quote(p.name)}" in html for p in (ds / "gallery/thumbs").iterdir())


def test_a_meta_json_that_is_not_an_object_is_redone_not_a_crash(tmp_path):
    from tests.helpers.image_cases import disc
    from tests.helpers.segmenters import search_path

    d = tmp_path / "src" / "pets" / "cat"
    d.mkdir(parents=True)
    Image.fromarray(disc(64)).save(d / "photo.png")
    cfg = make_cfg(tmp_path, search_path(tmp_path), "segmenter=darkness")
    assert s1_segment.run(cfg).done == 1
    meta = StageTree(tmp_path / "stages").dir("s1") / "pets/cat/photo/meta.json"
    good = meta.read_bytes()
    meta.write_text("[]")
    gone = meta.parent.parent / "removed_photo" / "meta.json"  # its photo was deleted: s1 never redoes it
    gone.parent.mkdir()
    gone.write_text("[]")
    summary = s1_segment.run(cfg)
    assert (summary.done, summary.failed) == (1, 0) and meta.read_bytes() != b"[]"
    assert json.loads(meta.read_text())["concept"] == json.loads(good)["concept"]
