"""The user's background photos: scenes from folders and sidecars, bad photos one line each, horizon and
light estimates, scenes chosen by meaning, and matched light in the classical backend."""
from __future__ import annotations

import json
import re
from collections import Counter

import cv2
import numpy as np
import pytest
from PIL import Image

from gen4gen.layout.backdrop import find_scene
from gen4gen.layout.scene_fit import SceneFit, minilm_embed
from gen4gen.layout.scenes import scene_words
from gen4gen.repaint import RepaintJob
from gen4gen.repaint.mask import repaint_mask
from gen4gen.repaint.photo_crop import render_photo
from gen4gen.repaint.photos import estimate_ground, estimate_light, scan, scene_phrase
from tests.helpers.photos import sky_over_ground
from tests.helpers.settings import backend


def test_any_folder_of_photos_with_bad_ones_one_line_each(tmp_path):
    (tmp_path / "kitchen").mkdir()
    Image.fromarray(sky_over_ground()).save(tmp_path / "kitchen" / "k1.jpg")
    Image.fromarray(sky_over_ground()).convert("L").save(tmp_path / "kitchen" / "grey.png")  # used, in grey
    Image.fromarray(sky_over_ground()).convert("CMYK").save(tmp_path / "kitchen" / "cmyk.jpg")  # converted
    (tmp_path / "kitchen" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    Image.new("RGB", (40, 30)).save(tmp_path / "kitchen" / "tiny.png")
    (tmp_path / "empty_scene").mkdir()
    # a photo at the top level named by its caption sidecar, one whose JSON sidecar is nonsense
    Image.fromarray(sky_over_ground(horizon=0.3)).save(tmp_path / "porch.jpg")
    (tmp_path / "porch.txt").write_text("on grandma's porch at dusk\nmore words", "utf-8")
    (tmp_path / "porch.json").write_text(json.dumps({"horizon": 0.55, "light": -0.5}), "utf-8")
    Image.fromarray(sky_over_ground()).save(tmp_path / "kitchen" / "k2.jpg")
    (tmp_path / "kitchen" / "k2.json").write_text('{"horizon": "high", "colour": 3}', "utf-8")
    Image.fromarray(sky_over_ground()).save(tmp_path / "nameless.jpg")
    lib = scan(tmp_path, max_pixels=70_000, min_side=64)  # the 320x240 photos are 76,800 px: "huge" for this run
    by_name = {p.path.name for p in lib.photos}
    assert by_name == set()  # every photo is over the limit, one line each
    assert sum("(io.max_pixels)" in line for line in lib.problems) == 5  # and nameless.jpg has no scene

    lib = scan(tmp_path, max_pixels=80_000_000, min_side=64)
    assert {p.path.name for p in lib.photos} == {"k1.jpg", "grey.png", "cmyk.jpg", "k2.jpg", "porch.jpg"}
    lines = {line.split(": ", 1)[0].rsplit("/", 1)[-1]: line for line in lib.problems}
    assert "unreadable photo" in lines["broken.jpg"] and "below the minimum side of 64 px" in lines["tiny.png"]
    assert "holds no photos" in lines["empty_scene"] and "no scene" in lines["nameless.jpg"]
    notes = {line.split(": ", 1)[0].rsplit("/", 1)[-1]: line for line in lib.notes}  # used, so not a problem
    assert "grayscale" in notes["grey.png"] and "CMYK photo: converted" in notes["cmyk.jpg"] and len(notes) == 2
    # every field that makes no sense is named, not only the first
    assert "sidecar ignored (horizon: Input should be a valid number" in lines["k2.json"]
    assert "colour: Extra inputs are not permitted" in lines["k2.json"]
    assert len(lib.problems) == 5  # one line per photo, folder or sidecar not used
    porch = lib.by_path(tmp_path / "porch.jpg")
    assert porch.scene == "on grandma's porch at dusk" and porch.phrase == "on grandma's porch at dusk"
    assert (porch.horizon, porch.light, porch.estimated) == (0.55, -0.5, ())  # the sidecar wins
    k2 = lib.by_path(tmp_path / "kitchen" / "k2.jpg")
    assert k2.scene == "kitchen" and k2.estimated == ("horizon", "light")  # nonsense sidecar: estimated instead


def test_horizon_and_light_estimated_from_the_photo():
    for horizon in (0.3, 0.45, 0.62):
        assert abs(estimate_ground(sky_over_ground(horizon=horizon)) - horizon) <= 0.03
    flat = np.full((120, 160, 3), 128, np.uint8)
    assert estimate_ground(flat) == 0.4  # no visible horizon: the default
    assert estimate_light(sky_over_ground(light=1.0), 0.42) > 0.5
    assert estimate_light(sky_over_ground(light=-1.0), 0.42) < -0.5
    assert abs(estimate_light(sky_over_ground(), 0.42)) < 0.1


def test_photo_crop_puts_its_horizon_on_the_layouts(tmp_path):
    from gen4gen.repaint.photos import Backdrop

    path = tmp_path / "field.png"
    Image.fromarray(sky_over_ground(w=400, h=300, horizon=0.5)).save(path)
    photo = Backdrop(path, "field", (400, 300), 0.5, 0.4)
    img, ground, light = render_photo(photo, (128, 128), target=0.35, blur=0)
    row = int(np.argmax(np.abs(np.diff(img[:, 64].astype(int).sum(-1)))))  # the sky / field edge
    assert abs(ground - 0.35) < 0.02 and abs(row / 128 - 0.35) < 0.03 and light == 0.4
    mirrored, _, light1 = render_photo(photo, (128, 128), target=0.35, variant=1, blur=0)
    assert light1 == -0.4 and not np.array_equal(mirrored, img)  # another crop, mirrored light


def test_scene_phrases_of_folder_names():
    assert [scene_phrase(s) for s in ("kitchen", "my_living_room", "on_the_beach", "beach", "kitchen-table")] == \
        ["in the kitchen", "in the living room", "on the beach", "at the beach", "on the kitchen table"]
    # the user's numbering is no part of the scene; names in any script keep their letters
    assert [scene_phrase(s) for s in ("Beach 2", "my-kitchen-2024", "room 101", "2024")] == \
        ["at the beach", "in the kitchen", "in the room", "in the 2024"]
    assert scene_words("prado_Wiese_草地") == ["prado", "wiese", "草地"] and scene_words("Café") == ["café"]


def test_sidecars_named_after_the_whole_file_name_are_read_and_stray_ones_and_nested_folders_said(tmp_path):
    (tmp_path / "garden" / "2023").mkdir(parents=True)
    Image.fromarray(sky_over_ground()).save(tmp_path / "sailboat.jpg")
    (tmp_path / "sailboat.jpg.txt").write_text("on the lake\n", "utf-8")  # photo.jpg.txt as well as photo.txt
    Image.fromarray(sky_over_ground()).save(tmp_path / "garden" / "g.png")
    (tmp_path / "garden" / "g.png.json").write_text('{"horizon": 0.62}', "utf-8")
    (tmp_path / "garden" / "sailbot.txt").write_text("at sea", "utf-8")  # a typo: matches no photo
    Image.fromarray(sky_over_ground()).save(tmp_path / "garden" / "2023" / "old.jpg")  # one level too deep
    lib = scan(tmp_path, max_pixels=80_000_000, min_side=64)
    assert lib.by_path(tmp_path / "sailboat.jpg").scene == "on the lake"
    g = lib.by_path(tmp_path / "garden" / "g.png")
    assert (g.scene, g.horizon, g.estimated) == ("garden", 0.62, ("light",))
    lines = {line.split(": ", 1)[0].rsplit("/", 1)[-1]: line for line in lib.problems}
    assert set(lines) == {"sailbot.txt", "2023"}
    assert "sidecar of no photo here, ignored (name it after its photo" in lines["sailbot.txt"]
    assert "folder inside the scene folder 'garden' ignored (scene folders are one level deep" in lines["2023"]


def test_16_bit_photos_are_used_grey_scaled_not_refused(tmp_path):
    import cv2

    grey8 = cv2.cvtColor(sky_over_ground(), cv2.COLOR_RGB2GRAY)
    (tmp_path / "field").mkdir()
    cv2.imwrite(str(tmp_path / "field" / "grey16.png"), grey8.astype(np.uint16) * 257)  # Pillow: mode I;16
    cv2.imwrite(str(tmp_path / "field" / "rgb16.png"), sky_over_ground()[..., ::-1].astype(np.uint16) * 257)
    lib = scan(tmp_path, max_pixels=80_000_000, min_side=64)
    assert lib.problems == [] and {p.path.name for p in lib.photos} == {"grey16.png", "rgb16.png"}
    assert [line.rsplit("/", 1)[-1] for line in lib.notes] == ["grey16.png: grayscale photo (I;16): used in grey"]
    grey = lib.by_path(tmp_path / "field" / "grey16.png")
    out = render_photo(grey, (grey8.shape[1], grey8.shape[0]), target=None, blur=0)[0]
    assert np.abs(out[..., 0].astype(int) - grey8).mean() < 2  # scaled from 16 bits, not clipped to white


def test_a_backgrounds_setting_that_is_a_file_or_missing_says_which(tmp_path):
    from gen4gen.errors import UserError
    from gen4gen.repaint.photos import library_for
    from gen4gen.settings import section
    from gen4gen.stage_settings import IOSettings, RepaintSettings
    from tests.conftest import make_cfg

    photo = tmp_path / "bg" / "beach.jpg"
    photo.parent.mkdir()
    Image.fromarray(sky_over_ground()).save(photo)
    in_folder = f"is a file; give the folder of photos it lies in (repaint.backgrounds={photo.parent})"
    for given, line in ((photo, in_folder),
                        (tmp_path / "nope", "does not exist; expected a folder of photos")):
        cfg = make_cfg(tmp_path, f"repaint.backgrounds={given}")
        with pytest.raises(UserError, match=re.escape(line)):
            library_for(section(cfg, "repaint", RepaintSettings), section(cfg, "io", IOSettings))


def test_forced_scene_by_its_words_only_when_one_scene_has_them():
    scenes = ["Beach 2", "my_living_room", "Lake 1", "lake_2", "草地"]
    assert [find_scene(n, scenes) for n in ("beach", "living room", "Lake 1", "lake", "草地")] == \
        ["Beach 2", "my_living_room", "Lake 1", None, "草地"]  # "lake": two scenes, refused with the list


def test_scenes_fit_by_meaning(tmp_path, monkeypatch):
    fit = SceneFit(minilm_embed(str(tmp_path)))
    scenes = ["kitchen", "living_room", "beach", "garage", "moon_surface", "city_street"]
    ranked = [s for s, _ in fit.rank(["cat", "mug"], scenes)]
    assert set(ranked[:2]) == {"kitchen", "living_room"}  # a pet and tableware share real scenes
    assert fit.rank(["astronaut"], scenes)[0][0] == "moon_surface"
    assert fit.rank(["surfboard"], scenes)[0][0] == "beach"  # a name the tables do not know
    assert fit.rank(["zorblax"], scenes)  # nonsense still gets scenes, never a refusal
    assert list((tmp_path / "text_embeddings").rglob("*.npz"))  # embeddings are cached on disk
    import gen4gen.encoders

    def no_model(*a, **k):
        raise AssertionError("a rerun must not load MiniLM")

    monkeypatch.setattr(gen4gen.encoders, "MiniLM", no_model)
    again = SceneFit(minilm_embed(str(tmp_path)))
    assert again.rank(["cat", "mug"], scenes) == fit.rank(["cat", "mug"], scenes)  # from the cache, no model


def test_scenes_that_fit_take_turns_weighted_by_fit(tmp_path):
    """A cat and a mug "share a kitchen or a living room" (README): with both folders, both are used (the living
    room scores 0.09 below the kitchen), the kitchen more often; scenes that do not fit (desert, beach, garden)
    never while fitting ones exist. Each scene's photos go in turn (``nth`` counts its samples)."""
    fit = SceneFit(minilm_embed(str(tmp_path)))
    scenes = ["Beach 2", "desert", "garden", "kitchen", "my_living_room"]
    picks = [fit.choose(["cat", "mug"], scenes, k) for k in range(30)]
    used = Counter(scene for scene, _, _ in picks)
    assert set(used) == {"kitchen", "my_living_room"}
    assert used["kitchen"] > used["my_living_room"] >= 5
    assert [scene for scene, _, _ in picks[:3]].count("my_living_room") == 1  # the default 3 samples hold both
    for scene in used:
        assert [nth for s, _, nth in picks if s == scene] == list(range(used[scene]))
    # the same answers asked in another order, by a fresh chooser (items run in any order, in shards)
    again = SceneFit(minilm_embed(str(tmp_path)))
    assert [again.choose(["cat", "mug"], scenes, k) for k in reversed(range(30))] == picks[::-1]
    # a set that fits none well still gets scenes: the best one at least
    assert fit.choose(["zorblax"], scenes, 0)[0] == fit.rank(["zorblax"], scenes)[0][0]


def _job(bg, ground, light=0.0, box=(40, 30, 40, 60), size=128):
    a = np.zeros((size, size), np.float32)
    x, y, w, h = box
    a[y:y + h, x:x + w] = 1.0
    rgb = np.zeros((size, size, 3), np.uint8)
    rgb[a > 0] = (200, 200, 200)
    return RepaintJob(rgb, a, repaint_mask((a * 255).astype(np.uint8), blur=4), bg, ground=ground, light=light)


def test_shadows_only_on_the_ground_and_away_from_the_light():
    bg = np.full((128, 128, 3), 150, np.uint8)
    ci = backend("inpainter", "classical", shadow=0.6, shadow_cast=0.3)
    left = ci([_job(bg, 0.5, light=1.0)])[0].astype(int).sum(-1)  # light from the right: shadow to the left
    right = ci([_job(bg, 0.5, light=-1.0)])[0].astype(int).sum(-1)
    feet = slice(90, 96)
    assert left[feet, 25:40].mean() < right[feet, 25:40].mean() - 15
    assert right[feet, 80:95].mean() < left[feet, 80:95].mean() - 15
    sky = ci([_job(bg, None)])[0]  # a background without ground: no shadow at all
    assert np.array_equal(sky[(_job(bg, None).alpha == 0)], bg[(_job(bg, None).alpha == 0)])
    high = ci([_job(bg, 0.95)])[0]  # feet above the ground line (on a wall): none either
    assert np.array_equal(high[:120][_job(bg, 0.95).alpha[:120] == 0], bg[:120][_job(bg, 0.95).alpha[:120] == 0])


def test_matched_light_moves_a_concept_toward_its_place_within_limits():
    dark = np.full((128, 128, 3), 40, np.uint8)
    rng = np.random.default_rng(0)
    noisy = np.clip(dark + rng.normal(0, 12, dark.shape), 0, 255).astype(np.uint8)
    job = _job(noisy, 0.5)
    inside = job.repaint == 0
    plain = backend("inpainter", "classical", shadow=0, grain=False)([job])[0].astype(float)
    lit = backend("inpainter", "classical", shadow=0, match_light=0.5, grain=False)([job])[0].astype(float)
    grain = backend("inpainter", "classical", shadow=0, grain=True)([job])[0].astype(float)
    assert np.array_equal(plain[inside], job.rgb[inside].astype(float))  # all off: exact
    drop = plain[inside].mean() - lit[inside].mean()
    assert 10 < drop < 50  # darker, by a limited share (at most 12 L units)
    assert grain[inside].std() > 4 * max(plain[inside].std(), 0.5)  # the photo's noise, which the concept lacked


def test_a_run_with_a_folder_of_photos_captions_the_photos_scene(tmp_path, caplog):
    from gen4gen.artefacts import Captions
    from gen4gen.paths import STAGE_DIRS
    from gen4gen.stages import s2_compose, s3_repaint, s4_caption
    from tests.conftest import make_cfg
    from tests.helpers.trees import fake_s1

    fake_s1(tmp_path / "stages", {"pets": {"cat": 1, "mug": 1}})
    bgs = tmp_path / "bg"
    for scene in ("living_room", "kitchen", "beach"):
        (bgs / scene).mkdir(parents=True)
        for k in range(2):
            Image.fromarray(sky_over_ground(horizon=0.4 + 0.1 * k, seed=k)).save(bgs / scene / f"{k}.jpg")
    (bgs / "beach" / "corrupt.jpg").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (bgs / "empty").mkdir()
    over = ("compose.size=[160,128]", "compose.num_samples=3", f"repaint.backgrounds={bgs}",
            "repaint.max_backgrounds=2")
    assert s2_compose.run(make_cfg(tmp_path, "stage=s2", *over)).done == 3
    s3 = s3_repaint.run(make_cfg(tmp_path, "stage=s3", *over))
    assert (s3.done, s3.failed) == (6, 0)
    assert s3.notes["background photos, folders or sidecars not used (one line each above)"] == 2
    said = [r.getMessage() for r in caplog.records if "background photo:" in r.getMessage()]
    assert sum("corrupt.jpg" in m for m in said) == 1 and len(said) == 2  # s2 and s3 both scan: said once
    assert s4_caption.run(make_cfg(tmp_path, "stage=s4", *over)).done == 6
    finals = sorted((tmp_path / "stages" / STAGE_DIRS["s3"]).glob("pets/*/*/meta.json"))
    photos = set()
    for meta_path in finals:
        meta = json.loads(meta_path.read_text())
        bg = meta["background"]
        folder = bg["source"].split("/")[-2]
        assert bg["kind"] == "photo" and bg["scene"] == folder and folder in ("kitchen", "living_room")
        photos.add((meta_path.parent.parent.name, bg["source"]))
        caps = Captions.load(tmp_path / "stages" / STAGE_DIRS["s4"] / meta_path.parent.relative_to(
            tmp_path / "stages" / STAGE_DIRS["s3"]))
        assert caps.detailed.rstrip(".").endswith(bg["phrase"]) or bg["phrase"] in caps.detailed
        assert bg["phrase"] == "in the " + folder.replace("_", " ")
    assert len(photos) == 6  # the two variants of a composition use different photos


def test_grain_blurs_a_sharp_concept_to_the_softness_of_an_upscaled_photo():
    """The background photos are small crops upscaled 2-10x: a concept pasted at its own sharpness looks cut
    out. ``grain`` measures the plate's softness at the canvas' scale (``blur_scale``, px) around each object and
    blurs the object, its outline included, to match it, however soft the plate is (the old ratio of Laplacian
    spreads, capped at a 2 px blur, left it at 2.0 and 2.31 against the plate's 3.1 and 4.75 on the 8x and 12x
    plates here)."""
    from gen4gen.repaint.light import blur_scale

    rng = np.random.default_rng(1)
    size, box = 256, (64, 48, 128, 160)
    x, y, w, h = box
    a = np.zeros((size, size), np.float32)
    a[y:y + h, x:x + w] = 1.0
    rgb = np.zeros((size, size, 3), np.uint8)  # a sharp concept
    checks = sum(np.kron(rng.uniform(-1, 1, (h // c, w // c)), np.ones((c, c))) for c in (4, 16, 32))
    rgb[y:y + h, x:x + w] = (130 + 30 * checks)[..., None].astype(np.uint8)  # detail at several scales, as a photo
    inner = np.zeros((size, size), bool)
    inner[y + 20:y + h - 20, x + 20:x + w - 20] = True  # the concept away from its (softened) outline
    outline = np.zeros((size, size), bool)  # 4 px either side of its left and right outline
    outline[y + 20:y + h - 20, x - 4:x + 4] = outline[y + 20:y + h - 20, x + w - 4:x + w + 4] = True
    ci = backend("inpainter", "classical", shadow=0, feather=0.0)
    for up in (4, 6, 8, 12):
        small = rng.integers(30, 230, (size // up, size // up, 3)).astype(np.uint8)
        plate = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
        job = RepaintJob(rgb, a, repaint_mask((a * 255).astype(np.uint8), blur=4), plate, ground=None)
        out = cv2.cvtColor(ci([job])[0], cv2.COLOR_RGB2GRAY)
        plate_scale = blur_scale(cv2.cvtColor(plate, cv2.COLOR_RGB2GRAY), a == 0)
        before = blur_scale(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), inner)
        after = blur_scale(out, inner)
        assert before < 0.8 * plate_scale  # the test's premise: the pasted concept is sharper
        assert abs(after - plate_scale) <= 0.15 * plate_scale, (up, before, after, plate_scale)
        # and its outline as soft (``soften``): a blurred inside in a crisp outline read 1.4-1.8 on every plate
        assert abs(blur_scale(out, outline) - plate_scale) <= 0.15 * plate_scale, up
    # a plain backdrop (a studio sweep: a smooth gradient) has no edges to say how soft it is: no blur
    sweep = np.repeat(np.linspace(150, 220, size, dtype=np.float32)[:, None], size, 1)
    plate = np.dstack([sweep, sweep - 10, sweep + 5]).astype(np.uint8)
    job = RepaintJob(rgb, a, repaint_mask((a * 255).astype(np.uint8), blur=4), plate, ground=None)
    assert blur_scale(cv2.cvtColor(plate, cv2.COLOR_RGB2GRAY), a == 0) > 1.5 * before  # what it would be matched to
    out = cv2.cvtColor(ci([job])[0], cv2.COLOR_RGB2GRAY)
    assert abs(blur_scale(out, inner) - before) < 0.05 * before
    # a bare wall around the concept in a soft photo (a desk's wall over the books): the whole photo says how soft
    small = rng.integers(30, 230, (size // 6, size // 6, 3)).astype(np.uint8)
    plate = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    plate[y - 30:y + h + 30, x - 30:x + w + 30] = (180, 175, 170)
    whole = blur_scale(cv2.cvtColor(plate, cv2.COLOR_RGB2GRAY), a == 0)  # the wall's ring alone reads nothing
    job = RepaintJob(rgb, a, repaint_mask((a * 255).astype(np.uint8), blur=4), plate, ground=None)
    out = cv2.cvtColor(ci([job])[0], cv2.COLOR_RGB2GRAY)
    assert abs(blur_scale(out, inner) - whole) <= 0.2 * whole, (blur_scale(out, inner), whole)
