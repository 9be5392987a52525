"""``imagefolder/``: a Hugging Face ``imagefolder`` dataset, ``datasets.load_dataset("imagefolder",
data_dir=".../imagefolder")``: ``train/`` holds the images and ``metadata.jsonl`` (``file_name``,
``text`` = the detailed caption, the other captions, and ``objects`` with boxes and categories).
"""
from __future__ import annotations

from gen4gen.export.items import ExportContext, copy_file, write_bytes
from gen4gen.io import jsonl_bytes

NAME = "imagefolder"


def write(ctx: ExportContext) -> dict:
    out = ctx.root / NAME / "train"
    rows = []
    for it in ctx.items:
        copy_file(it.image_path, out / f"{it.key}.png")
        rows.append({"file_name": f"{it.key}.png", "text": it.captions.detailed,
                     "short": it.captions.short, "personalized": it.captions.personalized,
                     "id": it.id, "scene": it.scene, "concepts": it.concepts,
                     "objects": {"bbox": [i.bbox for i in it.instances], "category": [i.concept for i in it.instances],
                                 "name": [i.name for i in it.instances], "area": [i.area for i in it.instances]}})
    write_bytes(out / "metadata.jsonl", jsonl_bytes(rows))
    return {"imagefolder rows": len(rows)}
