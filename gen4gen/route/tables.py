"""Per-prompt quality tables for routing and the per-request cost of each model.

Two input layouts:
- CEMS: a folder with ``{score}_score_with_time_<model>.csv`` (columns ``dataset_id, prompt_id, prompt,
  mean_time, {score}_score``), one file per model, rows aligned by ``prompt_id``;
- a bench results table (``.csv`` or ``.jsonl``; a bench run folder means its ``metrics.jsonl``) in long
  form, one row per (model, prompt[, seed]) with columns ``model``, ``prompt`` (and optionally
  ``prompt_id``), the score (``{score}`` or ``{score}_score``, e.g. ``route.score=clip_t``) and optionally
  ``latency_s``/``mean_time`` and ``cost``/``cost_usd``; seeds are averaged.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gen4gen.errors import UserError

log = logging.getLogger(__name__)

# CEMS (CIKM'24), as published: $ per GB-second of serverless GPU time, and per-model time and memory
PRICE_PER_GB_S = 0.0000166667
CEMS_MODELS = {  # name -> (exec_time_s, memory_GB)
    "SDXL-Turbo": (0.616, 9.51),
    "SD-Turbo": (0.176, 4.64),
    "aMUSEd": (0.489, 3.75),
    "TAESD": (1.588, 3.48),
}


def cems_cost(exec_time_s: float, memory_gb: float, price: float = PRICE_PER_GB_S) -> float:
    """Per-request cost: billed memory is rounded up to whole GB."""
    return float(exec_time_s) * math.ceil(float(memory_gb)) * price


@dataclass
class QualityTable:
    """quality[i, m]: score of model m on prompt i (higher is better); time[i, m]: seconds or NaN."""

    models: list[str]
    prompt_ids: list[str]
    prompts: list[str]
    quality: np.ndarray
    time: np.ndarray
    score: str
    groups: list[str] = field(default_factory=list)  # dataset_id per prompt, when known
    measured_cost: dict[str, float] = field(default_factory=dict)  # model -> $ per request, when the table has it

    def __len__(self) -> int:
        return len(self.prompts)

    def with_models(self, models: list[str]) -> "QualityTable":
        """The same table with its model columns in ``models``' order."""
        cols = [self.models.index(m) for m in models]
        return QualityTable(list(models), self.prompt_ids, self.prompts, self.quality[:, cols], self.time[:, cols],
                            self.score, self.groups, self.measured_cost)

    def subset(self, rows: np.ndarray) -> "QualityTable":
        rows = np.asarray(rows)
        pick = lambda xs: [xs[i] for i in rows] if xs else []  # noqa: E731
        return QualityTable(self.models, pick(self.prompt_ids), pick(self.prompts), self.quality[rows],
                            self.time[rows], self.score, pick(self.groups), self.measured_cost)


def load_table(path: str | Path, score: str) -> QualityTable:
    path = Path(path)
    if not path.exists():
        raise UserError(f"routing table not found: {path}")
    if path.is_dir():
        files = sorted(path.glob(f"{score}_score_with_time_*.csv"))
        if files:
            return _load_cems(files, score)
        if (path / "metrics.jsonl").is_file():  # a bench run folder: per-image scores with latency and cost
            return _load_long(path / "metrics.jsonl", score)
        tables = sorted([*path.glob("*.csv"), *path.glob("*.jsonl")])
        if len(tables) == 1:
            return _load_long(tables[0], score)
        raise UserError(f"{path}: no {score}_score_with_time_<model>.csv files (CEMS layout) and no single results table")
    return _load_long(path, score)


def _read(path: Path, **kw) -> pd.DataFrame:
    """A CSV or JSON-lines table, or a UserError that names the file (corrupt, empty, not UTF-8)."""
    try:
        if path.suffix == ".jsonl":
            return pd.read_json(path, lines=True, **kw)
        return pd.read_csv(path, **kw)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise UserError(f"{path}: not a readable {'JSON-lines' if path.suffix == '.jsonl' else 'CSV'} table "
                        f"({type(e).__name__}: {str(e)[:200]})") from None


def _examples(ids) -> str:
    ids = [str(i) for i in ids]
    return ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


def _load_cems(files: list[Path], score: str) -> QualityTable:
    col = f"{score}_score"
    frames = {}
    for f in files:
        model = f.stem[len(f"{score}_score_with_time_"):]
        df = _read(f, dtype={"prompt_id": str, "dataset_id": str})
        missing = {"prompt_id", "prompt", col} - set(df.columns)
        if missing:
            raise UserError(f"{f}: missing columns {sorted(missing)}")
        df[col] = pd.to_numeric(df[col], errors="coerce")
        if "mean_time" in df:
            df["mean_time"] = pd.to_numeric(df["mean_time"], errors="coerce")
        dup = df["prompt_id"].duplicated()
        if dup.any():
            log.warning("%s: %d repeated prompt_id rows ignored (the first row of each id is kept): %s",
                        f, int(dup.sum()), _examples(df.loc[dup, "prompt_id"].unique()))
            df = df[~dup]
        frames[model] = df.set_index("prompt_id")
    models = list(frames)
    ids = list(frames[models[0]].index)
    common = set(ids).intersection(*[set(f.index) for f in frames.values()])
    union = set().union(*[set(f.index) for f in frames.values()])
    if len(common) < len(union):
        log.warning("%d prompt_ids are not in every %s table and are left out: %s", len(union - common), score,
                    _examples(sorted(union - common)))
        ids = [i for i in ids if i in common]  # keep the first file's order
    if not ids:
        raise UserError(f"the {score} tables share no prompt_id")
    first = frames[models[0]].loc[ids]
    quality = np.stack([frames[m].loc[ids, col].to_numpy(np.float64) for m in models], axis=1)
    time = np.stack([frames[m].loc[ids, "mean_time"].to_numpy(np.float64) if "mean_time" in frames[m]
                     else np.full(len(ids), np.nan) for m in models], axis=1)
    groups = first["dataset_id"].astype(str).tolist() if "dataset_id" in first else []
    return _checked(QualityTable(models, [str(i) for i in ids], first["prompt"].astype(str).tolist(),
                                 quality, time, score, groups))


def _load_long(path: Path, score: str) -> QualityTable:
    df = _read(path)
    col = next((c for c in (f"{score}_score", score) if c in df.columns), None)
    if col is None or not {"model", "prompt"} <= set(df.columns):
        raise UserError(f"{path}: a results table needs columns model, prompt and {score} (or {score}_score)")
    df[col] = pd.to_numeric(df[col], errors="coerce")
    if df[col].isna().any():
        log.warning("%s: %d rows with a missing or non-numeric %s are left out", path, int(df[col].isna().sum()), col)
    df = df.dropna(subset=[col])
    key = "prompt_id" if "prompt_id" in df.columns else "prompt"
    df[key] = df[key].astype(str)
    tcol = next((c for c in ("mean_time", "latency_s", "seconds") if c in df.columns), None)
    if "cost" not in df.columns and "cost_usd" in df.columns:
        df = df.rename(columns={"cost_usd": "cost"})
    if "cost" in df.columns:
        df["cost"] = pd.to_numeric(df["cost"], errors="coerce")
    agg = {col: "mean", "prompt": "first"} | ({tcol: "mean"} if tcol else {}) | ({"cost": "mean"} if "cost" in df else {})
    if key == "prompt":
        agg.pop("prompt")
    g = df.groupby(["model", key], sort=False).agg(agg).reset_index()
    models = list(dict.fromkeys(g["model"].astype(str)))
    wide = g.pivot(index=key, columns="model", values=col).dropna()
    if wide.empty:
        raise UserError(f"{path}: no prompt was scored for every model")
    ids = list(wide.index)
    prompts = g.drop_duplicates(key).set_index(key).loc[ids, "prompt" if key != "prompt" else key] if key != "prompt" else ids
    time = (g.pivot(index=key, columns="model", values=tcol).loc[ids, models].to_numpy(np.float64) if tcol
            else np.full((len(ids), len(models)), np.nan))
    measured = g.groupby("model")["cost"].mean().dropna().to_dict() if "cost" in g else {}
    return _checked(QualityTable(models, [str(i) for i in ids], [str(p) for p in list(prompts)],
                                 wide[models].to_numpy(np.float64), time, score, [], measured))


def _checked(t: QualityTable) -> QualityTable:
    """Prompts missing a score for some model are left out (with a message naming them), not the whole table."""
    ok = np.isfinite(t.quality).all(axis=1)
    if ok.all():
        return t
    if not ok.any():
        raise UserError(f"no prompt has a numeric {t.score} score for every model")
    log.warning("%d prompts have a missing or non-numeric %s score for some model and are left out: %s",
                int((~ok).sum()), t.score, _examples(np.asarray(t.prompt_ids)[~ok]))
    return t.subset(np.flatnonzero(ok))


def _lookup(name: str, table: dict) -> str | None:
    low = {k.lower(): k for k in table}
    return low.get(name.lower())


def model_costs(models: list[str], table: QualityTable | None = None, mode: str = "cems",
                overrides: dict | None = None, price: float = PRICE_PER_GB_S) -> np.ndarray:
    """$ per request for each model.

    ``cems``: the published time and memory (``overrides`` adds or replaces ``{model: {exec_time_s, memory_gb}}``
    or ``{model: cost}``); ``measured``: the table's own cost column, else its mean time with the model's memory.
    """
    overrides = dict(overrides or {})
    out = []
    for m in models:
        o = overrides.get(m) if m in overrides else overrides.get(_lookup(m, overrides) or "")
        if isinstance(o, (int, float)):
            out.append(float(o))
            continue
        known = CEMS_MODELS.get(_lookup(m, CEMS_MODELS) or "")
        spec = dict(zip(("exec_time_s", "memory_gb"), known)) if known else {}
        spec.update(o or {})
        if mode == "measured" and table is not None:
            if m in table.measured_cost:
                out.append(float(table.measured_cost[m]))
                continue
            col = table.time[:, table.models.index(m)]
            if np.isfinite(col).any():
                spec["exec_time_s"] = float(np.nanmean(col))
        elif mode not in ("cems", "measured"):
            raise UserError(f"route.cost={mode!r}: choose cems or measured")
        if not {"exec_time_s", "memory_gb"} <= set(spec):
            raise UserError(f"no cost known for model {m!r}: add route.costs.{m}={{exec_time_s: .., memory_gb: ..}}")
        out.append(cems_cost(spec["exec_time_s"], spec["memory_gb"], price))
    return np.array(out, np.float64)


def read_prompts(path: str | Path) -> list[str]:
    """Prompts to route: a .txt (one per line), .csv/.tsv (column prompt/Prompt/Prompts or the first) or .jsonl
    (``prompt`` or ``text`` per line; unreadable lines are reported and skipped)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"prompts file not found: {path}")
    if path.suffix in (".csv", ".tsv"):
        df = _read(path, sep="\t" if path.suffix == ".tsv" else ",")
        col = next((c for c in ("prompt", "Prompt", "Prompts", "text") if c in df.columns), df.columns[0])
        return df[col].dropna().astype(str).tolist()
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if path.suffix != ".jsonl":
        return [line.strip() for line in lines if line.strip()]
    prompts, bad = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            text = row.get("prompt", row.get("text")) if isinstance(row, dict) else row
        except (json.JSONDecodeError, RecursionError):
            text = None
        if isinstance(text, str) and text.strip():
            prompts.append(text)
        else:
            bad.append(n)
    if bad:
        log.warning("%s: %d lines without a prompt string skipped (lines %s)", path, len(bad), _examples(bad))
    return prompts
