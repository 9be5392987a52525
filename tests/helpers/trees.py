"""The canned stage trees tests start from, written through ``StageTree``:

- ``fake_s1``: synthetic s1 cut-outs (per scene, concept, count) for s2 tests and benchmarks;
- ``real_s1``: s1 outputs from real photos and their reference masks;
- ``make_composition``: one synthetic s2 composition for s3 tests;
- ``make_pipeline``: a tiny but realistic s1 + s2 + s3 tree, so s4 and export are tested without
  running segmentation, composition or repainting. Two scenes: ``pets`` (a cat left of two dogs,
  "in the garden") and ``kitchen`` (a plant with a cat standing in front of it, overlapping,
  "on a kitchen table"), one or more s3 variants each.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from gen4gen.io import write_atomic
from tests.helpers.tree import StageTree, blob, cutout, ellipse

COLOURS = {"cat": (230, 140, 40), "dog": (120, 80, 40), "plant": (40, 170, 60)}
SCENES = {
    # scene: (composition id, background phrase, objects [(concept, index, (x, y, w, h))] in paste order),
    # or a list of such tuples for several compositions of one scene
    "pets": ("cat+dog_000", "in the garden",
             [("dog", 0, (50, 30, 20, 40)), ("dog", 1, (74, 34, 18, 36)), ("cat", 0, (6, 40, 24, 30))]),
    "kitchen": ("cat+plant_000", "on a kitchen table",
                [("plant", 0, (30, 10, 40, 60)), ("cat", 0, (40, 50, 30, 40))]),
}
TRANSFORM = {"scale": 1.0, "flip": False, "rotation": 0.0, "shift": [0, 0]}


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text("utf-8"))


def colour(concept: str) -> tuple[int, int, int]:
    """The fixed colour of a known concept, or one derived from its name."""
    if concept in COLOURS:
        return COLOURS[concept]
    h = sum(map(ord, concept))
    return (h * 37 % 200 + 30, h * 71 % 200 + 30, h * 113 % 200 + 30)


def fake_s1(stages_dir: Path, scenes: dict[str, dict[str, int]], size: tuple[int, int] = (240, 200),
            soft: bool = False, empty: set[tuple[str, str]] = frozenset(), seed: int = 0) -> list[Path]:
    """``scenes``: scene -> concept -> number of photos. ``empty``: (scene, concept) whose masks s1
    flagged empty. Returns the cut-out paths."""
    tree = StageTree(stages_dir)
    paths = []
    k = seed
    for scene, concepts in scenes.items():
        for concept, n in concepts.items():
            for i in range(n):
                k += 1
                h, w = size[1] + 17 * i, size[0] - 11 * i
                rgba = cutout(h, w, k, soft=soft, shape="ellipse" if k % 2 else "box")
                is_empty = (scene, concept) in empty
                if is_empty:
                    rgba[..., 3] = 0
                paths.append(tree.s1_item(
                    scene, concept, f"photo_{i}", rgba, config_hash="s1hash", fingerprint=f"fp{k}",
                    source=f"/photos/{scene}/{concept}/photo_{i}.jpg",
                    area_fraction=float((rgba[..., 3] > 127).mean()), quality=0.0 if is_empty else 0.9,
                    flags=["empty"] if is_empty else [], backend="synthetic"))
    return paths


def real_s1(stages_dir: Path, photos: dict[str, dict[str, list[tuple[Path, Path]]]], max_side: int = 1024) -> None:
    """s1 outputs from real photos and reference masks: scene -> concept -> [(photo, mask)]; photos
    are shrunk to ``max_side`` first, which keeps the tests fast (PNG-encoding a 4k cut-out is slow)."""
    from gen4gen.images import read_image

    tree = StageTree(stages_dir)
    for scene, concepts in photos.items():
        for concept, pairs in concepts.items():
            for photo, mask_path in pairs:
                rgb = read_image(photo)
                mask = read_image(mask_path, mode="L")
                f = min(1.0, max_side / max(rgb.shape[:2]))
                size = (max(1, round(rgb.shape[1] * f)), max(1, round(rgb.shape[0] * f)))
                rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
                mask = cv2.resize(mask, size, interpolation=cv2.INTER_AREA)
                ys, xs = np.nonzero(mask >= 128)
                tree.s1_item(scene, concept, photo.stem, np.dstack([rgb, mask]), config_hash="ref",
                             fingerprint=photo.name, source=str(photo), backend="reference mask",
                             bbox_xyxy=[int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1])


def make_composition(s2_root: Path, scene: str, comp_id: str, *, size=(96, 80), seed: int = 0,
                     objects=(("cat", (8, 30, 36, 44), (200, 90, 40)), ("dog", (52, 24, 36, 52), (60, 70, 160))),
                     background_prompt: str = "in the garden", scenes=("in the garden", "at the beach"),
                     config_hash: str = "s2hash0") -> Path:
    """``<s2_root>/<scene>/<comp_id>/`` with image.png, image_rgba.png, mask.png, instances/, layout.json, meta.json.
    Each object is a textured soft ellipse ``(concept, box (x, y, w, h), base colour)``."""
    tree = StageTree(Path(s2_root).parent)
    w, h = size
    rng = np.random.default_rng(seed)
    rgb = np.zeros((h, w, 3), np.float32)
    union = np.zeros((h, w), np.float32)
    layout_objects, counts, instances = [], {}, {}
    for z, (concept, box, col) in enumerate(objects):
        k = counts.get(concept, 0)
        counts[concept] = k + 1
        a = blob(h, w, box)
        texture = np.asarray(col, np.float32) + rng.normal(0, 25, (h, w, 3))  # texture: exactness is testable
        rgb = texture * a[..., None] + rgb * (1 - a[..., None])
        union = np.maximum(union, a)
        name = f"{concept}_{k}"
        instances[name] = (a * 255 + 0.5).astype(np.uint8)
        layout_objects.append({"name": name, "concept": concept, "index": k, "box": list(box),
                               "planned_box": list(box), "source": f"{scene}/{concept}/photo{k}",
                               "source_path": f"/nowhere/{concept}.png", "transform": TRANSFORM,
                               "mask": f"instances/{name}.png", "z": z, "visible_fraction": 1.0})
    rgb8 = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    a8 = (union * 255 + 0.5).astype(np.uint8)
    premul = (rgb8 * (a8[..., None] / 255.0) + 0.5).astype(np.uint8)
    return tree.composition(scene, comp_id, image=premul, rgba=Image.fromarray(np.dstack([rgb8, a8]), "RGBA"),
                            mask=a8, instances=instances, objects=layout_objects,
                            layout={"background_prompt": background_prompt, "scenes": list(scenes),
                                    "size_ratios": None, "llm": None, "seed": seed},
                            meta={"config_hash": config_hash, "fingerprint": ""})


def make_pipeline(root: Path, size: tuple[int, int] = (100, 100), variants: tuple[str, ...] = ("v0_procedural",),
                  scenes: dict | None = None, seed: int = 0, background: dict | None = None) -> dict:
    """Write ``root/stages/{s1,s2,s3}`` and return what a test needs to know about them (``background``: fields
    added to every final image's s3 ``background``, e.g. a photo's source and flag)."""
    scenes, extra = scenes or SCENES, background
    rng = np.random.default_rng(seed)
    tree = StageTree(root / "stages")
    w, h = size
    info = {"stages": tree.stages, "finals": [], "instances": {}, "layouts": {}, "cutouts": {}}
    for scene, compositions in scenes.items():
        compositions = compositions if isinstance(compositions, list) else [compositions]
        # s1: two cut-outs per concept of the scene
        sources = {}
        for concept in sorted({o[0] for _, _, objects in compositions for o in objects}):
            for k in (1, 2):
                stem = f"{concept}_{k:02d}"
                alpha = ellipse((60, 80), (4 + k, 6, 50 - 2 * k, 66), blur=3)
                rgb = np.zeros((80, 60, 3), np.uint8) + np.array(colour(concept), np.uint8)
                rgb = np.clip(rgb.astype(int) + rng.integers(-20, 20, rgb.shape), 0, 255).astype(np.uint8)
                path = tree.s1_item(scene, concept, stem, np.dstack([rgb, alpha]),
                                    source=str(root / "src" / scene / concept / f"{stem}.jpg"),
                                    area_fraction=float((alpha > 127).mean()), quality=0.9, backend="u2netp")
                sources.setdefault(concept, []).append(f"{scene}/{concept}/{stem}")
                info["cutouts"].setdefault(concept, []).append(path)
        for comp, background, objects in compositions:
            # s2: paste in order; later objects hide earlier ones
            canvas = np.zeros((h, w, 3), np.uint8)
            union = np.zeros((h, w), np.uint8)
            alphas = []
            for concept, k, box in objects:
                a = ellipse(size, box, blur=3)
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
                instances[name] = vis
                source = sources[concept][k % 2]
                layout_objects.append({"name": name, "concept": concept, "index": k, "box": tight,
                                       "planned_box": list(box), "source": source,
                                       "source_path": f"{tree.dir('s1').name}/{source}/cutout.png",
                                       "transform": TRANSFORM, "mask": f"instances/{name}.png", "z": z,
                                       "visible_fraction": round(float((vis > 0).sum()
                                                                         / max(1, (alphas[z] > 0).sum())), 3)})
            tree.composition(scene, comp, image=canvas, rgba=np.dstack([canvas, union]), mask=union,
                             instances=instances, objects=layout_objects,
                             layout={"background_prompt": background, "scenes": [background], "size_ratios": None,
                                     "llm": None, "seed": 0}, meta={"planner": "heuristic"})
            info["layouts"][f"{scene}/{comp}"] = read_json(tree.dir("s2") / scene / comp / "layout.json")
            # s3: a background under the exact concept pixels
            for v, variant in enumerate(variants):
                yy, xx = np.mgrid[0:h, 0:w]
                bg = np.dstack([(xx * 255 // w), (yy * 255 // h), np.full_like(xx, 60 + 40 * v)]).astype(np.uint8)
                a = union[..., None].astype(np.float32) / 255.0
                final = (canvas * a + bg * (1 - a) + 0.5).astype(np.uint8)
                tree.final(scene, comp, variant, image=final, mask_used=255 - union,
                           background={"kind": variant.split("_", 1)[1], "source": None, "phrase": background,
                                       "fallback": None, **(extra or {})}, backend="classical",
                           prompt=f"a photo {background}")
                item_id = f"{scene}/{comp}/{variant}"
                info["finals"].append(item_id)
                info["instances"][item_id] = instances
    for stage in ("s1", "s2", "s3"):
        write_atomic(tree.dir(stage) / "failures.jsonl", b"")
    info["finals"].sort()
    return info


def add_failure(stages: Path, stage: str, item_id: str, reason: str) -> None:
    """Append a failure line as the runner writes it."""
    StageTree(stages).failure(stage, item_id, reason)
