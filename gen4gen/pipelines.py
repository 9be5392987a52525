"""Loading diffusers pipelines and their parts, in one place for s3's inpainters, the bench's roster, train's base
model and its class images: the same hub resolution (:mod:`gen4gen.hub`), one dtype policy, the fp16-variant
fallback, and one line naming the setting when a model cannot be loaded."""
from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Any

from gen4gen.errors import UserError
from gen4gen.hub import resolve

log = logging.getLogger(__name__)

DTYPES = {"float16": "float16", "fp16": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float32": "float32", "fp32": "float32"}


def torch_dtype(device: str, name: str | None = "auto"):
    """The one dtype policy: on a GPU ``auto`` is float16 and a named dtype is kept; the CPU computes in float32
    whatever was asked (half-precision convolutions are slow or missing there)."""
    import torch

    if str(device).startswith("cpu"):
        return torch.float32
    name = str(name or "auto")
    if name == "auto":
        return torch.float16
    if name not in DTYPES:
        raise UserError(f"unknown dtype {name!r}; use auto, {', '.join(DTYPES)}")
    return getattr(torch, DTYPES[name])


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


def load_pipeline(cls, source: str, setting: str, dtype=None, variant: str | None = None, **kw: Any):
    """``cls.from_pretrained(source)`` on the CPU (the caller moves it): the ``variant`` weights when they exist,
    the default ones otherwise; ``kw`` are replaced components or pipeline options."""
    quiet_diffusers()
    return _load(cls, "from_pretrained", source, setting, variant,
                 **({"torch_dtype": dtype} if dtype is not None else {}), **kw)


def load_single_file(cls, source: str, setting: str, dtype=None, **kw: Any):
    """``cls.from_single_file(source)``: a local ``.safetensors``/``.ckpt`` or a hub URL."""
    quiet_diffusers()
    return _load(cls, "from_single_file", source, setting, None,
                 **({"torch_dtype": dtype} if dtype is not None else {}), **kw)


def load_component(cls, source: str, setting: str, subfolder: str | None = None, dtype=None):
    """One part (UNet, VAE, text encoder, tokenizer, scheduler) of a pipeline folder or hub id; ``dtype`` None
    keeps the stored precision (training loads float32 parts)."""
    kw: dict[str, Any] = {"subfolder": subfolder} if subfolder else {}
    if dtype is not None:
        kw["torch_dtype"] = dtype
    return _load(cls, "from_pretrained", source, setting, None, **kw)


def _load(cls, how: str, source: str, setting: str, variant: str | None, **kw: Any):
    where = resolve(source, setting) if how == "from_pretrained" else source
    try:
        with old_dtype_name():
            return getattr(cls, how)(where, **({"variant": variant} if variant else {}), **kw)
    except (OSError, ValueError) as e:
        if variant is None:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{setting}={source!r}: cannot load it with {cls.__name__}.{how} ({first})") from None
        log.info("no %s variant of %s (%s); loading the default weights", variant, source, e)
        return _load(cls, how, source, setting, None, **kw)
