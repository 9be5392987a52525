"""Scene phrases: which kind of background a phrase names, which kinds fit which concepts.

One vocabulary for s2 and s3: the planner only suggests phrases whose kind the classical repainter
draws (``repaint/backgrounds.procedural`` has one style per kind below), and only kinds that every
concept of the composition fits (a horse is never "in a cozy living room", a cup never "on a farm").
An LLM's phrases go through ``scene_conflict`` and are replaced, with the reason, when they fail it.
"""
from __future__ import annotations

import re

import numpy as np

_FILLER = {"in", "on", "at", "the", "a", "an", "over", "by", "near", "inside", "under", "of", "with", "and", "into",
           "onto", "beside", "next", "to", "front", "top"}

# style -> words that pick it; checked in this order, so "underwater" wins over "water", "kitchen table" over
# "room", "starry sky" over "sky", "desert" never falls to "beach" (a desert has no sea)
STYLE_WORDS: dict[str, tuple[str, ...]] = {
    "underwater": ("underwater", "aquarium", "reef", "coral"),
    "moon": ("moon", "lunar", "crater", "craters"),
    "night": ("galaxy", "space", "night", "stars", "starry", "universe"),
    "kitchen": ("kitchen", "table", "cafe", "restaurant", "counter", "dining", "desk", "bar"),
    "room": ("room", "sofa", "couch", "bedroom", "living", "playroom", "office", "gallery", "museum", "closet",
             "house", "home", "indoors", "bed", "carpet", "floor", "store", "shop", "gym", "laboratory", "library",
             "apartment"),
    "desert": ("desert", "dune", "dunes", "sahara", "oasis", "canyon"),
    "savanna": ("savanna", "savannah", "safari", "steppe", "prairie"),
    "beach": ("beach", "sand", "sandy", "shore", "coast", "seaside"),
    "water": ("sea", "ocean", "lake", "harbor", "harbour", "pond", "river", "boat"),
    "snow": ("snow", "snowy", "mountain", "mountains", "winter", "ice", "glacier"),
    "city": ("city", "street", "sidewalk", "road", "playground", "town", "village", "airport", "square",
             "parking"),
    "farm": ("farm", "barn", "pasture", "ranch", "paddock", "farmyard", "stable"),
    "garden": ("garden", "park", "grass", "grassy", "meadow", "field", "lawn", "countryside", "yard", "backyard",
               "forest", "jungle", "grassland", "grasslands", "zoo", "woods", "hill", "outdoors", "sky"),
    "studio": ("studio", "backdrop"),
}
NEUTRAL = "studio"  # a plain backdrop contradicts no concept

# the phrases the built-in planner suggests, per style (each one drawn as its style)
STYLE_PHRASES: dict[str, list[str]] = {
    "garden": ["in the garden", "on a sunny lawn", "in a park", "in a green meadow", "in a grassy field",
               "at the edge of a forest"],
    "farm": ["on a farm", "in a fenced pasture"],
    "savanna": ["on the savanna"],
    "desert": ["in the desert"],
    "beach": ["at the beach", "on a sandy beach"],
    "snow": ["in the snow", "in a snowy landscape"],
    "city": ["on a city street", "in a town square", "in a parking lot"],
    "room": ["in a cozy living room", "in a bright living room", "on a wooden floor", "in a playroom",
             "in a cozy bedroom"],
    "kitchen": ["on a kitchen table", "on a wooden desk", "on a wooden table", "in a cozy cafe"],
    "night": ["under a starry sky"],
    "moon": ["on the surface of the moon"],
    "studio": ["in a photo studio", "in front of a plain backdrop", "on a seamless studio backdrop"],
}

# concept category (heuristic.SIZES) -> the styles it fits, best first; studio fits everything. Pets and
# tableware share real scenes (a cat beside a mug on a kitchen table or in a living room), not only the studio
CATEGORY_STYLES: dict[str, tuple[str, ...]] = {
    "pet": ("garden", "room", "kitchen", "beach", "snow", "farm", "city"),
    "small_animal": ("garden", "room", "kitchen"),
    "wild": ("savanna", "garden", "snow"),
    "farm": ("farm", "garden", "beach", "snow"),
    "plant": ("room", "kitchen", "garden"),
    "tableware": ("kitchen", "room"),
    "toy": ("room", "kitchen", "garden"),
    "space": ("moon", "desert", "night"),
    "vehicle": ("city", "desert", "snow"),
    "person": ("garden", "city", "beach", "room", "snow"),
    "furniture": ("room",),
    "object": ("kitchen", "room", "garden"),
}


def scene_words(text: str) -> list[str]:
    """Content words of a scene phrase or folder name: "in the living-room" -> ["living", "room"]."""
    return [w for w in re.split(r"[\W_]+", str(text).lower()) if w and w not in _FILLER]  # any script: "café", "草地"


def matched_style(phrase: str) -> str | None:
    """The background style a phrase names, None when no word of it is known."""
    words = scene_words(phrase)
    for style, keys in STYLE_WORDS.items():
        if any(w in keys or w.rstrip("s") in keys for w in words):
            return style
    return None


def style_for(phrase: str) -> str:
    """The style to draw for a phrase; a plain studio backdrop when nothing matches."""
    return matched_style(phrase) or NEUTRAL


def fitting_styles(categories: list[str]) -> list[str]:
    """Styles every category fits, best first by summed rank; the neutral studio last."""
    allowed = [set(CATEGORY_STYLES.get(c, CATEGORY_STYLES["object"])) for c in categories]
    common = set.intersection(*allowed) if allowed else set(CATEGORY_STYLES["object"])
    rank = {s: sum(CATEGORY_STYLES.get(c, CATEGORY_STYLES["object"]).index(s) for c in categories) for s in common}
    return sorted(common, key=lambda s: (rank[s], s)) + [NEUTRAL]


def scene_conflict(phrase: str, categories: list[str]) -> str | None:
    """Why ``phrase`` does not fit the concepts (None when it does)."""
    style = matched_style(phrase)
    if style is None:
        return f"{phrase!r} names no background the classical repainter can draw"
    if style == NEUTRAL:
        return None
    misfits = sorted({c for c in categories if style not in CATEGORY_STYLES.get(c, CATEGORY_STYLES["object"])})
    if misfits:
        return f"{phrase!r} ({style}) does not fit {', '.join(misfits)} concepts"
    return None


def suggest_scenes(categories: list[str], rng: np.random.Generator, k: int = 3) -> list[str]:
    """``k`` phrases that fit every category: the best styles first, one phrase per style while there are
    enough styles, phrases and ties drawn by ``rng``; neutral studio phrases fill up a set with few common styles."""
    styles = fitting_styles(categories)
    pools = {s: [STYLE_PHRASES[s][i] for i in rng.permutation(len(STYLE_PHRASES[s]))] for s in styles}
    # the two best styles always, the others in a seeded order so the third scene varies, studio last
    real = styles[:-1]
    head, rest = real[:2], real[2:]
    tail = [rest[i] for i in rng.permutation(len(rest))] + [NEUTRAL]
    out: list[str] = []
    while len(out) < k and any(pools.values()):
        for s in head + tail:
            if pools[s] and len(out) < k:
                out.append(pools[s].pop(0))
    return out


__all__ = ["STYLE_WORDS", "STYLE_PHRASES", "CATEGORY_STYLES", "NEUTRAL", "scene_words", "matched_style", "style_for",
           "fitting_styles", "scene_conflict", "suggest_scenes"]
