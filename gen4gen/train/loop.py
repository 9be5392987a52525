"""The training loop shared by every trainer: cached latents, accelerate (mixed precision, gradient
accumulation, multi-GPU), checkpoints with exact resume, and the loss record.

Determinism: step ``s``, micro-batch ``m`` on process ``p`` draws its examples from a per-epoch permutation
seeded by ``(seed, epoch)`` and its noise and timesteps from a generator seeded by ``(seed, s, m, p)``;
nothing depends on how often the run was interrupted.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from gen4gen.hashing import stable_hash
from gen4gen.settings import TrainSettings
from gen4gen.train import checkpoints
from gen4gen.train.data import Example
from gen4gen.train.models import Base, add_tokens, encode, merge_tokens, tokenize

log = logging.getLogger(__name__)


@dataclass
class Result:
    base: Base  # trained in memory, token rows merged
    losses: list[float]
    steps_done: int  # steps run in this call (not resumed ones)
    seconds: float
    peak_memory_gb: float
    memory_kind: str
    resumed_from: int = 0


# ---------------------------------------------------------------- images -> cached latents
def _pixels(path: Path, res: int, mode: str) -> np.ndarray:
    """Shorter side to ``res``, centre crop (the pipelines' default framing)."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        s = res / min(w, h)
        im.draft(mode, (max(1, round(w * s)), max(1, round(h * s))))  # JPEG: decode at 1/2..1/8 scale, not 4000 px
        im = im.convert(mode)
        w, h = im.size
        s = res / min(w, h)
        im = im.resize((max(res, round(w * s)), max(res, round(h * s))), Image.Resampling.BICUBIC)
        w, h = im.size
        left, top = (w - res) // 2, (h - res) // 2
        return np.asarray(im.crop((left, top, left + res, top + res)))


def cache_latents(base: Base, examples: list[Example], res: int, device, masked: bool, batch: int = 8) -> dict:
    """Encode every training image once (the VAE is frozen): the mean and std of its latent distribution
    (a step samples from them, as ``latent_dist.sample()`` would), and the concept mask at latent size."""
    import torch
    import torch.nn.functional as F

    vae = base.vae.to(device=device)  # loaded in fp32 and kept so: the SD-XL VAE overflows in fp16
    means, stds, masks = [], [], []
    with torch.no_grad():
        for i in range(0, len(examples), batch):
            chunk = examples[i:i + batch]
            px = np.stack([_pixels(e.image, res, "RGB") for e in chunk]).astype(np.float32) / 127.5 - 1.0
            dist = vae.encode(torch.from_numpy(px).permute(0, 3, 1, 2).to(device)).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
            for e in chunk:
                if masked and e.mask is not None:
                    m = torch.from_numpy(_pixels(e.mask, res, "L").astype(np.float32) / 255.0)[None, None]
                    masks.append(F.adaptive_avg_pool2d(m, dist.mean.shape[-2:])[0].to(device))
                else:
                    masks.append(torch.ones((1, *dist.mean.shape[-2:]), device=device))
    base.vae.to("cpu")
    return {"mean": torch.cat(means), "std": torch.cat(stds), "mask": torch.stack(masks)}


# ---------------------------------------------------------------- the loop
def _pick(n: int, start: int, count: int, seed: int, salt: str) -> list[int]:
    """Items ``start .. start+count`` of the endless sequence of per-epoch permutations of ``range(n)``."""
    out = []
    for k in range(start, start + count):
        epoch, pos = divmod(k, n)
        perm = np.random.default_rng([seed & 0xFFFFFFFF, stable_hash(f"{salt}/{epoch}")]).permutation(n)
        out.append(int(perm[pos]))
    return out


def train(settings: TrainSettings, trainer, base: Base, examples: list[Example], concepts: list,
          run_dir: Path, device: str, config_hash: str, checkpoint_every: int, keep_checkpoints: int = 2,
          priors: list[Example] | None = None, on_step: Callable[[int, float | None], None] | None = None) -> Result:
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from gen4gen.console import progress

    t0 = time.perf_counter()
    on_cuda = str(device).startswith("cuda")
    # the CPU has bf16 autocast but no fp16 one: fp16 there means fp32
    precision = settings.mixed_precision if on_cuda or settings.mixed_precision == "bf16" else "no"
    # accelerate keeps one process-wide state; a second run in this process (a Hydra sweep runs its jobs in one
    # process) may use another precision: drop the old settings, keep the distributed set-up
    AcceleratorState._reset_state()
    accelerator = Accelerator(cpu=not on_cuda, mixed_precision=precision)
    dev = accelerator.device
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)

    # what trains: the trainer's UNet tensors + the new token rows; the rest is frozen (load_base froze all)
    rows = add_tokens(base, [c.token for c in concepts], [c.noun for c in concepts])
    torch.manual_seed(settings.seed)  # adapters start from random weights (LoRA's A): the same in every run
    unet_params = trainer.trainable(base.unet)
    named = {**{f"unet.{n}": p for n, p in unet_params.items()},
             **{f"text_encoder_{k}.rows": r.rows for k, r in enumerate(rows)}}
    for r in rows:
        r.rows.requires_grad_(True)
    # frozen weights in the compute dtype, trainable ones in fp32 (autocast runs the matmuls in half precision)
    for m in (base.unet, *base.text_encoders):
        m.to(device=dev, **({"dtype": weight_dtype} if weight_dtype != torch.float32 else {}))
    for p in named.values():
        p.data = p.data.float()
    if settings.gradient_checkpointing:
        base.unet.enable_gradient_checkpointing()
    if on_cuda:
        base.unet.to(memory_format=torch.channels_last)

    cache = cache_latents(base, examples, settings.resolution, dev, settings.masked_loss)
    prior_cache = cache_latents(base, priors, settings.resolution, dev, False) if priors else None
    ids = [x.to(dev) for x in tokenize(base, [e.caption for e in examples])]
    prior_ids = [x.to(dev) for x in tokenize(base, [e.caption for e in priors])] if priors else None
    scaling = float(base.vae.config.scaling_factor)
    sched = base.scheduler
    alphas = sched.alphas_cumprod.to(dev)
    v_pred = sched.config.prediction_type == "v_prediction"
    T = int(sched.config.num_train_timesteps)
    res = settings.resolution
    time_ids = torch.tensor([[res, res, 0, 0, res, res]], dtype=weight_dtype, device=dev)

    optimizer = torch.optim.AdamW(list(named.values()), lr=settings.lr, weight_decay=settings.weight_decay,
                                  **({"fused": True} if on_cuda else {}))
    unet, *encoders = accelerator.prepare(base.unet, *base.text_encoders)
    optimizer = accelerator.prepare(optimizer)

    start, losses = 0, []
    state = checkpoints.latest(run_dir, config_hash)
    if state is not None:
        with torch.no_grad():
            for n, p in named.items():
                p.copy_(state["tensors"][n].to(p.device))
        optimizer.load_state_dict(state["optimizer"])
        if accelerator.scaler is not None and state.get("scaler"):
            accelerator.scaler.load_state_dict(state["scaler"])
        start, losses = int(state["step"]), list(state["losses"])
        log.info("train: resumed from step %d", start)
    resumed_from = start

    n_proc, rank, accum, bsz = accelerator.num_processes, accelerator.process_index, settings.grad_accum, \
        settings.batch_size

    def schedule(n: int, salt: str) -> torch.Tensor:
        """Example indices of every remaining (step, micro-batch) of this process, on the device at once:
        indexing the cache costs no host round trip per step."""
        picks = [_pick(n, ((step * accum + micro) * n_proc + rank) * bsz, bsz, settings.seed, salt)
                 for step in range(start, settings.max_steps) for micro in range(accum)]
        return torch.tensor(picks, dtype=torch.long).view(-1, accum, bsz).to(dev)

    inst_idx = schedule(len(examples), "inst")
    prior_idx = schedule(len(priors), "prior") if priors else None

    def branch(c: dict, cid: list, i: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Per-example diffusion loss of examples ``i`` (a device index tensor) of one cache (mask-weighted mean)."""
        mean, std = c["mean"][i], c["std"][i]
        latents = (mean + std * torch.randn(mean.shape, generator=gen, device=dev)) * scaling
        noise = torch.randn(latents.shape, generator=gen, device=dev)
        t = torch.randint(0, T, (len(i),), generator=gen, device=dev)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise  # DDPMScheduler.add_noise, without its host syncs
        target = (a.sqrt() * noise - (1 - a).sqrt() * latents) if v_pred else noise
        embeds, pooled = encode(base, [x[i] for x in cid], encoders)
        extra = {}
        if pooled is not None:
            extra["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": time_ids.expand(len(i), -1)}
        if on_cuda:
            noisy = noisy.to(memory_format=torch.channels_last)
        pred = unet(noisy.to(weight_dtype), t, embeds, **extra).sample
        err = (pred.float() - target.float()) ** 2
        w = c["mask"][i]
        if settings.masked_loss:
            w = settings.mask_background_weight + (1 - settings.mask_background_weight) * w
        return (err * w).sum((1, 2, 3)) / (w.sum((1, 2, 3)) * err.shape[1])

    log_buf = torch.zeros(settings.max_steps, device=dev)
    params = list(named.values())
    with progress() as bar:
        task = bar.add_task("train", total=settings.max_steps, completed=start)
        for step in range(start, settings.max_steps):
            for micro in range(accum):
                gen = torch.Generator(dev).manual_seed(stable_hash(f"{settings.seed}/{step}/{micro}/{rank}") >> 1)
                with accelerator.autocast():
                    loss = branch(cache, ids, inst_idx[step - start, micro], gen).mean()
                    if prior_cache is not None:
                        loss = loss + settings.prior.weight * branch(prior_cache, prior_ids,
                                                                     prior_idx[step - start, micro], gen).mean()
                accelerator.backward(loss / accum)
                log_buf[step] += loss.detach() / accum
            if settings.max_grad_norm > 0:
                accelerator.clip_grad_norm_(params, settings.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            done = step + 1
            shown = None
            if done % 10 == 0 or done == settings.max_steps or done % checkpoint_every == 0:
                shown = float(log_buf[done - 1])  # the only host sync: every 10 steps, for the bar
                bar.update(task, completed=done, description=f"train loss {shown:.4f}")
            if done % checkpoint_every == 0 and done < settings.max_steps and accelerator.is_main_process:
                losses_now = losses + log_buf[len(losses):done].tolist()
                checkpoints.save(run_dir, done, {
                    "config_hash": config_hash, "losses": losses_now,
                    "tensors": {n: p.detach().cpu().clone() for n, p in named.items()},
                    "optimizer": optimizer.state_dict(),
                    "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
                }, keep_checkpoints)
            if on_step is not None:
                on_step(done, shown)
    losses += log_buf[len(losses):settings.max_steps].tolist()
    accelerator.wait_for_everyone()
    base.unet = accelerator.unwrap_model(unet)
    base.text_encoders = [accelerator.unwrap_model(e) for e in encoders]
    merge_tokens(base)
    if on_cuda:
        peak, kind = torch.cuda.max_memory_allocated(dev) / 2 ** 30, "cuda_max_allocated"
    else:
        import resource

        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, "cpu_peak_rss"
    return Result(base, losses, settings.max_steps - resumed_from, time.perf_counter() - t0, peak, kind, resumed_from)
