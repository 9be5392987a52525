"""route: train a cost-aware prompt router on one folder of per-prompt quality tables, evaluate it
against oracle / random / single-model / CEMS-classifier baselines on another, and optionally route
a prompts file.

``python -m gen4gen stage=route route.train_dir=<dir> route.eval_dir=<dir> route.score=nima``
writes ``route_report.json`` and ``route_curve.png`` into the run's output dir.
"""
from __future__ import annotations

import time

import numpy as np
from omegaconf import DictConfig, OmegaConf

from gen4gen.console import Summary, console
from gen4gen.device import resolve_device
from gen4gen.errors import UserError
from gen4gen.io import json_bytes, write_atomic
from gen4gen.paths import run_output_dir
from gen4gen.route.embed import FeatureMaker, make_embedder
from gen4gen.route.report import baseline_policies, frontier, policy_stats, table, write_report
from gen4gen.route.router import ArgmaxClassifier, Router, Target, choose, lambda_grid, make_predictor
from gen4gen.route.tables import QualityTable, load_table, model_costs, read_prompts


def split_train_eval(train: QualityTable, fraction: float, seed: int) -> tuple[QualityTable, QualityTable]:
    """Carve held-out eval prompts from the train table (used when no eval folder is given)."""
    if not 0 < fraction < 1:
        raise UserError(f"route.test_fraction={fraction} must be in (0, 1)")
    perm = np.random.default_rng(seed).permutation(len(train))
    n_eval = max(1, int(round(len(train) * fraction)))
    return train.subset(np.sort(perm[n_eval:])), train.subset(np.sort(perm[:n_eval]))


def build_router(rc: DictConfig, cache_dir: str, device: str, costs: np.ndarray, predictor: str | None = None) -> Router:
    features = FeatureMaker(make_embedder(rc.embedding, clip=rc.clip, device=device, cache_dir=cache_dir),
                            stats=bool(rc.prompt_stats), lexical=bool(rc.lexical))
    kind = predictor or rc.predictor
    return Router(features, lambda: make_predictor(kind, alpha=rc.alpha, k=rc.k, hidden=rc.hidden, seed=rc.seed),
                  costs, Target.parse(rc.target), folds=int(rc.folds), seed=int(rc.seed))


def run(cfg: DictConfig) -> Summary:
    start = time.time()
    rc = cfg.route
    if not rc.train_dir:
        raise UserError("set route.train_dir=<folder with {nima,clip}_score_with_time_<model>.csv or a bench results table>")
    device = resolve_device(cfg.device)
    train = load_table(rc.train_dir, rc.score)
    if rc.eval_dir:
        evals = load_table(rc.eval_dir, rc.score)
        if set(evals.models) != set(train.models):
            raise UserError(f"eval models {evals.models} differ from train models {train.models}")
        evals = evals.with_models(train.models)  # a results table lists its models in the order it met them
        eval_source = str(rc.eval_dir)
    else:
        train, evals = split_train_eval(train, float(rc.test_fraction), int(rc.seed))
        eval_source = f"{rc.train_dir} (held-out {rc.test_fraction:.0%}, seed {rc.seed})"
    costs = model_costs(train.models, train, rc.cost, OmegaConf.to_container(rc.costs) if rc.costs else None)
    console.print(f"route: {len(train)} train prompts, {len(evals)} eval prompts, models {train.models}, "
                  f"embedding {rc.embedding}, predictor {rc.predictor}, target {rc.target}")

    router = build_router(rc, cfg.paths.cache_dir, device, costs).fit(train.prompts, train.quality)
    q_hat = router.predict_quality(evals.prompts)
    policies = baseline_policies(evals.quality, costs, evals.models, seed=int(rc.seed))
    # the CEMS paper's router: a class-weighted classifier of the best model, no cost term
    cems = ArgmaxClassifier(seed=int(rc.seed)).fit(router.x_train, train.quality)
    policies["cems_classifier"] = policy_stats(cems.predict(router.features.transform(evals.prompts)).argmax(1),
                                               evals.quality, costs, evals.models)
    policies["router"] = policy_stats(choose(q_hat, costs, router.lam), evals.quality, costs, evals.models)

    out_dir = run_output_dir(cfg, "route")
    report = {"score": rc.score, "train": str(rc.train_dir), "eval": eval_source, "n_train": len(train),
              "n_eval": len(evals), "models": evals.models, "cost_per_request": dict(zip(evals.models, costs.tolist())),
              "features": router.features.name, "predictor": rc.predictor, "target": rc.target,
              "validation": router.validation, "policies": policies}
    if rc.predict:
        report["predictions"] = str(_predict(router, evals.models, costs, rc.predict, out_dir))
    paths = write_report(out_dir, report, frontier(q_hat, evals.quality, costs, lambda_grid(q_hat, costs, 80)), rc.score)
    console.print(table(policies, rc.score))
    console.print(f"lambda={router.lam:.4g} chosen on {router.validation['val_prompts']} out-of-fold train prompts "
                  f"(validation quality {router.validation['val_quality']:.4f} at ${router.validation['val_cost_per_1k']:.4f}/1k)")
    console.print(f"report: {paths['json']}  curve: {paths['png']}")
    notes = {"router": f"{policies['router']['quality']:.4f} at ${policies['router']['cost_per_1k']:.4f}/1k"}
    return Summary(stage="route", total=len(evals), done=len(evals), seconds=time.time() - start,
                   out_dir=str(out_dir), notes=notes)


def _predict(router: Router, models: list[str], costs: np.ndarray, prompts_file: str, out_dir):
    prompts = read_prompts(prompts_file)
    if not prompts:
        raise UserError(f"no prompts in {prompts_file}")
    q_hat = router.predict_quality(prompts)
    picks = choose(q_hat, costs, router.lam)
    rows = [{"prompt": p, "model": models[j], "cost": float(costs[j]),
             "predicted_quality": dict(zip(models, np.round(q, 5).tolist()))} for p, j, q in zip(prompts, picks, q_hat)]
    path = out_dir / "route_predictions.jsonl"
    write_atomic(path, b"".join(json_bytes(r).replace(b"\n", b"") + b"\n" for r in rows))
    console.print(f"routed {len(prompts)} prompts -> {path}")
    return path
