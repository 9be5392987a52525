"""benchmarks/segment.py's hand-made mask sets: a trimap's "not classified" band (mask value 128) is left out of
the IoU, so a mask whose edge falls anywhere inside the band scores as one that follows the outline."""
from __future__ import annotations

import numpy as np
from PIL import Image

from benchmarks.segment import iou, pairs, read_truth


def test_the_band_of_a_trimap_counts_for_neither_side(tmp_path):
    (tmp_path / "images" / "cat").mkdir(parents=True)
    (tmp_path / "masks" / "cat").mkdir(parents=True)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "images" / "cat" / "a.jpg")
    trimap = np.zeros((20, 20), np.uint8)
    trimap[4:16, 4:16] = 128  # the band
    trimap[6:14, 6:14] = 255  # the pet: 64 px
    Image.fromarray(trimap).save(tmp_path / "masks" / "cat" / "a.png")
    found = pairs(tmp_path)
    assert list(found) == ["cat"] and [n for n, _, _ in found["cat"]] == ["cat_a"]
    truth = read_truth(found["cat"][0][2])
    assert np.isnan(truth).sum() == 144 - 64 and truth[10, 10] == 1 and truth[0, 0] == 0
    wide = np.zeros((20, 20), np.float32)
    wide[4:16, 4:16] = 1  # the whole band taken as the pet
    assert iou(wide, truth) == 1.0
    wide[0:2, 0:20] = 1  # 40 px of background beyond the band
    assert iou(wide, truth) == 64 / 104
    assert iou(wide, np.nan_to_num(truth, nan=0.0)) == 64 / (144 + 40)  # without the band left out
