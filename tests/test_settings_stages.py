"""The typed settings of the run and of s1-s4 (``gen4gen/stage_settings.py``): the start-up check names a bad value of
any key they hold in one line, before any stage starts; the yaml gives every field; the stages read typed values."""
from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gen4gen import stage_settings as st
from gen4gen.backends import build_backend
from gen4gen.errors import UserError
from gen4gen.settings import LLMSettings, config_problems, section, top_level
from gen4gen.stages import s1_segment, s3_repaint
from tests.conftest import make_cfg
from tests.helpers.pipeline_run import cli, small_sources

# (override, the one line the start-up check says)
BAD = [
    ("compose.num_samples=abc", "compose.num_samples=abc: expected a whole number"),
    ("compose.sets=subset", "compose.sets=subset: choose one of 'all' or 'subsets'"),
    ("compose.occlusion=2", "compose.occlusion=2: must be at most 1.0"),
    ("compose.size=[10,10]", "compose.size=[10, 10]: too small (10x10); use at least 64 px a side"),
    ("+compose.num_sample=5", "compose.num_sample=5: extra inputs are not permitted"),
    ("repaint.photo_blur=-1", "repaint.photo_blur=-1: must be at least 0.0"),
    ("repaint.min_photo_side=0", "repaint.min_photo_side=0: must be at least 1"),
    ("repaint.invert=maybe", "repaint.invert=maybe: expected true or false"),
    ("repaint.mask_high=300", "repaint.mask_high=300: must be at most 255.0"),
    ("segment.rounds=0", "segment.rounds=0: must be at least 1"),
    ("segment.features=vgg", "segment.features=vgg: use efficientnet-lite0, clip:<model> or dino:<model>"),
    ("segmenter.keep=most", "segmenter.keep=most: choose one of 'concept', 'all' or 'largest'"),
    ("caption.max_words=0", "caption.max_words=0: must be at least 1"),
    ("io.min_side=abc", "io.min_side=abc: expected a whole number"),
    ("shard.count=0", "shard.count=0: must be at least 1"),
    ("strict=maybe", "strict=maybe: expected true or false"),
    ("llm.concurrency=0", "llm.concurrency=0: must be at least 1"),
    ("+llm.colour=red", "llm.colour=red: extra inputs are not permitted"),
    ("+paths.stage_dir=x", "paths.stage_dir=x: extra inputs are not permitted"),
    ("paths.stages_dir=null", "paths.stages_dir=None: expected a folder"),
]


@pytest.mark.parametrize("override, line", BAD, ids=[b[0] for b in BAD])
def test_a_bad_value_of_a_stage_s_key_is_one_line_naming_it(tmp_path, override, line):
    assert config_problems(make_cfg(tmp_path, override)) == [line]


@pytest.mark.slow
@pytest.mark.parametrize("override", ["compose.num_samples=abc", "repaint.photo_blur=-1", "repaint.invert=maybe",
                                      "segment.rounds=0"])
def test_the_command_stops_before_any_stage_with_that_line(tmp_path, override):
    small_sources(tmp_path / "src")
    result = cli(tmp_path, "stage=all", override, check=False)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert lines == [dict(BAD)[override]]
    assert not (tmp_path / "stages").exists()  # s1 never started


def test_the_top_level_keys_come_from_the_yaml(tmp_path):
    """The sections' models are checked with the others' in test_settings.test_the_yaml_is_the_only_default."""
    assert [n for n, f in st.TopSettings.model_fields.items() if not f.is_required()] == []
    assert top_level(make_cfg(tmp_path)) == st.TopSettings(stage="all", seed=0, workers=2, device="auto",
                                                           strict=False, keep_runs=30, shard={"index": 0, "count": 1})


def test_the_sections_hold_typed_values(tmp_path):
    compose = section(make_cfg(tmp_path, "compose.size=512", "compose.counts={cat: 2}"), "compose", st.ComposeSettings)
    assert compose.size == (512, 512) and compose.counts == {"cat": 2} and compose.augment.max_rotation == 5.0
    repaint = section(make_cfg(tmp_path, "repaint.scene=2024", "repaint.backgrounds=/p"), "repaint",
                      st.RepaintSettings)
    assert repaint.scene == "2024" and repaint.kind == "photo" and repaint.mask_high == 255.0
    assert section(make_cfg(tmp_path), "repaint", st.RepaintSettings).kind == "procedural"
    assert section(make_cfg(tmp_path, "repaint.source=noise", "repaint.backgrounds=/p"), "repaint",
                   st.RepaintSettings).kind == "noise"
    assert section(make_cfg(tmp_path, "layout=llm"), "layout", st.BackendNode).target == \
        "gen4gen.layout.llm.LLMPlanner"
    paths = section(make_cfg(tmp_path, "paths.stages_dir=2024"), "paths", st.PathsSettings)
    assert paths.stages_dir == Path("2024") and paths.source_dir == tmp_path / "src"  # a number is a folder name
    with pytest.raises(ValidationError, match="frozen"):  # built once and handed down: nobody changes it on the way
        compose.num_samples = 5


def test_a_stage_reads_its_sections_once_when_it_starts(tmp_path):
    stage = s1_segment.SegmentStage(make_cfg(tmp_path, "segment.rounds=2", "segmenter.keep=all", "workers=3",
                                             "io.min_side=8"))
    assert (stage.rounds, stage.keep, stage.workers, stage.io.min_side) == (2, "all", 3, 8)
    with pytest.raises(UserError, match=r"^segment.features=dino: use efficientnet-lite0"):
        s1_segment.SegmentStage(make_cfg(tmp_path, "segment.features=dino"))
    s3 = s3_repaint.RepaintStage(make_cfg(tmp_path, "repaint.blur=4", "repaint.mask_low=100"))
    assert (s3.repaint.blur, s3.repaint.mask_low, s3.kind) == (4, 100.0, "procedural")
    with pytest.raises(UserError, match=r"^repaint.max_salient=2: must be at most 1"):
        s3_repaint.RepaintStage(make_cfg(tmp_path, "repaint.max_salient=2"))


def test_a_captioner_reads_the_llm_section_once_when_it_is_built(tmp_path):
    cfg = make_cfg(tmp_path, "captioner=vlm", "llm.model=m-1", "llm.temperature=0.5", "caption.max_words=30")
    captioner = build_backend(cfg.captioner, "captioner")
    assert isinstance(captioner.llm, LLMSettings) and captioner.llm.temperature == 0.5
    assert captioner.config()["model"] == "m-1" and captioner.max_words == 30
    assert captioner.temperature == 0.2  # conf/captioner/vlm.yaml's own, not the llm section's
    with pytest.raises(UserError, match=r"^llm.timeout=0: must be over 0"):
        build_backend(make_cfg(tmp_path, "captioner=llm", "llm.timeout=0").captioner, "captioner")
