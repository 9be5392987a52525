"""s3 building blocks on the CPU: Gen4Gen mask, background sources, prompt, the classical backend."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from gen4gen.artefacts import Layout
from gen4gen.images import BadImage
from gen4gen.repaint import RepaintJob
from gen4gen.repaint.backgrounds import BackgroundSource, plan_sources, procedural, render, style_for
from gen4gen.repaint.mask import repaint_mask
from gen4gen.repaint.prompt import build_prompt
from tests.helpers.settings import backend
from tests.helpers.tree import blob


def _square_job(bg_colour=(40, 160, 50), fg_colour=(200, 40, 40), size=96, blur=4, box=(28, 20, 40, 60)):
    a = np.zeros((size, size), np.float32)
    x, y, w, h = box
    a[y:y + h, x:x + w] = 1.0
    rgb = np.zeros((size, size, 3), np.uint8)
    rgb[a > 0] = fg_colour
    bg = np.empty((size, size, 3), np.uint8)
    bg[:] = bg_colour
    return RepaintJob(rgb, a, repaint_mask((a * 255).astype(np.uint8), blur=blur), bg)


# ---------------------------------------------------------------- mask
def test_mask_is_gen4gens_recipe():
    """Same numbers as Gen4Gen's own code path: PIL BoxBlur, skimage rescale_intensity(127.5..255), invert."""
    from skimage import exposure

    m8 = (blob(80, 96, (10, 10, 60, 50), soft=1.0) * 255 + 0.5).astype(np.uint8)
    ref = np.asarray(Image.fromarray(m8).filter(ImageFilter.BoxBlur(5)), np.float64)
    ref = 255.0 - exposure.rescale_intensity(ref, in_range=(127.5, 255), out_range=(0, 255))
    ours = repaint_mask(m8, blur=5, solid=1.0) * 255.0
    assert np.abs(ours - ref).max() <= 2.5  # PIL rounds the blur to uint8 before stretching (x2 on the stretch)
    # background fully repainted, interior kept, a band of partial values just inside the outline
    assert ours[m8 == 0].min() > 254 and ours[40, 40] == 0
    band = (ours > 0) & (ours < 255)
    assert band.any() and (m8[band] > 0).all()


def test_mask_solid_plateau_keeps_interiors_exact():
    m8 = np.zeros((64, 64), np.uint8)
    m8[10:54, 10:54] = 253  # Gen4Gen's own s2 masks plateau at 253
    assert (repaint_mask(m8, blur=3, solid=1.0) > 0).all()  # Gen4Gen's rule: nothing stays exact
    kept = repaint_mask(m8, blur=3, solid=0.98) == 0
    assert kept[20:44, 20:44].all() and not kept[:10].any()


def test_mask_rejects_bad_window():
    with pytest.raises(ValueError, match="low < high"):
        repaint_mask(np.zeros((8, 8), np.uint8), low=200, high=100)


# ---------------------------------------------------------------- classical
def test_classical_keeps_interiors_and_repaints_background():
    job = _square_job()
    out = backend("inpainter", "classical")([job])[0]
    assert out.shape == (96, 96, 3) and out.dtype == np.uint8
    keep = job.repaint == 0
    assert keep.sum() > 500 and np.array_equal(out[keep], job.rgb[keep])
    far = np.zeros_like(keep)
    far[:10] = True  # top rows: far from the object, above any shadow
    assert np.array_equal(out[far], job.background[far])


def test_classical_seam_gradient_is_bounded():
    """A hard paste jumps by the full colour difference at the outline; the feathered edge spreads it."""
    job = _square_job()
    step = int(np.abs(np.subtract((200, 40, 40), (40, 160, 50))).max())  # 160 per channel
    naive = job.background.copy()
    naive[job.alpha > 0] = job.rgb[job.alpha > 0]
    out = backend("inpainter", "classical", shadow=0.0, feather=6.0)([job])[0].astype(int)
    rows = slice(30, 70)  # rows crossing the left and right edges, away from corners
    grad = np.abs(np.diff(out[rows], axis=1)).max()
    assert np.abs(np.diff(naive[rows].astype(int), axis=1)).max() == step
    assert grad <= step * 0.35, grad


def test_harmonisation_moves_edge_colours_toward_the_background():
    job = _square_job(bg_colour=(30, 60, 200), fg_colour=(180, 180, 180), blur=6)
    band = (job.repaint > 0) & (job.alpha > 0)
    plain = backend("inpainter", "classical", harmonize=0.0, feather=0.0, shadow=0.0)([job])[0].astype(float)
    tuned = backend("inpainter", "classical", harmonize=0.8, feather=0.0, shadow=0.0)([job])[0].astype(float)
    blue = lambda img: (img[band][:, 2] - img[band][:, 0]).mean()  # noqa: E731 - bluer = closer to the background
    assert blue(tuned) > blue(plain) + 10
    keep = job.repaint == 0
    assert np.array_equal(tuned[keep], job.rgb[keep])


def test_a_matte_keeps_its_own_soft_edge_and_a_hard_mask_is_feathered():
    """alpha * F + (1 - alpha) * B in the soft edge of a matte (its colour the estimated foreground); a binary
    mask still gets the inward feather ramp."""
    size, fg, bgc = 96, np.array([200, 40, 40]), np.array([40, 160, 50])
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - 48, xx - 48)
    for soft, matted in ((4.0, True), (0.0, False)):
        a = np.clip((30 - r) / soft, 0, 1) if soft else (r < 30).astype(np.float32)
        a = np.round(a * 255).astype(np.float32) / 255.0
        rgb = np.zeros((size, size, 3), np.uint8)
        rgb[a > 0] = fg
        bg = np.empty((size, size, 3), np.uint8)
        bg[:] = bgc
        job = RepaintJob(rgb, a.astype(np.float32), repaint_mask((a * 255).astype(np.uint8), blur=4), bg)
        # the compositing alone: no haze fade-out (its own test is below)
        out = backend("inpainter", "classical", feather=6.0, shadow=0.0, haze=0.0)([job])[0].astype(float)
        unfeathered = backend("inpainter", "classical", feather=0.0, shadow=0.0, haze=0.0)([job])[0].astype(float)
        band = (a > 0.05) & (a < 0.95)
        if matted:
            ideal = a[..., None] * fg + (1 - a[..., None]) * bgc
            assert band.sum() > 300 and np.abs(out[band] - ideal[band]).max() <= 1.0
            np.testing.assert_array_equal(out, unfeathered)
        else:  # the outline of a binary mask is ramped toward the background
            assert not band.any()
            rim = (a == 1) & (r > 29)
            assert rim.sum() > 50
            assert (np.abs(out[rim] - fg).sum(1) > np.abs(unfeathered[rim] - fg).sum(1) + 20).all()


def test_faint_haze_far_from_the_subject_fades_and_its_soft_edge_stays():
    """A disc (radius 30, size ~53) with a 3-px soft edge and a faint veil (alpha 0.2) from 8 to 20 px beyond it:
    with ``haze=0.02`` (about 1 px) the veil is gone and the edge is untouched."""
    size, fg, bgc = 128, np.array([200, 40, 40]), np.array([40, 160, 50])
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - 64, xx - 64)
    a = np.clip((30 - r) / 3, 0, 1)
    veil = (r > 38) & (r < 50) & (xx > 64)
    a[veil] = 0.2
    a = (np.round(a * 255) / 255).astype(np.float32)
    rgb = np.zeros((size, size, 3), np.uint8)
    rgb[a > 0] = fg
    bg = np.empty((size, size, 3), np.uint8)
    bg[:] = bgc
    job = RepaintJob(rgb, a, repaint_mask((a * 255).astype(np.uint8), blur=4), bg)
    out = backend("inpainter", "classical", shadow=0.0, haze=0.02)([job])[0].astype(float)
    np.testing.assert_array_equal(out[veil], np.tile(bgc, (int(veil.sum()), 1)))
    edge = (a > 0.05) & (a < 0.95) & (r < 31)
    ideal = a[..., None] * fg + (1 - a[..., None]) * bgc
    assert edge.sum() > 300 and np.abs(out[edge] - ideal[edge]).max() <= 1.0
    kept = backend("inpainter", "classical", shadow=0.0, haze=0.0)([job])[0].astype(float)
    assert np.abs(kept[veil] - ideal[veil]).max() <= 1.0


def test_contact_shadow_only_under_standing_objects():
    ci = backend("inpainter", "classical", shadow=0.6)
    standing = _square_job(box=(28, 30, 40, 60))  # bottom at 90 of 96: stands on the ground
    floating = _square_job(box=(28, 4, 40, 30))  # bottom at 34: in the sky
    s_out = ci([standing])[0].astype(int)
    f_out = ci([floating])[0].astype(int)
    bg = standing.background.astype(int)
    feet = (slice(91, 95), slice(34, 62))
    assert (s_out[feet].sum(-1) < bg[feet].sum(-1) - 20).all()  # darker just under the feet
    below = (slice(40, 50), slice(34, 62))
    assert np.array_equal(f_out[below], bg[below])  # nothing under a floating object


def test_poisson_blending_keeps_interiors():
    job = _square_job(size=128, box=(30, 30, 60, 70), blur=4)
    out = backend("inpainter", "classical", poisson=True)([job])[0]
    keep = job.repaint == 0
    assert np.array_equal(out[keep], job.rgb[keep])
    assert not np.array_equal(out, backend("inpainter", "classical", poisson=False)([job])[0])


# ---------------------------------------------------------------- backgrounds
@pytest.mark.parametrize("phrase,style", [("in the garden", "garden"), ("at the beach", "beach"),
                                          ("on the kitchen table", "kitchen"), ("on a sofa", "room"),
                                          ("in the underwater cave", "underwater"), ("on the sea", "water"),
                                          ("over the mountains", "snow"), ("somewhere nice", "studio"),
                                          ("in the desert", "desert"), ("on the savanna", "savanna"),
                                          ("on a farm", "farm"), ("on the surface of the moon", "moon"),
                                          ("under a starry sky", "night"), ("in a parking lot", "city")])
def test_style_from_phrase(phrase, style):
    assert style_for(phrase) == style


def test_procedural_backgrounds_look_like_their_scene():
    def mean(img, rows):
        return img[rows].reshape(-1, 3).mean(0)

    garden = procedural("garden", 128, 128, np.random.default_rng(0)).astype(float)
    top, bottom = mean(garden, slice(0, 20)), mean(garden, slice(100, 128))
    assert top[2] > top[0] and bottom[1] > bottom[0] and bottom[1] > bottom[2]  # blue sky, green grass
    beach = mean(procedural("beach", 128, 128, np.random.default_rng(0)).astype(float), slice(110, 128))
    assert beach[0] > beach[2] + 40  # sand
    table = mean(procedural("kitchen", 128, 128, np.random.default_rng(0)).astype(float), slice(100, 128))
    assert table[0] > table[1] > table[2]  # brown wood
    a = procedural("garden", 64, 48, np.random.default_rng(3))
    assert a.shape == (48, 64, 3) and np.array_equal(a, procedural("garden", 64, 48, np.random.default_rng(3)))
    assert not np.array_equal(a, procedural("garden", 64, 48, np.random.default_rng(4)))


def test_noise_background_is_uniform_and_seeded():
    src = BackgroundSource("noise", "in the garden")
    a = render(src, (64, 32), np.random.default_rng(1))
    assert a.shape == (32, 64, 3) and a.dtype == np.uint8
    assert 100 < a.mean() < 155 and a.std() > 60
    assert np.array_equal(a, render(src, (64, 32), np.random.default_rng(1)))


def _photo(path, colour, size=(120, 80)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _layout(concepts=("cat",), **fields) -> Layout:
    """A valid ``layout.json`` of ``concepts`` (one 8x8 box each) with ``fields``."""
    objects = [{"name": f"{c}_{k}", "concept": c, "box": [0, 0, 8, 8]} for k, c in enumerate(concepts)]
    return Layout.build({"size": [64, 64], "objects": objects, **fields})


def test_photo_library_scenes_variants_and_any_scene_when_none_matches(tmp_path):
    from gen4gen.repaint.photos import scan

    _photo(tmp_path / "garden" / "g1.jpg", (0, 200, 0))
    _photo(tmp_path / "garden" / "g2.png", (0, 180, 0))
    _photo(tmp_path / "beach" / "b1.jpg", (230, 210, 160))
    _photo(tmp_path / "my_living-room" / "r1.jpg", (150, 100, 60))
    lib = scan(tmp_path, max_pixels=80_000_000, min_side=64)
    assert sorted(lib.scenes) == ["beach", "garden", "my_living-room"] and lib.problems == []
    layout = _layout(background_prompt="in a garden", scenes=["in a garden", "at the beach"])
    srcs = plan_sources(layout, kind="photo", max_backgrounds=3, rng=np.random.default_rng(0), library=lib)
    # variants: the other photo of the scene, then another crop; the phrase is always the photo's scene
    assert [s.scene for s in srcs] == ["garden"] * 3 and [s.phrase for s in srcs] == ["in the garden"] * 3
    assert len({s.source for s in srcs[:2]}) == 2 and [s.crop for s in srcs] == [0, 0, 1]
    room = plan_sources(_layout(background_prompt="in the living room"), kind="photo", max_backgrounds=1,
                        rng=np.random.default_rng(0), library=lib)
    assert room[0].source.endswith("r1.jpg") and room[0].phrase == "in the living room"
    img = render(room[0], (64, 64), np.random.default_rng(0))
    assert img.shape == (64, 64, 3) and abs(int(img[32, 32, 0]) - 150) <= 3  # covers the frame, same colour
    # s2 chose a photo: it is v0 whatever the phrases say
    picked = _layout(background_prompt="in the garden", backdrop={"photo": str(tmp_path / "beach/b1.jpg")})
    chosen = plan_sources(picked, kind="photo", max_backgrounds=1, rng=np.random.default_rng(0), library=lib)
    assert chosen[0].source.endswith("b1.jpg") and chosen[0].phrase == "at the beach"
    # no scene matches: still a photo (never a refusal), with a note saying so
    none = plan_sources(_layout(background_prompt="in the galaxy"), kind="photo", max_backgrounds=2,
                        rng=np.random.default_rng(0), library=lib)
    assert [s.kind for s in none] == ["photo", "photo"] and "galaxy" in none[0].note


def test_bad_photo_is_an_item_failure(tmp_path):
    bad = tmp_path / "garden" / "broken.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"<!doctype html><html>not a photo</html>")
    with pytest.raises(BadImage, match="HTML"):
        render(BackgroundSource("photo", "in the garden", str(bad)), (32, 32), np.random.default_rng(0))


# ---------------------------------------------------------------- prompt
def test_prompt_names_the_objects_and_the_scene():
    objs = ("cat", "dog", "dog", "houseplant")
    assert build_prompt(_layout(objs), "in the garden") == \
        "a realistic photo of a cat, two dogs and a houseplant in the garden"
    objs = ("teddy_bear", "teddy_bear", "apple", "fox", "fox", "puppy", "puppy")
    assert build_prompt(_layout(objs), "on a sofa") == \
        "a realistic photo of two teddy bears, an apple, two foxes and two puppies on a sofa"
    assert build_prompt(_layout(("cat", "lion")), "in a garden", "{objects}, {background}") == \
        "a cat and a lion, in a garden"
    # the article follows the sound; plurals as in captions
    objs = ("unicorn", "hourglass", "mouse", "mouse")
    assert build_prompt(_layout(objs), "in a meadow") == \
        "a realistic photo of a unicorn, an hourglass and two mice in a meadow"


def test_procedural_horizon_stays_above_the_objects_feet():
    from gen4gen.repaint.backgrounds import feet_line

    mask = np.zeros((100, 120), np.uint8)
    mask[10:35, 10:30] = 255  # the highest feet, at 35% of the height
    mask[40:90, 60:100] = 255
    mask[0:2, 0:2] = 255  # a speck: too small to count
    assert feet_line(mask) == pytest.approx(0.35)
    assert feet_line(np.zeros((10, 10), np.uint8)) is None
    for seed in range(3):
        free = procedural("beach", 128, 128, np.random.default_rng(seed)).astype(int)
        held = procedural("beach", 128, 128, np.random.default_rng(seed), horizon_max=0.35).astype(int)
        row = int(0.35 * 128) + 1  # just below the feet: sand, not sky or sea, once the horizon is held up
        assert free[row, :, 2].mean() > free[row, :, 0].mean()  # sky there by default
        assert held[row, :, 0].mean() > held[row, :, 2].mean() + 30  # sand


def test_harmonisation_is_per_object():
    """Each object's edge moves toward its own surroundings: blue on the left, red on the right."""
    size = 128
    a = np.zeros((size, size), np.float32)
    a[30:100, 10:50] = 1.0
    a[30:100, 78:118] = 1.0
    rgb = np.zeros((size, size, 3), np.uint8)
    rgb[a > 0] = (160, 160, 160)
    bg = np.zeros((size, size, 3), np.uint8)
    bg[:, :64] = (30, 40, 210)
    bg[:, 64:] = (210, 40, 30)
    job = RepaintJob(rgb, a, repaint_mask((a * 255).astype(np.uint8), blur=6), bg)
    out = backend("inpainter", "classical", harmonize=0.8, feather=0.0, shadow=0.0)([job])[0].astype(int)
    band = (job.repaint > 0) & (a > 0)
    left, right = band.copy(), band.copy()
    left[:, 64:] = False
    right[:, :64] = False
    assert (out[left][:, 2] - out[left][:, 0]).mean() > 20  # bluer than grey
    assert (out[right][:, 0] - out[right][:, 2]).mean() > 20  # redder than grey


def test_every_phrase_the_planner_can_choose_is_drawn_as_what_it_says():
    """Phrase -> style by its words, and the pixels of that style look like it (colour statistics of the
    sky, the strip under the horizon where a beach has its sea, and the ground): a desert has no sea."""
    from gen4gen.layout.scenes import STYLE_PHRASES, STYLE_WORDS
    from tests.helpers.background_signatures import looks_like

    for style, phrases in STYLE_PHRASES.items():
        assert [style_for(p) for p in phrases] == [style] * len(phrases)
    seen = {}
    for style in STYLE_WORDS:
        for seed in range(24):
            hz = 0.3 + 0.2 * (seed % 12) / 11
            img = procedural(style, 160, 128 if seed % 2 else 160, np.random.default_rng(seed), horizon=hz)
            seen[(style, seed)] = looks_like(img, hz)
    assert {k: v for k, v in seen.items() if v != k[0]} == {}
    beach, desert = (procedural(s, 128, 128, np.random.default_rng(1), horizon=0.4) for s in ("beach", "desert"))
    strip = slice(int(0.41 * 128), int(0.46 * 128))
    assert beach[strip, :, 2].mean() > beach[strip, :, 0].mean() + 20  # the sea behind the sand
    assert desert[strip, :, 2].mean() < desert[strip, :, 0].mean() - 40  # sand to the horizon


def test_render_uses_the_layouts_horizon():
    a = render(BackgroundSource("procedural", "in the garden", "garden"), (128, 128), np.random.default_rng(0),
               horizon=0.3)
    b = render(BackgroundSource("procedural", "in the garden", "garden"), (128, 128), np.random.default_rng(0),
               horizon=0.5)
    sky_a, sky_b = a[:, :, 2].astype(int) - a[:, :, 1], b[:, :, 2].astype(int) - b[:, :, 1]
    row = int(0.4 * 128)  # grass at 40 % of the height under a 0.3 horizon, still sky under a 0.5 one
    assert sky_a[row + 4].mean() < 0 < sky_b[row - 4].mean()


def test_salient_share_tells_a_photo_with_an_animal_from_plain_scenery():
    """Where the concepts will stand: drawn scenery (horizons, shorelines, table edges) scores ~0, a real photo
    with a dog in the middle scores above repaint.max_salient (0.12)."""
    from gen4gen.images import read_image
    from gen4gen.layout.scenes import STYLE_WORDS
    from gen4gen.repaint.backgrounds import cover, salient_share
    from tests.conftest import shared

    where = np.zeros((256, 320), bool)
    where[140:240, 60:260] = True
    for style in STYLE_WORDS:
        for k in range(4):
            bg = procedural(style, 320, 256, np.random.default_rng(k), horizon=0.3 + 0.05 * k)
            assert salient_share(bg, where) < 0.02, style
    dog = cover(read_image(shared("segmentation", "gen4gen", "images", "dog_01.jpg")), 320, 256)
    assert salient_share(dog, where) > 0.12
