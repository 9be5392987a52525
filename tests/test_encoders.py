"""The one device policy and the one L2 normalisation (gen4gen.encoders), and that every stage asks it."""
from __future__ import annotations

import numpy as np
import pytest

from gen4gen.device import resolve_device
from gen4gen.encoders import unit
from gen4gen.errors import UserError


@pytest.fixture
def no_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def two_gpus(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_auto_is_the_gpu_when_visible_else_the_cpu(no_gpu):
    assert resolve_device("auto") == "cpu" and resolve_device(None) == "cpu" and resolve_device("cpu") == "cpu"


def test_auto_and_cuda_n_with_gpus(two_gpus):
    assert resolve_device("auto") == "cuda" and resolve_device("cuda") == "cuda"
    assert resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(UserError) as e:
        resolve_device("cuda:2", "segmenter.device")
    assert str(e.value) == ("segmenter.device=cuda:2: 2 CUDA GPU(s) visible (cuda:0 ... cuda:1); use one of them, "
                            "segmenter.device=cuda or auto")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_a_gpu_asked_for_without_one_is_one_clear_line_naming_the_key(no_gpu, name):
    with pytest.raises(UserError) as e:
        resolve_device(name)
    assert str(e.value) == f"device={name}: no CUDA GPU visible; use device=cpu or auto"


def test_a_typo_is_named(no_gpu):
    with pytest.raises(UserError, match=r"^device=gpu: not a device; use auto, cpu, cuda or cuda:N$"):
        resolve_device("gpu")


def test_every_stage_that_loads_models_applies_the_policy(no_gpu, tmp_path, cfg_factory, capsys):
    """bench, search and route stop at the start with the same line; SAM names its own key."""
    from gen4gen.app import run
    from gen4gen.segment.sam import SAM
    from tests.conftest import shared

    drawbench = f"bench.promptsets.drawbench.path={shared('prompts', 'DrawBench.csv')}"
    extra = {"route": ["route.train_dir=x"], "search": [f"search.index={tmp_path}"],
             "bench": ["bench.use=[drawbench]", drawbench]}
    for stage, args in extra.items():
        capsys.readouterr()
        assert run(cfg_factory(f"stage={stage}", "device=cuda", *args)) == 2
        assert f"{stage}: device=cuda: no CUDA GPU visible; use device=cpu or auto" in capsys.readouterr().err
    ckpt = tmp_path / "sam.pth"
    ckpt.write_bytes(b"")
    try:
        SAM(checkpoint=str(ckpt), device="cuda:0")
    except UserError as e:  # without segment-anything installed the missing package is reported first
        assert "segmenter.device=cuda:0: no CUDA GPU visible" in str(e) or "segment-anything" in str(e)


def test_unit_rows_and_zero_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_array_equal(unit(x), [[0.6, 0.8], [0.0, 0.0]])
    assert unit(x).dtype == np.float64 and unit(x, np.float32).dtype == np.float32
    np.testing.assert_allclose(unit([1, 1, 1, 1]), [0.5] * 4)
