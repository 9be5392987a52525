"""Building a stage's backend from its config node (``segmenter``, ``layout``, ``inpainter``, ``captioner``)."""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from gen4gen.errors import UserError


def build_backend(node: DictConfig, group: str, **extra: Any):
    """Instantiate a backend node (``segmenter``, ``layout``, ``inpainter``, ``captioner``). A constructor that
    refuses its settings (``segmenter.iterations=abc``, ``+segmenter.bogus=1``) is one line naming the group,
    not Hydra's wrapped exception worded as a crash; a ``UserError`` of its own (no GPU) reaches the user as is."""
    from hydra.utils import instantiate

    try:
        return instantiate(node, **extra)
    except Exception as e:  # noqa: BLE001 - Hydra wraps what the constructor raised
        cause = e.__cause__ or e.__context__ or e
        if isinstance(cause, UserError):
            raise cause from None
        raise UserError(f"cannot build the {group} {node.get('_target_')}: {type(cause).__name__}: {cause}; "
                        f"check the {group}.* settings (`python -m gen4gen --cfg job` shows them)") from None
