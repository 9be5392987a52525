"""Benchmark metrics, batched, each backbone loaded once (transformers ``from_pretrained``).

Scales: ``clip_t`` and ``ti_clip`` are 100 x max(cos, 0) between CLIP text and image embeddings (the
CLIPScore of torchmetrics / CEMS); ``clip_i``, ``dino``, ``cp_clip`` and ``mcos`` are cosines in [-1, 1].

- ``clip_t``: text-image alignment. Prompts longer than CLIP's 77 tokens are NOT cut: the tokens (without
  BOS/EOS) are split into consecutive windows of 75, each window is embedded as its own sequence
  ``BOS + window + EOS``, and the unit-normalised window embeddings are averaged weighted by their token
  counts, then renormalised. ``clip_t_windows`` tells how many windows a prompt needed.
- ``clip_i`` / ``dino``: mean cosine between the image and every reference image of the prompt's concepts
  (CLIP image embeddings / DINO ViT CLS token), as in DreamBooth and Gen4Gen.
- ``cp_clip`` (Gen4Gen composition-personalisation CLIP): per concept, OWL-ViT/OWLv2 detects it by its class
  name ("a photo of a cat"); the best box above ``detector_threshold`` is cropped and compared (CLIP image
  cosine, mean over the concept's references); a concept with no box scores 0; mean over the concepts.
- ``identity_mix`` (Detect-and-Compare-style margin, ``identity.py``): each concept's detected crop (the
  ``cp_clip`` boxes) against its own references minus its best similarity to any other concept of the promptset,
  with the ``identity`` image encoder (``clip``, ``dino`` or ``efficientnet-lite0``); a missing concept counts -1.
  ``identity_missing`` / ``identity_mixed`` count the concepts not found / closer to another concept than to
  their own.
- ``ti_clip`` (Gen4Gen text-image alignment): ``clip_t`` on prompts whose background is not in the dataset.
- ``mcos`` (GEMRec): mean CLIP image cosine to the other models' images of the same prompt (all seeds);
  low = distinctive.
"""
from __future__ import annotations

import gc
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from gen4gen.artefacts import ImageRecord
from gen4gen.bench.identity import cp_clip_score, identity_margins, identity_mix_score, reference_similarity
from gen4gen.bench.provenance import metric_backbones, row_tags
from gen4gen.console import progress
from gen4gen.contain import contained
from gen4gen.encoders import (Clip, Detector, Dino, EfficientNetLite0,  # noqa: F401 - text_windows: the CLIP-T rule
                              text_windows, unit)
from gen4gen.errors import ItemFailed, UserError
from gen4gen.hashing import config_hash
from gen4gen.images import BadImage, read_image
from gen4gen.io import write_atomic
from gen4gen.settings import BenchMetrics

METRICS = ("clip_t", "clip_i", "dino", "cp_clip", "identity_mix", "ti_clip", "mcos")


# ---------------------------------------------------------------- pure scoring functions (tested on their own)
def clip_t_score(image_emb: np.ndarray, text_emb: np.ndarray) -> float:
    return float(100.0 * max(float(unit(image_emb) @ unit(text_emb)), 0.0))


def mcos_scores(embs: np.ndarray, models: Sequence[str], prompts: Sequence[str]) -> np.ndarray:
    """For each image, the mean cosine to the images of *other* models for the same prompt (NaN if none)."""
    embs = unit(np.asarray(embs))
    models, prompts = np.asarray(models), np.asarray(prompts)
    out = np.full(len(embs), math.nan)
    for key in np.unique(prompts):
        idx = np.flatnonzero(prompts == key)
        sims = embs[idx] @ embs[idx].T
        for a, i in enumerate(idx):
            other = models[idx] != models[i]
            if other.any():
                out[i] = float(sims[a, other].mean())
    return out


# ---------------------------------------------------------------- scoring a run
@dataclass
class MetricsConfig:
    """``bench.metrics`` (conf/config.yaml holds the defaults), the backbones flattened."""
    compute: tuple[str, ...]
    clip: str
    dino: str
    detector: str
    detector_threshold: float
    batch_size: int
    chunk_size: int  # images held in memory at once
    identity: str  # image encoder of identity_mix: clip | dino | efficientnet-lite0

    @property
    def specs(self) -> dict[str, str]:
        """Backbone role -> config value (``identity`` names another role or the embedded encoder)."""
        return {"clip": self.clip, "dino": self.dino, "detector": self.detector, "identity": self.identity}

    def backbones(self):
        return metric_backbones(self.specs, self.compute)

    @classmethod
    def from_settings(cls, s: BenchMetrics) -> "MetricsConfig":
        """``bench.metrics`` as read through its settings model (the yaml holds the defaults)."""
        unknown = [m for m in s.compute if m not in METRICS]
        if unknown:
            raise UserError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
        b = s.backbones
        return cls(tuple(s.compute), b.clip, b.dino, b.detector, s.detector_threshold, s.batch_size, s.chunk_size,
                   b.identity)


def score_records(records: list[ImageRecord], prompts: dict[str, Any], run_dir: Path, mcfg: MetricsConfig,
                  device: str = "cpu") -> tuple[list[dict], list[dict]]:
    """Metric rows for generated images (``records`` from the generate step; ``prompts`` by prompt key), in
    record order. Returns (rows, failures): an unreadable image becomes a failure line, not a crash.

    Each image's scores and CLIP embedding are cached under ``metrics_cache/`` keyed by everything they depend
    on (image settings, model, metric config, scored text, reference files), so a rerun or a run with one more
    model scores only the new images; MCOS is then recomputed over all embeddings (it compares models)."""
    want = set(mcfg.compute)
    cache_root = run_dir / "metrics_cache"
    ps_all = [_prompt(prompts, r) for r in records]
    set_refs = concept_references(prompts.values())
    keys = [_cache_key(r, p, mcfg, set_refs.get(r.set, {})) for r, p in zip(records, ps_all)]
    results: dict[int, tuple[dict, np.ndarray | None]] = {}
    for i, (rec, key) in enumerate(zip(records, keys)):
        hit = _read_cache(cache_root / f"{rec.image}.json", key)
        if hit is not None:
            results[i] = hit
    todo = [i for i in range(len(records)) if i not in results]
    failures: list[dict] = []
    if todo:
        failures = _score(records, ps_all, keys, todo, run_dir, cache_root, mcfg, device, results, set_refs)
    tags = row_tags(mcfg.backbones())
    rows, embs, owners = [], [], []
    for i in sorted(results):
        row, emb = results[i]
        rec = records[i]  # timing and cost always from the image's current record, never from the cache
        rows.append({**row, "latency_s": rec.latency_s, "peak_memory_gb": rec.peak_memory_gb, "cost_usd": rec.cost_usd})
        rows[-1]["backbones"] = {m: t for m, t in tags.items() if m == "mcos" or rows[-1].get(m) is not None}
        if emb is not None:
            embs.append(emb)
            owners.append(len(rows) - 1)
    if "mcos" in want and embs:
        m = mcos_scores(np.stack(embs), [rows[i]["model"] for i in owners], [rows[i]["prompt_key"] for i in owners])
        for i, v in zip(owners, m):
            rows[i]["mcos"] = None if math.isnan(v) else float(v)
    for row in rows:
        if row.get("mcos") is None:
            row["backbones"].pop("mcos", None)
    return rows, failures


def concept_references(prompts: Iterable) -> dict[str, dict[str, list[str]]]:
    """Per promptset, every concept's reference files: the "other concepts" identity_mix compares with."""
    out: dict[str, dict[str, list[str]]] = {}
    for p in prompts:
        for c, paths in p.references.items():
            out.setdefault(p.set, {}).setdefault(c, list(paths))
    return out


def _score(records, ps_all, keys, todo, run_dir, cache_root, mcfg, device, results, set_refs) -> list[dict]:
    from PIL import Image

    want = set(mcfg.compute)
    needs_refs = any(ps_all[i] is not None and ps_all[i].references for i in todo)
    ident = want & {"identity_mix"} and needs_refs
    key = "bench.metrics.backbones"
    uses_clip = want & {"clip_t", "clip_i", "cp_clip", "ti_clip", "mcos"} or (ident and mcfg.identity == "clip")
    clip = Clip(mcfg.clip, device, mcfg.batch_size, f"{key}.clip") if uses_clip else None
    dino = (Dino(mcfg.dino, device, mcfg.batch_size, f"{key}.dino")
            if needs_refs and ("dino" in want or (ident and mcfg.identity == "dino")) else None)
    detector = (Detector(mcfg.detector, device, mcfg.detector_threshold, setting=f"{key}.detector")
                if want & {"cp_clip", "identity_mix"} and needs_refs else None)
    encoder = {"clip": clip, "dino": dino}.get(mcfg.identity) if ident else None
    if ident and encoder is None:
        encoder = EfficientNetLite0(device, mcfg.batch_size)
    ref_cache: dict[tuple[str, str], np.ndarray | None] = {}

    def refs(model, kind: str, paths: Iterable[str]) -> np.ndarray:
        paths = list(paths)
        ok = []
        for p in dict.fromkeys(paths):
            if (kind, p) not in ref_cache:
                try:
                    ok.append((p, Image.fromarray(read_image(p))))
                except BadImage:
                    ref_cache[(kind, p)] = None  # a bad reference is left out of the mean
        for (p, _), e in zip(ok, _encode(model, [im for _, im in ok])):
            ref_cache[(kind, p)] = e
        got = [ref_cache[(kind, p)] for p in paths if ref_cache.get((kind, p)) is not None]
        return np.stack(got) if got else np.zeros((0, 1))

    failures: list[dict] = []
    text_cache: dict[str, tuple[np.ndarray, int]] = {}
    with progress() as bar:
        task = bar.add_task("bench metrics", total=len(todo))
        for start in range(0, len(todo), mcfg.chunk_size):
            idx, images = [], []
            for i in todo[start:start + mcfg.chunk_size]:
                rec = records[i]
                try:
                    images.append(Image.fromarray(read_image(contained(rec.image, run_dir, "records image"))))
                    idx.append(i)
                except ItemFailed as e:  # unreadable, or a path leading out of the run folder
                    failures.append({"stage": "bench", "id": f"{rec.model}/{rec.prompt_key}/s{rec.seed}",
                                     "path": str(run_dir / rec.image), "reason": f"metrics: {e}"})
            ps = [ps_all[i] for i in idx]
            img_clip = clip.encode_images(images, np.float64) if clip and images else None
            new_texts = sorted({_scored_text(records[i], p) for i, p in zip(idx, ps)} - set(text_cache))
            if clip and new_texts and want & {"clip_t", "ti_clip"}:
                embs, nwin = clip.encode_long_texts(new_texts)
                text_cache.update({t: (e, n) for t, e, n in zip(new_texts, embs, nwin)})
            with_refs = [k for k, p in enumerate(ps) if p is not None and p.references]
            img_dino = dict(zip(with_refs, dino.encode_images([images[k] for k in with_refs]))) if dino and with_refs else {}
            crop_embs: dict[int, dict[str, np.ndarray | None]] = {}
            ident_embs: dict[int, dict[str, np.ndarray | None]] = {}
            if detector is not None and with_refs:
                boxes = detector.best_boxes([images[k] for k in with_refs], [ps[k].concepts for k in with_refs])
                found = [(k, c, images[k].crop(b)) for k, bb in zip(with_refs, boxes) for c, b in bb.items() if b]
                for model, into in ((clip if "cp_clip" in want else None, crop_embs), (encoder, ident_embs)):
                    if model is None:
                        continue
                    embs = _encode(model, [crop for _, _, crop in found])
                    for k in with_refs:
                        into[k] = {c: None for c in ps[k].concepts}
                    for (k, c, _), e in zip(found, embs):
                        into[k][c] = e
            for k, (i, p) in enumerate(zip(idx, ps)):
                rec = records[i]
                row = _base_row(rec, p)
                text = _scored_text(rec, p)
                if text in text_cache:
                    temb, row["clip_t_windows"] = text_cache[text]
                    if "clip_t" in want:
                        row["clip_t"] = clip_t_score(img_clip[k], temb)
                    if "ti_clip" in want and row["novel_background"]:
                        row["ti_clip"] = clip_t_score(img_clip[k], temb)
                if k in with_refs:
                    all_refs = [x for c in p.concepts for x in p.references.get(c, [])]
                    if "clip_i" in want and clip is not None:
                        row["clip_i"] = reference_similarity(img_clip[k], refs(clip, "clip", all_refs))
                    if k in img_dino:
                        row["dino"] = reference_similarity(img_dino[k], refs(dino, "dino", all_refs))
                    if k in crop_embs:
                        row["cp_clip"] = cp_clip_score(crop_embs[k], {c: refs(clip, "clip", p.references.get(c, []))
                                                                      for c in p.concepts})
                        row["cp_detected"] = f"{sum(e is not None for e in crop_embs[k].values())}/{len(p.concepts)}"
                    if k in ident_embs:
                        others = set_refs.get(rec.set, {})
                        margins = identity_margins(ident_embs[k], {c: refs(encoder, mcfg.identity, paths)
                                                                   for c, paths in {**others, **p.references}.items()})
                        row["identity_mix"] = identity_mix_score(margins)
                        row["identity_missing"] = f"{sum(m is None for m in margins.values())}/{len(margins)}"
                        row["identity_mixed"] = f"{sum(m is not None and m < 0 for m in margins.values())}/{len(margins)}"
                        row["identity_margins"] = {c: (None if m is None or math.isnan(m) else m) for c, m in margins.items()}
                row = {key: (None if isinstance(v, float) and math.isnan(v) else v) for key, v in row.items()}
                emb = img_clip[k] if img_clip is not None else None
                results[i] = (row, emb)
                _write_cache(cache_root / f"{rec.image}.json", keys[i], row, emb)
            bar.advance(task, len(todo[start:start + mcfg.chunk_size]))
    del clip, dino, detector, encoder  # the backbones go before the caller moves on (GPU memory)
    gc.collect()
    return failures


def _encode(model, images: list) -> np.ndarray:
    return (model.encode_images(images, np.float64) if isinstance(model, (Clip, Dino)) else
            np.asarray(model.encode_images(images), np.float64)) if images else np.zeros((0, 1))


def _cache_key(rec: ImageRecord, prompt, mcfg: MetricsConfig, set_refs: dict[str, list[str]]) -> str:
    refs = []
    if prompt is not None:
        for c in sorted(set(prompt.concepts) | (set(set_refs) if "identity_mix" in mcfg.compute else set())):
            for p in prompt.references.get(c) or set_refs.get(c, []):
                try:
                    st = Path(p).stat()
                    refs.append((c, p, st.st_size, st.st_mtime_ns))
                except OSError:
                    refs.append((c, p, None, None))
    return config_hash({"image": [rec.model_fingerprint, rec.settings_hash, rec.image],
                        "metrics": [list(mcfg.compute), mcfg.clip, mcfg.dino, mcfg.detector, mcfg.detector_threshold,
                                    mcfg.identity],
                        "text": _scored_text(rec, prompt), "refs": refs,
                        "novel": bool(prompt.novel_background) if prompt is not None else False,
                        "category": rec.category})


def _read_cache(path: Path, key: str) -> tuple[dict, np.ndarray | None] | None:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("key") != key:
        return None
    emb = data.get("clip_embedding")
    return data["row"], (None if emb is None else np.asarray(emb, dtype=np.float64))


def _write_cache(path: Path, key: str, row: dict, emb: np.ndarray | None) -> None:
    data = {"key": key, "row": {k: v for k, v in row.items() if k != "mcos"},
            "clip_embedding": None if emb is None else [float(x) for x in emb]}  # exact round trip
    write_atomic(path, json.dumps(data).encode("utf-8"))


def _prompt(prompts: dict[str, Any], rec: ImageRecord):
    return prompts.get(rec.prompt_key)


def _scored_text(rec: ImageRecord, prompt) -> str:
    return prompt.scored_text if prompt is not None else rec.prompt


def _base_row(rec: ImageRecord, prompt) -> dict:
    return {"model": rec.model, "set": rec.set, "prompt_id": rec.prompt_id, "prompt_key": rec.prompt_key,
            "category": rec.category, "seed": rec.seed, "image": rec.image, "prompt": rec.prompt,
            "novel_background": bool(prompt.novel_background) if prompt is not None else False,
            "k": len(set(prompt.concepts)) if prompt is not None and prompt.concepts else None,
            "clip_t": None, "clip_t_windows": None, "clip_i": None, "dino": None, "cp_clip": None,
            "cp_detected": None, "identity_mix": None, "identity_missing": None, "identity_mixed": None,
            "identity_margins": None, "ti_clip": None, "mcos": None, "latency_s": rec.latency_s,
            "peak_memory_gb": rec.peak_memory_gb, "cost_usd": rec.cost_usd}
