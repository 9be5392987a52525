"""stage=bench on tiny pipelines (CPU), the GEMRec importer on the shared roster, promptset loaders, and the
metrics on constructed cases with tiny CLIP / DINO / OWL-ViT built from configs."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from tests.helpers.bench_tiny import (BOS, BPE, EOS, clip_tokenizer, save_tiny_clip, save_tiny_dino, save_tiny_owlvit, save_tiny_sd,
                              save_tiny_sdxl)
from tests.conftest import make_cfg, shared

from gen4gen.bench import prompts as P
from gen4gen.bench.gemrec import import_roster, main as gemrec_main
from gen4gen.bench.metrics import (Clip, Detector, Dino, clip_t_score, cp_clip_score, mcos_scores,
                                   reference_similarity, text_windows)
from gen4gen.bench.report import pareto_front, weighted_ranking
from gen4gen.bench.roster import load_roster
from gen4gen.artefacts import read_records
from gen4gen.errors import UserError
from gen4gen.settings import BenchSettings, section
from gen4gen.stages.bench import generate


# ---------------------------------------------------------------- tiny models, built once for the module
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import torch

    bpe = shared(BPE)
    # one intra-op thread: these models are tiny, and on a busy 2-core box (pytest -n 2) OpenMP threads
    # fighting over cores made each call ~20x slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tiny")
    tok = clip_tokenizer(str(bpe), str(root))
    yield {"sd": save_tiny_sd(root / "sd", tok), "sdxl": save_tiny_sdxl(root / "sdxl", tok),
            "clip": save_tiny_clip(root / "clip", tok), "dino": save_tiny_dino(root / "dino"),
            "owl": save_tiny_owlvit(root / "owl", tok)}
    torch.set_num_threads(threads)


def _dataset(root: Path) -> Path:
    """A one-scene exported MyCanvas dataset (the export contract) with reference photos."""
    rng = np.random.default_rng(0)
    ds = root / "datasets" / "demo"
    if (ds / "mycanvas" / "index.jsonl").is_file():
        return ds  # as exported before: a rewritten reference would (rightly) invalidate cached metrics
    for c in ("cat", "dog"):
        (ds / "refs").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(ds / "refs" / f"{c}_0.png")
    (ds / "mycanvas" / "images").mkdir(parents=True, exist_ok=True)
    scene = np.full((48, 64, 3), 128, np.uint8)  # the final image with its instance masks: the counterfactual check
    instances = []
    for k, (c, colour) in enumerate((("cat", (200, 60, 40)), ("dog", (40, 60, 200)))):
        x = 6 + 30 * k
        scene[12:40, x:x + 24] = colour
        mask = np.zeros((48, 64), np.uint8)
        mask[12:40, x:x + 24] = 255
        Image.fromarray(mask).save(ds / "mycanvas" / "images" / f"{c}_0.png")
        instances.append({"name": f"{c}_0", "concept": c, "bbox": [x, 12, 24, 28], "mask": f"images/{c}_0.png"})
    Image.fromarray(scene).save(ds / "mycanvas" / "images" / "x.png")
    row = {"id": "pets/cat+dog_000/v0_procedural", "image": "images/x.png", "scene": "pets", "concepts": ["cat", "dog"],
           "instances": instances,
           "captions": {"short": "a cat and a dog", "detailed": "a cat on the left and a dog on the right in the garden",
                        "personalized": "<new1> cat on the left and <new2> dog on the right in the garden"},
           "modifier_tokens": {"cat": "<new1>", "dog": "<new2>"},
           "reference_images": {"cat": ["refs/cat_0.png"], "dog": ["refs/dog_0.png"]}}
    (ds / "mycanvas" / "index.jsonl").write_text(json.dumps(row) + "\n", "utf-8")
    return ds


def _bench_cfg(tmp_path: Path, tiny: dict, *overrides: str):
    ds = _dataset(tmp_path)
    cfg = make_cfg(tmp_path, "stage=bench", "bench.force_cpu=true", "bench.batch_size=2", "bench.seeds=[0,1]",
                   "bench.use=[mycanvas,drawbench]", f"bench.promptsets.mycanvas.path={ds}",
                   "bench.promptsets.mycanvas.novel_backgrounds=[on the surface of the moon]",
                   f"bench.promptsets.drawbench.path={shared('prompts', 'DrawBench.csv')}",
                   "bench.promptsets.drawbench.limit=1", f"bench.metrics.backbones.clip={tiny['clip']}",
                   f"bench.metrics.backbones.dino={tiny['dino']}", f"bench.metrics.backbones.detector={tiny['owl']}",
                   "bench.metrics.detector_threshold=0.0", *overrides)
    OmegaConf.set_struct(cfg, False)
    cfg.roster = OmegaConf.create({"name": "tiny", "models": [
        {"name": "tiny-sd", "source": str(tiny["sd"]), "steps": 2, "guidance": 2.0, "resolution": 32,
         "popularity": 10},
        {"name": "tiny-sdxl", "source": str(tiny["sdxl"]), "steps": 2, "guidance": 0.0, "resolution": 32,
         "scheduler": {"class": "EulerDiscreteScheduler", "timestep_spacing": "trailing"}, "popularity": 1000,
         "cost": {"kind": "gpu_second", "per_gpu_second": 0.001}},
    ]})
    return cfg


def _settings(cfg) -> BenchSettings:
    return section(cfg, "bench", BenchSettings)


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- the stage end to end
def test_bench_run_two_pipelines_resume_and_reports(tmp_path, tiny):
    from gen4gen.stages.bench import run

    cfg = _bench_cfg(tmp_path, tiny)
    summary = run(cfg)
    run_dir = tmp_path / "outputs" / "bench" / "tiny"
    # 2 models x 6 prompts (scene caption, novel-background prompt, k=1: cat, dog, k=2: cat+dog, 1 DrawBench) x 2 seeds
    assert (summary.total, summary.done, summary.skipped, summary.failed) == (24, 24, 0, 0)
    pngs = sorted((run_dir / "images").rglob("*.png"))
    assert len(pngs) == 24 and all(Image.open(p).size == (32, 32) for p in pngs)

    results = _csv(run_dir / "results.csv")
    assert len(results) == 24 and {r["model"] for r in results} == {"tiny-sd", "tiny-sdxl"}
    assert {(r["model"], r["source"]) for r in results} == {("tiny-sd", str(tiny["sd"])), ("tiny-sdxl", str(tiny["sdxl"]))}
    assert all(len(r["model_fingerprint"]) == 16 for r in results)
    pipes = {r["model"]: r["pipeline"] for r in results}
    assert pipes == {"tiny-sd": "StableDiffusionPipeline", "tiny-sdxl": "StableDiffusionXLPipeline"}
    for r in results:
        lat, mem, cost = float(r["latency_s"]), float(r["peak_memory_gb"]), float(r["cost_usd"])
        assert lat > 0 and mem > 0
        expected = lat * max(1, math.ceil(mem)) * 0.0000166667 if r["model"] == "tiny-sd" else lat * 0.001
        assert cost == pytest.approx(expected, rel=1e-4)
    # the same seed gives the same noise whatever the prompt; two seeds differ
    sd = sorted((run_dir / "images" / "tiny-sd" / "mycanvas").glob("pets*.png"))
    a, b = (np.asarray(Image.open(p), dtype=np.int16) for p in sd)
    assert np.abs(a - b).mean() > 1

    metrics = _csv(run_dir / "metrics.csv")
    assert len(metrics) == 24
    for m in metrics:
        assert 0 <= float(m["clip_t"]) <= 100 and m["mcos"] != ""
        scene_prompt = m["set"] == "mycanvas"
        assert (m["clip_i"] != "") == scene_prompt and (m["dino"] != "") == scene_prompt
        assert (m["cp_clip"] != "") == scene_prompt and (m["identity_mix"] != "") == scene_prompt
        assert (m["ti_clip"] != "") == (m["novel_background"] == "True")
        assert m["k"] == ("" if not scene_prompt else "1" if m["category"] == "k=1" else "2")
    assert sum(m["ti_clip"] != "" for m in metrics) == 4  # the novel-background prompt x 2 models x 2 seeds
    assert sorted({m["prompt_id"] for m in metrics if m["category"].startswith("k=")}) == [
        "k1__cat", "k1__dog", "k2__cat+dog"]

    _assert_provenance_everywhere(run_dir, tiny)

    report = run_dir / "report"
    board = _csv(report / "leaderboard.csv")
    for r in board:
        assert float(r["clip_t_lo"]) <= float(r["clip_t"]) <= float(r["clip_t_hi"]) and r["rank"] in ("1", "2", "1=")
    assert [r["model"] for r in board] == sorted((r["model"] for r in board),
                                                 key=lambda n: -float(next(b["clip_t"] for b in board if b["model"] == n)))
    assert {r["model"] for r in board} == {"tiny-sd", "tiny-sdxl"} and all(r["n"] == "12" for r in board)
    cats = _csv(report / "leaderboard_by_category.csv")
    assert {(r["set"], r["category"]) for r in cats} >= {("mycanvas", "pets"), ("mycanvas", "novel background")}
    assert (report / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (report / "leaderboard.md").read_text()
    assert "## Weighted ranking (GEMRec)" in page and "## Metrics that must notice (counterfactuals)" in page
    assert "## Difficulty by number of concepts (k)" in page and (report / "by_k.png").read_bytes()[:4] == b"\x89PNG"
    assert summary.notes["counterfactual"].startswith("1 image(s); ")
    ranking = _csv(report / "ranking.csv")
    assert len(ranking) == 12 and sorted(r["rank"] for r in ranking) == ["1"] * 6 + ["2"] * 6
    gallery = (report / "gallery.html").read_text()
    assert gallery.count("<img ") == 24
    # src are URLs (quoted): the files they name exist
    assert all((report / unquote(src)).resolve().is_file() for src in
               __import__("re").findall(r'src="([^"]+)"', gallery))

    # rerun: every image is skipped and nothing is rewritten; the metrics come from their cache, unchanged
    before = {p: p.stat().st_mtime_ns for p in pngs}
    import gen4gen.bench.metrics as M

    monkey = pytest.MonkeyPatch()
    monkey.setattr(M, "Clip", None)  # loading a backbone now would fail: every score must come from the cache
    try:
        again = run(_bench_cfg(tmp_path, tiny))
    finally:
        monkey.undo()
    assert (again.done, again.skipped) == (0, 24)
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    assert _csv(run_dir / "metrics.csv") == metrics

    # a lost record redoes that image alone, in a batch of 1, with the same per-(prompt, seed) noise
    victim = sd[0]
    old = np.asarray(Image.open(victim), dtype=np.int16)
    victim.with_suffix(".json").unlink()
    redo = run(_bench_cfg(tmp_path, tiny, "bench.batch_size=1", "bench.steps=[generate]"))
    assert (redo.done, redo.skipped) == (1, 23)
    assert np.abs(np.asarray(Image.open(victim), dtype=np.int16) - old).max() <= 2


def _assert_provenance_everywhere(run_dir: Path, tiny: dict) -> None:
    """Every output file names where its numbers come from: results the model's source and fingerprint, metrics
    and every report table each metric's backbone (source and weights' sha256), the page says in words that
    these tiny backbones are not standard."""
    import hashlib

    sha = {k: hashlib.sha256((tiny[k] / "model.safetensors").read_bytes()).hexdigest() for k in ("clip", "dino", "owl")}
    tag = {"clip": f"clip={tiny['clip']}@sha256:{sha['clip'][:12]}", "dino": f"dino={tiny['dino']}@sha256:{sha['dino'][:12]}",
           "detector": f"detector={tiny['owl']}@sha256:{sha['owl'][:12]}",
           "identity": f"identity={tiny['clip']}@sha256:{sha['clip'][:12]}"}
    want = {"clip_t": tag["clip"], "clip_i": tag["clip"], "dino": tag["dino"], "cp_clip": f"{tag['detector']} + {tag['clip']}",
            "identity_mix": f"{tag['detector']} + {tag['identity']}", "ti_clip": tag["clip"], "mcos": tag["clip"]}
    described = json.loads((run_dir / "backbones.json").read_text())
    assert described["dino"][0]["sha256"] == sha["dino"] and described["clip_t"][0]["standard"] is False
    for r in [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()] + _csv(run_dir / "results.csv"):
        assert r["source"] and r["model_fingerprint"]
    for r in [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]:
        have = {m for m in want if r.get(m) is not None}
        assert r["backbones"] == {m: want[m] for m in want if m in have}
    for r in _csv(run_dir / "metrics.csv"):
        cells = dict(x.split(": ", 1) for x in r["backbones"].split("; "))
        assert cells == {m: want[m] for m in want if r[m] != ""}
    checked = _csv(run_dir / "report" / "counterfactual.csv")  # one image, two concepts: no substitute
    assert [(r["metric"], r["kind"], r["cases"]) for r in checked] == [
        (m, k, "1" if k == "swap" else "2") for m in ("identity_mix", "cp_clip", "clip_i") for k in ("swap", "drop", "duplicate")]
    assert {r["backbone"] for r in checked} == {tag["identity"]}
    tables = sorted(t for t in (run_dir / "report").glob("*.csv") if t.name != "counterfactual.csv")
    assert {t.name for t in tables} >= {"leaderboard.csv", "leaderboard_by_category.csv", "ranking.csv",
                                        "ranking_summary.csv", "by_k.csv"}
    for table in tables:
        rows = _csv(table)
        assert rows and all(all(f"{m}: {t}" in r["backbones"] for m, t in want.items()) for r in rows), table.name
    assert Image.open(run_dir / "report" / "pareto.png").info["Description"] == f"backbones: {want['clip_t']}"
    assert f"identity_mix: {want['identity_mix']}" in Image.open(run_dir / "report" / "by_k.png").info["Description"]
    page = (run_dir / "report" / "leaderboard.md").read_text().splitlines()
    assert page[2].startswith(f"**These scores come from non-standard backbones: clip={tiny['clip']} (a local folder")
    assert "a tiny test model, most likely random weights" in page[2]
    assert f"| clip_t | clip | {tiny['clip']} | {sha['clip'][:16]} |" in "\n".join(page)


def test_roster_components_scheduler_and_lora_load_and_each_model_is_freed(tmp_path, tiny, monkeypatch):
    """A replaced component from a bare state dict (SDXL-Lightning's way), a scheduler swap with overrides,
    a LoRA through load_lora_weights; and the previous pipeline is gone before the next one loads."""
    import gc
    import weakref

    from safetensors.torch import save_file

    from gen4gen.bench import generate as G
    from gen4gen.bench.roster import Roster
    from tests.helpers.bench_tiny import save_tiny_lora

    sd = tiny["sd"]
    from diffusers import UNet2DConditionModel

    save_file(UNet2DConditionModel.from_pretrained(sd, subfolder="unet").state_dict(), str(tmp_path / "unet.safetensors"))
    lora = save_tiny_lora(sd, tmp_path / "lora")
    common = {"source": str(sd), "steps": 2, "guidance": 0.0, "resolution": 32}
    roster = Roster.model_validate({"models": [
        {"name": "plain", **common},
        {"name": "swapped-unet", **common, "components": {"unet": {
            "class": "UNet2DConditionModel", "source": str(sd), "subfolder": "unet",
            "weights": str(tmp_path / "unet.safetensors")}}},
        {"name": "lcm", **common, "scheduler": {"class": "LCMScheduler", "timestep_spacing": "trailing"}},
        {"name": "lora", **common, "loras": [{"source": str(lora), "weight_name": "pytorch_lora_weights.safetensors"}]},
    ]})
    cfg = _bench_cfg(tmp_path, tiny, "bench.use=[drawbench]", "bench.seeds=[3]", "bench.warmup=false")
    prompts, _ = P.load_promptsets(OmegaConf.to_container(cfg.bench.promptsets), ["drawbench"])
    run_dir = tmp_path / "run"
    plan = G.plan_jobs(roster.models, prompts, run_dir, _settings(cfg))

    alive_at_load = []
    refs: list = []
    real_load = G.load_pipeline

    def tracking_load(entry, device, safety_checker=False):
        gc.collect()
        alive_at_load.append(sum(r() is not None for r in refs))
        pipe = real_load(entry, device, safety_checker)
        refs.append(weakref.ref(pipe))
        if entry.name == "lcm":
            assert type(pipe.scheduler).__name__ == "LCMScheduler"
            assert pipe.scheduler.config.timestep_spacing == "trailing"
        return pipe

    monkeypatch.setattr(G, "load_pipeline", tracking_load)
    result = generate(plan, run_dir, "cpu", cfg)
    assert (result.done, result.failures) == (4, [])
    assert alive_at_load == [0, 0, 0, 0]  # each model freed before the next one loads
    img = {m.name: np.asarray(Image.open(plan[m.name][0].image), dtype=np.int16) for m in roster.models}
    assert np.abs(img["swapped-unet"] - img["plain"]).max() <= 1  # same weights, same seed
    assert np.abs(img["lora"] - img["plain"]).mean() > 1  # the LoRA changes the UNet
    assert not np.array_equal(img["lcm"], img["plain"])  # another sampler (random UNet: a small change)


def test_a_model_that_cannot_load_fails_its_images_not_the_run(tmp_path, tiny):
    from gen4gen.bench import generate as G
    from gen4gen.bench.roster import Roster

    roster = Roster.model_validate({"models": [
        {"name": "missing", "source": str(tmp_path / "nope"), "pipeline": "sd", "steps": 1, "resolution": 32},
        {"name": "ok", "source": str(tiny["sd"]), "steps": 1, "guidance": 0.0, "resolution": 32}]})
    cfg = _bench_cfg(tmp_path, tiny, "bench.use=[drawbench]", "bench.seeds=[0]", "bench.warmup=false")
    prompts, _ = P.load_promptsets(OmegaConf.to_container(cfg.bench.promptsets), ["drawbench"])
    result = generate(G.plan_jobs(roster.models, prompts, tmp_path / "run", _settings(cfg)), tmp_path / "run", "cpu",
                      cfg)
    assert result.done == 1 and len(result.failures) == 1
    assert result.failures[0]["id"].startswith("missing/") and "cannot load model" in result.failures[0]["reason"]


def test_bench_without_gpu_prints_an_estimate_and_stops(tmp_path, tiny, monkeypatch):
    import torch

    from gen4gen.stages.bench import run

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = _bench_cfg(tmp_path, tiny, "bench.force_cpu=false")
    with pytest.raises(UserError) as e:
        run(cfg)
    msg = str(e.value)
    assert "no CUDA GPU" in msg and "12 images" in msg and "bench.force_cpu=true" in msg
    assert not (tmp_path / "outputs" / "bench" / "tiny" / "images").exists()


def test_sharded_generation_then_one_scoring_pass(tmp_path, tiny):
    """Each shard generates its own models (one GPU each through a launcher) and leaves scoring alone;
    ``bench.steps=[metrics,report]`` then scores every shard's images together (MCOS compares models)."""
    from gen4gen.stages.bench import run

    shard_args = ("bench.use=[drawbench]", "bench.seeds=[0]", "bench.metrics.compute=[clip_t,mcos]")
    done = []
    for k in range(2):
        s = run(_bench_cfg(tmp_path, tiny, *shard_args, "shard.count=2", f"shard.index={k}"))
        done.append(s.done)
        assert "metrics" in s.notes and s.failed == 0
    assert sorted(done) == [0, 2] or sorted(done) == [1, 1]  # 2 models x 1 prompt x 1 seed split by model
    run_dir = tmp_path / "outputs" / "bench" / "tiny"
    assert not (run_dir / "metrics.csv").exists()
    assert (run_dir / "failures.shard-0-of-2.jsonl").exists()
    s = run(_bench_cfg(tmp_path, tiny, *shard_args, "bench.steps=[metrics,report]"))
    rows = _csv(run_dir / "metrics.csv")
    assert s.done == 2 and {r["model"] for r in rows} == {"tiny-sd", "tiny-sdxl"}
    assert all(r["mcos"] != "" and r["clip_i"] == "" for r in rows)
    assert rows[0]["mcos"] == rows[1]["mcos"]  # cos(a, b) both ways
    assert (run_dir / "report" / "leaderboard.md").is_file()


def test_call_settings_and_pipeline_detection(tmp_path):
    """The model's steps/CFG win (a 1-step model at CFG 7 breaks); a model without a CFG takes the prompt's
    (GEMRec); negative prompts only act with CFG; single checkpoints are told apart by their keys."""
    import torch
    from safetensors.torch import save_file

    from gen4gen.bench.generate import call_settings, seeds_for
    from gen4gen.bench.roster import Roster, detect_pipeline

    turbo, civitai = Roster.model_validate({"models": [
        {"name": "turbo", "source": "stabilityai/sd-turbo", "steps": 1, "guidance": 0.0, "resolution": 512},
        {"name": "civitai", "source": str(tmp_path / "97137.safetensors"), "steps": 25, "resolution": 512}]}).models
    gem = P.Prompt("gemrec", "006", "A cartoon tiger face", seed=2906332466, size=(512, 768), negative="blurry",
                   guidance=7.0)
    assert call_settings(turbo, gem, False) == {"width": 512, "height": 512, "steps": 1, "guidance": 0.0,
                                                "negative": None}
    assert call_settings(civitai, gem, True) == {"width": 512, "height": 768, "steps": 25, "guidance": 7.0,
                                                 "negative": "blurry"}
    assert call_settings(civitai, P.Prompt("d", "1", "x"), False)["guidance"] == 7.5
    assert seeds_for(gem, [0, 1], True) == [2906332466] and seeds_for(gem, [0, 1], False) == [0, 1]

    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, str(tmp_path / "97137.safetensors"))
    assert detect_pipeline(civitai) == "StableDiffusionPipeline"
    save_file({"conditioner.embedders.1.model.ln_final.weight": torch.zeros(1)}, str(tmp_path / "97137.safetensors"))
    assert detect_pipeline(civitai) == "StableDiffusionXLPipeline"
    assert detect_pipeline(turbo) == "DiffusionPipeline"  # a hub id: from_pretrained reads model_index.json
    assert detect_pipeline(turbo.model_copy(update={"pipeline": "sdxl"})) == "StableDiffusionXLPipeline"


def test_shards_split_the_roster_by_model(tmp_path):
    from gen4gen.bench.generate import shard_models
    from gen4gen.bench.roster import Roster

    roster = Roster.model_validate({"models": [{"name": f"m{i}", "source": "x"} for i in range(9)]})
    parts = [shard_models(roster.models, i, 3) for i in range(3)]
    names = [m.name for part in parts for m in part]
    assert sorted(names) == sorted(m.name for m in roster.models) and len(set(names)) == 9


def test_roster_presets_validate_and_errors_name_the_entry(tmp_path):
    fewstep = load_roster(make_cfg(tmp_path, "roster=fewstep").roster)
    assert [m.name for m in fewstep.models] == ["sd-turbo", "sdxl-turbo", "sdxs-512", "sdxl-lightning-4step",
                                                "lcm-lora-sdxl", "amused-512", "yoso-pixart-512"]
    by = {m.name: m for m in fewstep.models}
    assert (by["sd-turbo"].steps, by["sd-turbo"].guidance) == (1, 0.0)
    assert by["sdxl-lightning-4step"].scheduler.overrides() == {"timestep_spacing": "trailing"}
    assert by["lcm-lora-sdxl"].scheduler.cls == "LCMScheduler" and by["lcm-lora-sdxl"].loras[0].source
    base = load_roster(make_cfg(tmp_path, "roster=base").roster)
    assert [m.resolution for m in base.models] == [[512, 512], [768, 768], [1024, 1024]]
    with pytest.raises(UserError, match=r"model 'bad'.*steps"):
        load_roster({"models": [{"name": "bad", "source": "x", "steps": 0}]})


# ---------------------------------------------------------------- GEMRec importer and promptsets
def test_gemrec_importer_reads_the_shared_roster(tmp_path):
    csv_path = shared("gemrec", "roster.csv")
    models = tmp_path / "civitai"
    models.mkdir()
    (models / "97137.safetensors").write_bytes(b"")  # Arabic Abaya v1.0, SD 1.5
    (models / "94589_hanfu_v1.safetensors").write_bytes(b"")  # 汉服 v1.0
    roster, missing = import_roster(csv_path, models)
    by_id = {m["name"].rsplit("-", 1)[-1]: m for m in roster["models"]}
    assert len(roster["models"]) == 5 and len(missing) == 195  # 3 hub base models + 2 local files
    assert by_id["1000005"]["source"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"  # moved on the hub
    assert by_id["1000004"]["source"] == "CompVis/stable-diffusion-v1-4"
    assert missing[0].split("\t")[:2] == ["https://civitai.com/api/download/models/96988", str(models / "96988.safetensors")]
    assert by_id["97137"]["source"] == str(models / "97137.safetensors")
    assert by_id["97137"]["single_file_config"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert by_id["97137"]["popularity"] == 137 and by_id["97137"]["pipeline"] == "sd"
    assert by_id["94589"]["name"] == "civitai-94589" and by_id["94589"]["trained_words"] == ["hanfu"]
    assert by_id["2000001"]["resolution"] == 512 and by_id["2000001"]["base_model"] == "SD 2.1"

    out = tmp_path / "gemrec.yaml"
    assert gemrec_main([str(csv_path), "--models-dir", str(models), "--out", str(out), "--keep-missing"]) == 0
    full = load_roster(OmegaConf.load(out))
    assert len((tmp_path / "gemrec.missing.tsv").read_text().splitlines()) == 1 + 195
    assert len(full.models) == 200 and len({m.name for m in full.models}) == 200
    sd21_768 = [m for m in full.models if m.base_model == "SD 2.1 768"]
    assert len(sd21_768) == 25 and all(m.resolution == [768, 768] for m in sd21_768)


def test_a_promptset_row_that_breaks_its_schema_is_left_out_with_a_line(tmp_path, caplog):
    """Rows from a promptset file are data: a bad seed, size, guidance or id, a short or long row, is one line
    naming file, line and field, and the other rows run; an unreadable file is one UserError."""
    gem = tmp_path / "gem.csv"
    gem.write_text("prompt_id,tag,size,seed,prompt,negativePrompt,sampler,cfgScale\n"
                   "1,a,512x768,7,a red cube,,Euler a,7\n"
                   "2,a,99999x512,7,too wide,,Euler a,7\n"
                   "3,a,512x768,abc,bad seed,,Euler a,7\n"
                   "4,a,512x768,7,nan guidance,,Euler a,nan\n"
                   "x,a,512x768,7,bad id,,Euler a,7\n"
                   "6,a,512x768\n"
                   "7,a,512x768,7.0,a blue ball,ugly,Euler a,7.5,extra,cells\n", "utf-8")
    ddb = tmp_path / "ddb.csv"
    ddb.write_text("image_name,prompt,seed,cfg,width,height\n"
                   "a.png,one,1,-8.8,512,512\na.png,again,2,7,512,512\nb.png,two,3,inf,512,512\n", "utf-8")
    sets = {"gem": {"kind": "gemrec", "path": str(gem)}, "ddb": {"kind": "diffusiondb", "path": str(ddb)}}
    with caplog.at_level("WARNING", logger="gen4gen.bench.prompts"):
        prompts, notes = P.load_promptsets(sets, ["gem", "ddb"])
    assert [(p.key, p.seed, p.size, p.guidance, p.negative) for p in prompts] == [
        ("gem/001", 7, (512, 768), 7.0, None), ("gem/007", 7, (512, 768), 7.5, "ugly"),
        ("ddb/a", 1, (512, 512), -8.8, None)]
    said = [r.getMessage().removeprefix("promptset ").split(": row left out: ") for r in caplog.records]
    assert [(s, w.split(": ")[:2]) for s, w in said] == [
        ("gem", ["gem.csv:3", "size.0"]), ("gem", ["gem.csv:4", "seed"]), ("gem", ["gem.csv:5", "cfgScale"]),
        ("gem", ["gem.csv:6", "prompt_id"]), ("gem", ["gem.csv:7", "prompt"]), ("ddb", ["ddb.csv:4", "cfg"])]
    assert said[0][1].endswith("less than or equal to 4096, got 99999") and said[4][1].endswith("prompt: missing")
    assert notes["promptset gem"] == "5 row(s) left out (the first 5 above); 2 prompt(s) kept"
    assert notes["promptset ddb"] == "1 row(s) left out (the first 1 above); 1 prompt(s) kept"
    assert notes["promptset ddb ids"] == "1 prompt(s) with a repeated id left out"

    gem.write_bytes(b"prompt_id,tag,size,seed,prompt\n1,a,512x512,1,caf\xe9\n")  # Latin-1, not UTF-8
    with pytest.raises(UserError, match=r"gem.csv: not a readable CSV promptset \('utf-8' codec"):
        P.load_promptsets(sets, ["gem"])


def test_promptset_loaders_on_the_shared_files(tmp_path):
    parti = P.load_parti("parti", shared("prompts", "PartiPrompts.tsv"))
    draw = P.load_drawbench("drawbench", shared("prompts", "DrawBench.csv"))
    gem = P.load_gemrec("gemrec", shared("gemrec", "promptset_v6.csv"))
    ddb = P.load_diffusiondb("ddb", shared("prompts", "DiffusionDB_sample_seed42.csv"))
    assert (len(parti), len(draw), len(gem), len(ddb)) == (1632, 200, 90, 8168)
    assert parti[0].text == "bond" and parti[0].category == "Abstract"
    g1 = gem[0]
    assert (g1.id, g1.seed, g1.size, g1.negative, g1.guidance, g1.category) == ("001", 8486466558, (768, 512), None,
                                                                              7.0, "abstract")
    assert gem[5].negative.startswith("disfigured")
    assert ddb[0].seed == 1339076333 and ddb[0].size == (1024, 512) and ddb[0].guidance == 12.0
    sub = P.limit_prompts(parti, 50)
    assert len(sub) == 50 and [p.key for p in sub] == [p.key for p in P.limit_prompts(parti, 50)]
    assert len({p.category for p in sub}) > 3  # not just the first rows' category

    ds = _dataset(tmp_path)
    rows = P.load_dataset("mc", ds, caption="personalized",
                          novel_backgrounds=["in the garden", "on the surface of the moon"])
    assert [p.novel_background for p in rows] == [False, True]  # "in the garden" is in the captions: not novel
    scene, novel = rows
    assert scene.text.startswith("<new1> cat") and scene.scored_text.startswith("a cat on the left")
    assert novel.text == "<new1> cat and <new2> dog on the surface of the moon"
    assert novel.scored_text == "a cat and a dog on the surface of the moon"
    from gen4gen.bench.metrics import Detector

    assert Detector.query("owl") == "a photo of an owl" and Detector.query("teddy_bear") == "a photo of a teddy bear"
    assert scene.references["dog"] == [str(ds / "refs" / "dog_0.png")]
    with pytest.raises(UserError, match="missing column"):
        P.load_drawbench("x", shared("prompts", "PartiPrompts.tsv"))


# ---------------------------------------------------------------- metrics on constructed cases
def test_clip_i_and_dino_of_an_image_equal_to_its_reference_is_one(tiny):
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    other = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    for model in (Clip(str(tiny["clip"])), Dino(str(tiny["dino"]))):
        e = model.encode_images([img, img.copy(), other], np.float64)
        assert reference_similarity(e[0], e[1:2]) == pytest.approx(1.0, abs=1e-6)
        assert reference_similarity(e[0], e[1:3]) == pytest.approx((1.0 + float(e[0] @ e[2])) / 2, abs=1e-6)
    assert math.isnan(reference_similarity(e[0], np.zeros((0, 4))))


def test_cp_clip_scores_an_undetected_concept_zero(tiny):
    rng = np.random.default_rng(2)
    img = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    clip = Clip(str(tiny["clip"]))
    refs = {"cat": clip.encode_images([img]), "dog": clip.encode_images([img.transpose(Image.FLIP_LEFT_RIGHT)])}

    # nothing clears a threshold above every possible score: each concept is missing -> 0
    none = Detector(str(tiny["owl"]), threshold=1.01).best_boxes([img, img], [["cat", "dog"], ["cat"]])
    assert none == [{"cat": None, "dog": None}, {"cat": None}]
    assert cp_clip_score({c: None for c in none[0]}, refs) == 0.0

    # threshold 0: every concept gets its best box; the score is the crops' similarity to their references
    found = Detector(str(tiny["owl"]), threshold=0.0).best_boxes([img, img], [["cat", "dog"], ["cat"]])
    assert set(found[1]) == {"cat"}  # the padding query of the shorter list is ignored
    boxes = found[0]
    assert all(b is not None and 0 <= b[0] < b[2] <= 64 and 0 <= b[1] < b[3] <= 48 for b in boxes.values())
    crops = {c: clip.encode_images([img.crop(b)])[0] for c, b in boxes.items()}
    hand = np.mean([float(crops[c] @ refs[c][0]) for c in ("cat", "dog")])
    assert cp_clip_score(crops, refs) == pytest.approx(hand, abs=1e-6)
    half = cp_clip_score({"cat": crops["cat"], "dog": None}, refs)
    assert half == pytest.approx(float(crops["cat"] @ refs["cat"][0]) / 2, abs=1e-6)


def test_mcos_matches_a_hand_computation():
    e = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 2], [1, 0, 1]], dtype=float)
    models = ["a", "b", "c", "a", "b"]
    prompts = ["p", "p", "p", "q", "q"]
    u = e / np.linalg.norm(e, axis=1, keepdims=True)
    got = mcos_scores(e, models, prompts)
    assert got[0] == pytest.approx((u[0] @ u[1] + u[0] @ u[2]) / 2)  # (0 + 0.7071) / 2
    assert got[2] == pytest.approx((u[2] @ u[0] + u[2] @ u[1]) / 2)
    assert got[3] == pytest.approx(u[3] @ u[4]) and got[4] == pytest.approx(u[4] @ u[3])
    lonely = mcos_scores(e[:2], ["a", "a"], ["p", "p"])
    assert np.isnan(lonely).all()  # no other model for that prompt


def test_clip_t_long_prompts_average_their_77_token_windows(tiny):
    import torch

    clip = Clip(str(tiny["clip"]))
    short = "a cat and a dog in the garden"
    # the usual transformers path for a short prompt gives the same embedding
    ref = clip.processor(text=[short], return_tensors="pt", padding="max_length", max_length=77)
    with torch.inference_mode():
        f = clip.model.get_text_features(input_ids=ref.input_ids, attention_mask=ref.attention_mask).pooler_output
    f = (f / f.norm(dim=-1, keepdim=True))[0].numpy()
    (emb,), (n,) = clip.encode_long_texts([short])
    assert n == 1 and np.allclose(emb, f, atol=1e-5)

    long = " ".join(["a small red cat sitting on a blue sofa next to a green plant"] * 12)
    ids = clip.tokenizer(long, add_special_tokens=False).input_ids
    assert len(ids) > 150
    (emb_long,), (windows,) = clip.encode_long_texts([long])
    parts = text_windows(ids, 77)
    assert windows == len(parts) == math.ceil(len(ids) / 75)
    per = []
    for w in parts:
        x = torch.tensor([[BOS, *w, EOS] + [EOS] * (75 - len(w))])
        m = torch.tensor([[1] * (len(w) + 2) + [0] * (75 - len(w))])
        with torch.inference_mode():
            v = clip.model.get_text_features(input_ids=x, attention_mask=m).pooler_output[0].numpy()
        per.append(v / np.linalg.norm(v) * len(w))
    hand = np.sum(per, axis=0)
    assert np.allclose(emb_long, hand / np.linalg.norm(hand), atol=1e-5)
    assert clip_t_score(np.array([1.0, 0]), np.array([1.0, 1.0])) == pytest.approx(100 / math.sqrt(2))
    assert clip_t_score(np.array([1.0, 0]), np.array([-1.0, 0])) == 0.0


def test_pareto_front_and_weighted_ranking_by_hand():
    pts = [("cheap", 1.0, 30.0), ("dear", 5.0, 35.0), ("dominated", 6.0, 33.0), ("tie", 1.0, 29.0)]
    assert pareto_front(pts) == ["cheap", "dear"]
    rows = [{"prompt_key": "s/1", "model": "a", "clip_t": 30.0, "mcos": 0.9},
            {"prompt_key": "s/1", "model": "b", "clip_t": 20.0, "mcos": 0.5},
            {"prompt_key": "s/1", "model": "c", "clip_t": 25.0, "mcos": 0.7}]
    rank = weighted_ranking(rows, {"a": 10, "b": 1000, "c": None}, {"clip": 1.0, "distinctiveness": 0.8,
                                                                       "popularity": 0.2})
    scores = {r["model"]: r["score"] for r in rank}
    # a: clip 1, dist 0, pop 0 ; b: clip 0, dist 1, pop 1 ; c: clip 0.5, dist 0.5, pop (unknown) 0
    assert scores == pytest.approx({"a": 1.0, "b": 1.0, "c": 0.9})
    assert [r["model"] for r in rank] == ["a", "b", "c"] and [r["rank"] for r in rank] == [1, 2, 3]


def test_a_failing_batch_fails_its_images_through_the_runner_and_a_rerun_redoes_only_them(tmp_path, tiny, monkeypatch):
    """Bench generation is a runner stage: an exception from one pipeline call (out of GPU memory) fails that
    batch's images with one reason in the shard's failures.jsonl, the others are done with the runner's marker
    (their .json record), and a rerun redoes just the failed batch."""
    from gen4gen.bench import generate as G
    from gen4gen.bench.roster import Roster
    from gen4gen.markers import read_failures

    roster = Roster.model_validate({"models": [
        {"name": "ok", "source": str(tiny["sd"]), "steps": 1, "guidance": 0.0, "resolution": 32}]})
    cfg = _bench_cfg(tmp_path, tiny, "bench.use=[drawbench]", "bench.seeds=[0,1,2]", "bench.warmup=false")
    prompts, _ = P.load_promptsets(OmegaConf.to_container(cfg.bench.promptsets), ["drawbench"])
    run_dir = tmp_path / "run"
    plan = G.plan_jobs(roster.models, prompts, run_dir, _settings(cfg))
    real = G._call

    def oom_on_seed_0(pipe, group, takes, steps=None):
        if any(j.seed == 0 for j in group):
            raise RuntimeError("CUDA out of memory")
        return real(pipe, group, takes, steps)

    monkeypatch.setattr(G, "_call", oom_on_seed_0)
    result = generate(plan, run_dir, "cpu", cfg)
    assert result.done == 1 and [f["reason"] for f in result.failures] == [
        "batch of 2 failed: RuntimeError: CUDA out of memory"] * 2
    assert [f["id"] for f in read_failures(run_dir)] == [j.id for j in plan["ok"][:2]]
    done = plan["ok"][2]
    record = json.loads(done.record.read_text())
    assert record["id"] == done.id and record["stage"] == "bench" and record["batch_size"] == 1
    assert record["fingerprint"] and record["config_hash"] and done.image.is_file()
    assert not plan["ok"][0].image.exists() and not plan["ok"][0].record.exists()

    monkeypatch.setattr(G, "_call", real)
    again = generate(plan, run_dir, "cpu", cfg)
    assert (again.done, again.skipped, again.failures) == (2, 1, [])
    assert read_failures(run_dir) == []
    records, unreadable = read_records(run_dir)
    assert len(records) == 3 and unreadable == []
    assert not {"id", "stage", "config_hash", "fingerprint", "seconds", "outputs"} & set(records[0].row())
