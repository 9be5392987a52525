"""s1's record of the edges that cut a subject, and clean cut-outs: fragments dropped, see-through patches
inside a solid subject filled, foreground colours estimated in the soft edge."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from gen4gen.images import read_image
from gen4gen.paths import STAGE_DIRS
from gen4gen.segment.cutout import (_blur_fusion, _means, clean_alpha, estimate_foreground, fill_translucent, keep_region,
                                    translucent)
from gen4gen.segment.quality import mask_stats
from gen4gen.segment.shared_colours import colour_index, concept_histogram, histogram
from gen4gen.stages import s1_segment
from tests.helpers.segmenters import search_path

OUT = STAGE_DIRS["s1"]


def test_cut_edges_name_the_edges_and_how_much_of_the_outline_runs_along_them():
    m = np.zeros((100, 200), np.float32)
    m[40:, 0:100] = 1.0  # a bust cut by the bottom and the left edge
    stats = mask_stats(m)
    assert stats["cut_edges"] == ["bottom", "left"] and stats["border_contact"] == ["bottom", "left"]
    # outline: the boundary pixels of a 100 x 60 block, the frame's included: 2 * 100 + 2 * 60 - 4 corners
    outline = 2 * 100 + 2 * 60 - 4
    assert stats["cut_outline"] == {"bottom": round(100 / outline, 4), "left": round(60 / outline, 4)}
    assert "touches_border" in stats["flags"]
    paw = np.zeros((100, 200), np.float32)
    cv2.circle(paw, (100, 50), 40, 1.0, -1)
    paw[90:100, 99:101] = 1.0  # a 2 px claw reaching the bottom edge: touching, but not cut
    stats = mask_stats(paw)
    assert "touches_border" in stats["flags"] and stats["border_contact"] == ["bottom"]
    assert stats["cut_edges"] == [] and 0 < stats["cut_outline"]["bottom"] < 0.02
    assert mask_stats(np.zeros((50, 50), np.float32))["cut_edges"] == []


def test_fragments_outside_the_kept_region_go_with_their_haze():
    mask = np.zeros((200, 300), np.float32)
    cv2.circle(mask, (80, 100), 50, 1.0, -1)  # the subject
    mask[20:40, 250:290] = 1.0  # a chunk of crate far away
    mask[150:190, 200:290] = 0.3  # a see-through ghost of a wall
    focus = np.zeros((200, 300), bool)
    focus[50:151, 30:131] = True
    region = keep_region(focus, 300, 200)
    out, dropped = clean_alpha(mask, region)
    assert (out[:, 200:] == 0).all() and np.array_equal(out[:, :140], mask[:, :140])
    assert dropped == pytest.approx(20 * 40 / (200 * 300), abs=1e-5)


def test_a_translucent_patch_inside_a_solid_subject_is_filled_and_a_real_hole_is_kept():
    mask = np.zeros((300, 300), np.float32)
    cv2.circle(mask, (150, 150), 120, 1.0, -1)
    mask[100:140, 100:140] = 0.4  # a half-transparent patch (a doubtful eye)
    cv2.circle(mask, (200, 190), 20, 0.0, -1)  # a real hole (the gap in a mug's handle) ...
    hole_edge = (cv2.circle(np.zeros((300, 300), np.uint8), (200, 190), 23, 1, -1) > 0) & (mask == 1.0)
    mask[hole_edge] = 0.5  # ... with its own soft edge
    out, filled = fill_translucent(mask)
    assert (out[100:140, 100:140] == 1.0).all() and filled == pytest.approx(1600 / 90000, abs=1e-5)
    assert (out[hole_edge] == 0.5).all() and (out[190, 200] == 0.0) and not translucent(out)
    wheel = np.zeros((300, 300), np.float32)
    cv2.circle(wheel, (150, 150), 120, 1.0, 12)  # a tyre ...
    cv2.circle(wheel, (150, 150), 110, 0.4, -1)  # ... the see-through space between its spokes ...
    cv2.circle(wheel, (150, 150), 20, 0.0, -1)  # ... opening onto a clear gap by the hub: not the subject's doubt
    out, filled = fill_translucent(wheel)
    assert np.array_equal(out, wheel) and filled == 0.0 and translucent(out)
    glass = np.zeros((300, 300), np.float32)
    cv2.circle(glass, (150, 150), 120, 0.6, -1)  # a subject that is not solid: left as it is, flagged
    glass[140:160, 140:160] = 1.0
    out, filled = fill_translucent(glass)
    assert np.array_equal(out, glass) and filled == 0.0 and translucent(out)


def doubted_side() -> tuple[np.ndarray, np.ndarray]:
    """An orange disc on a blue-grey ground (6 px soft outline) whose left part, a disc of radius 100 centred
    50 px left of its centre, the segmenter holds at 0.5: 52 % of the patch's rim on the opaque subject, reaching
    0.56 of the subject's scale from it (the mirrored astronaut's helmet: 53 %, 0.62)."""
    yy, xx = np.mgrid[:300, :300]
    mask = np.clip((120 - np.hypot(xx - 150, yy - 150)) / 6 + 0.5, 0, 1).astype(np.float32)
    side = (np.hypot(xx - 100, yy - 150) < 100) & (mask > 0.5)
    mask[side] = 0.5
    rgb = np.empty((300, 300, 3), np.uint8)
    rgb[:] = (90, 110, 140)
    rgb[mask >= 0.5] = (230, 110, 40)
    return mask, rgb


def test_a_doubted_patch_in_the_concept_s_colours_is_filled_and_a_haze_over_the_background_s_stays():
    mask, rgb = doubted_side()
    other = np.zeros((300, 300), bool)
    other[50:250, 50:250] = True  # another photo of the concept: the orange thing, nothing else
    concept = concept_histogram([histogram(colour_index(np.where(other[..., None], rgb[150, 150], 0).astype(
        np.uint8), other.shape), other)])
    yy, xx = np.mgrid[:300, :300]
    side = (np.hypot(xx - 100, yy - 150) < 100) & (np.hypot(xx - 150, yy - 150) < 112)  # deeper than the outline
    # the mask alone: under 60 % of its rim on the subject, so it may be haze and stays see-through
    out, filled = fill_translucent(mask)
    assert filled == 0.0 and np.array_equal(out, mask)
    # the photo shows it in the subject's orange, which the concept's other photos show: the subject, filled
    out, filled = fill_translucent(mask, rgb=rgb, concept=concept)
    assert (out[side] >= 0.95).all() and filled >= side.sum() / mask.size
    # the same patch in the colour of the ground around the disc: haze over the old background, kept
    haze = rgb.copy()
    haze[mask == 0.5] = (90, 110, 140)
    out, filled = fill_translucent(mask, rgb=haze, concept=concept)
    assert filled == 0.0 and np.array_equal(out, mask) and np.median(out[side]) == 0.5
    # no other photo: nothing vouches for the colours, the mask rule alone decides
    assert fill_translucent(mask, rgb=rgb, concept=None)[1] == 0.0
    # a narrower patch in the same colours (a segment 60 px from the centre: 46 % of its rim on the subject,
    # reaching 0.26 of its scale) is no part of its size but a gap, as between a lamp's arms: it stays
    gap = np.clip((120 - np.hypot(xx - 150, yy - 150)) / 6 + 0.5, 0, 1).astype(np.float32)
    gap[(xx < 90) & (gap > 0.5)] = 0.5
    out, filled = fill_translucent(gap, rgb=rgb, concept=concept)
    assert filled == 0.0 and np.array_equal(out, gap)


@pytest.mark.needs("weights")
def test_the_demo_astronaut_s_doubted_helmet_is_filled_in_her_mirrored_photo(tmp_path, cfg_factory):
    from skimage import data

    from gen4gen.app import run
    from gen4gen.examples import variants

    folder = tmp_path / "src" / "space" / "astronaut"
    folder.mkdir(parents=True)
    for tag, photo in variants(np.asarray(data.astronaut())[..., :3]).items():
        Image.fromarray(photo).save(folder / f"astronaut_{tag}.jpg", quality=95)
    assert run(cfg_factory("stage=s1")) == 0
    item = tmp_path / "stages" / OUT / "space" / "astronaut" / "astronaut_02_mirrored"
    alpha = read_image(item / "mask.png", mode="L").astype(np.float32) / 255.0
    helmet = cv2.circle(np.zeros(alpha.shape, np.uint8), (115, 450), 80, 1, -1) > 0  # its visor and shell
    # u2netp holds the helmet at 0.56 (median of its half-transparent patch; 0.34 over this disc, which
    # takes in the shell's soft edge too): with the concept's colours it is opaque over most of the disc
    assert np.median(alpha[helmet]) >= 0.95 and (alpha[helmet] >= 0.95).mean() >= 0.7
    meta = json.loads((item / "meta.json").read_text("utf-8"))
    assert meta["filled_fraction"] >= 0.12 and "translucent" not in meta["flags"]


def close_up() -> np.ndarray:
    """A bust cut by the bottom and left edges of a 200 x 300 photo with a 6 px soft outline, its lower-left
    chest half transparent (0.3-0.6) down to both edges, under and beside opaque fur."""
    yy, xx = np.mgrid[:200, :300]
    d = np.hypot(xx - 100, yy - 200)  # a half-disc standing on the bottom edge, cut by the left edge too
    mask = np.clip((150 - d) / 6 + 0.5, 0, 1).astype(np.float32)
    chest = (xx < 60) & (yy > 120)
    mask[chest] = 0.3 + 0.3 * (xx[chest] / 60)
    return mask


def test_a_close_up_s_see_through_chest_running_into_the_cut_edges_is_made_opaque():
    mask = close_up()
    out, filled = fill_translucent(mask)
    chest = np.zeros(mask.shape, bool)
    chest[121:, :60] = True
    # the chest, enclosed by the opaque bust and the two edges that cut it, is opaque, all of it
    assert (out[chest] == 1.0).all() and filled == pytest.approx(79 * 60 / 60000, abs=1e-5)
    ring = (mask > 0.05) & (mask < 0.95) & ~chest  # the bust's own soft outline is untouched
    assert np.array_equal(out[ring], mask[ring])
    assert not translucent(out)
    # the same patch against an edge that does not cut the subject (a haze on the ground beside it) stays
    haze = np.zeros((200, 300), np.float32)
    cv2.circle(haze, (150, 80), 50, 1.0, -1)  # a ball in the air, touching no edge
    haze[150:, 100:200] = 0.3  # a low haze on the bottom edge, under it
    out, filled = fill_translucent(haze)
    assert np.array_equal(out, haze) and filled == 0.0


def test_a_solid_subject_with_soft_edges_or_doubtful_streaks_is_not_translucent_and_glass_is():
    yy, xx = np.mgrid[:300, :300]
    soft = np.clip((100 - np.hypot(xx - 150, yy - 150)) / 20 + 0.5, 0, 1).astype(np.float32)  # 20 px feather
    assert not translucent(soft) and not translucent(np.zeros((50, 50), np.float32))
    rocket = np.zeros((300, 300), np.float32)
    rocket[20:280, 135:165] = 1.0  # a thin rocket whose lower body the segmenter half believes:
    rocket[200:260, 138:162] = 0.7  # 0.7 over 20 % of its interior
    assert not translucent(rocket)
    glass = soft * 0.5  # a glass: the background shows through all of it
    glass[soft >= 0.99] = 0.55
    assert translucent(glass)


def test_a_weak_fragment_beside_the_subject_goes_with_its_haze_even_when_near_and_a_firm_one_stays():
    mask = np.zeros((200, 300), np.float32)
    mask[20:180, 100:130] = 1.0  # the rocket
    mask[150:180, 90:100] = 0.3  # its soft base, nearest to it
    spark = np.zeros((200, 300), np.float32)
    cv2.circle(spark, (145, 165), 8, 0.75, -1)  # a spark beside its base, held at 0.5-0.87 ...
    spark[165, 145] = 0.87
    halo = (cv2.circle(np.zeros((200, 300), np.uint8), (145, 165), 14, 1, -1) > 0) & (spark == 0)
    spark[halo & (np.mgrid[:200, :300][1] >= 138)] = 0.3  # ... in a haze of its own, 7 px from the rocket
    mask = np.maximum(mask, spark)
    everywhere = np.ones(mask.shape, bool)
    out, dropped = clean_alpha(mask, everywhere)
    assert (out[:, 135:] == 0).all() and np.array_equal(out[:, :135], mask[:, :135])
    assert dropped == pytest.approx(float((spark >= 0.5).mean()), abs=1e-5)
    firm = mask.copy()
    firm[spark >= 0.5] = 1.0  # the same blob held firmly (an ear tip past a gap): a part of the subject
    out, dropped = clean_alpha(firm, everywhere)
    assert np.array_equal(out, firm) and dropped == 0.0
    tip = mask.copy()
    tip[160:170, 130:137] = 0.4  # the same blob joined at 0.4 (a thin leg's tip cut off by the 0.5 threshold)
    out, dropped = clean_alpha(tip, everywhere)
    assert np.array_equal(out, tip) and dropped == 0.0
    big = mask.copy()
    big[100:180, 150:170] = 0.75  # a weak part as large as a fifth of the subject is not a fragment
    out, _ = clean_alpha(big, everywhere)
    assert (out[100:180, 150:170] == 0.75).all()


def soft_disc(h: int = 240, w: int = 320) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A red disc with a soft 12 px edge over a green-and-blue background: photo, alpha, true foreground."""
    yy, xx = np.mgrid[:h, :w]
    d = np.hypot(xx - 160, yy - 120)
    alpha = np.clip((90 - d) / 12 + 0.5, 0, 1).astype(np.float32)
    fg = np.zeros((h, w, 3), np.float32)
    fg[...] = (200, 30, 40)
    bg = np.zeros((h, w, 3), np.float32)
    bg[..., 1] = 180
    bg[..., 2] = 60 + 120 * (xx / w)
    photo = (alpha[..., None] * fg + (1 - alpha[..., None]) * bg + 0.5).astype(np.uint8)
    return photo, alpha, fg


def test_foreground_estimation_removes_the_old_background_from_the_soft_edge():
    photo, alpha, fg = soft_disc()
    est = estimate_foreground(photo, alpha)
    band = (alpha > 0.05) & (alpha < 0.95)
    before = np.linalg.norm(photo[band].astype(np.float32) - fg[band], axis=1).mean()
    after = np.linalg.norm(est[band].astype(np.float32) - fg[band], axis=1).mean()
    assert after < 0.1 * before, (before, after)  # measured: 134.5 -> 11.4
    assert np.array_equal(est[alpha >= 1.0], photo[alpha >= 1.0])  # opaque pixels keep the photo's colour


@pytest.mark.parametrize("h, w", [(480, 900), (1500, 2100)])
def test_foreground_estimation_over_the_edges_box_matches_the_whole_photos(h, w):
    # a small subject in a large photo: only the edge's box is worked on; the colours are those of blur fusion
    # over the whole photo (at most 1 level off where the photo is over 1024 px: the means' upsampling)
    photo, alpha, _ = soft_disc(h, w)
    s = min(1.0, 1024 / max(h, w))
    size = (round(w * s), round(h * s))
    image = cv2.resize(photo, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    a = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA)[..., None]
    fg, bg = _means(*_blur_fusion(image, image, image, a, 91), a, 7)
    fg, bg = (cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR) for x in (fg, bg))
    band = (cv2.dilate((alpha > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0) & (alpha < 1)
    i, al, f, b = photo[band].astype(np.float32) / 255, alpha[band][:, None], fg[band], bg[band]
    want = photo.copy()
    want[band] = (np.clip(f + al * (i - al * f - (1 - al) * b), 0, 1) * 255 + 0.5).astype(np.uint8)
    got = estimate_foreground(photo, alpha)
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= (0 if s == 1.0 else 1) and (diff > 0).mean() < 0.001
    assert np.array_equal(got[~band], photo[~band])


def test_the_stage_writes_the_estimated_foreground_and_the_cut_edges(tmp_path, cfg_factory):
    img = np.full((200, 300, 3), 255, np.uint8)
    cv2.rectangle(img, (60, 80), (160, 199), (0, 0, 0), -1)  # a dark bust cut by the bottom edge
    img[120:130, 100:110] = 128  # a half-dark patch inside it: filled
    Image.fromarray(img).save((tmp_path / "p.png"))
    folder = tmp_path / "src" / "s" / "c"
    folder.mkdir(parents=True)
    Image.fromarray(img).save(folder / "bust.png")
    assert s1_segment.run(cfg_factory(search_path(tmp_path), "stage=s1", "segmenter=darkness")).done == 1
    item = tmp_path / "stages" / OUT / "s" / "c" / "bust"
    meta = json.loads((item / "meta.json").read_text("utf-8"))
    assert meta["cut_edges"] == ["bottom"] and meta["cut_outline"]["bottom"] == pytest.approx(101 / 440, abs=0.01)
    assert meta["filled_fraction"] == pytest.approx(100 / 60000, abs=1e-5) and meta["dropped_fraction"] == 0.0
    cut = read_image(item / "cutout.png", mode="RGBA")
    assert (cut[120:130, 100:110, 3] == 255).all()
    assert np.array_equal(cut[..., :3], estimate_foreground(img, cut[..., 3].astype(np.float32) / 255))
