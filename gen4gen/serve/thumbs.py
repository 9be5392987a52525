"""Derived images the pages show, made once per item content and kept on disk: grid thumbnails (JPEG) and
mask overlays (transparent PNG, one colour per instance). A redone item has a new content key, so a new file."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from PIL import Image

from gen4gen.images import read_image
from gen4gen.io import png_bytes, write_atomic
from gen4gen.serve.items import ReviewItem

# instance colours (RGB), the same order the detail view's box labels use (static/serve.css .c0 ...)
PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230)]


class Thumbnails:
    def __init__(self, folder: Path, size: int = 256):
        self.folder, self.size = Path(folder), int(size)
        self.made = 0  # files made by this process (the benchmark checks that a second request makes none)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def thumbnail(self, item: ReviewItem) -> Path:
        return self._cached(f"{item.content}.t{self.size}.jpg", lambda: self._thumb(item.image))

    def cutout(self, item: ReviewItem, k: int) -> Path:
        src = item.sources[k].cutout
        return self._cached(f"{item.content}.s{k}.{self.size}.png", lambda: self._cutout(src))

    def overlay(self, item: ReviewItem) -> Path:
        return self._cached(f"{item.content}.overlay.png", lambda: self._overlay(item))

    def _cached(self, name: str, make) -> Path:
        path = self.folder / name
        if path.is_file():
            return path
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:  # two requests for a new thumbnail make it once
            if not path.is_file():
                write_atomic(path, make())
                self.made += 1
        return path

    def _thumb(self, src: Path) -> bytes:
        import io

        im = Image.fromarray(read_image(src, mode="RGB"))
        im.thumbnail((self.size, self.size), Image.Resampling.BILINEAR, reducing_gap=2.0)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
        return buf.getvalue()

    def _cutout(self, src: Path | None) -> bytes:
        rgba = read_image(src, mode="RGBA")
        alpha = rgba[..., 3]
        ys, xs = np.nonzero(alpha)
        if ys.size:  # crop to the object: a small cut-out in a large photo is otherwise a dot
            rgba = rgba[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        im = Image.fromarray(rgba, "RGBA")
        im.thumbnail((self.size, self.size), Image.Resampling.BILINEAR)
        return png_bytes(im)

    def _overlay(self, item: ReviewItem) -> bytes:
        w, h = item.size
        out = np.zeros((h, w, 4), np.uint8)
        for k, obj in enumerate(item.objects):
            mask = read_image(obj["mask"], mode="L")
            if mask.shape != (h, w):
                continue  # the export refuses such an item; the grid never has one
            on = mask >= 128
            out[on, :3] = PALETTE[k % len(PALETTE)]
            out[on, 3] = 140
        return png_bytes(out)
