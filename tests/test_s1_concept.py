"""s1 chooses each photo's subject by what the concept's photos share: a second object unlike the concept's
other photos is dropped (and recorded), parts of one subject stay one object, a photo whose objects are all
alike is ambiguous; the choice does not depend on which items a run redoes, and a shard owns whole concepts."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from gen4gen.images import read_image
from gen4gen.paths import STAGE_DIRS
from gen4gen.segment.objects import analysis_map, find_objects
from gen4gen.segment.shared_colours import colour_index, foreign_pieces, histogram
from gen4gen.stages import s1_segment
from tests.conftest import shared
from tests.helpers.segmenters import notwhite_path

OUT = STAGE_DIRS["s1"]


def cutout(stem: str, root: tuple[str, str], ref: str, side: int) -> tuple[np.ndarray, np.ndarray]:
    """A shared photo's subject (its reference mask >= 0.5) scaled to ``side`` px long: rgb, bool mask."""
    folder = shared("segmentation", *root[1:]) if root[0] == "" else shared("segmentation", root[1])
    photo = next(p for p in (folder / "images").iterdir() if p.stem == stem)
    rgb, alpha = read_image(photo), read_image(folder / ref / f"{stem}.png", mode="L") >= 128
    ys, xs = np.nonzero(alpha)
    rgb, alpha = rgb[ys.min():ys.max() + 1, xs.min():xs.max() + 1], alpha[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    s = side / max(rgb.shape[:2])
    size = (max(1, round(rgb.shape[1] * s)), max(1, round(rgb.shape[0] * s)))
    rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(alpha.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    rgb = np.minimum(rgb, 240)  # never pure white: the test segmenter marks every non-white pixel
    return rgb, alpha


def on_white(*things: tuple[np.ndarray, np.ndarray, int, int], h: int = 400, w: int = 600) -> np.ndarray:
    img = np.full((h, w, 3), 255, np.uint8)
    for rgb, alpha, x, y in things:
        region = img[y:y + rgb.shape[0], x:x + rgb.shape[1]]
        region[alpha] = rgb[alpha]
    return img


def _write(folder: Path, name: str, img: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(folder / name)


@pytest.fixture
def cat_concept(tmp_path):
    """Three photos of the cat; the second also holds a rifle far from it."""
    cat = cutout("cat_01", ("", "gen4gen"), "isnet_ref", 220)
    small = cutout("cat_01", ("", "gen4gen"), "isnet_ref", 160)
    rifle = cutout("rifle2", ("", "u2net"), "u2net_ref", 200)
    folder = tmp_path / "src" / "home" / "cat"
    _write(folder, "a.png", on_white((*cat, 40, 60)))
    _write(folder, "b.png", on_white((*small, 30, 200), (*rifle, 380, 40)))
    _write(folder, "c.png", on_white((*small, 300, 120)))
    return folder, small, rifle


def test_a_second_object_unlike_the_concept_is_dropped_and_recorded(tmp_path, cfg_factory, cat_concept):
    folder, small, rifle = cat_concept
    summary = s1_segment.run(cfg_factory(notwhite_path(tmp_path), "stage=s1", "segmenter=notwhite"))
    assert summary.done == 3
    item = tmp_path / "stages" / OUT / "home" / "cat" / "b"
    meta = json.loads((item / "meta.json").read_text("utf-8"))
    assert meta["keep"] == "concept" and meta["multiple_objects"] and "ambiguous" not in meta["flags"]
    cat_obj, rifle_obj = sorted(meta["objects"], key=lambda o: -o["concept_score"])
    assert cat_obj["concept"] and not rifle_obj["concept"]
    assert cat_obj["concept_score"] - rifle_obj["concept_score"] > 0.1
    assert rifle_obj["area_fraction"] == pytest.approx(rifle[1].sum() / (400 * 600), rel=0.1)
    mask = read_image(item / "mask.png", mode="L") >= 128
    assert not mask[:, 370:].any()  # the rifle is gone
    assert (mask[200:200 + small[1].shape[0], 30:30 + small[1].shape[1]] == small[1]).mean() > 0.99
    for other in ("a", "c"):
        one = json.loads((item.parent / other / "meta.json").read_text("utf-8"))
        assert not one["multiple_objects"] and len(one["objects"]) == 1 and one["objects"][0]["concept"]
    # keep=all keeps the rifle, with the same scores on record
    s1_segment.run(cfg_factory(notwhite_path(tmp_path), "stage=s1", "segmenter=notwhite", "segmenter.keep=all"))
    kept = json.loads((item / "meta.json").read_text("utf-8"))
    assert kept["objects"] == meta["objects"] and (read_image(item / "mask.png", mode="L")[:, 370:] >= 128).any()


def test_the_choice_does_not_depend_on_which_photos_a_run_redoes(tmp_path, cfg_factory, cat_concept):
    folder, _, _ = cat_concept
    cfg = cfg_factory(notwhite_path(tmp_path), "stage=s1", "segmenter=notwhite")
    assert s1_segment.run(cfg).done == 3
    out = tmp_path / "stages" / OUT / "home" / "cat"
    first = {n: (out / n / "mask.png").read_bytes() for n in "abc"}
    (out / "b" / "meta.json").unlink()  # only b is redone: its choice still sees a and c
    summary = s1_segment.run(cfg)
    assert (summary.done, summary.skipped) == (1, 2)
    assert {n: (out / n / "mask.png").read_bytes() for n in "abc"} == first
    # a new photo joins the concept: every photo of it is redone (its choice may change)
    _write(folder, "d.png", np.asarray(Image.open(folder / "c.png"))[:, ::-1].copy())
    assert s1_segment.run(cfg).done == 4


def test_a_shard_owns_whole_concepts(cfg_factory):
    stage = s1_segment.SegmentStage(cfg_factory("stage=s1"))
    assert stage.shard_key("home/cat/b") == stage.shard_key("home/cat/a") == "home/cat"
    assert s1_segment.SegmentStage(cfg_factory("stage=all")).shard_key("home/cat/b") == "home"


def test_leaves_of_one_plant_are_one_object_and_two_far_things_are_two():
    soft = np.zeros((240, 320), np.float32)
    for k in range(6):  # six leaves a few pixels apart around a stem
        a = k * np.pi / 3
        cv2.ellipse(soft, (int(160 + 38 * np.cos(a)), int(120 + 38 * np.sin(a))), (30, 12), np.degrees(a), 0, 360, 1.0, -1)
    cv2.circle(soft, (160, 120), 8, 1.0, -1)
    leaves = find_objects(analysis_map(soft, 320, 240))
    assert leaves.count == 1
    two = np.zeros((240, 320), np.float32)
    cv2.circle(two, (60, 120), 40, 1.0, -1)
    cv2.circle(two, (260, 120), 35, 1.0, -1)
    assert find_objects(analysis_map(two, 320, 240)).count == 2


class CountingEncoder:
    calls = 0

    def encode_images(self, images):
        self.calls += 1
        return np.ones((len(images), 4), np.float32)


def test_a_photo_alone_in_its_concept_gets_features_only_to_group_far_parts():
    rgb = np.full((240, 320, 3), 128, np.uint8)
    apart = np.zeros((240, 320), np.float32)  # two discs further apart than FAR of their scale
    cv2.circle(apart, (60, 120), 40, 1.0, -1)
    cv2.circle(apart, (260, 120), 35, 1.0, -1)
    enc = CountingEncoder()
    alone = find_objects(analysis_map(apart, 320, 240), rgb, enc, compared=False)
    assert alone.count == 2 and alone.features is None and enc.calls == 0  # nothing to choose, nothing to group
    assert find_objects(analysis_map(apart, 320, 240), rgb, enc, compared=True).features.shape == (2, 4)
    assert enc.calls == 1  # a concept with other photos: the choice will need them
    near = np.zeros((240, 320), np.float32)  # 30 px apart at a scale of ~88 px: their likeness decides
    cv2.circle(near, (110, 120), 35, 1.0, -1)
    cv2.circle(near, (210, 120), 35, 1.0, -1)
    alike = find_objects(analysis_map(near, 320, 240), rgb, CountingEncoder(), compared=False)
    assert alike.count == 1  # grouped by their (stub) likeness


def test_two_touching_objects_in_one_blob_are_split_and_the_concepts_kept(tmp_path, cfg_factory):
    """The rifle lies across the cat's side: the segmenter marks both as one connected part. The cat's other
    photos show its colours; the rifle's are foreign, so the part is cut there and the rifle piece, unlike the
    cat, is dropped."""
    cat = cutout("cat_01", ("", "gen4gen"), "isnet_ref", 220)
    rifle = cutout("rifle2", ("", "u2net"), "u2net_ref", 260)
    folder = tmp_path / "src" / "home" / "cat"
    _write(folder, "a.png", on_white((*cat, 40, 60)))
    _write(folder, "c.png", on_white((*cat, 300, 120)))
    x, y = 60, 150
    _write(folder, "b.png", on_white((*cat, x, y), (*rifle, x + 150, y + 40)))
    truth = np.zeros((400, 600), bool)
    truth[y:y + cat[1].shape[0], x:x + cat[1].shape[1]] = cat[1]
    hold = np.zeros_like(truth)
    hold[y + 40:y + 40 + rifle[1].shape[0], x + 150:x + 150 + rifle[1].shape[1]] = rifle[1]
    truth &= ~hold  # the rifle lies on top
    _, _, stats, _ = cv2.connectedComponentsWithStats((truth | hold).astype(np.uint8))
    assert stats[1:, cv2.CC_STAT_AREA].max() > 0.99 * (truth | hold).sum()  # one part: nothing to choose among
    summary = s1_segment.run(cfg_factory(notwhite_path(tmp_path), "stage=s1", "segmenter=notwhite"))
    assert summary.done == 3
    item = tmp_path / "stages" / OUT / "home" / "cat" / "b"
    meta = json.loads((item / "meta.json").read_text("utf-8"))
    mask = read_image(item / "mask.png", mode="L") >= 128
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou >= 0.9, iou
    assert (mask & hold).sum() < 0.1 * hold.sum()
    piece = [o for o in meta["objects"] if "cut_from" in o]
    assert len(piece) == 1 and not piece[0]["concept"] and meta["multiple_objects"]
    assert "ambiguous" not in meta["flags"]


def _plant(h: int, w: int, cx: int, cy: int, r: int, seed: int) -> np.ndarray:
    """A potted plant on white: a terracotta pot, a stem, and eight leaves a few pixels clear of each other
    (separate parts at 0.5), in greens that vary from leaf to leaf."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 255, np.uint8)
    cv2.rectangle(img, (cx - r // 2, cy + r), (cx + r // 2, cy + 2 * r), (170, 85, 50), -1)
    cv2.line(img, (cx, cy + r), (cx, cy - r // 2), (60, 110, 40), max(2, r // 12))
    for k in range(8):
        a = 2 * np.pi * k / 8 + rng.uniform(-0.2, 0.2)
        centre = (int(cx + 0.75 * r * np.cos(a)), int(cy - r // 4 + 0.75 * r * np.sin(a)))
        green = (int(rng.integers(30, 90)), int(rng.integers(120, 190)), int(rng.integers(30, 80)))
        cv2.ellipse(img, centre, (int(0.42 * r), int(0.17 * r)), np.degrees(a), 0, 360, green, -1)
    return img


def test_a_leafy_plant_is_one_object_in_every_photo_of_its_concept(tmp_path, cfg_factory):
    """Leaves are parts of one subject: no photo of the plant is flagged multiple_objects or ambiguous, and
    no leaf is dropped as a second object."""
    folder = tmp_path / "src" / "home" / "plant"
    for k, (cx, cy, r) in enumerate(((300, 160, 90), (200, 150, 70), (420, 170, 60))):
        _write(folder, f"p{k}.png", _plant(400, 600, cx, cy, r, k))
    summary = s1_segment.run(cfg_factory(notwhite_path(tmp_path), "stage=s1", "segmenter=notwhite"))
    assert summary.done == 3
    for k in range(3):
        item = tmp_path / "stages" / OUT / "home" / "plant" / f"p{k}"
        meta = json.loads((item / "meta.json").read_text("utf-8"))
        assert not meta["multiple_objects"] and "ambiguous" not in meta["flags"], meta["objects"]
        assert all(o["concept"] for o in meta["objects"])
        mask = read_image(item / "mask.png", mode="L") >= 128
        truth = read_image(folder / f"p{k}.png").min(-1) < 250
        assert (mask & truth).sum() / (mask | truth).sum() > 0.97


def _textured(h: int, w: int, colour: tuple[int, int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.array(colour, np.float32) + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def test_a_part_is_cut_only_where_its_colours_are_foreign_to_the_other_photos():
    """One connected part: a grey-blue thing (the concept, as the other photos show it) touching a brown one.
    The brown region becomes a piece of its own; a photo of the concept alone, in slightly other light, is
    not cut anywhere."""
    h, w = 120, 200
    rgb = np.full((h, w, 3), 255, np.uint8)
    rgb[20:100, 20:100] = _textured(80, 80, (90, 110, 150), 0)
    rgb[40:110, 100:180] = _textured(70, 80, (140, 90, 40), 1)
    labels = np.zeros((h, w), np.int16)
    labels[20:100, 20:100] = 1
    labels[40:110, 100:180] = 1
    concept = np.full((h, w, 3), 255, np.uint8)
    concept[30:90, 60:140] = _textured(60, 80, (90, 110, 150), 2)
    other = np.zeros((h, w), bool)
    other[30:90, 60:140] = True
    others = [histogram(colour_index(concept, (h, w)), other)] * 2
    cut = foreign_pieces(colour_index(rgb, (h, w)), labels, others)
    assert set(np.unique(cut)) == {0, 1, 2}
    brown = np.zeros((h, w), bool)
    brown[40:110, 100:180] = True
    iou = ((cut == 2) & brown).sum() / ((cut == 2) | brown).sum()
    assert iou > 0.9, iou
    lighter = np.clip(concept.astype(np.int16) + 10, 0, 255).astype(np.uint8)
    alone = foreign_pieces(colour_index(lighter, (h, w)), other.astype(np.int16), others)
    assert set(np.unique(alone)) == {0, 1}
    # patches of other colour scattered over the subject (its legs and ears in warmer light) are no thing of
    # their own: nothing is cut
    spotted = concept.copy()
    for y in (32, 52, 72):  # 9 patches: half the subject together, each a twentieth
        for x in (62, 88, 114):
            spotted[y:y + 14, x:x + 18] = _textured(14, 18, (140, 90, 40), x + y)
    assert set(np.unique(foreign_pieces(colour_index(spotted, (h, w)), other.astype(np.int16), others))) == {0, 1}
