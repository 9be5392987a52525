"""A bench run as the leaderboard page needs it: means per model and per category (the bench report's own
``leaderboard``), the Pareto front, and the prompt x model image grid. Rows come from the run's
``metrics.jsonl`` (``results.jsonl`` when it was never scored), each validated; an image path must stay
inside the run folder."""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError

from gen4gen.bench.report import COLUMNS, leaderboard, pareto_front
from gen4gen.io import read_jsonl

log = logging.getLogger(__name__)
# metric -> (label, higher is better)
METRICS = {"clip_t": ("CLIP-T", True), "clip_i": ("CLIP-I", True), "dino": ("DINO", True), "cp_clip": ("CP-CLIP", True),
           "identity_mix": ("ID-mix", True), "ti_clip": ("TI-CLIP", True), "mcos": ("MCOS", False), "latency_s": ("latency s", False),
           "cost_usd": ("$ / image", False), "peak_memory_gb": ("memory GB", False),
           "popularity": ("popularity", True)}  # log(1 + downloads) from the roster, GEMRec's third term
assert set(METRICS) == set(COLUMNS) | {"popularity"}


class BenchRow(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: StrictStr
    set: StrictStr = ""
    prompt_id: StrictStr | int = ""
    category: StrictStr | None = ""
    seed: int = 0
    prompt: StrictStr = ""
    image: StrictStr | None = None
    clip_t: float | None = None
    clip_i: float | None = None
    dino: float | None = None
    cp_clip: float | None = None
    identity_mix: float | None = None
    ti_clip: float | None = None
    mcos: float | None = None
    latency_s: float | None = None
    cost_usd: float | None = None
    peak_memory_gb: float | None = None


@dataclass
class BenchRun:
    root: Path
    rows: list[dict]
    images: list[Path]  # row index -> its image inside the run (or a missing path)
    notes: list[str] = field(default_factory=list)
    popularity: dict[str, float] = field(default_factory=dict)  # model -> downloads
    weights: dict[str, float] = field(default_factory=dict)  # the page's starting weights, per metric

    def board(self) -> dict:
        by_model = leaderboard(self.rows, ("model",))
        by_cat = leaderboard(self.rows, ("model", "set", "category"))
        for r in by_model + by_cat:
            p = self.popularity.get(r["model"])
            r["popularity"] = None if p is None else math.log1p(max(0.0, float(p)))
        quality = "clip_t"
        cost = "cost_usd" if any(r.get("cost_usd") is not None for r in by_model) else "latency_s"
        scale = 1000.0 if cost == "cost_usd" else 1.0  # $ per 1,000 images, as CEMS and the bench report plot it
        points = [(r["model"], r[cost] * scale, r[quality]) for r in by_model
                  if r.get(cost) is not None and r.get(quality) is not None]
        return {"run": self.root.name, "n_images": len(self.rows), "notes": self.notes, "weights": self.weights,
                "metrics": [{"key": k, "label": lbl, "higher_better": hb} for k, (lbl, hb) in METRICS.items()
                            if any(r.get(k) is not None for r in by_model)],
                "models": by_model, "categories": by_cat,
                "pareto": {"x": cost, "y": quality, "front": pareto_front(points),
                           "points": [{"model": m, "x": x, "y": y} for m, x, y in points]}}

    def prompts(self, offset: int, limit: int, image_url) -> dict:
        """The prompt x model grid, a page of prompts at a time: every seed of a cell side by side."""
        models = sorted({r["model"] for r in self.rows})
        cells: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        first: dict[str, dict] = {}
        for i, r in enumerate(self.rows):
            key = f"{r['set']}/{r['prompt_id']}"
            first.setdefault(key, r)
            if self.images[i].is_file():
                cells[key][r["model"]].append((r["seed"], image_url(i)))
        keys = sorted(first)
        page = [{"key": k, "prompt": first[k]["prompt"], "category": first[k].get("category") or "",
                 "cells": {m: [{"seed": s, "url": u} for s, u in sorted(cells[k].get(m, []))] for m in models}}
                for k in keys[offset:offset + limit]]
        return {"total": len(keys), "offset": offset, "models": models, "prompts": page}


def load_run(root: Path, popularity: dict[str, float | None] | None = None,
             weights: dict[str, float] | None = None) -> BenchRun:
    """``weights``: ``bench.report.weights`` (clip, distinctiveness, popularity), the GEMRec ranking's terms."""
    root = Path(root).resolve()
    raw = read_jsonl(root / "metrics.jsonl") or read_jsonl(root / "results.jsonl")
    rows, images, notes = [], [], []
    bad = 0
    for n, r in enumerate(raw, 1):
        try:
            row = BenchRow.model_validate(r).model_dump()
        except ValidationError as e:
            bad += 1
            log.warning("bench run %s: row %d skipped (%s)", root, n, e.errors()[0]["msg"])
            continue
        row["prompt_id"] = str(row["prompt_id"])
        image = (root / row["image"]).resolve() if row["image"] else root / ".none"
        if not image.is_relative_to(root):  # a row naming a file outside the run is not served
            notes.append(f"row {n}: image {row['image']!r} is outside the run folder; not shown")
            image = root / ".none"
        rows.append(row)
        images.append(image)
    if bad:
        notes.append(f"{bad} row(s) of the run's table did not match the schema and were skipped")
    if not rows:
        notes.append(f"no rows in {root / 'metrics.jsonl'} (run stage=bench first)")
    w = weights or {}
    start = {"clip_t": float(w.get("clip", 1.0)), "mcos": float(w.get("distinctiveness", 0.8)),
             "popularity": float(w.get("popularity", 0.2))}
    return BenchRun(root, rows, images, notes, {m: p for m, p in (popularity or {}).items() if p is not None}, start)
