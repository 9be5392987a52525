"""``kohya/``: folders of images with same-stem ``.txt`` captions, the layout kohya-ss sd-scripts, OneTrainer and
ai-toolkit read, and ``dataset.toml`` for sd-scripts' ``--dataset_config``.

- ``scenes/<key>.png`` + ``<key>.txt``: the final images with the caption ``export.kohya.caption`` names
  (``personalized`` by default: the ``<newK>`` tokens the concepts answer to). With ``export.kohya.masks`` the
  images are RGBA PNGs whose alpha is the concepts' mask (RGB unchanged), the subset gets ``alpha_mask = true``
  and sd-scripts weights the loss by it (transparent = ignored); tools that read RGB drop the alpha.
- ``references/<concept>/<photo>.png`` + ``.txt``: each concept's reference cut-outs on white, one subset per
  concept (``class_tokens`` = its token and class words, what sd-scripts uses for an image without a caption).
- ``dataset.toml``: one ``[[datasets]]`` (resolution, aspect-ratio bucketing) whose ``[[datasets.subsets]]`` are
  the folders above, with absolute ``image_dir`` paths (sd-scripts resolves them from its own working folder).
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from gen4gen.words import count_phrase, display_name
from gen4gen.export.items import ExportContext, ExportItem, copy_file, write_bytes
from gen4gen.images import read_image
from gen4gen.train.data import source_caption

NAME = "kohya"
BUCKET_STEPS = 64  # sd-scripts' default bucket_reso_steps; bucket bounds must be multiples of it


def write(ctx: ExportContext) -> dict:
    s = ctx.settings.kohya
    out = ctx.root / NAME
    tokens = ctx.tokens
    for it in ctx.items:
        if s.masks:
            write_bytes(out / "scenes" / f"{it.key}.png", _with_alpha(it))
        else:
            copy_file(it.image_path, out / "scenes" / f"{it.key}.png")
        write_bytes(out / "scenes" / f"{it.key}.txt", _text(getattr(it.captions, s.caption)))
    subsets = [{"image_dir": "scenes", "num_repeats": s.scene_repeats}]
    for concept in ctx.concepts:
        rows = ctx.references.get(concept, [])
        if not rows:
            continue  # sd-scripts refuses an empty image_dir
        noun, token = display_name(concept), tokens.get(concept, "")
        personal = s.caption == "personalized" and token
        caption = source_caption(token, noun) if personal else f"a photo of {count_phrase(noun, 1)}"
        folder = out / "references" / concept
        for ref in rows:
            write_bytes(folder / ref.file_name, ref.png)
            write_bytes(folder / f"{Path(ref.file_name).stem}.txt", _text(caption))
        subsets.append({"image_dir": f"references/{concept}", "class_tokens": f"{token} {noun}" if personal else noun,
                        "num_repeats": s.reference_repeats})
    root = ctx.final / NAME
    for sub in subsets:
        sub["image_dir"] = str(root / sub["image_dir"])
        if s.masks:  # sd-scripts batches only subsets that agree on alpha_mask; a reference without alpha weighs 1
            sub["alpha_mask"] = True
    write_bytes(out / "dataset.toml", dataset_toml(s.resolution, subsets).encode("utf-8"))
    return {"kohya images": len(ctx.items), "kohya subsets": len(subsets)}


def _text(caption: str) -> bytes:
    return (" ".join(str(caption).split()) + "\n").encode("utf-8")


def _with_alpha(it: ExportItem) -> bytes:
    """The final image as RGBA, alpha = the union of its instance masks (the pixels the captions' concepts own)."""
    rgb = read_image(it.image_path, mode="RGB")
    union = np.zeros(rgb.shape[:2], np.uint8)
    for inst in it.instances:
        union |= mask_utils.decode(inst.rle).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.dstack([rgb, union * 255]), "RGBA").save(buf, format="PNG")
    return buf.getvalue()


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return json.dumps(str(v), ensure_ascii=False)  # a JSON string is a TOML basic string (same escapes)


def dataset_toml(resolution: int, subsets: list[dict]) -> str:
    """sd-scripts' dataset config: one DreamBooth-style dataset (image folders with ``.txt`` captions) with
    aspect-ratio buckets from half to twice the training resolution, never upscaling an image."""
    def up(v: int) -> int:
        return -(-v // BUCKET_STEPS) * BUCKET_STEPS

    general = {"caption_extension": ".txt", "shuffle_caption": False}
    dataset = {"resolution": resolution, "enable_bucket": True,
               "min_bucket_reso": up(resolution // 2), "max_bucket_reso": up(resolution * 2),
               "bucket_reso_steps": BUCKET_STEPS, "bucket_no_upscale": True}
    lines = ["# kohya-ss sd-scripts dataset config, made by gen4gen's export:",
             "#   accelerate launch train_network.py --dataset_config <this file> ...",
             "# image_dir paths are absolute: export again after moving the dataset.", "", "[general]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in general.items()]
    lines += ["", "[[datasets]]"] + [f"{k} = {_toml_value(v)}" for k, v in dataset.items()]
    for sub in subsets:
        lines += ["", "  [[datasets.subsets]]"] + [f"  {k} = {_toml_value(v)}" for k, v in sub.items()]
    return "\n".join(lines) + "\n"
