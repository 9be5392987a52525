"""``gallery/index.html``: a static page to look at a dataset before training on it. A header with the
counts and every failure; per scene the source cut-outs, then per composition its layout (labelled boxes
drawn over the composition) and the final image(s) with their captions. JPEG thumbnails sit in
``gallery/thumbs/``; no script, no network.
"""
from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gen4gen.console import progress
from gen4gen.export.items import ExportContext, ExportItem, fit_name, flat_key, jpeg_bytes, write_bytes
from gen4gen.images import read_image
from gen4gen.templates import render

NAME = "gallery"
PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


def thumbnail(rgb: np.ndarray, side: int) -> Image.Image:
    """At most ``side`` px on the long edge (never enlarged); OpenCV's area filter is fast and alias-free."""
    h, w = rgb.shape[:2]
    scale = min(1.0, side / max(h, w))
    if scale < 1.0:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return Image.fromarray(rgb)


def layout_picture(item: ExportItem, side: int, concepts: list[str]) -> Image.Image:
    """The s2 composition (concepts on black) with each object's box and name drawn on it."""
    im = thumbnail(read_image(item.s2_dir / "image.png"), side)
    scale = im.size[0] / max(1, item.size[0])
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default()
    for obj in item.layout.objects:
        box = obj.box
        if box[2] <= 0 or box[3] <= 0:
            continue
        colour = PALETTE[concepts.index(obj.concept) % len(PALETTE)] if obj.concept in concepts else PALETTE[0]
        x, y, w, h = (v * scale for v in box)
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=colour, width=2)
        label = obj.name
        tx, ty = x + 2, max(0.0, y - 12)
        l, t, r, b = draw.textbbox((tx, ty), label, font=font)
        draw.rectangle([l - 1, t - 1, r + 1, b + 1], fill=(0, 0, 0))
        draw.text((tx, ty), label, fill=colour, font=font)
    return im


def layout_thumb(comp: str) -> str:
    return f"thumbs/{fit_name(flat_key(comp) + '__layout')}.jpg"


def ref_thumb(concept: str, ref) -> str:
    return f"thumbs/{fit_name(f'ref__{concept}__{ref.file_name[:-4]}')}.jpg"


def write(ctx: ExportContext) -> dict:
    out = ctx.root / NAME
    side = ctx.settings.thumb_size
    concepts = ctx.concepts
    by_comp: dict[str, list[ExportItem]] = defaultdict(list)
    for it in ctx.items:
        by_comp[it.composition].append(it)
    by_comp = shown(by_comp, ctx.settings.gallery_per_scene)
    jobs = []  # (thumbnail file, function making it)
    for its in by_comp.values():
        for it in its:
            jobs.append((f"thumbs/{it.key}.jpg", lambda it=it: thumbnail(read_image(it.image_path), side)))
    for comp, its in by_comp.items():
        jobs.append((layout_thumb(comp), lambda it=its[0]: layout_picture(it, side, concepts)))
    for concept, refs in ctx.references.items():
        for ref in refs:
            jobs.append((ref_thumb(concept, ref),
                         lambda ref=ref: thumbnail(read_image(ref.cutout), side // 2)))

    def make(job):
        name, fn = job
        write_bytes(out / name, jpeg_bytes(fn()))

    with progress() as bar, ThreadPoolExecutor(ctx.workers) as pool:
        task = bar.add_task("export gallery", total=len(jobs))
        for _ in pool.map(make, jobs):
            bar.advance(task)
    write_bytes(out / "index.html", page(ctx, by_comp).encode("utf-8"))
    return {"gallery thumbnails": len(jobs)}


def shown(by_comp: dict[str, list[ExportItem]], per_scene: int) -> dict[str, list[ExportItem]]:
    """The first ``per_scene`` compositions of each scene (0: all): a page for 100k images would not open."""
    if per_scene <= 0:
        return dict(by_comp)
    kept: dict[str, list[ExportItem]] = {}
    count: dict[str, int] = defaultdict(int)
    for comp in sorted(by_comp):
        scene = comp.split("/")[0]
        if count[scene] < per_scene:
            kept[comp] = by_comp[comp]
            count[scene] += 1
    return kept


def photo_notes(background: dict) -> dict:
    """Which of the user's photos is behind a final image (scene folder / file, crop), and its flag (a salient
    object where the concepts stand), so the gallery shows what s3's meta.json records."""
    source = background.get("source") if background.get("kind") == "photo" else None
    if not source:
        return {"photo": "", "photo_flag": ""}
    crop = f", crop {background['crop']}" if background.get("crop") else ""
    return {"photo": f"{'/'.join(Path(source).parts[-2:])}{crop}", "photo_flag": background.get("flag") or ""}


def page(ctx: ExportContext, by_comp: dict[str, list[ExportItem]]) -> str:
    """The page's values, plain; ``templates/gallery.html.j2`` lays them out (and escapes them)."""
    has_mycanvas = (ctx.root / "mycanvas").is_dir()
    scene_names = sorted({it.scene for it in ctx.items})
    counts = [("final image{}", len(ctx.items)), ("composition{}", len({it.composition for it in ctx.items})),
              ("scene{}", len(scene_names)), ("concept{}", len(ctx.concepts)),
              ("instance{}", sum(len(it.instances) for it in ctx.items)),
              ("reference cut-out{}", sum(len(r) for r in ctx.references.values())),
              ("final image{} left out", len(ctx.left_out)), ("failure{}", len(ctx.failures))]
    counts = [(label.format("" if n == 1 else "s"), n) for label, n in counts]  # "1 scene", "2 scenes"
    scenes = []
    for scene in scene_names:
        references = [{"thumb": ref_thumb(concept, ref), "s1_id": ref.s1_id,
                       "concept": concept}
                      for concept, refs in ctx.references.items() for ref in refs if ref.scene == scene]
        compositions = []
        for comp in sorted(c for c in by_comp if c.split("/")[0] == scene):
            its = by_comp[comp]
            layout = its[0].layout
            variants = [{"id": it.id, "variant": it.variant, "thumb": f"thumbs/{it.key}.jpg",
                      "href": f"../mycanvas/{it.id}/image.png" if has_mycanvas else None,
                      "captioner": it.captions.captioner,
                      "captions": {k: getattr(it.captions, k) for k in ("short", "detailed", "personalized")},
                      "fallback": it.captions.fallback or "",
                      # a procedural background is a preview, not a photograph: said under the picture
                      "preview": (it.s3_meta.background or {}).get("kind") == "procedural",
                      **photo_notes(it.s3_meta.background or {})} for it in its]
            compositions.append({"name": comp, "layout_thumb": layout_thumb(comp),
                                 "planner": layout.planner, "variants": variants,
                                 "objects": [o.name for o in layout.objects]})
        scenes.append({"name": scene, "references": references, "compositions": compositions,
                       "total": len({it.composition for it in ctx.items if it.scene == scene})})
    return render("gallery.html.j2", name=ctx.name, counts=counts, tokens=ctx.tokens, scenes=scenes,
                  problems=ctx.failures + ctx.left_out)
