"""Router quality and cost vs baselines on held-out splits of the shared CEMS tables.

    python benchmarks/route.py [--cems ../shared/data/cems] [--seeds 0 1 2] [--test-fraction 0.2]

For each score (NIMA, CLIP) and split seed: train on the rest (lambda chosen by k-fold validation
inside the train part), report on the held-out prompts: oracle, random, each model alone, the CEMS
class-weighted classifier, a TF-IDF ridge router (the paper's baseline) and ours at its default target.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from gen4gen.route.embed import FeatureMaker, TfidfEmbedder, make_embedder  # noqa: E402
from gen4gen.route.report import baseline_policies, policy_stats  # noqa: E402
from gen4gen.route.router import ArgmaxClassifier, Router, Target, make_predictor  # noqa: E402
from gen4gen.route.tables import load_table, model_costs  # noqa: E402
from gen4gen.stages.route import split_train_eval  # noqa: E402

GOALS = {"nima": (5.66, 0.080), "clip": (34.95, 0.060)}
TARGETS = {"nima": "budget:0.078", "clip": "budget:0.058"}  # conf/config.yaml route.targets


def main() -> None:
    ap = argparse.ArgumentParser()
    here = Path(__file__).resolve().parents[1]
    ap.add_argument("--cems", default=os.environ.get("GEN4GEN_SHARED_DATA", str(here / ".." / "shared" / "data")) + "/cems")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--cache", default=os.environ.get("GEN4GEN_CACHE", str(Path.home() / ".cache" / "gen4gen")))
    args = ap.parse_args()
    console = Console(width=200)
    minilm = make_embedder("minilm", cache_dir=args.cache)
    for score in ("nima", "clip"):
        table = load_table(args.cems, score)
        costs = model_costs(table.models)
        rows: dict[str, list] = {}
        for seed in args.seeds:
            train, test = split_train_eval(table, args.test_fraction, seed)
            pol = baseline_policies(test.quality, costs, test.models, seed=seed)
            t0 = time.time()
            ours = Router(FeatureMaker(minilm, stats=True, lexical=True), lambda: make_predictor("ensemble"), costs,
                          Target.parse(TARGETS[score]), seed=seed).fit(train.prompts, train.quality)
            pol["router (ours, default target)"] = policy_stats(ours.route(test.prompts), test.quality, costs, test.models)
            pol["router (ours, target=best)"] = policy_stats(
                ours.route(test.prompts, lam=_best_lambda(ours, train.quality, costs)), test.quality, costs, test.models)
            secs = time.time() - t0
            tfidf = Router(FeatureMaker(TfidfEmbedder(), stats=False), lambda: make_predictor("ridge", alpha=1.0), costs,
                           Target("best"), seed=seed).fit(train.prompts, train.quality)
            pol["tfidf ridge router (best)"] = policy_stats(tfidf.route(test.prompts), test.quality, costs, test.models)
            cems = ArgmaxClassifier(seed=seed).fit(tfidf.x_train, train.quality)
            pol["cems_classifier (tfidf)"] = policy_stats(cems.predict(tfidf.features.transform(test.prompts)).argmax(1),
                                                          test.quality, costs, test.models)
            for name, p in pol.items():
                rows.setdefault(name, []).append((p["quality"], p["cost_per_1k"]))
            console.print(f"[dim]{score} seed {seed}: ours trained in {secs:.0f}s[/dim]")
        goal_q, goal_c = GOALS[score]
        t = Table(title=f"{score.upper()}: held-out {args.test_fraction:.0%} of the shared CEMS tables, "
                        f"mean over split seeds {args.seeds} (goal >= {goal_q} at <= ${goal_c}/1k)")
        for col in ("policy", "quality", "$ / 1k", "quality - SDXL-Turbo", "cost / SDXL-Turbo", "per seed"):
            t.add_column(col, justify="left" if col in ("policy", "per seed") else "right")
        sdxl = np.array(rows["only:SDXL-Turbo"])
        for name, vals in rows.items():
            v = np.array(vals)
            t.add_row(name, f"{v[:, 0].mean():.4f}", f"{v[:, 1].mean():.4f}", f"{(v[:, 0] - sdxl[:, 0]).mean():+.4f}",
                      f"{(v[:, 1] / sdxl[:, 1]).mean():.3f}", "  ".join(f"{q:.3f}@{c:.3f}" for q, c in vals),
                      style="bold" if name.startswith("router (ours") else None)
        console.print(t)


def _best_lambda(router: Router, quality: np.ndarray, costs: np.ndarray) -> float:
    from gen4gen.route.router import pick_lambda

    return pick_lambda(router.oof, quality, costs, Target("best"))[0]


if __name__ == "__main__":
    main()
