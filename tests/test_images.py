"""The one image reader: odd but valid files come out right, bad files fail with a clear reason."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from gen4gen.errors import ItemFailed
from gen4gen.images import BadImage, read_image
from tests.helpers import image_cases as cases


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_exif_orientation_is_applied(tmp_path):
    a = read_image(_write(tmp_path, "r.jpg", cases.exif_rotated_jpeg()))
    assert a.shape == (40, 20, 3)  # 40x20 stored, shown rotated 90 degrees clockwise
    # the red top-left quadrant of the stored image is the top-right after the rotation
    assert a[5, 15, 0] > 200 and a[5, 15, 1] < 60
    assert a[35, 5].min() > 200  # white elsewhere


def test_palette_with_transparency(tmp_path):
    p = _write(tmp_path, "p.png", cases.palette_with_transparency())
    rgb, rgba = read_image(p), read_image(p, mode="RGBA")
    assert rgb.shape == (32, 32, 3)
    assert (rgb[:, :16] == 255).all()  # transparent: composited on white, not black
    assert tuple(rgb[5, 20]) == (200, 30, 30)
    assert (rgba[:, :16, 3] == 0).all() and (rgba[:, 16:, 3] == 255).all()


def test_grayscale_becomes_three_equal_channels(tmp_path):
    a = read_image(_write(tmp_path, "g.png", cases.GOOD["gray.png"]()))
    assert a.shape == (64, 64, 3) and (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()
    assert a[32, 32, 0] == 40 and a[0, 0, 0] == 235


@pytest.mark.parametrize("value, expected", [(65535, 255), (32768, 128), (0, 0)])
def test_16_bit_is_scaled_not_clipped(tmp_path, value, expected):
    a = read_image(_write(tmp_path, "g16.png", cases.gray16(value)))
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    assert a.dtype == np.uint8 and (a == expected).all()


def test_cmyk(tmp_path):
    a = read_image(_write(tmp_path, "c.jpg", cases.cmyk_red()))
    r, g, b = a[12, 12].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_alpha(tmp_path):
    p = _write(tmp_path, "a.png", cases.rgba_half_transparent())
    rgb, rgba = read_image(p), read_image(p, mode="RGBA")
    assert (rgb[:, :12] == 255).all() and tuple(rgb[0, 20]) == (0, 0, 255)
    assert rgba.shape == (24, 24, 4) and (rgba[:, :12, 3] == 0).all()
    assert read_image(p, mode="L").shape == (24, 24)


@pytest.mark.parametrize("name", sorted(cases.BAD))
def test_bad_files_fail_with_a_reason(tmp_path, name):
    make, words = cases.BAD[name]
    p = _write(tmp_path, name, make())
    with pytest.raises(BadImage, match=words) as e:
        read_image(p, min_side=16)
    assert isinstance(e.value, ItemFailed)  # the runner records it as a per-item failure


def test_pixel_limit_is_configurable(tmp_path):
    p = _write(tmp_path, "big.png", cases.encode(Image.new("L", (400, 300)), "PNG"))
    with pytest.raises(BadImage, match=r"400x300.*io.max_pixels"):
        read_image(p, max_pixels=100_000)
    assert read_image(p, max_pixels=120_000).shape == (300, 400, 3)


def test_one_pixel_image_is_fine_without_a_minimum(tmp_path):
    p = _write(tmp_path, "one.png", cases.encode(Image.new("RGB", (1, 1), (9, 8, 7)), "PNG"))
    assert read_image(p).tolist() == [[[9, 8, 7]]]


def test_missing_file_and_unicode_names(tmp_path):
    with pytest.raises(BadImage, match="cannot read"):
        read_image(tmp_path / "nope.png")
    p = _write(tmp_path, "köln café ü.png", cases.GOOD["köln café ü.png"]())
    assert read_image(p).shape == (64, 64, 3)


def test_text_and_json_are_named(tmp_path):
    with pytest.raises(BadImage, match="JSON"):
        read_image(_write(tmp_path, "x.png", b'{"error": "rate limited"}'))
    with pytest.raises(BadImage, match="text"):
        read_image(_write(tmp_path, "y.jpg", b"hello, this is not a photo"))
