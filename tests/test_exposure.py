"""Re-exposing a pasted concept for its place (repaint/exposure.py): metering, gains, the ring contrast kept."""
import cv2
import numpy as np
import pytest

from gen4gen.layout.compose import Source
from gen4gen.layout.schema import Plan, PlacedBox
from gen4gen.repaint import RepaintJob
from gen4gen.repaint.exposure import exposure_gains, metered_light, to_linear, to_srgb
from gen4gen.repaint.mask import repaint_mask
from tests.helpers.settings import backend, composer_of
from tests.helpers.tree import StageTree


def _srgb(linear: float) -> int:
    return int(round(float(to_srgb(np.float32(linear)))))


def _disc(size=200, radius=50, centre=None):
    yy, xx = np.mgrid[:size, :size]
    cy, cx = centre or (size / 2, size / 2)
    return ((np.hypot(yy - cy, xx - cx) < radius) * 255).astype(np.uint8)


def _photo(subject: float, around: float, size=200):
    alpha = _disc(size)
    rgb = np.full((size, size, 3), _srgb(around), np.uint8)
    rgb[alpha > 0] = _srgb(subject)
    return rgb, alpha


def _ring_ratio(rgb, alpha):
    """Linear light of the subject's inner ring / that of the background ring just outside it (the rings the
    benchmark measures): the contrast a camera records, the same at any exposure."""
    solid = (alpha >= 128).astype(np.uint8)
    y = to_linear(rgb).mean(2)
    inside = cv2.distanceTransform(solid, cv2.DIST_L2, 3)
    outside = cv2.distanceTransform(1 - solid, cv2.DIST_L2, 3)
    return float(y[(inside > 2) & (inside <= 12)].mean() / y[(outside > 2) & (outside <= 12)].mean())


def test_metered_light_is_the_ring_of_photo_around_the_subject_or_none():
    rgb, alpha = _photo(0.05, 0.4)
    rgb[:20] = 255  # far from the subject: not in its ring
    assert metered_light(rgb, alpha) == pytest.approx(float(to_linear(np.uint8(_srgb(0.4)))), rel=1e-6)
    rgb[alpha == 0] = 0  # a cut-out with a black surround holds no photo
    assert metered_light(rgb, alpha) is None
    assert metered_light(*_photo(0.05, 0.4, size=40)[:1], _disc(40, radius=60)) is None  # the frame is subject


def test_metering_skips_the_haze_that_s1_recoloured():
    """A segmenter's faint alpha around the subject (3/255 out to 10 px beyond it): s1 fills those pixels, and 2 px
    beyond, with the estimated foreground (the subject's dark colour). The meter reads only the photo left as
    shot (the ring's outer part), not a mix with the subject's colour."""
    rgb, alpha = _photo(0.05, 0.4)
    yy, xx = np.mgrid[:200, :200]
    r = np.hypot(yy - 100, xx - 100)
    alpha[(alpha == 0) & (r < 60)] = 3
    rgb[r < 62] = _srgb(0.05)  # as estimate_foreground leaves it
    assert metered_light(rgb, alpha) == pytest.approx(float(to_linear(np.uint8(_srgb(0.4)))), rel=1e-6)


def test_gains_follow_the_ratio_within_the_limit_and_keep_unknown_objects():
    gains = exposure_gains(np.array([0.2, 0.2, 0.2, 0.2]), np.array([0.4, 0.1, np.nan, 0.01]), 1.0, 4.0)
    np.testing.assert_allclose(gains, [0.5, 2.0, 1.0, 4.0])
    np.testing.assert_allclose(exposure_gains(np.array([0.1]), np.array([0.4]), 0.5, 4.0), [0.5])


@pytest.mark.parametrize("place", [0.1, 0.6])
def test_exposure_gives_the_subject_its_own_photos_contrast_to_its_surroundings(place):
    """A dark subject (0.05 linear) shot on a 0.4 surround, pasted onto a 0.1 or a 0.6 surround: re-exposed, it
    stands to its new surroundings as to its old ones (ring ratio 1/8 within 3 %); pasted as it is, it does not."""
    photo, alpha = _photo(0.05, 0.4)
    own = _ring_ratio(photo, alpha)
    rgb = np.zeros_like(photo)
    rgb[alpha > 0] = photo[alpha > 0]
    bg = np.full_like(photo, _srgb(place))
    a = alpha.astype(np.float32) / 255.0
    job = RepaintJob(rgb, a, repaint_mask(alpha, blur=4), bg,
                     exposures=[([50, 50, 100, 100], metered_light(photo, alpha))])
    pasted = backend("inpainter", "classical", feather=0.0, shadow=0.0, grain=False)([job])[0]
    exposed = backend("inpainter", "classical", feather=0.0, shadow=0.0, grain=False, expose=1.0)([job])[0]
    assert own == pytest.approx(0.125, rel=0.02)
    assert abs(_ring_ratio(pasted, alpha) / own - 1) > 0.3
    assert _ring_ratio(exposed, alpha) == pytest.approx(own, rel=0.03)
    # a gain on light, not a shift: the subject's linear value scaled by place / 0.4
    assert to_linear(exposed[100, 100]).mean() == pytest.approx(0.05 * place / 0.4, rel=0.08)
    unknown = RepaintJob(rgb, a, job.repaint, bg, exposures=[([50, 50, 100, 100], None)])
    np.testing.assert_array_equal(backend("inpainter", "classical", feather=0.0, shadow=0.0, grain=False, expose=1.0)([unknown])[0],
                                  pasted)


def test_s2_records_each_objects_metered_light(tmp_path):
    photo, alpha = _photo(0.05, 0.3, size=160)
    path = StageTree(tmp_path).s1_item("s", "cat", "p0", np.dstack([photo, alpha]), config_hash="h")
    box = PlacedBox("cat", 0, [100.0, 100.0, 80.0, 80.0])
    plan = Plan(size=(320, 240), boxes=[box], paste_order=[box.name], scenes=["in the garden"] * 3,
                background_prompt="", planner="heuristic", seed=0)
    comp = composer_of(tmp_path, "compose.min_visible=0.1").compose(plan, {"cat": [Source("s/cat/p0", path)]}, np.random.default_rng(0))
    assert comp.objects[0]["source_light"] == pytest.approx(metered_light(photo, alpha), abs=1e-5)
