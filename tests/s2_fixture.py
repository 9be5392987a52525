"""A synthetic s2 output written per the s2 contract (COMMON.md), for s3 and later stages' tests."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from gen4gen.io import json_bytes, png_bytes, write_atomic


def blob(h: int, w: int, box: tuple[int, int, int, int], soft: float = 1.5) -> np.ndarray:
    """Soft elliptical mask (float 0..1) filling ``box`` = (x, y, bw, bh), plateau exactly 1.0."""
    x, y, bw, bh = box
    m = np.zeros((h, w), np.uint8)
    cv2.ellipse(m, (x + bw // 2, y + bh // 2), (bw // 2, bh // 2), 0, 0, 360, 255, -1)
    m = cv2.GaussianBlur(m.astype(np.float32) / 255.0, (0, 0), soft) if soft > 0 else m / 255.0
    m[m > 0.995] = 1.0
    m[m < 0.005] = 0.0
    return m.astype(np.float32)


def make_composition(s2_root: Path, scene: str, comp_id: str, *, size=(96, 80), seed: int = 0,
                     objects=(("cat", (8, 30, 36, 44), (200, 90, 40)), ("dog", (52, 24, 36, 52), (60, 70, 160))),
                     background_prompt: str = "in the garden", scenes=("in the garden", "at the beach"),
                     config_hash: str = "s2hash0") -> Path:
    """``<s2_root>/<scene>/<comp_id>/`` with image.png, image_rgba.png, mask.png, instances/, layout.json, meta.json.
    Each object is a textured soft ellipse ``(concept, box (x, y, w, h), base colour)``."""
    w, h = size
    rng = np.random.default_rng(seed)
    d = s2_root / scene / comp_id
    rgb = np.zeros((h, w, 3), np.float32)
    union = np.zeros((h, w), np.float32)
    layout_objects, counts = [], {}
    for z, (concept, box, colour) in enumerate(objects):
        k = counts.get(concept, 0)
        counts[concept] = k + 1
        a = blob(h, w, box)
        texture = np.asarray(colour, np.float32) + rng.normal(0, 25, (h, w, 3))  # texture: exactness is testable
        rgb = texture * a[..., None] + rgb * (1 - a[..., None])
        union = np.maximum(union, a)
        name = f"{concept}_{k}"
        write_atomic(d / "instances" / f"{name}.png", png_bytes((a * 255 + 0.5).astype(np.uint8)))
        layout_objects.append({"name": name, "concept": concept, "index": k, "box": list(box),
                               "planned_box": list(box), "source": f"{scene}/{concept}/photo{k}",
                               "source_path": f"/nowhere/{concept}.png",
                               "transform": {"scale": 1.0, "flip": False, "rotation": 0.0, "shift": [0, 0]},
                               "mask": f"instances/{name}.png", "z": z, "visible_fraction": 1.0})
    rgb8 = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    a8 = (union * 255 + 0.5).astype(np.uint8)
    premul = (rgb8 * (a8[..., None] / 255.0) + 0.5).astype(np.uint8)
    write_atomic(d / "image.png", png_bytes(premul))
    write_atomic(d / "image_rgba.png", png_bytes(Image.fromarray(np.dstack([rgb8, a8]), "RGBA")))
    write_atomic(d / "mask.png", png_bytes(a8))
    layout = {"scene": scene, "composition_id": comp_id, "size": [w, h], "planner": "heuristic", "fallback": None,
              "background_prompt": background_prompt, "scenes": list(scenes), "objects": layout_objects,
              "paste_order": [o["name"] for o in layout_objects], "size_ratios": None, "llm": None, "seed": seed}
    write_atomic(d / "layout.json", json_bytes(layout))
    write_atomic(d / "meta.json", json_bytes({"id": f"{scene}/{comp_id}", "stage": "s2", "config_hash": config_hash,
                                              "fingerprint": "", "composition_id": comp_id}))
    return d


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text("utf-8"))
