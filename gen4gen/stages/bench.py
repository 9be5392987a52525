"""bench: generate every roster model x prompt x seed, score the images, and write the reports.

``python -m gen4gen stage=bench roster=fewstep`` -> ``<bench.out_dir>/<bench.name>/``:
``images/<model>/<set>/<prompt id>_s<seed>.{png,json}``, ``results.{csv,jsonl}`` (one row per image: latency,
peak memory, cost, the model's source and fingerprint), ``metrics.{csv,jsonl}`` (each row names the backbones of
its numbers; ``backbones.json`` describes them), ``counterfactual.json`` (metrics that must notice) and
``report/`` (leaderboards with intervals and ties, Pareto plot, ranking, difficulty by k, leakage, gallery).
``bench.steps`` picks generate / metrics / report; a sharded run (``shard.count>1``, one GPU per shard through a
Hydra launcher) generates its share of the models, then ``bench.steps=[metrics,report]`` scores them all.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from gen4gen.bench import provenance
from gen4gen.bench.counterfactual import read_check, run_check
from gen4gen.artefacts import ImageRecord, Manifest, read_records
from gen4gen.bench.generate import Generator, Job, estimate, plan_jobs
from gen4gen.bench.metrics import MetricsConfig, score_records
from gen4gen.bench.prompts import load_promptsets
from gen4gen.bench.report import csv_bytes, write_reports
from gen4gen.bench.roster import load_roster
from gen4gen.concepts import run_mismatch
from gen4gen.console import Summary, console
from gen4gen.device import resolve_device
from gen4gen.errors import UserError
from gen4gen.hashing import config_hash
from gen4gen.io import jsonl_bytes, read_jsonl, write_atomic
from gen4gen.markers import failures_path, write_failures
from gen4gen.runner import Item, ItemWriter, run_stage
from gen4gen.settings import BenchSettings, GenerateSettings, section, top_level
from gen4gen.stage_settings import RunSettings

RESULT_COLUMNS = ["model", "set", "prompt_id", "category", "seed", "prompt", "width", "height", "steps", "guidance",
                  "negative", "image", "latency_s", "batch_size", "batch_seconds", "peak_memory_gb", "memory_kind",
                  "cost_usd", "device", "pipeline", "source", "model_fingerprint"]
METRIC_COLUMNS = ["model", "set", "prompt_id", "category", "seed", "image", "novel_background", "k", "clip_t",
                  "clip_t_windows", "clip_i", "dino", "cp_clip", "cp_detected", "identity_mix", "identity_missing",
                  "identity_mixed", "identity_margins", "ti_clip", "mcos", "latency_s", "peak_memory_gb", "cost_usd",
                  "prompt", "backbones"]


class GenerateStage:
    """The generate step as a runner stage: an item per image (marker: its ``.json`` record beside the PNG), a
    batch per model and call shape; shards own whole models (one model's weights on one GPU)."""

    name = "bench"
    meta_model = ImageRecord

    def __init__(self, plan: dict[str, list[Job]], run_dir: Path, device: str, bench: GenerateSettings,
                 shard: str = ""):
        self.plan, self.out_root, self.device, self.bench, self.shard = plan, run_dir, device, bench, shard
        self.generator = Generator(device, bench)
        self.batch_size = bench.batch_size
        # one thread generates (the Generator serialises calls) while the others encode and write the previous
        # batches' PNGs: with a 1-step model on a GPU those writes would otherwise cost as much as generating
        self.workers = 1 + bench.writers

    def discover(self) -> list[Item]:
        items = []
        for jobs in self.plan.values():
            for job in jobs:
                if not job.image.is_file():  # a record whose image is gone does not make the image done
                    job.record.unlink(missing_ok=True)
                items.append(Item(job.id, job.image.parent, {"path": str(job.image), "job": job},
                                  config_hash([job.model.fingerprint(), job.settings_hash]), marker=job.record))
        return items

    def config(self) -> dict:
        return {}  # everything an image depends on is in its fingerprint (model, prompt, seed, call settings)

    def shard_key(self, item_id: str) -> str:
        return item_id.split("/", 1)[0]  # the model name, as shard_models splits the roster

    def batch_key(self, item: Item) -> tuple:
        return item.data["job"].call_key

    def prepare(self, pending: list[Item]) -> None:
        if self.device == "cpu" and not self.bench.force_cpu:
            by_model: dict[str, list[Job]] = {}
            for it in pending:
                by_model.setdefault(it.data["job"].model.name, []).append(it.data["job"])
            text, _ = estimate(by_model)
            raise UserError("no CUDA GPU here, and generating on the CPU takes hours for real models.\n"
                            f"Work left ({self.shard or 'this run'}): {text}\nRun it on a GPU machine (one GPU per "
                            "shard: shard.count=N with a Hydra launcher), or set bench.force_cpu=true to run here "
                            "anyway.")

    def process_batch(self, items: list[Item], writers: list[ItemWriter], rngs) -> list[dict]:
        generated = self.generator([it.data["job"] for it in items])
        for it, out, (image, _) in zip(items, writers, generated):
            out.image(it.data["job"].image.name, image)
        return [rec for _, rec in generated]

    def finish(self, summary: Summary, metas: dict) -> None:
        self.generator.release()


@dataclass
class GenResult:
    done: int = 0
    skipped: int = 0
    failures: list[dict] = field(default_factory=list)


def generate(plan: dict[str, list[Job]], run_dir: Path, device: str, cfg: DictConfig,
             bench: GenerateSettings | None = None) -> GenResult:
    """Generate every pending image of ``plan`` through the runner, which keeps this shard's models (``cfg``: the
    composed config the runner reads its seed and shard from; ``bench``: its ``bench`` settings, read once)."""
    bench = bench or section(cfg, "bench", BenchSettings)
    shard = top_level(cfg, RunSettings).shard  # as the runner reads it
    index, count = shard.index, shard.count
    summary = run_stage(GenerateStage(plan, run_dir, device, bench, f"shard {index} of {count}" if count > 1 else ""),
                        cfg)
    return GenResult(summary.done, summary.skipped, read_jsonl(failures_path(run_dir, index, count)))


def run(cfg: DictConfig) -> Summary:
    t0 = time.perf_counter()
    bench = section(cfg, "bench", BenchSettings)
    steps = bench.steps
    roster = load_roster(cfg.roster)
    run_dir = Path(bench.out_dir) / (bench.name or roster.name)
    summary = Summary(stage="bench", out_dir=str(run_dir))
    prompts, notes = load_promptsets({n: p.model_dump() for n, p in bench.promptsets.items()}, bench.use)
    summary.notes.update(notes)
    if not roster.models:
        raise UserError(f"roster {roster.name!r} has no models; pick one with roster=fewstep|base or import one "
                        f"(python -m gen4gen.bench.gemrec ...)")
    if not prompts:
        raise UserError(f"no prompts: bench.use={bench.use} gave none")
    for line in filter(None, (run_mismatch(Path(m.train_run), d)
                              for m in roster.models if m.train_run for d in dataset_paths(bench))):
        console.print(f"[yellow]bench: {line}[/yellow]")
        summary.notes.setdefault("token mismatch", line)
    shard = top_level(cfg, RunSettings).shard
    shard_index, shard_count = shard.index, shard.count
    device = resolve_device(cfg.device)
    failures: list[dict] = []
    metric_failures: list[dict] = []

    if "generate" in steps:
        plan = plan_jobs(roster.models, prompts, run_dir, bench)  # the runner keeps this shard's models
        result = generate(plan, run_dir, device, cfg, bench)
        summary.total = result.done + result.skipped + len(result.failures)
        summary.done, summary.skipped = result.done, result.skipped
        failures += result.failures

    current = {m.name: m.fingerprint() for m in roster.models}
    sources = {m.name: m.source for m in roster.models}
    keys = {p.key for p in prompts}
    found, unreadable = read_records(run_dir)
    for line in unreadable[:5]:
        console.print(f"[yellow]bench: left out {line}[/yellow]")
    if unreadable:
        summary.notes["unreadable image records"] = f"{len(unreadable)} (first: {unreadable[0]})"
    # records of models/prompts no longer configured, or made with other settings, stay on disk but out of the tables
    records = [r for r in found if current.get(r.model) == r.model_fingerprint and r.prompt_key in keys]
    results = [{**r.row(), "source": sources[r.model]} for r in records]
    write_atomic(run_dir / "results.csv", csv_bytes(results, RESULT_COLUMNS))
    write_atomic(run_dir / "results.jsonl", jsonl_bytes(results))
    if "generate" not in steps:
        summary.total = len(records)

    rows = None
    if "metrics" in steps:
        if shard_count > 1 and "generate" in steps:
            summary.notes["metrics"] = ("not scored on a shard (MCOS compares models across shards); after all shards "
                                        "finish run: python -m gen4gen stage=bench bench.steps=[metrics,report]")
        elif records:
            mcfg = MetricsConfig.from_settings(bench.metrics)
            rows, metric_failures = score_records(records, {p.key: p for p in prompts}, run_dir, mcfg, device)
            failures += metric_failures
            write_atomic(run_dir / "backbones.json", provenance.to_json(mcfg.backbones()))
            write_atomic(run_dir / "metrics.csv", csv_bytes(rows, METRIC_COLUMNS))
            write_atomic(run_dir / "metrics.jsonl", jsonl_bytes(rows))
            checked = counterfactuals(bench, mcfg, device, run_dir)
            if checked:
                flagged = sum(bool(r["flag"]) for r in checked["rates"])
                left_out = checked.get("problems") or []
                for line in left_out[:5]:
                    console.print(f"[yellow]bench: {line}[/yellow]")
                summary.notes["counterfactual"] = (
                    f"{checked['images']} image(s); {flagged} metric x change class(es) noticed in under "
                    f"{bench.counterfactual.target:.0%} of cases" + (f"; {len(left_out)} row(s) left out" if left_out else ""))
            if "generate" not in steps:
                summary.done = len(rows)
    if "report" in steps and not (shard_count > 1 and "generate" in steps):
        if rows is None:
            rows = read_jsonl(run_dir / "metrics.jsonl") or [_bare_row(r) for r in records]
            have = {r.key for r in records}
            rows = [r for r in rows if (r["model"], r["set"], r["prompt_id"], r["seed"]) in have]
        if rows:
            popularity = {m.name: m.popularity for m in roster.models}
            sets = [n for n in bench.use if bench.promptsets[n].kind == "dataset"]
            info = write_reports(rows, run_dir, popularity, bench.report.weights, bench.report.quality,
                                 personal_methods(roster.models), sets, backbones=_read_backbones(run_dir),
                                 counterfactual=read_check(run_dir / "counterfactual.json")
                                 if bench.counterfactual.enabled else None,
                                 leakage=leakage_rows(roster.models, prompts, bench),
                                 resamples=bench.report.bootstrap)
            summary.notes["report"] = info["report"]
    if metric_failures or "generate" not in steps:  # the runner wrote generation's lines: metric lines join them
        write_failures(run_dir, shard_index, shard_count, sorted(failures, key=lambda f: f["id"]))
    summary.failed = len(failures)
    if failures:
        console.print(f"[yellow]bench: {len(failures)} failure(s); see {failures_path(run_dir, shard_index, shard_count)}[/yellow]")
    summary.seconds = round(time.perf_counter() - t0, 2)
    return summary


def personal_methods(models) -> dict[str, str]:
    """Gen4Gen's table rows: each train run's method, and "base model" for the bases they were trained from
    (empty without train runs: no table)."""
    from gen4gen.bench.report import BASE_METHOD

    runs = {}
    for m in (m for m in models if m.train_run):
        try:
            runs[m.name] = Manifest.load(Path(m.train_run))
        except UserError:
            continue  # its images failed to load with this reason (failures.jsonl); the table goes without it
    bases = {man.base for man in runs.values()}
    out = {m.name: BASE_METHOD for m in models if not m.train_run and m.source in bases}
    return {**out, **{name: man.method for name, man in runs.items()}} if runs else {}


def dataset_paths(bench: BenchSettings) -> list[Path]:
    """The exported datasets among the promptsets in use."""
    return [Path(bench.promptsets[n].path) for n in bench.use if bench.promptsets[n].kind == "dataset"]


def counterfactuals(bench: BenchSettings, mcfg: MetricsConfig, device: str, run_dir: Path) -> dict | None:
    """The counterfactual check on the datasets in use, with the identity encoder (``bench.counterfactual``)."""
    from gen4gen.encoders import Clip, Dino, EfficientNetLite0

    ccfg = bench.counterfactual
    datasets = [d for d in dataset_paths(bench) if (d / "mycanvas" / "index.jsonl").is_file()]
    if not ccfg.enabled or not datasets:
        return None
    spec = {"clip": mcfg.clip, "dino": mcfg.dino}.get(mcfg.identity, mcfg.identity)
    tag = provenance.describe("identity", spec).tag
    key = "bench.metrics.backbones"
    make = {"clip": lambda: Clip(mcfg.clip, device, mcfg.batch_size, f"{key}.clip"),
            "dino": lambda: Dino(mcfg.dino, device, mcfg.batch_size, f"{key}.dino"),
            }.get(mcfg.identity, lambda: EfficientNetLite0(device, mcfg.batch_size))
    return run_check(datasets, make, tag, run_dir, ccfg.max_images, ccfg.target)


def leakage_rows(models, prompts, bench: BenchSettings) -> list[dict]:
    """The leakage check for every personalised model (a train run) of the roster."""
    from gen4gen.bench import leakage
    from gen4gen.bench.split import read_split

    heldout = []
    for d in dataset_paths(bench):
        if (d / "split.json").is_file():
            heldout += read_split(d).holdout
    rows = []
    for m in (m for m in models if m.train_run):
        try:
            captions, sets = leakage.training_data(Path(m.train_run))
        except UserError as e:
            console.print(f"[yellow]bench: leakage check of {m.name} skipped: {e}[/yellow]")
            continue
        rows.append(leakage.check(m.name, prompts, captions, sets, heldout))
    return rows


def _read_backbones(run_dir: Path):
    """``backbones.json`` of the metrics step; None (the report falls back to the rows' tags) when absent or
    of another shape, with one line."""
    path = run_dir / "backbones.json"
    try:
        return provenance.from_json(path.read_bytes())
    except OSError:
        return None
    except ValueError as e:
        console.print(f"[yellow]bench: {path}: {e}; the report names the backbones from the metric rows[/yellow]")
        return None


def _bare_row(rec: ImageRecord) -> dict:
    """A report row for an image without metrics (bench.steps without metrics): latency and cost only."""
    return {"model": rec.model, "set": rec.set, "prompt_id": rec.prompt_id, "prompt_key": rec.prompt_key,
            "category": rec.category, "seed": rec.seed, "image": rec.image, "prompt": rec.prompt,
            "latency_s": rec.latency_s, "peak_memory_gb": rec.peak_memory_gb, "cost_usd": rec.cost_usd}
