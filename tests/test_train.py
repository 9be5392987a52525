"""stage=train on tiny SD and SD-XL bases built from configs (CPU): what trains and what stays frozen, a real
learning check, saved files that round-trip into a fresh pipeline, exact resume, and bad input."""
from __future__ import annotations

import errno
import json
import os
import pathlib
from pathlib import Path

import numpy as np
import pytest
import torch

from gen4gen.errors import UserError
from gen4gen.train import checkpoints
from gen4gen.train.custom_diffusion import cross_attention_kv
from gen4gen.train.data import load_examples
from gen4gen.settings import TrainSettings, section
from gen4gen.train.loop import train
from gen4gen.train.models import load_base
from tests.helpers.bench_tiny import BPE, clip_tokenizer, save_tiny_sd, save_tiny_sdxl
from tests.helpers.settings import backend
from tests.conftest import make_cfg, shared
from tests.helpers.train_tiny import save_tiny_dataset


def trainer_of(choice: str, **over):
    """``trainer=<choice>`` as the yaml builds it, with ``over``."""
    return backend("trainer", choice, **over)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a busy 2-core box: OpenMP threads only fight
    root = tmp_path_factory.mktemp("tiny_train")
    tok = clip_tokenizer(str(shared(BPE)), str(root))
    yield {"sd": save_tiny_sd(root / "sd", tok), "sdxl": save_tiny_sdxl(root / "sdxl", tok),
           "dataset": save_tiny_dataset(root)}
    torch.set_num_threads(threads)


def _settings(tiny, kind: str, **kw) -> TrainSettings:
    """The yaml's train settings with a tiny model's overrides."""
    yaml = section(make_cfg(tiny["dataset"].parent), "train", TrainSettings).model_dump()
    return TrainSettings.model_validate({**yaml, "base": str(tiny[kind]), "resolution": 32, "max_steps": 6, "lr": 1e-2,
                                         "batch_size": 2, "mixed_precision": "no", **kw})


def _train(tiny, kind: str, run_dir: Path, trainer=None, checkpoint_every: int = 1000, on_step=None, **kw):
    s = _settings(tiny, kind, **kw)
    examples, concepts, _ = load_examples(tiny["dataset"], s.data, s.caption)
    base = load_base(s.base)
    return train(s, trainer or trainer_of("custom_diffusion"), base, examples, concepts, run_dir, "cpu", "hash",
                 checkpoint_every, on_step=on_step), examples, concepts, s


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


# ---------------------------------------------------------------- what trains
@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_custom_diffusion_changes_exactly_cross_attention_kv_and_the_new_token_rows(tiny, tmp_path, kind):
    fresh = load_base(str(tiny[kind]))
    result, _, concepts, _ = _train(tiny, kind, tmp_path)
    trained = result.base
    kv = {k for k in fresh.unet.state_dict() if ".attn2.to_k." in k or ".attn2.to_v." in k}
    assert kv and kv == set(cross_attention_kv(fresh.unet)) and all(k.endswith(".weight") for k in kv)
    assert _changed(fresh.unet.state_dict(), trained.unet.state_dict()) == kv  # every k/v moved, nothing else
    assert not _changed(fresh.vae.state_dict(), trained.vae.state_dict())
    for old, new, tok in zip(fresh.text_encoders, trained.text_encoders, trained.tokenizers):
        old_sd, new_sd = old.state_dict(), new.state_dict()
        emb = next(k for k in old_sd if k.endswith("token_embedding.weight"))
        assert not _changed({k: v for k, v in old_sd.items() if k != emb}, new_sd)
        vocab = old_sd[emb].shape[0]
        assert new_sd[emb].shape[0] == vocab + len(concepts)
        assert torch.equal(new_sd[emb][:vocab], old_sd[emb])  # every existing row bit-identical
        ids = tok.convert_tokens_to_ids([c.token for c in concepts])
        assert ids == list(range(vocab, vocab + len(concepts)))
        # each new row started at its class word's embedding and moved away from it
        for i, c in zip(ids, concepts):
            start = old_sd[emb][tok(c.noun, add_special_tokens=False).input_ids].mean(0)
            assert not torch.equal(new_sd[emb][i], start)


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_lora_changes_only_its_adapters_and_the_new_token_rows(tiny, tmp_path, kind):
    fresh = load_base(str(tiny[kind]))
    result, _, concepts, _ = _train(tiny, kind, tmp_path, trainer=trainer_of("lora", rank=2, alpha=4.0))
    trained = result.base.unet.state_dict()
    lora = {k for k in trained if "lora_" in k}
    assert lora and all(".attn1." in k or ".attn2." in k for k in lora)
    # every base weight is bit-identical (peft keeps it as <layer>.base_layer.<param>)
    for k, v in fresh.unet.state_dict().items():
        head, _, leaf = k.rpartition(".")
        assert torch.equal(v, trained[k] if k in trained else trained[f"{head}.base_layer.{leaf}"]), k
    assert set(trained) - lora - {f"{k.rpartition('.')[0]}.base_layer.{k.rpartition('.')[2]}" for k in
                                  fresh.unet.state_dict()} - set(fresh.unet.state_dict()) == set()
    assert all(trained[k].abs().sum() > 0 for k in lora if "lora_B" in k)  # B started at zero and trained
    old, new = fresh.text_encoders[0].state_dict(), result.base.text_encoders[0].state_dict()
    emb = next(k for k in old if k.endswith("token_embedding.weight"))
    assert torch.equal(new[emb][:old[emb].shape[0]], old[emb])
    assert not _changed({k: v for k, v in old.items() if k != emb}, new)


@pytest.mark.parametrize("trainer,lr", [(trainer_of("custom_diffusion"), 2e-2),
                                        (trainer_of("lora", rank=4, alpha=4.0), 2e-2)], ids=["custom_diffusion", "lora"])
def test_overfitting_one_fixed_batch_lowers_the_loss_clearly(tiny, tmp_path, monkeypatch, trainer, lr):
    # one batch: every step draws the same examples, noise and timesteps
    monkeypatch.setattr("gen4gen.train.loop.stable_hash", lambda text: 1234567)
    result, *_ = _train(tiny, "sd", tmp_path, trainer=trainer, max_steps=40, lr=lr)
    losses = np.array(result.losses)
    assert losses[-5:].mean() < 0.92 * losses[:5].mean(), losses
    assert (np.diff(losses) < 0).mean() > 0.8  # falls step after step, not by chance


@pytest.mark.parametrize("trainer", [trainer_of("custom_diffusion"), trainer_of("lora", rank=2)],
                         ids=["custom_diffusion", "lora"])
def test_mixed_precision_keeps_frozen_weights_in_bf16_and_trains_fp32_copies(tiny, tmp_path, trainer):
    # the GPU's mixed-precision path, run on the CPU's bf16 autocast (fp16 has none there)
    fresh = load_base(str(tiny["sdxl"]))
    result, *_ = _train(tiny, "sdxl", tmp_path, trainer=trainer, max_steps=3, mixed_precision="bf16")
    unet = result.base.unet
    trained = {n for n, p in unet.named_parameters() if p.requires_grad}
    assert trained and {p.dtype for n, p in unet.named_parameters() if n in trained} == {torch.float32}
    assert {p.dtype for n, p in unet.named_parameters() if n not in trained} == {torch.bfloat16}
    assert all(np.isfinite(result.losses))
    after = unet.state_dict()
    for k, v in fresh.unet.state_dict().items():  # frozen: exactly the base weight in bf16
        if k in after and k not in trained:
            assert torch.equal(after[k], v.to(torch.bfloat16)), k


def test_gradient_checkpointing_trains_the_same_weights(tiny, tmp_path):
    plain, *_ = _train(tiny, "sd", tmp_path / "a", max_steps=3)
    ckpt, *_ = _train(tiny, "sd", tmp_path / "b", max_steps=3, gradient_checkpointing=True)
    for (k, a), b in zip(plain.base.unet.state_dict().items(), ckpt.base.unet.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k


def test_masked_loss_weights_the_concept_pixels_and_prior_images_join_the_batch(tiny, tmp_path, monkeypatch):
    from PIL import Image

    from gen4gen.train.data import prior_examples
    from gen4gen.train.loop import cache_latents

    examples, concepts, _ = load_examples(tiny["dataset"])
    base = load_base(str(tiny["sd"]))
    cache = cache_latents(base, examples, 32, "cpu", masked=True)
    # the exported union mask (a box over the left part of a 40x48 image) at latent size, centre-cropped like the image
    m = cache["mask"][0, 0]
    assert cache["mean"].shape == (2, 4, 16, 16) and m.shape == (16, 16)
    assert m[8, 3].item() == 1.0 and m[8, 14].item() == 0.0 and m[0, 3].item() == 0.0
    assert 0 < m.mean().item() < 0.5
    plain = cache_latents(base, examples, 32, "cpu", masked=False)
    assert torch.equal(plain["mean"], cache["mean"]) and bool((plain["mask"] == 1).all())
    # masked training on a fixed batch: the loss falls and differs from the unmasked one
    monkeypatch.setattr("gen4gen.train.loop.stable_hash", lambda text: 7)
    masked, *_ = _train(tiny, "sd", tmp_path / "m", max_steps=15, masked_loss=True, mask_background_weight=0.0)
    unmasked, *_ = _train(tiny, "sd", tmp_path / "u", max_steps=15)
    assert masked.losses[0] != unmasked.losses[0] and masked.losses[-1] < masked.losses[0]
    # prior preservation: class images from <dir>/<concept>/, captioned with the class words only
    for c in ("cat", "dog"):
        (tmp_path / "class" / c).mkdir(parents=True)
        Image.new("RGB", (36, 36), (200, 100, 50)).save(tmp_path / "class" / c / "0.png")
    priors = prior_examples(tmp_path / "class", concepts)
    assert [(p.caption, p.prior) for p in priors] == [("a photo of a cat", True), ("a photo of a dog", True)]
    s = _settings(tiny, "sd", max_steps=15, prior={"class_dir": str(tmp_path / "class"), "weight": 1.0, "generate": 0})
    with_prior = train(s, trainer_of("custom_diffusion"), load_base(s.base), examples, concepts, tmp_path / "p",
                       "cpu", "h", 100, priors=priors)
    assert with_prior.losses[0] > unmasked.losses[0]  # the prior term adds to the instance loss
    with pytest.raises(UserError, match="no class images"):
        prior_examples(tmp_path / "nowhere", concepts)


def test_detailed_captions_get_each_concepts_token_before_its_class_words():
    from gen4gen.train.data import Concept, with_tokens

    concepts = [Concept("cat", "<new1>", "cat"), Concept("teddy_bear", "<new2>", "teddy bear")]
    assert (with_tokens("a cat next to two teddy bears, cats love them", concepts)
            == "a <new1> cat next to two <new2> teddy bears, <new1> cats love them")


def test_class_word_prompts_keep_their_articles():
    from gen4gen.words import as_class_words

    nouns = {"<new1>": "cat", "<new2>": "dog", "<new3>": "owl", "<new4>": "cup"}
    cases = {"a photo of <new1> cat and <new4> cup": "a photo of a cat and a cup",
             "a photo of <new1> cat and two <new2> dogs in the garden": "a photo of a cat and two dogs in the garden",
             "a photo of a <new1> cat": "a photo of a cat", "the <new3> owl beside <new3> owl": "the owl beside an owl",
             "<new2> dogs and 3 <new1> cats": "dogs and 3 cats", "<new3>": "an owl", "my <new1>": "my cat"}
    assert {text: as_class_words(text, nouns) for text in cases} == cases


def test_index_rows_are_read_through_the_export_s_row_model(tmp_path):
    from gen4gen.train.data import read_rows

    good = {"id": "pets/cat_000/v0", "image": "pets/cat_000/v0/image.png", "mask": "pets/cat_000/v0/mask.png",
            "concepts": ["cat"], "captions": {"personalized": "<new1> cat"}, "modifier_tokens": {"cat": "<new1>"},
            "reference_images": {"cat": ["mycanvas/references/cat/a.png"]}, "instances": []}
    bad = [{**good, "image": "../../etc/passwd"}, {**good, "image": None}, {**good, "concepts": "cat"},
           {**good, "reference_images": {"cat": ["/etc/shadow"]}}]
    index = tmp_path / "mycanvas" / "index.jsonl"
    index.parent.mkdir()
    index.write_text("\n".join(json.dumps(r) for r in [good, *bad]) + "\n")
    rows, problems = read_rows(tmp_path)
    [row] = rows
    assert row.image == str(tmp_path / "mycanvas/pets/cat_000/v0/image.png")
    assert row.mask == str(tmp_path / "mycanvas/pets/cat_000/v0/mask.png")
    assert row.reference_images == {"cat": [str(tmp_path / "mycanvas/references/cat/a.png")]}
    # one line per row left out (the one reader train and the bench share), then the row that has no image
    assert [p.split(": not a MyCanvas index row (")[0] for p in problems[:3]] == [f"{index}:{n}" for n in (2, 4, 5)]
    assert "image: expected a relative path" in problems[0] and "concepts" in problems[1]
    assert "reference_images.cat.0" in problems[2] and problems[3] == f"{index}: {good['id']}: image: missing"


# ---------------------------------------------------------------- exact resume
@pytest.mark.parametrize("accum", [1, 2])
def test_killed_after_a_checkpoint_resumes_to_the_same_weights(tiny, tmp_path, accum):
    whole, *_ = _train(tiny, "sd", tmp_path / "whole", checkpoint_every=3, max_steps=8, grad_accum=accum)

    def kill(step, _loss):
        if step == 5:
            raise KeyboardInterrupt  # the process dies after step 5; the checkpoint of step 3 is on disk

    with pytest.raises(KeyboardInterrupt):
        _train(tiny, "sd", tmp_path / "killed", checkpoint_every=3, max_steps=8, on_step=kill, grad_accum=accum)
    assert [p.name for p in (tmp_path / "killed" / checkpoints.DIR).iterdir()] == ["step_0000003.pt"]
    resumed, *_ = _train(tiny, "sd", tmp_path / "killed", checkpoint_every=3, max_steps=8, grad_accum=accum)
    assert resumed.resumed_from == 3 and resumed.steps_done == 5
    assert not _changed(whole.base.unet.state_dict(), resumed.base.unet.state_dict())
    assert not _changed(whole.base.text_encoders[0].state_dict(), resumed.base.text_encoders[0].state_dict())
    assert resumed.losses == whole.losses
    # another configuration does not resume from it
    assert checkpoints.latest(tmp_path / "killed", "other hash") is None


# ---------------------------------------------------------------- saved files round-trip
def _pipeline_class(kind: str):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline if kind == "sdxl" else StableDiffusionPipeline


def _image(pipe, prompt: str) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    return pipe(prompt, num_inference_steps=2, guidance_scale=2.0, height=32, width=32, output_type="np",
                generator=torch.Generator("cpu").manual_seed(0)).images[0]


def _save(tiny, kind, run_dir: Path, trainer=None):
    from gen4gen.runner import ItemWriter
    from gen4gen.stages.train import save_run

    trainer = trainer or trainer_of("custom_diffusion")
    result, examples, concepts, s = _train(tiny, kind, run_dir, trainer=trainer)
    save_run(ItemWriter(run_dir), "run", s, trainer, result, concepts, examples, None, 0, tiny["dataset"], "cpu")
    b = result.base
    parts = {"unet": b.unet, "text_encoder": b.text_encoders[0], "tokenizer": b.tokenizers[0]}
    if kind == "sdxl":
        parts.update(text_encoder_2=b.text_encoders[1], tokenizer_2=b.tokenizers[1])
    return _pipeline_class(kind).from_pretrained(tiny[kind], **parts)


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_saved_run_loads_into_a_fresh_pipeline_and_reproduces_the_trained_image(tiny, tmp_path, kind):
    import gen4gen.personalize

    run = tmp_path / "run"
    in_memory = _save(tiny, kind, run)
    prompt = "<new1> cat on the left and <new2> dog in the garden"
    want = _image(in_memory, prompt)
    cls = _pipeline_class(kind)
    fresh = cls.from_pretrained(tiny[kind])
    base_image = _image(fresh, prompt)
    man = gen4gen.personalize.load(fresh, run)
    assert [t.token for t in man.tokens] == ["<new1>", "<new2>"] and man.trainer == "custom_diffusion"
    got = _image(fresh, prompt)
    assert np.array_equal(got, want)  # bit-identical: the same weights, the same attention code
    assert np.abs(base_image - want).max() > 1e-3  # and the training made a visible difference
    assert man.class_words(prompt) == "a cat on the left and a dog in the garden"
    assert (man.data, man.caption) == ("mycanvas", "personalized")
    files = {p.name for p in run.iterdir()}
    assert {"pytorch_custom_diffusion_weights.safetensors", "pytorch_custom_diffusion_weights.bin",
            "<new1>.safetensors", "<new2>.safetensors", "personalization.json", "loss.png", "README.md",
            "roster_entry.yaml"} <= files
    if kind == "sd":
        # diffusers' own calls on the same files (checked with diffusers 0.42.1): the .bin file installs with
        # the private _pipeline argument; its processors compute the same attention outside SDPA
        other = cls.from_pretrained(tiny[kind])
        other.unet.load_attn_procs(run, weight_name="pytorch_custom_diffusion_weights.bin", _pipeline=other)
        for t in ("<new1>", "<new2>"):
            other.load_textual_inversion(run, weight_name=f"{t}.safetensors")
        assert np.allclose(_image(other, prompt), want, atol=1e-5)
        # the pitfall personalize.load avoids: the safetensors twin lacks the self-attention entries
        with pytest.raises(ValueError, match="number of processors"):
            cls.from_pretrained(tiny[kind]).unet.load_attn_procs(
                run, weight_name="pytorch_custom_diffusion_weights.safetensors", _pipeline=other)


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_saved_lora_run_loads_into_a_fresh_pipeline_and_reproduces_the_trained_image(tiny, tmp_path, kind):
    import gen4gen.personalize

    run = tmp_path / "run"
    # alpha != rank: the scale must survive saving
    in_memory = _save(tiny, kind, run, trainer_of("lora", rank=2, alpha=4.0))
    prompt = "<new2> dog above <new1> cat on the moon"
    want = _image(in_memory, prompt)
    cls = _pipeline_class(kind)
    fresh = cls.from_pretrained(tiny[kind])
    base_image = _image(fresh, prompt)
    man = gen4gen.personalize.load(fresh, run)
    assert man.trainer == "lora" and man.weights == "pytorch_lora_weights.safetensors"
    assert np.allclose(_image(fresh, prompt), want, atol=1e-6)
    assert np.abs(base_image - want).max() > 1e-3
    from safetensors import safe_open

    with safe_open(str(run / man.weights), "pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith("unet.") for k in keys)  # the diffusers LoRA layout


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_lora_run_s_kohya_file_and_a1111_embeddings_give_the_trained_image_through_diffusers_alone(tiny, tmp_path, kind):
    import re

    from safetensors import safe_open
    from safetensors.torch import load_file

    run = tmp_path / "run"
    # alpha != rank: the kohya alpha must carry it
    in_memory = _save(tiny, kind, run, trainer_of("lora", rank=2, alpha=4.0))
    prompt = "<new2> dog above <new1> cat on the moon"
    want = _image(in_memory, prompt)
    fresh = _pipeline_class(kind).from_pretrained(tiny[kind])
    fresh.load_lora_weights(run / "webui", weight_name="run.safetensors")  # diffusers' kohya reader
    for token in ("<new1>", "<new2>"):
        emb = run / "webui" / "embeddings" / f"run_{token.strip('<>')}.safetensors"
        if kind == "sd":
            assert list(load_file(emb)) == ["emb_params"]  # A1111's layout, read by diffusers as such
            fresh.load_textual_inversion(str(emb), token=token)
        else:
            state = load_file(emb)
            assert {k: tuple(v.shape) for k, v in state.items()} == {
                "clip_l": (1, fresh.text_encoder.config.hidden_size), "clip_g": (1, fresh.text_encoder_2.config.hidden_size)}
            fresh.load_textual_inversion(state["clip_l"][0], token=token, text_encoder=fresh.text_encoder,
                                         tokenizer=fresh.tokenizer)
            fresh.load_textual_inversion(state["clip_g"][0], token=token, text_encoder=fresh.text_encoder_2,
                                         tokenizer=fresh.tokenizer_2)
    assert np.allclose(_image(fresh, prompt), want, atol=1e-6)  # the same image as the native files give
    with safe_open(str(run / "webui" / "run.safetensors"), "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
        alphas = {float(f.get_tensor(k)) for k in keys if k.endswith(".alpha")}
    assert keys and all(re.fullmatch(r"lora_unet_\w+\.(lora_down\.weight|lora_up\.weight|alpha)", k) for k in keys)
    assert alphas == {4.0} and meta["ss_network_dim"] == "2" and meta["ss_network_module"] == "networks.lora"
    blocks = {re.match(r"lora_unet_([a-z]+_block)", k).group(1) for k in keys}
    # SD 1.x/2.x keep diffusers' module names (as sd-scripts does); SD-XL uses the original UNet's
    assert blocks == ({"down_block", "mid_block", "up_block"} & blocks if kind == "sd" else
                      {"input_block", "middle_block", "output_block"} & blocks) and blocks
    card = (run / "README.md").read_text()
    assert "`webui/run.safetensors`" in card and "<lora:run:1>" in card
    assert "| `<new1>` | cat | `webui/embeddings/run_new1.safetensors` | `run_new1` |" in card
    if kind == "sd":  # the card's snippet runs as pasted: imports, the run's folder, the base
        import subprocess
        import sys

        (code,) = re.findall(r"```python\n(.*?)```", card, flags=re.S)
        code = code.replace(".images[0]", ".images[0]; print(image.size)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=600)
        assert out.returncode == 0 and out.stdout.strip() == "(32, 32)", out.stderr[-2000:]


def test_sdxl_attention_layers_get_the_original_unet_s_block_names_that_diffusers_maps_back():
    import re
    from types import SimpleNamespace

    from diffusers.loaders.lora_conversion_utils import _maybe_map_sgm_blocks_to_diffusers

    from gen4gen.train.webui import sgm_name

    # SD-XL base: down blocks 1 and 2 and up blocks 0 and 1 hold attentions, two per down block, three per up block
    paths = ([f"down_blocks.{b}.attentions.{j}" for b in (1, 2) for j in (0, 1)] + ["mid_block.attentions.0"]
             + [f"up_blocks.{b}.attentions.{j}" for b in (0, 1) for j in (0, 1, 2)])
    names = {p: sgm_name(f"{p}.transformer_blocks.0.attn2.to_k", 2) for p in paths}
    assert names["down_blocks.1.attentions.0"] == "input_blocks.4.1.transformer_blocks.0.attn2.to_k"  # sd-scripts' names
    assert names["down_blocks.2.attentions.1"].startswith("input_blocks.8.1.")
    assert names["mid_block.attentions.0"].startswith("middle_block.1.")
    assert names["up_blocks.1.attentions.2"].startswith("output_blocks.5.1.")
    kohya = {"lora_unet_" + n.replace(".", "_") + ".lora_down.weight": p for p, n in names.items()}
    back = _maybe_map_sgm_blocks_to_diffusers(dict.fromkeys(kohya), SimpleNamespace(layers_per_block=2))
    # it renumbers blocks and layers; the block words are renamed by the key conversion after it
    words = {"input_blocks": "down_blocks", "middle_block": "mid_block", "output_blocks": "up_blocks"}
    back = [re.sub("|".join(words), lambda m: words[m.group(0)], k) for k in back]
    assert sorted(back) == sorted("lora_unet_" + f"{p}.transformer_blocks.0.attn2.to_k".replace(".", "_")
                                  + ".lora_down.weight" for p in paths)
    with pytest.raises(ValueError, match="attention layers only"):
        sgm_name("up_blocks.1.resnets.1.conv1", 2)


# ---------------------------------------------------------------- the stage and bad input
def _cfg(tmp_path, tiny, *overrides):
    return make_cfg(tmp_path, "stage=train", f"train.base={tiny['sd']}", f"train.dataset={tiny['dataset']}",
                    "train.force_cpu=true", "train.resolution=32", "train.max_steps=4", "train.lr=1e-3",
                    "train.checkpoint_every=2", *overrides)


def _copy_dataset(tiny, tmp_path: Path, extra_rows: list[dict]) -> Path:
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(tiny["dataset"], ds)
    with open(ds / "mycanvas" / "index.jsonl", "a", encoding="utf-8") as f:
        for row in extra_rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return ds


def test_stage_writes_a_run_leaves_out_bad_examples_with_one_line_and_skips_a_rerun(tiny, tmp_path):
    import yaml

    from gen4gen.artefacts import Manifest, RosterEntry
    from gen4gen.markers import read_meta
    from gen4gen.stages import train as stage

    stray = {"id": "pets/x/v0", "image": "pets/cat+dog_000/v0_procedural/image.png", "concepts": ["cat"],
             "captions": {"personalized": "<new3> cat on a sofa"}, "modifier_tokens": {"cat": "<new1>"}}
    ds = _copy_dataset(tiny, tmp_path, [stray, "{not json"])
    cfg = _cfg(tmp_path, tiny, f"train.dataset={ds}")
    summary = stage.run(cfg)
    run = Path(cfg.train.out_dir) / "custom_diffusion_mycanvas"
    assert (summary.done, summary.failed) == (1, 2)
    reasons = [json.loads(x)["reason"] for x in (run / "failures.jsonl").read_text().splitlines()]
    assert len(reasons) == 2 and all("\n" not in r for r in reasons)
    assert any("<new3>" in r and "no concept" in r for r in reasons)
    assert any("not a MyCanvas index row" in r for r in reasons)
    meta = read_meta(run)
    assert len(meta["losses"]) == 4 and meta["examples"] == 2
    assert not (run / checkpoints.DIR).exists()  # a finished run keeps no checkpoints
    man = Manifest.load(run)
    assert (man.trainer, man.base_kind, man.weights) == ("custom_diffusion", "sd",
                                                        "pytorch_custom_diffusion_weights.safetensors")
    entry = RosterEntry.model_validate(yaml.safe_load((run / "roster_entry.yaml").read_text()))
    assert entry.train_run == str(run.resolve()) and entry.source == str(tiny["sd"])
    with open(run / "loss.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # the tokens it was trained with: a dataset that later gives <new1> to another concept is one line
    from gen4gen.concepts import ConceptRegistry, run_mismatch

    assert ConceptRegistry.read(run).tokens().items() >= {c.concept: c.token for c in man.tokens}.items()
    assert run_mismatch(run, ds) == ""
    moved = ConceptRegistry.read(run).model_dump()
    moved["concepts"][0]["name"] = "owl"
    (ds / "concepts.json").write_bytes(ConceptRegistry.build(moved).dump())
    assert run_mismatch(run, ds) == f"train run {run} was trained with other tokens than {ds} uses: <new1> was " \
        f"{man.tokens[0].concept}, is now owl"
    again = stage.run(cfg)
    assert (again.done, again.skipped) == (0, 1)


def test_a_second_run_is_the_runner_s_skip_and_a_deleted_weights_file_trains_the_run_again(tiny, tmp_path):
    """The run folder is one runner item: its marker vouches for every file the run wrote."""
    import hashlib

    from gen4gen.artefacts import TrainMeta
    from gen4gen.stages import train as stage

    def digest(folder: Path) -> dict:
        return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file()}

    cfg = _cfg(tmp_path, tiny)
    run = Path(cfg.train.out_dir) / "custom_diffusion_mycanvas"
    assert stage.run(cfg).done == 1
    meta = TrainMeta.load(run)
    weights = "pytorch_custom_diffusion_weights.safetensors"
    assert {weights, "<new1>.safetensors", "personalization.json", "roster_entry.yaml", "README.md"} <= set(meta.outputs)
    before = digest(run)
    again = stage.run(cfg)
    assert (again.total, again.done, again.skipped, again.failed) == (1, 0, 1, 0)
    assert again.notes["train"].startswith("already trained with this configuration")
    assert digest(run) == before
    (run / weights).unlink()
    redo = stage.run(cfg)
    assert (redo.done, redo.skipped) == (1, 0)
    assert redo.notes["redone: a file changed or broke since it was done"] == 1
    assert digest(run)[weights] == before[weights]  # the same run trained again: the same weights
    assert TrainMeta.load(run).hash == meta.hash


def test_ctrl_c_stops_the_run_at_once_and_the_rerun_resumes_to_the_same_weights(tiny, tmp_path, monkeypatch):
    """Ctrl-C right after the first checkpoint: the runner's Interrupted, no marker, and a rerun that resumes from
    that checkpoint ends with the weights of an uninterrupted run."""
    from gen4gen.errors import Interrupted
    from gen4gen.stages import train as stage

    real = checkpoints.save

    def save_then_ctrl_c(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    steps = ["train.max_steps=6", "train.checkpoint_every=2", "train.keep_checkpoints=10"]
    cfg = _cfg(tmp_path, tiny, *steps, f"train.out_dir={tmp_path / 'stopped'}")
    run = Path(cfg.train.out_dir) / "custom_diffusion_mycanvas"
    monkeypatch.setattr(checkpoints, "save", save_then_ctrl_c)
    with pytest.raises(Interrupted) as e:
        stage.run(cfg)
    assert e.value.done == 0 and not (run / "meta.json").exists()
    assert [p.name for p in (run / checkpoints.DIR).glob("step_*.pt")] == ["step_0000002.pt"]  # stopped at once
    monkeypatch.setattr(checkpoints, "save", real)
    summary = stage.run(cfg)
    assert summary.done == 1 and "resumed at 2" in summary.notes["train"]
    whole = _cfg(tmp_path, tiny, *steps, f"train.out_dir={tmp_path / 'whole'}")
    stage.run(whole)
    weights = "pytorch_custom_diffusion_weights.safetensors"
    assert (run / weights).read_bytes() == (Path(whole.train.out_dir) / run.name / weights).read_bytes()


def test_without_a_gpu_the_stage_prints_an_estimate_and_stops(tiny, tmp_path, monkeypatch):
    from gen4gen.stages import train as stage

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match=r"no CUDA GPU.*\n.*4 steps x batch 2.*on one GPU.*\n.*train.force_cpu=true"):
        stage.run(_cfg(tmp_path, tiny, "train.force_cpu=false"))
    assert not list((tmp_path / "outputs" / "train").rglob("*.safetensors"))


def _bad_cases(tiny, tmp_path) -> dict:
    no_file = {"id": "a/b/c", "image": "missing.png", "concepts": ["cat"], "captions": {"personalized": "<new1> cat"},
               "modifier_tokens": {"cat": "<new1>"}}
    empty = tmp_path / "empty"
    (empty / "mycanvas").mkdir(parents=True)
    (empty / "mycanvas" / "index.jsonl").write_text(json.dumps(no_file) + "\n")
    not_pipeline = tmp_path / "not_a_pipeline"
    not_pipeline.mkdir()
    return {
        "dataset missing": ([f"train.dataset={tmp_path / 'nowhere'}"], "train dataset not found"),
        "no complete item": ([f"train.dataset={empty}"], "no complete example.*missing.png is missing"),
        "unknown base (folder)": ([f"train.base={not_pipeline}"], "train.base=.*without model_index.json"),
        "unknown base (hub id)": (["train.base=nobody/no-such-model"],
                                  "train.base='nobody/no-such-model' is neither a local folder nor in the local "
                                  "Hugging Face cache, and the hub cannot be reached \\(HF_HUB_OFFLINE is set\\)"),
        "resolution": (["train.resolution=100"], "train.resolution=100: 100 is not a multiple of 8"),
    }


def test_bad_input_stops_with_one_line_each(tiny, tmp_path):
    from gen4gen.stages import train as stage

    for name, (overrides, pattern) in _bad_cases(tiny, tmp_path).items():
        with pytest.raises(UserError, match=pattern) as e:
            stage.run(_cfg(tmp_path, tiny, *overrides))
        assert "\n" not in str(e.value), name


def test_a_read_only_output_folder_is_one_line_before_any_model_loads(tiny, tmp_path, monkeypatch):
    from gen4gen.stages import train as stage

    out = tmp_path / "ro"
    out.mkdir()
    if os.geteuid() == 0:  # root writes through permission bits: act as a read-only file system instead
        real = pathlib.Path.write_bytes

        def read_only(self, data):
            if str(self).startswith(str(out)):
                raise OSError(errno.EROFS, "Read-only file system")
            return real(self, data)

        monkeypatch.setattr(pathlib.Path, "write_bytes", read_only)
        (out / "custom_diffusion_mycanvas").mkdir()
    else:
        out.chmod(0o555)
    monkeypatch.setattr("gen4gen.train.models.load_base", lambda *a: pytest.fail("loaded a model"))
    with pytest.raises(UserError, match="train output folder .*ro/custom_diffusion_mycanvas is not writable") as e:
        stage.run(_cfg(tmp_path, tiny, f"train.out_dir={out}"))
    assert "\n" not in str(e.value)


def test_the_loader_names_a_token_without_its_embedding_file(tiny, tmp_path):
    import gen4gen.personalize

    run = tmp_path / "run"
    _save(tiny, "sd", run)
    (run / "<new2>.safetensors").unlink()
    with pytest.raises(UserError, match="token <new2> file <new2>.safetensors is missing") as e:
        gen4gen.personalize.load(_pipeline_class("sd").from_pretrained(tiny["sd"]), run)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- the bench consumes train runs
def test_bench_generates_and_scores_personalised_models_and_prints_gen4gen_table(tiny, tmp_path):
    import csv

    import yaml
    from omegaconf import OmegaConf

    from gen4gen.bench.report import GEN4GEN_ORDER
    from gen4gen.stages import bench
    from gen4gen.stages import train as stage
    from tests.helpers.bench_tiny import save_tiny_clip, save_tiny_dino, save_tiny_owlvit

    entries = []
    for trainer, data, lr in [("custom_diffusion", "mycanvas", 1e-3), ("custom_diffusion", "sources", 1e-3),
                              ("lora", "mycanvas", 1e-2)]:
        cfg = _cfg(tmp_path, tiny, f"trainer={trainer}", f"train.data={data}", f"train.lr={lr}", "train.max_steps=2")
        assert stage.run(cfg).done == 1
        entry = yaml.safe_load((Path(cfg.train.out_dir) / f"{trainer}_{data}" / "roster_entry.yaml").read_text())
        entries.append({**entry, "steps": 2, "guidance": 2.0})
    tok = clip_tokenizer(str(shared(BPE)), str(tmp_path))
    cfg = make_cfg(tmp_path, "stage=bench", "bench.force_cpu=true", "bench.batch_size=2", "bench.seeds=[0]",
                   "bench.use=[mycanvas]", f"bench.promptsets.mycanvas.path={tiny['dataset']}",
                   "bench.promptsets.mycanvas.caption=personalized", "bench.promptsets.mycanvas.limit=null",
                   "bench.promptsets.mycanvas.novel_backgrounds=[on the surface of the moon]",
                   "bench.promptsets.mycanvas.k_prompts=0",
                   f"bench.metrics.backbones.clip={save_tiny_clip(tmp_path / 'clip', tok)}",
                   f"bench.metrics.backbones.dino={save_tiny_dino(tmp_path / 'dino')}",
                   f"bench.metrics.backbones.detector={save_tiny_owlvit(tmp_path / 'owl', tok)}",
                   "bench.metrics.detector_threshold=0.0", "bench.warmup=false")
    OmegaConf.set_struct(cfg, False)
    cfg.roster = OmegaConf.create({"name": "personal", "models": [
        {"name": "base", "source": str(tiny["sd"]), "steps": 2, "guidance": 2.0, "resolution": 32}, *entries]})
    summary = bench.run(cfg)
    assert (summary.done, summary.failed) == (12, 0)  # 4 models x (2 scene prompts + 1 novel background)
    run = Path(cfg.bench.out_dir) / "personal"
    records = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
    for r in records:
        personal = r["model"] != "base"
        assert ("<new1>" in r["prompt"]) == personal, r
    novel = {r["model"]: r["prompt"] for r in records if r["prompt_id"].startswith("novel")}
    assert novel["base"] == "a cat and a dog on the surface of the moon"
    assert novel["lora_mycanvas"] == "<new1> cat and <new2> dog on the surface of the moon"
    with open(run / "report" / "gen4gen.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["method"] for r in table] == list(GEN4GEN_ORDER)
    assert [r["model"] for r in table] == ["base", "custom_diffusion_sources", "custom_diffusion_mycanvas",
                                           "lora_mycanvas"]
    for r in table:
        assert r["n"] == "3" and all(r[c] != "" for c in ("clip_t", "clip_i", "dino", "cp_clip", "ti_clip")), r
    assert "## Gen4Gen: personalised models" in (run / "report" / "leaderboard.md").read_text()
    page = (run / "report" / "gallery.html").read_text()
    assert all(f"<th>{m}</th>" in page for m in ("base", "custom_diffusion_mycanvas", "lora_mycanvas"))


# ---------------------------------------------------------------- one command for the whole experiment
def test_experiment_trains_each_variant_as_a_multirun_then_benches_them(tiny, tmp_path):
    import csv
    import subprocess
    import sys

    from tests.helpers.bench_tiny import save_tiny_clip, save_tiny_dino, save_tiny_owlvit

    tok = clip_tokenizer(str(shared(BPE)), str(tmp_path))
    out = tmp_path / "outputs"
    args = ["-m", "+experiment=personalize", f"paths.outputs_dir={out}", f"paths.stages_dir={tmp_path / 'stages'}",
            f"train.base={tiny['sd']}", f"train.dataset={tiny['dataset']}", "train.force_cpu=true",
            "train.resolution=32", "train.max_steps=2", "train.checkpoint_every=2", "bench.force_cpu=true",
            "bench.seeds=[0]", "bench.warmup=false",
            "bench.promptsets.mycanvas.novel_backgrounds=[on the moon]",
            f"bench.metrics.backbones.clip={save_tiny_clip(tmp_path / 'clip', tok)}",
            f"bench.metrics.backbones.dino={save_tiny_dino(tmp_path / 'dino')}",
            f"bench.metrics.backbones.detector={save_tiny_owlvit(tmp_path / 'owl', tok)}",
            "bench.metrics.detector_threshold=0.0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "gen4gen", *args], capture_output=True, text=True, timeout=900,
                          cwd=Path(__file__).resolve().parents[1], env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (out / "train").iterdir()) == ["cd_mycanvas", "cd_sources", "lora_mycanvas"]
    with open(out / "bench" / "personalize" / "report" / "gen4gen.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["method"], r["model"]) for r in table] == [
        ("base model (class words, no fine-tuning)", "base"), ("Custom Diffusion on sources", "cd_sources"),
        ("Custom Diffusion on MyCanvas", "cd_mycanvas"), ("LoRA on MyCanvas", "lora_mycanvas")]
    assert all(r["clip_t"] and r["cp_clip"] and r["ti_clip"] for r in table)


def test_prior_class_images_are_generated_by_the_base_model_once(tiny, tmp_path):
    from gen4gen.markers import read_meta
    from gen4gen.stages import train as stage

    classes = tmp_path / "class"
    (classes / "dog").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (32, 32), (9, 9, 9)).save(classes / "dog" / "mine.png")  # the user's own image counts
    cfg = _cfg(tmp_path, tiny, f"train.prior.class_dir={classes}", "train.prior.generate=2")
    summary = stage.run(cfg)
    assert summary.done == 1 and summary.notes["class images"].startswith("3 generated")
    assert sorted(p.name for p in (classes / "cat").iterdir()) == ["gen_0000.png", "gen_0001.png"]
    assert sorted(p.name for p in (classes / "dog").iterdir()) == ["gen_0000.png", "mine.png"]
    with Image.open(classes / "cat" / "gen_0000.png") as im:
        assert im.size == (32, 32)
    assert read_meta(Path(cfg.train.out_dir) / "custom_diffusion_mycanvas")["priors"] == 4
    assert stage.run(cfg).skipped == 1  # nothing regenerated, nothing retrained


def test_a_process_killed_after_a_checkpoint_resumes_to_the_same_files(tiny, tmp_path):
    """A real kill (SIGKILL of `python -m gen4gen stage=train`), then a rerun: the saved weights and embeddings
    are byte-identical to an uninterrupted run's."""
    import signal
    import subprocess
    import sys
    import time

    from gen4gen.stages import train as stage

    steps = ["train.max_steps=80", "train.checkpoint_every=5", "train.keep_checkpoints=1000"]
    killed = _cfg(tmp_path, tiny, *steps, f"train.out_dir={tmp_path / 'killed'}")
    args = [f"{k}={v}" for k, v in [("stage", "train"), ("train.base", tiny["sd"]), ("train.dataset", tiny["dataset"]),
                                    ("train.force_cpu", "true"), ("train.resolution", 32), ("train.lr", "1e-3"),
                                    ("train.out_dir", tmp_path / "killed"), ("paths.outputs_dir", tmp_path / "o"),
                                    ("hydra.run.dir", tmp_path / "hydra")]] + steps
    proc = subprocess.Popen([sys.executable, "-m", "gen4gen", *args], cwd=Path(__file__).resolve().parents[1],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "killed" / "custom_diffusion_mycanvas" / checkpoints.DIR
    deadline = time.time() + 600
    while not list(ckpt.glob("step_*.pt")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run = ckpt.parent
    assert not (run / "meta.json").exists(), "the run finished before it could be killed"
    summary = stage.run(killed)
    assert summary.done == 1 and "resumed at" in summary.notes["train"]
    whole = _cfg(tmp_path, tiny, *steps, f"train.out_dir={tmp_path / 'whole'}")
    stage.run(whole)
    other = tmp_path / "whole" / "custom_diffusion_mycanvas"
    for name in ("pytorch_custom_diffusion_weights.safetensors", "<new1>.safetensors", "<new2>.safetensors"):
        assert (run / name).read_bytes() == (other / name).read_bytes(), name
