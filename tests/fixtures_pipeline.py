"""A tiny but realistic s1 + s2 + s3 tree, written exactly as the stage contracts (COMMON.md) say, so s4
and export are tested without running segmentation, composition or repainting.

Two scenes: ``pets`` (a cat left of two dogs, "in the garden") and ``kitchen`` (a plant with a cat
standing in front of it, overlapping, "on a kitchen table"), one or more s3 variants each.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from gen4gen.io import json_bytes, png_bytes, write_atomic

COLOURS = {"cat": (230, 140, 40), "dog": (120, 80, 40), "plant": (40, 170, 60)}
SCENES = {
    # scene: (composition id, background phrase, objects [(concept, index, (x, y, w, h))] in paste order),
    # or a list of such tuples for several compositions of one scene
    "pets": ("cat+dog_000", "in the garden",
             [("dog", 0, (50, 30, 20, 40)), ("dog", 1, (74, 34, 18, 36)), ("cat", 0, (6, 40, 24, 30))]),
    "kitchen": ("cat+plant_000", "on a kitchen table",
                [("plant", 0, (30, 10, 40, 60)), ("cat", 0, (40, 50, 30, 40))]),
}


def colour(concept: str) -> tuple[int, int, int]:
    """The fixed colour of a known concept, or one derived from its name."""
    if concept in COLOURS:
        return COLOURS[concept]
    h = sum(map(ord, concept))
    return (h * 37 % 200 + 30, h * 71 % 200 + 30, h * 113 % 200 + 30)


def ellipse(size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """A soft-edged ellipse filling ``box`` on a canvas of ``size`` (w, h): uint8 alpha."""
    w, h = size
    m = np.zeros((h, w), np.uint8)
    x, y, bw, bh = box
    cv2.ellipse(m, (x + bw // 2, y + bh // 2), (bw // 2, bh // 2), 0, 0, 360, 255, -1)
    return cv2.GaussianBlur(m, (3, 3), 0)


def _meta(folder: Path, item_id: str, stage: str, **extra) -> None:
    write_atomic(folder / "meta.json", json_bytes({"id": item_id, "stage": stage, "config_hash": f"{stage}hash",
                                                   "fingerprint": f"fp-{item_id}", **extra}))


def make_pipeline(root: Path, size: tuple[int, int] = (100, 100), variants: tuple[str, ...] = ("v0_procedural",),
                  scenes: dict | None = None, seed: int = 0) -> dict:
    """Write ``root/stages/{s1,s2,s3}`` and return what a test needs to know about them."""
    scenes = scenes or SCENES
    rng = np.random.default_rng(seed)
    stages = root / "stages"
    s1, s2, s3 = stages / "s1_segmented_foreground", stages / "s2_object_compositions", stages / "s3_background_repainting"
    w, h = size
    info = {"stages": stages, "finals": [], "instances": {}, "layouts": {}, "cutouts": {}}
    for scene, compositions in scenes.items():
        compositions = compositions if isinstance(compositions, list) else [compositions]
        # s1: two cut-outs per concept of the scene
        sources = {}
        for concept in sorted({o[0] for _, _, objects in compositions for o in objects}):
            for k in (1, 2):
                stem = f"{concept}_{k:02d}"
                folder = s1 / scene / concept / stem
                alpha = ellipse((60, 80), (4 + k, 6, 50 - 2 * k, 66))
                rgb = np.zeros((80, 60, 3), np.uint8) + np.array(colour(concept), np.uint8)
                rgb = np.clip(rgb.astype(int) + rng.integers(-20, 20, rgb.shape), 0, 255).astype(np.uint8)
                write_atomic(folder / "cutout.png", png_bytes(np.dstack([rgb, alpha])))
                write_atomic(folder / "mask.png", png_bytes(alpha))
                ys, xs = np.nonzero(alpha)
                _meta(folder, f"{scene}/{concept}/{stem}", "s1", scene=scene, concept=concept,
                      source=str(root / "src" / scene / concept / f"{stem}.jpg"), size=[60, 80],
                      bbox_xyxy=[int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1],
                      area_fraction=float((alpha > 127).mean()), quality=0.9, flags=[], backend="u2netp")
                sources.setdefault(concept, []).append(f"{scene}/{concept}/{stem}")
                info["cutouts"].setdefault(concept, []).append(folder / "cutout.png")
        for comp, background, objects in compositions:
            # s2: paste in order; later objects hide earlier ones
            comp_dir = s2 / scene / comp
            canvas = np.zeros((h, w, 3), np.uint8)
            union = np.zeros((h, w), np.uint8)
            alphas = []
            for concept, k, box in objects:
                a = ellipse(size, box)
                alphas.append(a)
                canvas = np.where(a[..., None] > 0, np.array(colour(concept), np.uint8), canvas)
                union = np.maximum(union, a)
            visible = []
            for i, a in enumerate(alphas):
                cover = np.max(alphas[i + 1:], axis=0) if i + 1 < len(alphas) else np.zeros_like(a)
                visible.append(np.where(cover > 0, 0, a).astype(np.uint8))
            layout_objects, instances = [], {}
            for z, ((concept, k, box), vis) in enumerate(zip(objects, visible)):
                name = f"{concept}_{k}"
                ys, xs = np.nonzero(vis)
                tight = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
                write_atomic(comp_dir / "instances" / f"{name}.png", png_bytes(vis))
                instances[name] = vis
                layout_objects.append({"name": name, "concept": concept, "index": k, "box": tight, "planned_box": list(box),
                                       "source": sources[concept][k % 2],
                                       "source_path": str(s1 / sources[concept][k % 2] / "cutout.png"),
                                       "transform": {"scale": 1.0, "flip": False, "rotation": 0.0, "shift": [0, 0]},
                                       "mask": f"instances/{name}.png", "z": z,
                                       "visible_fraction": round(float((vis > 0).sum() / max(1, (alphas[z] > 0).sum())), 3)})
            write_atomic(comp_dir / "image.png", png_bytes(canvas))
            write_atomic(comp_dir / "image_rgba.png", png_bytes(np.dstack([canvas, union])))
            write_atomic(comp_dir / "mask.png", png_bytes(union))
            layout = {"scene": scene, "composition_id": comp, "size": [w, h], "planner": "heuristic", "fallback": None,
                      "background_prompt": background, "scenes": [background], "objects": layout_objects,
                      "paste_order": [o["name"] for o in layout_objects], "size_ratios": None, "llm": None, "seed": 0}
            write_atomic(comp_dir / "layout.json", json_bytes(layout))
            _meta(comp_dir, f"{scene}/{comp}", "s2", planner="heuristic")
            info["layouts"][f"{scene}/{comp}"] = layout
            # s3: a background under the exact concept pixels
            for v, variant in enumerate(variants):
                folder = s3 / scene / comp / variant
                yy, xx = np.mgrid[0:h, 0:w]
                bg = np.dstack([(xx * 255 // w), (yy * 255 // h), np.full_like(xx, 60 + 40 * v)]).astype(np.uint8)
                a = union[..., None].astype(np.float32) / 255.0
                final = (canvas * a + bg * (1 - a) + 0.5).astype(np.uint8)
                write_atomic(folder / "image.png", png_bytes(final))
                write_atomic(folder / "mask_used.png", png_bytes(255 - union))
                item_id = f"{scene}/{comp}/{variant}"
                _meta(folder, item_id, "s3", composition=f"{scene}/{comp}", composition_dir=str(comp_dir),
                      variant=variant, background={"kind": variant.split("_", 1)[1], "source": None,
                                                                "phrase": background, "fallback": None},
                      backend="classical", prompt=f"a photo {background}")
                info["finals"].append(item_id)
                info["instances"][item_id] = instances
    for root_dir in (s1, s2, s3):
        write_atomic(root_dir / "failures.jsonl", b"")
    info["finals"].sort()
    return info


def add_failure(stages: Path, stage_dir: str, stage: str, item_id: str, reason: str) -> None:
    """Append a failure line as the runner writes it."""
    path = stages / stage_dir / "failures.jsonl"
    old = path.read_text("utf-8") if path.exists() else ""
    line = json.dumps({"stage": stage, "id": item_id, "path": str(stages / stage_dir / item_id), "reason": reason})
    write_atomic(path, (old + line + "\n").encode("utf-8"))
