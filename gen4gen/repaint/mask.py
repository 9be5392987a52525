"""Gen4Gen's repaint mask: which pixels the background step may change.

Gen4Gen box-blurs the union concept mask, stretches the intensities 127.5..255 to 0..255 and inverts
the result. The stretch moves the soft edge *inside* each concept, so the repainted region is the
whole background plus a thin band just inside every concept outline (where a cut-out carries halos
of its old background), while the interior (1.0 in the concept mask after blurring) stays exact.
"""
from __future__ import annotations

import cv2
import numpy as np


def repaint_mask(concept_mask: np.ndarray, *, blur: int = 10, low: float = 127.5, high: float = 255.0,
                 solid: float = 0.98, invert: bool = True) -> np.ndarray:
    """Float32 HxW in [0, 1]: 1 = repaint, 0 = keep the concept pixel exactly.

    ``concept_mask`` is the s2 union mask (uint8 0..255 or float 0..1). ``blur`` is the box-blur
    radius in pixels (PIL's ``BoxBlur(radius)`` = a ``2r+1`` box); 0 keeps the mask as it is.
    ``low``/``high`` is the intensity window (0..255 scale) stretched to 0..255, as in
    ``skimage.exposure.rescale_intensity(in_range=(low, high))``. Mask values at or above ``solid``
    (0..1) count as fully inside first: real masks plateau at 250-254 after resampling (Gen4Gen's own
    stage-2 masks sit at 253), which would otherwise leave no pixel exact; ``solid=1`` is Gen4Gen's rule.
    """
    if not 0 <= low < high <= 255:
        raise ValueError(f"mask window must satisfy 0 <= low < high <= 255, got low={low}, high={high}")
    m = concept_mask.astype(np.float32)
    if concept_mask.dtype == np.uint8 or m.max() > 1.0:
        m = m / 255.0
    if 0 < solid < 1:
        m = np.minimum(m / solid, 1.0)
    if blur >= 1:
        k = 2 * int(blur) + 1
        m = cv2.blur(m, (k, k), borderType=cv2.BORDER_REPLICATE)
    keep = np.clip((m * 255.0 - low) / (high - low), 0.0, 1.0)
    keep[m >= 1.0 - 1e-6] = 1.0  # blur sums of 1.0 must stay exactly 1.0 (no float leak into the interior)
    return (1.0 - keep if invert else keep).astype(np.float32)


def to_u8(mask: np.ndarray) -> np.ndarray:
    return (np.clip(mask, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
