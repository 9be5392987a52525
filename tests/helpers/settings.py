"""The yaml's settings for tests that build a backend by hand: the values a user's run would get."""
from __future__ import annotations

import functools
from pathlib import Path


@functools.cache
def backend_node(group: str, choice: str) -> dict:
    """``conf/<group>/<choice>.yaml`` as the composed config gives it (interpolations resolved), as plain data."""
    from omegaconf import OmegaConf

    from tests.conftest import make_cfg

    return OmegaConf.to_container(make_cfg(Path("/nonexistent"), f"{group}={choice}")[group], resolve=True)


def captioner_args(choice: str = "template", **over) -> dict:
    """The arguments the yaml gives captioner ``choice`` besides its ``llm`` block (``max_words``,
    ``temperature``...), counting tokens without a tokenizer (the tests run without the hub) and, for an LLM
    captioner, caching replies where its ``llm`` block says, unless ``over`` names a tokenizer or a cache."""
    node = backend_node("captioner", choice)
    args = {k: v for k, v in node.items() if k not in ("_target_", "llm")}
    return {**args, "clip_tokenizer": None, **({"cache_dir": None} if "cache_dir" in node else {}), **over}


def backend(group: str, choice: str, **over):
    """The backend ``conf/<group>/<choice>.yaml`` builds, as Hydra builds it for a run, with ``over`` in place of
    the yaml's values (and the arguments that are not settings: a client, a fallback planner). A refused setting
    is the UserError a run would stop with."""
    from gen4gen.backends import build_backend

    return build_backend(backend_node(group, choice), group, **over)


def composer_of(tmp_path, *overrides):
    """The composer of the yaml's ``compose`` and ``io`` sections with ``overrides``."""
    from gen4gen.layout.compose import Composer
    from gen4gen.settings import section
    from gen4gen.stage_settings import ComposeSettings, IOSettings
    from tests.conftest import make_cfg

    cfg = make_cfg(tmp_path, *overrides)
    return Composer(section(cfg, "compose", ComposeSettings), section(cfg, "io", IOSettings))
