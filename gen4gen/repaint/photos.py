"""A folder of the user's background photos, read once per run: which scene each photo shows, where its
ground starts (the horizon) and which side its light comes from.

``repaint.backgrounds=<dir>`` takes any folder of photos. A sub-folder names the scene of the photos in it
(``kitchen/``, ``my_living_room/``, ``on_the_beach/``); a photo anywhere may carry a sidecar next to it:
``<photo>.txt`` whose first line is its scene ("a kitchen table by the window"), or ``<photo>.json`` with
any of ``scene``, ``horizon`` (0..1 from the top: where the ground starts) and ``light`` (-1 from the left
.. 1 from the right). What is not in a sidecar is estimated from the photo (``estimate_ground``,
``estimate_light``). A photo that cannot be used (unreadable, tiny, huge) and a sidecar that makes no
sense are one line each in ``Library.problems``; the other photos are used.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gen4gen.images import IMAGE_EXTENSIONS, size_problem, to_mode
from gen4gen.layout.scenes import scene_words
from gen4gen.stage_settings import IOSettings, RepaintSettings

ANALYSIS_SIDE = 192  # px: horizon and light are judged on a small copy
PREPOSITIONS = ("in", "on", "at", "by", "under", "inside", "near", "over", "beside")
_POSSESSIVE = {"my", "our", "mine", "your", "their"}
_AT = {"beach", "seaside", "coast", "shore", "lake", "pool", "park", "window", "station"}
_ON = {"table", "desk", "sofa", "couch", "floor", "lawn", "grass", "street", "road", "counter", "bed", "rug", "carpet",
       "sidewalk", "bench", "shelf"}


class Sidecar(BaseModel):
    """``<photo>.json``: what the user knows better than the estimate."""
    model_config = ConfigDict(extra="forbid")
    scene: str | None = Field(default=None, min_length=1, max_length=80)
    horizon: float | None = Field(default=None, ge=0.0, le=1.0)
    light: float | None = Field(default=None, ge=-1.0, le=1.0)


@dataclass(frozen=True)
class Backdrop:
    """One usable background photo."""
    path: Path
    scene: str  # the scene's name: its folder, or the sidecar's scene
    size: tuple[int, int]  # (W, H) of the photo
    horizon: float  # fraction of the photo's height (from the top) where the ground starts
    light: float  # -1: light from the left ... 1: from the right
    estimated: tuple[str, ...] = ()  # which of horizon / light were estimated rather than read from a sidecar
    notes: tuple[str, ...] = ()  # converted colour modes and the like

    @property
    def phrase(self) -> str:
        return scene_phrase(self.scene)

    def describe(self) -> dict:
        return {"photo": str(self.path), "scene": self.scene, "phrase": self.phrase, "photo_size": list(self.size),
                "horizon": round(self.horizon, 4), "light": round(self.light, 3), "estimated": list(self.estimated)}


@dataclass
class Library:
    root: Path
    photos: list[Backdrop] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line per photo, folder or sidecar that was not used
    notes: list[str] = field(default_factory=list)  # one line per photo used after a conversion (grey, CMYK)

    @property
    def scenes(self) -> dict[str, list[Backdrop]]:
        out: dict[str, list[Backdrop]] = {}
        for p in self.photos:
            out.setdefault(p.scene, []).append(p)
        return out

    def by_path(self, path: str | Path) -> Backdrop | None:
        return next((p for p in self.photos if str(p.path) == str(path)), None)


def scene_phrase(scene: str) -> str:
    """The caption phrase of a scene name: "kitchen" -> "in the kitchen", "on_the_beach" -> "on the beach",
    "my_living_room" -> "in the living room", "Beach 2" -> "at the beach"."""
    words = [w for w in str(scene).replace("_", " ").replace("-", " ").lower().split() if w not in _POSSESSIVE]
    words = [w for w in (" ".join("".join(c for c in w if c.isalnum() or c == "'") for w in words)).split() if w]
    while len(words) > 1 and words[-1].isdigit():  # the user's numbering: "Beach 2", "kitchen_2024"
        words.pop()
    if not words:
        return "in a room"
    if words[0] in PREPOSITIONS:
        return " ".join(words)
    if words[0] in ("a", "an", "the"):
        return "in " + " ".join(words)
    prep = "at" if words[-1] in _AT else "on" if words[-1] in _ON else "in"
    return f"{prep} the " + " ".join(words)


def scan(root: Path | str, *, max_pixels: int, min_side: int) -> Library:
    """Every usable photo under ``root`` (its files and one level of scene folders) with its scene, horizon and
    light; what could not be used (``min_side``: a tiny photo, an icon, is no background) is one line each in
    ``problems``."""
    root = Path(root)
    lib = Library(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in [root, *folders]:
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        files = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        if folder != root:
            for sub in (p for p in entries if p.is_dir()):  # said, not silently skipped
                lib.problems.append(f"{sub}: folder inside the scene folder {folder.name!r} ignored (scene folders "
                                    "are one level deep: move its photos up, or make it a scene folder of its own)")
            if not files:
                lib.problems.append(f"{folder}: scene folder {folder.name!r} holds no photos")
        for path in files:
            scene = None if folder == root else folder.name
            photo = _read_photo(path, scene, max_pixels, min_side, lib.problems, lib.notes)
            if photo is not None:
                lib.photos.append(photo)
        claimed = {side for path in files for ext in SIDECARS if (side := _side(path, ext))}
        for orphan in (p for p in entries if p.is_file() and p.suffix.lower() in SIDECARS and p not in claimed):
            lib.problems.append(f"{orphan}: sidecar of no photo here, ignored (name it after its photo: "
                                "beach.jpg -> beach.txt or beach.json)")
    return lib


def _read_photo(path: Path, scene: str | None, max_pixels: int, min_side: int, problems: list[str],
                notes_out: list[str]) -> Backdrop | None:
    side = _sidecar(path, problems)
    scene = (side.scene if side and side.scene else None) or _caption(path, problems) or scene
    if not scene or not scene_words(scene):
        problems.append(f"{path}: no scene: put it in a scene folder (kitchen/) or write {path.stem}.txt "
                        "with its scene")
        return None
    try:
        small, size, notes = _small_copy(path, max_pixels, min_side)
    except ValueError as e:
        problems.append(f"{path}: {e}")
        return None
    estimated = []
    horizon = side.horizon if side and side.horizon is not None else None
    if horizon is None:
        horizon, estimated = estimate_ground(small), ["horizon"]
    light = side.light if side and side.light is not None else None
    if light is None:
        light, estimated = estimate_light(small, horizon), [*estimated, "light"]
    for note in notes:
        notes_out.append(f"{path}: {note}")
    return Backdrop(path, " ".join(scene.split()), size, float(horizon), float(light), tuple(estimated), tuple(notes))


SIDECARS = (".txt", ".json")


def _side(path: Path, ext: str) -> Path | None:
    """The photo's sidecar: ``beach.json``, or ``beach.jpg.json`` as some tools name them."""
    return next((p for p in (path.with_suffix(ext), path.with_name(path.name + ext)) if p.is_file()), None)


def _sidecar(path: Path, problems: list[str]) -> Sidecar | None:
    side = _side(path, ".json")
    if side is None:
        return None
    try:
        return Sidecar.model_validate(json.loads(side.read_text("utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        problems.append(f"{side}: sidecar ignored: not readable JSON ({str(e)[:80]})")
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or '(top)'}: {err['msg']}" for err in e.errors())
        problems.append(f"{side}: sidecar ignored ({errs}): the photo's scene, horizon and light come from "
                        "its folder and the estimate")
    return None


def _caption(path: Path, problems: list[str]) -> str | None:
    side = _side(path, ".txt")
    if side is None:
        return None
    try:
        text = side.read_text("utf-8").strip().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        problems.append(f"{side}: caption ignored: not UTF-8 text ({str(e)[:60]})")
        return None
    line = " ".join(text[0].split())[:80] if text else ""
    if not line or not scene_words(line) or not any(c.isalpha() for c in line):
        problems.append(f"{side}: caption ignored: its first line names no scene")
        return None
    return line


def _small_copy(path: Path, max_pixels: int, min_side: int) -> tuple[np.ndarray, tuple[int, int], list[str]]:
    """The photo decoded at about ``ANALYSIS_SIDE`` px (JPEG draft mode: a 24 MP photo costs milliseconds),
    its full size and notes on converted colour modes; ValueError with the reason when it is not usable."""
    notes = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prev, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with Image.open(path) as im:
                w, h = im.size
                if problem := size_problem(w, h, max_pixels, min_side, "repaint.min_photo_side"):
                    raise ValueError(f"{problem}: left out")
                if im.mode in ("L", "LA", "1", "I", "I;16", "F"):
                    notes.append(f"grayscale photo ({im.mode}): used in grey")
                elif im.mode == "CMYK":
                    notes.append("CMYK photo: converted to RGB")
                if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF rotation by 90 degrees: upright size
                    w, h = h, w
                im.draft("RGB", (ANALYSIS_SIDE * 2, ANALYSIS_SIDE * 2))
                im.load()
                im = ImageOps.exif_transpose(im)
                # the reader's own conversion first: 16-bit grey scaled (Pillow cannot resize I;16: "image has
                # wrong mode"), CMYK and transparency as every other image of the project
                im = Image.fromarray(to_mode(im, "RGB"))
                im.thumbnail((ANALYSIS_SIDE, ANALYSIS_SIDE))
                small = np.asarray(im)
        except ValueError:
            raise
        except Exception as e:  # noqa: BLE001 - any decoder error: this photo is left out, the run goes on
            raise ValueError(f"unreadable photo ({type(e).__name__}: {str(e)[:80]}): left out") from None
        finally:
            Image.MAX_IMAGE_PIXELS = prev
    return small, (int(w), int(h)), notes


def estimate_ground(image: np.ndarray, default: float = 0.4) -> float:
    """Where the ground starts (fraction of H from the top): the row with the strongest change of colour
    between the bands above and below it that is also a long horizontal edge (a horizon, a shoreline, a
    table's or a floor's far edge), searched between 15% and 85% of the height. A photo with no such row
    (a close-up of a wall, a top view of a table) gets ``default``."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    h = lab.shape[0]
    if h < 12:
        return default
    rows = lab.mean(axis=1)  # H x 3
    k = max(3, h // 10)
    csum = np.vstack([np.zeros((1, 3), np.float32), np.cumsum(rows, 0)])
    lo, hi = max(k, int(0.15 * h)), min(h - k, int(0.85 * h))
    if hi <= lo:
        return default
    r = np.arange(lo, hi)
    above = (csum[r] - csum[r - k]) / k
    below = (csum[r + k] - csum[r]) / k
    step = np.linalg.norm(above - below, axis=1)
    grey = cv2.GaussianBlur(lab[..., 0], (0, 0), 1.0)
    gy, gx = np.abs(cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)), np.abs(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3))
    edge = np.where(gy > 2 * gx, gy, 0).mean(axis=1)
    edge = np.convolve(edge, np.ones(3) / 3, "same")[r]
    score = step / max(float(step.max()), 1e-6) + edge / max(float(edge.max()), 1e-6)
    best = int(np.argmax(score))
    if step[best] < 6.0:  # under ~6 Lab units between the bands: no visible horizon
        return default
    return round(float(r[best]) / h, 4)


def estimate_light(image: np.ndarray, horizon: float) -> float:
    """Which side the light comes from (-1 left .. 1 right): the brightness difference between the left and
    right thirds of the photo, the sky or wall above the ground weighted double (it shows the light source)."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    h, w = grey.shape
    third = max(1, w // 3)
    cut = int(np.clip(horizon, 0.1, 0.9) * h)

    def side_diff(part: np.ndarray) -> float:
        left, right = float(part[:, :third].mean()), float(part[:, -third:].mean())
        return (right - left) / max(1.0, (right + left) / 2)

    d = (2 * side_diff(grey[:cut]) + side_diff(grey[cut:])) / 3
    return round(float(np.clip(d * 5.0, -1.0, 1.0)), 3)


__all__ = ["Sidecar", "Backdrop", "Library", "scene_phrase", "scan", "estimate_ground", "estimate_light"]


# the last scan, by folder, settings and listing: `stage=all` reads the folder in s2 and again in s3, and its
# photos are decoded (and their lines said) once while it is unchanged
_LAST_SCAN: dict[tuple, Library] = {}


def _listing(root: Path) -> tuple:
    """What the scan reads, as name, size and time of every entry of the folder and of its scene folders."""
    entries = []
    for folder in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        for p in sorted(folder.iterdir()):
            st = p.stat()
            entries.append((str(p), st.st_size, st.st_mtime_ns))
    return tuple(entries)


def library_for(repaint: RepaintSettings, io: IOSettings, log=None) -> Library | None:
    """The run's background photos when ``repaint.backgrounds`` is set and the source is auto or photo; every
    photo, folder or sidecar that cannot be used is one warning line. UserError when nothing is usable."""
    from gen4gen.errors import UserError

    if not repaint.backgrounds or repaint.kind != "photo":
        return None
    root = Path(repaint.backgrounds).expanduser()
    if root.is_file():
        raise UserError(f"repaint.backgrounds={root} is a file; give the folder of photos it lies in "
                        f"(repaint.backgrounds={root.parent}), its sub-folders name the scenes")
    if not root.is_dir():
        raise UserError(f"repaint.backgrounds={root} does not exist; expected a folder of photos, e.g. "
                        f"{root}/kitchen/photo1.jpg (sub-folders name the scene)")
    key = (str(root), io.max_pixels, repaint.min_photo_side, _listing(root))
    lib = _LAST_SCAN.get(key)
    if lib is None:
        lib = scan(root, max_pixels=io.max_pixels, min_side=repaint.min_photo_side)
        _LAST_SCAN.clear()
        _LAST_SCAN[key] = lib
        for line in lib.problems + lib.notes:
            (log.warning if log else print)(f"background photo: {line}")
    if not lib.photos:
        raise UserError(f"no usable background photo under {root} ({len(lib.problems)} problem(s) above); expected "
                        "photos in scene folders (kitchen/, living_room/) or with a <photo>.txt naming the scene")
    return lib
