"""In-context examples for the LLM planner, read from a COCO ``instances`` (and ``captions``) file."""
from __future__ import annotations

import contextlib
import io
from collections import Counter

import numpy as np

from gen4gen.layout.schema import prompt_label
from gen4gen.llm.replies import clean_text


class CocoExamples:
    """Few-shot layouts from a COCO ``instances`` file (and optional ``captions`` file): images with
    2-6 plain objects, boxes converted from pixels to the planner's frame."""

    def __init__(self, instances: str, captions: str | None = None, frame: int = 512, max_objects: int = 6):
        from pycocotools.coco import COCO

        self.source = str(instances)
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress to stdout
            coco = COCO(str(instances))
            caps = COCO(str(captions)) if captions else None
        self.items = []
        for img_id in sorted(coco.getImgIds()):
            img = coco.loadImgs(img_id)[0]
            W, H = float(img["width"]), float(img["height"])
            anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=False))
                    if a["bbox"][2] * a["bbox"][3] >= 0.01 * W * H]
            if not 2 <= len(anns) <= max_objects:
                continue
            names = [coco.loadCats(a["category_id"])[0]["name"] for a in anns]
            counts: Counter = Counter()
            ids, labels, objects = [], [], []
            for a, name in zip(anns, names):
                label = prompt_label(name)
                ids.append(f"{label.replace(' ', '_')}_{counts[label]}")
                counts[label] += 1
                labels.append(label)
                x, y, w, h = a["bbox"]
                objects.append({"name": ids[-1], "box": [round(x * frame / W), round(y * frame / H),
                                                         round(w * frame / W), round(h * frame / H)]})
            caption = ""
            if caps is not None:
                texts = [c["caption"] for c in caps.loadAnns(caps.getAnnIds(imgIds=img_id))]
                caption = clean_text(texts[0]) if texts else ""
            self.items.append({"ids": ids, "labels": labels, "scene": caption or "a realistic photo",
                               "reply": {"objects": objects, "background_prompt": caption or "a realistic photo"}})
        if not self.items:
            raise ValueError(f"{instances}: no image with 2-{max_objects} objects to use as an example")

    def pick(self, k: int, rng: np.random.Generator) -> list[dict]:
        k = min(k, len(self.items))
        return [self.items[i] for i in sorted(rng.choice(len(self.items), size=k, replace=False))]
