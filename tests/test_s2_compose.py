"""The composer: exact pasted pixels, disjoint instance masks that add up to the union, tight boxes."""
import cv2
import numpy as np
import pytest

from gen4gen.errors import ItemFailed
from gen4gen.layout.compose import Source, load_cutout, side_room
from gen4gen.layout.schema import ConceptCount, Plan, PlacedBox, PlanRequest, depth_order
from tests.helpers.settings import backend, composer_of
from tests.helpers.trees import fake_s1

SIZE = (640, 480)


def sources(tmp_path, soft=False):
    paths = fake_s1(tmp_path, {"pets": {"cat": 2, "dog": 2, "cup": 1}}, size=(300, 260), soft=soft)
    out = {}
    for p in paths:
        concept = p.parent.parent.name
        out.setdefault(concept, []).append(Source(f"pets/{concept}/{p.parent.name}", p))
    return out


def heuristic_layout(seed, names=("cat", "dog", "cup"), counts=None):
    counts = counts or {}
    r = PlanRequest(tuple(ConceptCount(n, counts.get(n, 1)) for n in names), SIZE, seed)
    return backend("layout", "heuristic", max_overlap=0.3).plan(r)


def test_pasted_pixels_equal_the_scaled_source(tmp_path):
    src = sources(tmp_path)
    composer = composer_of(tmp_path, "compose.augment.max_rotation=0", "compose.min_visible=0.3")
    checked, flips = 0, set()
    for seed in range(4):
        comp = composer.compose(heuristic_layout(seed, counts={"dog": 2}), src, np.random.default_rng(seed))
        for obj in comp.objects:
            rgb, alpha = load_cutout(obj["source_path"])
            x, y, w, h = obj["placed_box"]
            assert w <= alpha.shape[1]  # a downscale (area interpolation) or, at the same size, no resize
            exp_rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
            exp_a = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_AREA)
            flips.add(obj["transform"]["flip"])
            if obj["transform"]["flip"]:  # mirrored after scaling
                exp_rgb, exp_a = exp_rgb[:, ::-1], exp_a[:, ::-1]
            box = comp.layout.box_of(obj["name"]).box
            bw, bh = box[2:]
            ch, cw = alpha.shape
            room = side_room(box, [b.box for b in comp.layout.boxes if b.name != obj["name"]]) - 2 * 0.03 * SIZE[0]
            widen = min(0.5, max(0.0, 2 * room / bw))  # wider than the box only into free room beside it
            assert obj["transform"]["scale"] == pytest.approx(
                min((bw * bh / (cw * ch)) ** 0.5, bh / ch, (1 + widen) * bw / cw), rel=0.01)
            mine = comp.instances[obj["name"]][y:y + h, x:x + w] > 0
            solid = (exp_a == 255) & mine
            assert solid.sum() > 0.5 * (exp_a == 255).sum()
            np.testing.assert_array_equal(comp.image[y:y + h, x:x + w][solid], exp_rgb[solid])
            checked += int(solid.sum())
    assert checked > 10_000 and flips == {True, False}


@pytest.mark.parametrize("soft", [False, True])
def test_instance_masks_disjoint_union_is_mask_and_boxes_tight(tmp_path, soft):
    src = sources(tmp_path, soft=soft)
    composer = composer_of(tmp_path, "compose.min_visible=0.3")
    for seed in range(3):
        comp = composer.compose(heuristic_layout(seed, counts={"cat": 2}), src, np.random.default_rng(seed))
        stack = np.stack(list(comp.instances.values())).astype(np.int32)
        assert ((stack > 0).sum(0) <= 1).all()  # disjoint
        np.testing.assert_array_equal(stack.sum(0), comp.mask)  # union == mask.png
        np.testing.assert_array_equal(comp.rgba[..., 3], comp.mask)
        assert (comp.image[comp.mask == 0] == 0).all()  # black where nothing was pasted
        if soft:
            assert ((comp.mask > 0) & (comp.mask < 255)).any()
        for obj in comp.objects:
            ys, xs = np.nonzero(comp.instances[obj["name"]])
            assert obj["box"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert obj["visible_fraction"] >= 0.3
        assert sorted(o["z"] for o in comp.objects) == list(range(len(comp.objects)))


def test_instances_of_one_concept_use_different_photos(tmp_path):
    src = sources(tmp_path)
    comp = composer_of(tmp_path, "compose.min_visible=0.3").compose(heuristic_layout(1, counts={"cat": 2}), src,
                                                                 np.random.default_rng(0))
    cats = [o["source"] for o in comp.objects if o["concept"] == "cat"]
    assert len(set(cats)) == 2


def stacked_layout():
    boxes = [PlacedBox("cat", 0, [100, 100, 300, 300]), PlacedBox("dog", 0, [110, 110, 300, 300])]
    return Plan(size=SIZE, boxes=boxes, paste_order=depth_order(boxes), scenes=["a", "b", "c"],
                  background_prompt="a", planner="llm", seed=0)


def test_hidden_instance_is_resampled_then_fails_with_a_reason(tmp_path):
    src = sources(tmp_path)
    composer = composer_of(tmp_path, "compose.augment.max_shift=0", "compose.augment.max_rotation=0",
                           "compose.max_attempts=3")
    with pytest.raises(ItemFailed, match=r"min_visible.*3 attempts.*cat_0 keeps"):
        composer.compose(stacked_layout(), src, np.random.default_rng(0))
    # with a re-planner (the heuristic's case) the second draw is accepted
    good = heuristic_layout(5, names=("cat", "dog"))
    comp = composer.compose(stacked_layout(), src, np.random.default_rng(0), replan=lambda attempt: good)
    assert comp.attempts == 2 and len(comp.rejected) == 1 and "cat_0 keeps" in comp.rejected[0]
    assert all(o["visible_fraction"] >= 0.6 for o in comp.objects)


def test_empty_cutout_is_an_item_failure(tmp_path):
    paths = fake_s1(tmp_path, {"s": {"cat": 1}}, empty={("s", "cat")})
    with pytest.raises(ItemFailed, match="empty mask"):
        load_cutout(paths[0])


def test_cutout_is_cropped_to_the_object_not_to_faint_haze(tmp_path):
    from gen4gen.io import png_bytes, write_atomic

    rgba = np.zeros((400, 300, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[100:300, 120:160, 3] = 255  # a tall thin object (a rocket)
    rgba[:, :, 3] = np.maximum(rgba[:, :, 3], 6)  # faint saliency haze over the whole photo
    write_atomic(tmp_path / "cutout.png", png_bytes(rgba))
    rgb, alpha = load_cutout(tmp_path / "cutout.png")
    h, w = alpha.shape
    assert 200 <= h <= 210 and 40 <= w <= 50  # the object's box plus a small margin for its soft edge
    assert (alpha >= 128).sum() == 200 * 40


def test_occlusion_share_min_visible_and_exact_masks_over_many_samples(tmp_path):
    """compose.occlusion through planner and composer: the share of compositions in which a nearer instance
    hides part of a farther one follows the setting, every instance keeps min_visible, masks stay exact."""
    from gen4gen.layout.compose import with_boxes
    from gen4gen.layout.plausibility import occluded

    src = sources(tmp_path, soft=True)
    planner = backend("layout", "heuristic", occlusion=0.3)
    composer = composer_of(tmp_path, "compose.augment.max_rotation=3", "compose.augment.max_shift=0.01")
    n, hidden = 60, 0
    for k in range(n):
        r = PlanRequest((ConceptCount("cat"), ConceptCount("dog"), ConceptCount("cup")), SIZE, 100 + k, sample=k)
        layout = planner.plan(r)
        comp = composer.compose(layout, src, np.random.default_rng(k), replan=lambda a, r=r, lay=layout: with_boxes(
            lay, planner.plan(r.reseeded(r.seed + 7919 * a), ratios=lay.size_ratios, scenes=lay.scenes)))
        hidden += occluded(comp.objects)
        assert all(o["visible_fraction"] >= 0.6 for o in comp.objects)
        if not comp.layout.occluding:  # no planned overlap: nothing hidden
            assert not occluded(comp.objects, threshold=0.999), (k, comp.objects)
        stack = np.stack(list(comp.instances.values())).astype(np.int32)
        np.testing.assert_array_equal(stack.sum(0), comp.mask)
        for obj in comp.objects:
            ys, xs = np.nonzero(comp.instances[obj["name"]])
            assert obj["box"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    assert abs(hidden / n - 0.3) <= 0.05, hidden  # 18 of 60 today


def test_a_cutout_shaped_unlike_its_box_keeps_the_boxs_area_not_its_width():
    from gen4gen.layout.compose import fit_scale

    # a lying dog (2.5:1) in a box planned for a sitting one (1:1, 200 px): as large, no taller, <= 1.5x as wide
    s = fit_scale(500, 200, 200, 200, 0.5, 1024)
    assert s * 200 <= 200 and s * 500 <= 300 + 1e-9 and (s * 500) * (s * 200) >= 0.75 * 200 * 200
    assert fit_scale(100, 100, 200, 200, 0.5, 1024) == 2.0  # same shape: fills the box exactly
    assert fit_scale(100, 400, 200, 200, 0.5, 1024) == 0.5  # taller than the box: height-limited


def _red_disc_on_white(size=120, radius=40, soft=6):
    """A red disc with a ``soft``-px linear alpha ramp, cut from a photo with a white background: the soft edge
    holds the estimated foreground (red, as s1 stores it), the transparent pixels the old photo (white)."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2 + 0.5, xx - size / 2 + 0.5)
    alpha = (np.clip((radius - r) / soft, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    rgb = np.full((size, size, 3), 255, np.uint8)
    rgb[alpha > 0] = (255, 0, 0)
    return rgb, alpha


def test_resize_is_premultiplied_so_the_soft_edge_keeps_the_foreground_colour():
    from gen4gen.layout.compose import resize

    rgb, alpha = _red_disc_on_white()
    small, a = resize(rgb, alpha, 30, 30)
    band = (a > 0) & (a < 255)
    assert band.sum() >= 40
    # every pixel the subject covers is the foreground's red: nothing of the white photo is averaged in
    np.testing.assert_array_equal(small[a > 0], np.tile([255, 0, 0], ((a > 0).sum(), 1)))
    # over a white background the band is exactly alpha * red + (1 - alpha) * white: no dark or pale fringe
    over = small * (a[..., None] / 255.0) + 255.0 * (1 - a[..., None] / 255.0)
    np.testing.assert_allclose(over[band][:, 1], 255.0 * (1 - a[band] / 255.0), atol=1e-9)
    # the straight resize this replaces pulled the white in: pink rims
    plain = cv2.resize(rgb, (30, 30), interpolation=cv2.INTER_AREA)
    assert plain[band][:, 1].max() > 60
    # the alpha is the area average of the mask, as before
    assert np.abs(a.astype(int) - cv2.resize(alpha, (30, 30), interpolation=cv2.INTER_AREA)).max() <= 1


def test_rotation_is_premultiplied_too():
    from gen4gen.layout.compose import rotate

    rgb, alpha = _red_disc_on_white(soft=3)
    rgb[alpha == 0] = 0  # a black surround: a straight bilinear warp would darken the rim
    out, a = rotate(rgb, alpha, 7.0)
    np.testing.assert_array_equal(out[a > 0], np.tile([255, 0, 0], ((a > 0).sum(), 1)))
    assert ((a > 0) & (a < 255)).sum() > 100


def test_a_vertical_shift_keeps_feet_in_their_depth_order(tmp_path):
    """On a desk photo the whole ground is a thin strip (horizon 0.83, nearest line 0.91 of H): feet shifted by
    up to max_shift of H (+-14 px here) put the nearer object's feet behind the farther one's. The shift is a
    share of how far below the horizon the feet stand, so their order, the depth order, holds."""
    src = sources(tmp_path)
    H = SIZE[1]
    horizon = 0.83
    near, far = 0.91 * H, 0.88 * H  # bottoms of the two boxes: 14 px apart
    boxes = [PlacedBox("cup", 0, [340, near - 60, 80, 60]), PlacedBox("dog", 0, [100, far - 150, 160, 150])]
    plan = Plan(size=SIZE, boxes=boxes, paste_order=depth_order(boxes), scenes=["a", "b", "c"],
                background_prompt="a", planner="heuristic", seed=0, camera={"horizon": horizon})
    composer = composer_of(tmp_path, "compose.augment.max_shift=0.03", "compose.augment.max_rotation=0")
    for seed in range(40):
        comp = composer.compose(plan, src, np.random.default_rng(seed))
        feet = {o["name"]: o["placed_box"][1] + o["placed_box"][3] for o in comp.objects}
        assert feet["cup_0"] > feet["dog_0"], (seed, feet)
        assert abs(feet["cup_0"] - near) <= 0.03 * (near - horizon * H) + 1  # +-1.2 px, not +-14
