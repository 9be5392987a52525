"""The dataset card (``README.md``): what is in the dataset, how it was made, what was left out, how to load it."""
from __future__ import annotations

import json
from collections import Counter

from gen4gen.words import display_name
from gen4gen.export.items import ExportContext
from gen4gen.export.recipes import train_section, use_section
from gen4gen.export.select import Selection

LOADERS = {
    "mycanvas": "`mycanvas/index.jsonl`: one JSON line per final image (`image`, `captions`, `modifier_tokens`, "
                "`reference_images`, `instances` with masks); each folder holds `image.png`, `mask.png`, "
                "`instances/`, `layout.json`, `captions.json`.",
    "customdiffusion": "Custom Diffusion. `customdiffusion/train.sh` runs diffusers' "
                       "`examples/custom_diffusion/train_custom_diffusion.py` with `concepts_list.json` on the "
                       "per-concept folders `instance_images/<concept>/` (one prompt per folder), or with "
                       "`train.sh scenes` on `concepts_list_scenes.json`: one folder per composed scene, its "
                       "personalized caption as the prompt. The scenes as lists: `compositions/images.txt` + "
                       "`captions.txt` + `masks.txt` (paths relative to the lists), what `stage=train` reads when "
                       "`mycanvas/` is absent.",
    "imagefolder": "Hugging Face `imagefolder`: `metadata.jsonl` beside `images/` (images only), split `train`; "
                   "caption columns `caption_personalized` (with the tokens), `caption_plain` (class words), "
                   "`caption_plain_short`; `objects` the boxes.",
    "kohya": "`kohya/scenes/` and `kohya/references/<concept>/`: each image with its caption in a same-stem `.txt`; "
             "`kohya/dataset.toml` is sd-scripts' `--dataset_config` (one subset per folder, absolute paths, "
             "aspect-ratio buckets).",
    "coco": "`pycocotools.coco.COCO(\"coco/annotations/instances.json\")` (RLE masks, one annotation per instance); "
            "captions in `coco/annotations/captions.json`.",
    "webdataset": "`webdataset.WebDataset(\"webdataset/shard-{000000..NNNNNN}.tar\")` with `.png`, `.json`, `.txt` per sample.",
}


def _counts(values) -> str:
    c = Counter(v for v in values if v)
    return ", ".join(f"{k} ({n})" for k, n in sorted(c.items())) or "-"


def _preview_note(items) -> list[str]:
    """Procedural backgrounds are a preview: the card says so, and what gives photographs."""
    n = sum(1 for it in items if (it.s3_meta.background or {}).get("kind") == "procedural")
    if not n:
        return []
    return [f"- **{n} final image(s) have a procedural background: a preview, not a photograph.** For photographic "
            "scenes use your own background photos on a CPU (`repaint.backgrounds=<folder>`) or SD-XL repainting on "
            "a GPU (`inpainter=sdxl`)."]


def card(ctx: ExportContext, formats: list[str], notes: dict) -> str:
    items = ctx.items
    tokens = ctx.tokens
    lines = [f"# {ctx.name}", "",
             "A multi-concept personalisation dataset made with gen4gen, following the Gen4Gen / MyCanvas recipe: "
             "each personal concept is cut out of its photos (s1), several concepts are composed into one layout "
             "(s2), the background is repainted around the exact concept pixels (s3), and every final image is "
             "captioned from its layout (s4). Boxes and masks are exact: they come from the composition, not from "
             "a detector.", "",
             "## Contents", "",
             "| final images | compositions | scenes | concepts | instances | reference cut-outs |",
             "|---|---|---|---|---|---|",
             f"| {len(items)} | {len({it.composition for it in items})} | {len({it.scene for it in items})} | "
             f"{len(ctx.concepts)} | {sum(len(it.instances) for it in items)} | "
             f"{sum(len(r) for r in ctx.references.values())} |", "",
             f"Selection: {Selection.from_settings(ctx.settings).describe()} (`export.scenes`, `export.concepts`).", "",
             "## Concepts", "",
             "Each concept answers to its token in the personalized captions; the class words are what a model "
             "without the token is given.", "",
             "| concept | token | class words | reference cut-outs | instances | images |", "|---|---|---|---|---|---|"]
    for c in ctx.concepts:
        lines.append(f"| {c} | `{tokens.get(c, '')}` | {display_name(c)} | {len(ctx.references.get(c, []))} | "
                     f"{sum(1 for it in items for i in it.instances if i.concept == c)} | "
                     f"{sum(1 for it in items if c in it.concepts)} |")
    lines += ["", "## Left out", ""]
    if ctx.left_out or ctx.failures:
        lines.append(f"{len(ctx.left_out)} final image(s) were not exported because they are incomplete, and the "
                     f"stages recorded {len(ctx.failures)} failure(s) upstream (photos, compositions or images that "
                     f"were never made). Every line is in `left_out.jsonl`.")
        lines.append("")
        lines += ["| stage | item | reason |", "|---|---|---|"]
        for r in ctx.failures + ctx.left_out:
            reason = str(r["reason"]).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {r['stage']} | {r['id']} | {reason} |")
    else:
        lines.append("Nothing: every item of the run is complete and exported.")
    fallbacks = sum(1 for it in items if it.captions.fallback)
    lines += ["", "## Backends", "",
              f"- segmentation (s1): {_counts(r.backend for refs in ctx.references.values() for r in refs)}",
              f"- layout planner (s2): {_counts(it.layout.planner for it in items)}; "
              f"planner fallbacks: {sum(1 for it in items if it.layout.fallback)}",
              f"- repainting (s3): {_counts(it.s3_meta.backend for it in items)}; backgrounds: "
              f"{_counts(str((it.s3_meta.background or {}).get('kind', '')) for it in items)}",
              f"- captions (s4): {_counts(it.captions.captioner for it in items)}; "
              f"template fallbacks: {fallbacks}", *_preview_note(items), "",
              "## Formats", ""]
    lines += [f"- **{f}**: {LOADERS[f]}" for f in formats]
    lines += ["- **gallery**: `gallery/index.html`, thumbnails of every scene, layout, image and caption.", ""]
    lines += use_section(ctx, formats) + train_section(ctx, formats)
    lines += [
              "## Config", "", "Export settings:", "", "```json",
              json.dumps(ctx.settings.model_dump(mode="json"), indent=1, sort_keys=True),
              "```", "",
              f"Stage config hashes: s3 {sorted({it.s3_meta.config_hash for it in items})}.", "",
              "## How it was made", "",
              "`python -m gen4gen stage=all` (or the stages one by one: `stage=s1`, `s2`, `s3`, `s4`, `export`). "
              "Reruns skip finished items; the export is rewritten as a whole and swapped in, so it always "
              "matches the stage folders it was made from."]
    if notes:
        lines += ["", "Export notes: " + "; ".join(f"{k}: {v}" for k, v in notes.items())]
    return "\n".join(lines) + "\n"
