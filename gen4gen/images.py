"""The one image reader of every stage: whatever a user drops in a folder comes out as 8-bit RGB(A)
upright, or as an ``ItemFailed`` with a reason a person can act on."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gen4gen.errors import ItemFailed

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
DEFAULT_MAX_PIXELS = 80_000_000


class BadImage(ItemFailed):
    pass


def read_image(path: Path | str, *, mode: str = "RGB", max_pixels: int = DEFAULT_MAX_PIXELS,
               min_side: int = 1) -> np.ndarray:
    """Read ``path`` as an upright uint8 array of ``mode`` ("RGB" -> HxWx3, "RGBA" -> HxWx4, "L" -> HxW)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise BadImage(f"cannot read file: {e.strerror or e}") from None
    if size == 0:
        raise BadImage("empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        prev_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our own limit below
        try:
            with Image.open(path) as im:
                w, h = im.size
                if problem := size_problem(w, h, max_pixels, min_side):
                    raise BadImage(problem)
                im.seek(0)  # animated: the first frame
                im.load()
                im = ImageOps.exif_transpose(im)
                return to_mode(im, mode)
        except BadImage:
            raise
        except UnidentifiedImageError:
            raise BadImage(f"not an image ({_sniff(path)})") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise BadImage(f"truncated or corrupt image: {e}") from None
        except Image.DecompressionBombError as e:  # pragma: no cover - limit disabled above
            raise BadImage(str(e)) from None
        finally:
            Image.MAX_IMAGE_PIXELS = prev_limit


def size_problem(w: int, h: int, max_pixels: int, min_side: int, side_key: str = "io.min_side") -> str | None:
    """Why a ``w`` x ``h`` image is refused before decoding (a decompression bomb, a thumbnail), else None."""
    if w * h > max_pixels:
        return (f"image is {w}x{h} = {w * h / 1e6:.0f} MP, over the limit of {max_pixels / 1e6:.0f} MP "
                "(io.max_pixels); downscale it or raise the limit")
    if min(w, h) < min_side:
        return f"image is {w}x{h} px, below the minimum side of {min_side} px ({side_key})"
    return None


def to_mode(im: Image.Image, mode: str) -> np.ndarray:
    """A loaded image as a uint8 array of ``mode``: 16/32-bit grey scaled, CMYK converted, alpha over white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit / 32-bit grey: PIL's convert("L") clips instead of scaling
        a = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    if im.mode == "CMYK" or im.mode == "YCbCr" or im.mode == "LAB":
        im = im.convert("RGB")
    if mode == "RGBA":
        im = im.convert("RGBA")
    elif mode == "RGB":
        if has_alpha:  # composite over white: transparent pixels are not meant to be black
            rgba = im.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, rgba).convert("RGB")
        else:
            im = im.convert("RGB")
    else:
        im = im.convert(mode)
    return np.ascontiguousarray(np.asarray(im))


def _sniff(path: Path) -> str:
    head = path.open("rb").read(64).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "the content is an HTML page"
    if head[:1] in (b"{", b"["):
        return "the content looks like JSON"
    if all(32 <= c < 127 or c in (9, 10, 13) for c in head):
        return "the content is text"
    return "unknown format"
