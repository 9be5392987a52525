"""Identity scores of one found concept against reference sets (pure functions, any image encoder).

``identity_mix`` is a Detect-and-Compare-style margin (MuDI): a concept found in the image is compared with its
own references and with every *other* concept's references of the dataset; its margin is
``own - max(others)``. A correct concept scores above 0, a swapped or blended one (the user's cat with the
dog's fur) near or below 0 even when it still looks like "a cat". A concept not found at all is *missing*: it
counts as ``MISSING`` (-1, below what a swap gives with any cosine backbone in practice) in the image's mean
and is counted in ``identity_missing``.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from gen4gen.encoders import unit

MISSING = -1.0


def reference_similarity(image_emb: np.ndarray, ref_embs: np.ndarray) -> float:
    """Mean cosine between one image and a set of references (CLIP-I, DINO); NaN without references."""
    ref_embs = np.asarray(ref_embs)
    if ref_embs.size == 0:
        return math.nan
    return float(np.mean(unit(ref_embs) @ unit(image_emb)))


def identity_margins(crop_embs: Mapping[str, np.ndarray | None],
                     refs: Mapping[str, np.ndarray]) -> dict[str, float | None]:
    """Per concept of the image: own-reference similarity minus the best other concept's (``refs`` holds every
    concept of the dataset); None when the concept was not found, NaN when nothing can be compared."""
    out: dict[str, float | None] = {}
    for c, emb in crop_embs.items():
        if emb is None:
            out[c] = None
            continue
        own = reference_similarity(emb, refs.get(c, np.zeros((0, 1))))
        others = [reference_similarity(emb, r) for o, r in refs.items() if o != c and np.asarray(r).size]
        out[c] = math.nan if math.isnan(own) or not others else own - max(others)
    return out


def identity_mix_score(margins: Mapping[str, float | None]) -> float:
    """The image's score: mean margin over its concepts, a missing one counted as ``MISSING``."""
    vals = [MISSING if m is None else m for m in margins.values() if m is None or not math.isnan(m)]
    return float(np.mean(vals)) if vals else math.nan


def cp_clip_score(crop_embs: Mapping[str, np.ndarray | None], refs: Mapping[str, np.ndarray]) -> float:
    """CP-CLIP's rule with any encoder: mean over concepts of the crop's similarity to its own references;
    a concept not found scores 0."""
    if not crop_embs:
        return math.nan
    return float(np.mean([0.0 if e is None else reference_similarity(e, refs[c]) for c, e in crop_embs.items()]))
