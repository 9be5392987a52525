"""The typed settings: the start-up check names every bad value with its key, and the yaml is the one place a
default lives (no settings model keeps one of its own)."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from pydantic import BaseModel

from gen4gen import settings, tool_settings
from gen4gen import stage_settings as st
from gen4gen.errors import UserError
from gen4gen.settings import config_problems, section
from gen4gen.stages import s2_compose
from tests.conftest import make_cfg
from tests.helpers.pipeline_run import cli, small_sources
from tests.helpers.trees import fake_s1


# keys that came with the run folders, dataset search, the kohya export, the bench's intervals and counterfactuals,
# the promptsets' difficulty curve and the review app: the defaults pass, a good value passes, a bad one is one line
NEW_KEYS = [
    ("keep_runs=null", "keep_runs=-1", "keep_runs=-1: must be at least 0"),
    ("search.dataset_by=dataset", "search.dataset_by=model",
     "search.dataset_by=model: choose one of 'concept' or 'dataset'"),
    ("export.kohya.caption=short", "export.kohya.resolution=32", "export.kohya.resolution=32: must be at least 64"),
    ("export.kohya.masks=true", "+export.kohya.colour=red", "export.kohya.colour=red: extra inputs are not permitted"),
    ("export.scenes=[pets,kitchen]", "export.concepts=[1,2]",
     "export.concepts=[1, 2]: expected a list of concept folder names, e.g. export.concepts=[a,b], or null for all"),
    ("export.concepts=cat", "export.scenes=[]",
     "export.scenes=[]: expected a list of scene folder names, e.g. export.scenes=[a,b], or null for all"),
    ("export.customdiffusion.base=/models/sd15", "~export.customdiffusion.base",
     "export.customdiffusion.base is missing; restore it or remove the override"),
    ("bench.metrics.backbones.identity=efficientnet-lite0", "bench.metrics.backbones.identity=vgg",
     "bench.metrics.backbones.identity=vgg: choose one of 'clip', 'dino' or 'efficientnet-lite0'"),
    ("bench.report.bootstrap=200", "bench.report.bootstrap=0", "bench.report.bootstrap=0: must be at least 1"),
    ("bench.counterfactual.enabled=false", "bench.counterfactual.target=2",
     "bench.counterfactual.target=2: must be at most 1.0"),
    ("bench.promptsets.mycanvas.k_prompts=3", None, None),
    ("bench.promptsets.mycanvas.split=eval", None, None),
    ("serve.port=9000", "serve.port=0", "serve.port=0: must be at least 1"),
    ("serve.token=s3cret-token", "+serve.colour=red", "serve.colour=red: extra inputs are not permitted"),
]


@pytest.mark.parametrize("good, bad, line", NEW_KEYS, ids=[k[0].split("=")[0] for k in NEW_KEYS])
def test_the_start_up_check_takes_every_key_of_the_yaml(tmp_path, good, bad, line):
    assert config_problems(make_cfg(tmp_path)) == []
    assert config_problems(make_cfg(tmp_path, good)) == []
    if bad:
        assert config_problems(make_cfg(tmp_path, bad)) == [line]


def test_config_problems_names_every_bad_value(tmp_path):
    cfg = make_cfg(tmp_path, "seed=1.5", "workers=0", "io.max_pixels=-1", "compose.min_visible=2",
                   "export.reference_size=0", "llm.timeout=0", "strict=maybe", "compose.counts={cat: 0}",
                   "repaint.max_backgrounds=0", "bench.metrics.batch_size=0", "search.top_k=-1",
                   "compose.augment.max_rotation=abc", "repaint.source=foo", "repaint.mask_low=abc",
                   "repaint.max_salient=2", "bench.writers=-1")
    assert config_problems(cfg) == [
        "seed=1.5: expected a whole number", "workers=0: must be at least 1", "strict=maybe: expected true or false",
        "io.max_pixels=-1: must be at least 1", "compose.min_visible=2: must be at most 1.0",
        "compose.counts={'cat': 0}: each count must be at least 1, got {'cat': 0}",
        "compose.augment.max_rotation=abc: expected a number",
        "repaint.max_backgrounds=0: must be at least 1",
        "repaint.source=foo: choose one of 'auto', 'photo', 'noise' or 'procedural'",
        "repaint.max_salient=2: must be at most 1.0", "repaint.mask_low=abc: expected a number",
        "export.reference_size=0: must be at least 16", "bench.writers=-1: must be at least 0",
        "bench.metrics.batch_size=0: must be at least 1", "search.top_k=-1: must be at least 1",
        "llm.timeout=0: must be over 0.0"]
    assert config_problems(make_cfg(tmp_path, "~seed", "~compose.num_samples")) == [
        "seed is missing; restore it or remove the override",
        "compose.num_samples is missing; restore it or remove the override"]
    assert config_problems(make_cfg(tmp_path)) == []
    assert config_problems(make_cfg(tmp_path, "compose.size=512", "shard.index=1", "shard.count=2")) == []


def test_a_canvas_over_max_pixels_is_refused_by_the_stage_too(tmp_path):
    fake_s1(tmp_path / "stages", {"pets": {"cat": 1, "dog": 1}}, size=(60, 50))
    with pytest.raises(UserError, match=r"io.max_pixels"):
        s2_compose.run(make_cfg(tmp_path, "stage=s2", "compose.size=[3000,3000]", "io.max_pixels=8000000"))


def test_a_later_stage_s_missing_llm_key_is_said_before_the_first_stage_runs(tmp_path, monkeypatch):
    from gen4gen.settings import missing_key_notes

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    pipeline = ["s1", "s2", "s3", "s4", "export"]
    both = make_cfg(tmp_path, "stage=all", "layout=llm", "captioner=vlm")
    assert [n.split(":")[0] for n in missing_key_notes(both, pipeline)] == ["s2", "s4"]
    assert "OPENAI_API_KEY is not set" in missing_key_notes(both, pipeline)[0]
    assert missing_key_notes(both, ["s2"]) == []  # the stage itself says it, at once
    assert missing_key_notes(make_cfg(tmp_path, "stage=all"), pipeline) == []  # built-in planner and templates
    assert missing_key_notes(make_cfg(tmp_path, "layout=llm", "llm.fallback_on_unreachable=true"), pipeline) == []
    assert missing_key_notes(make_cfg(tmp_path, "layout=llm", "llm.api_key_env=null"), pipeline) == []
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-12345678")
    assert missing_key_notes(both, pipeline) == []

    small_sources(tmp_path / "src")
    result = cli(tmp_path, "stage=all", "layout=llm", "compose.size=[128,128]", env={"OPENAI_API_KEY": ""},
                 check=False)
    warning = "s2: its layout planner asks the LLM, but OPENAI_API_KEY is not set"
    lines = result.stderr.splitlines()
    assert lines[0].startswith(warning) and result.stderr.count(warning) == 1  # before s1 spent its time
    assert result.returncode == 2 and any(ln.startswith("s2: OPENAI_API_KEY is not set") for ln in lines)
    assert list((tmp_path / "stages" / "s1_segmented_foreground").rglob("meta.json"))  # s1 did run, then s2 stopped


SECTIONS = {"llm": settings.LLMSettings, "train": settings.TrainSettings, "export": settings.ExportSettings,
            "bench.metrics": settings.BenchMetrics, "bench": settings.BenchSettings, "serve": settings.ServeSettings,
            "search": tool_settings.SearchSettings, "route": tool_settings.RouteSettings,
            "segment": st.SegmentSettings, "segmenter": st.SegmenterNode, "compose": st.ComposeSettings,
            "layout": st.BackendNode, "repaint": st.RepaintSettings, "caption": st.CaptionSettings,
            "io": st.IOSettings, "shard": st.ShardSettings, "paths": st.PathsSettings}


def _models(model: type[BaseModel]):
    yield model
    for f in model.model_fields.values():
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
            yield from _models(f.annotation)


@pytest.mark.parametrize("key", SECTIONS)
def test_the_yaml_is_the_only_default(tmp_path, key):
    """Every field of a section's model is required, and the yaml gives each one: a default in code could only
    disagree with the yaml (export.gallery_per_scene was 0 in code and 50 in the yaml)."""
    for model in _models(SECTIONS[key]):
        assert [n for n, f in model.model_fields.items() if not f.is_required()] == [], model.__name__
    parsed = section(make_cfg(tmp_path), key, SECTIONS[key])
    assert parsed.model_fields_set >= set(SECTIONS[key].model_fields)
    assert section(make_cfg(tmp_path), "export", settings.ExportSettings).gallery_per_scene == 50


def test_a_section_read_by_a_stage_names_the_bad_key(tmp_path):
    with pytest.raises(UserError, match=r"^train.resolution=100: 100 is not a multiple of 8"):
        section(make_cfg(tmp_path, "train.resolution=100"), "train", settings.TrainSettings)
    with pytest.raises(UserError, match=r"^llm.max_attempts=0: must be at least 1"):
        section(make_cfg(tmp_path, "llm.max_attempts=0"), "llm", settings.LLMSettings)


def test_a_setting_no_running_stage_reads_is_said_once(tmp_path):
    """``stage=s4 repaint.scene=desert`` did nothing about the scene without a word: each command-line setting that
    no running stage reads is one line naming the stages that do; settings a running stage reads, by interpolation
    too (export reads train.resolution), and keys every stage uses (paths, workers) are not."""
    from gen4gen.stage_reads import PIPELINE, READS, TAKEN, unread_lines

    over = ["repaint.scene=desert", "compose.size=[128,128]", "segmenter=grabcut", "caption.max_words=40",
            "workers=1", f"paths.cache_dir={tmp_path}", "hydra.job.name=x"]
    cfg = make_cfg(tmp_path, "stage=s4", *over)
    assert unread_lines(cfg, ["s4"], over) == [
        "repaint.scene is set but stage=s4 does not run s2 or s3, which read it; run stage=s2 or stage=all",
        "compose.size is set but stage=s4 does not run s2, which reads it; run stage=s2 or stage=all",
        "segmenter is set but stage=s4 does not run s1, which reads it; run stage=s1 or stage=all"]
    assert unread_lines(cfg, PIPELINE, over) == []
    assert unread_lines(cfg, ["s3"], ["repaint.blur=4", "seed=2"]) == []
    assert unread_lines(cfg, ["export"], ["train.resolution=768"]) == []  # export.kohya.resolution takes it
    assert unread_lines(cfg, ["s3"], ["train.lr=0.001"]) == [
        "train.lr is set but stage=s4 does not run train, which reads it; run stage=train"]
    # the LLM settings are read by the backends that take them
    assert unread_lines(cfg, PIPELINE, ["llm.model=m"]) == [
        "llm.model is set but nothing in this run reads it; it is read with layout=llm or captioner=llm|vlm"]
    assert unread_lines(make_cfg(tmp_path, "stage=s4", "captioner=llm"), ["s4"], ["llm.model=m"]) == []
    # every section of the yaml is in the table (a new one must say who reads it) or read by all (paths, shard)
    named = {e.split(".")[0] for entries in READS.values() for e in entries} | set(TAKEN)
    assert {k for k in cfg if OmegaConf.is_dict(cfg[k])} - named == {"paths", "shard"}

    result = cli(tmp_path, "stage=s4", "repaint.scene=desert", check=False)  # no s3 output: s4 stops, after the line
    assert result.stderr.splitlines()[0] == \
        "repaint.scene is set but stage=s4 does not run s2 or s3, which read it; run stage=s2 or stage=all"
