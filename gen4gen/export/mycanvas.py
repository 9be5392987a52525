"""``mycanvas/``: the MyCanvas layout. One folder per final image (``image.png``, ``mask.png``,
``instances/``, ``layout.json``, ``captions.json``), the concept references, and ``index.jsonl``.
"""
from __future__ import annotations

from gen4gen.export.items import ExportContext, copy_file, write_bytes
from gen4gen.io import jsonl_bytes

NAME = "mycanvas"


def write(ctx: ExportContext) -> dict:
    out = ctx.root / NAME
    refs = {}
    for concept, rows in ctx.references.items():
        for ref in rows:
            write_bytes(out / "references" / concept / ref.file_name, ref.png)
        refs[concept] = [f"{NAME}/references/{concept}/{ref.file_name}" for ref in rows]
    index = []
    for it in ctx.items:
        folder = out / it.id
        copy_file(it.image_path, folder / "image.png")
        copy_file(it.s2_dir / "mask.png", folder / "mask.png")
        for inst in it.instances:
            copy_file(inst.mask_path, folder / "instances" / f"{inst.name}.png")
        write_bytes(folder / "layout.json", it.layout.dump())
        write_bytes(folder / "captions.json", it.captions.dump())
        index.append({"id": it.id, "image": f"{it.id}/image.png", "scene": it.scene, "concepts": it.concepts,
                      "captions": {k: getattr(it.captions, k) for k in ("short", "detailed", "personalized")},
                      "modifier_tokens": it.captions.modifier_tokens,
                      "reference_images": {c: refs.get(c, []) for c in it.concepts},
                      "mask": f"{it.id}/mask.png",
                      "instances": [{**o, "mask": f"{it.id}/instances/{o['name']}.png"} for o in it.objects()]})
    write_bytes(out / "index.jsonl", jsonl_bytes(index))
    return {"mycanvas images": len(index)}
