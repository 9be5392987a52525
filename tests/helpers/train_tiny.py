"""A tiny exported dataset (the ``mycanvas/index.jsonl`` contract of stage=export) for the train tests:
two composed scenes with personalised captions and union masks, and reference cut-outs per concept."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def save_tiny_dataset(root: Path, size: int = 40) -> Path:
    rng = np.random.default_rng(0)
    ds = root / "datasets" / "demo"
    mc = ds / "mycanvas"
    rows = []
    for k, (caption, concepts) in enumerate([("<new1> cat on the left and <new2> dog on the right in the garden",
                                              ["cat", "dog"]),
                                             ("<new2> dog above <new1> cat on the beach", ["cat", "dog"])]):
        item = f"pets/cat+dog_{k:03d}/v0_procedural"
        (mc / item).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8)).save(mc / item / "image.png")
        mask = np.zeros((size, size + 8), np.uint8)
        mask[size // 4: 3 * size // 4, 4: size // 2] = 255
        Image.fromarray(mask).save(mc / item / "mask.png")
        plain = caption.replace("<new1> ", "").replace("<new2> ", "")
        rows.append({"id": item, "image": f"{item}/image.png", "scene": "pets", "concepts": concepts,
                     "captions": {"short": "a cat and a dog", "detailed": plain, "personalized": caption},
                     "modifier_tokens": {"cat": "<new1>", "dog": "<new2>"},
                     "reference_images": {c: [f"mycanvas/references/{c}/pets__{c}_0.png"] for c in concepts},
                     "mask": f"{item}/mask.png", "instances": []})
    for c in ("cat", "dog"):
        (mc / "references" / c).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
            mc / "references" / c / f"pets__{c}_0.png")
    (mc / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    return ds
