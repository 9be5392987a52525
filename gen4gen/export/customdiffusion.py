"""``customdiffusion/``: what Custom Diffusion trains on.

- ``concepts_list.json`` for diffusers' ``examples/custom_diffusion/train_custom_diffusion.py
  --concepts_list``: per concept ``instance_prompt`` ("a photo of a <new1> cat"), ``class_prompt`` ("cat"),
  ``instance_data_dir`` and ``class_data_dir`` (paths relative to this folder; ``train.sh`` runs from it).
- ``concepts_list_scenes.json``: the composed scenes in the only form that script reads (one prompt per
  folder): one entry per scene, ``compositions/images/<key>/`` holding that one image, its personalized
  caption as the prompt. ``./train.sh scenes`` trains on them (without prior preservation: the script would
  generate ``--num_class_images`` class images per entry, i.e. per scene).
- ``instance_images/<concept>/``: images only (the script opens every file there). They are the s1
  cut-outs composited on white, cropped square around the object: the source photos would also teach
  the token their background and whatever else is in the frame, and can be 4000 px; the composed
  scenes below supply the context.
- ``modifier_token.txt`` (``<new1>+<new2>``, the ``--modifier_token`` value) and ``initializer_token.txt``.
- ``compositions/``: the composed images (``images/<key>/<key>.png``) with ``images.txt`` (one path per line,
  relative to the list),
  ``captions.txt`` (the personalized caption of each image, same line) and ``masks.txt`` (where the
  concepts are: the union of the instance masks), the file-list form of the original adobe
  custom-diffusion ``--caption`` / ``--datapath`` options. diffusers' script allows one prompt per concept
  folder and cannot read them (hence ``concepts_list_scenes.json``); ``python -m gen4gen stage=train`` does.
- ``train.sh [references|scenes]``: the script on the reference photos (Custom Diffusion's recipe, with prior
  preservation) or on the composed scenes; ``MODEL_NAME`` defaults to the base ``stage=train`` uses.
"""
from __future__ import annotations

import shlex

from gen4gen.words import display_name
from gen4gen.export.items import ExportContext, copy_file, write_bytes
from gen4gen.io import json_bytes
from gen4gen.train.data import source_caption

NAME = "customdiffusion"


def write(ctx: ExportContext) -> dict:
    out = ctx.root / NAME
    tokens = {c: t for c, t in ctx.tokens.items() if c in ctx.concepts}
    concepts_list = []
    for concept, token in tokens.items():
        noun = display_name(concept)
        for ref in ctx.references.get(concept, []):
            write_bytes(out / "instance_images" / concept / ref.file_name, ref.png)
        concepts_list.append({"instance_prompt": source_caption(token, noun), "class_prompt": noun,
                              "instance_data_dir": f"instance_images/{concept}",
                              "class_data_dir": f"class_images/{concept}"})
    write_bytes(out / "concepts_list.json", json_bytes(concepts_list))
    modifier = "+".join(tokens.values())
    # the script starts each new token from the embedding of one existing token: the class word
    initializer = "+".join(display_name(c).split()[-1] for c in tokens)
    write_bytes(out / "modifier_token.txt", (modifier + "\n").encode())
    write_bytes(out / "initializer_token.txt", (initializer + "\n").encode())
    paths, captions, masks = [], [], []
    for it in ctx.items:  # paths relative to the list files (compositions/); one folder per image (scenes list)
        paths.append(f"images/{it.key}/{it.key}.png")
        masks.append(f"masks/{it.key}.png")
        copy_file(it.image_path, out / "compositions" / paths[-1])
        copy_file(it.s2_dir / "mask.png", out / "compositions" / masks[-1])
        captions.append(" ".join(it.captions.personalized.split()))
    for name, lines in (("images", paths), ("captions", captions), ("masks", masks)):
        write_bytes(out / "compositions" / f"{name}.txt", "".join(x + "\n" for x in lines).encode())
    scenes = [{"instance_prompt": text, "instance_data_dir": f"compositions/images/{it.key}"}
              for it, text in zip(ctx.items, captions)]
    write_bytes(out / "concepts_list_scenes.json", json_bytes(scenes))
    write_bytes(out / "train.sh", train_script(modifier, initializer, ctx).encode())
    (out / "train.sh").chmod(0o755)
    return {"customdiffusion concepts": len(concepts_list)}


def train_script(modifier: str, initializer: str, ctx: ExportContext) -> str:
    example = next((it.captions.personalized for it in ctx.items if it.captions.personalized), "")
    base = ctx.settings.customdiffusion.base  # conf: ${train.base}, so both start from one model
    return f"""#!/usr/bin/env bash
# Custom Diffusion on this dataset with diffusers' examples/custom_diffusion/train_custom_diffusion.py
# (pip install diffusers[training]; get the script from the diffusers repository, same version).
#   ./train.sh [references] [extra args]  each concept's reference photos, one prompt per concept, with prior
#                                         preservation (class images are generated into class_images/<concept>/)
#   ./train.sh scenes [extra args]        the composed scenes, each with its own personalized caption
#                                         (concepts_list_scenes.json; no prior preservation)
set -euo pipefail
cd "$(dirname "$0")"
DEFAULT_MODEL={shlex.quote(base)}
MODEL_NAME="${{MODEL_NAME:-$DEFAULT_MODEL}}"
TRAIN_SCRIPT="${{TRAIN_SCRIPT:-train_custom_diffusion.py}}"
MODE="references"
if [ "$#" -gt 0 ] && [ "$1" = "scenes" -o "$1" = "references" ]; then MODE="$1"; shift; fi
if [ "$MODE" = "scenes" ]; then
  DATA=(--concepts_list=concepts_list_scenes.json)
else
  DATA=(--concepts_list=concepts_list.json --with_prior_preservation --prior_loss_weight=1.0 --num_class_images=200)
fi
accelerate launch "$TRAIN_SCRIPT" \\
  --pretrained_model_name_or_path="$MODEL_NAME" \\
  --output_dir="${{OUTPUT_DIR:-custom-diffusion-{ctx.name}-$MODE}}" \\
  "${{DATA[@]}}" \\
  --resolution=512 --train_batch_size=2 --learning_rate=1e-5 --lr_warmup_steps=0 \\
  --max_train_steps=500 --scale_lr --hflip \\
  --modifier_token={shlex.quote(modifier)} \\
  --initializer_token={shlex.quote(initializer)} \\
  --validation_prompt={shlex.quote(example)} \\
  "$@"
"""
