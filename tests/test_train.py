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

from tests.bench_tiny import BPE, clip_tokenizer, save_tiny_sd, save_tiny_sdxl
from tests.conftest import make_cfg, shared
from tests.train_tiny import save_tiny_dataset

from gen4gen.errors import UserError
from gen4gen.train import checkpoints
from gen4gen.train.custom_diffusion import CustomDiffusion, cross_attention_kv
from gen4gen.train.data import load_examples
from gen4gen.train.loop import TrainSettings, train
from gen4gen.train.models import load_base


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
    return TrainSettings(**{"base": str(tiny[kind]), "resolution": 32, "max_steps": 6, "lr": 1e-2, "batch_size": 2,
                            "mixed_precision": "no", **kw})


def _train(tiny, kind: str, run_dir: Path, trainer=None, checkpoint_every: int = 1000, on_step=None, **kw):
    s = _settings(tiny, kind, **kw)
    examples, concepts, _ = load_examples(tiny["dataset"], s.data, s.caption)
    base = load_base(s.base)
    return train(s, trainer or CustomDiffusion(), base, examples, concepts, run_dir, "cpu", "hash",
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


def test_overfitting_one_fixed_batch_lowers_the_loss_clearly(tiny, tmp_path, monkeypatch):
    # one batch: every step draws the same examples, noise and timesteps
    monkeypatch.setattr("gen4gen.train.loop.stable_hash", lambda text: 1234567)
    result, *_ = _train(tiny, "sd", tmp_path, max_steps=40, lr=2e-2)
    losses = np.array(result.losses)
    assert losses[-5:].mean() < 0.92 * losses[:5].mean(), losses
    assert (np.diff(losses) < 0).mean() > 0.8  # falls step after step, not by chance


# ---------------------------------------------------------------- exact resume
def test_killed_after_a_checkpoint_resumes_to_the_same_weights(tiny, tmp_path):
    whole, *_ = _train(tiny, "sd", tmp_path / "whole", checkpoint_every=3, max_steps=8)

    def kill(step, _loss):
        if step == 5:
            raise KeyboardInterrupt  # the process dies after step 5; the checkpoint of step 3 is on disk

    with pytest.raises(KeyboardInterrupt):
        _train(tiny, "sd", tmp_path / "killed", checkpoint_every=3, max_steps=8, on_step=kill)
    assert [p.name for p in (tmp_path / "killed" / checkpoints.DIR).iterdir()] == ["step_0000003.pt"]
    resumed, *_ = _train(tiny, "sd", tmp_path / "killed", checkpoint_every=3, max_steps=8)
    assert resumed.resumed_from == 3 and resumed.steps_done == 5
    assert not _changed(whole.base.unet.state_dict(), resumed.base.unet.state_dict())
    assert not _changed(whole.base.text_encoders[0].state_dict(), resumed.base.text_encoders[0].state_dict())
    assert resumed.losses == whole.losses
    # another configuration does not resume from it
    assert checkpoints.latest(tmp_path / "killed", "other hash") is None
