"""Queries against a model index: a text, image, sketch or model query (or a mix) scored by each method of
``query`` and ranked. Encoders load on first use and must match those the index was built with."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from gen4gen.console import console
from gen4gen.encoders import unit
from gen4gen.errors import ItemFailed, UserError
from gen4gen.images import read_image
from gen4gen.search.features import image_encoder, text_encoder
from gen4gen.search.index import ModelIndex
from gen4gen.search.ivf import build_ivf, has_ivf, ivf_recall, ivf_topk
from gen4gen.search.pq import build_pq, can_build_pq, has_pq
from gen4gen.search.recall import MIN_RECALL
from gen4gen.search.scores import combine, first_moment, frechet, log_density, monte_carlo, ranked, second_moment
from gen4gen.settings import SearchSettings

FALLBACK_NOTE = ("no CLIP weights (search.clip): text queries are matched against the models' sample captions "
                 "in MiniLM space, not against their images")


def sketch_image(path: str, io_cfg) -> Image.Image:
    """A sketch as the encoders expect a photo: grey strokes on white, whatever the drawing's polarity."""
    grey = Image.fromarray(read_image(path, mode="L", max_pixels=int(io_cfg.max_pixels), min_side=int(io_cfg.min_side)))
    if np.asarray(grey).mean() < 128:  # light strokes on a dark canvas
        grey = ImageOps.invert(grey)
    return ImageOps.autocontrast(grey).convert("RGB")


class Searcher:
    """Queries against one index; encoders load on first use and must match those the index was built with."""

    def __init__(self, index: ModelIndex, sc: SearchSettings, device: str, cache_dir: str, io_cfg):
        self.index, self.sc, self.device, self.cache_dir, self.io = index, sc, device, cache_dir, io_cfg
        self._image_enc = None
        self.notes: list[str] = []

    @property
    def image_space(self):
        return self.index.spaces["image"]

    def image_encoder(self):
        if self._image_enc is None:
            want = self.image_space.encoder
            if want.startswith("clip:") and not self.sc.clip:
                raise UserError(f"the index was built with {want}: pass the same weights as search.clip")
            self._image_enc = image_encoder(self.sc.clip if want.startswith("clip:") else None, self.device,
                                            self.sc.batch_size)
            if self._image_enc.name != want:
                raise UserError(f"the index was built with {want} image features, the query encoder is "
                                f"{self._image_enc.name}: rebuild the index or pass the matching search.clip")
        return self._image_enc

    def text(self, text: str) -> dict[str, np.ndarray]:
        space = self.image_space
        if space.encoder.startswith("clip:") and self.sc.clip:
            q = self.image_encoder().encode_texts([text])[0]
        elif "caption" in self.index.spaces:
            space = self.index.spaces["caption"]
            self.notes.append(FALLBACK_NOTE)
            console.print(f"[yellow]note: {FALLBACK_NOTE}[/yellow]")
            enc = text_encoder("minilm", minilm=self.sc.minilm, device=self.device, cache_dir=self.cache_dir)
            if enc.name != space.encoder:
                raise UserError(f"captions were embedded with {space.encoder}, the query with {enc.name}")
            q = enc.encode_texts([text])[0]
        else:
            raise UserError("text queries need CLIP weights (search.clip, and an index built with them) "
                            "or sample captions in the index (<image>.txt or metadata.jsonl)")
        tau = self.sc.tau
        out = {"first_moment": self._first_moment(space, q), "second_moment": second_moment(space, q, tau)}
        if space.has_raw:
            out["monte_carlo"] = monte_carlo(space, q, tau)
        return out

    def _first_moment(self, space, q) -> np.ndarray:
        """Scores for every model; a big index only scores the models its fast path found (others -inf): the IVF's
        probed lists, or the compressed scan's top-k (see ``ivf_topk``)."""
        if len(self.index) >= self.sc.ivf.min_models:
            nprobe = self.sc.ivf.nprobe
            if not has_ivf(space):
                console.print(f"search: building the inverted file (or, for features without clusters, PQ codes) "
                              f"for {len(self.index):,} models (once)")
                build_ivf(space, nprobe=nprobe)
            elif not has_pq(space) and ivf_recall(space, nprobe) < MIN_RECALL and can_build_pq(space):
                # lists built before the codes existed, on features they do not suit: add the codes, keep the lists
                console.print(f"search: the inverted file misses neighbours on this index; building PQ codes for "
                              f"{len(self.index):,} models (once)")
                build_pq(space)
            rows, s = ivf_topk(space, unit(np.ravel(q), np.float32), self.sc.top_k, nprobe,
                                 candidates=self.sc.ivf.candidates)
            out = np.full(len(self.index), -np.inf)
            out[rows] = s
            return out
        return first_moment(space, q)

    def image(self, path: str, sketch: bool = False) -> dict[str, np.ndarray]:
        try:
            im = sketch_image(path, self.io) if sketch else Image.fromarray(
                read_image(path, mode="RGB", max_pixels=int(self.io.max_pixels), min_side=int(self.io.min_side)))
        except ItemFailed as e:
            raise UserError(f"query image {path}: {e}") from e
        x = self.image_encoder().encode_images([im])[0]
        out = {"log_density": log_density(self.image_space, x)}
        if self.image_space.has_raw:
            out["monte_carlo"] = monte_carlo(self.image_space, x, self.sc.tau)
        return out

    def model(self, name: str) -> dict[str, np.ndarray]:
        return {"frechet": frechet(self.image_space, self.index.row(name), self.sc.rerank)}


PRIMARY = {"text": "first_moment", "image": "log_density", "sketch": "log_density", "model": "frechet"}


def run_queries(searcher: Searcher, queries: dict, weights: dict, k: int) -> dict:
    results, primary = {}, []
    for kind, value in queries.items():
        scores = (searcher.text(value) if kind == "text" else searcher.model(value) if kind == "model"
                  else searcher.image(value, sketch=kind == "sketch"))
        for method, s in scores.items():
            results[f"{kind}:{method}"] = ranked(searcher.index, s, k)
        primary.append((scores[PRIMARY[kind]], float(weights.get(kind, 1.0))))
    if len(primary) > 1:
        results["multimodal"] = ranked(searcher.index, combine(primary), k)
    return results
