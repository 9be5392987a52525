"""Diffusion inpainting backends for s3 (SD-XL and SD-1.5 inpainting through diffusers).

One pipeline is loaded on first use with ``AutoPipelineForInpainting.from_pretrained`` (a hub repo
id or a local folder), fp16 on CUDA. Jobs run in batches, one ``torch.Generator`` per job seeded
from the job, so a batch gives the same images as one-by-one runs. After decoding, the original
concept pixels are composited back through the soft repaint mask: diffusers' VAE round trip alters
"kept" pixels, and the personal concepts must stay exact.

Each speed option is a switch (see conf/inpainter/sdxl.yaml) so its effect can be measured alone.
"""
from __future__ import annotations

import logging
import time
from typing import Annotated, Any

import cv2
import numpy as np
from pydantic import Field

from gen4gen.backends import typed_settings
from gen4gen.device import resolve_device
from gen4gen.errors import UserError
from gen4gen.hub import resolve
from gen4gen.pipelines import load_component, load_pipeline, quiet_diffusers, torch_dtype
from gen4gen.repaint import RepaintJob, keep_concepts

log = logging.getLogger(__name__)

DEFAULT_MODELS = {
    "sdxl": "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
    "sd15": "stable-diffusion-v1-5/stable-diffusion-inpainting",
}
PIPELINE_CLASS = {"sdxl": "StableDiffusionXLInpaintPipeline", "sd15": "StableDiffusionInpaintPipeline"}
# scheduler switch -> (diffusers class, extra config); few-step LoRAs need their own (LCM: LCMScheduler,
# SDXL-Lightning: Euler with "trailing" timesteps)
SCHEDULERS = {
    "lcm": ("LCMScheduler", {}),
    "euler_trailing": ("EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp": ("DPMSolverMultistepScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
}


def inpainter_device(device: str, family: str) -> str:
    """Like ``device.resolve_device``, but ``auto`` without CUDA is an error too: diffusion inpainting on the
    CPU takes hours, so it runs there only when ``device=cpu`` says so (tests)."""
    import torch

    device = str(device or "auto")
    if device != "cpu" and not torch.cuda.is_available():
        raise UserError(f"inpainter={family} needs a CUDA GPU and none is available (device={device}); "
                        f"use the CPU backend `inpainter=classical`, or force `device=cpu` (very slow, for tests)")
    return resolve_device(device, "inpainter.device")


class DiffusionInpainter:
    @typed_settings
    def __init__(self, *, family: str, model: str | None, device: str, dtype: str, variant: str | None,
                 steps: Annotated[int, Field(ge=1)], guidance: float, strength: Annotated[float, Field(gt=0, le=1)],
                 batch_size: Annotated[int, Field(ge=1)], resolution: Annotated[int, Field(ge=64)] | None,
                 refiner: str | None, refiner_split: Annotated[float, Field(gt=0, lt=1)], attention: str,
                 channels_last: bool, compile: bool, compile_mode: str, fuse_qkv: bool, vae: str | None,
                 vae_upcast: bool | None, lora: str | None, lora_weight_name: str | None, lora_scale: float,
                 scheduler: str | None, cpu_offload: bool):
        """The arguments are conf/inpainter/sdxl.yaml's (sd15.yaml changes a few); ``model`` null: the family's."""
        if family not in DEFAULT_MODELS:
            raise UserError(f"unknown diffusion family {family!r}; choose one of {', '.join(DEFAULT_MODELS)}")
        if refiner and family != "sdxl":
            raise UserError("a refiner exists only for SD-XL; set inpainter.refiner=null for sd15")
        if scheduler and scheduler not in SCHEDULERS:
            raise UserError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
        if attention not in ("sdpa", "eager"):
            raise UserError(f"inpainter.attention must be sdpa or eager, got {attention!r}")
        self.family = family
        self.name = family
        self.model = model or DEFAULT_MODELS[family]
        self.device = inpainter_device(device, family)
        self.dtype = str(torch_dtype(self.device, dtype)).removeprefix("torch.")
        self.variant = variant
        self.steps, self.guidance, self.strength = steps, guidance, strength
        self.batch_size = batch_size
        self.resolution = resolution
        self.refiner, self.refiner_split = refiner, refiner_split
        self.attention, self.channels_last = attention, channels_last
        self.compile, self.compile_mode, self.fuse_qkv = compile, compile_mode, fuse_qkv
        self.vae, self.vae_upcast = vae, vae_upcast
        self.lora, self.lora_weight_name, self.lora_scale = lora, lora_weight_name, lora_scale
        self.scheduler, self.cpu_offload = scheduler, cpu_offload
        self._pipe = None
        self._refiner_pipe = None
        self.last_batch_seconds: float | None = None

    def describe(self) -> dict:
        return {"backend": self.family, "model": self.model, "dtype": self.dtype, "steps": self.steps,
                "guidance": self.guidance, "strength": self.strength, "refiner": self.refiner,
                "refiner_split": self.refiner_split if self.refiner else None, "scheduler": self.scheduler,
                "lora": self.lora, "vae": self.vae}

    # ------------------------------------------------------------ loading
    @property
    def torch_dtype(self):
        return torch_dtype(self.device, self.dtype)

    def load(self):
        """Build the pipeline(s) once; later calls return the cached ones."""
        if self._pipe is not None:
            return self._pipe
        from diffusers import AutoencoderKL, AutoPipelineForInpainting

        extra: dict[str, Any] = {}
        if self.vae:  # e.g. madebyollin/sdxl-vae-fp16-fix: decodes in fp16 without NaNs, so no fp32 upcast
            extra["vae"] = load_component(AutoencoderKL, self.vae, "inpainter.vae", dtype=self.torch_dtype)
        pipe = load_pipeline(AutoPipelineForInpainting, self.model, "inpainter.model", self.torch_dtype,
                             self._variant(), **extra)
        refiner = None
        if self.refiner:
            refiner = load_pipeline(AutoPipelineForInpainting, self.refiner, "inpainter.refiner", self.torch_dtype,
                                    self._variant(), text_encoder_2=pipe.text_encoder_2, vae=pipe.vae)
        return self.use_pipelines(pipe, refiner)

    def use_pipelines(self, pipe, refiner=None):
        """Run with these already built pipelines (benchmarks, a caller's own pipeline), after applying
        this backend's options (VAE upcast, LoRA, scheduler, speed switches)."""
        import torch

        quiet_diffusers()
        if type(pipe).__name__ != PIPELINE_CLASS[self.family]:
            raise UserError(f"{self.model} loads as {type(pipe).__name__}, not {PIPELINE_CLASS[self.family]}: "
                            f"pick the inpainter that matches the model (inpainter=sdxl or inpainter=sd15)")
        if pipe.unet.config.in_channels != 9:
            log.warning("%s has a %d-channel UNet, not an inpainting UNet (9): results will blend poorly",
                        self.model, pipe.unet.config.in_channels)
        # fp16 SD-XL VAEs overflow unless decoded in fp32 (force_upcast); the fp16-fix VAE does not, and in
        # fp32 there is nothing to upcast
        upcast = self.vae_upcast if self.vae_upcast is not None else (
            None if self.torch_dtype == torch.float16 else False)
        if upcast is not None:
            pipe.vae.register_to_config(force_upcast=bool(upcast))
        if self.lora:
            self._load_lora(pipe)
        if self.scheduler:
            pipe.scheduler = _scheduler(self.scheduler, pipe.scheduler.config)
        self._speed_up(pipe, vae=True)
        if refiner is not None:
            if self.scheduler:
                refiner.scheduler = _scheduler(self.scheduler, refiner.scheduler.config)
            self._speed_up(refiner, vae=False)
        self._pipe, self._refiner_pipe = pipe, refiner
        return pipe

    def _variant(self) -> str | None:
        return self.variant if self.variant and self.dtype in ("float16", "fp16") else None

    def _load_lora(self, pipe) -> None:
        try:
            pipe.load_lora_weights(resolve(self.lora, "inpainter.lora"), weight_name=self.lora_weight_name)
        except ImportError as e:  # diffusers needs peft for LoRAs
            raise UserError(f"LoRA weights need the `peft` package: pip install peft ({e})") from None
        except (OSError, ValueError) as e:
            raise UserError(f"cannot load LoRA {self.lora!r}: {e}") from None
        pipe.fuse_lora(lora_scale=self.lora_scale)  # fused: no per-step LoRA overhead
        pipe.unload_lora_weights()

    def _speed_up(self, pipe, *, vae: bool) -> None:
        import torch
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        models = [pipe.unet] + ([pipe.vae] if vae else [])
        if not getattr(pipe, "fusing_unet", False):  # a pipeline handed over twice keeps its fused projections
            for m in models:
                m.set_attn_processor(AttnProcessor2_0() if self.attention == "sdpa" else AttnProcessor())
            if self.fuse_qkv:
                pipe.fuse_qkv_projections(unet=True, vae=vae)
        if self.channels_last:
            for m in models:
                m.to(memory_format=torch.channels_last)
        if self.cpu_offload:
            pipe.enable_model_cpu_offload(device=self.device)
        else:
            pipe.to(self.device)
        if self.compile:
            pipe.unet = torch.compile(pipe.unet, mode=self.compile_mode, fullgraph=True)
        pipe.set_progress_bar_config(disable=True)  # the stage has its own progress bar

    # ------------------------------------------------------------ running
    def __call__(self, jobs: list[RepaintJob]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for k in range(0, len(jobs), self.batch_size):
            out += self.run_batch(jobs[k:k + self.batch_size])
        return out

    def run_batch(self, jobs: list[RepaintJob]) -> list[np.ndarray]:
        """One pipeline call for ``jobs`` (all the same size), concepts composited back exactly."""
        if not jobs:
            return []
        sizes = {j.size for j in jobs}
        if len(sizes) > 1:
            raise ValueError(f"a batch must share one image size, got {sorted(sizes)}")
        import torch
        from PIL import Image

        pipe = self.load()
        w, h = jobs[0].size
        pw, ph = self._work_size(w, h)
        images = [Image.fromarray(_resize(initial_image(j), pw, ph)) for j in jobs]
        masks = [Image.fromarray(_resize(_u8(j.repaint), pw, ph)) for j in jobs]
        # CPU generators: the same noise on any device, and per job, so batching does not change results
        generators = [torch.Generator("cpu").manual_seed(int(j.seed)) for j in jobs]
        kw = dict(prompt=[j.prompt for j in jobs], negative_prompt=[j.negative_prompt for j in jobs],
                  image=images, mask_image=masks, height=ph, width=pw, num_inference_steps=self.steps,
                  guidance_scale=self.guidance, strength=self.strength, generator=generators)
        t0 = time.perf_counter()
        with torch.inference_mode():
            if self._refiner_pipe is not None:
                # ensemble of experts: the base denoises the high-noise part, hands latents (no VAE round trip)
                # to the refiner for the rest
                latents = pipe(**kw, denoising_end=self.refiner_split, output_type="latent").images
                result = self._refiner_pipe(**{**kw, "image": latents}, denoising_start=self.refiner_split,
                                            output_type="np").images
            else:
                result = pipe(**kw, output_type="np").images
        self.last_batch_seconds = time.perf_counter() - t0
        out = []
        for j, img in zip(jobs, result):
            gen = np.nan_to_num(np.asarray(img, np.float32), nan=0.0)  # an fp16 overflow must not become garbage
            gen = np.clip(gen * 255.0 + 0.5, 0, 255).astype(np.uint8)
            out.append(keep_concepts(_resize(gen, w, h), j.rgb, j.alpha, j.repaint))
        return out

    def _work_size(self, w: int, h: int) -> tuple[int, int]:
        """Pipeline size: ``resolution`` on the long side (or the image's own), multiples of 8."""
        if self.resolution:
            s = self.resolution / max(w, h)
            w, h = round(w * s), round(h * s)
        return max(8, w // 8 * 8), max(8, h // 8 * 8)


def initial_image(job: RepaintJob) -> np.ndarray:
    """The concepts over the starting background (Gen4Gen's init image), uint8 HxWx3."""
    a = job.alpha[..., None].astype(np.float32)
    return np.clip(job.rgb * a + job.background * (1.0 - a) + 0.5, 0, 255).astype(np.uint8)


def _u8(mask: np.ndarray) -> np.ndarray:
    return (np.clip(mask, 0, 1) * 255.0 + 0.5).astype(np.uint8)


def _resize(image: np.ndarray, w: int, h: int) -> np.ndarray:
    if image.shape[1] == w and image.shape[0] == h:
        return image
    interp = cv2.INTER_AREA if w < image.shape[1] else cv2.INTER_CUBIC
    return cv2.resize(image, (w, h), interpolation=interp)


def _scheduler(name: str, config):
    import diffusers

    cls, extra = SCHEDULERS[name]
    return getattr(diffusers, cls).from_config(config, **extra)

