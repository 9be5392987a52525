"""route: train a cost-aware prompt router on one folder of per-prompt quality tables, evaluate it
against oracle / random / single-model / CEMS-classifier baselines on another, and optionally route
a prompts file.

``python -m gen4gen stage=route route.train_dir=<dir> route.eval_dir=<dir> route.score=nima``
writes ``route_report.json`` and ``route_curve.png`` (and ``route_predictions.jsonl``) into
``<outputs_dir>/route/<score>_<settings hash>/``, through the runner: a rerun with the same settings on
unchanged tables reuses that report and prints it again.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from gen4gen.console import Summary, console
from gen4gen.device import resolve_device
from gen4gen.errors import UserError
from gen4gen.hashing import config_hash, stat_fingerprint
from gen4gen.io import json_bytes
from gen4gen.route.embed import FeatureMaker, make_embedder
from gen4gen.route.report import CURVE, REPORT, baseline_policies, frontier, policy_stats, report_files, table
from gen4gen.route.router import ArgmaxClassifier, Router, Target, choose, lambda_grid, make_predictor
from gen4gen.route.tables import QualityTable, load_table, model_costs, read_prompts
from gen4gen.runner import Item, ItemWriter, run_stage
from gen4gen.settings import RouteSettings, section
from gen4gen.stage_settings import PathsSettings

PREDICTIONS = "route_predictions.jsonl"


def split_train_eval(train: QualityTable, fraction: float, seed: int) -> tuple[QualityTable, QualityTable]:
    """Carve held-out eval prompts from the train table (used when no eval folder is given)."""
    if not 0 < fraction < 1:
        raise UserError(f"route.test_fraction={fraction} must be in (0, 1)")
    perm = np.random.default_rng(seed).permutation(len(train))
    n_eval = max(1, int(round(len(train) * fraction)))
    return train.subset(np.sort(perm[n_eval:])), train.subset(np.sort(perm[:n_eval]))


def build_router(rc: RouteSettings, cache_dir: Path, device: str, costs: np.ndarray,
                 predictor: str | None = None) -> Router:
    features = FeatureMaker(make_embedder(rc.embedding, clip=rc.clip, device=device, cache_dir=cache_dir),
                            stats=rc.prompt_stats, lexical=rc.lexical)
    kind = predictor or rc.predictor
    return Router(features, lambda: make_predictor(kind, alpha=rc.alpha, k=rc.k, hidden=rc.hidden, seed=rc.seed),
                  costs, Target.parse(rc.target), folds=rc.folds, seed=rc.seed)


class RouteStage:
    """One item: the report of these settings on these tables, in ``<outputs_dir>/route/<score>_<settings hash>``
    (config: the route settings; fingerprint: the tables, the prompts file and the CLIP weights, by stat), so a
    rerun with the same settings and unchanged inputs reuses it and prints it again."""
    name = "route"

    def __init__(self, cfg: DictConfig):
        self.rc = rc = section(cfg, "route", RouteSettings)
        if not rc.train_dir:
            raise UserError("set route.train_dir=<folder with {nima,clip}_score_with_time_<model>.csv or a bench "
                            "results table>")
        paths = section(cfg, "paths", PathsSettings)
        self.cache_dir = paths.cache_dir
        self.device = resolve_device(cfg.device)
        self.out_root = paths.outputs_dir / "route"
        self.id = f"{rc.score}_{config_hash(self.config())[:10]}"
        self.shown: dict | None = None  # the report of this run, built or reused

    def config(self) -> dict:
        return self.rc.model_dump(mode="json")

    def discover(self) -> list[Item]:
        rc = self.rc
        inputs = [p for p in (rc.train_dir, rc.eval_dir, rc.predict, rc.embedding == "clip" and rc.clip) if p]
        return [Item(self.id, self.out_root / self.id, {"path": rc.train_dir},
                     fingerprint=stat_fingerprint(inputs))]

    def process(self, item: Item, out: ItemWriter, rng) -> dict:
        report, curve, router = route(self.rc, self.cache_dir, self.device)
        if self.rc.predict:
            out.bytes(PREDICTIONS, _predictions(router, report["models"], np.asarray(report["costs"]), self.rc.predict))
            console.print(f"routed prompts -> {item.out_dir / PREDICTIONS}")
            report["predictions"] = str(item.out_dir / PREDICTIONS)
        del report["costs"]
        for name, data in report_files(report, curve, self.rc.score).items():
            out.bytes(name, data)
        return {"lambda": router.lam}

    def finish(self, summary: Summary, metas: dict) -> None:
        """The report's table, whether made now or reused (the summary counts eval prompts)."""
        folder = self.out_root / self.id
        if self.id not in metas:
            return
        report = json.loads((folder / REPORT).read_text("utf-8"))
        policies, v = report["policies"], report["validation"]
        console.print(f"route: {report['n_train']} train prompts, {report['n_eval']} eval prompts, models "
                      f"{report['models']}, embedding {self.rc.embedding}, predictor {self.rc.predictor}, "
                      f"target {self.rc.target}")
        console.print(table(policies, self.rc.score))
        console.print(f"lambda={metas[self.id]['lambda']:.4g} chosen on {v['val_prompts']} out-of-fold train prompts "
                      f"(validation quality {v['val_quality']:.4f} at ${v['val_cost_per_1k']:.4f}/1k)")
        console.print(f"report: {folder / REPORT}  curve: {folder / CURVE}")
        summary.out_dir = str(folder)
        summary.notes["router"] = f"{policies['router']['quality']:.4f} at ${policies['router']['cost_per_1k']:.4f}/1k"
        if summary.skipped:
            summary.notes["reused"] = "same settings and unchanged tables: the report of an earlier run"


def route(rc: RouteSettings, cache_dir: Path, device: str) -> tuple[dict, list, Router]:
    """Fit the router on the train prompts and score every policy on the eval prompts: the report (with the
    per-model ``costs`` as an array, for predictions), the lambda sweep and the router."""
    train = load_table(rc.train_dir, rc.score)
    if rc.eval_dir:
        evals = load_table(rc.eval_dir, rc.score)
        if set(evals.models) != set(train.models):
            raise UserError(f"eval models {evals.models} differ from train models {train.models}")
        evals = evals.with_models(train.models)  # a results table lists its models in the order it met them
        eval_source = rc.eval_dir
    else:
        train, evals = split_train_eval(train, rc.test_fraction, rc.seed)
        eval_source = f"{rc.train_dir} (held-out {rc.test_fraction:.0%}, seed {rc.seed})"
    costs = model_costs(train.models, train, rc.cost, rc.costs)
    router = build_router(rc, cache_dir, device, costs).fit(train.prompts, train.quality)
    q_hat = router.predict_quality(evals.prompts)
    policies = baseline_policies(evals.quality, costs, evals.models, seed=rc.seed)
    # the CEMS paper's router: a class-weighted classifier of the best model, no cost term
    cems = ArgmaxClassifier(seed=rc.seed).fit(router.x_train, train.quality)
    policies["cems_classifier"] = policy_stats(cems.predict(router.features.transform(evals.prompts)).argmax(1),
                                               evals.quality, costs, evals.models)
    policies["router"] = policy_stats(choose(q_hat, costs, router.lam), evals.quality, costs, evals.models)
    report = {"score": rc.score, "train": rc.train_dir, "eval": eval_source, "n_train": len(train),
              "n_eval": len(evals), "models": evals.models, "cost_per_request": dict(zip(evals.models, costs.tolist())),
              "features": router.features.name, "predictor": rc.predictor, "target": rc.target,
              "validation": router.validation, "policies": policies, "costs": costs.tolist()}
    return report, frontier(q_hat, evals.quality, costs, lambda_grid(q_hat, costs, 80)), router


def run(cfg: DictConfig) -> Summary:
    return run_stage(RouteStage(cfg), cfg)


def _predictions(router: Router, models: list[str], costs: np.ndarray, prompts_file: str) -> bytes:
    """``route_predictions.jsonl``: the routed model of each prompt of ``prompts_file``, with its predictions."""
    prompts = read_prompts(prompts_file)
    if not prompts:
        raise UserError(f"no prompts in {prompts_file}")
    q_hat = router.predict_quality(prompts)
    picks = choose(q_hat, costs, router.lam)
    rows = [{"prompt": p, "model": models[j], "cost": float(costs[j]),
             "predicted_quality": dict(zip(models, np.round(q, 5).tolist()))} for p, j, q in zip(prompts, picks, q_hat)]
    return b"".join(json_bytes(r).replace(b"\n", b"") + b"\n" for r in rows)
