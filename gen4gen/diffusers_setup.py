"""diffusers settings shared by s3's inpainter and the bench: its log noise and the torch_dtype rename."""
from __future__ import annotations

import contextlib
import logging
import warnings


def quiet_diffusers() -> None:
    from diffusers.utils import logging as diffusers_logging

    # every fp16/fp32 `.to()` of a VAE logs a "should be kept in float32" line per batch: noise in a stage log
    diffusers_logging.get_logger("diffusers.models.modeling_utils").setLevel(logging.ERROR)


@contextlib.contextmanager
def old_dtype_name():
    """diffusers renamed ``from_pretrained``'s ``torch_dtype`` to ``dtype`` in 2026 and warns on the old name;
    earlier releases know only ``torch_dtype``. We pass the old name everywhere and silence just that warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        yield
