"""The report's sections beyond the leaderboards: which backbones made the numbers, the identity metrics against
the number of concepts k, the counterfactual check (metrics that must notice) and the leakage check."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

from gen4gen.bench.provenance import Backbone, warning
from gen4gen.bench.stats import bootstrap_ci
from gen4gen.hashing import stable_hash

IDENTITY = ("identity_mix", "cp_clip", "clip_i", "dino")  # what a wrong, missing or mixed concept should lower
BY_K_COLUMNS = ["model", "k", "n", *[x for m in IDENTITY for x in (m, f"{m}_lo", f"{m}_hi")]]


# ---------------------------------------------------------------- provenance
def provenance_lines(backbones: dict[str, list[Backbone]]) -> list[str]:
    """The report's opening: a sentence when any backbone is non-standard, then one row per metric."""
    lines = []
    said = warning(backbones)
    if said:
        lines += [f"**{said}**", ""]
    lines += ["## Backbones", "", "Every number below comes from these weights (`backbones.json` beside the metrics; "
              "each row of `metrics.jsonl` names them too).", "",
              "| metric | role | source | sha256 | parameters | standard | note |", "|---|---|---|---|---|---|---|"]
    for m, bs in backbones.items():
        for b in bs:
            params = f"{b.params:,}" if b.params is not None else "-"
            lines.append(f"| {m} | {b.role} | {b.source} | {(b.sha256 or 'unknown')[:16]} | {params} | "
                         f"{'yes' if b.standard else 'no'} | {b.note or '-'} |")
    return lines + [""]


def from_rows(rows: Sequence[dict]) -> dict[str, str]:
    """Metric -> backbone tag over the rows (a report made from metrics.jsonl alone)."""
    out: dict[str, str] = {}
    for r in rows:
        out.update(r.get("backbones") or {})
    return out


# ---------------------------------------------------------------- difficulty by k
def by_k(rows: Sequence[dict], resamples: int = 1000) -> list[dict]:
    """Per model and number of concepts k (prompts of a dataset promptset): each identity metric's mean with
    its interval over prompts."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("k"):
            groups[(r["model"], int(r["k"]))].append(r)
    out = []
    for (model, k), rs in sorted(groups.items()):
        row = {"model": model, "k": k, "n": len(rs)}
        for m in IDENTITY:
            vals = [r.get(m) for r in rs]
            row[m], row[f"{m}_lo"], row[f"{m}_hi"] = bootstrap_ci(vals, [r.get("prompt_key") for r in rs], resamples,
                                                                  stable_hash(f"{model}/{k}/{m}"))
        out.append(row)
    return out


def plot_by_k(table: list[dict], path: Path, backbones: str = "") -> list[str]:
    """One panel per identity metric that has values, a line per model (95 % intervals as bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gen4gen.bench.report import save_figure

    shown = [m for m in IDENTITY if any(r.get(m) is not None for r in table)]
    if not shown:
        return []
    fig, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown), 3.4), dpi=110, squeeze=False)
    for ax, m in zip(axes[0], shown):
        for model in sorted({r["model"] for r in table}):
            pts = [r for r in table if r["model"] == model and r.get(m) is not None]
            if not pts:
                continue
            ks, ys = [r["k"] for r in pts], [r[m] for r in pts]
            err = [[y - (r[f"{m}_lo"] if r[f"{m}_lo"] is not None else y) for y, r in zip(ys, pts)],
                   [(r[f"{m}_hi"] if r[f"{m}_hi"] is not None else y) - y for y, r in zip(ys, pts)]]
            ax.errorbar(ks, ys, yerr=err, marker="o", capsize=3, lw=1, label=model)
        ax.set_xlabel("concepts in the prompt (k)")
        ax.set_title(m)
        ax.set_xticks(sorted({r["k"] for r in table}))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    save_figure(fig, path, backbones)
    return shown


def by_k_lines(table: list[dict], shown: Sequence[str]) -> list[str]:
    from gen4gen.bench.report import markdown_table

    if not table:
        return []
    return ["## Difficulty by number of concepts (k)", "",
            "Dataset prompts grouped by how many concepts they name (k = 1, 2, 3, ... from the dataset's own concept "
            "sets): each identity metric per model against k, 95 % intervals over prompts. Plot: `by_k.png`.", "",
            markdown_table(table, ["model", "k", "n", *shown]), ""]


# ---------------------------------------------------------------- counterfactuals and leakage
def counterfactual_lines(rates: list[dict], backbone: str, images: int) -> list[str]:
    from gen4gen.bench.report import markdown_table

    if not rates:
        return []
    flagged = [r for r in rates if r["flag"]]
    lines = ["## Metrics that must notice (counterfactuals)", "",
             f"{images} dataset image(s), each changed per instance: swap two concepts, drop one, duplicate another "
             f"in its place, substitute another image's concept. Rate = share of cases where the true image scores "
             f"above its counterfactual, at the true instance boxes, with {backbone}. `counterfactual.csv` has every "
             f"case.", "", markdown_table([{**r, "rate": f"{r['rate']:.0%}"} for r in rates],
                                          ["metric", "kind", "cases", "noticed", "rate", "flag"]), ""]
    if flagged:
        lines += ["**Flagged: these metrics fail to notice a class of change**: " + ", ".join(
            f"`{r['metric']}` on {r['kind']} ({r['noticed']}/{r['cases']})" for r in flagged) + ".", ""]
    return lines


def leakage_lines(rows: list[dict]) -> list[str]:
    from gen4gen.bench.leakage import COLUMNS
    from gen4gen.bench.report import markdown_table

    if not rows:
        return []
    return ["## Leakage: evaluation prompts vs training captions", "",
            "Per personalised model: its evaluation prompts checked against the captions it was trained on (exact "
            "after normalising case, punctuation and `<newK>` tokens; near = word-set overlap >= 0.8), the novel "
            "backgrounds against the training captions, and held-out concept sets (`split.json`) against the sets "
            "trained on. `leakage.csv`.", "", markdown_table(rows, COLUMNS), ""]
