"""train: fine-tune a base model on an exported dataset with a personalisation method (``trainer=``).

``python -m gen4gen stage=train trainer=custom_diffusion train.data=mycanvas`` -> ``<train.out_dir>/<train.name>/``:
weights diffusers loads, one embedding file per modifier token, ``personalization.json`` (for
``gen4gen.personalize.load``), ``roster_entry.yaml`` (for the bench), ``loss.png``, ``README.md`` (the card),
``failures.jsonl`` (examples left out) and ``meta.json`` last. A run goes through the runner as one item, the run
folder: its done check (the configuration, the examples trained on, every file it wrote intact), its failures,
its Ctrl-C and its summary. Checkpoints go to ``checkpoints/`` every ``train.checkpoint_every`` steps; a killed or
interrupted run resumes from the newest one with the same configuration and examples.
"""
from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gen4gen.artefacts import ROSTER_ENTRY, TrainMeta
from gen4gen.backends import build_backend
from gen4gen.concepts import ConceptRegistry, trained_with
from gen4gen.console import Summary, console, duration
from gen4gen.errors import UserError
from gen4gen.hashing import config_hash
from gen4gen.markers import META
from gen4gen.runner import Item, ItemWriter, run_stage
from gen4gen.settings import TrainRun, TrainSettings, section

# rough seconds per training example-step at 512x512 (forward + backward), for the no-GPU work estimate
CPU_SAMPLE_SECONDS = {"sd": 6.0, "sdxl": 25.0}
GPU_SAMPLE_SECONDS = {"sd": 0.12, "sdxl": 0.45}


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


class TrainStage:
    """One train run as a runner stage: the item is the run folder; the examples the dataset leaves out are
    found bad at discovery (one failure line each)."""

    name = "train"
    meta_model = TrainMeta

    def __init__(self, cfg: DictConfig):
        self.s, self.r = section(cfg, "train", TrainSettings), section(cfg, "train", TrainRun)
        self.trainer = build_backend(cfg.trainer, "trainer")
        self.trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
        self.device_setting = cfg.device
        self.out_root = Path(self.r.out_dir) / self.r.name
        self.dataset = Path(self.r.dataset)
        self.notes: dict[str, str] = {}

    def config(self) -> dict:
        """What the weights depend on besides the examples (those are the run's fingerprint)."""
        return {"train": self.s.model_dump(), "trainer": self.trainer_cfg}

    def shard_key(self, item_id: str) -> str:
        return self.name  # one run, trained by one shard: the others find nothing to do

    def discover(self) -> list[Item]:
        from gen4gen.train.data import heldout_sets, load_examples, prior_examples

        s = self.s
        self.heldout = heldout_sets(self.dataset)
        self.examples, self.concepts, problems = load_examples(self.dataset, s.data, s.caption, self.heldout)
        self.left_out = len(problems)
        for p in problems:
            console.print(f"[yellow]train: left out {p}[/yellow]")
        if s.prior.generate and not s.prior.class_dir:
            raise UserError("train.prior.generate needs train.prior.class_dir (where the class images go)")
        # generated class images follow from the settings; a folder of the user's own is listed
        listed = prior_examples(Path(s.prior.class_dir), self.concepts) if s.prior.class_dir and not s.prior.generate \
            else []
        fingerprint = config_hash({"examples": [(e.id, e.caption, e.mask is not None) for e in self.examples],
                                   "priors": [e.id for e in listed]})
        where = {"path": str(self.dataset)}
        return [Item(self.r.name, self.out_root, where, fingerprint)] + [
            Item(f"left_out/{k:04d}", self.out_root, where, error=p) for k, p in enumerate(problems, 1)]

    def prepare(self, pending: list[Item]) -> None:
        """Every check that stops the run with one line, before the base loads; then the class images and the base."""
        from gen4gen.train.runs import check_run_folder

        self.run_hash = f"{config_hash(self.config())}:{pending[0].fingerprint}"  # TrainMeta.hash once written
        check_run_folder(self.out_root, self.run_hash)  # a run of other settings is never replaced
        try:
            import accelerate  # noqa: F401
        except ImportError:
            raise UserError("stage=train needs accelerate: pip install gen4gen[train]") from None
        from gen4gen.device import resolve_device
        from gen4gen.train.models import base_kind, guessed_kind, load_base

        s = self.s
        # accelerate picks the GPU itself (LOCAL_RANK under accelerate launch)
        self.device = resolve_device(self.device_setting)
        if self.device == "cpu" and not self.r.force_cpu:  # before the base is resolved: no hub needed to say this
            raise UserError(f"no CUDA GPU here, and fine-tuning on the CPU takes hours for real models.\n"
                            f"Work: {estimate(guessed_kind(s.base), s)}\n"
                            f"Run it on a GPU machine, or set train.force_cpu=true to run here.")
        kind = base_kind(s.base)
        if s.prior.generate:
            from gen4gen.train.prior import generate_class_images

            made = generate_class_images(s.base, kind, Path(s.prior.class_dir), self.concepts, s.prior.generate,
                                         s.resolution, s.seed, self.device)
            self.notes["class images"] = f"{made} generated into {s.prior.class_dir}"
        self.base = load_base(s.base)  # a folder with model_index.json but missing parts: one line naming train.base

    def process(self, item: Item, out: ItemWriter, rng) -> dict:
        from gen4gen.train.data import prior_examples
        from gen4gen.train.loop import train

        s, r = self.s, self.r
        priors = prior_examples(Path(s.prior.class_dir), self.concepts) if s.prior.class_dir else None
        result = train(s, self.trainer, self.base, self.examples, self.concepts, self.out_root, self.device,
                       self.run_hash, r.checkpoint_every, r.keep_checkpoints, priors)
        info = save_run(out, r.name, s, self.trainer, result, self.concepts, self.examples, priors, self.left_out,
                        self.dataset, self.device)
        info["heldout"] = self.heldout  # the bench's leakage check reads what this run left out
        self.notes["train"] = (f"{s.max_steps} steps ("
                               f"{'resumed at %d, ' % result.resumed_from if result.resumed_from else ''}"
                               f"loss {info['loss_first']:.4f} -> {info['loss_last']:.4f}), "
                               f"{info['steps_per_s']:.3f} steps/s, peak {info['peak_memory_gb']:.2f} GB")
        return info

    def finish(self, summary: Summary, metas: dict) -> None:
        from gen4gen.train import checkpoints

        if self.r.name in metas:  # done (now or before): its checkpoints are not needed any more
            checkpoints.clear(self.out_root)
            self.notes.setdefault("train", f"already trained with this configuration ({self.out_root / META})")
        summary.notes.update(self.notes)


def run(cfg: DictConfig) -> Summary:
    stage = TrainStage(cfg)
    writable_dir(stage.out_root)
    return run_stage(stage, cfg)


def save_run(out: ItemWriter, name: str, s, trainer, result, concepts, examples, priors, left_out: int, dataset: Path,
             device: str) -> dict:
    """Weights, token embeddings, manifest, loss curve, card and roster entry of a finished run, each written through
    ``out`` (the runner's marker vouches for them: a deleted or broken file trains the run again); its meta fields."""
    import safetensors.torch
    import yaml

    from gen4gen.artefacts import FORMAT, MANIFEST, Manifest, RosterEntry, TokenFile
    from gen4gen.train.card import card, loss_png, roster_entry

    base = result.base
    out.dir.mkdir(parents=True, exist_ok=True)
    files = trainer.save(base.unet, out)
    tokens, vectors = [], []
    for c in concepts:
        state = {}
        for k, (tok, enc) in enumerate(zip(base.tokenizers, base.text_encoders)):
            vec = enc.get_input_embeddings().weight[tok.convert_tokens_to_ids(c.token)].detach().float().cpu().clone()
            state[c.token if base.kind == "sd" else ("clip_l", "clip_g")[k]] = vec
        file = f"{c.token}.safetensors"
        out.bytes(file, safetensors.torch.save(state, metadata={"format": "pt"}))
        tokens.append(TokenFile(token=c.token, concept=c.name, noun=c.noun, file=file))
        vectors.append((c.token, state))
        files.append(file)
    webui_files = []
    if trainer.name == "lora":  # the same LoRA and tokens for A1111 / Forge / ComfyUI
        from gen4gen.train import webui

        webui_files = webui.save(out, name, base, trainer, vectors)
    man = Manifest(format=FORMAT, trainer=trainer.name, base=s.base, base_kind=base.kind, weights=files[0],
                   tokens=tokens, data=s.data, caption=s.caption)
    out.bytes(MANIFEST, man.dump())
    out.bytes("loss.png", loss_png(result.losses))
    # the tokens as the dataset meant them: a later dataset whose <newK> means another concept is one line
    out.bytes(ConceptRegistry.FILE, trained_with(dataset, concepts).dump())
    entry = roster_entry(name, man, out.dir, s.resolution)
    RosterEntry.model_validate(entry)  # what the bench reads back through its model: never written invalid
    out.text(ROSTER_ENTRY, yaml.safe_dump(entry, sort_keys=False))
    files += webui_files + [MANIFEST, "loss.png", ConceptRegistry.FILE, ROSTER_ENTRY, "failures.jsonl"]
    losses = result.losses
    info = {"dataset": str(dataset), "examples": len(examples), "priors": len(priors or []),
            "example_caption": examples[0].caption, "device": device,
            "precision": s.mixed_precision if device.startswith("cuda") or s.mixed_precision == "bf16" else "fp32",
            "seconds": round(result.seconds, 2),
            "steps_per_s": round(result.steps_done / max(result.seconds, 1e-9), 4),
            "peak_memory_gb": round(result.peak_memory_gb, 3), "memory_kind": result.memory_kind,
            "loss_first": float(sum(losses[:10]) / len(losses[:10])),
            "loss_last": float(sum(losses[-10:]) / len(losses[-10:])), "left_out": left_out,
            "resumed_from": result.resumed_from, "losses": [round(x, 6) for x in losses]}
    out.text("README.md", card(name, man, s.model_dump(), {**info, "run_dir": str(out.dir.resolve())}, files))
    return info
