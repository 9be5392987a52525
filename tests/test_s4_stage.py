"""s4 as a stage: captions.json per the contract, global modifier tokens, reruns, bad layouts."""
import json
import shutil

from gen4gen.io import json_bytes, write_atomic
from gen4gen.markers import read_failures, read_meta
from gen4gen.paths import STAGE_DIRS
from gen4gen.stages import s4_caption
from tests.helpers.trees import SCENES, make_pipeline


def test_captions_follow_the_contract_and_reruns_skip(tmp_path, cfg_factory):
    info = make_pipeline(tmp_path)
    cfg = cfg_factory("stage=s4")
    summary = s4_caption.run(cfg)
    assert (summary.done, summary.failed) == (2, 0)
    root = tmp_path / f"stages/{STAGE_DIRS['s4']}"
    for item_id in info["finals"]:
        caps = json.loads((root / item_id / "captions.json").read_text())
        assert set(caps) == {"short", "detailed", "personalized", "modifier_tokens", "captioner", "fallback"}
        meta = read_meta(root / item_id)
        assert meta["s3_config_hash"] == "s3hash" and meta["captioner"] == "template"
    kitchen = json.loads((root / "kitchen/cat+plant_000/v0_procedural/captions.json").read_text())
    assert kitchen["modifier_tokens"] == {"cat": "<new1>", "plant": "<new3>"}  # global: dog is <new2>
    assert kitchen["detailed"].endswith("The cat is in front of the plant.")
    again = s4_caption.run(cfg)
    assert (again.done, again.skipped) == (0, 2)


def test_a_new_concept_gets_the_next_token_and_no_caption_is_redone(tmp_path, cfg_factory):
    make_pipeline(tmp_path)
    cfg = cfg_factory("stage=s4")
    s4_caption.run(cfg)
    pets = tmp_path / f"stages/{STAGE_DIRS['s4']}/pets/cat+dog_000/v0_procedural/captions.json"
    before = pets.read_bytes()
    scenes = {**SCENES, "park": ("bird+cat_000", "in a park", [("bird", 0, (10, 10, 30, 30)), ("cat", 0, (60, 50, 30, 40))])}
    make_pipeline(tmp_path, scenes=scenes)
    summary = s4_caption.run(cfg)
    # bird sorts first but comes last: it gets <new4>, every earlier token stays, only the park is captioned
    assert (summary.done, summary.skipped) == (1, 2)
    assert summary.notes["modifier tokens"] == "<new1>=cat <new2>=dog <new3>=plant <new4>=bird"
    assert pets.read_bytes() == before
    assert json.loads(pets.read_bytes())["personalized"] == "a photo of <new1> cat and two <new2> dogs in the garden"
    park = json.loads((pets.parents[3] / "park/bird+cat_000/v0_procedural/captions.json").read_text())
    assert park["modifier_tokens"] == {"bird": "<new4>", "cat": "<new1>"}


def test_missing_or_broken_layout_is_a_recorded_failure(tmp_path, cfg_factory):
    make_pipeline(tmp_path)
    s2 = tmp_path / f"stages/{STAGE_DIRS['s2']}"
    (s2 / "pets/cat+dog_000/layout.json").write_text("{not json")
    shutil.rmtree(s2 / "kitchen")
    summary = s4_caption.run(cfg_factory("stage=s4"))
    assert summary.done == 0 and summary.failed == 2
    reasons = {f["id"]: f["reason"] for f in read_failures(tmp_path / f"stages/{STAGE_DIRS['s4']}")}
    assert "cannot read layout" in reasons["pets/cat+dog_000/v0_procedural"]
    assert "No such file" in reasons["kitchen/cat+plant_000/v0_procedural"]


def test_captions_name_the_background_s3_actually_painted(tmp_path, cfg_factory):
    make_pipeline(tmp_path, variants=("v0_procedural", "v1_photo"))
    cfg = cfg_factory("stage=s4")
    s4_caption.run(cfg)
    # s3 matched a photo folder other than the layout's first phrase for this variant
    path = tmp_path / f"stages/{STAGE_DIRS['s3']}/pets/cat+dog_000/v1_photo/meta.json"
    meta = json.loads(path.read_text())
    meta["background"]["phrase"] = "on a beach"
    write_atomic(path, json_bytes(meta))
    summary = s4_caption.run(cfg)
    assert summary.done == 1 and summary.skipped == 3
    root = tmp_path / f"stages/{STAGE_DIRS['s4']}/pets/cat+dog_000"
    assert json.loads((root / "v1_photo/captions.json").read_text())["short"] == "a photo of a cat and two dogs on a beach"
    assert json.loads((root / "v0_procedural/captions.json").read_text())["short"].endswith("in the garden")
