"""``imagefolder/``: a Hugging Face ``imagefolder`` dataset, ``datasets.load_dataset("imagefolder",
data_dir=".../imagefolder")`` (split ``train``). ``metadata.jsonl`` sits beside ``images/``, not in it, so
``images/`` holds images only: scripts that open every file of a folder (diffusers' DreamBooth
``--instance_data_dir``) read it as it is.

Caption columns say what they hold: ``caption_personalized`` (with each concept's ``<newK>`` token, what a
personalisation run trains on), ``caption_plain`` (the detailed caption in class words) and
``caption_plain_short`` (fits CLIP's 77 tokens); then ``objects`` with boxes and categories.
"""
from __future__ import annotations

from gen4gen.export.items import ExportContext, copy_file, write_bytes
from gen4gen.io import jsonl_bytes

NAME = "imagefolder"
IMAGES = "images"
# what each caption column holds -> the s4 caption it is written from
CAPTION_COLUMNS = {"caption_personalized": "personalized", "caption_plain": "detailed", "caption_plain_short": "short"}


def write(ctx: ExportContext) -> dict:
    out = ctx.root / NAME
    rows = []
    for it in ctx.items:
        copy_file(it.image_path, out / IMAGES / f"{it.key}.png")
        rows.append({"file_name": f"{IMAGES}/{it.key}.png",
                     **{col: getattr(it.captions, kind) for col, kind in CAPTION_COLUMNS.items()},
                     "id": it.id, "scene": it.scene, "concepts": it.concepts,
                     "objects": {"bbox": [i.bbox for i in it.instances], "category": [i.concept for i in it.instances],
                                 "name": [i.name for i in it.instances], "area": [i.area for i in it.instances]}})
    write_bytes(out / "metadata.jsonl", jsonl_bytes(rows))
    return {"imagefolder rows": len(rows)}
