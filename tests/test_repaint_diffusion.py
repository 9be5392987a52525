"""The SD-XL / SD-1.5 inpainting backend on the CPU with tiny random pipelines loaded through
``AutoPipelineForInpainting.from_pretrained`` (the path a user's hub model takes)."""
from __future__ import annotations

import numpy as np
import pytest

from gen4gen.errors import UserError
from gen4gen.repaint import RepaintJob
from gen4gen.repaint.mask import repaint_mask
from tests.helpers.settings import backend
from tests.helpers.tree import blob
from tests.helpers.tiny_inpaint import make_sd15_inpaint, make_sdxl_inpaint, make_sdxl_refiner, make_unet_lora


def inpainter(family: str, **over):
    """conf/inpainter/<family>.yaml's backend at the jobs' own size (resolution: null), with ``over``."""
    return backend("inpainter", family, resolution=None, **over)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_inpaint")
    tok = root / "tokenizer"
    return {"sdxl": make_sdxl_inpaint(root / "sdxl", tok), "refiner": make_sdxl_refiner(root / "refiner", tok),
            "sd15": make_sd15_inpaint(root / "sd15", tok)}


@pytest.fixture(scope="module")
def sdxl(tiny):
    return inpainter("sdxl", model=str(tiny["sdxl"]), device="cpu", steps=2, batch_size=3, strength=0.9)


def make_job(seed: int, w: int = 64, h: int = 64) -> RepaintJob:
    rng = np.random.default_rng(seed)
    a = blob(h, w, (w // 4, h // 5, w // 2, h * 3 // 5), soft=1.0)
    rgb = np.clip(np.array([190, 80, 50]) + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
    bg = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return RepaintJob(rgb, a, repaint_mask((a * 255).astype(np.uint8), blur=2), bg,
                      prompt="a realistic photo of a cat in the garden", negative_prompt="blurry", seed=seed)


def assert_concepts_exact(out: np.ndarray, job: RepaintJob) -> None:
    keep = job.repaint == 0
    assert keep.sum() > 200, "the test job must have an interior"
    assert np.array_equal(out[keep], job.rgb[keep])


def test_sdxl_size_exact_concepts_determinism_and_batching(sdxl):
    jobs = [make_job(1), make_job(1), make_job(2)]
    batched = sdxl.run_batch(jobs)
    single = [sdxl.run_batch([j])[0] for j in jobs]
    assert [o.shape for o in batched] == [(64, 64, 3)] * 3 and batched[0].dtype == np.uint8
    for o, j in zip(batched + single, jobs + jobs):
        assert_concepts_exact(o, j)
    assert np.array_equal(single[0], single[1])  # same seed, same image
    for b, s in zip(batched, single):
        # one generator per item, so a batch gets the same noise as one-by-one runs; only the float
        # summation order of batched convolutions on the CPU may differ
        assert np.abs(b.astype(int) - s).max() <= 2
    repainted = jobs[0].repaint == 1
    assert np.abs(single[0][repainted].astype(int) - single[2][repainted]).mean() > 1  # another seed, another image
    assert not np.array_equal(single[0][repainted], jobs[0].background[repainted])  # the background was repainted


def test_sdxl_odd_sizes_come_back_at_the_input_size(sdxl):
    job = make_job(6, w=70, h=58)  # not multiples of 8: the pipeline runs at 64x56, the result is resized back
    out = sdxl([job])[0]
    assert out.shape == (58, 70, 3)
    assert_concepts_exact(out, job)


def test_sdxl_refiner_hands_latents_to_the_refiner(tiny, sdxl):
    refined = inpainter("sdxl", model=str(tiny["sdxl"]), device="cpu", steps=2, refiner=str(tiny["refiner"]),
                        refiner_split=0.5)
    job = make_job(7)
    out = refined([job])[0]
    assert_concepts_exact(out, job)
    base, ref = refined.load(), refined._refiner_pipe
    assert type(ref).__name__ == "StableDiffusionXLInpaintPipeline" and ref.unet.config.in_channels == 4
    assert ref.text_encoder_2 is base.text_encoder_2 and ref.vae is base.vae  # shared, loaded once
    assert not np.array_equal(out, sdxl([job])[0])  # the refiner really changed the result


def test_speed_switches_keep_the_result(tiny, sdxl):
    job = make_job(8)
    ref = sdxl([job])[0].astype(int)
    plain = inpainter("sdxl", model=str(tiny["sdxl"]), device="cpu", steps=2, attention="eager",
                      channels_last=False, fuse_qkv=False)
    assert np.abs(plain([job])[0] - ref).max() <= 2  # fused QKV, SDPA and channels_last are the same maths
    from diffusers.models.attention_processor import FusedAttnProcessor2_0

    assert any(isinstance(p, FusedAttnProcessor2_0) for p in sdxl.load().unet.attn_processors.values())


def test_few_step_lora_with_its_scheduler(tiny, sdxl, tmp_path):
    lora = make_unet_lora(tmp_path / "lora", tiny["sdxl"])
    lcm = inpainter("sdxl", model=str(tiny["sdxl"]), device="cpu", steps=2, guidance=1.0, scheduler="lcm",
                    lora=str(lora), lora_weight_name="pytorch_lora_weights.safetensors")
    job = make_job(9)
    out = lcm([job])[0]
    assert_concepts_exact(out, job)
    pipe = lcm.load()
    assert type(pipe.scheduler).__name__ == "LCMScheduler"
    params = dict(pipe.unet.named_parameters())
    assert not any("lora" in n for n in params)  # fused into the weights, adapters unloaded
    name = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0.weight"  # a LoRA target
    assert not np.allclose(params[name].detach(), dict(sdxl.load().unet.named_parameters())[name].detach())
    with pytest.raises(UserError, match="cannot load inpainter.lora=.*no_lora.: no such file or folder"):
        inpainter("sdxl", model=str(tiny["sdxl"]), device="cpu", lora=str(tmp_path / "no_lora")).load()


def test_sd15_inpainting(tiny):
    sd15 = inpainter("sd15", model=str(tiny["sd15"]), device="cpu", steps=2, batch_size=2)
    jobs = [make_job(10), make_job(11)]
    out = sd15(jobs)
    assert [o.shape for o in out] == [(64, 64, 3)] * 2
    for o, j in zip(out, jobs):
        assert_concepts_exact(o, j)
    assert type(sd15.load()).__name__ == "StableDiffusionInpaintPipeline"


def test_wrong_family_or_missing_model_is_a_user_error(tiny, tmp_path):
    with pytest.raises(UserError, match="inpainter=sdxl or inpainter=sd15"):
        inpainter("sdxl", model=str(tiny["sd15"]), device="cpu").load()
    with pytest.raises(UserError, match="cannot load"):
        inpainter("sdxl", model=str(tmp_path / "nowhere"), device="cpu").load()
    with pytest.raises(UserError, match="refiner exists only for SD-XL"):
        inpainter("sd15", device="cpu", refiner="x")


def test_no_cuda_is_a_clear_error(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="needs a CUDA GPU.*inpainter=classical.*device=cpu"):
        inpainter("sdxl", device="auto")
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        inpainter("sd15", device="cuda:0")
    assert inpainter("sdxl", device="cpu").device == "cpu"  # forced: allowed (tests)
