"""Metrics that must notice: counterfactual images made from an exported dataset's own final images and instance
masks, each scored against its true image. A metric notices a change when the true image scores strictly above
its counterfactual; its detection rate per class of change is what the report shows, and a class it notices in
fewer than ``target`` of the cases is flagged.

Classes of change (per instance A of an image; B another concept of the image; C a concept of another image):
``swap`` A and B trade pixels, ``drop`` A is painted out, ``duplicate`` A is replaced by a copy of B, and
``substitute`` A is replaced by C's cut-out. Every metric is scored at the true instance boxes (the detector is
not under test: a class detector would find "a cat" wherever the cat's pixels went), with one image encoder:

- ``identity_mix``: the margin of ``identity.py`` (others = every concept of the dataset);
- ``cp_clip``: CP-CLIP's rule (each crop against its own concept's references only);
- ``clip_i``: the whole image against the references of its concepts (CLIP-I / DINO's rule).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gen4gen.artefacts import explain
from gen4gen.bench.identity import identity_margins, reference_similarity
from gen4gen.errors import ItemFailed
from gen4gen.hashing import stable_hash
from gen4gen.images import BadImage, read_image
from gen4gen.artefacts import MyCanvasRow

KINDS = ("swap", "drop", "duplicate", "substitute")
METRICS = ("identity_mix", "cp_clip", "clip_i")


class _Instance(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    concept: str
    bbox: list[float] = Field(min_length=4, max_length=4)  # x, y, w, h
    mask: str


class Rate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metric: str
    kind: str
    cases: int = Field(ge=0)
    noticed: int = Field(ge=0)
    rate: float = Field(ge=0, le=1)
    flag: str
    backbone: str = ""


class CheckFile(BaseModel):
    """``<run>/counterfactual.json``: what the report reads back."""
    model_config = ConfigDict(extra="forbid")
    key: str
    backbone: str
    images: int = Field(ge=0)
    rates: list[Rate]
    problems: list[str] = Field(default_factory=list)


def read_check(path: Path) -> dict | None:
    """The check's file as a dict, None when there is none; a file of another shape is one line and left out."""
    try:
        return CheckFile.model_validate_json(Path(path).read_text("utf-8")).model_dump()
    except OSError:
        return None
    except ValidationError as e:
        import logging

        logging.getLogger(__name__).warning("%s: left out of the report: %s", path, explain(e))
        return None


@dataclass
class Instance:
    concept: str
    alpha: np.ndarray  # uint8 HxW (0..255): a quarter of float32's memory for 50 images at 1024 px
    box: tuple[int, int, int, int]  # x0, y0, x1, y1


@dataclass
class Scene:
    id: str
    image: np.ndarray  # HxWx3 uint8
    concepts: list[str]
    instances: list[Instance]


@dataclass
class Case:
    scene: int  # index into the scenes
    kind: str
    target: str  # what changed, in words ("cat <-> cup")
    image: np.ndarray


def load_scenes(root: Path, limit: int | None = None) -> tuple[list[Scene], dict[str, list[str]], list[str]]:
    """The dataset's images with their instance masks and every concept's reference files; a row that cannot be
    read is one problem line and left out."""
    root = Path(root)
    index = root / "mycanvas" / "index.jsonl"
    scenes, refs, problems = [], {}, []
    lines = index.read_text("utf-8").splitlines() if index.is_file() else []
    if not lines:
        problems.append(f"{index}: no exported images to build counterfactuals from")
    for n, line in enumerate(lines):
        if not line.strip() or (limit and len(scenes) >= limit):
            continue
        try:
            raw = json.loads(line)
            row = MyCanvasRow.parse(raw, "index.jsonl")
            insts = [_Instance.model_validate(x) for x in raw.get("instances") or []]
            if row.image is None or not insts:
                raise ItemFailed("no image or no instances")
            image = read_image(root / "mycanvas" / row.image)
            found = [_instance(root / "mycanvas" / i.mask, i, image.shape[:2]) for i in insts]
        except (ValueError, ItemFailed, BadImage) as e:
            reason = explain(e) if isinstance(e, ValidationError) else str(e)
            problems.append(f"{index.name}:{n + 1}: left out of the counterfactual check: {reason}")
            continue
        for c, paths in row.reference_images.items():
            refs.setdefault(c, [str(root / p) for p in paths])
        scenes.append(Scene(row.id, image, list(row.concepts), [f for f in found if f is not None]))
    return scenes, refs, problems


def _instance(path: Path, inst: _Instance, shape: tuple[int, int]) -> Instance | None:
    alpha = read_image(path, mode="L")
    if alpha.shape != shape:
        raise ItemFailed(f"{path.name}: mask {alpha.shape[::-1]} is not the image's size {shape[::-1]}")
    ys, xs = np.nonzero(alpha > 127)
    if not ys.size:
        return None  # a fully hidden instance has nothing to change
    return Instance(inst.concept, alpha, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))


# ---------------------------------------------------------------- making the counterfactual images
def erase(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The instance painted out (OpenCV's Telea inpainting over its slightly grown mask)."""
    import cv2

    hole = cv2.dilate((alpha > 12).astype(np.uint8) * 255, np.ones((7, 7), np.uint8))
    return cv2.inpaint(np.ascontiguousarray(image), hole, 5, cv2.INPAINT_TELEA)


def cut(image: np.ndarray, inst: Instance) -> tuple[np.ndarray, np.ndarray]:
    x0, y0, x1, y1 = inst.box
    return image[y0:y1, x0:x1], inst.alpha[y0:y1, x0:x1].astype(np.float32) / 255.0


def paste(image: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """A cut-out fitted into ``box`` (aspect kept, centred, standing on the box's bottom), alpha-blended."""
    import cv2

    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    scale = min(bw / rgb.shape[1], bh / rgb.shape[0])
    w, h = max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale))
    rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    a = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
    left, top = x0 + (bw - w) // 2, y1 - h
    out = image.astype(np.float32).copy()
    region = out[top:top + h, left:left + w]
    out[top:top + h, left:left + w] = a * rgb + (1 - a) * region
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def scene_cases(scenes: Sequence[Scene], s: int) -> list[Case]:
    """Every class of change for every instance of scene ``s`` (``swap`` once per pair of concepts),
    deterministic; donors of ``substitute`` come from the other scenes."""
    scene, cases = scenes[s], []
    insts = scene.instances
    for i, a in enumerate(insts):
        others = [b for b in insts if b.concept != a.concept]
        for b in [b for b in insts[i + 1:] if b.concept != a.concept]:
            img = erase(erase(scene.image, a.alpha), b.alpha)
            img = paste(img, *cut(scene.image, b), a.box)
            cases.append(Case(s, "swap", f"{a.concept} <-> {b.concept}", paste(img, *cut(scene.image, a), b.box)))
        cases.append(Case(s, "drop", a.concept, erase(scene.image, a.alpha)))
        if others:
            cases.append(Case(s, "duplicate", f"{a.concept} -> {others[0].concept}",
                              paste(erase(scene.image, a.alpha), *cut(scene.image, others[0]), a.box)))
        donors = [(t, d) for t, other in enumerate(scenes) for d in other.instances if d.concept not in scene.concepts]
        if donors:
            t, d = min(donors, key=lambda td: stable_hash(f"{scene.id}/{i}/{scenes[td[0]].id}/{td[1].concept}"))
            cases.append(Case(s, "substitute", f"{a.concept} -> {d.concept}",
                              paste(erase(scene.image, a.alpha), *cut(scenes[t].image, d), a.box)))
    return cases


def make_cases(scenes: Sequence[Scene]) -> list[Case]:
    return [c for s in range(len(scenes)) for c in scene_cases(scenes, s)]


# ---------------------------------------------------------------- scoring and rates
def score_many(images: Sequence[np.ndarray], scenes: Sequence[Scene], encoder: Any,
               refs: dict[str, np.ndarray]) -> list[dict[str, float]]:
    from PIL import Image

    pics, owners = [], []
    for k, (img, scene) in enumerate(zip(images, scenes)):
        pics.append(Image.fromarray(img))
        owners.append((k, None))
        for inst in scene.instances:
            x0, y0, x1, y1 = inst.box
            pics.append(Image.fromarray(img[y0:y1, x0:x1]))
            owners.append((k, inst.concept))
    embs = np.asarray(encoder.encode_images(pics), dtype=np.float64)
    out = [{"whole": None, "crops": []} for _ in images]
    for (k, concept), e in zip(owners, embs):
        if concept is None:
            out[k]["whole"] = e
        else:
            out[k]["crops"].append((concept, e))
    none = np.zeros((0, 1))
    scores = []
    for o, scene in zip(out, scenes):
        own = [reference_similarity(e, refs.get(c, none)) for c, e in o["crops"]]
        margins = [identity_margins({c: e}, refs)[c] for c, e in o["crops"]]
        mine = [refs[c] for c in scene.concepts if refs.get(c) is not None and refs[c].size]
        scores.append({"identity_mix": _mean(margins), "cp_clip": _mean(own),
                       "clip_i": reference_similarity(o["whole"], np.concatenate(mine)) if mine else math.nan})
    return scores


def _mean(values: list[float]) -> float:
    """NaN (a concept without references: nothing to compare) when any value is."""
    return float(np.mean(values)) if values else math.nan


def check(scenes: Sequence[Scene], ref_files: dict[str, list[str]], encoder: Any,
          target: float = 0.95) -> tuple[list[dict], list[dict]]:
    """(rates per metric and class, one row per case). A class a metric notices in fewer than ``target`` of its
    cases is flagged."""
    from PIL import Image

    refs = {}
    for c, paths in ref_files.items():
        ok = []
        for p in paths:
            try:
                ok.append(Image.fromarray(read_image(p)))
            except BadImage:
                continue  # a bad reference is left out, as in the metrics
        refs[c] = np.asarray(encoder.encode_images(ok), dtype=np.float64) if ok else np.zeros((0, 1))
    rows = []
    for s, scene in enumerate(scenes):  # one image's cases at a time: a few full-size copies in memory, not all
        cases = scene_cases(scenes, s)
        true, *got = score_many([scene.image] + [c.image for c in cases], [scene] * (1 + len(cases)), encoder, refs)
        for case, cf in zip(cases, got):
            rows.append({"scene": scene.id, "kind": case.kind, "change": case.target,
                         **{f"{m}_true": true[m] for m in METRICS}, **{f"{m}_changed": cf[m] for m in METRICS},
                         **{f"{m}_noticed": _noticed(true[m], cf[m]) for m in METRICS}})
    return rates(rows, target), rows


def _noticed(true: float, changed: float) -> bool | None:
    """Whether the true image scores strictly higher; None when either score is missing (not a case)."""
    return None if math.isnan(true) or math.isnan(changed) else bool(true > changed)


def rates(rows: list[dict], target: float = 0.95) -> list[dict]:
    """Per metric and class: cases (those with both scores), noticed, rate, and a flag under ``target``."""
    out = []
    for m in METRICS:
        for kind in KINDS:
            mine = [r for r in rows if r["kind"] == kind and r[f"{m}_noticed"] is not None]
            if not mine:
                continue
            noticed = sum(r[f"{m}_noticed"] for r in mine)
            rate = noticed / len(mine)
            out.append({"metric": m, "kind": kind, "cases": len(mine), "noticed": noticed, "rate": rate,
                        "flag": "" if rate >= target else f"fails to notice ({rate:.0%} < {target:.0%})"})
    return out


# ---------------------------------------------------------------- the bench's step
def run_check(datasets: Sequence[Path], make_encoder, backbone_tag: str, run_dir: Path, max_images: int = 50,
              target: float = 0.95) -> dict | None:
    """The check over the bench's dataset promptsets, written to ``<run>/counterfactual.json`` (rates) and
    ``counterfactual_cases.csv`` (every case); reused while the datasets, backbone and settings are unchanged.
    ``make_encoder()`` builds the image encoder only when the check has to run."""
    from gen4gen.bench.report import csv_bytes
    from gen4gen.hashing import config_hash
    from gen4gen.io import json_bytes, write_atomic

    indexes = [Path(d) / "mycanvas" / "index.jsonl" for d in datasets]
    key = config_hash({"index": [config_hash(p.read_text("utf-8")) if p.is_file() else None for p in indexes],
                       "backbone": backbone_tag, "max_images": max_images, "target": target})
    path = run_dir / "counterfactual.json"
    old = read_check(path) if path.is_file() else None
    if old and old["key"] == key:
        return old
    scenes, refs, problems = [], {}, []
    for d in datasets:
        s, r, p = load_scenes(Path(d), max_images)
        scenes += s
        refs.update({c: v for c, v in r.items() if c not in refs})
        problems += p
    if not scenes:
        return None
    rates_rows, cases = check(scenes, refs, make_encoder(), target)
    for r in rates_rows:
        r["backbone"] = backbone_tag
    result = CheckFile(key=key, backbone=backbone_tag, images=len(scenes), rates=rates_rows,
                       problems=problems).model_dump()
    write_atomic(run_dir / "counterfactual_cases.csv", csv_bytes([{**c, "backbone": backbone_tag} for c in cases], [
        "scene", "kind", "change", *[f"{m}_{x}" for m in METRICS for x in ("true", "changed", "noticed")], "backbone"]))
    write_atomic(path, json_bytes(result))
    return result
