"""Prompt features for the router: MiniLM (embedded default), CLIP text (when weights are given) or a
TF-IDF baseline. Neural embeddings go through the disk cache of ``gen4gen.search.features``."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from gen4gen.errors import UserError


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

        return EncoderEmbedder(text_encoder(kind, clip=clip, minilm=minilm, device=device, cache_dir=cache_dir,
                                            section="route"))
    raise UserError(f"route.embedding={kind!r}: choose minilm, clip or tfidf")


# ---------------------------------------------------------------- prompt statistics
LENGTH_BINS = (3, 5, 8, 12, 16, 20, 25, 30, 40, 50, 60, 80, 100)


def prompt_stats(prompts: Sequence[str]) -> np.ndarray:
    """Length and style statistics that sentence embeddings blur: models differ most on long prompts
    (text encoders truncate at 77 tokens) and on comma-separated tag lists."""
    rows = []
    for p in prompts:
        words, chars = len(p.split()), len(p)
        rows.append([np.log1p(words), np.log1p(chars), p.count(",") / max(words, 1), np.log1p(p.count(",")),
                     sum(map(str.isdigit, p)) / max(chars, 1), sum(map(str.isupper, p)) / max(chars, 1),
                     *(words <= b for b in LENGTH_BINS)])
    return np.asarray(rows, np.float64).reshape(len(rows), 6 + len(LENGTH_BINS))


class Features:
    """The design matrix of a set of prompts: ``text`` (the embedding, what neighbours are found by),
    ``full`` (embedding + standardised prompt statistics, what regressions read) and optionally
    ``lexical`` (sparse TF-IDF next to a neural embedding: the exact style words and artist names that a
    sentence embedding blurs; the ensemble's third view)."""

    def __init__(self, text, stats: np.ndarray | None, lexical=None):
        self.text = text
        self.stats = stats
        self.lexical = lexical
        if stats is None:
            self.full = text
        elif hasattr(text, "tocsr"):
            import scipy.sparse as sp

            self.full = sp.hstack([text, sp.csr_matrix(stats)], format="csr")
        else:
            self.full = np.hstack([np.asarray(text, np.float64), stats])

    def __len__(self) -> int:
        return self.text.shape[0]

    def __getitem__(self, rows) -> "Features":
        pick = lambda a: None if a is None else a[rows]  # noqa: E731
        return Features(self.text[rows], pick(self.stats), pick(self.lexical))


class FeatureMaker:
    """Embedder + optional prompt statistics (standardised with the training prompts' mean and std)
    + optional TF-IDF ``lexical`` view (ignored when the embedder is TF-IDF already)."""

    def __init__(self, embedder, stats: bool = True, lexical: bool = False):
        self.embedder, self.use_stats = embedder, stats
        self.lexical = TfidfEmbedder() if lexical and not isinstance(embedder, TfidfEmbedder) else None
        self.name = embedder.name + ("+stats" if stats else "") + ("+tfidf" if self.lexical else "")

    def fit(self, prompts: Sequence[str]) -> "FeatureMaker":
        self.embedder.fit(prompts)
        if self.lexical:
            self.lexical.fit(prompts)
        if self.use_stats:
            s = prompt_stats(prompts)
            self.mean, self.std = s.mean(0), s.std(0) + 1e-6
        return self

    def transform(self, prompts: Sequence[str]) -> Features:
        stats = (prompt_stats(prompts) - self.mean) / self.std if self.use_stats else None
        return Features(self.embedder.transform(prompts), stats,
                        self.lexical.transform(prompts) if self.lexical else None)
