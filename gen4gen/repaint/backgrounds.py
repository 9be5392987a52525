"""Background sources for s3: the user's photos, a noise start, or procedural scenes (a preview).

A composition gets up to ``max_backgrounds`` sources (one output variant each). Photos come from the
user's folder (``repaint/photos.py``): the photo s2 chose for the layout first, then other photos of its
scene, then other crops of them; noise is Gen4Gen's ``--noise-bkg`` start; procedural scenes are
gradients and textures picked from the phrase (garden -> sky over grass, beach -> sea over sand,
desert -> dunes under a hot sky, kitchen -> wall over a wood table) so the embedded demo needs no downloads;
they are a preview, not photographs. Every phrase the built-in planner can choose names one of these styles
(``layout/scenes.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from gen4gen.artefacts import Layout
from gen4gen.layout.scenes import STYLE_WORDS, scene_words, style_for  # noqa: F401 - one vocabulary for s2 and s3
from gen4gen.repaint.photo_crop import render_photo
from gen4gen.repaint.photos import Backdrop, Library, scene_phrase

KINDS = ("photo", "noise", "procedural")


@dataclass(frozen=True)
class BackgroundSource:
    kind: str  # photo | noise | procedural
    phrase: str  # background prompt phrase, e.g. "in the garden"
    source: str | None = None  # photo path, or the procedural style name
    fallback: str | None = None  # why this is not the kind that was asked for
    scene: str | None = None  # the photo's scene (its folder or sidecar)
    crop: int = 0  # which crop of the photo (variants that share a photo get different ones)
    note: str | None = None  # why this photo's scene is not one the layout named

    def describe(self) -> dict:
        out = {"kind": self.kind, "source": self.source, "phrase": self.phrase, "fallback": self.fallback}
        if self.kind == "photo":
            out.update(scene=self.scene, crop=self.crop, **({"note": self.note} if self.note else {}))
        return out


def layout_phrases(layout: Layout) -> list[str]:
    """The layout's scene phrases, the chosen background prompt first, without repeats."""
    phrases = [layout.background_prompt, *layout.scenes]
    out: list[str] = []
    for p in phrases:
        if isinstance(p, str) and p.strip() and p.strip() not in out:
            out.append(p.strip())
    return out or ["in a room"]


def _matches(folder: str, phrase: str) -> bool:
    fw, pw = scene_words(scene_phrase(folder)), scene_words(phrase)
    return bool(fw) and all(any(p == f or p == f + "s" or f == p + "s" for p in pw) for f in fw)


def plan_sources(layout: Layout, *, kind: str, max_backgrounds: int, rng: np.random.Generator,
                 library: Library | None = None, rank=None) -> list[BackgroundSource]:
    """Up to ``max_backgrounds`` sources for one composition, deterministic for a given ``rng``. Photos: the one
    s2 chose for the layout (``layout.backdrop``) first, then the other photos of its scene, then other crops of
    them; a layout made without the folder gets a scene its phrases name, else the scene that fits its concepts
    best by meaning (``rank``: ``SceneFit.rank``), else any scene (never a refusal)."""
    if kind not in KINDS:
        raise ValueError(f"unknown background source {kind!r}; choose one of {', '.join(KINDS)}")
    n = max(1, int(max_backgrounds))
    phrases = layout_phrases(layout)
    if kind == "photo" and library is not None and library.photos:
        scenes = library.scenes
        chosen = library.by_path(str((layout.backdrop or {}).get("photo") or ""))
        note = None
        scene = chosen.scene if chosen else next((s for p in phrases for s in sorted(scenes) if _matches(s, p)), None)
        if scene is None and rank is not None:
            scene = rank(sorted({o.concept for o in layout.objects}), sorted(scenes))[0][0]
            note = (f"no scene of the background folder matches {phrases}: {scene!r} fits the concepts best by "
                    "meaning (s2 with repaint.backgrounds set also stands them on its photo's ground)")
        elif scene is None:
            scene = sorted(scenes)[int(rng.integers(len(scenes)))]
            note = (f"no scene of the background folder matches {phrases}: a photo of {scene!r} is used "
                    "(s2 with repaint.backgrounds set chooses scenes that fit)")
        photos = scenes[scene]
        start = photos.index(chosen) if chosen else int(rng.integers(len(photos)))
        order = photos[start:] + photos[:start]  # different photos first, then other crops of them
        return [BackgroundSource("photo", scene_phrase(scene), str(order[k % len(order)].path), scene=scene,
                                 crop=k // len(order), note=note) for k in range(n)]
    if kind == "photo":
        reason = "no usable background photo"
        return [BackgroundSource("procedural", p, style_for(p), fallback=reason) for p in _cycle(phrases, n)]
    if kind == "noise":
        return [BackgroundSource("noise", p) for p in _cycle(phrases, n)]
    return [BackgroundSource("procedural", p, style_for(p)) for p in _cycle(phrases, n)]


def _cycle(items: list[str], n: int) -> list[str]:
    return [items[k % len(items)] for k in range(n)]


def _round_robin(groups: list[list]) -> list:
    out, k = [], 0
    while any(k < len(g) for g in groups):
        out += [g[k] for g in groups if k < len(g)]
        k += 1
    return out


def render(src: BackgroundSource, size: tuple[int, int], rng: np.random.Generator, *,
           photo_blur: float = 1.0, max_pixels: int = 80_000_000, horizon_max: float | None = None,
           horizon: float | None = None) -> np.ndarray:
    """The background as uint8 HxWx3 of ``size`` = (W, H); ``horizon_max`` (fraction of H) keeps a
    procedural horizon above the objects' feet (see ``feet_line``), ``horizon`` is the layout's camera one."""
    w, h = size
    if src.kind == "noise":
        return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    if src.kind == "photo":  # a photo whose horizon is not known: the centred crop (the stage uses render_photo)
        photo = Backdrop(Path(src.source), src.scene or "", (0, 0), 0.5, 0.0)
        return render_photo(photo, size, target=None, variant=src.crop, blur=photo_blur, max_pixels=max_pixels)[0]
    return procedural(src.source or style_for(src.phrase), w, h, rng, horizon_max=horizon_max, horizon=horizon)


def feet_line(mask: np.ndarray, min_area: float = 0.002) -> float | None:
    """The highest bottom edge of the concepts (fraction of H), so a procedural horizon can sit above it
    and every object stands on the ground instead of floating against the sky or a wall."""
    solid = (mask > (127 if mask.dtype == np.uint8 else 0.5)).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(solid, connectivity=8)
    h = mask.shape[0]
    bottoms = [(y + bh) / h for x, y, bw, bh, area in stats[1:] if area >= min_area * mask.size]
    return min(bottoms) if bottoms else None


def structure(image: np.ndarray, side: int = 128, edge: float = 24.0) -> np.ndarray:
    """HxW bool: where the photo has object structure (outlines and the parts between them) rather than
    flat or fine texture: strong edges of the softened image at ``side`` px, closed over a few pixels.
    Near-horizontal edges (a horizon, a shoreline, a table edge) are scenery, not objects: left out."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (side, max(1, round(side * h / w))), interpolation=cv2.INTER_AREA)
    grey = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), 1.5)
    gx, gy = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3) / 4.0, cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3) / 4.0
    mag = np.hypot(gx, gy)
    edges = ((mag > edge) & (np.abs(gx) > 0.35 * mag)).astype(np.uint8)
    closed = cv2.morphologyEx(edges, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    return cv2.resize(closed, (w, h), interpolation=cv2.INTER_NEAREST) > 0


def salient_share(background: np.ndarray, concepts: np.ndarray, reach: float = 0.05) -> float:
    """Share of the place where the concepts stand (their mask widened by ``reach`` of the width) that the
    background photo fills with object structure: high means something (a bicycle) competes with them."""
    h, w = concepts.shape
    k = max(3, int(reach * w) | 1)
    region = cv2.dilate(concepts.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    if not region.any():
        return 0.0
    return float(structure(background)[region].mean())


def cover(image: np.ndarray, w: int, h: int) -> np.ndarray:
    """Scale ``image`` to cover ``w``x``h`` and crop the centre."""
    ih, iw = image.shape[:2]
    s = max(w / iw, h / ih)
    nw, nh = max(w, round(iw * s)), max(h, round(ih * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    scaled = cv2.resize(image, (nw, nh), interpolation=interp)
    x0, y0 = (nw - w) // 2, (nh - h) // 2
    return np.ascontiguousarray(scaled[y0:y0 + h, x0:x0 + w])


# ---------------------------------------------------------------- procedural scenes
def _noise(rng: np.random.Generator, h: int, w: int, cells: tuple[float, float], octaves: int = 3) -> np.ndarray:
    """Smooth value noise in [0, 1]; ``cells`` = (rows, cols) of the coarsest grid (anisotropic -> streaks)."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        gh, gw = max(2, int(cells[0] * 2 ** o)), max(2, int(cells[1] * 2 ** o))
        grid = rng.random((gh, gw), dtype=np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
    out /= total
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / max(hi - lo, 1e-6)


def _vgrad(h: int, w: int, top, bottom, y0: int = 0, y1: int | None = None) -> np.ndarray:
    y1 = h if y1 is None else y1
    t = np.linspace(0.0, 1.0, max(1, y1 - y0), dtype=np.float32)[:, None, None]
    col = (1 - t) * np.asarray(top, np.float32) + t * np.asarray(bottom, np.float32)
    return np.broadcast_to(col, (y1 - y0, w, 3)).copy()


def _jitter(rng: np.random.Generator, colour, amount: float = 12.0) -> np.ndarray:
    return np.clip(np.asarray(colour, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


def _sky(rng, h, w, horizon, top=(105, 155, 222), low=(205, 226, 244)) -> np.ndarray:
    sky = _vgrad(horizon, w, _jitter(rng, top), _jitter(rng, low))
    clouds = _noise(rng, horizon, w, (2, 4), octaves=4)
    cloud_w = np.clip((clouds - 0.55) * 2.5, 0, 1)[..., None] * 0.6
    return sky * (1 - cloud_w) + 245.0 * cloud_w


def _ground(rng, h, w, far, near, streak: tuple[float, float], amount: float) -> np.ndarray:
    g = _vgrad(h, w, _jitter(rng, far), _jitter(rng, near))
    tex = _noise(rng, h, w, streak, octaves=4)
    return g * (1.0 + amount * (tex[..., None] - 0.5))


def _ridge(rng, w: int, base: int, height: int) -> np.ndarray:
    """A row index per column: a jagged skyline (treeline, mountains) above ``base``."""
    line = _noise(rng, 1, w, (1, 6), octaves=4)[0]
    return (base - line * height).astype(np.int32)


def _paint_above(img: np.ndarray, ridge: np.ndarray, base: int, colour_top, colour_bottom) -> None:
    h, w = img.shape[:2]
    ys = np.arange(h)[:, None]
    band = (ys >= ridge[None, :]) & (ys < base)
    if band.any():
        layer = _vgrad(h, w, colour_top, colour_bottom)
        img[band] = layer[band]


NO_GROUND = ("night", "underwater")  # drawn without a ground: no shadow falls anywhere


def _horizon_row(style: str, h: int, rng: np.random.Generator, horizon_max: float | None,
                 horizon: float | None) -> tuple[int, float]:
    """The horizon row of a procedural scene and the share of its sea band (the first draws of ``rng``)."""
    hz = rng.uniform(0.38, 0.5)  # horizon / wall-floor line: objects stand below it
    if horizon is not None:
        hz = float(horizon)
    sea_frac = rng.uniform(0.08, 0.14) if style == "beach" else 0.0  # the sea band lies behind the objects too
    if horizon_max is not None:
        hz = min(hz, horizon_max - 0.04 - sea_frac)
    return int(h * max(0.15, hz)), sea_frac


def procedural_ground(style: str, h: int, seed: int, horizon_max: float | None = None,
                      horizon: float | None = None) -> float | None:
    """Where the ground of ``procedural(style, ..., default_rng(seed))`` starts (fraction of H): the land or
    floor below its horizon (the sand, not the sea); None for a scene without ground (a starry sky)."""
    if style in NO_GROUND:
        return None
    hz, sea_frac = _horizon_row(style, h, np.random.default_rng(seed), horizon_max, horizon)
    return (hz + int(h * sea_frac)) / h


def procedural(style: str, w: int, h: int, rng: np.random.Generator, horizon_max: float | None = None,
               horizon: float | None = None) -> np.ndarray:
    """A plausible, soft scene background of ``style`` as uint8 HxWx3 (see ``STYLE_WORDS``); ``horizon``
    (fraction of H) is the planner's, so the ground plane the objects were sized for is the one drawn."""
    hz, sea_frac = _horizon_row(style, h, rng, horizon_max, horizon)
    img = np.empty((h, w, 3), np.float32)
    if style == "garden":
        img[:hz] = _sky(rng, h, w, hz)
        img[hz:] = _ground(rng, h - hz, w, (128, 170, 88), (58, 118, 42), (h / 10, w / 90), 0.45)
        _paint_above(img, _ridge(rng, w, hz + 2, int(h * 0.12)), hz + 2, _jitter(rng, (50, 95, 45)), (70, 120, 55))
    elif style == "beach":
        sea = hz + int(h * sea_frac)
        img[:hz] = _sky(rng, h, w, hz)
        img[hz:sea] = _ground(rng, sea - hz, w, (52, 112, 160), (88, 168, 196), (h / 60, w / 8), 0.25)
        img[sea:] = _ground(rng, h - sea, w, (226, 208, 166), (204, 178, 128), (h / 40, w / 30), 0.18)
    elif style == "desert":  # dunes under a hot, hazy sky: sand all the way to the horizon, no sea
        img[:hz] = _sky(rng, h, w, hz, top=(120, 165, 215), low=(232, 222, 200))
        img[hz:] = _ground(rng, h - hz, w, (226, 180, 120), (204, 146, 88), (h / 40, w / 12), 0.22)
        _paint_above(img, _ridge(rng, w, hz + 2, int(h * 0.07)), hz + 2, _jitter(rng, (206, 160, 104)), (214, 172, 116))
    elif style == "savanna":  # dry yellow grass, a far line of olive scrub
        img[:hz] = _sky(rng, h, w, hz, top=(110, 160, 220), low=(225, 225, 215))
        img[hz:] = _ground(rng, h - hz, w, (186, 180, 98), (150, 140, 66), (h / 12, w / 90), 0.4)
        _paint_above(img, _ridge(rng, w, hz + 2, int(h * 0.04)), hz + 2, _jitter(rng, (104, 108, 58)), (120, 118, 64))
    elif style == "farm":  # a green pasture, a red barn and a wooden fence at the back
        img[:hz] = _sky(rng, h, w, hz)
        img[hz:] = _ground(rng, h - hz, w, (120, 166, 84), (62, 120, 44), (h / 10, w / 90), 0.45)
        bw, bh = int(w * rng.uniform(0.14, 0.22)), int(h * rng.uniform(0.1, 0.14))
        bx = int(rng.uniform(0.05, 0.95) * w - bw / 2)
        x0, x1 = max(0, bx), min(w, bx + bw)
        img[max(0, hz - bh):hz + 1, x0:x1] = _jitter(rng, (158, 42, 36), 8)  # barn wall
        img[max(0, hz - bh - bh // 3):max(0, hz - bh), x0:x1] = _jitter(rng, (70, 52, 48), 6)  # roof
        rail = (128, 96, 62)
        for y in (hz + max(2, h // 60), hz + max(4, h // 30)):
            img[y:y + max(1, h // 200)] = rail
        img[hz:hz + max(5, h // 24), ::max(6, w // 24)] = rail  # posts
    elif style == "moon":  # grey regolith with craters under a black sky with stars
        img[:hz] = 6.0
        stars = rng.random((hz, w)) > 0.997
        img[:hz][stars] = 230.0
        img[hz:] = _ground(rng, h - hz, w, (120, 120, 122), (160, 160, 160), (h / 20, w / 20), 0.35)
        for _ in range(int(rng.integers(5, 10))):
            cx, cy = int(rng.uniform(0, w)), int(rng.uniform(hz, h))
            rx = int(w * rng.uniform(0.02, 0.07) * (0.4 + 0.6 * (cy - hz) / max(1, h - hz)))
            cv2.ellipse(img, (cx, cy), (max(2, rx), max(1, rx // 3)), 0, 0, 360, (92, 92, 94), -1)
    elif style == "water":
        img[:hz] = _sky(rng, h, w, hz)
        img[hz:] = _ground(rng, h - hz, w, (70, 125, 170), (30, 80, 125), (h / 50, w / 6), 0.3)
    elif style == "snow":
        img[:hz] = _sky(rng, h, w, hz, top=(120, 160, 210), low=(215, 228, 240))
        _paint_above(img, _ridge(rng, w, hz, int(h * 0.22)), hz, _jitter(rng, (120, 130, 150)), (175, 185, 200))
        img[hz:] = _ground(rng, h - hz, w, (225, 232, 242), (242, 246, 252), (h / 30, w / 20), 0.08)
    elif style == "city":
        img[:hz] = _ground(rng, hz, w, (185, 180, 175), (150, 148, 150), (4, w / 60), 0.35)
        img[hz:] = _ground(rng, h - hz, w, (165, 163, 160), (120, 118, 116), (h / 25, w / 25), 0.2)
        tile = max(8, w // 12)
        img[hz:, ::tile] *= 0.82  # pavement joints
    elif style in ("kitchen", "room"):
        # a warm kitchen wall over a dark table top, a cool grey room wall over a lighter floor
        wall = ((240, 224, 196), (218, 198, 168)) if style == "kitchen" else ((208, 214, 222), (186, 192, 200))
        img[:hz] = _ground(rng, hz, w, wall[0], wall[1], (3, 4), 0.08)
        wood_far, wood_near = ((150, 102, 62), (118, 76, 44)) if style == "kitchen" else ((176, 132, 92), (140, 98, 62))
        floor = _vgrad(h - hz, w, _jitter(rng, wood_far, 10), _jitter(rng, wood_near, 10))
        warp = _noise(rng, h - hz, w, (4, 3), octaves=3)
        ys = np.linspace(0, 1, h - hz, dtype=np.float32)[:, None]
        grain = 0.5 + 0.5 * np.sin(2 * np.pi * (ys * rng.uniform(40, 70) * (1 + ys) + 3.0 * warp))  # wood grain
        floor *= (0.86 + 0.2 * grain)[..., None]
        planks = max(6, (h - hz) // 7)
        floor[::planks] *= 0.75
        img[hz:] = floor
        img[hz:hz + max(2, h // 120)] *= 0.7  # edge line (table front / skirting board) gives depth
    elif style == "night":
        img[:] = _vgrad(h, w, _jitter(rng, (8, 12, 36)), _jitter(rng, (38, 46, 96)))
        stars = rng.random((h, w)) > 0.9985
        img[stars] = 235.0
        img = cv2.GaussianBlur(img, (0, 0), 0.7)
    elif style == "underwater":
        img[:] = _ground(rng, h, w, (60, 160, 185), (10, 55, 105), (h / 12, w / 12), 0.3)
    else:  # studio backdrop: a soft radial gradient
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r = np.sqrt(((xx - w / 2) / w) ** 2 + ((yy - h * 0.4) / h) ** 2)[..., None]
        img[:] = _jitter(rng, (214, 212, 208)) * (1 - r) + _jitter(rng, (150, 148, 152)) * r
    img = cv2.GaussianBlur(img, (0, 0), max(0.6, min(w, h) / 1024))  # camera softness: no aliasing stripes
    return np.clip(img, 0, 255).astype(np.uint8)
