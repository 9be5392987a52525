"""Image files a user might drop in a folder, good and bad, built small and in memory."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def disc(size: int = 64, colour=(40, 40, 40), bg=(235, 235, 235)) -> np.ndarray:
    """A dark disc on a light background: a known object with a known mask."""
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= (size / 3) ** 2
    img = np.empty((size, size, 3), np.uint8)
    img[:] = bg
    img[inside] = colour
    return img


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb) with no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def exif_rotated_jpeg() -> bytes:
    """40x20 stored, red top-left quadrant, EXIF orientation 6 (display rotated 90 degrees clockwise)."""
    a = np.full((20, 40, 3), 255, np.uint8)
    a[:10, :20] = (255, 0, 0)
    im = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(im, "JPEG", quality=95, exif=exif.tobytes())


def palette_with_transparency() -> bytes:
    im = Image.new("P", (32, 32), 1)
    im.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    im.paste(0, (0, 0, 16, 32))  # left half: index 0, declared transparent
    return encode(im, "PNG", transparency=0)


def gray16(value: int = 32768) -> bytes:
    return encode(Image.fromarray(np.full((24, 24), value, np.uint16)), "PNG")


def cmyk_red() -> bytes:
    return encode(Image.new("CMYK", (24, 24), (0, 255, 255, 0)), "JPEG", quality=95)


def rgba_half_transparent() -> bytes:
    a = np.zeros((24, 24, 4), np.uint8)
    a[..., 2] = 255  # blue
    a[..., 3] = 255
    a[:, :12, 3] = 0  # left half transparent
    return encode(Image.fromarray(a, "RGBA"), "PNG")


def truncated(fmt: str) -> bytes:
    data = encode(Image.fromarray(disc(96)), fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return data[: len(data) // 2]


GOOD = {  # file name -> bytes; all of them must read
    "plain.png": lambda: encode(Image.fromarray(disc()), "PNG"),
    "photo.jpg": lambda: encode(Image.fromarray(disc()), "JPEG", quality=95),
    "rotated.jpg": exif_rotated_jpeg,
    "palette.png": palette_with_transparency,
    "gray.png": lambda: encode(Image.fromarray(disc()[..., 0]), "PNG"),
    "gray16.png": gray16,
    "cmyk.jpg": cmyk_red,
    "alpha.png": rgba_half_transparent,
    "köln café ü.png": lambda: encode(Image.fromarray(disc()), "PNG"),
}
BAD = {  # file name -> (bytes, words the reason must contain)
    "truncated.jpg": (lambda: truncated("JPEG"), "truncated"),
    "truncated.png": (lambda: truncated("PNG"), "truncated"),
    "empty.png": (lambda: b"", "empty file"),
    "page.jpg": (lambda: b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "HTML"),
    "bomb.png": (lambda: png_header_only(20000, 20000), "io.max_pixels"),
    "tiny.png": (lambda: encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), "io.min_side"),
}


def write_corpus(folder: Path, names: dict) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, make in names.items():
        data = make() if callable(make) else make[0]()
        (folder / name).write_bytes(data)
        out[name] = folder / name
    return out
