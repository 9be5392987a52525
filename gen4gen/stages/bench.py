"""bench: generate every roster model x prompt x seed, score the images, and write the reports.

``python -m gen4gen stage=bench roster=fewstep`` -> ``<bench.out_dir>/<bench.name>/``:
``images/<model>/<set>/<prompt id>_s<seed>.{png,json}``, ``results.{csv,jsonl}`` (one row per image: latency,
peak memory, cost), ``metrics.{csv,jsonl}`` and ``report/`` (leaderboards, Pareto plot, ranking, gallery).
``bench.steps`` picks generate / metrics / report; a sharded run (``shard.count>1``, one GPU per shard through a
Hydra launcher) generates its share of the models, then ``bench.steps=[metrics,report]`` scores them all.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gen4gen.bench.generate import estimate, generate, is_done, plan_jobs, read_records, resolve_device, shard_models
from gen4gen.bench.metrics import MetricsConfig, score_records
from gen4gen.bench.prompts import load_promptsets
from gen4gen.bench.report import csv_bytes, write_reports
from gen4gen.bench.roster import load_roster
from gen4gen.console import Summary, console
from gen4gen.errors import UserError
from gen4gen.io import write_atomic
from gen4gen.markers import failures_path

STEPS = ("generate", "metrics", "report")
RESULT_COLUMNS = ["model", "set", "prompt_id", "category", "seed", "prompt", "width", "height", "steps", "guidance",
                  "negative", "image", "latency_s", "batch_size", "batch_seconds", "peak_memory_gb", "memory_kind",
                  "cost_usd", "device", "pipeline"]
METRIC_COLUMNS = ["model", "set", "prompt_id", "category", "seed", "image", "novel_background", "clip_t",
                  "clip_t_windows", "clip_i", "dino", "cp_clip", "cp_detected", "ti_clip", "mcos", "latency_s",
                  "peak_memory_gb", "cost_usd", "prompt"]


def run(cfg: DictConfig) -> Summary:
    t0 = time.perf_counter()
    bench = cfg.bench
    steps = [str(s) for s in bench.steps]
    bad = [s for s in steps if s not in STEPS]
    if bad:
        raise UserError(f"bench.steps: unknown step(s) {', '.join(bad)}; choose from {', '.join(STEPS)}")
    roster = load_roster(cfg.roster)
    run_dir = Path(str(bench.out_dir)) / str(bench.name or roster.name)
    summary = Summary(stage="bench", out_dir=str(run_dir))
    prompts, notes = load_promptsets(OmegaConf.to_container(bench.promptsets, resolve=True), list(bench.use))
    summary.notes.update(notes)
    if not roster.models:
        raise UserError(f"roster {roster.name!r} has no models; pick one with roster=fewstep|base or import one "
                        f"(python -m gen4gen.bench.gemrec ...)")
    if not prompts:
        raise UserError(f"no prompts: bench.use={list(bench.use)} gave none")
    shard_index, shard_count = int(cfg.shard.index), int(cfg.shard.count)
    device = resolve_device(str(cfg.device))
    failures: list[dict] = []

    if "generate" in steps:
        models = shard_models(roster.models, shard_index, shard_count)
        plan = plan_jobs(models, prompts, run_dir, bench)
        summary.total = sum(len(j) for j in plan.values())
        pending = {name: [j for j in jobs if not is_done(j)] for name, jobs in plan.items()}
        if device == "cpu" and any(pending.values()) and not bench.force_cpu:
            text, _ = estimate(pending)
            raise UserError("no CUDA GPU here, and generating on the CPU takes hours for real models.\n"
                            f"Work left ({'shard %d of %d' % (shard_index, shard_count) if shard_count > 1 else 'this run'}): "
                            f"{text}\nRun it on a GPU machine (one GPU per shard: shard.count=N with a Hydra launcher), "
                            "or set bench.force_cpu=true to run here anyway.")
        result = generate(plan, run_dir, device, bench)
        summary.done, summary.skipped = result.done, result.skipped
        failures += result.failures or []

    current = {m.name: m.fingerprint() for m in roster.models}
    keys = {p.key for p in prompts}
    # records of models/prompts no longer configured, or made with other settings, stay on disk but out of the tables
    records = [r for r in read_records(run_dir) if current.get(r["model"]) == r.get("model_fingerprint")
               and f"{r['set']}/{r['prompt_id']}" in keys]
    write_atomic(run_dir / "results.csv", csv_bytes(records, RESULT_COLUMNS))
    write_atomic(run_dir / "results.jsonl", _jsonl(records))
    if "generate" not in steps:
        summary.total = len(records)

    rows = None
    if "metrics" in steps:
        if shard_count > 1 and "generate" in steps:
            summary.notes["metrics"] = ("not scored on a shard (MCOS compares models across shards); after all shards "
                                        "finish run: python -m gen4gen stage=bench bench.steps=[metrics,report]")
        elif records:
            rows, metric_failures = score_records(records, {p.key: p for p in prompts}, run_dir,
                                                  MetricsConfig.from_cfg(bench.metrics), device)
            failures += metric_failures
            write_atomic(run_dir / "metrics.csv", csv_bytes(rows, METRIC_COLUMNS))
            write_atomic(run_dir / "metrics.jsonl", _jsonl(rows))
            if "generate" not in steps:
                summary.done = len(rows)
    if "report" in steps and not (shard_count > 1 and "generate" in steps):
        if rows is None:
            rows = _read_jsonl(run_dir / "metrics.jsonl") or [_bare_row(r) for r in records]
            have = {(r["model"], r["set"], r["prompt_id"], r["seed"]) for r in records}
            rows = [r for r in rows if (r["model"], r["set"], r["prompt_id"], r["seed"]) in have]
        if rows:
            popularity = {m.name: m.popularity for m in roster.models}
            sets = [n for n in bench.use if bench.promptsets[n].get("kind") == "dataset"]
            info = write_reports(rows, run_dir, popularity, dict(bench.report.weights), str(bench.report.quality),
                                 personal_methods(roster.models), sets)
            summary.notes["report"] = info["report"]
    failures.sort(key=lambda f: f["id"])
    write_atomic(failures_path(run_dir, shard_index, shard_count), _jsonl(failures))
    summary.failed = len(failures)
    if failures:
        console.print(f"[yellow]bench: {len(failures)} failure(s); see {failures_path(run_dir, shard_index, shard_count)}[/yellow]")
    summary.seconds = round(time.perf_counter() - t0, 2)
    return summary


def personal_methods(models) -> dict[str, str]:
    """Gen4Gen's table rows: each train run's method, and "base model" for the bases they were trained from
    (empty without train runs: no table)."""
    from gen4gen.bench.report import BASE_METHOD
    from gen4gen.personalize import Manifest

    runs = {}
    for m in (m for m in models if m.train_run):
        try:
            runs[m.name] = Manifest.load(Path(m.train_run))
        except UserError:
            continue  # its images failed to load with this reason (failures.jsonl); the table goes without it
    bases = {man.base for man in runs.values()}
    out = {m.name: BASE_METHOD for m in models if not m.train_run and m.source in bases}
    return {**out, **{name: man.method for name, man in runs.items()}} if runs else {}


def _clean(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps({k: _clean(v) for k, v in r.items()}, ensure_ascii=False) + "\n"
                   for r in rows).encode("utf-8")


def _read_jsonl(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


def _bare_row(rec: dict) -> dict:
    """A report row for an image without metrics (bench.steps without metrics): latency and cost only."""
    return {"model": rec["model"], "set": rec["set"], "prompt_id": rec["prompt_id"],
            "prompt_key": f"{rec['set']}/{rec['prompt_id']}", "category": rec.get("category", ""), "seed": rec["seed"],
            "image": rec["image"], "prompt": rec["prompt"], "latency_s": rec.get("latency_s"),
            "peak_memory_gb": rec.get("peak_memory_gb"), "cost_usd": rec.get("cost_usd")}
