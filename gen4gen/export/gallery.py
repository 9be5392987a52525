"""``gallery/index.html``: a static page to look at a dataset before training on it. A header with the
counts and every failure; per scene the source cut-outs, then per composition its layout (labelled boxes
drawn over the composition) and the final image(s) with their captions. JPEG thumbnails sit in
``gallery/thumbs/``; no script, no network.
"""
from __future__ import annotations

import html
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gen4gen.console import progress
from gen4gen.export.items import ExportContext, ExportItem, fit_name, flat_key, jpeg_bytes, write_bytes
from gen4gen.images import read_image

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
    for obj in item.layout.get("objects") or []:
        box = obj.get("box") or obj.get("planned_box")
        if not box or box[2] <= 0 or box[3] <= 0:
            continue
        colour = PALETTE[concepts.index(obj["concept"]) % len(PALETTE)] if obj["concept"] in concepts else PALETTE[0]
        x, y, w, h = (v * scale for v in box)
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=colour, width=2)
        label = str(obj.get("name", obj["concept"]))
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
    side = int(ctx.settings.get("thumb_size", 256))
    concepts = ctx.concepts
    by_comp: dict[str, list[ExportItem]] = defaultdict(list)
    for it in ctx.items:
        by_comp[it.composition].append(it)
    by_comp = shown(by_comp, int(ctx.settings.get("gallery_per_scene", 0) or 0))
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


def _img(src: str, alt: str, href: str | None = None) -> str:
    tag = f'<img src="{quote(src)}" alt="{html.escape(alt)}" loading="lazy">'
    return f'<a href="{quote(href)}">{tag}</a>' if href else tag


def page(ctx: ExportContext, by_comp: dict[str, list[ExportItem]]) -> str:
    e = html.escape
    has_mycanvas = (ctx.root / "mycanvas").is_dir()
    scenes = sorted({it.scene for it in ctx.items})
    n_inst = sum(len(it.instances) for it in ctx.items)
    n_refs = sum(len(r) for r in ctx.references.values())
    parts = [f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(ctx.name)}: gen4gen dataset</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}}
h1{{margin-bottom:.2em}} .counts span{{display:inline-block;margin-right:1.2em;font-size:1.1em}}
.counts b{{font-size:1.4em}} section{{border-top:2px solid #ccc;margin-top:1.5em}}
.row{{display:flex;flex-wrap:wrap;gap:.8em;align-items:flex-start}}
figure{{margin:0;background:#fff;border:1px solid #ddd;padding:.4em;width:260px}}
figure img{{display:block;width:100%}} figcaption{{font-size:.85em}}
.refs figure{{width:130px}} .fallback{{color:#b00}} table{{border-collapse:collapse;font-size:.9em}}
td,th{{border:1px solid #ccc;padding:.2em .5em;text-align:left}} .ok{{color:#080}}
</style></head><body>
<h1>{e(ctx.name)}</h1>
<p>Multi-concept personalisation dataset made with gen4gen (segment, compose, repaint, caption).</p>
<div class="counts"><span><b>{len(ctx.items)}</b> final images</span>
<span><b>{len({it.composition for it in ctx.items})}</b> compositions</span>
<span><b>{len(scenes)}</b> scenes</span><span><b>{len(ctx.concepts)}</b> concepts</span>
<span><b>{n_inst}</b> instances</span><span><b>{n_refs}</b> reference cut-outs</span>
<span><b>{len(ctx.left_out)}</b> final images left out</span><span><b>{len(ctx.failures)}</b> failures</span></div>
<p>Modifier tokens: {e(", ".join(f"{t} = {c}" for c, t in ctx.tokens.items()))}</p>"""]
    if ctx.left_out or ctx.failures:
        rows = "".join(f"<tr><td>{e(r['stage'])}</td><td>{e(r['id'])}</td><td>{e(r['reason'])}</td></tr>"
                       for r in ctx.failures + ctx.left_out)
        parts.append(f'<h2>Failures and items left out</h2><table><tr><th>stage</th><th>item</th><th>reason</th></tr>'
                     f"{rows}</table>")
    else:
        parts.append('<p class="ok">No failures: every item of the run is in the dataset.</p>')
    for scene in scenes:
        parts.append(f'<section><h2>scene: {e(scene)}</h2><h3>source cut-outs</h3><div class="row refs">')
        for concept, refs in ctx.references.items():
            for ref in refs:
                if ref.scene == scene:
                    parts.append(f"<figure>{_img(ref_thumb(concept, ref), ref.s1_id)}"
                                 f"<figcaption>{e(concept)} <small>{e(ref.s1_id)}</small></figcaption></figure>")
        parts.append("</div>")
        total = len({it.composition for it in ctx.items if it.scene == scene})
        comps = sorted(c for c in by_comp if c.split("/")[0] == scene)
        if len(comps) < total:
            parts.append(f"<p>showing {len(comps)} of {total} compositions (export.gallery_per_scene)</p>")
        for comp in comps:
            its = by_comp[comp]
            parts.append(f'<h3>{e(comp)}</h3><div class="row"><figure>'
                         f"{_img(layout_thumb(comp), comp + ' layout')}"
                         f"<figcaption>layout ({e(str(its[0].layout.get('planner', '')))}): "
                         f"{e(', '.join(o.get('name', '') for o in its[0].layout.get('objects') or []))}"
                         f"</figcaption></figure>")
            for it in its:
                caps = it.captions
                fallback = (f'<div class="fallback">fallback: {e(str(caps["fallback"]))}</div>'
                            if caps.get("fallback") else "")
                href = f"../mycanvas/{it.id}/image.png" if has_mycanvas else None
                parts.append(f"<figure>{_img(f'thumbs/{it.key}.jpg', it.id, href)}<figcaption>"
                             f"<b>{e(it.variant)}</b> <small>{e(str(caps.get('captioner', '')))}</small>"
                             f"<p><i>short:</i> {e(str(caps.get('short', '')))}</p>"
                             f"<p><i>detailed:</i> {e(str(caps.get('detailed', '')))}</p>"
                             f"<p><i>personalized:</i> {e(str(caps.get('personalized', '')))}</p>"
                             f"{fallback}</figcaption></figure>")
            parts.append("</div>")
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
