"""The model roster: ``conf/roster/<name>.yaml`` (``roster=<name>``) read through its model
(``gen4gen.artefacts.Roster``) with every problem named by its entry, and the pipeline class of each entry.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gen4gen.artefacts import Roster, RosterEntry
from gen4gen.errors import UserError

# short names a roster may use for ``pipeline``; any other value is taken as a diffusers class name
PIPELINE_ALIASES = {
    "sd": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "pixart": "PixArtAlphaPipeline",
    "amused": "AmusedPipeline",
}


def load_roster(node: Any) -> Roster:
    """Validate a roster from the Hydra node (or a plain dict); errors name the entry and field."""
    from omegaconf import DictConfig, OmegaConf

    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    try:
        return Roster.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = list(err["loc"])
            if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int):
                models = data.get("models") or []
                name = models[loc[1]].get("name", f"#{loc[1]}") if loc[1] < len(models) else f"#{loc[1]}"
                loc = [f"model {name!r}"] + [str(x) for x in loc[2:]]
            lines.append(f"{'.'.join(str(x) for x in loc)}: {err['msg']}")
        raise UserError("invalid roster:\n  " + "\n  ".join(lines)) from None


def detect_pipeline(entry: RosterEntry) -> str:
    """The diffusers pipeline class for an entry: the roster's own ``pipeline`` wins; a diffusers folder names
    its class in model_index.json; a single checkpoint is SD-XL when it has the second text encoder."""
    if entry.pipeline:
        return PIPELINE_ALIASES.get(entry.pipeline, entry.pipeline)
    src = Path(entry.source)
    if entry.is_single_file:
        if src.is_file():
            from safetensors import safe_open

            if src.suffix == ".safetensors":
                with safe_open(str(src), "pt") as f:
                    keys = list(f.keys())
                if any(k.startswith("conditioner.embedders.1") for k in keys):
                    return "StableDiffusionXLPipeline"
        return "StableDiffusionPipeline"
    index = src / "model_index.json"
    if index.is_file():
        return json.loads(index.read_text("utf-8"))["_class_name"]
    return "DiffusionPipeline"  # a hub id: from_pretrained reads its model_index.json itself
