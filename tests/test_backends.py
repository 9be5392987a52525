"""Building a stage's backend from its config node: a constructor that refuses its settings is one line, and the
yaml is the only default of its settings."""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

from gen4gen.backends import build_backend
from gen4gen.errors import UserError
from tests.conftest import make_cfg


@pytest.mark.parametrize("overrides,group", [(["segmenter=grabcut", "segmenter.iterations=abc"], "segmenter"),
                                             (["+captioner.bogus=1"], "captioner"),
                                             (["+layout.bogus=1"], "layout"), (["inpainter.feather=abc"], "inpainter")])
def test_a_backend_that_refuses_its_settings_is_one_line(tmp_path, overrides, group):
    cfg = make_cfg(tmp_path, *overrides)
    with pytest.raises(UserError, match=rf"^cannot build the {group} gen4gen\.\S+: "
                                        rf"((ValueError|TypeError): .*|{group}\.\w+=\S+: .*); "
                                        rf"check the {group}\.\* settings"):
        build_backend(cfg[group], group)


def test_a_refused_setting_names_its_key_and_a_missing_one_says_so(tmp_path):
    cfg = make_cfg(tmp_path, "inpainter.feather=abc", "inpainter.band=0", "~layout.max_overlap")
    with pytest.raises(UserError, match=r": inpainter\.feather=abc: expected a number; inpainter\.band=0: must be at "
                                        r"least 1; check the inpainter"):
        build_backend(cfg.inpainter, "inpainter")
    with pytest.raises(UserError, match=r"HeuristicPlanner: layout\.max_overlap is missing; restore it"):
        build_backend(cfg.layout, "layout")


def _backend_nodes(data, where: str):
    """Every ``_target_`` node of a yaml file's data, with where it is."""
    if isinstance(data, dict):
        if "_target_" in data:
            yield where, data
        for key, value in data.items():
            yield from _backend_nodes(value, f"{where}.{key}")


# arguments that are not settings: a client made already (tests), the cache of an ``llm`` block
NOT_SETTINGS = {"client", "cache_dir"}


def test_the_yaml_is_the_only_default_of_every_backend_setting():
    """A backend class built from conf/ gives its settings no defaults of its own: the yaml is where they live
    (a second default drifts: ``haze`` was 0 in code and 0.01 in the yaml). The segmenters have their own check."""
    from omegaconf import OmegaConf

    from gen4gen.__main__ import conf_dir

    checked, offending = set(), []
    for path in sorted(Path(conf_dir()).rglob("*.yaml")):
        data = OmegaConf.to_container(OmegaConf.load(path))
        for where, node in _backend_nodes(data, path.stem):
            target = node["_target_"]
            if target.startswith("gen4gen.segment.") or target in checked:
                continue
            checked.add(target)
            module, _, name = target.rpartition(".")
            params = inspect.signature(getattr(importlib.import_module(module), name)).parameters.values()
            offending += [f"{target}({p.name}=...) [{where}]" for p in params
                          if p.default is not inspect.Parameter.empty
                          and (p.name in node or p.name not in NOT_SETTINGS)]
    assert {"gen4gen.layout.heuristic.HeuristicPlanner", "gen4gen.repaint.classical.ClassicalInpainter",
            "gen4gen.train.lora.Lora", "gen4gen.caption.llm.VLMCaptioner"} <= checked
    assert not offending, "settings with a default besides the yaml's: " + ", ".join(offending)
