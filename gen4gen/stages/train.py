"""train: fine-tune a base model on an exported dataset with a personalisation method (``trainer=``).

``python -m gen4gen stage=train trainer=custom_diffusion train.data=mycanvas`` -> ``<train.out_dir>/<train.name>/``:
weights diffusers loads, one embedding file per modifier token, ``personalization.json`` (for
``gen4gen.personalize.load``), ``roster_entry.yaml`` (for the bench), ``loss.png``, ``README.md`` (the card),
``failures.jsonl`` (examples left out) and ``meta.json`` last. Checkpoints go to ``checkpoints/`` every
``train.checkpoint_every`` steps; a killed run resumes from the newest one with the same configuration.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gen4gen.concepts import ConceptRegistry, trained_with
from gen4gen.console import Summary, console, duration
from gen4gen.errors import UserError
from gen4gen.hashing import config_hash
from gen4gen.io import jsonl_bytes, write_atomic
from gen4gen.markers import META
from gen4gen.outputs import TrainMeta
from gen4gen.settings import TrainRun, TrainSettings, section

# rough seconds per training example-step at 512x512 (forward + backward), for the no-GPU work estimate
CPU_SAMPLE_SECONDS = {"sd": 6.0, "sdxl": 25.0}
GPU_SAMPLE_SECONDS = {"sd": 0.12, "sdxl": 0.45}
NATIVE_RES = {"sd": 512, "sdxl": 1024}


def writable_dir(path: Path) -> None:
    """The run folder exists and takes files, or one clear line (before any model loads)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write_probe.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"train output folder {path} is not writable ({e.strerror or e})") from None


def estimate(kind: str, s) -> str:
    work = s.max_steps * s.grad_accum * s.batch_size * (2 if s.prior.class_dir else 1) * (s.resolution / 512) ** 2
    cpu, gpu = work * CPU_SAMPLE_SECONDS[kind], work * GPU_SAMPLE_SECONDS[kind]
    return (f"{s.max_steps} steps x batch {s.batch_size} x accumulation {s.grad_accum} at {s.resolution}px ({kind}): "
            f"roughly {duration(cpu)} on this CPU vs {duration(gpu)} on one GPU "
            "(estimates from typical step times, not measured here)")


def run(cfg: DictConfig) -> Summary:
    from hydra.utils import instantiate

    t0 = time.perf_counter()
    s, r = section(cfg, "train", TrainSettings), section(cfg, "train", TrainRun)
    trainer = instantiate(cfg.trainer)
    name = r.name
    run_dir = Path(r.out_dir) / name
    summary = Summary(stage="train", total=1, out_dir=str(run_dir))
    writable_dir(run_dir)

    from gen4gen.train.data import heldout_sets, load_examples, prior_examples
    from gen4gen.train.models import base_kind, guessed_kind

    dataset = Path(r.dataset)
    heldout = heldout_sets(dataset)
    examples, concepts, problems = load_examples(dataset, s.data, s.caption, heldout)
    for p in problems:
        console.print(f"[yellow]train: left out {p}[/yellow]")
    if s.prior.generate and not s.prior.class_dir:
        raise UserError("train.prior.generate needs train.prior.class_dir (where the class images go)")
    # generated class images follow from the settings; a folder of the user's own is listed
    listed = prior_examples(Path(s.prior.class_dir), concepts) if s.prior.class_dir and not s.prior.generate else []
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    chash = config_hash({"train": s.model_dump(), "trainer": trainer_cfg,
                         "examples": [(e.id, e.caption, e.mask is not None) for e in examples],
                         "priors": [e.id for e in listed]})
    meta = TrainMeta.of(run_dir)
    if meta is not None and meta.config_hash == chash:
        summary.skipped = 1
        summary.notes["train"] = f"already trained with this configuration ({run_dir / META})"
        return summary
    from gen4gen.train.runs import check_run_folder

    check_run_folder(run_dir, chash)  # a run of other settings is never replaced

    try:
        import accelerate  # noqa: F401
    except ImportError:
        raise UserError("stage=train needs accelerate: pip install gen4gen[train]") from None
    from gen4gen.device import resolve_device

    device = resolve_device(cfg.device)  # accelerate picks the GPU itself (LOCAL_RANK under accelerate launch)
    if device == "cpu" and not r.force_cpu:  # before the base is resolved: no hub needed to say this
        raise UserError(f"no CUDA GPU here, and fine-tuning on the CPU takes hours for real models.\n"
                        f"Work: {estimate(guessed_kind(s.base), s)}\n"
                        f"Run it on a GPU machine, or set train.force_cpu=true to run here.")
    kind = base_kind(s.base)
    write_atomic(run_dir / "failures.jsonl", jsonl_bytes([{"stage": "train", "reason": p} for p in problems]))
    if s.prior.generate:
        from gen4gen.train.prior import generate_class_images

        made = generate_class_images(s.base, kind, Path(s.prior.class_dir), concepts, s.prior.generate,
                                     s.resolution, s.seed, device)
        summary.notes["class images"] = f"{made} generated into {s.prior.class_dir}"
    priors = prior_examples(Path(s.prior.class_dir), concepts) if s.prior.class_dir else None
    from gen4gen.train.loop import train
    from gen4gen.train.models import load_base

    base = load_base(s.base)  # a folder with model_index.json but missing parts: one line naming train.base
    result = train(s, trainer, base, examples, concepts, run_dir, device, chash,
                   r.checkpoint_every, r.keep_checkpoints, priors)
    info = save_run(run_dir, name, s, trainer, result, concepts, examples, priors, problems, dataset, device)
    info["heldout"] = heldout  # the bench's leakage check reads what this run left out
    write_atomic(run_dir / META, TrainMeta.build({"config_hash": chash, "stage": "train", **info}).dump())  # last: done
    from gen4gen.train import checkpoints

    checkpoints.clear(run_dir)
    summary.done = 1
    summary.failed = len(problems)
    summary.notes["train"] = (f"{s.max_steps} steps ({'resumed at %d, ' % result.resumed_from if result.resumed_from else ''}"
                              f"loss {info['loss_first']:.4f} -> {info['loss_last']:.4f}), {info['steps_per_s']:.3f} steps/s, "
                              f"peak {info['peak_memory_gb']:.2f} GB")
    summary.seconds = round(time.perf_counter() - t0, 2)
    return summary


def save_run(run_dir: Path, name: str, s, trainer, result, concepts, examples, priors, problems, dataset: Path,
             device: str) -> dict:
    """Weights, token embeddings, manifest, loss curve, card and roster entry of a finished run."""
    import safetensors.torch
    import yaml

    from gen4gen.bench.roster import RosterEntry
    from gen4gen.personalize import Manifest, TokenFile
    from gen4gen.train.card import card, loss_png, roster_entry

    base = result.base
    run_dir.mkdir(parents=True, exist_ok=True)
    files = trainer.save(base.unet, run_dir)
    tokens, vectors = [], []
    for c in concepts:
        state = {}
        for k, (tok, enc) in enumerate(zip(base.tokenizers, base.text_encoders)):
            vec = enc.get_input_embeddings().weight[tok.convert_tokens_to_ids(c.token)].detach().float().cpu().clone()
            state[c.token if base.kind == "sd" else ("clip_l", "clip_g")[k]] = vec
        file = f"{c.token}.safetensors"
        write_atomic(run_dir / file, safetensors.torch.save(state, metadata={"format": "pt"}))
        tokens.append(TokenFile(token=c.token, concept=c.name, noun=c.noun, file=file))
        vectors.append((c.token, state))
        files.append(file)
    webui_files = []
    if trainer.name == "lora":  # the same LoRA and tokens for A1111 / Forge / ComfyUI
        from gen4gen.train import webui

        webui_files = webui.save(run_dir, name, base, trainer, vectors)
    man = Manifest(trainer=trainer.name, base=s.base, base_kind=base.kind, weights=files[0], tokens=tokens,
                   data=s.data, caption=s.caption)
    write_atomic(run_dir / "personalization.json", man.dump())
    write_atomic(run_dir / "loss.png", loss_png(result.losses))
    # the tokens as the dataset meant them: a later dataset whose <newK> means another concept is one line
    write_atomic(run_dir / ConceptRegistry.FILE, trained_with(dataset, concepts).dump())
    entry = roster_entry(name, man, run_dir, s.resolution)
    RosterEntry.model_validate(entry)  # what the bench reads back through its model: never written invalid
    write_atomic(run_dir / "roster_entry.yaml", yaml.safe_dump(entry, sort_keys=False).encode("utf-8"))
    files += webui_files + ["personalization.json", "loss.png", ConceptRegistry.FILE, "roster_entry.yaml",
              "failures.jsonl"]
    losses = result.losses
    info = {"dataset": str(dataset), "examples": len(examples), "priors": len(priors or []),
            "example_caption": examples[0].caption, "device": device,
            "precision": s.mixed_precision if device.startswith("cuda") or s.mixed_precision == "bf16" else "fp32", "seconds": round(result.seconds, 2),
            "steps_per_s": round(result.steps_done / max(result.seconds, 1e-9), 4),
            "peak_memory_gb": round(result.peak_memory_gb, 3), "memory_kind": result.memory_kind,
            "loss_first": float(sum(losses[:10]) / len(losses[:10])),
            "loss_last": float(sum(losses[-10:]) / len(losses[-10:])), "left_out": len(problems),
            "resumed_from": result.resumed_from, "losses": [round(x, 6) for x in losses]}
    write_atomic(run_dir / "README.md", card(name, man, s.model_dump(), {**info, "run_dir": str(run_dir.resolve())},
                                             files).encode("utf-8"))
    return info


