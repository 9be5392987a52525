"""Export: every format read back by its own consumer library; only complete items, and it says why."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gen4gen.errors import UserError
from gen4gen.images import read_image
from gen4gen.io import json_bytes, write_atomic
from gen4gen.paths import STAGE_DIRS
from gen4gen.stages import export, s4_caption
from tests.conftest import make_cfg
from tests.helpers.trees import add_failure, make_pipeline

VARIANTS = ("v0_procedural", "v1_photo")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    info = make_pipeline(root, variants=VARIANTS)
    cfg = make_cfg(root, "export.name=demo", "export.shard_maxcount=3")
    s4_caption.run(cfg)
    summary = export.run(cfg)
    return root, info, cfg, summary, root / "outputs" / "datasets" / "demo"


def tree_digest(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_mycanvas_index_follows_the_contract(built):
    root, info, _, summary, ds = built
    assert summary.done == 4 and summary.failed == 0 and summary.notes["gallery"] == str(ds / "gallery/index.html")
    rows = [json.loads(line) for line in (ds / "mycanvas/index.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == info["finals"]
    for r in rows:
        assert set(r) >= {"id", "image", "scene", "concepts", "captions", "modifier_tokens", "reference_images"}
        folder = ds / "mycanvas" / r["id"]
        assert (ds / "mycanvas" / r["image"]) == folder / "image.png"
        s3 = root / f"stages/{STAGE_DIRS['s3']}" / r["id"] / "image.png"
        assert (folder / "image.png").read_bytes() == s3.read_bytes()
        assert json.loads((folder / "captions.json").read_text())["short"] == r["captions"]["short"]
        assert json.loads((folder / "layout.json").read_text())["composition_id"] == r["id"].split("/")[1]
        for name, mask in info["instances"][r["id"]].items():
            assert np.array_equal(read_image(folder / "instances" / f"{name}.png", mode="L"), mask)
        for concept, refs in r["reference_images"].items():
            assert refs and all((ds / p).is_file() for p in refs)
            assert r["modifier_tokens"][concept] in r["captions"]["personalized"]
    pets = next(r for r in rows if r["id"].startswith("pets"))
    assert pets["concepts"] == ["cat", "dog"] and pets["modifier_tokens"] == {"cat": "<new1>", "dog": "<new2>"}
    assert len(pets["reference_images"]["cat"]) == 4  # both scenes' cat photos: the concept is global
    card = (ds / "README.md").read_text()
    assert (ds / "mycanvas/README.md").read_text() == card
    assert "| cat | `<new1>` | cat | 4 | 4 | 4 |" in card and "Nothing: every item of the run is complete" in card
    n_procedural = sum(1 for r in rows if r["id"].endswith("_procedural"))
    assert f"**{n_procedural} final image(s) have a procedural background: a preview, not a photograph.**" in card


def test_imagefolder_loads_with_datasets(built):
    import datasets

    _, info, _, _, ds = built
    data = datasets.load_dataset("imagefolder", data_dir=str(ds / "imagefolder"), split="train")
    assert len(data) == 4
    by_id = {row["id"]: row for row in data}
    assert sorted(by_id) == info["finals"]
    row = by_id["pets/cat+dog_000/v0_procedural"]
    s3 = read_image(ds / "mycanvas/pets/cat+dog_000/v0_procedural/image.png")
    assert np.array_equal(np.asarray(row["image"].convert("RGB")), s3)
    assert row["caption_plain"] == "A photo of a cat and two dogs in the garden. The cat is to the left of the dogs."
    assert row["caption_personalized"].count("<new") == 2 and "<" not in row["caption_plain_short"]
    # images/ holds images only: a script that opens every file of the folder (diffusers' DreamBooth) reads it
    images = sorted((ds / "imagefolder/images").iterdir())
    assert len(images) == 4 and all(Image.open(p).size == row["image"].size for p in images)
    assert sorted(row["objects"]["category"]) == ["cat", "dog", "dog"] and len(row["objects"]["bbox"][0]) == 4


def test_coco_masks_equal_the_instance_masks(built):
    from pycocotools.coco import COCO

    _, info, _, _, ds = built
    coco = COCO(str(ds / "coco/annotations/instances.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["cat", "dog", "plant"]
    assert len(coco.getImgIds()) == 4 and len(coco.getAnnIds()) == 2 * 3 + 2 * 2
    for img in coco.loadImgs(coco.getImgIds()):
        assert (ds / "coco/images" / img["file_name"]).is_file()
        masks = info["instances"][img["gen4gen_id"]]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        assert sorted(a["instance"] for a in anns) == sorted(masks)
        for a in anns:
            want = masks[a["instance"]] >= 128
            assert np.array_equal(coco.annToMask(a).astype(bool), want)
            ys, xs = np.nonzero(want)
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert a["area"] == int(want.sum()) and coco.loadCats(a["category_id"])[0]["name"] == a["instance"][:-2]
    caps = COCO(str(ds / "coco/annotations/captions.json"))
    assert len(caps.getAnnIds()) == 8
    assert {a["caption"] for a in caps.loadAnns(caps.getAnnIds(imgIds=1))} >= {"a photo of a plant and a cat on a kitchen table"}


def test_webdataset_reads_every_sample_from_bounded_shards(built):
    import webdataset as wds

    _, info, _, _, ds = built
    shards = sorted((ds / "webdataset").glob("shard-*.tar"))
    assert [s.name for s in shards] == ["shard-000000.tar", "shard-000001.tar"]  # maxcount 3
    samples = list(wds.WebDataset([str(s) for s in shards], shardshuffle=False).decode("rgb8"))
    assert len(samples) == 4
    ids = [json.loads(json.dumps(s["json"]))["id"] for s in samples]
    assert sorted(ids) == info["finals"]
    for s in samples:
        meta = s["json"]
        final = read_image(ds / "mycanvas" / meta["id"] / "image.png")
        assert np.array_equal(s["png"], final)
        assert s["txt"] == meta["captions"]["detailed"] and s["__key__"] == meta["id"].replace("/", "__")
        assert {o["name"] for o in meta["objects"]} == set(info["instances"][meta["id"]])


def test_customdiffusion_concepts_list_is_what_the_diffusers_script_reads(built):
    _, info, _, _, ds = built
    cd = ds / "customdiffusion"
    concepts = json.loads((cd / "concepts_list.json").read_text())
    modifier = (cd / "modifier_token.txt").read_text().strip()
    assert modifier == "<new1>+<new2>+<new3>"
    from gen4gen.artefacts import read_concepts_list  # train reads it back through its model

    assert [(c.concept, c.token) for c in read_concepts_list(cd)] == list(zip(["cat", "dog", "plant"],
                                                                              modifier.split("+")))
    assert len((cd / "initializer_token.txt").read_text().strip().split("+")) == len(modifier.split("+"))
    for concept, token in zip(concepts, modifier.split("+")):
        # CustomDiffusionDataset: Path(instance_data_dir).iterdir(), every file opened as an image, the prompt
        assert set(concept) == {"instance_prompt", "class_prompt", "instance_data_dir", "class_data_dir"}
        assert token in concept["instance_prompt"] and concept["class_prompt"] in concept["instance_prompt"]
        files = [x for x in (cd / concept["instance_data_dir"]).iterdir()]
        assert files and all(x.is_file() for x in files)
        for x in files:
            im = Image.open(x).convert("RGB")
            assert im.size[0] == im.size[1] and im.getpixel((0, 0)) == (255, 255, 255)  # cut-out on white
        assert not Path(concept["class_data_dir"]).is_absolute()
    assert [c["class_prompt"] for c in concepts] == ["cat", "dog", "plant"]
    paths = (cd / "compositions/images.txt").read_text().splitlines()
    captions = (cd / "compositions/captions.txt").read_text().splitlines()
    masks = (cd / "compositions/masks.txt").read_text().splitlines()
    # paths relative to the list file
    assert len(paths) == len(captions) == len(masks) == 4
    assert all((cd / "compositions" / p).is_file() for p in paths + masks)
    assert all("<new" in c for c in captions)
    script = (cd / "train.sh").read_text()
    assert "--concepts_list=concepts_list.json" in script and "--modifier_token='<new1>+<new2>+<new3>'" in script


def test_stage_train_reads_the_customdiffusion_scenes_as_it_reads_mycanvas(built, tmp_path):
    import shutil

    from gen4gen.train.data import load_examples

    _, _, _, _, ds = built
    only = tmp_path / "cd_only"
    shutil.copytree(ds / "customdiffusion", only / "customdiffusion")  # an export without mycanvas/
    for data in ("mycanvas", "sources"):
        via_index, concepts, problems = load_examples(ds, data)
        via_lists, concepts_cd, problems_cd = load_examples(only, data)
        assert concepts_cd == concepts and problems == problems_cd == []
        assert [e.caption for e in via_lists] == [e.caption for e in via_index] and len(via_index) >= 4
        for a, b in zip(via_lists, via_index):
            assert a.image.read_bytes() == b.image.read_bytes()
            assert (a.mask is None) == (b.mask is None) and (a.mask is None or a.mask.read_bytes() == b.mask.read_bytes())
    with pytest.raises(UserError, match="personalised captions only"):
        load_examples(only, "mycanvas", "detailed")


def test_training_leaves_out_the_concept_sets_that_split_json_holds_out(built, tmp_path):
    import shutil

    from gen4gen.bench.split import main as split_main
    from gen4gen.train.data import load_examples

    _, _, _, _, ds = built
    copy = tmp_path / "ds"
    shutil.copytree(ds, copy)
    rows = [json.loads(x) for x in (copy / "mycanvas" / "index.jsonl").read_text().splitlines()]
    assert split_main([str(copy), "--holdout", "0.5"]) == 0
    held = json.loads((copy / "split.json").read_text())["holdout"]
    left = [r["id"] for r in rows if sorted(set(r["concepts"])) in held]
    assert held and left and len(left) < len(rows)
    everything, concepts, _ = load_examples(ds, "mycanvas")
    trained, concepts_split, problems = load_examples(copy, "mycanvas")
    assert sorted(e.id for e in trained) == sorted(e.id for e in everything if e.id not in left)
    assert concepts_split == concepts  # each concept still trains through its other sets' scenes and tokens
    assert problems == [f"{copy / 'split.json'}: {len(left)} scene(s) of held-out concept sets "
                        f"({', '.join('+'.join(h) for h in held)}) left out of training"]


def test_rerun_rewrites_the_same_bytes(built):
    root, _, cfg, _, ds = built
    before = tree_digest(ds)
    (ds / "stray.txt").write_text("left by hand")
    with pytest.raises(UserError, match="stray.txt"):  # not the export's: kept, and nothing replaced
        export.run(cfg)
    assert (ds / "stray.txt").read_text() == "left by hand"
    (ds / "stray.txt").unlink()
    export.run(cfg)
    assert tree_digest(ds) == before
    export.run(make_cfg(root, "export.name=demo", "export.shard_maxcount=3", "workers=1"))  # thread count
    assert tree_digest(ds) == before
    assert [p.name for p in ds.parent.iterdir()] == ["demo"]  # no partial or old folder left behind


def test_export_of_a_run_with_failures_exports_only_complete_items(tmp_path):
    info = make_pipeline(tmp_path, variants=VARIANTS)
    stages = info["stages"]
    cfg = make_cfg(tmp_path, "export.formats=[mycanvas,coco]")
    s4_caption.run(cfg)
    # s4 failed on one image (no meta), another image was repainted again after s4 ran, one s3 image never got made
    s4 = stages / STAGE_DIRS["s4"]
    (s4 / "pets/cat+dog_000/v1_photo/meta.json").unlink()
    add_failure(stages, "s4", "pets/cat+dog_000/v1_photo", "cannot caption: layout has no objects")
    s3_meta = stages / f"{STAGE_DIRS['s3']}/kitchen/cat+plant_000/v1_photo/meta.json"
    meta = json.loads(s3_meta.read_text())
    write_atomic(s3_meta, json_bytes({**meta, "config_hash": "changed"}))
    add_failure(stages, "s3", "pets/cat+dog_001/v0_photo", "background photo unreadable")
    add_failure(stages, "s1", "pets/cat/bad.jpg", "not an image (the content is text)")
    (stages / f"{STAGE_DIRS['s1']}/kitchen/plant/plant_02/cutout.png").write_bytes(b"")  # lost after s1
    summary = export.run(cfg)
    ds = tmp_path / "outputs/datasets/mycanvas"
    rows = [json.loads(line)["id"] for line in (ds / "mycanvas/index.jsonl").read_text().splitlines()]
    assert rows == ["kitchen/cat+plant_000/v0_procedural", "pets/cat+dog_000/v0_procedural"]
    assert summary.done == 2 and summary.failed == 0
    assert summary.notes["reference cut-outs unreadable"] == 1  # one photo fewer, no item lost
    kitchen = json.loads((ds / "mycanvas/index.jsonl").read_text().splitlines()[0])
    assert kitchen["reference_images"]["plant"] == ["mycanvas/references/plant/kitchen__plant_01.png"]
    assert summary.notes["left out (incomplete)"].startswith("2: ")
    assert "s1 1" in summary.notes["upstream failures"] and "s3 1" in summary.notes["upstream failures"]
    left = [json.loads(line) for line in (ds / "left_out.jsonl").read_text().splitlines()]
    reasons = {r["id"]: r["reason"] for r in left}
    assert "captioning failed: cannot caption" in reasons["pets/cat+dog_000/v1_photo"]
    assert "out of date" in reasons["kitchen/cat+plant_000/v1_photo"]
    assert reasons["pets/cat+dog_001/v0_photo"] == "background photo unreadable"
    card = (ds / "README.md").read_text()
    assert "2 final image(s) were not exported" in card and "background photo unreadable" in card
    html = (ds / "gallery/index.html").read_text()
    assert "out of date" in html and "<b>2</b> final images left out" in html
    assert not (ds / "webdataset").exists() and (ds / "coco/annotations/instances.json").is_file()


def test_unreadable_final_image_is_an_export_failure_not_a_crash(tmp_path):
    info = make_pipeline(tmp_path)
    cfg = make_cfg(tmp_path, "export.formats=[imagefolder,webdataset]")
    s4_caption.run(cfg)
    broken = info["stages"] / f"{STAGE_DIRS['s2']}/pets/cat+dog_000/instances/dog_1.png"
    broken.write_bytes(broken.read_bytes()[:40])
    summary = export.run(cfg)
    assert summary.done == 1 and summary.failed == 1
    ds = tmp_path / "outputs/datasets/mycanvas"
    fail = json.loads((ds / "failures.jsonl").read_text())
    assert fail["id"] == "pets/cat+dog_000/v0_procedural"
    assert fail["reason"].startswith("instance mask ") and "dog_1.png: not an image" in fail["reason"]
    meta = (ds / "imagefolder/metadata.jsonl").read_text().splitlines()
    assert len(meta) == 1 and "kitchen" in meta[0]


def test_clear_errors_for_nothing_to_export_and_bad_settings(tmp_path):
    make_pipeline(tmp_path)
    with pytest.raises(UserError, match="no captions yet"):
        export.run(make_cfg(tmp_path))
    with pytest.raises(UserError, match="unknown export format 'parquet'"):
        export.run(make_cfg(tmp_path, "export.formats=[coco,parquet]"))
    with pytest.raises(UserError, match="plain folder name"):
        export.run(make_cfg(tmp_path, "export.name=../escape"))


def test_webdataset_shards_close_at_the_size_bound(built):
    import webdataset as wds

    root, info, _, _, _ = built
    cfg = make_cfg(root, "export.name=small", "export.formats=[webdataset]", "export.gallery=false",
                   "export.shard_maxsize=5000")
    export.run(cfg)
    shards = sorted((root / "outputs/datasets/small/webdataset").glob("*.tar"))
    sizes = [s.stat().st_size for s in shards]
    assert len(shards) > 1 and all(size < 5000 + 30000 for size in sizes)  # bound + at most one sample
    keys = [s["__key__"] for s in wds.WebDataset([str(s) for s in shards], shardshuffle=False)]
    assert sorted(keys) == sorted(i.replace("/", "__") for i in info["finals"])
