"""Building a stage's backend from its config node (``segmenter``, ``layout``, ``inpainter``, ``captioner``,
``trainer``). The node's keys are the constructor's arguments and the yaml is their only default: a backend types
its settings parameters (pydantic checks them as the class is built) and gives them no defaults of its own."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from pydantic import ConfigDict, ValidationError, validate_call

from gen4gen.errors import UserError


# on a backend's ``__init__``: its settings parameters are checked and converted as it is built (``1`` -> ``1.0``,
# ``[a, b]`` -> ``(a, b)``, ``inpainter.feather=abc`` -> a ValidationError naming ``feather``); no casts after
typed_settings = validate_call(config=ConfigDict(arbitrary_types_allowed=True))


def build_backend(node: DictConfig, group: str, **extra: Any):
    """Instantiate a backend node. A constructor that refuses its settings (``segmenter.iterations=abc``,
    ``+segmenter.bogus=1``) is one line naming the group, not Hydra's wrapped exception worded as a crash; a
    ``UserError`` of its own (no GPU) reaches the user as is."""
    from hydra.utils import instantiate

    try:
        return instantiate(node, **extra)
    except Exception as e:  # noqa: BLE001 - Hydra wraps what the constructor raised
        cause = e.__cause__ or e.__context__ or e
        if isinstance(cause, UserError):
            raise cause from None
        raise UserError(f"cannot build the {group} {node.get('_target_')}: {_why(cause, group)}; "
                        f"check the {group}.* settings (`python -m gen4gen --cfg job` shows them)") from None


def _why(cause: BaseException, group: str) -> str:
    if isinstance(cause, ValidationError):  # a typed constructor: key=value and what is expected, as at start-up
        from gen4gen.settings import settings_line

        errors = [{**err, "type": "missing"} if err["type"].startswith("missing") else err for err in cause.errors()]
        return "; ".join(settings_line(err, group) for err in errors)
    return f"{type(cause).__name__}: {cause}"


def choice_node(cfg: DictConfig, group: str, choice: str) -> DictConfig:
    """``conf/<group>/<choice>.yaml`` as ``<group>=<choice>`` would put it into ``cfg`` (its ``${...}`` resolved
    against ``cfg``), whatever ``cfg``'s own choice for the group is."""
    from gen4gen.__main__ import conf_dir

    full = copy.deepcopy(cfg)
    with open_dict(full):
        full[group] = OmegaConf.load(Path(conf_dir()) / group / f"{choice}.yaml")
    return OmegaConf.create(OmegaConf.to_container(full[group], resolve=True))
