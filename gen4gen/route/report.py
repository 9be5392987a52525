"""Routing report: every policy's quality and cost on the eval prompts, a table, JSON and a
quality-vs-cost curve."""
from __future__ import annotations

import numpy as np
from rich.table import Table

from gen4gen.io import json_bytes
from gen4gen.route.router import choose, evaluate


def policy_stats(choice: np.ndarray, quality: np.ndarray, costs: np.ndarray, models: list[str]) -> dict:
    q, total = evaluate(choice, quality, costs)
    counts = np.bincount(choice, minlength=len(models))
    return {"quality": q, "total_cost": total, "cost_per_request": total / len(choice),
            "cost_per_1k": total / len(choice) * 1000, "counts": {m: int(c) for m, c in zip(models, counts)}}


def baseline_policies(quality: np.ndarray, costs: np.ndarray, models: list[str], seed: int = 0) -> dict:
    """oracle (best true quality per prompt), random (uniform per prompt, seeded) and each model alone."""
    n = len(quality)
    out = {"oracle": policy_stats(quality.argmax(1), quality, costs, models),
           "random": policy_stats(np.random.default_rng(seed).integers(0, len(models), n), quality, costs, models)}
    for j, m in enumerate(models):
        out[f"only:{m}"] = policy_stats(np.full(n, j), quality, costs, models)
    return out


def frontier(q_hat: np.ndarray, quality: np.ndarray, costs: np.ndarray, lambdas: np.ndarray) -> list[tuple[float, float, float]]:
    """(lambda, quality, cost per 1k) of the router over a lambda sweep on the eval prompts."""
    n = len(quality)
    return [(float(lam), *(lambda qc: (qc[0], qc[1] / n * 1000))(evaluate(choose(q_hat, costs, lam), quality, costs)))
            for lam in lambdas]


def table(policies: dict, score: str) -> Table:
    t = Table(title=f"routing on the eval prompts ({score} score; cost = CEMS $ per request)")
    for col in ("policy", "quality", "$ / 1k prompts", "total $", "counts"):
        t.add_column(col, justify="left" if col in ("policy", "counts") else "right")
    for name, p in policies.items():
        counts = ", ".join(f"{m}:{c}" for m, c in p["counts"].items() if c)
        style = "bold" if name == "router" else None
        t.add_row(name, f"{p['quality']:.4f}", f"{p['cost_per_1k']:.4f}", f"{p['total_cost']:.4f}", counts, style=style)
    return t


REPORT, CURVE = "route_report.json", "route_curve.png"


def report_files(report: dict, curve: list[tuple[float, float, float]], score: str) -> dict[str, bytes]:
    """The report's files by name: the JSON report (with the lambda sweep) and the quality-vs-cost plot."""
    report = dict(report, curve=[{"lambda": l, "quality": q, "cost_per_1k": c} for l, q, c in curve])
    return {REPORT: json_bytes(report), CURVE: _plot(report["policies"], curve, score)}


def _plot(policies: dict, curve, score: str) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    if curve:
        pts = sorted((c, q) for _, q, c in curve)
        ax.plot([c for c, _ in pts], [q for _, q in pts], "-", color="tab:blue", label="router (lambda sweep)")
    for name, p in policies.items():
        marker = {"router": "*", "oracle": "^", "random": "x", "cems_classifier": "s"}.get(name, "o")
        ax.scatter(p["cost_per_1k"], p["quality"], marker=marker, s=90 if name == "router" else 40, zorder=3)
        ax.annotate(name, (p["cost_per_1k"], p["quality"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel("cost, $ per 1,000 prompts")
    ax.set_ylabel(f"mean {score} score")
    ax.set_title("quality vs cost on the eval prompts")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
