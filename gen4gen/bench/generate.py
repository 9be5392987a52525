"""Generation: every roster model over every prompt x seed, one model in memory at a time.

An image is one job ``(model, prompt, seed)`` written to ``images/<model>/<set>/<prompt id>_s<seed>.png``
with a sidecar ``.json`` record (``gen4gen.artefacts.ImageRecord``): the stage runner's done-marker for that image
(``stages/bench.py`` runs the jobs as items of ``run_stage``, a batch of one model's jobs per ``Generator`` call).
Each job draws its noise from its own CPU ``torch.Generator`` seeded with the job's seed, so an image does not
depend on batch size, order or shard.
"""
from __future__ import annotations

import gc
import inspect
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gen4gen.bench.prompts import Prompt
from gen4gen.artefacts import RosterEntry
from gen4gen.bench.roster import detect_pipeline
from gen4gen.console import console, duration
from gen4gen.errors import ItemFailed, UserError
from gen4gen.hashing import config_hash, in_shard
from gen4gen.settings import GenerateSettings

log = logging.getLogger(__name__)

DEFAULT_GUIDANCE = 7.5
# pipelines whose __call__ does not take one generator per batch row: run them one image per call
ONE_GENERATOR_PIPELINES = {"AmusedPipeline"}
# rough seconds per denoising step at 512x512, batch 1, for the work estimate shown without a GPU
CPU_STEP_SECONDS = {"sd": 2.5, "sdxl": 9.0}
GPU_STEP_SECONDS = {"sd": 0.03, "sdxl": 0.08}


@dataclass
class Job:
    model: RosterEntry
    prompt: Prompt
    seed: int
    settings: dict  # width, height, steps, guidance, negative
    image: Path
    record: Path
    text: str = ""  # what the model is given: the personalised prompt for a train run, else class words

    def __post_init__(self):
        self.text = self.text or self.prompt.given(bool(self.model.train_run))

    @property
    def id(self) -> str:
        return f"{self.model.name}/{self.prompt.key}/s{self.seed}"

    @property
    def settings_hash(self) -> str:
        return config_hash({"prompt": self.text, "seed": self.seed, **self.settings})

    @property
    def call_key(self) -> tuple:
        """Jobs with equal keys can share one pipeline call (one model, one batch shape)."""
        return (self.model.name, *_batch_key(self)[:5])


def call_settings(entry: RosterEntry, prompt: Prompt, use_prompt_size: bool) -> dict:
    """The model's own steps and CFG win over a promptset's (a 1-step model breaks at CFG 7); a model without
    a fixed CFG takes the prompt's (GEMRec), else 7.5. Negative prompts act only through CFG."""
    w, h = prompt.size if (use_prompt_size and prompt.size) else entry.resolution
    guidance = entry.guidance if entry.guidance is not None else (
        prompt.guidance if prompt.guidance is not None else DEFAULT_GUIDANCE)
    return {"width": int(w) // 8 * 8, "height": int(h) // 8 * 8, "steps": entry.steps, "guidance": float(guidance),
            "negative": prompt.negative if guidance > 1.0 else None}


def seeds_for(prompt: Prompt, seeds: list[int], prompt_seeds: bool) -> list[int]:
    return [prompt.seed] if (prompt_seeds and prompt.seed is not None) else list(seeds)


def plan_jobs(models: list[RosterEntry], prompts: list[Prompt], run_dir: Path,
              bench: GenerateSettings) -> dict[str, list[Job]]:
    """Jobs per model, in a fixed order that keeps equal call settings together (one batch shape)."""
    plan: dict[str, list[Job]] = {}
    for m in models:
        jobs = []
        for p in prompts:
            settings = call_settings(m, p, bench.use_prompt_size)
            for s in seeds_for(p, bench.seeds, bench.prompt_seeds):
                base = run_dir / "images" / m.name / p.set / f"{p.id}_s{s}"
                jobs.append(Job(m, p, s, settings, base.with_suffix(".png"), base.with_suffix(".json")))
        jobs.sort(key=_batch_key)
        plan[m.name] = jobs
    return plan


def _batch_key(job: Job) -> tuple:
    s = job.settings
    return (s["width"], s["height"], s["steps"], s["guidance"], s["negative"] or "", job.prompt.key, job.seed)


def shard_models(models: list[RosterEntry], index: int, count: int) -> list[RosterEntry]:
    """Shards split the roster by model (one model's weights on one GPU), by a stable hash of its name."""
    return [m for m in models if in_shard(m.name, index, count)]


# ---------------------------------------------------------------- work estimate
def _kind(entry: RosterEntry) -> str:
    pipe = detect_pipeline(entry)
    text = f"{pipe} {entry.source} {entry.base_model or ''}".lower()
    return "sdxl" if ("xl" in text or "pixart" in text) else "sd"


def estimate(plan: dict[str, list[Job]]) -> tuple[str, float]:
    """A rough table of the work (images, steps) and its time on CPU vs a GPU, for the no-GPU message."""
    lines, total_cpu, total_gpu, total_images = [], 0.0, 0.0, 0
    for name, jobs in plan.items():
        if not jobs:
            continue
        cpu = gpu = 0.0
        for j in jobs:
            s = j.settings
            work = s["steps"] * (s["width"] * s["height"] / 512 ** 2) * (2 if s["guidance"] > 1 else 1)
            cpu += work * CPU_STEP_SECONDS[_kind(j.model)]
            gpu += work * GPU_STEP_SECONDS[_kind(j.model)]
        total_cpu, total_gpu, total_images = total_cpu + cpu, total_gpu + gpu, total_images + len(jobs)
        n_prompts = len({j.prompt.key for j in jobs})
        lines.append(f"  {name}: {n_prompts} prompts, {len(jobs)} images, {jobs[0].settings['steps']} steps "
                     f"-> ~{duration(cpu)} on CPU, ~{duration(gpu)} on one GPU")
    head = (f"{len(lines)} models x prompts x seeds = {total_images} images; roughly {duration(total_cpu)} on this CPU "
            f"vs {duration(total_gpu)} on one GPU (estimates from typical step times, not measured here)")
    return "\n".join([head, *lines]), total_cpu


# ---------------------------------------------------------------- loading
def load_pipeline(entry: RosterEntry, device: str, safety_checker: bool = False):
    """The entry's pipeline through the same calls a user makes: ``from_pretrained`` / ``from_single_file``,
    replaced components, scheduler swap with config overrides, LoRAs via ``load_lora_weights``."""
    import diffusers
    import torch

    from gen4gen.hub import resolve, resolve_file
    from gen4gen.pipelines import load_component, load_single_file, old_dtype_name, torch_dtype
    from gen4gen.pipelines import load_pipeline as load_diffusers_pipeline

    setting = f"roster {entry.name!r} source"  # each model's line names it: the roster goes on without it
    dtype = torch_dtype(device, entry.dtype)
    cls_name = detect_pipeline(entry)
    cls = getattr(diffusers, cls_name, None)
    if cls is None:
        raise ValueError(f"diffusers has no pipeline class {cls_name!r}")
    kwargs: dict[str, Any] = {}
    for comp_name, spec in entry.components.items():
        ccls = getattr(diffusers, spec.cls)
        where = f"roster {entry.name!r} {comp_name}"
        if spec.weights:  # a bare state dict (SDXL-Lightning UNet): model from the base config, then weights
            from safetensors.torch import load_file

            config = ccls.load_config(resolve(spec.source, f"{where} source"), subfolder=spec.subfolder)
            model = ccls.from_config(config)
            model.load_state_dict(load_file(resolve_file(spec.weights, f"{where} weights")))
            kwargs[comp_name] = model if dtype == torch.float32 else model.to(dtype)
        else:
            kwargs[comp_name] = load_component(ccls, spec.source, f"{where} source", spec.subfolder, dtype)
    takes = inspect.signature(cls.__init__).parameters
    if not safety_checker and ("safety_checker" in takes or cls is diffusers.DiffusionPipeline):
        kwargs["safety_checker"] = None  # benchmarks score raw outputs; the checker blacks out images and costs time
    if entry.is_single_file:
        if entry.single_file_config:
            kwargs["config"] = entry.single_file_config
        pipe = load_single_file(cls, entry.source, setting, dtype, **kwargs)
    else:
        pipe = load_diffusers_pipeline(cls, entry.source, setting, dtype, entry.variant, **kwargs)
    if entry.scheduler is not None:
        scls = getattr(diffusers, entry.scheduler.cls)
        pipe.scheduler = scls.from_config(pipe.scheduler.config, **entry.scheduler.overrides())
    if entry.loras:
        names = [f"lora{k}" for k in range(len(entry.loras))]
        with old_dtype_name():
            for k, (name, lora) in enumerate(zip(names, entry.loras)):
                pipe.load_lora_weights(resolve(lora.source, f"roster {entry.name!r} loras[{k}].source"),
                                       weight_name=lora.weight_name, adapter_name=name)
        pipe.set_adapters(names, adapter_weights=[lo.scale for lo in entry.loras])
        fused = [n for n, lo in zip(names, entry.loras) if lo.fuse]
        if fused:
            pipe.fuse_lora(adapter_names=fused)
    if entry.train_run:
        from gen4gen.personalize import load

        load(pipe, entry.train_run)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def free_memory() -> None:
    """Called after the caller dropped its last reference to a pipeline: free it before the next model loads."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- timing and memory
class Meter:
    """Latency with CUDA synchronisation and peak memory: CUDA allocator peak per batch, else the process's
    peak resident set (CPU; it only grows, so it is an upper bound)."""

    def __init__(self, device: str):
        import torch

        self.torch = torch
        self.cuda = device.startswith("cuda")
        self.device = torch.device(device) if self.cuda else None  # cuda:N: measure that GPU, not the current one

    def start(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)
            self.torch.cuda.reset_peak_memory_stats(self.device)
        self.t0 = time.perf_counter()

    def stop(self) -> tuple[float, float, str]:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - self.t0
        if self.cuda:
            return seconds, self.torch.cuda.max_memory_allocated(self.device) / 2 ** 30, "cuda_max_allocated"
        return seconds, _peak_rss_gb(), "cpu_peak_rss"


def _peak_rss_gb() -> float:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux
    except ImportError:  # pragma: no cover - Windows
        import psutil

        return psutil.Process().memory_info().rss / 2 ** 30


# ---------------------------------------------------------------- generating a batch
class Generator:
    """One pipeline in memory at a time: a call with another model's jobs frees the loaded one first.

    Calls are serialised (one GPU, and a pipeline keeps scheduler state per call), so the caller may write one
    batch's images on a thread while the next batch generates."""

    def __init__(self, device: str, bench: GenerateSettings):
        self.device, self.bench = device, bench
        self.meter = Meter(device)
        self.lock = threading.Lock()
        self.name: str | None = None  # model whose pipeline is loaded (or failed to load)
        self.pipe = None
        self.load_errors: dict[str, str] = {}

    def __call__(self, jobs: list[Job]) -> list[tuple[Any, dict]]:
        """``(image, record fields)`` per job; jobs share one model and call settings."""
        with self.lock:
            pipe = self._use(jobs[0].model)
            cls_name = type(pipe).__name__
            takes = set(inspect.signature(pipe.__call__).parameters)
            groups = [[j] for j in jobs] if cls_name in ONE_GENERATOR_PIPELINES else [jobs]
            if self.warm:  # first call pays for lazy init / kernel selection: not timed
                self.warm = False
                try:
                    _call(pipe, groups[0], takes, steps=1)
                except Exception:  # noqa: BLE001 - the real batch reports the error
                    pass
            out = []
            for group in groups:
                try:
                    self.meter.start()
                    images = _call(pipe, group, takes)
                    seconds, mem_gb, mem_kind = self.meter.stop()
                except Exception:  # e.g. out of memory: the batch fails (runner), the run goes on
                    if self.device.startswith("cuda"):
                        import torch

                        torch.cuda.empty_cache()
                    raise
                per_image = seconds / len(group)
                out += [(image, record(job, per_image, seconds, len(group), mem_gb, mem_kind, self.device, cls_name))
                        for job, image in zip(group, images)]
            return out

    def _use(self, entry: RosterEntry):
        if self.name != entry.name:
            self.release()  # the previous model is gone before the next one loads
            self.name = entry.name
            try:
                self.pipe = load_pipeline(entry, self.device, self.bench.safety_checker)
            except Exception as e:  # noqa: BLE001 - one bad model must not stop the roster
                why = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
                self.load_errors[entry.name] = f"cannot load model {entry.source!r}: {why}"
                console.print(f"[red]{entry.name}: {self.load_errors[entry.name]}[/red]")
            self.warm = self.bench.warmup
        if entry.name in self.load_errors:  # every batch of that model fails with the same line, loaded once
            raise ItemFailed(self.load_errors[entry.name])
        return self.pipe

    def release(self) -> None:
        self.pipe, self.name = None, None
        free_memory()


def _call(pipe, group: list[Job], takes: set[str], steps: int | None = None) -> list:
    import torch

    s = group[0].settings
    kwargs: dict[str, Any] = {
        "prompt": [j.text for j in group], "num_inference_steps": steps or s["steps"],
        "guidance_scale": s["guidance"], "width": s["width"], "height": s["height"], "output_type": "pil",
        # one generator per (prompt, seed) on the CPU: the same noise whatever the batch, order and device
        "generator": [torch.Generator("cpu").manual_seed(j.seed) for j in group],
    }
    if s["negative"]:
        kwargs["negative_prompt"] = [s["negative"]] * len(group)
    if len(group) == 1:
        kwargs["generator"] = kwargs["generator"][0]
    kwargs.update(group[0].model.call_kwargs)
    dropped = [k for k in kwargs if k not in takes]
    if dropped and "kwargs" not in takes:
        log.debug("%s does not take %s", type(pipe).__name__, dropped)
        kwargs = {k: v for k, v in kwargs.items() if k in takes}
    with torch.inference_mode():
        out = pipe(**kwargs)
    return list(out.images)


def record(job: Job, per_image: float, batch_seconds: float, batch_size: int, mem_gb: float, mem_kind: str,
           device: str, pipeline: str) -> dict:
    """The image's row in ``results.{csv,jsonl}``, stored in its ``.json`` record."""
    s = job.settings
    return {
        "model": job.model.name, "set": job.prompt.set, "prompt_id": job.prompt.id, "prompt": job.text,
        "category": job.prompt.category, "seed": job.seed, "width": s["width"], "height": s["height"],
        "steps": s["steps"], "guidance": s["guidance"], "negative": s["negative"],
        "image": f"images/{job.model.name}/{job.prompt.set}/{job.image.name}", "latency_s": round(per_image, 6),
        "batch_size": batch_size, "batch_seconds": round(batch_seconds, 6), "peak_memory_gb": round(mem_gb, 4),
        "memory_kind": mem_kind, "cost_usd": job.model.cost.per_image(per_image, mem_gb), "device": device,
        "pipeline": pipeline, "model_fingerprint": job.model.fingerprint(), "settings_hash": job.settings_hash,
    }
