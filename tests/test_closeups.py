"""Cut-off subjects: a close-up enters from the edge its photo cut it by, at most one per composition, photos
cut on 3+ sides left out with the reason; with background photos the concepts stand on the photo's ground."""
from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace

import numpy as np
from PIL import Image

from gen4gen.artefacts import S1Meta
from gen4gen.layout.closeups import cast, cut_edges_of
from gen4gen.layout.compose import Source
from gen4gen.paths import STAGE_DIRS
from gen4gen.stages.s2_compose import run
from tests.conftest import make_cfg
from tests.helpers.tree import StageTree, cutout
from tests.helpers.photos import sky_over_ground


def cut_cutout(h: int, w: int, seed: int, edges: tuple[str, ...]) -> np.ndarray:
    """A box-shaped cut-out whose alpha runs off the photo on ``edges`` (a head-and-shoulders crop: bottom)."""
    rgba = cutout(h, w, seed, shape="box")
    m = max(2, min(h, w) // 10)
    a = np.zeros((h, w), np.uint8)
    a[0 if "top" in edges else m:h if "bottom" in edges else h - m,
      0 if "left" in edges else m:w if "right" in edges else w - m] = 255
    rgba[..., 3] = a
    return rgba


def test_cut_edges_from_s1_or_inferred_from_the_border_flag():
    meta = SimpleNamespace(cut_edges=["bottom", "left"], flags=[], bbox_xyxy=None, size=None)
    assert cut_edges_of(meta) == ("bottom", "left")
    older = SimpleNamespace(flags=["touches_border"], bbox_xyxy=[10, 5, 100, 80], size=[100, 80])
    assert cut_edges_of(older) == ("bottom", "right")
    assert cut_edges_of(SimpleNamespace(flags=[], bbox_xyxy=[0, 0, 100, 80], size=[100, 80])) == ()
    # a meta read from disk: s1's empty list (a paw tip on the frame) is no cut; a meta without the field is older
    fields = {"id": "p/cat/a", "stage": "s1", "config_hash": "h", "scene": "p", "concept": "cat", "flags": ["touches_border"],
              "bbox_xyxy": [10, 5, 100, 80], "size": [100, 80]}
    assert cut_edges_of(S1Meta.model_validate({**fields, "cut_edges": []})) == ()
    assert cut_edges_of(S1Meta.model_validate(fields)) == ("bottom", "right")


def test_cast_one_closeup_and_the_reasons():
    def src(name, *edges):
        return Source(name, None, 1.0, tuple(edges))

    rng = np.random.default_rng(0)
    both_cut = cast(["cat", "dog"], {"cat": [src("cat1", "bottom")], "dog": [src("dog1", "left")]}, rng)
    assert both_cut.closeup in ("cat", "dog") and len(both_cut.concepts) == 1
    (out,) = both_cut.left_out
    assert out["concept"] != both_cut.closeup and "at most one per composition" in out["reason"]
    boxed = cast(["cat", "mug"], {"cat": [src("cat1", "top", "left", "bottom"), src("cat2")], "mug": [src("mug1")]},
                 rng)
    assert boxed.left_out[0]["source"] == "cat1" and "cut by top, left, bottom" in boxed.left_out[0]["reason"]
    assert [s.item_id for s in boxed.sources["cat"]] == ["cat2"] and boxed.closeup is None
    only = cast(["cat", "mug"], {"cat": [src("cat1", "top", "left", "bottom")], "mug": [src("mug1")]}, rng)
    assert only.closeup == "cat" and only.edges == ("top", "left", "bottom") and "straight edge" in only.flags[0]
    opposite = cast(["cat", "mug"], {"cat": [src("cat1", "top", "bottom"), src("cat2", "bottom")],
                                     "mug": [src("mug1")]}, rng)
    assert opposite.left_out[0]["source"] == "cat1" and opposite.closeup == "cat" and opposite.edges == ("bottom",)
    whole = cast(["cat", "mug"], {"cat": [src("cat1")], "mug": [src("mug1")]}, rng)
    assert whole.closeup is None and whole.left_out == [] and whole.concepts == ["cat", "mug"]


def test_closeup_enters_from_its_cut_edge_on_the_photos_ground(tmp_path):
    stages = tmp_path / "stages"
    tree = StageTree(stages)
    tree.s1_item("pets", "cat", "face", cut_cutout(180, 160, 1, ("bottom",)), config_hash="s1hash",
                 fingerprint="fp1", flags=["touches_border"], cut_edges=["bottom"])
    tree.s1_item("pets", "dog", "side", cut_cutout(150, 200, 2, ("left",)), config_hash="s1hash",
                 fingerprint="fp2", flags=["touches_border"])  # an older s1: edges inferred from its box
    tree.s1_item("pets", "mug", "whole", cutout(120, 110, 3, shape="box"), config_hash="s1hash", fingerprint="fp3")
    bgs = tmp_path / "bg"
    for scene, horizon in (("kitchen", 0.45), ("living_room", 0.5), ("beach", 0.4), ("moon_surface", 0.5)):
        (bgs / scene).mkdir(parents=True)
        Image.fromarray(sky_over_ground(w=400, h=400, horizon=horizon)).save(bgs / scene / "p.png")
    cfg = make_cfg(tmp_path, "stage=s2", "compose.sets=subsets", "compose.num_samples=2", "compose.size=[256,256]",
                   f"repaint.backgrounds={bgs}", "compose.min_visible=0.3")
    summary = run(cfg)
    assert summary.failed == 0 and summary.done == 8
    root = stages / STAGE_DIRS["s2"] / "pets"
    seen, left = set(), Counter()
    for folder in sorted(root.iterdir()):
        layout = json.loads((folder / "layout.json").read_text())
        mask = np.asarray(Image.open(folder / "mask.png"))
        back = layout["backdrop"]
        assert layout["background_prompt"] == back["phrase"] == "in the " + back["scene"].replace("_", " ")
        if {o["concept"] for o in layout["objects"]} >= {"cat", "mug"}:
            assert back["scene"] in ("kitchen", "living_room")  # a pet and a mug: a real scene they share
        # the planner's horizon is the photo's ground line (on this canvas), whole objects stand below it
        assert abs(layout["camera"]["horizon"] - back["canvas_horizon"]) < 1e-3
        close = layout.get("closeup")
        for o in layout["objects"]:
            inst = np.asarray(Image.open(folder / o["mask"])) > 127
            x, y, w, h = o["box"]
            if close and o["name"] == close["instance"]:
                edges = close["edges"]
                seen.add(tuple(edges))
                # the cut edge lies on the frame along the subject's whole width / height: never floating
                if "bottom" in edges:
                    assert y + h == 256 and inst[-1].sum() >= 0.8 * w
                if "left" in edges:
                    assert x == 0 and inst[:, 0].sum() >= 0.8 * h
                assert o["transform"]["rotation"] == 0.0 and o["transform"]["closeup"] == edges
            else:
                assert y + h > layout["camera"]["horizon"] * 256  # its feet on the ground, below the horizon
        if close and len(layout["objects"]) > 1:  # behind a close-up nothing is a speck
            planned = {o["name"]: o["planned_box"][3] for o in layout["objects"]}
            tallest = max(h for n, h in planned.items() if n != close["instance"])
            assert tallest >= 0.45 * planned[close["instance"]] - 2
        dropped = layout.get("left_out", [])
        assert all("reason" in d for d in dropped)
        left.update(d.get("source") or d.get("concept") for d in dropped)
        if {"cat", "dog"} <= set(folder.name.split("_")[0].split("+")):
            assert len(dropped) == 1 and close is not None  # two cut-off subjects: one close-up, one left out
        assert mask.shape == (256, 256)
    assert seen == {("bottom",), ("left",)}
    assert summary.notes["close-ups (cut-off subjects at their edge)"] == 8
    # each photo left out is named once with the number of compositions, not counted once per composition
    note = summary.notes["photos or concepts left out (cut off; in how many compositions; reason in layout.json)"]
    assert note == f"{len(left)}: " + ", ".join(f"{n} ({k})" for n, k in sorted(left.items()))
    assert sum(left.values()) == 4 and len(left) < 4  # cat+dog and cat+dog+mug, 2 samples each


def test_a_subject_cut_on_top_and_bottom_fills_the_frame_height_and_its_side_crops_it(tmp_path):
    """A head close-up cut by the photo's top and bottom (the only photos of the cat): frame-high, so neither cut
    edge floats in the scene, and, wider than its share of the canvas, cut by the canvas side it stands against."""
    stages = tmp_path / "stages"
    tree = StageTree(stages)
    for k in range(2):
        tree.s1_item("pets", "cat", f"face{k}", cut_cutout(100, 160, k, ("top", "bottom")), config_hash="s1hash",
                     fingerprint=f"fp{k}", flags=["touches_border"], cut_edges=["top", "bottom"])
    tree.s1_item("pets", "mug", "whole", cutout(120, 110, 3, shape="box"), config_hash="s1hash", fingerprint="fp3")
    summary = run(make_cfg(tmp_path, "stage=s2", "compose.num_samples=4", "compose.size=[256,256]"))
    assert summary.done == 4 and summary.failed == 0
    for folder in sorted((stages / STAGE_DIRS["s2"] / "pets").iterdir()):
        layout = json.loads((folder / "layout.json").read_text())
        assert layout["closeup"]["edges"] == ["top", "bottom"] and "straight edge" in layout["closeup"]["flags"][0]
        cat = next(o for o in layout["objects"] if o["concept"] == "cat")
        inst = np.asarray(Image.open(folder / cat["mask"])) > 127
        x, y, w, h = cat["box"]
        assert (y, h) == (0, 256)  # both cut edges on the frame
        assert inst[0].sum() >= 0.8 * w and inst[-1].sum() >= 0.8 * w
        assert x == 0 or x + w == 256  # against a side of the canvas, which crops it
        assert w <= 0.65 * 256 + 1 < 160 * 256 / 100  # narrower than it would be uncropped: the side cut it
        mug = next(o for o in layout["objects"] if o["concept"] == "mug")
        assert mug["visible_fraction"] >= 0.6  # the mug keeps the rest of the canvas


def test_a_forced_scene_and_a_changed_folder(tmp_path):
    import pytest

    from gen4gen.errors import UserError
    from tests.helpers.trees import fake_s1

    fake_s1(tmp_path / "stages", {"pets": {"cat": 1, "mug": 1}})
    bgs = tmp_path / "bg"
    for scene in ("kitchen", "beach"):
        (bgs / scene).mkdir(parents=True)
        Image.fromarray(sky_over_ground()).save(bgs / scene / "1.jpg")
    over = ("stage=s2", "compose.size=[160,128]", "compose.num_samples=2", f"repaint.backgrounds={bgs}")
    assert run(make_cfg(tmp_path, *over, "repaint.scene=beach")).done == 2
    root = tmp_path / "stages" / STAGE_DIRS["s2"] / "pets"
    layouts = [json.loads((d / "layout.json").read_text()) for d in sorted(root.iterdir())]
    assert [(lay["backdrop"]["scene"], lay["backdrop"]["chosen_by"]) for lay in layouts] == [("beach", "repaint.scene")] * 2
    assert run(make_cfg(tmp_path, *over, "repaint.scene=beach")).skipped == 2  # nothing changed
    Image.fromarray(sky_over_ground(horizon=0.6)).save(bgs / "beach" / "2.jpg")  # a new photo: layouts redone
    assert run(make_cfg(tmp_path, *over, "repaint.scene=beach")).done == 2
    with pytest.raises(UserError, match="repaint.scene='garage': .* has no such scene; its scenes with photos are "
                                        "beach, kitchen$"):
        run(make_cfg(tmp_path, *over, "repaint.scene=garage"))
    (bgs / "garage").mkdir()  # a scene folder without a usable photo: said so, not "no such scene"
    (bgs / "garage" / "1.jpg").write_bytes(b"not a photo")
    with pytest.raises(UserError, match="repaint.scene='garage': .*garage holds no usable photo .lines above.; its "):
        run(make_cfg(tmp_path, *over, "repaint.scene=garage"))
    # without photos a forced scene is the phrase every composition gets (procedural preview)
    run(make_cfg(tmp_path, "stage=s2", "compose.size=[160,128]", "compose.num_samples=2", "repaint.scene=on_a_farm"))
    assert {json.loads((d / "layout.json").read_text())["background_prompt"] for d in root.iterdir()} == {"on a farm"}
