"""Benchmark reports from the per-image metric rows: leaderboards, quality-vs-cost Pareto plot, GEMRec-style
weighted ranking per prompt, and an HTML gallery of prompt x model images."""
from __future__ import annotations

import csv
import io
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

from gen4gen.io import write_atomic
from gen4gen.templates import render

QUALITY = ("clip_t", "clip_i", "dino", "cp_clip", "ti_clip", "mcos")
COLUMNS = QUALITY + ("latency_s", "cost_usd", "peak_memory_gb")


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def nanmean(values: Iterable) -> float | None:
    xs = [x for x in (_num(v) for v in values) if x is not None]
    return sum(xs) / len(xs) if xs else None


# ---------------------------------------------------------------- leaderboards
def leaderboard(rows: list[dict], by: Sequence[str] = ("model",), sort_by: str = "clip_t") -> list[dict]:
    """Mean of every metric per group (``model``, or ``model, set, category``); NaN/None values are left out
    of a mean (a prompt without references has no CLIP-I), ``n`` counts the images."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[tuple(r.get(k, "") for k in by)].append(r)
    out = []
    for key, rs in groups.items():
        row = dict(zip(by, key))
        row["n"] = len(rs)
        for c in COLUMNS:
            row[c] = nanmean(r.get(c) for r in rs)
        out.append(row)
    out.sort(key=lambda r: tuple(r[k] for k in by[1:]) + (
        math.inf if r.get(sort_by) is None else -r[sort_by], r["model"]))
    return out


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != 0 and abs(v) < 1e-3:
            return f"{v:.3g}"
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
    return str(v)


def markdown_table(rows: list[dict], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def csv_bytes(rows: list[dict], columns: Sequence[str]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in columns})
    return buf.getvalue().encode("utf-8")


# ---------------------------------------------------------------- Pareto front
def pareto_front(points: list[tuple[str, float, float]]) -> list[str]:
    """Names of the points no other point beats on both axes (lower cost, higher quality), cheapest first."""
    front, best = [], -math.inf
    for name, cost, quality in sorted(points, key=lambda p: (p[1], -p[2])):
        if quality > best:
            front.append(name)
            best = quality
    return front


def plot_pareto(board: list[dict], quality: str, path: Path) -> list[str]:
    """Quality vs cost per model ($ per 1,000 images; latency when no cost is known), the front joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cost_key = "cost_usd" if any(r.get("cost_usd") is not None for r in board) else "latency_s"
    scale = 1000.0 if cost_key == "cost_usd" else 1.0  # $ per 1,000 images, as CEMS reports cost
    pts = [(r["model"], r[cost_key] * scale, r[quality]) for r in board
           if r.get(cost_key) is not None and r.get(quality) is not None]
    front = pareto_front(pts)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name, x, y in pts:
        on = name in front
        ax.scatter([x], [y], color="tab:red" if on else "tab:blue", zorder=3)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    fp = sorted((p for p in pts if p[0] in front), key=lambda p: p[1])
    if len(fp) > 1:
        ax.plot([p[1] for p in fp], [p[2] for p in fp], color="tab:red", lw=1, zorder=2, label="Pareto front")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("$ per 1,000 images" if cost_key == "cost_usd" else "seconds per image")
    ax.set_ylabel(quality)
    ax.set_title(f"{quality} vs {'cost' if cost_key == 'cost_usd' else 'latency'}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_atomic(path, buf.getvalue())
    return front


# ---------------------------------------------------------------- GEMRec-style ranking
def _minmax(values: dict[str, float | None]) -> dict[str, float]:
    xs = [v for v in values.values() if v is not None]
    if not xs:
        return {k: 0.0 for k in values}
    lo, hi = min(xs), max(xs)
    return {k: (0.0 if v is None or hi == lo else (v - lo) / (hi - lo)) for k, v in values.items()}


def weighted_ranking(rows: list[dict], popularity: dict[str, float | None], weights: dict[str, float]) -> list[dict]:
    """Per prompt, models ranked by ``w_clip * clip + w_dist * distinctiveness + w_pop * popularity`` where each
    term is min-max normalised over the models of that prompt: clip = mean CLIP-T over seeds,
    distinctiveness = 1 - MCOS, popularity = log(1 + downloads) (GEMRec's weighted ranking)."""
    per: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        per[r["prompt_key"]][r["model"]].append(r)
    out = []
    for key in sorted(per):
        models = per[key]
        clip = {m: nanmean(r.get("clip_t") for r in rs) for m, rs in models.items()}
        mcos = {m: nanmean(r.get("mcos") for r in rs) for m, rs in models.items()}
        dist = {m: (None if v is None else 1.0 - v) for m, v in mcos.items()}
        pop = {m: (None if popularity.get(m) is None else math.log1p(max(0.0, float(popularity[m])))) for m in models}
        nc, nd, np_ = _minmax(clip), _minmax(dist), _minmax(pop)
        scores = {m: weights.get("clip", 1.0) * nc[m] + weights.get("distinctiveness", 0.8) * nd[m]
                  + weights.get("popularity", 0.2) * np_[m] for m in models}
        for rank, m in enumerate(sorted(models, key=lambda m: (-scores[m], m)), 1):
            out.append({"prompt_key": key, "model": m, "rank": rank, "score": scores[m], "clip_t": clip[m],
                        "mcos": mcos[m], "popularity": popularity.get(m)})
    return out


def ranking_summary(ranking: list[dict]) -> list[dict]:
    per: dict[str, list[dict]] = defaultdict(list)
    for r in ranking:
        per[r["model"]].append(r)
    out = [{"model": m, "prompts": len(rs), "mean_rank": nanmean(r["rank"] for r in rs),
            "wins": sum(r["rank"] == 1 for r in rs), "mean_score": nanmean(r["score"] for r in rs)}
           for m, rs in per.items()]
    return sorted(out, key=lambda r: (r["mean_rank"], r["model"]))


# ---------------------------------------------------------------- gallery
def gallery_html(rows: list[dict], run_dir: Path, out_path: Path, max_prompts: int = 200) -> str:
    """Prompt x model grid (every seed of a cell side by side), images linked relative to the page."""
    models = sorted({r["model"] for r in rows})
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    prompts: dict[str, dict] = {}
    for r in rows:
        cells[(r["prompt_key"], r["model"])].append(r)
        prompts.setdefault(r["prompt_key"], r)
    rel = Path(os.path.relpath(run_dir, out_path.parent))
    shown = [{"key": key, "category": str(prompts[key].get("category", "")), "prompt": prompts[key]["prompt"],
              "cells": [[{"src": (rel / r["image"]).as_posix(), "seed": r["seed"]}
                         for r in sorted(cells.get((key, m), []), key=lambda r: r["seed"])] for m in models]}
             for key in sorted(prompts)[:max_prompts]]
    page = render("bench_gallery.html.j2", models=models, prompts=shown, n_prompts=len(prompts),
                  max_prompts=max_prompts)
    write_atomic(out_path, page.encode("utf-8"))
    return page


# ---------------------------------------------------------------- all reports
BASE_METHOD = "base model (class words, no fine-tuning)"
GEN4GEN_ORDER = (BASE_METHOD, "Custom Diffusion on sources", "Custom Diffusion on MyCanvas", "LoRA on MyCanvas")
GEN4GEN_COLUMNS = ["method", "model", "n", "clip_t", "clip_i", "dino", "cp_clip", "ti_clip"]


def gen4gen_table(rows: list[dict], methods: dict[str, str], sets: Sequence[str]) -> list[dict]:
    """Gen4Gen's baseline table: one row per model that has a method (base, Custom Diffusion on sources /
    MyCanvas, LoRA on MyCanvas), means over the personalised promptset(s) ``sets`` only."""
    mine = [r for r in rows if r["model"] in methods and r.get("set") in sets]
    board = leaderboard(mine, ("model",))
    for r in board:
        r["method"] = methods[r["model"]]
    rank = {m: i for i, m in enumerate(GEN4GEN_ORDER)}
    return sorted(board, key=lambda r: (rank.get(r["method"], len(rank)), r["method"], r["model"]))


def write_reports(rows: list[dict], run_dir: Path, popularity: dict[str, float | None], weights: dict[str, float],
                  quality: str = "clip_t", methods: dict[str, str] | None = None,
                  personal_sets: Sequence[str] = ()) -> dict:
    out = run_dir / "report"
    board = leaderboard(rows, ("model",), quality)
    by_cat = leaderboard(rows, ("model", "set", "category"), quality)
    cols = ["model", "n", *COLUMNS]
    write_atomic(out / "leaderboard.csv", csv_bytes(board, cols))
    write_atomic(out / "leaderboard_by_category.csv", csv_bytes(by_cat, ["model", "set", "category", "n", *COLUMNS]))
    front = plot_pareto(board, quality, out / "pareto.png") if board else []
    ranking = weighted_ranking(rows, popularity, weights)
    summary = ranking_summary(ranking)
    write_atomic(out / "ranking.csv", csv_bytes(ranking, ["prompt_key", "model", "rank", "score", "clip_t", "mcos",
                                                          "popularity"]))
    write_atomic(out / "ranking_summary.csv", csv_bytes(summary, ["model", "prompts", "mean_rank", "wins", "mean_score"]))
    md = [f"# Bench leaderboard: {run_dir.name}", "",
          f"{len(rows)} images, {len(board)} models. Means per model; `clip_t`/`ti_clip` are 100 x cos, the other "
          f"quality metrics cosines; `mcos` lower = more distinctive; cost in $ per image.", "",
          markdown_table(board, cols), "", f"Pareto front ({quality} vs cost): {', '.join(front) or '-'}", "",
          "## Weighted ranking (GEMRec)", "",
          f"weights: {', '.join(f'{k} {v}' for k, v in weights.items())}", "",
          markdown_table(summary, ["model", "prompts", "mean_rank", "wins", "mean_score"]), "",
          "## Per promptset category", ""]
    if methods:
        table = gen4gen_table(rows, methods, personal_sets)
        write_atomic(out / "gen4gen.csv", csv_bytes(table, GEN4GEN_COLUMNS))
        md[md.index("## Weighted ranking (GEMRec)"):md.index("## Weighted ranking (GEMRec)")] = [
            "## Gen4Gen: personalised models", "",
            f"Promptset(s) {', '.join(personal_sets) or '-'}: personalised models get the `<newK>` prompts, the base "
            f"model the same prompts in class words; CLIP-T scores the class words. Images side by side per prompt: "
            f"gallery.html.", "", markdown_table(table, GEN4GEN_COLUMNS), ""]
    for (set_name, cat), group in _groupby(by_cat, ("set", "category")):
        md += [f"### {set_name} / {cat or '-'}", "", markdown_table(group, cols), ""]
    write_atomic(out / "leaderboard.md", "\n".join(md).encode("utf-8"))
    gallery_html(rows, run_dir, out / "gallery.html")
    return {"report": str(out), "pareto_front": front}


def _groupby(rows: list[dict], keys: Sequence[str]) -> list[tuple[tuple, list[dict]]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in keys)].append(r)
    return sorted(groups.items())
