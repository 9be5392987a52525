"""Quality predictors and the cost-aware routing policy.

A predictor maps prompt features to one predicted quality per model, ``Q_hat`` (n x m). The policy
sends each prompt to ``argmax_m (Q_hat_m - lambda * cost_m)``: lambda = 0 is "best predicted quality",
a large lambda is "cheapest model". lambda is chosen on out-of-fold predictions over the TRAIN prompts
(k-fold cross-fitting: every train prompt is validated by a model that never saw it), for a target:

- ``best``: the highest validation quality;
- ``floor:<q>``: the cheapest policy whose validation quality is >= q;
- ``floor_rel:<d>``: the same with q = (best single model's validation quality) + d;
- ``budget:<usd per 1k>``: the highest validation quality at <= that cost per 1,000 prompts.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from gen4gen.errors import UserError
from gen4gen.route.embed import Features

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- predictors
class RidgeQuality:
    """One ridge regression per model (a single multi-output fit; works on sparse TF-IDF too).
    ``view``: which features it reads, ``full`` or ``lexical``."""

    def __init__(self, alpha: float = 10.0, view: str = "full"):
        self.alpha, self.view = alpha, view

    def fit(self, x: Features, y: np.ndarray) -> "RidgeQuality":
        from sklearn.linear_model import Ridge

        self.model = Ridge(alpha=self.alpha).fit(getattr(x, self.view), y)
        return self

    def predict(self, x: Features) -> np.ndarray:
        return np.asarray(self.model.predict(getattr(x, self.view)), np.float64)


class KnnQuality:
    """Distance-weighted mean quality of the k most similar training prompts (cosine on the embedding):
    catches the near-duplicate prompt families that user prompt logs are full of."""

    def __init__(self, k: int = 50):
        self.k = k

    def fit(self, x: Features, y: np.ndarray) -> "KnnQuality":
        from sklearn.neighbors import KNeighborsRegressor

        self.model = KNeighborsRegressor(min(self.k, len(y)), weights="distance", metric="cosine").fit(x.text, y)
        return self

    def predict(self, x: Features) -> np.ndarray:
        return np.asarray(self.model.predict(x.text), np.float64).reshape(x.text.shape[0], -1)


class EnsembleQuality:
    """Mean of a ridge and a kNN predictor (the global linear trend plus local prompt families) and, when
    the features carry a TF-IDF view, a ridge on it (alpha 1, the CEMS TF-IDF baseline's): the three views
    err differently, so their mean ranks the per-prompt model differences better than any one of them."""

    lexical_alpha = 1.0

    def __init__(self, alpha: float = 10.0, k: int = 50):
        self.alpha, self.k = alpha, k

    def fit(self, x: Features, y: np.ndarray) -> "EnsembleQuality":
        self.parts = [RidgeQuality(self.alpha), KnnQuality(self.k)]
        if x.lexical is not None:
            self.parts.append(RidgeQuality(self.lexical_alpha, view="lexical"))
        for p in self.parts:
            p.fit(x, y)
        return self

    def predict(self, x: Features) -> np.ndarray:
        return np.mean([p.predict(x) for p in self.parts], axis=0)


class MlpQuality:
    """A small MLP regressor on standardised targets (dense features only)."""

    def __init__(self, hidden: int = 256, alpha: float = 1e-3, seed: int = 0):
        self.hidden, self.alpha, self.seed = hidden, alpha, seed

    def fit(self, x: Features, y: np.ndarray) -> "MlpQuality":
        from sklearn.neural_network import MLPRegressor

        x = _dense(x.full)
        self.mean, self.std = y.mean(0), y.std(0) + 1e-9
        self.model = MLPRegressor(hidden_layer_sizes=(self.hidden,), alpha=self.alpha, early_stopping=True,
                                  max_iter=200, random_state=self.seed).fit(x, (y - self.mean) / self.std)
        return self

    def predict(self, x: Features) -> np.ndarray:
        return self.model.predict(_dense(x.full)).reshape(-1, len(self.mean)) * self.std + self.mean


class ArgmaxClassifier:
    """CEMS-style: a class-weighted logistic regression that predicts which model scores best;
    its class probabilities stand in for ``Q_hat`` so the same cost-aware policy applies."""

    def __init__(self, c: float = 1.0, class_weight: str | None = "balanced", seed: int = 0):
        self.c, self.class_weight, self.seed = c, class_weight, seed

    def fit(self, x: Features, y: np.ndarray) -> "ArgmaxClassifier":
        from sklearn.linear_model import LogisticRegression

        self.n_models = y.shape[1]
        labels = y.argmax(1)
        self.model = LogisticRegression(C=self.c, class_weight=self.class_weight, max_iter=2000,
                                        random_state=self.seed).fit(x.full, labels)
        return self

    def predict(self, x: Features) -> np.ndarray:
        proba = np.zeros((len(x), self.n_models))
        proba[:, self.model.classes_] = self.model.predict_proba(x.full)
        return proba


def _dense(x):
    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)


PREDICTORS = ("ensemble", "ridge", "knn", "mlp", "classifier")


def make_predictor(kind: str, alpha: float = 10.0, k: int = 50, hidden: int = 256, seed: int = 0):
    if kind == "ensemble":
        return EnsembleQuality(alpha, k)
    if kind == "ridge":
        return RidgeQuality(alpha)
    if kind == "knn":
        return KnnQuality(k)
    if kind == "mlp":
        return MlpQuality(hidden, seed=seed)
    if kind == "classifier":
        return ArgmaxClassifier(seed=seed)
    raise UserError(f"route.predictor={kind!r}: choose one of {', '.join(PREDICTORS)}")


# ---------------------------------------------------------------- policy
def choose(q_hat: np.ndarray, costs: np.ndarray, lam: float) -> np.ndarray:
    """Index of the routed model per prompt: ``argmax_m (Q_hat_m - lambda * cost_m)``."""
    return np.argmax(q_hat - lam * costs[None, :], axis=1)


def evaluate(choice: np.ndarray, quality: np.ndarray, costs: np.ndarray) -> tuple[float, float]:
    """(mean quality over prompts, total cost): the CEMS protocol."""
    rows = np.arange(len(choice))
    return float(quality[rows, choice].mean()), float(costs[choice].sum())


def lambda_grid(q_hat: np.ndarray, costs: np.ndarray, n: int = 400) -> np.ndarray:
    """0 plus a geometric sweep wide enough to go from "best predicted" to "cheapest everywhere"."""
    spread = float(np.ptp(q_hat)) or 1.0
    dc = np.diff(np.unique(costs))
    lo = spread * 1e-3 / float(np.ptp(costs) or 1.0)
    hi = spread * 10 / float(dc.min() if dc.size else 1.0)
    return np.concatenate([[0.0], np.geomspace(lo, hi, n)])


@dataclass(frozen=True)
class Target:
    kind: str  # best | floor | floor_rel | budget
    value: float = 0.0

    @classmethod
    def parse(cls, text: str) -> "Target":
        text = str(text).strip()
        if text == "best":
            return cls("best")
        kind, _, value = text.partition(":")
        if kind in ("floor", "floor_rel", "budget") and value:
            try:
                return cls(kind, float(value))
            except ValueError:
                pass
        raise UserError(f"route.target={text!r}: use best, floor:<quality>, floor_rel:<delta vs best single model> "
                        "or budget:<usd per 1,000 prompts>")


def pick_lambda(q_hat: np.ndarray, quality: np.ndarray, costs: np.ndarray, target: Target) -> tuple[float, dict]:
    """The lambda meeting ``target`` on validation predictions, with the validation figures."""
    n = len(quality)
    grid = lambda_grid(q_hat, costs)
    points = [(lam, *evaluate(choose(q_hat, costs, lam), quality, costs)) for lam in grid]
    lams, quals, totals = map(np.array, zip(*points))
    per_1k = totals / n * 1000
    single = quality.mean(0)
    floor = None
    if target.kind == "best":
        i = int(np.argmax(quals))
    elif target.kind == "budget":
        ok = per_1k <= target.value + 1e-12
        if not ok.any():
            raise UserError(f"no routing policy costs <= ${target.value}/1k prompts (cheapest: ${per_1k.min():.4f})")
        i = int(np.flatnonzero(ok)[np.argmax(quals[ok])])
    else:
        floor = target.value + (single.max() if target.kind == "floor_rel" else 0.0)
        ok = quals >= floor
        if not ok.any():
            log.warning("no lambda reaches validation quality %.4f; using the best one (%.4f)", floor, quals.max())
            i = int(np.argmax(quals))
        else:
            i = int(np.flatnonzero(ok)[np.argmin(per_1k[ok])])
    info = {"lambda": float(lams[i]), "val_quality": float(quals[i]), "val_cost_per_1k": float(per_1k[i]),
            "val_prompts": n, "val_floor": floor, "val_best_single": float(single.max())}
    return float(lams[i]), info


def kfold(n: int, folds: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, folds)]


@dataclass
class Router:
    """Fit on a train table: out-of-fold predictions choose lambda, then a refit on every train prompt."""

    features: object  # FeatureMaker: prompts -> Features
    predictor_factory: object  # () -> predictor
    costs: np.ndarray
    target: Target
    folds: int = 5
    seed: int = 0

    def fit(self, prompts: list[str], quality: np.ndarray) -> "Router":
        if len(prompts) < 2 * self.folds:
            raise UserError(f"{len(prompts)} train prompts are too few for {self.folds}-fold validation")
        from gen4gen.console import progress

        oof = np.zeros_like(quality, dtype=np.float64)
        with progress() as bar:
            task = bar.add_task("router: fitting folds + final", total=self.folds + 1)
            for held in kfold(len(prompts), self.folds, self.seed):
                fit_rows = np.setdiff1d(np.arange(len(prompts)), held)
                x = self.features.fit([prompts[i] for i in fit_rows]).transform(prompts)
                oof[held] = self.predictor_factory().fit(x[fit_rows], quality[fit_rows]).predict(x[held])
                bar.advance(task)
            self.oof = oof
            self.lam, self.validation = pick_lambda(oof, quality, self.costs, self.target)
            self.x_train = self.features.fit(prompts).transform(prompts)
            self.predictor = self.predictor_factory().fit(self.x_train, quality)
            bar.advance(task)
        return self

    def predict_quality(self, prompts: list[str]) -> np.ndarray:
        return self.predictor.predict(self.features.transform(prompts))

    def route(self, prompts: list[str], lam: float | None = None) -> np.ndarray:
        return choose(self.predict_quality(prompts), self.costs, self.lam if lam is None else lam)
