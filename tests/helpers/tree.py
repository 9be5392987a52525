"""One stage-tree builder: writes s1..s4 item folders exactly as the stages do, through the artefact
models of ``gen4gen.artefacts`` and the folder names of ``STAGE_DIRS`` (a test never spells them)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from gen4gen.artefacts import META_MODELS, Layout, stage_rel
from gen4gen.io import png_bytes, write_atomic
from gen4gen.paths import STAGE_DIRS


def ellipse(size: tuple[int, int], box: tuple[int, int, int, int], blur: int = 0) -> np.ndarray:
    """uint8 alpha: a filled ellipse inscribed in ``box`` = (x, y, w, h) on a canvas of ``size`` = (w, h);
    ``blur``: the kernel of a Gaussian blur that softens its edge (0: hard)."""
    w, h = size
    m = np.zeros((h, w), np.uint8)
    x, y, bw, bh = box
    cv2.ellipse(m, (x + bw // 2, y + bh // 2), (bw // 2, bh // 2), 0, 0, 360, 255, -1)
    return cv2.GaussianBlur(m, (blur, blur), 0) if blur else m


def blob(h: int, w: int, box: tuple[int, int, int, int], soft: float = 1.5) -> np.ndarray:
    """The ellipse as a float 0..1 mask with a soft edge of ``soft`` px (sigma) and a plateau of exactly 1.0."""
    m = ellipse((w, h), box)
    m = cv2.GaussianBlur(m.astype(np.float32) / 255.0, (0, 0), soft) if soft > 0 else m / 255.0
    m[m > 0.995] = 1.0
    m[m < 0.005] = 0.0
    return m.astype(np.float32)


def cutout(h: int, w: int, seed: int, soft: bool = False, shape: str = "ellipse") -> np.ndarray:
    """An RGBA cut-out: a textured object (gradients + a pattern, so resampling errors show) on a
    transparent margin; alpha binary or soft-edged."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(40, 215, 3)
    rgb = np.stack([base[0] + 30 * np.sin(xx / 9.0), base[1] + 30 * np.cos(yy / 7.0),
                    base[2] + 25 * np.sin((xx + yy) / 13.0)], -1)
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    m = max(2, min(h, w) // 10)
    if shape == "ellipse":
        alpha = ellipse((w, h), (m, m, 2 * (w // 2 - m), 2 * (h // 2 - m)))
    else:
        alpha = np.zeros((h, w), np.uint8)
        alpha[m:h - m, m:w - m] = 255
    if soft:
        alpha = cv2.GaussianBlur(alpha, (0, 0), 2.0)
    return np.dstack([rgb, alpha])


def bbox_xyxy(alpha: np.ndarray, threshold: int = 1) -> list[int] | None:
    ys, xs = np.nonzero(alpha >= threshold)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if ys.size else None


class StageTree:
    """``<root>/stages`` written item by item; ``meta()`` goes through the stage's meta model."""

    def __init__(self, stages: Path):
        self.stages = Path(stages)

    def dir(self, stage: str) -> Path:
        return self.stages / STAGE_DIRS[stage]

    def meta(self, stage: str, folder: Path, item_id: str, **fields) -> dict:
        meta = {"id": item_id, "stage": stage, "config_hash": f"{stage}hash", "fingerprint": f"fp-{item_id}",
                **fields}
        write_atomic(folder / "meta.json", META_MODELS[stage].build(meta).dump())
        return meta

    def s1_item(self, scene: str, concept: str, stem: str, rgba: np.ndarray, **meta) -> Path:
        """A cut-out with its mask and meta (bbox and size from the alpha unless given)."""
        folder = self.dir("s1") / scene / concept / stem
        write_atomic(folder / "cutout.png", png_bytes(rgba))
        write_atomic(folder / "mask.png", png_bytes(rgba[..., 3]))
        fields = {"scene": scene, "concept": concept, "size": [int(rgba.shape[1]), int(rgba.shape[0])],
                  "bbox_xyxy": bbox_xyxy(rgba[..., 3]), "flags": [], **meta}
        self.meta("s1", folder, f"{scene}/{concept}/{stem}", **fields)
        return folder / "cutout.png"

    def composition(self, scene: str, comp: str, *, image: np.ndarray, rgba: np.ndarray, mask: np.ndarray,
                    instances: dict[str, np.ndarray], objects: list[dict], layout: dict | None = None,
                    meta: dict | None = None) -> Path:
        """An s2 folder: images, instance masks, ``layout.json`` (``objects`` plus ``layout`` keys) and meta."""
        folder = self.dir("s2") / scene / comp
        write_atomic(folder / "image.png", png_bytes(image))
        write_atomic(folder / "image_rgba.png", png_bytes(rgba))
        write_atomic(folder / "mask.png", png_bytes(mask))
        for name, m in instances.items():
            write_atomic(folder / "instances" / f"{name}.png", png_bytes(m))
        h, w = mask.shape
        fields = {"scene": scene, "composition_id": comp, "size": [w, h], "planner": "heuristic", "fallback": None,
                  "background_prompt": "", "scenes": [], **(layout or {}), "objects": objects}
        fields.setdefault("paste_order", [o["name"] for o in objects])
        write_atomic(folder / "layout.json", Layout.build(fields).dump())
        self.meta("s2", folder, f"{scene}/{comp}", **{"scene": scene, "composition_id": comp, **(meta or {})})
        return folder

    def final(self, scene: str, comp: str, variant: str, *, image: np.ndarray, mask_used: np.ndarray,
              **meta) -> Path:
        """An s3 variant: the final image, the repainted mask and meta pointing at its composition."""
        folder = self.dir("s3") / scene / comp / variant
        write_atomic(folder / "image.png", png_bytes(image))
        write_atomic(folder / "mask_used.png", png_bytes(mask_used))
        self.meta("s3", folder, f"{scene}/{comp}/{variant}", composition=f"{scene}/{comp}",
                  composition_dir=stage_rel(self.dir("s2") / scene / comp, self.stages), variant=variant, **meta)
        return folder

    def failure(self, stage: str, item_id: str, reason: str) -> None:
        """Append a failure line as the runner writes it."""
        path = self.dir(stage) / "failures.jsonl"
        old = path.read_text("utf-8") if path.exists() else ""
        line = json.dumps({"stage": stage, "id": item_id, "path": str(self.dir(stage) / item_id), "reason": reason})
        write_atomic(path, (old + line + "\n").encode("utf-8"))
