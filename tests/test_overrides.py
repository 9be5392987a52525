"""The command line, checked before Hydra (issue 14 #8-9): an unknown key or group option, a value of the wrong type
or range, a canvas over io.max_pixels, export sizes of 0 and compose.counts naming no concept each come back as one
line that names the key and the fix."""
from __future__ import annotations

import time

import pytest

from gen4gen.__main__ import conf_dir
from gen4gen.overrides import command_overrides, override_problem
from tests.helpers.pipeline_run import cli
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


@pytest.mark.parametrize("argv,line", [
    (["-m", "compose.num_sampls=1,2"], "unknown key compose.num_sampls; did you mean compose.num_samples?"),
    (["layout=lm"], "layout=lm: no such layout; choose one of heuristic, llm (did you mean layout=llm?)"),
    (["compose.augment.flp=true"], "unknown key compose.augment.flp; did you mean compose.augment.flip?"),
    (["compose.size=[1,2"], "cannot read the override 'compose.size=[1,2'"),
    (["repaint.scene=草地"], "cannot read the override 'repaint.scene=草地': a value with letters outside a-z needs "
                           "quotes inside the override: \"repaint.scene='草地'\""),  # which Hydra then reads
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


@pytest.mark.parametrize("argv,overrides", [
    (["stage=s2", "-m", "seed=1,2"], ["stage=s2", "seed=1,2"]),
    (["--cfg", "job", "--package", "compose", "stage=s2"], ["stage=s2"]),
    (["-c=job", "--resolve", "seed=1"], ["seed=1"]),
    (["--help", "seed=1"], None), (["-cn", "other"], None), (["--info", "config"], None), (["--bogus"], None),
])
def test_command_overrides_follow_hydra_s_flags(argv, overrides):
    assert command_overrides(argv) == overrides
