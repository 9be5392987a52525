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

from gen4gen.console import progress
from gen4gen.encoders import Clip, Detector, Dino, text_windows, unit  # noqa: F401 - text_windows: the CLIP-T rule
from gen4gen.hashing import config_hash
from gen4gen.images import BadImage, read_image
from gen4gen.io import write_atomic

METRICS = ("clip_t", "clip_i", "dino", "cp_clip", "ti_clip", "mcos")


# ---------------------------------------------------------------- pure scoring functions (tested on their own)
def clip_t_score(image_emb: np.ndarray, text_emb: np.ndarray) -> float:
    return float(100.0 * max(float(unit(image_emb) @ unit(text_emb)), 0.0))


def reference_similarity(image_emb: np.ndarray, ref_embs: np.ndarray) -> float:
    """Mean cosine between one image and a set of references (CLIP-I, DINO); NaN without references."""
    ref_embs = np.asarray(ref_embs)
    if ref_embs.size == 0:
        return math.nan
    return float(np.mean(unit(ref_embs) @ unit(image_emb)))


def cp_clip_score(crop_embs: dict[str, np.ndarray | None], ref_embs: dict[str, np.ndarray]) -> float:
    """Mean over concepts of the detected crop's similarity to that concept's references; undetected -> 0."""
    if not crop_embs:
        return math.nan
    scores = [0.0 if emb is None else reference_similarity(emb, ref_embs[c]) for c, emb in crop_embs.items()]
    return float(np.mean(scores))


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

    @classmethod
    def from_cfg(cls, node: Any) -> "MetricsConfig":
        from gen4gen.errors import UserError
        from gen4gen.settings import BenchMetrics, parse

        s = parse(node, BenchMetrics, "bench.metrics")
        unknown = [m for m in s.compute if m not in METRICS]
        if unknown:
            raise UserError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
        return cls(tuple(s.compute), s.backbones.clip, s.backbones.dino, s.backbones.detector, s.detector_threshold,
                   s.batch_size, s.chunk_size)


def score_records(records: list[dict], prompts: dict[str, Any], run_dir: Path, mcfg: MetricsConfig,
                  device: str = "cpu") -> tuple[list[dict], list[dict]]:
    """Metric rows for generated images (``records`` from the generate step; ``prompts`` by prompt key), in
    record order. Returns (rows, failures): an unreadable image becomes a failure line, not a crash.

    Each image's scores and CLIP embedding are cached under ``metrics_cache/`` keyed by everything they depend
    on (image settings, model, metric config, scored text, reference files), so a rerun or a run with one more
    model scores only the new images; MCOS is then recomputed over all embeddings (it compares models)."""
    want = set(mcfg.compute)
    cache_root = run_dir / "metrics_cache"
    ps_all = [_prompt(prompts, r) for r in records]
    keys = [_cache_key(r, p, mcfg) for r, p in zip(records, ps_all)]
    results: dict[int, tuple[dict, np.ndarray | None]] = {}
    for i, (rec, key) in enumerate(zip(records, keys)):
        hit = _read_cache(cache_root / f"{rec['image']}.json", key)
        if hit is not None:
            results[i] = hit
    todo = [i for i in range(len(records)) if i not in results]
    failures: list[dict] = []
    if todo:
        failures = _score(records, ps_all, keys, todo, run_dir, cache_root, mcfg, device, results)
    rows, embs, owners = [], [], []
    for i in sorted(results):
        row, emb = results[i]
        rec = records[i]  # timing and cost always from the image's current record, never from the cache
        rows.append({**row, "latency_s": rec.get("latency_s"), "peak_memory_gb": rec.get("peak_memory_gb"),
                     "cost_usd": rec.get("cost_usd")})
        if emb is not None:
            embs.append(emb)
            owners.append(len(rows) - 1)
    if "mcos" in want and embs:
        m = mcos_scores(np.stack(embs), [rows[i]["model"] for i in owners], [rows[i]["prompt_key"] for i in owners])
        for i, v in zip(owners, m):
            rows[i]["mcos"] = None if math.isnan(v) else float(v)
    return rows, failures


def _score(records, ps_all, keys, todo, run_dir, cache_root, mcfg, device, results) -> list[dict]:
    from PIL import Image

    want = set(mcfg.compute)
    needs_refs = any(ps_all[i] is not None and ps_all[i].references for i in todo)
    key = "bench.metrics.backbones"
    clip = (Clip(mcfg.clip, device, mcfg.batch_size, f"{key}.clip")
            if want & {"clip_t", "clip_i", "cp_clip", "ti_clip", "mcos"} else None)
    dino = Dino(mcfg.dino, device, mcfg.batch_size, f"{key}.dino") if "dino" in want and needs_refs else None
    detector = (Detector(mcfg.detector, device, mcfg.detector_threshold, setting=f"{key}.detector")
                if "cp_clip" in want and needs_refs and clip else None)
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
        for (p, _), e in zip(ok, model.encode_images([im for _, im in ok], np.float64) if ok else []):
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
                    images.append(Image.fromarray(read_image(run_dir / rec["image"])))
                    idx.append(i)
                except BadImage as e:
                    failures.append({"stage": "bench", "id": f"{rec['model']}/{rec['set']}/{rec['prompt_id']}/s{rec['seed']}",
                                     "path": str(run_dir / rec["image"]), "reason": f"metrics: {e}"})
            ps = [ps_all[i] for i in idx]
            img_clip = clip.encode_images(images, np.float64) if clip and images else None
            new_texts = sorted({_scored_text(records[i], p) for i, p in zip(idx, ps)} - set(text_cache))
            if clip and new_texts and want & {"clip_t", "ti_clip"}:
                embs, nwin = clip.encode_long_texts(new_texts)
                text_cache.update({t: (e, n) for t, e, n in zip(new_texts, embs, nwin)})
            with_refs = [k for k, p in enumerate(ps) if p is not None and p.references]
            img_dino = dict(zip(with_refs, dino.encode_images([images[k] for k in with_refs]))) if dino and with_refs else {}
            crop_embs: dict[int, dict[str, np.ndarray | None]] = {}
            if detector is not None and with_refs:
                boxes = detector.best_boxes([images[k] for k in with_refs], [ps[k].concepts for k in with_refs])
                found = [(k, c, images[k].crop(b)) for k, bb in zip(with_refs, boxes) for c, b in bb.items() if b]
                embs = clip.encode_images([crop for _, _, crop in found], np.float64) if found else []
                for k, bb in zip(with_refs, boxes):
                    crop_embs[k] = {c: None for c in ps[k].concepts}
                for (k, c, _), e in zip(found, embs):
                    crop_embs[k][c] = e
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
                row = {key: (None if isinstance(v, float) and math.isnan(v) else v) for key, v in row.items()}
                emb = img_clip[k] if img_clip is not None else None
                results[i] = (row, emb)
                _write_cache(cache_root / f"{rec['image']}.json", keys[i], row, emb)
            bar.advance(task, len(todo[start:start + mcfg.chunk_size]))
    del clip, dino, detector  # the backbones go before the caller moves on (GPU memory)
    gc.collect()
    return failures


def _cache_key(rec: dict, prompt, mcfg: MetricsConfig) -> str:
    refs = []
    if prompt is not None:
        for c in prompt.concepts:
            for p in prompt.references.get(c, []):
                try:
                    st = Path(p).stat()
                    refs.append((c, p, st.st_size, st.st_mtime_ns))
                except OSError:
                    refs.append((c, p, None, None))
    return config_hash({"image": [rec.get("model_fingerprint"), rec.get("settings_hash"), rec["image"]],
                        "metrics": [list(mcfg.compute), mcfg.clip, mcfg.dino, mcfg.detector, mcfg.detector_threshold],
                        "text": _scored_text(rec, prompt), "refs": refs,
                        "novel": bool(prompt.novel_background) if prompt is not None else False,
                        "category": rec.get("category", "")})


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


def _prompt(prompts: dict[str, Any], rec: dict):
    return prompts.get(f"{rec['set']}/{rec['prompt_id']}")


def _scored_text(rec: dict, prompt) -> str:
    return prompt.scored_text if prompt is not None else rec["prompt"]


def _base_row(rec: dict, prompt) -> dict:
    return {"model": rec["model"], "set": rec["set"], "prompt_id": rec["prompt_id"],
            "prompt_key": f"{rec['set']}/{rec['prompt_id']}", "category": rec.get("category", ""),
            "seed": rec["seed"], "image": rec["image"], "prompt": rec["prompt"],
            "novel_background": bool(prompt.novel_background) if prompt is not None else False,
            "clip_t": None, "clip_t_windows": None, "clip_i": None, "dino": None, "cp_clip": None,
            "cp_detected": None, "ti_clip": None, "mcos": None, "latency_s": rec.get("latency_s"),
            "peak_memory_gb": rec.get("peak_memory_gb"), "cost_usd": rec.get("cost_usd")}
