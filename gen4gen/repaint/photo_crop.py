"""How a background photo covers the canvas: its horizon put where the layout's ground is, other crops for
variants that share a photo, and where its ground and light then are on the canvas."""
from __future__ import annotations

import cv2
import numpy as np

from gen4gen.images import read_image
from gen4gen.repaint.photos import Backdrop


def crop_window(photo_size: tuple[int, int], canvas: tuple[int, int], horizon: float, target: float | None = None,
                variant: int = 0, max_zoom: float = 1.6) -> tuple[float, float, float, bool]:
    """How a photo covers the canvas: (scale, x offset, y offset, mirrored) in scaled-photo pixels.
    The photo's ``horizon`` is put at ``target`` (fraction of the canvas height, the layout's horizon) when a
    zoom up to ``max_zoom`` allows it, else as near as it gets. ``variant`` k > 0 gives clearly different
    crops of the same photo (another part of it, closer, mirrored on odd k), for variants that share a photo."""
    pw, ph = photo_size
    W, H = canvas
    base = max(W / pw, H / ph)
    zoom = 1.0 + 0.18 * min(variant, 3)
    if target is not None:  # zoom in until the horizon can be shifted to its place
        for z in np.linspace(zoom, max(zoom, max_zoom), 8):
            sh = ph * base * z
            oy = horizon * sh - target * H
            if 0 <= oy <= sh - H:
                zoom = float(z)
                break
        else:
            zoom = max(zoom, 1.0)
    s = base * zoom
    sw, sh = pw * s, ph * s
    free_x, free_y = sw - W, sh - H
    pos = (0.5, 0.0, 1.0, 0.25, 0.75)[variant % 5]
    ox = free_x * pos
    oy = free_y / 2 if target is None else float(np.clip(horizon * sh - target * H, 0, free_y))
    return s, ox, oy, bool(variant % 2)


def canvas_horizon(photo: Backdrop, canvas: tuple[int, int]) -> float:
    """Where the photo's horizon lands on the canvas (fraction of H) under the plain centred cover crop."""
    s, _, oy, _ = crop_window(photo.size, canvas, photo.horizon)
    return float((photo.horizon * photo.size[1] * s - oy) / canvas[1])


def render_photo(photo: Backdrop, size: tuple[int, int], *, target: float | None, variant: int = 0,
                 blur: float = 1.0, max_pixels: int = 80_000_000) -> tuple[np.ndarray, float, float]:
    """The photo covering ``size`` = (W, H), its horizon at ``target`` where the crop allows; returns the image
    (uint8 HxWx3), where its ground starts on the canvas (fraction of H) and its light direction (-1 .. 1,
    mirrored with the crop)."""
    W, H = size
    image = read_image(photo.path, max_pixels=max_pixels)  # BadImage (ItemFailed) on a bad file
    ph, pw = image.shape[:2]
    s, ox, oy, mirror = crop_window((pw, ph), size, photo.horizon, target, variant)
    # crop in photo pixels first, then scale only that part (a 24 MP photo is never resized whole)
    x0, y0 = int(round(ox / s)), int(round(oy / s))
    cw, ch = max(1, min(pw - x0, int(round(W / s)))), max(1, min(ph - y0, int(round(H / s))))
    out = cv2.resize(image[y0:y0 + ch, x0:x0 + cw], (W, H), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    if mirror:
        out = out[:, ::-1]
    if blur > 0:  # Gen4Gen softens the photo (GaussianBlur radius 1): its detail must not fight the concepts
        out = cv2.GaussianBlur(out, (0, 0), blur)
    ground = float(np.clip((photo.horizon * ph * s - oy) / H, 0.0, 1.0))
    return np.ascontiguousarray(out), ground, -photo.light if mirror else photo.light
