"""Prompt features for the router: MiniLM (embedded default), CLIP text (when weights are given) or a
TF-IDF baseline. Neural embeddings go through the disk cache of ``gen4gen.search.features``."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from gen4gen.runner import UserError


class TfidfEmbedder:
    """Word 1-2 gram TF-IDF (sparse), fitted on the training prompts: the CEMS-paper baseline."""

    name = "tfidf"

    def __init__(self, max_features: int = 20000):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=max_features, sublinear_tf=True)

    def fit(self, texts: Sequence[str]) -> "TfidfEmbedder":
        self.vectorizer.fit(list(texts))
        return self

    def transform(self, texts: Sequence[str]):
        return self.vectorizer.transform(list(texts))


class EncoderEmbedder:
    """A frozen sentence encoder (nothing to fit)."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.name = encoder.name

    def fit(self, texts: Sequence[str]) -> "EncoderEmbedder":
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.encode_texts(list(texts))


def make_embedder(kind: str, clip: str | None = None, minilm: str | None = None, device: str = "auto",
                  cache_dir: str | Path | None = None):
    """``kind``: ``minilm`` | ``clip`` | ``tfidf``."""
    if kind == "tfidf":
        return TfidfEmbedder()
    if kind in ("minilm", "clip"):
        from gen4gen.search.features import text_encoder

        return EncoderEmbedder(text_encoder(kind, clip=clip, minilm=minilm, device=device, cache_dir=cache_dir))
    raise UserError(f"route.embedding={kind!r}: choose minilm, clip or tfidf")
