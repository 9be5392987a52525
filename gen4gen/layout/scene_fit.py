"""Which of the user's scenes fit a set of concepts, by meaning: the embedded MiniLM scores a concept's name
against a scene's name, and the keyword table (``layout/scenes.py``) adds what it knows.

A name the table does not know ("zorblax", "my_grandmas_porch") still gets a score from the embeddings, and a
concept set that fits no scene well still gets the best of them: the user's folder is never refused.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from gen4gen.layout.heuristic import size_prior, size_source
from gen4gen.layout.scenes import CATEGORY_STYLES, NEUTRAL, matched_style, scene_words
from gen4gen.layout.schema import prompt_label

TABLE_BONUS = 0.2  # the table knows the scene's kind and the concept fits it best (or does not: the same off)
# scenes scoring within this of the best fit too: samples take turns among them, each as often as it fits (a cat
# and a mug: kitchen 0.48, living room 0.39, garden 0.12, desert 0.01; a cat and a dog: garden 0.48, living room
# 0.48, kitchen 0.43, beach 0.30); a scene's share falls to nothing at the edge, so no cliff at the margin
FIT_MARGIN = 0.15


Embed = Callable[[Sequence[str]], np.ndarray]  # texts -> L2-normalised rows


class _LazyMiniLM:
    """The embedded MiniLM, loaded only when the disk cache misses a text (a rerun loads no model)."""
    name, dim, normalised = "all-MiniLM-L6-v2", 384, True

    def __init__(self):
        self.model = None

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self.model is None:
            from gen4gen.encoders import MiniLM

            self.model = MiniLM(device="cpu")
        return self.model.encode_texts(texts)


def minilm_embed(cache_dir: str | None = None) -> Embed:
    """MiniLM sentence embeddings behind the shared on-disk text-embedding cache."""
    from gen4gen.search.features import CachedTextEncoder

    enc = CachedTextEncoder(_LazyMiniLM(), cache_dir)
    return lambda texts: enc.encode_texts(list(texts))


class SceneFit:
    """Scores scene names against concept names; remembers every set it scored."""

    def __init__(self, embed: Embed):
        self.embed = embed
        self._memo: dict[tuple, list[tuple[str, float]]] = {}
        self._turns: dict[tuple, list[str]] = {}

    def fit(self, concepts: Sequence[str], scenes: Sequence[str]) -> np.ndarray:
        """len(concepts) x len(scenes): how well each concept fits each scene (cosine + table bonus)."""
        labels = [prompt_label(c) for c in concepts]
        names = [" ".join(scene_words(s)) or str(s) for s in scenes]
        vecs = self.embed(labels + names)
        sim = vecs[:len(labels)] @ vecs[len(labels):].T
        for j, name in enumerate(names):
            style = matched_style(name)
            if style is None or style == NEUTRAL:
                continue
            for i, c in enumerate(concepts):
                if size_source(c) == "unknown":  # the table knows nothing of it: meaning alone decides
                    continue
                styles = CATEGORY_STYLES.get(size_prior(c)[0], CATEGORY_STYLES["object"])
                # the table lists a category's styles best first: a pet's garden before its kitchen table
                sim[i, j] += TABLE_BONUS * (1 - styles.index(style) / len(styles)) if style in styles \
                    else -TABLE_BONUS
        return sim

    def rank(self, concepts: Sequence[str], scenes: Sequence[str]) -> list[tuple[str, float]]:
        """Scenes best first with their score: every concept must fit (the worst one counts most)."""
        key = (tuple(concepts), tuple(scenes))
        if key not in self._memo:
            sim = self.fit(concepts, scenes)
            score = 0.6 * sim.min(axis=0) + 0.4 * sim.mean(axis=0)
            order = sorted(range(len(scenes)), key=lambda j: (-score[j], scenes[j]))
            self._memo[key] = [(scenes[j], round(float(score[j]), 4)) for j in order]
        return self._memo[key]

    def choose(self, concepts: Sequence[str], scenes: Sequence[str], sample: int) -> tuple[str, list[str], int]:
        """The scene of one composition, the scenes ranked best first, and how many earlier samples of the set
        had that scene (its photos take turns by it). Samples take turns among the scenes that fit about as well
        as the best one, weighted by how well, so a user's folders that fit are all used."""
        key = (tuple(concepts), tuple(scenes))
        ranked = self.rank(concepts, scenes)
        order = self._turns.get(key, [])
        if len(order) <= sample:  # computed once per set for all its samples so far (and as many more)
            order = self._turns[key] = turns(ranked, 2 * sample + 2)
        return order[sample], [s for s, _ in ranked], order[:sample].count(order[sample])


def turns(ranked: list[tuple[str, float]], n: int) -> list[str]:
    """The scenes of samples 0..n-1 of a set: smooth weighted round-robin over the scenes within ``FIT_MARGIN`` of
    the best (weight: how far inside the margin), so every prefix of samples holds each about its share, in an
    order that depends on nothing but the scores (items run in any order, in any shard)."""
    best = ranked[0][1]
    weights = {s: v - (best - FIT_MARGIN) for s, v in ranked if v > best - FIT_MARGIN}
    total = sum(weights.values())
    credit = dict.fromkeys(weights, 0.0)
    out = []
    for _ in range(n):
        for s in credit:
            credit[s] += weights[s]
        pick = max(credit, key=lambda s: credit[s])  # ties: the better ranked (dicts keep the rank order)
        credit[pick] -= total
        out.append(pick)
    return out


__all__ = ["SceneFit", "minilm_embed", "Embed", "TABLE_BONUS", "FIT_MARGIN", "turns"]
