"""The s3 stage end to end on a synthetic s2 output written per the contract."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gen4gen.errors import UserError
from gen4gen.images import read_image
from gen4gen.markers import read_failures
from gen4gen.paths import STAGE_DIRS
from gen4gen.stages import s3_repaint
from tests.helpers.trees import make_composition, read_json

S2 = STAGE_DIRS["s2"]
S3 = STAGE_DIRS["s3"]
# the classical backend's matched light changes concept colours (one shift per object): off where a test checks
# that concept pixels are kept exactly
EXACT = ("inpainter.match_light=0", "inpainter.wrap=0", "inpainter.grain=false")


def s2_tree(tmp_path: Path) -> Path:
    root = tmp_path / "stages" / S2
    make_composition(root, "pets", "cat+dog_000", seed=0)
    make_composition(root, "pets", "cat+dog_001", seed=1, background_prompt="on the kitchen table",
                     scenes=("on the kitchen table", "in the living room"))
    return root


def check_variant(out_dir: Path, s2_dir: Path) -> dict:
    meta = read_json(out_dir / "meta.json")
    img = read_image(out_dir / "image.png")
    used = read_image(out_dir / "mask_used.png", mode="L")
    rgba = read_image(s2_dir / "image_rgba.png", mode="RGBA")
    assert img.shape == rgba.shape[:2] + (3,) and used.shape == rgba.shape[:2]
    keep = used == 0
    assert keep.sum() > 100 and np.array_equal(img[keep], rgba[..., :3][keep])  # concept pixels exact
    assert (used[rgba[..., 3] == 0] == 255).all()  # the whole background was repainted
    return meta


def test_classical_stage_end_to_end(tmp_path, cfg_factory):
    s2 = s2_tree(tmp_path)
    # bad inputs: an unfinished composition, a broken layout, a truncated image
    unfinished = make_composition(s2, "pets", "cat+dog_002", seed=2)
    (unfinished / "meta.json").unlink()
    broken_layout = make_composition(s2, "pets", "cat+dog_003", seed=3)
    (broken_layout / "layout.json").write_text("{not json", "utf-8")
    truncated = make_composition(s2, "pets", "cat+dog_004", seed=4)
    data = (truncated / "image_rgba.png").read_bytes()
    (truncated / "image_rgba.png").write_bytes(data[: len(data) // 2])

    cfg = cfg_factory("stage=s3", "repaint.max_backgrounds=2", "repaint.blur=3", *EXACT)
    summary = s3_repaint.run(cfg)
    assert (summary.total, summary.done, summary.failed) == (2 * 2 + 2 + 2, 4, 4)
    assert summary.notes["backgrounds"].startswith("procedural: a preview, not photographs (repaint.backgrounds=")
    out = tmp_path / "stages" / S3
    for comp in ("cat+dog_000", "cat+dog_001"):
        assert sorted(p.name for p in (out / "pets" / comp).iterdir()) == ["v0_procedural", "v1_procedural"]
    meta = check_variant(out / "pets" / "cat+dog_001" / "v0_procedural", s2 / "pets" / "cat+dog_001")
    assert meta["composition"] == "pets/cat+dog_001" and meta["variant"] == "v0_procedural"
    assert meta["composition_dir"] == f"{S2}/pets/cat+dog_001" and meta["backend"] == "classical"  # stages-relative
    assert meta["background"]["kind"] == "procedural" and meta["background"]["source"] == "kitchen"
    assert meta["prompt"] == "a realistic photo of a cat and a dog on the kitchen table"
    v1 = read_json(out / "pets" / "cat+dog_001" / "v1_procedural" / "meta.json")
    assert v1["background"]["source"] == "room" and v1["prompt"].endswith("in the living room")

    reasons = {f["id"]: f["reason"] for f in read_failures(out)}
    assert "unfinished" in reasons["pets/cat+dog_002"]
    assert "layout.json is not valid JSON" in reasons["pets/cat+dog_003"]
    assert any(k.startswith("pets/cat+dog_004/") and v.startswith("s2 image_rgba.png: truncated or corrupt")
               for k, v in reasons.items())

    # a rerun skips finished variants; a changed s2 composition (new config hash) is redone
    again = s3_repaint.run(cfg)
    assert (again.done, again.skipped) == (0, 4)
    make_composition(s2, "pets", "cat+dog_000", seed=0, config_hash="s2hash1")
    third = s3_repaint.run(cfg)
    assert (third.done, third.skipped) == (2, 2)


def test_results_do_not_depend_on_order_or_sharding(tmp_path, cfg_factory):
    s2_tree(tmp_path)
    whole = s3_repaint.run(cfg_factory("stage=s3", "repaint.blur=3"))
    assert whole.done == 2
    out = tmp_path / "stages" / S3
    first = {p: p.read_bytes() for p in sorted(out.rglob("image.png"))}
    for p in out.rglob("meta.json"):
        p.unlink()
    for k in range(2):
        s3_repaint.run(cfg_factory("stage=s3", "repaint.blur=3", f"shard.index={k}", "shard.count=2"))
    assert {p: p.read_bytes() for p in sorted(out.rglob("image.png"))} == first


def test_photo_backgrounds_matched_by_scene(tmp_path, cfg_factory):
    s2_tree(tmp_path)
    bgs = tmp_path / "backgrounds"
    for scene, colour in (("garden", (20, 160, 30)), ("kitchen", (150, 100, 60))):
        (bgs / scene).mkdir(parents=True)
        Image.new("RGB", (200, 150), colour).save(bgs / scene / f"{scene}1.jpg")
    summary = s3_repaint.run(cfg_factory("stage=s3", f"repaint.backgrounds={bgs}", "repaint.blur=3",
                                         "inpainter.shadow=0", *EXACT))
    assert summary.done == 2
    out = tmp_path / "stages" / S3 / "pets"
    garden = read_json(out / "cat+dog_000" / "v0_photo" / "meta.json")
    assert garden["background"] == {"kind": "photo", "source": str(bgs / "garden" / "garden1.jpg"),
                                    "phrase": "in the garden", "fallback": None, "scene": "garden", "crop": 0,
                                    "salient_share": 0.0, "ground": 0.4, "light": 0.0}
    assert garden["prompt"] == "a realistic photo of a cat and a dog in the garden"
    img = read_image(out / "cat+dog_000" / "v0_photo" / "image.png")
    assert np.abs(img[2, 2].astype(int) - (20, 160, 30)).max() <= 6  # the photo is the background
    kitchen = read_json(out / "cat+dog_001" / "v0_photo" / "meta.json")
    assert kitchen["background"]["source"].endswith("kitchen1.jpg")
    check_variant(out / "cat+dog_001" / "v0_photo", tmp_path / "stages" / S2 / "pets" / "cat+dog_001")


def test_a_photo_much_smaller_than_the_canvas_is_named_in_the_summary(tmp_path, cfg_factory):
    s2_tree(tmp_path)  # 96x80 canvases
    bgs = tmp_path / "backgrounds"
    for scene, size in (("garden", (40, 30)), ("kitchen", (200, 150))):  # enlarged 2.7x and not at all
        (bgs / scene).mkdir(parents=True)
        Image.new("RGB", size, (90, 120, 60)).save(bgs / scene / f"{scene}1.jpg")
    summary = s3_repaint.run(cfg_factory("stage=s3", f"repaint.backgrounds={bgs}", "repaint.min_photo_side=16"))
    assert summary.done == 2
    assert summary.notes["background photos enlarged over 2x to fill the canvas (soft; larger photos look "
                         "better)"] == "1: garden1.jpg"


def test_compositions_planned_without_the_folder_get_a_scene_by_meaning_and_a_summary_line(tmp_path, cfg_factory):
    """s2 ran without repaint.backgrounds, s3 with it: a phrase no folder matches ("in a cozy cafe") gets the
    scene that fits the concepts by meaning, not a random one, and the summary says to rerun s2 with the folder."""
    root = tmp_path / "stages" / S2
    objects = (("cat", (8, 30, 36, 44), (200, 90, 40)), ("mug", (52, 44, 20, 22), (60, 70, 160)))
    for k in range(3):
        make_composition(root, "pets", f"cat+mug_{k:03d}", seed=k, objects=objects,
                         background_prompt="in a cozy cafe", scenes=("in a cozy cafe", "in a photo studio"))
    bgs = tmp_path / "backgrounds"
    for scene in ("Beach 2", "desert", "kitchen", "on_the_moon"):
        (bgs / scene).mkdir(parents=True)
        Image.new("RGB", (200, 150), (120, 110, 100)).save(bgs / scene / "1.jpg")
    summary = s3_repaint.run(cfg_factory("stage=s3", f"repaint.backgrounds={bgs}"))
    assert summary.done == 3
    used = {read_json(p)["background"]["scene"] for p in (tmp_path / "stages" / S3).rglob("meta.json")}
    assert used == {"kitchen"}  # a cat and a mug: the kitchen every time
    assert summary.notes["compositions s2 planned without repaint.backgrounds (photo chosen here by scene phrase "
                         "or meaning; rerun s2 with it so they stand on the photo's ground)"] == 3


def test_noise_start(tmp_path, cfg_factory):
    s2_tree(tmp_path)
    assert s3_repaint.run(cfg_factory("stage=s3", "repaint.source=noise", "repaint.blur=3", *EXACT)).done == 2
    meta = check_variant(tmp_path / "stages" / S3 / "pets" / "cat+dog_000" / "v0_noise",
                         tmp_path / "stages" / S2 / "pets" / "cat+dog_000")
    assert meta["background"]["kind"] == "noise"


def test_whole_run_problems_are_user_errors(tmp_path, cfg_factory, monkeypatch):
    with pytest.raises(UserError, match="run `python -m gen4gen stage=s2` first"):
        s3_repaint.run(cfg_factory("stage=s3"))
    s2_tree(tmp_path)
    with pytest.raises(UserError, match="nope does not exist; expected a folder of photos"):
        s3_repaint.run(cfg_factory("stage=s3", f"repaint.backgrounds={tmp_path / 'nope'}"))
    import torch

    from gen4gen.app import run

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run(cfg_factory("stage=s3", "inpainter=sdxl")) == 2  # clear message, no traceback, no item touched
    assert not (tmp_path / "stages" / S3).exists()


def test_sdxl_stage_batched_equals_one_by_one(tmp_path, cfg_factory):
    from tests.helpers.tiny_inpaint import make_sdxl_inpaint

    model = make_sdxl_inpaint(tmp_path / "tiny_sdxl", tmp_path / "tok")
    root = tmp_path / "stages" / S2
    for k in range(2):
        make_composition(root, "pets", f"cat+dog_{k:03d}", seed=k, size=(64, 64),
                         objects=(("cat", (6, 18, 26, 40), (200, 90, 40)), ("dog", (34, 14, 26, 46), (60, 70, 160))))
    base = ["stage=s3", "inpainter=sdxl", "device=cpu", f"inpainter.model={model}", "inpainter.steps=2",
            "inpainter.resolution=null", "repaint.blur=2"]
    images = {}
    for bs in (2, 1):
        stages = tmp_path / f"stages_bs{bs}"
        if not stages.exists():
            stages.mkdir()
            (stages / S2).symlink_to(root, target_is_directory=True)
        summary = s3_repaint.run(cfg_factory(*base, f"inpainter.batch_size={bs}", f"paths.stages_dir={stages}"))
        assert summary.done == 2, read_failures(stages / S3)
        images[bs] = {p.relative_to(stages): read_image(p) for p in sorted((stages / S3).rglob("image.png"))}
        meta = read_json(stages / S3 / "pets" / "cat+dog_000" / "v0_procedural" / "meta.json")
        assert meta["backend"] == "sdxl" and meta["batch"]["size"] == bs
        assert meta["prompt"] == "a realistic photo of a cat and a dog in the garden"
        check_variant(stages / S3 / "pets" / "cat+dog_000" / "v0_procedural", root / "pets" / "cat+dog_000")
    assert images[2].keys() == images[1].keys() and len(images[1]) == 2
    for key in images[1]:
        assert np.abs(images[2][key].astype(int) - images[1][key]).max() <= 2


def test_photo_with_a_salient_object_where_the_concepts_stand_is_skipped_or_flagged(tmp_path, cfg_factory):
    """A bicycle on the lawn behind the pets: flagged in meta.json and counted in the summary when its folder has
    nothing calmer; a calm lawn is not; with a calm photo beside it in the folder, that one is used instead."""
    import cv2

    s2_tree(tmp_path)
    bgs = tmp_path / "backgrounds"
    rng = np.random.default_rng(0)
    lawn = np.clip(np.full((150, 200, 3), (70, 140, 60), np.float32) + rng.normal(0, 10, (150, 200, 3)), 0, 255)
    lawn = lawn.astype(np.uint8)
    bike = lawn.copy()
    for cx in (60, 140):  # two wheels and a red frame across the whole photo
        cv2.circle(bike, (cx, 90), 38, (15, 15, 15), 5)
    cv2.line(bike, (60, 90), (100, 40), (210, 30, 30), 5)
    cv2.line(bike, (100, 40), (140, 90), (210, 30, 30), 5)
    for scene, photo in (("garden", bike), ("kitchen", lawn)):
        (bgs / scene).mkdir(parents=True)
        Image.fromarray(photo).save(bgs / scene / f"{scene}1.png")
    summary = s3_repaint.run(cfg_factory("stage=s3", f"repaint.backgrounds={bgs}", "repaint.blur=3",
                                         "repaint.photo_blur=0"))
    out = tmp_path / "stages" / S3 / "pets"
    busy = read_json(out / "cat+dog_000" / "v0_photo" / "meta.json")["background"]
    calm = read_json(out / "cat+dog_001" / "v0_photo" / "meta.json")["background"]
    assert busy["salient_share"] > 0.2 and "salient object" in busy["flag"]  # 0.26 today; the limit is 0.12
    assert calm["salient_share"] < 0.1 and "flag" not in calm
    assert summary.notes["photo with a salient object behind the concepts (flagged)"] == 1

    Image.fromarray(lawn).save(bgs / "garden" / "garden2.png")  # a calm photo of the same scene
    for p in (tmp_path / "stages" / S3).rglob("meta.json"):
        p.unlink()
    summary = s3_repaint.run(cfg_factory("stage=s3", f"repaint.backgrounds={bgs}", "repaint.blur=3",
                                         "repaint.photo_blur=0", "repaint.max_backgrounds=2"))
    crops = []
    for variant in ("v0_photo", "v1_photo"):
        used = read_json(out / "cat+dog_000" / variant / "meta.json")["background"]
        assert "flag" not in used and used["salient_share"] < 0.1
        assert used.get("source", "").endswith("garden2.png")
        crops.append(used["crop"])
    assert summary.notes["photo with a salient object behind the concepts (another used)"] == 1
    # v0 moved to the calm photo that v1 starts at: another crop of it, not the same background twice
    assert crops == [1, 0]
    v0, v1 = (read_image(out / "cat+dog_000" / v / "image.png") for v in ("v0_photo", "v1_photo"))
    assert np.abs(v0.astype(int) - v1.astype(int)).mean() > 3
