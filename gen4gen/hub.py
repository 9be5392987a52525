"""Where a model named in the config comes from: a local folder or file, the local Hugging Face cache, or the hub.

Decided before anything loads, so that a model that is neither here nor in the cache, while the hub cannot be
reached (``HF_HUB_OFFLINE`` set, or the first connection to it failed), is one line naming the setting at once,
instead of the hub client's retries (25 s and more) ending in a ``LocalEntryNotFoundError``.
"""
from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from gen4gen.errors import UserError

# seconds to wait for the hub's TCP handshake: a reachable hub answers at once; a dropped packet is not worth more
CONNECT_TIMEOUT = 5.0
OFFLINE_SET = "HF_HUB_OFFLINE is set"


def offline_reason() -> str | None:
    """Why the hub is known to be out of reach, or None: ``HF_HUB_OFFLINE`` (read now, not when the hub client was
    imported), else one TCP connection to ``HF_ENDPOINT``, made once per process."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}:
        return OFFLINE_SET
    return _refused(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)


@functools.lru_cache(maxsize=None)
def _refused(endpoint: str) -> str | None:
    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=CONNECT_TIMEOUT).close()
    except OSError as e:  # refused, no route, no DNS, timed out
        return f"cannot connect to {endpoint} ({e.strerror or type(e).__name__})"
    return None


def cached_snapshot(repo_id: str) -> str | None:
    """The folder of ``repo_id``'s snapshot in the local cache, or None; never touches the network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return snapshot_download(repo_id, local_files_only=True)
    except (LocalEntryNotFoundError, HFValidationError, OSError, ValueError):
        return None


def is_repo_id(source: str) -> bool:
    """``owner/name`` as the hub spells it; a path (``/abs``, ``./rel``, ``~/x``, ``a/b/c``) is not one."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(source)
    except HFValidationError:
        return False
    return not source.startswith((".", "~"))


def local_copy(source: str) -> str | None:
    """``source`` when it is a local path, its cached snapshot when it is a hub id in the cache, else None."""
    return source if Path(source).exists() else cached_snapshot(source)


def resolve(source: str, setting: str) -> str:
    """What to hand ``from_pretrained`` for ``setting=source``: a local path as it is; a hub id as it is while the
    hub is reachable (the library caches and updates it) or cached while it is not. A hub id that is
    not cached while the hub is out of reach is one :class:`UserError` naming ``setting``, before any retry."""
    source = str(source)
    if Path(source).exists():
        return source
    if not is_repo_id(source):
        raise UserError(f"cannot load {setting}={source!r}: no such file or folder")
    why = offline_reason()
    if why is None:
        return source
    snapshot = cached_snapshot(source)
    if snapshot:  # with HF_HUB_OFFLINE the libraries read their cache themselves; a refused hub they would retry
        return source if why == OFFLINE_SET else snapshot
    raise UserError(f"{setting}={source!r} is neither a local folder nor in the local Hugging Face cache, and the hub "
                    f"cannot be reached ({why}). Point it at a local copy: {setting}=/path/to/folder (a folder "
                    f"written by save_pretrained, or `hf download {source} --local-dir DIR` on a "
                    f"machine with network)")


def resolve_file(spec: str, setting: str) -> str:
    """A local file, or ``owner/repo/path/in/repo`` fetched through the hub cache (same offline rule as
    :func:`resolve`)."""
    if Path(spec).is_file():
        return spec
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    parts = spec.split("/", 2)
    if len(parts) != 3:
        raise UserError(f"{setting}={spec!r}: not a local file and not owner/repo/path/in/repo")
    repo, filename = "/".join(parts[:2]), parts[2]
    why = offline_reason()
    if why is None:
        return hf_hub_download(repo, filename)
    cached = try_to_load_from_cache(repo, filename)
    if isinstance(cached, str):
        return cached
    raise UserError(f"{setting}={spec!r} is neither a local file nor in the local Hugging Face cache, and the hub "
                    f"cannot be reached ({why}). Point it at a local file: {setting}=/path/to/{Path(filename).name}")
