"""PNG encodings: the fast paths for a photo and a mask give back the very pixels."""
from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from gen4gen.io import png_bytes


@pytest.mark.parametrize("shape", [(37, 50), (37, 50, 3), (37, 50, 4)])
@pytest.mark.parametrize("strategy", [zlib.Z_HUFFMAN_ONLY, zlib.Z_RLE, zlib.Z_DEFAULT_STRATEGY])
def test_png_bytes_are_lossless_in_every_channel_order(shape, strategy):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    x[..., 0] = 255  # a channel swapped on the way (RGB vs BGR) would show
    back = np.asarray(Image.open(io.BytesIO(png_bytes(x, strategy))))
    assert back.shape == x.shape and np.array_equal(back, x)


def test_a_photo_encoded_with_one_filter_is_as_small_as_with_per_row_choice():
    # a smooth gradient with noise, as a photo: Paeth prediction on every row leaves as little as Pillow's choice
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:240, 0:320]
    photo = np.clip(np.dstack([x * 0.7, y, x * 0.3 + y * 0.4, np.full(x.shape, 255)]) + rng.normal(0, 3, (240, 320, 4)),
                    0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="PNG", compress_level=1, compress_type=zlib.Z_HUFFMAN_ONLY)
    assert len(png_bytes(photo, zlib.Z_HUFFMAN_ONLY)) <= 1.05 * len(buf.getvalue())
