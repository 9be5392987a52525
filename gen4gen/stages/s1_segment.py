"""s1: segment the foreground of every personal-concept photo.

``<source_dir>/<scene>/<concept>/<photo>`` -> ``<stages_dir>/s1_segmented_foreground/<scene>/<concept>/<stem>/``
with ``cutout.png`` (RGBA, soft alpha), ``mask.png`` (8-bit soft mask) and ``meta.json``.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gen4gen.artefacts import S1Meta
from gen4gen.console import Summary
from gen4gen.device import usable_cores
from gen4gen.errors import UserError
from gen4gen.hashing import file_fingerprint
from gen4gen.images import IMAGE_EXTENSIONS, read_image
from gen4gen.markers import done_items
from gen4gen.paths import STAGE_DIRS
from gen4gen.runner import Item, ItemWriter, run_stage
from gen4gen.segment.quality import mask_stats

DIR_NAME = STAGE_DIRS["s1"]


def discover_photos(source_dir: Path, out_root: Path) -> list[Item]:
    """Items for ``<scene>/<concept>/<photo>``; unreadable entries and empty concept folders become
    items with an ``error`` so they are reported, not silently dropped."""
    items: list[Item] = []
    for scene in _subdirs(source_dir, items, out_root, source_dir):
        for concept in _subdirs(scene, items, out_root, source_dir):
            photos, others = [], []
            for p in _entries(concept, items, out_root):
                (photos if p.suffix.lower() in IMAGE_EXTENSIONS else others).append(p)
            rel = f"{scene.name}/{concept.name}"
            for p in others:
                items.append(Item(f"{rel}/{p.name}", out_root / rel / p.name, {"path": str(p)},
                                  error=f"unsupported file type {p.suffix or '(none)'!r}; "
                                        f"use one of {', '.join(IMAGE_EXTENSIONS)}"))
            if not photos and not others:
                items.append(Item(rel, out_root / rel, {"path": str(concept)},
                                  error="empty concept folder: no photos"))
            stems = [p.stem for p in photos]
            for p in photos:
                name = p.stem if stems.count(p.stem) == 1 else p.name.replace(".", "_")
                try:
                    fp = file_fingerprint(p)
                except OSError as e:
                    items.append(Item(f"{rel}/{name}", out_root / rel / name, {"path": str(p)},
                                      error=f"cannot read file: {e.strerror or e}"))
                    continue
                items.append(Item(f"{rel}/{name}", out_root / rel / name,
                                  {"path": str(p), "scene": scene.name, "concept": concept.name}, fp))
    return items


def _entries(folder: Path, items: list[Item], out_root: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as e:
        rel = folder.name
        items.append(Item(rel, out_root / rel, {"path": str(folder)}, error=f"cannot list folder: {e.strerror or e}"))
        return []


def _subdirs(folder: Path, items: list[Item], out_root: Path, root: Path) -> list[Path]:
    """Sub-folders of ``folder``; anything else there (a stray file, a broken or looping link) is reported."""
    out = []
    for p in _entries(folder, items, out_root):
        rel = p.relative_to(root).as_posix()
        try:
            if p.is_dir():
                p.resolve(strict=True)  # raises on a symlink loop
                out.append(p)
                continue
            if p.is_symlink() and not p.exists():
                reason = "broken link or symlink loop"
            elif p.suffix.lower() in IMAGE_EXTENSIONS:
                reason = "a photo outside a concept folder: photos go in <scene>/<concept>/"
            else:
                continue  # notes and READMEs beside the folders are fine
        except (OSError, RuntimeError) as e:
            reason = f"cannot open folder (symlink loop?): {getattr(e, 'strerror', None) or e}"
        items.append(Item(rel, out_root / rel, {"path": str(p)}, error=reason))
    return out


class SegmentStage:
    name = "s1"
    meta_model = S1Meta

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.source_dir = Path(cfg.paths.source_dir)
        self.out_root = Path(cfg.paths.stages_dir) / DIR_NAME
        self.rounds = max(1, int(cfg.segment.rounds))
        self.workers = int(cfg.workers)
        self._segmenter = None

    @property
    def segmenter(self):
        if self._segmenter is None:  # built once, on first use, shared by the worker threads
            extra = {}
            if "threads" in self.cfg.segmenter and not self.cfg.segmenter.threads:
                # items run on `workers` threads: split the cores between them instead of oversubscribing
                extra["threads"] = max(1, usable_cores() // max(1, self.workers))
            self._segmenter = instantiate(self.cfg.segmenter, **extra)
        return self._segmenter

    def discover(self) -> list[Item]:
        if not self.source_dir.is_dir():
            raise UserError(f"no source folder {self.source_dir}; put photos in <scene>/<concept>/<photo> there "
                            f"(see data/s0_source_images/README.md) or run `make examples`")
        return discover_photos(self.source_dir, self.out_root)

    def config(self) -> dict:
        return {"segmenter": OmegaConf.to_container(self.cfg.segmenter, resolve=True), "rounds": self.rounds,
                "io": OmegaConf.to_container(self.cfg.io, resolve=True)}

    def prepare(self, pending: list[Item]) -> None:
        _ = self.segmenter  # load weights before the threads start (and fail once, clearly)

    def process(self, item: Item, out: ItemWriter, rng: np.random.Generator) -> dict:
        rgb = read_image(item.data["path"], max_pixels=int(self.cfg.io.max_pixels), min_side=int(self.cfg.io.min_side))
        rounds, current = [], rgb
        shutil.rmtree(out.path("rounds"), ignore_errors=True)  # an earlier run's rounds (maybe more of them)
        for k in range(self.rounds):
            t0 = time.perf_counter()
            mask = np.clip(self.segmenter(current), 0.0, 1.0).astype(np.float32)
            stats = mask_stats(mask)
            rounds.append((mask, stats, round(time.perf_counter() - t0, 4)))
            if self.rounds > 1:
                out.image(f"rounds/{k}_mask.png", _u8(mask))
            if k + 1 < self.rounds:  # the next round sees the cut-out on white (Gen4Gen re-segments its output)
                current = (rgb * mask[..., None] + 255.0 * (1.0 - mask[..., None])).astype(np.uint8)
        best = max(range(len(rounds)), key=lambda k: rounds[k][1]["quality"])
        mask, stats, _ = rounds[best]
        alpha = _u8(mask)
        out.image("cutout.png", np.dstack([rgb, alpha]))
        out.image("mask.png", alpha)
        return {"source": item.data["path"], "scene": item.data["scene"], "concept": item.data["concept"],
                "backend": getattr(self.segmenter, "name", type(self.segmenter).__name__),
                "size": [int(rgb.shape[1]), int(rgb.shape[0])], **stats,
                "rounds": [{"round": k, "seconds": t, "quality": s["quality"]} for k, (_, s, t) in enumerate(rounds)],
                "chosen_round": best}

    def finish(self, summary: Summary) -> None:
        flagged = sum(1 for _, meta in done_items(self.out_root) if meta.get("flags"))  # a torn meta: not done
        if flagged:
            summary.notes["masks with quality flags"] = flagged


def _u8(mask: np.ndarray) -> np.ndarray:
    return (np.clip(mask, 0, 1) * 255.0 + 0.5).astype(np.uint8)


def run(cfg: DictConfig) -> Summary:
    return run_stage(SegmentStage(cfg), cfg)

