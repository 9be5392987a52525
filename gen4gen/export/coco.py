"""``coco/``: ``images/`` plus ``annotations/instances.json`` (one annotation per visible concept instance:
box and RLE mask from pycocotools, categories = concepts) and ``annotations/captions.json`` (the short
and the detailed caption of each image), readable with ``pycocotools.coco.COCO``.
"""
from __future__ import annotations

from gen4gen.export.items import ExportContext, copy_file, write_bytes
from gen4gen.io import json_bytes

NAME = "coco"


def write(ctx: ExportContext) -> dict:
    out = ctx.root / NAME
    tokens = ctx.tokens
    categories = [{"id": k, "name": c, "supercategory": "concept", "modifier_token": tokens.get(c)}
                  for k, c in enumerate(ctx.concepts, start=1)]
    cat_id = {c["name"]: c["id"] for c in categories}
    images, annotations, captions = [], [], []
    for image_id, it in enumerate(ctx.items, start=1):
        file_name = f"{it.key}.png"
        copy_file(it.image_path, out / "images" / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": it.size[0], "height": it.size[1],
                       "gen4gen_id": it.id, "scene": it.scene})
        for inst in it.instances:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat_id[inst.concept],
                                "bbox": inst.bbox, "area": inst.area, "segmentation": inst.rle, "iscrowd": 0,
                                "instance": inst.name})
        for kind in ("short", "detailed"):
            if getattr(it.captions, kind):
                captions.append({"id": len(captions) + 1, "image_id": image_id, "caption": getattr(it.captions, kind),
                                 "kind": kind})
    info = {"description": f"gen4gen export {ctx.name}", "version": "1.0"}
    write_bytes(out / "annotations" / "instances.json",
                json_bytes({"info": info, "images": images, "annotations": annotations, "categories": categories}))
    write_bytes(out / "annotations" / "captions.json",
                json_bytes({"info": info, "images": images, "annotations": captions}))
    return {"coco annotations": len(annotations)}
