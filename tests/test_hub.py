"""A model named by a hub id while the hub cannot be reached: through the CLI, each stage that resolves one answers
with one line naming the setting, and makes no more than one connection attempt (counted by an audit hook in the
child process, against a local port that refuses), instead of the hub client's retries."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from gen4gen.paths import STAGE_DIRS
from tests.helpers.trees import make_composition
from tests.helpers.pipeline_run import cli

# imported first by the child (PYTHONPATH): every socket.connect to the refusing port is a line in the log
HOOK = '''import os, sys
_log, _port = os.environ["GEN4GEN_CONNECT_LOG"], int(os.environ["GEN4GEN_CONNECT_PORT"])
def _count(event, args):
    if event == "socket.connect" and isinstance(args[1], tuple) and args[1][1:2] == (_port,):
        with open(_log, "a") as f:
            f.write(f"{args[1]}\\n")
sys.addaudithook(_count)
'''
POINT = "Point it at a local copy"


def refusing_port() -> int:
    """A local port nobody listens on: a connection there is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(tmp_path: Path, *overrides: str, offline: bool = False, env: dict | None = None) -> tuple[str, int]:
    """The CLI with no GPU and the hub at a refusing port (or HF_HUB_OFFLINE); its output and the connection
    attempts it made to the hub."""
    from tests.helpers.pipeline_run import ROOT

    hook_dir, log = tmp_path / "hook", tmp_path / "connects.log"
    hook_dir.mkdir(exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(HOOK)
    log.unlink(missing_ok=True)
    port = refusing_port()
    env = {"PYTHONPATH": f"{hook_dir}:{ROOT}", "GEN4GEN_CONNECT_LOG": str(log), "GEN4GEN_CONNECT_PORT": str(port),
           "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_OFFLINE": "1" if offline else "",
           "TRANSFORMERS_OFFLINE": "", "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    result = cli(tmp_path, *overrides, env=env, check=False)
    attempts = len(log.read_text().splitlines()) if log.exists() else 0
    return result.stdout + result.stderr, attempts


def error_line(out: str, setting: str) -> str:
    lines = [x for x in out.splitlines() if f"{setting}=" in x and POINT in x]
    assert len(lines) == 1, out
    return lines[0]


@pytest.fixture
def dataset(tmp_path):
    from tests.helpers.train_tiny import save_tiny_dataset

    return save_tiny_dataset(tmp_path / "outputs")


def test_train_without_a_gpu_says_the_work_and_stops_before_the_base_is_resolved(tmp_path, dataset):
    out, attempts = run(tmp_path, "stage=train", f"train.dataset={dataset}")
    assert out.splitlines()[:2] == [
        "train: no CUDA GPU here, and fine-tuning on the CPU takes hours for real models.",
        "Work: 500 steps x batch 2 x accumulation 1 at 512px (sd): roughly 100 min on this CPU vs 2 min on one GPU "
        "(estimates from typical step times, not measured here)"]
    assert attempts == 0


@pytest.mark.parametrize("offline", [False, True], ids=["refused", "HF_HUB_OFFLINE"])
def test_train_base_out_of_reach_is_one_line_at_once(tmp_path, dataset, offline):
    out, attempts = run(tmp_path, "stage=train", f"train.dataset={dataset}", "train.force_cpu=true", offline=offline)
    line = error_line(out, "train.base")
    why = "HF_HUB_OFFLINE is set" if offline else "Connection refused"
    assert line.startswith("train: train.base='stable-diffusion-v1-5/stable-diffusion-v1-5' is neither a local "
                           "folder nor in the local Hugging Face cache") and why in line
    assert "train.base=/path/to/folder" in line
    assert attempts == (0 if offline else 1)  # the probe, and no retry


def test_a_missing_local_folder_is_not_taken_for_a_hub_id(tmp_path, dataset):
    out, attempts = run(tmp_path, "stage=train", f"train.dataset={dataset}", "train.force_cpu=true",
                        f"train.base={tmp_path / 'no_model'}")
    assert f"train: cannot load train.base='{tmp_path / 'no_model'}': no such file or folder" in out.splitlines()
    assert attempts == 0


def test_s3_inpainter_model_out_of_reach_is_one_line(tmp_path):
    make_composition(tmp_path / "stages" / STAGE_DIRS["s2"], "pets", "cat+dog_000", seed=0)
    out, attempts = run(tmp_path, "stage=s3", "inpainter=sd15", "device=cpu")
    line = error_line(out, "inpainter.model")
    assert "'stable-diffusion-v1-5/stable-diffusion-inpainting'" in line
    assert attempts == 1


def test_bench_roster_models_out_of_reach_are_one_line_each_and_the_roster_goes_on(tmp_path):
    prompts = tmp_path / "drawbench.csv"
    prompts.write_text("Prompts,Category\nA red colored car.,Colors\n")
    out, attempts = run(tmp_path, "stage=bench", "roster=fewstep", "bench.force_cpu=true", "bench.use=[drawbench]",
                        f"bench.promptsets.drawbench.path={prompts}", "bench.seeds=[0]")
    flat = " ".join(out.split())  # the terminal wraps long lines
    for name in ("sd-turbo", "sdxl-turbo", "sdxs-512", "amused-512"):
        assert f"{name}: cannot load model" in flat and f"{POINT}: roster '{name}' source=/path/to/folder" in flat
    assert "roster 'yoso-pixart-512' transformer source='Luo-Yihong/yoso_pixart512' is neither" in flat
    assert attempts == 1  # one probe for the whole roster


def test_search_clip_out_of_reach_is_one_line(tmp_path):
    from PIL import Image

    for model in ("a", "b"):
        (tmp_path / "samples" / model).mkdir(parents=True)
        Image.new("RGB", (32, 32), (9, 90, 200)).save(tmp_path / "samples" / model / "0.png")
    out, attempts = run(tmp_path, "stage=search", f"search.index={tmp_path / 'samples'}",
                        "search.clip=openai/clip-vit-base-patch32", "search.query.text=a cat")
    assert "search.clip='openai/clip-vit-base-patch32' is neither" in error_line(out, "search.clip")
    assert attempts == 1


def test_route_clip_out_of_reach_is_one_line(tmp_path):
    from tests.test_route import COSTS, synthetic, write_cems

    write_cems(tmp_path / "cems", synthetic(40, 0))
    out, attempts = run(tmp_path, "stage=route", f"route.train_dir={tmp_path / 'cems'}", "route.embedding=clip",
                        "route.clip=openai/clip-vit-base-patch32", *(f"+route.costs.{m}={c}" for m, c in COSTS.items()))
    assert "route.clip='openai/clip-vit-base-patch32' is neither" in error_line(out, "route.clip")
    assert attempts == 1


def test_a_hub_id_in_the_local_cache_loads_from_it_while_the_hub_refuses(tmp_path):
    """The cache the hub client writes (models--owner--name/refs/main, snapshots/<commit>/): the search runs on the
    cached CLIP with the one probe and no retry."""
    import json

    from tests.test_search import _samples, _tiny_clip

    repo = tmp_path / "hf" / "models--someone--tiny-clip"
    commit = "0" * 40
    (repo / "snapshots").mkdir(parents=True)
    _tiny_clip(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    _samples(tmp_path / "samples", {"crimson": (220, 30, 30), "azure": (30, 30, 220)})
    out, attempts = run(tmp_path, "stage=search", f"search.index={tmp_path / 'samples'}", "device=cpu",
                        "search.clip=someone/tiny-clip", "search.query.text=red",
                        env={"HF_HUB_CACHE": str(tmp_path / "hf")})
    results = json.loads(next((tmp_path / "outputs").rglob("search_results.json")).read_text())
    assert results["results"]["text:first_moment"] and results["text_fallback"] is False, out
    assert attempts == 1
