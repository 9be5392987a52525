"""The dataset card's "Use" and "Train on it" sections: a Python snippet that runs as pasted and one command per
trainer, every path absolute (the dataset's own folder once it is swapped in), every caption column named for
what it holds."""
from __future__ import annotations

import shlex

from gen4gen.export.imagefolder import CAPTION_COLUMNS
from gen4gen.export.items import ExportContext

PERSONAL_COLUMN = next(col for col, kind in CAPTION_COLUMNS.items() if kind == "personalized")
PLAIN_COLUMN = next(col for col, kind in CAPTION_COLUMNS.items() if kind == "detailed")


def use_section(ctx: ExportContext, formats: list[str]) -> list[str]:
    """Complete snippets (imports, the dataset's absolute path) for the formats a script reads in Python."""
    root = ctx.final
    lines = ["## Use", ""]
    if "imagefolder" in formats:
        lines += ["```python", "from datasets import load_dataset", "",
                  f"data = load_dataset(\"imagefolder\", data_dir={str(root / 'imagefolder')!r}, split=\"train\")",
                  "row = data[0]",
                  f"print(row[{PERSONAL_COLUMN!r}], row[{PLAIN_COLUMN!r}], row[\"image\"].size)", "```", "",
                  f"`{PERSONAL_COLUMN}` holds the caption with each concept's token (what personalisation trains "
                  f"on), `{PLAIN_COLUMN}` the same scene in class words, `caption_plain_short` a CLIP-length "
                  "version.", ""]
    if "mycanvas" in formats:
        lines += ["```python", "import json", "from pathlib import Path", "", "from PIL import Image", "",
                  f"root = Path({str(root)!r})",
                  "rows = [json.loads(line) for line in (root / \"mycanvas\" / \"index.jsonl\").read_text().splitlines()]",
                  "image = Image.open(root / \"mycanvas\" / rows[0][\"image\"])",
                  "print(rows[0][\"captions\"][\"personalized\"], rows[0][\"modifier_tokens\"], image.size)", "```", ""]
    return lines


def train_section(ctx: ExportContext, formats: list[str]) -> list[str]:
    root = ctx.final
    base = ctx.settings.customdiffusion.base
    q = shlex.quote
    lines = ["## Train on it", "",
             f"- **gen4gen**: `python -m gen4gen stage=train train.dataset={q(str(root))}` (Custom Diffusion; "
             "`trainer=lora` for LoRA): the tokens are added to the text encoder and trained.",
             ]
    if "kohya" in formats:
        s = ctx.settings.kohya
        toml = root / "kohya" / "dataset.toml"
        lines += [f"- **kohya-ss sd-scripts** (`kohya/`, captions: `{s.caption}`): `accelerate launch train_network.py "
                  f"--pretrained_model_name_or_path={q(base)} --dataset_config={q(str(toml))} "
                  "--network_module=networks.lora --network_dim=16 --learning_rate=1e-4 --max_train_steps=1000 "
                  f"--mixed_precision=fp16 --save_model_as=safetensors --output_name={q(ctx.name)} "
                  "--output_dir=output` (SD-XL: `sdxl_train_network.py`). The `<newK>` tokens stay ordinary text "
                  "there (rare word pieces a LoRA learns to bind); "
                  + ("the scenes carry their concept mask in alpha (`alpha_mask`)." if s.masks else
                     "`export.kohya.masks=true` adds the concept masks for its masked loss."),
                  f"- **OneTrainer**: add `{root / 'kohya' / 'scenes'}` and each `{root / 'kohya' / 'references'}/"
                  "<concept>` as a concept, prompt source \"from text file per sample\".",
                  f"- **ai-toolkit**: `datasets: [{{folder_path: \"{root / 'kohya' / 'scenes'}\", caption_ext: txt, "
                  f"resolution: [{s.resolution}]}}]` in the job's YAML (one entry per folder)."]
    if "imagefolder" in formats:
        lines.append(f"- **diffusers text-to-image LoRA**: `accelerate launch train_text_to_image_lora.py "
                     f"--pretrained_model_name_or_path={q(base)} --train_data_dir={q(str(root / 'imagefolder'))} "
                     f"--image_column=image --caption_column={PERSONAL_COLUMN} --resolution=512 --train_batch_size=1 "
                     "--max_train_steps=1000 --learning_rate=1e-4 --output_dir=lora-out` "
                     f"(`--caption_column={PLAIN_COLUMN}` for the scenes without identities). diffusers' DreamBooth "
                     f"scripts take `--instance_data_dir={q(str(root / 'imagefolder' / 'images'))}`: images only.")
    if "customdiffusion" in formats:
        lines.append(f"- **diffusers Custom Diffusion**: `{q(str(root / 'customdiffusion' / 'train.sh'))}` (each "
                     "concept's reference photos, with prior preservation) or `... train.sh scenes` (the composed "
                     f"scenes, one personalized caption each); the base defaults to `{base}`, as `stage=train`.")
    return lines + [""]
