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
CLOSE = 0.06  # scenes within this score of the best are all good choices: samples take turns among them


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

    def choose(self, concepts: Sequence[str], scenes: Sequence[str], sample: int) -> tuple[str, list[str]]:
        """The scene of one composition and the scenes ranked best first: samples of a concept set take turns
        among the scenes that fit about as well as the best one, so a set does not always get one room."""
        ranked = self.rank(concepts, scenes)
        best = ranked[0][1]
        good = [s for s, v in ranked if v >= best - CLOSE][:3]
        return good[sample % len(good)], [s for s, _ in ranked]


__all__ = ["SceneFit", "minilm_embed", "Embed", "TABLE_BONUS"]
