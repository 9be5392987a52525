"""The export for the trainers people use: kohya folders and sd-scripts' dataset.toml, datasets of chosen scenes
and concepts, Custom Diffusion's two commands, a card whose snippets run as pasted, and the demo's own folders."""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gen4gen.errors import UserError
from gen4gen.images import read_image
from gen4gen.stages import export, s4_caption
from tests.conftest import make_cfg
from tests.helpers.trees import add_failure, make_pipeline

ROOT = Path(__file__).resolve().parents[1]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


# sd-scripts' dataset config as its docs/config_README-en.md describes it (DreamBooth-style datasets): every key
# it accepts where it may stand, with its type; anything else is "extra keys not allowed" there too
class _Subset(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    image_dir: str
    caption_extension: str = ".caption"
    class_tokens: str | None = None
    num_repeats: int = Field(1, ge=1)
    is_reg: bool = False
    alpha_mask: bool = False
    shuffle_caption: bool = False
    keep_tokens: int = 0
    flip_aug: bool = False
    color_aug: bool = False
    random_crop: bool = False


class _Dataset(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    resolution: int | tuple[int, int]
    enable_bucket: bool = False
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = False
    batch_size: int = 1
    caption_extension: str | None = None
    subsets: list[_Subset] = Field(min_length=1)

    @model_validator(mode="after")
    def _buckets(self):  # "It must be divisible by bucket_reso_steps"
        assert self.min_bucket_reso % self.bucket_reso_steps == 0 and self.max_bucket_reso % self.bucket_reso_steps == 0
        return self


class _General(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    caption_extension: str = ".caption"
    shuffle_caption: bool = False
    keep_tokens: int = 0


class _DatasetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    general: _General = Field(default_factory=_General)
    datasets: list[_Dataset] = Field(min_length=1)


def _export(root: Path, *overrides: str) -> tuple[dict, Path]:
    info = make_pipeline(root, variants=("v0_procedural", "v1_photo"))
    cfg = make_cfg(root, "export.name=demo", *overrides)
    s4_caption.run(cfg)
    export.run(cfg)
    return info, root / "outputs" / "datasets" / "demo"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("kohya"))


def _captions(ds: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in (ds / "mycanvas/index.jsonl").read_text().splitlines()]
    return {r["id"].replace("/", "__"): r for r in rows}


def test_dataset_toml_is_an_sd_scripts_config_whose_every_folder_exists_and_every_image_has_its_caption(built):
    info, ds = built
    config = _DatasetConfig.model_validate(tomllib.loads((ds / "kohya/dataset.toml").read_text("utf-8")))
    assert config.general.caption_extension == ".txt"
    (dataset,) = config.datasets
    assert dataset.resolution == 512 and dataset.enable_bucket and dataset.bucket_no_upscale  # train.resolution
    dirs = [Path(s.image_dir) for s in dataset.subsets]
    assert all(d.is_absolute() and d.is_dir() for d in dirs)  # sd-scripts resolves from its own working folder
    assert dirs == [ds / "kohya/scenes"] + [ds / "kohya/references" / c for c in ("cat", "dog", "plant")]
    rows = _captions(ds)
    scenes = sorted(p for p in dirs[0].iterdir() if p.suffix in IMAGE_SUFFIXES)
    assert [p.stem for p in scenes] == sorted(rows) and len(scenes) == len(info["finals"]) == 4
    for image in scenes:
        row = rows[image.stem]
        text = image.with_suffix(".txt").read_text("utf-8")
        assert text == row["captions"]["personalized"] + "\n"
        assert all(row["modifier_tokens"][c] in text for c in row["concepts"])  # every concept's token
        final = read_image(ds / "mycanvas" / row["image"])
        assert Image.open(image).mode == "RGB" and np.array_equal(read_image(image), final)
    tokens = {"cat": "<new1>", "dog": "<new2>", "plant": "<new3>"}
    for sub, folder in zip(dataset.subsets[1:], dirs[1:]):
        concept = folder.name
        assert sub.class_tokens == f"{tokens[concept]} {concept}" and not sub.alpha_mask
        images = sorted(p for p in folder.iterdir() if p.suffix in IMAGE_SUFFIXES)
        # the same reference cut-outs the other formats ship, each with its caption
        assert [p.read_bytes() for p in images] == [
            p.read_bytes() for p in sorted((ds / "customdiffusion/instance_images" / concept).iterdir())]
        assert {p.with_suffix(".txt").read_text() for p in images} == {f"a photo of a {tokens[concept]} {concept}\n"}
        assert sorted(folder.iterdir()) == sorted(images + [p.with_suffix(".txt") for p in images])


def test_masks_ride_in_alpha_and_plain_captions_carry_no_tokens(tmp_path):
    info, ds = _export(tmp_path, "export.kohya.masks=true", "export.kohya.caption=detailed",
                       "export.kohya.resolution=1024", "export.kohya.reference_repeats=5", "export.formats=[mycanvas,kohya]")
    config = _DatasetConfig.model_validate(tomllib.loads((ds / "kohya/dataset.toml").read_text("utf-8")))
    (dataset,) = config.datasets
    assert dataset.resolution == 1024 and dataset.max_bucket_reso == 2048
    assert all(s.alpha_mask for s in dataset.subsets)  # sd-scripts batches only subsets that agree on it
    assert [s.num_repeats for s in dataset.subsets] == [1, 5, 5, 5]
    assert dataset.subsets[1].class_tokens == "cat"
    rows = _captions(ds)
    for key, row in rows.items():
        image = ds / "kohya/scenes" / f"{key}.png"
        rgba = np.asarray(Image.open(image))
        assert rgba.shape[2] == 4 and np.array_equal(rgba[..., :3], read_image(ds / "mycanvas" / row["image"]))
        union = np.zeros(rgba.shape[:2], bool)
        for name, mask in info["instances"][row["id"]].items():
            union |= mask >= 128  # export.mask_threshold
        assert np.array_equal(rgba[..., 3], union.astype(np.uint8) * 255)
        assert image.with_suffix(".txt").read_text() == row["captions"]["detailed"] + "\n"
        assert "<new" not in image.with_suffix(".txt").read_text()
    assert (ds / "kohya/references/cat/pets__cat_01.txt").read_text() == "a photo of a cat\n"
    with pytest.raises(UserError, match="export.kohya.caption"):
        export.run(make_cfg(tmp_path, "export.name=demo", "export.kohya.caption=tags"))


def test_an_export_of_chosen_scenes_or_concepts_holds_only_them(tmp_path):
    info = make_pipeline(tmp_path, variants=("v0_procedural",))
    stages = info["stages"]
    s4_caption.run(make_cfg(tmp_path))
    add_failure(stages, "s1", "kitchen/plant/bad.jpg", "not an image")
    add_failure(stages, "s3", "kitchen/cat+plant_001/v0_photo", "background photo unreadable")
    add_failure(stages, "s3", "pets/cat+dog_001/v0_photo", "the pets' own problem")
    summary = export.run(make_cfg(tmp_path, "export.name=pets", "export.scenes=[pets]"))
    ds = tmp_path / "outputs/datasets/pets"
    ids = [json.loads(line)["id"] for line in (ds / "mycanvas/index.jsonl").read_text().splitlines()]
    assert ids == ["pets/cat+dog_000/v0_procedural"] and summary.done == 1
    assert [json.loads(line)["id"] for line in (ds / "imagefolder/metadata.jsonl").read_text().splitlines()] == ids
    assert [p.name for p in (ds / "kohya/scenes").iterdir() if p.suffix == ".png"] == ["pets__cat+dog_000__v0_procedural.png"]
    assert len(json.loads((ds / "coco/annotations/instances.json").read_text())["images"]) == 1
    # the cat's photos of the other scene stay out: the kitchen's cat is not in this dataset
    assert sorted(p.name for p in (ds / "kohya/references/cat").glob("*.png")) == ["pets__cat_01.png", "pets__cat_02.png"]
    assert not (ds / "kohya/references/plant").exists()
    left = (ds / "left_out.jsonl").read_text()
    assert "the pets' own problem" in left and "kitchen" not in left
    card = (ds / "README.md").read_text()
    assert "Selection: scenes pets" in card and "kitchen" not in card.split("## Config")[0]
    assert summary.notes["selection"] == "scenes pets"

    summary = export.run(make_cfg(tmp_path, "export.name=plants", "export.concepts=[cat,plant]", "export.scenes=[kitchen,attic]"))
    ds = tmp_path / "outputs/datasets/plants"
    ids = [json.loads(line)["id"] for line in (ds / "mycanvas/index.jsonl").read_text().splitlines()]
    assert ids == ["kitchen/cat+plant_000/v0_procedural"]  # the pets scene has dogs, which were not chosen
    assert summary.notes["selection"] == "scenes attic, kitchen; concepts cat, plant (no final image has scene 'attic')"
    assert sorted((tmp_path / "outputs/datasets").iterdir()) == [tmp_path / "outputs/datasets" / n for n in ("pets", "plants")]

    with pytest.raises(UserError, match=r"matches no final image; the stages hold scenes kitchen, pets \(no final image has scene 'garage'\)"):
        export.run(make_cfg(tmp_path, "export.name=x", "export.scenes=[garage]"))
    with pytest.raises(UserError, match="export.concepts=.*expected a list"):
        export.run(make_cfg(tmp_path, "export.name=x", "export.concepts=[1,2]"))


def test_customdiffusion_train_sh_runs_both_commands_from_the_stage_train_base(built, tmp_path):
    _, ds = built
    cd = ds / "customdiffusion"
    scenes = json.loads((cd / "concepts_list_scenes.json").read_text())
    captions = (cd / "compositions/captions.txt").read_text().splitlines()
    assert [s["instance_prompt"] for s in scenes] == captions and len(scenes) == 4
    for s in scenes:  # the script opens every file of each folder as the one image of that prompt
        (image,) = list((cd / s["instance_data_dir"]).iterdir())
        assert Image.open(image).size == (100, 100)
    # accelerate stand-in: records the command line train.sh builds
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "accelerate"
    fake.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    "json.dump({'argv': sys.argv[1:], 'cwd': os.getcwd()}, open(os.environ['RECORD'], 'w'))\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    base = make_cfg(tmp_path).train.base

    def launch(*args: str) -> dict:
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RECORD": str(tmp_path / "rec.json")}
        env.pop("MODEL_NAME", None)
        subprocess.run(["bash", str(cd / "train.sh"), *args], check=True, env=env, cwd=tmp_path)
        return json.loads((tmp_path / "rec.json").read_text())

    rec = launch()
    assert rec["cwd"] == str(cd) and f"--pretrained_model_name_or_path={base}" in rec["argv"]
    assert "--concepts_list=concepts_list.json" in rec["argv"] and "--with_prior_preservation" in rec["argv"]
    rec = launch("scenes", "--max_train_steps=3")
    assert "--concepts_list=concepts_list_scenes.json" in rec["argv"] and "--with_prior_preservation" not in rec["argv"]
    assert rec["argv"][-1] == "--max_train_steps=3" and "--output_dir=custom-diffusion-demo-scenes" in rec["argv"]


def test_the_card_snippets_run_as_pasted_and_name_the_columns_that_hold_the_tokens(built):
    _, ds = built
    card = (ds / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    assert len(blocks) == 2
    for code in blocks:  # in a fresh interpreter, from another folder: imports and paths are all there
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=300,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert out.returncode == 0, out.stderr[-2000:]
        assert "<new1>" in out.stdout
    assert "--caption_column=caption_personalized" in card and "--caption_column text" not in card
    assert f"--dataset_config={ds / 'kohya/dataset.toml'}" in card
    assert "| cat | `<new1>` | cat |" in card


def test_make_demo_writes_into_its_own_folders(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    from gen4gen.__main__ import conf_dir
    from gen4gen.examples import main

    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        user, demo = compose(config_name="config"), compose(config_name="config", overrides=["+experiment=demo"])
    for key in ("source_dir", "stages_dir"):
        assert Path(demo.paths[key]) != Path(user.paths[key])
    assert demo.export.name == "mycanvas_demo" != user.export.name
    assert demo.train.dataset.endswith("/datasets/mycanvas_demo")  # train and bench follow the demo's dataset
    # the Makefile writes the example photos where the demo reads them, then runs the demo's config
    make = (ROOT / "Makefile").read_text()
    assert f"gen4gen.examples --dest {demo.paths.source_dir}" in make and "gen4gen +experiment=demo stage=all" in make
    monkeypatch.chdir(tmp_path)
    assert main([]) == 0  # by default too: never into the user's photos
    assert not (tmp_path / user.paths.source_dir).exists()
    assert sorted(p.name for p in (tmp_path / demo.paths.source_dir).iterdir()) == ["astronaut_and_rocket", "cat_and_cup"]
