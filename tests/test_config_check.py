"""Issue 14 #8-9: what a user types on the command line comes back as one line that names the key and the
fix: unknown keys and group options with close matches, values of the wrong type or range, a canvas over
io.max_pixels, export sizes of 0, and compose.counts naming no concept."""
from __future__ import annotations

import time

import pytest

from gen4gen.__main__ import conf_dir
from gen4gen.config_check import build_backend, config_problems, override_problem
from gen4gen.errors import UserError
from gen4gen.stages import s2_compose
from tests.conftest import make_cfg
from tests.pipeline_run import cli, small_sources
from tests.helpers.trees import fake_s1

# (overrides, the one line expected); CLI-level: each runs `python -m gen4gen stage=s2` in a subprocess
CLI_CASES = [
    (["compose.num_sample=5"], "unknown key compose.num_sample; did you mean compose.num_samples?"),
    (["segmenter=u2net"], "segmenter=u2net: no such segmenter; choose one of grabcut, isnet, sam, u2netp "
                          "(did you mean segmenter=u2netp?)"),
    (["seed=abc"], "seed=abc: expected a whole number"),
    (["compose.size=abc"], "compose.size=abc: expected a side in pixels (1024) or [W, H]"),
    (["shard.index=5", "shard.count=2"], "shard.index=5 is not below shard.count=2; use shard.index=0..1"),
    (["compose.num_samples=0"], "compose.num_samples=0: must be at least 1"),
    (["compose.size=[20000,20000]"], "compose.size=[20000, 20000] is 20000x20000 = 400 MP, over the limit of 80 MP "
                                     "(io.max_pixels); use a smaller canvas or raise the limit"),
    (["export.thumb_size=0"], "export.thumb_size=0: must be at least 16"),
    (["compose.counts={dgo: 2}"], "compose.counts names 'dgo': no such concept (did you mean dog?); the concepts are "
                                  "cat, dog"),
]


@pytest.mark.parametrize("overrides,line", CLI_CASES, ids=[" ".join(o) for o, _ in CLI_CASES])
@pytest.mark.slow
def test_cli_says_one_line_naming_the_key(tmp_path, overrides, line):
    fake_s1(tmp_path / "stages", {"pets": {"cat": 1, "dog": 1}}, size=(60, 50))
    t0 = time.perf_counter()
    result = cli(tmp_path, "stage=s2", *overrides, check=False)
    seconds = time.perf_counter() - t0
    out = result.stdout + result.stderr
    assert result.returncode == 2, out[-2000:]
    assert [ln for ln in out.splitlines() if line in ln] != [], out[-2000:]
    before_table = result.stderr.split("gen4gen summary")[0]  # a stage's refusal is repeated in the summary table
    assert [ln for ln in before_table.splitlines() if ln.strip()] == [ln for ln in out.splitlines() if line in ln][:1]
    for raw in ("Traceback", "invalid literal", "HYDRA_FULL_ERROR", "+compose", "Could not override", "full_key"):
        assert raw not in out
    assert not list((tmp_path / "stages" / "s2_object_compositions").rglob("meta.json"))
    assert seconds < 60  # refused before any work


def test_config_problems_names_every_bad_value(tmp_path):
    cfg = make_cfg(tmp_path, "seed=1.5", "workers=0", "io.max_pixels=-1", "compose.min_visible=2",
                   "export.reference_size=0", "llm.timeout=0", "strict=maybe", "compose.counts={cat: 0}",
                   "repaint.max_backgrounds=0", "bench.metrics.batch_size=0", "search.top_k=-1",
                   "compose.augment.max_rotation=abc", "repaint.source=foo", "repaint.mask_low=abc")
    assert config_problems(cfg) == [
        "seed=1.5: expected a whole number", "workers=0: must be at least 1", "strict=maybe: expected true or false",
        "io.max_pixels=-1: must be at least 1", "compose.min_visible=2: must be at most 1.0",
        "compose.counts={'cat': 0}: each count must be at least 1, got {'cat': 0}",
        "compose.augment.max_rotation=abc: expected a number",
        "repaint.max_backgrounds=0: must be at least 1",
        "repaint.source=foo: choose one of 'auto', 'photo', 'noise' or 'procedural'",
        "repaint.mask_low=abc: expected a number", "export.reference_size=0: must be at least 16",
        "bench.metrics.batch_size=0: must be at least 1", "search.top_k=-1: must be at least 1",
        "llm.timeout=0: must be over 0.0"]
    assert config_problems(make_cfg(tmp_path, "~seed", "~compose.num_samples")) == [
        "seed is missing; restore it or remove the override",
        "compose.num_samples is missing; restore it or remove the override"]
    assert config_problems(make_cfg(tmp_path)) == []
    assert config_problems(make_cfg(tmp_path, "compose.size=512", "shard.index=1", "shard.count=2")) == []


@pytest.mark.parametrize("argv,line", [
    (["-m", "compose.num_sampls=1,2"], "unknown key compose.num_sampls; did you mean compose.num_samples?"),
    (["layout=lm"], "layout=lm: no such layout; choose one of heuristic, llm (did you mean layout=llm?)"),
    (["compose.augment.flp=true"], "unknown key compose.augment.flp; did you mean compose.augment.flip?"),
    (["compose.size=[1,2"], "cannot read the override 'compose.size=[1,2'"),
    (["+compose.num_sample=5"], "+compose.num_sample adds a key that gen4gen does not read; did you mean "
                                "compose.num_samples=...?"),  # Hydra's own advice for the typo
    (["+inpainter.my_option=2", "++compose.size=512", "+hydra.job.env_set.X=1"], None),  # a backend's argument
    (["+route.costs.sdxl=0.001", "+route.costs.sd15=0.0005"], None),  # an empty mapping holds the user's names
    (["route.costs={sdxl: 0.001}"], "route.costs: cannot take that value (Could not override 'route.costs'.); add "
                                    "one key at a time with +route.costs.NAME=VALUE"),
    (["-m", "segmenter=u2netp,grabcut", "hydra.run.dir=x", "seed=1,2"], None),
    (["--cfg", "job", "stage=s2"], None),
])
def test_override_problem(argv, line):
    problem = override_problem(conf_dir(), argv)
    assert (problem is None) if line is None else problem.startswith(line), problem


def test_a_canvas_over_max_pixels_is_refused_by_the_stage_too(tmp_path):
    fake_s1(tmp_path / "stages", {"pets": {"cat": 1, "dog": 1}}, size=(60, 50))
    with pytest.raises(UserError, match=r"io.max_pixels"):
        s2_compose.run(make_cfg(tmp_path, "stage=s2", "compose.size=[3000,3000]", "io.max_pixels=8000000"))


@pytest.mark.parametrize("overrides,group", [(["segmenter=grabcut", "segmenter.iterations=abc"], "segmenter"),
                                             (["+captioner.bogus=1"], "captioner"),
                                             (["+layout.bogus=1"], "layout"), (["inpainter.feather=abc"], "inpainter")])
def test_a_backend_that_refuses_its_settings_is_one_line(tmp_path, overrides, group):
    cfg = make_cfg(tmp_path, *overrides)
    with pytest.raises(UserError, match=rf"^cannot build the {group} gen4gen\.\S+: (ValueError|TypeError): .*; "
                                        rf"check the {group}\.\* settings"):
        build_backend(cfg[group], group)


def test_a_later_stage_s_missing_llm_key_is_said_before_the_first_stage_runs(tmp_path, monkeypatch):
    from gen4gen.config_check import missing_key_notes

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
