"""Benchmark reports from the per-image metric rows: leaderboards, quality-vs-cost Pareto plot, GEMRec-style
weighted ranking per prompt, and an HTML gallery of prompt x model images.

Every leaderboard number has a bootstrap 95 % interval over prompts (``stats.py``); neighbours whose paired test
is not significant share a rank ("2=") in the leaderboards and the ranking, and a model not significantly worse
than the front model that beats it is drawn as tied with the front in the Pareto plot."""
from __future__ import annotations

import csv
import io
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

from gen4gen.bench.stats import ALPHA, bootstrap_ci, paired_diffs, paired_p, tie_ranks
from gen4gen.hashing import stable_hash
from gen4gen.io import write_atomic
from gen4gen.templates import render

QUALITY = ("clip_t", "clip_i", "dino", "cp_clip", "identity_mix", "ti_clip", "mcos")
COLUMNS = QUALITY + ("latency_s", "cost_usd", "peak_memory_gb")
RESAMPLES = 1000


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
def leaderboard(rows: list[dict], by: Sequence[str] = ("model",), sort_by: str = "clip_t",
                resamples: int = RESAMPLES) -> list[dict]:
    """Mean of every metric per group (``model``, or ``model, set, category``) with its bootstrap interval
    (``<metric>_lo`` / ``_hi``); NaN/None values are left out of a mean (a prompt without references has no
    CLIP-I), ``n`` counts the images. ``rank`` orders the models of a group by ``sort_by``, ties shown as
    ties ("2="); ``p_vs_above`` is the paired test against the model ranked just above."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[tuple(r.get(k, "") for k in by)].append(r)
    out = []
    for key, rs in groups.items():
        row = dict(zip(by, key))
        row["n"] = len(rs)
        clusters = [r.get("prompt_key") for r in rs]
        for c in COLUMNS:
            row[c], row[f"{c}_lo"], row[f"{c}_hi"] = bootstrap_ci([_num(r.get(c)) for r in rs], clusters, resamples,
                                                                 stable_hash("/".join(map(str, key)) + c))
        row["_values"] = by_image(rs, sort_by)
        out.append(row)
    out.sort(key=lambda r: tuple(r[k] for k in by[1:]) + (
        math.inf if r.get(sort_by) is None else -r[sort_by], r["model"]))
    for _, group in _groupby(out, by[1:]) if len(by) > 1 else [((), out)]:
        rank_with_ties(group, "_values")
    for r in out:
        del r["_values"]
    return out


def by_image(rows: list[dict], metric: str) -> dict[tuple, float | None]:
    """(prompt, seed) -> value: what a paired test matches two models on."""
    return {(r.get("prompt_key"), r.get("seed")): _num(r.get(metric)) for r in rows}


def rank_with_ties(ordered: list[dict], values_key: str, alpha: float = ALPHA) -> None:
    """``rank`` and ``p_vs_above`` for rows already in order, from each row's per-image values."""
    ps: list[float | None] = [None]
    for above, below in zip(ordered, ordered[1:]):
        d = paired_diffs(above[values_key], below[values_key])
        ps.append(paired_p(d, seed=stable_hash(f"{above.get('model')}|{below.get('model')}")) if len(d) else None)
    for r, label, p in zip(ordered, tie_ranks(ps, alpha), ps):
        r["rank"], r["p_vs_above"] = label, p


def _fmt(v, like: float | None = None) -> str:
    """A number for a table; ``like``: format it as that value is (an interval's bounds as its mean)."""
    if v is None:
        return "-"
    if isinstance(v, float):
        ref = abs(like) if isinstance(like, float) else abs(v)
        if ref != 0 and ref < 1e-3:
            return f"{v:.3g}"
        return f"{v:.4f}" if ref < 10 else f"{v:.2f}"
    return str(v)


def _cell(r: dict, c: str) -> str:
    """A value with its interval when the row has one: ``31.20 [30.41, 32.02]``."""
    lo, hi = r.get(f"{c}_lo"), r.get(f"{c}_hi")
    v = r.get(c)
    return f"{_fmt(v)} [{_fmt(lo, v)}, {_fmt(hi, v)}]" if lo is not None and hi is not None else _fmt(v)


def markdown_table(rows: list[dict], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(r, c) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def with_intervals(columns: Sequence[str]) -> list[str]:
    """CSV columns: each metric followed by its interval's bounds."""
    return [x for c in columns for x in ((c, f"{c}_lo", f"{c}_hi") if c in COLUMNS or c == "mean_rank" else (c,))]


def csv_bytes(rows: list[dict], columns: Sequence[str]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({c: _csv_cell(r.get(c)) for c in columns})
    return buf.getvalue().encode("utf-8")


def _csv_cell(v):
    if isinstance(v, dict):  # a metric -> backbone map (provenance) or per-concept values: one readable cell
        return "; ".join(f"{k}: {'' if x is None else x}" for k, x in v.items())
    return "" if v is None else v


# ---------------------------------------------------------------- Pareto front
def pareto_front(points: list[tuple[str, float, float]]) -> list[str]:
    """Names of the points no other point beats on both axes (lower cost, higher quality), cheapest first."""
    front, best = [], -math.inf
    for name, cost, quality in sorted(points, key=lambda p: (p[1], -p[2])):
        if quality > best:
            front.append(name)
            best = quality
    return front


def front_ties(points: list[tuple[str, float, float]], front: list[str], values: dict[str, dict],
               alpha: float = ALPHA) -> list[str]:
    """Models off the front that no front model beating them (as cheap or cheaper, as good or better) beats
    significantly in a paired test: within noise of the front, drawn as tied with it."""
    by = {n: (c, q) for n, c, q in points}
    tied = []
    for name, cost, quality in points:
        if name in front:
            continue
        better = [f for f in front if by[f][0] <= cost and by[f][1] >= quality]
        ps = [paired_p(paired_diffs(values.get(f, {}), values.get(name, {})), seed=stable_hash(f"{f}|{name}"))
              for f in better]
        if better and all(p >= alpha for p in ps):
            tied.append(name)
    return tied


def save_figure(fig, path: Path, backbones: str) -> None:
    """A report plot as PNG with the backbones of its numbers: a footnote on the figure and the PNG's
    ``Description`` text (what a script reads back)."""
    import matplotlib.pyplot as plt

    if backbones:
        fig.text(0.01, 0.005, f"backbones: {backbones}", fontsize=5, color="0.4", ha="left", va="bottom", wrap=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Description": f"backbones: {backbones or '-'}"})
    plt.close(fig)
    write_atomic(path, buf.getvalue())


def plot_pareto(board: list[dict], quality: str, path: Path, values: dict[str, dict] | None = None,
                backbones: str = "") -> tuple[list[str], list[str]]:
    """Quality (with its 95 % interval) vs cost per model ($ per 1,000 images; latency when no cost is known),
    the front joined; models tied with the front (``front_ties``) drawn hollow. Returns (front, tied)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cost_key = "cost_usd" if any(r.get("cost_usd") is not None for r in board) else "latency_s"
    scale = 1000.0 if cost_key == "cost_usd" else 1.0  # $ per 1,000 images, as CEMS reports cost
    rows = [r for r in board if r.get(cost_key) is not None and r.get(quality) is not None]
    pts = [(r["model"], r[cost_key] * scale, r[quality]) for r in rows]
    front = pareto_front(pts)
    tied = front_ties(pts, front, values or {})
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for r, (name, x, y) in zip(rows, pts):
        on, tie = name in front, name in tied
        lo, hi = r.get(f"{quality}_lo"), r.get(f"{quality}_hi")
        if lo is not None and hi is not None:
            ax.errorbar([x], [y], yerr=[[y - lo], [hi - y]], color="0.6", lw=1, capsize=3, zorder=2)
        color = "tab:red" if on or tie else "tab:blue"
        ax.scatter([x], [y], facecolors="white" if tie else color, edgecolors=color, zorder=3)
        label = f"{name} (tie)" if tie else name
        ax.annotate(f"{r.get('rank', '')} {label}".strip(), (x, y), textcoords="offset points", xytext=(4, 4),
                    fontsize=8)
    fp = sorted((p for p in pts if p[0] in front), key=lambda p: p[1])
    if len(fp) > 1:
        ax.plot([p[1] for p in fp], [p[2] for p in fp], color="tab:red", lw=1, zorder=2, label="Pareto front")
    if tied:
        ax.scatter([], [], facecolors="white", edgecolors="tab:red", label="tied with the front (p >= 0.05)")
    if len(fp) > 1 or tied:
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("$ per 1,000 images" if cost_key == "cost_usd" else "seconds per image")
    ax.set_ylabel(f"{quality} (95 % interval)")
    ax.set_title(f"{quality} vs {'cost' if cost_key == 'cost_usd' else 'latency'}")
    ax.grid(alpha=0.3)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    save_figure(fig, path, backbones)
    return front, tied


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


def ranking_summary(ranking: list[dict], resamples: int = RESAMPLES) -> list[dict]:
    """Per model: mean rank over prompts with its bootstrap interval, wins, mean score; ordered by mean rank,
    neighbours whose per-prompt ranks do not differ significantly share a rank."""
    per: dict[str, list[dict]] = defaultdict(list)
    for r in ranking:
        per[r["model"]].append(r)
    out = []
    for m, rs in per.items():
        mean, lo, hi = bootstrap_ci([r["rank"] for r in rs], [r["prompt_key"] for r in rs], resamples,
                                    stable_hash(m + "rank"))
        out.append({"model": m, "prompts": len(rs), "mean_rank": mean, "mean_rank_lo": lo, "mean_rank_hi": hi,
                    "wins": sum(r["rank"] == 1 for r in rs), "mean_score": nanmean(r["score"] for r in rs),
                    "_values": {(r["prompt_key"], 0): float(r["rank"]) for r in rs}})
    out.sort(key=lambda r: (r["mean_rank"], r["model"]))
    rank_with_ties(out, "_values")
    for r in out:
        del r["_values"]
    return out


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
GEN4GEN_COLUMNS = ["method", "rank", "model", "n", "clip_t", "clip_i", "dino", "cp_clip", "identity_mix", "ti_clip"]


def gen4gen_table(rows: list[dict], methods: dict[str, str], sets: Sequence[str], resamples: int = RESAMPLES
                  ) -> list[dict]:
    """Gen4Gen's baseline table: one row per model that has a method (base, Custom Diffusion on sources /
    MyCanvas, LoRA on MyCanvas), means over the personalised promptset(s) ``sets`` only."""
    mine = [r for r in rows if r["model"] in methods and r.get("set") in sets]
    board = leaderboard(mine, ("model",), "clip_t", resamples)
    for r in board:
        r["method"] = methods[r["model"]]
    rank = {m: i for i, m in enumerate(GEN4GEN_ORDER)}
    return sorted(board, key=lambda r: (rank.get(r["method"], len(rank)), r["method"], r["model"]))


def write_reports(rows: list[dict], run_dir: Path, popularity: dict[str, float | None], weights: dict[str, float],
                  quality: str = "clip_t", methods: dict[str, str] | None = None, personal_sets: Sequence[str] = (),
                  backbones: dict | None = None, counterfactual: dict | None = None,
                  leakage: list[dict] | None = None, resamples: int = RESAMPLES) -> dict:
    """Every report file under ``<run>/report/``. ``backbones`` (metric -> ``Backbone`` list) opens the page and
    says so in words when any is non-standard; every CSV carries the metrics' backbone tags in ``backbones``."""
    from gen4gen.bench import sections as S
    from gen4gen.bench.provenance import tags_text

    out = run_dir / "report"
    prov = tags_text(S.from_rows(rows))
    stamp = lambda table: [{**r, "backbones": prov} for r in table]  # noqa: E731 - one column on every table
    board = leaderboard(rows, ("model",), quality, resamples)
    by_cat = leaderboard(rows, ("model", "set", "category"), quality, resamples)
    cols = ["rank", "model", "n", *COLUMNS]
    write_atomic(out / "leaderboard.csv", csv_bytes(stamp(board), [*with_intervals(cols), "p_vs_above", "backbones"]))
    write_atomic(out / "leaderboard_by_category.csv", csv_bytes(stamp(by_cat), [
        "set", "category", *with_intervals(cols), "p_vs_above", "backbones"]))
    values = {m: by_image([r for r in rows if r["model"] == m], quality) for m in {r["model"] for r in rows}}
    front, tied = plot_pareto(board, quality, out / "pareto.png", values, S.from_rows(rows).get(quality, "")) \
        if board else ([], [])
    ranking = weighted_ranking(rows, popularity, weights)
    summary = ranking_summary(ranking, resamples)
    write_atomic(out / "ranking.csv", csv_bytes(stamp(ranking), ["prompt_key", "model", "rank", "score", "clip_t",
                                                                 "mcos", "popularity", "backbones"]))
    summary_cols = ["rank", "model", "prompts", "mean_rank", "wins", "mean_score"]
    write_atomic(out / "ranking_summary.csv", csv_bytes(stamp(summary), [*with_intervals(summary_cols), "p_vs_above",
                                                                         "backbones"]))
    k_table = S.by_k(rows, resamples)
    shown = S.plot_by_k(k_table, out / "by_k.png", prov) if k_table else []
    if k_table:
        write_atomic(out / "by_k.csv", csv_bytes(stamp(k_table), [*S.BY_K_COLUMNS, "backbones"]))
    md = [f"# Bench leaderboard: {run_dir.name}", ""]
    md += S.provenance_lines(backbones) if backbones else [f"Backbones (from the metric rows): {prov or '-'}", ""]
    md += [f"{len(rows)} images, {len(board)} models. Means per model with bootstrap 95 % intervals over prompts "
           f"(all seeds of a prompt resampled together); `rank` by {quality}, \"2=\" where a paired sign-flip test "
           f"against the model above gives p >= {ALPHA} (a tie); `clip_t`/`ti_clip` are 100 x cos, the other quality "
           f"metrics cosines; `identity_mix` is a margin (own references minus the best other concept's); `mcos` "
           f"lower = more distinctive; cost in $ per image.", "",
           markdown_table(board, cols), "",
           f"Pareto front ({quality} vs cost): {', '.join(front) or '-'}; tied with the front (not significantly "
           f"worse than a front model as cheap or cheaper): {', '.join(tied) or '-'}", "",
           "## Weighted ranking (GEMRec)", "",
           f"weights: {', '.join(f'{k} {v}' for k, v in weights.items())}; mean rank over prompts with its 95 % "
           f"interval, ties where per-prompt ranks do not differ significantly.", "",
           markdown_table(summary, summary_cols), ""]
    md += S.by_k_lines(k_table, shown)
    if counterfactual:
        write_atomic(out / "counterfactual.csv", csv_bytes(counterfactual["rates"], [
            "metric", "kind", "cases", "noticed", "rate", "flag", "backbone"]))
        md += S.counterfactual_lines(counterfactual["rates"], counterfactual["backbone"], counterfactual["images"])
    if leakage:
        from gen4gen.bench.leakage import COLUMNS as LEAKAGE_COLUMNS

        write_atomic(out / "leakage.csv", csv_bytes(stamp(leakage), [*LEAKAGE_COLUMNS, "backbones"]))
        md += S.leakage_lines(leakage)
    md += ["## Per promptset category", ""]
    if methods:
        table = gen4gen_table(rows, methods, personal_sets, resamples)
        write_atomic(out / "gen4gen.csv", csv_bytes(stamp(table), [*with_intervals(GEN4GEN_COLUMNS), "backbones"]))
        md[md.index("## Weighted ranking (GEMRec)"):md.index("## Weighted ranking (GEMRec)")] = [
            "## Gen4Gen: personalised models", "",
            f"Promptset(s) {', '.join(personal_sets) or '-'}: personalised models get the `<newK>` prompts, the base "
            f"model the same prompts in class words; CLIP-T scores the class words. Images side by side per prompt: "
            f"gallery.html.", "", markdown_table(table, GEN4GEN_COLUMNS), ""]
    for (set_name, cat), group in _groupby(by_cat, ("set", "category")):
        md += [f"### {set_name} / {cat or '-'}", "", markdown_table(group, cols), ""]
    write_atomic(out / "leaderboard.md", "\n".join(md).encode("utf-8"))
    gallery_html(rows, run_dir, out / "gallery.html")
    return {"report": str(out), "pareto_front": front, "pareto_tied": tied}


def _groupby(rows: list[dict], keys: Sequence[str]) -> list[tuple[tuple, list[dict]]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in keys)].append(r)
    return sorted(groups.items())
