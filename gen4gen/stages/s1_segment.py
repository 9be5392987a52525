"""s1: segment the foreground of every personal-concept photo.

``<source_dir>/<scene>/<concept>/<photo>`` -> ``<stages_dir>/s1_segmented_foreground/<scene>/<concept>/<stem>/``
with ``cutout.png`` (RGBA, soft alpha), ``mask.png`` (8-bit soft mask) and ``meta.json``.
"""
from __future__ import annotations

import hashlib
import shutil
import time
import zlib
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from gen4gen.artefacts import S1Meta
from gen4gen.config_check import build_backend
from gen4gen.console import Summary
from gen4gen.device import usable_cores
from gen4gen.errors import UserError
from gen4gen.hashing import file_fingerprint
from gen4gen.images import IMAGE_EXTENSIONS, read_image
from gen4gen.io import png_bytes
from gen4gen.paths import STAGE_DIRS
from gen4gen.runner import Item, ItemWriter, run_stage
from gen4gen.segment.quality import keep_largest, mask_stats

DIR_NAME = STAGE_DIRS["s1"]
KEEP = ("all", "largest")  # segmenter.keep: what the cut-out keeps of a mask with several large parts
FLAGGED_NAMED = 3  # the summary names this many flagged photos per flag


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
            names = photo_ids(photos)
            for p in photos:
                name = names[p]
                try:
                    fp = file_fingerprint(p)
                except OSError as e:
                    items.append(Item(f"{rel}/{name}", out_root / rel / name, {"path": str(p)},
                                      error=f"cannot read file: {e.strerror or e}"))
                    continue
                items.append(Item(f"{rel}/{name}", out_root / rel / name,
                                  {"path": str(p), "scene": scene.name, "concept": concept.name}, fp))
    return items


def photo_ids(photos: list[Path]) -> dict[Path, str]:
    """A distinct item id per photo of one folder, from the folder's file names alone (so it is the same on
    every run): the stem (``x``), or when the stem is shared the name with ``_`` for dots (``x_jpg``), or
    when that clashes too (``x.jpg`` beside ``x_jpg.webp``) the name plus a hash of it. Ids are compared
    without case: ``X.jpg`` and ``x.png`` must not share a folder on a case-insensitive file system."""
    def candidates(p: Path) -> list[str]:
        under = p.name.replace(".", "_")
        return [p.stem, under, f"{under}~{hashlib.sha1(p.name.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"]

    cands = {p: candidates(p) for p in photos}
    level = {p: 0 for p in photos}
    while True:
        groups: dict[str, list[Path]] = {}
        for p in photos:
            groups.setdefault(cands[p][level[p]].casefold(), []).append(p)
        clashes = [g for g in groups.values() if len(g) > 1]
        if not clashes:
            return {p: cands[p][level[p]] for p in photos}
        for g in clashes:  # the photos on the plainest id in a clash move on; the last level cannot clash
            low = min(level[p] for p in g)
            for p in g:
                if level[p] == low and low < 2:
                    level[p] += 1
        if all(level[p] == 2 for g in clashes for p in g):
            return {p: cands[p][level[p]] for p in photos}


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
        self.keep = str(cfg.segmenter.get("keep", "all"))
        if self.keep not in KEEP:
            raise UserError(f"segmenter.keep must be one of {', '.join(KEEP)}, not {self.keep!r}")
        self._segmenter = None

    @property
    def segmenter(self):
        if self._segmenter is None:  # built once, on first use, shared by the worker threads
            extra = {}
            if "threads" in self.cfg.segmenter and not self.cfg.segmenter.threads:
                # items run on `workers` threads: split the cores between them instead of oversubscribing
                extra["threads"] = max(1, usable_cores() // max(1, self.workers))
            node = self.cfg.segmenter.copy()
            with open_dict(node):
                node.pop("keep", None)  # the stage's choice, not the backend's
            self._segmenter = build_backend(node, "segmenter", **extra)
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
            mask, info = self._segment(current)
            stats = mask_stats(mask, frame=info.get("frame_xyxy"))
            rounds.append((mask, stats, round(time.perf_counter() - t0, 4), info))
            if self.rounds > 1:
                out.image(f"rounds/{k}_mask.png", _u8(mask))
            if k + 1 < self.rounds:  # the next round sees the cut-out on white (Gen4Gen re-segments its output)
                current = (rgb * mask[..., None] + 255.0 * (1.0 - mask[..., None])).astype(np.uint8)
        best = max(range(len(rounds)), key=lambda k: rounds[k][1]["quality"])
        mask, stats, _, info = rounds[best]
        if self.keep == "largest" and stats["multiple_objects"]:
            # the flag and the parts still say what the photo held; the rest describes the kept mask
            mask = keep_largest(mask)
            stats = {**mask_stats(mask, frame=info.get("frame_xyxy")), "multiple_objects": True, "parts": stats["parts"]}
            stats["flags"].append("multiple_objects")
        alpha = _u8(mask)
        # same pixels as ItemWriter.image, zlib strategies chosen for a photo and a mask (see png_bytes)
        out.bytes("cutout.png", png_bytes(np.dstack([rgb, alpha]), zlib.Z_HUFFMAN_ONLY))
        out.bytes("mask.png", png_bytes(alpha, zlib.Z_RLE))
        return {"source": item.data["path"], "scene": item.data["scene"], "concept": item.data["concept"],
                "backend": getattr(self.segmenter, "name", type(self.segmenter).__name__),
                "size": [int(rgb.shape[1]), int(rgb.shape[0])], **stats, "keep": self.keep, **info,
                "rounds": [{"round": k, "seconds": t, "quality": s["quality"], **i}
                           for k, (_, s, t, i) in enumerate(rounds)],
                "chosen_round": best}

    def _segment(self, rgb: np.ndarray) -> tuple[np.ndarray, dict]:
        """The mask and what the backend says about it (zoom crop, GrabCut's box) when it says anything."""
        seg = self.segmenter
        mask, info = seg.segment(rgb) if hasattr(seg, "segment") else (seg(rgb), {})
        return np.clip(mask, 0.0, 1.0).astype(np.float32), info

    def finish(self, summary: Summary, metas: dict[str, S1Meta]) -> None:
        flagged, by_flag = 0, {}
        for item_id, meta in metas.items():
            flagged += bool(meta.flags)
            for f in meta.flags:
                by_flag.setdefault(f, []).append(item_id)
        if flagged:
            summary.notes["masks with quality flags"] = flagged
        for flag, names in sorted(by_flag.items()):
            more = f" and {len(names) - FLAGGED_NAMED} more" if len(names) > FLAGGED_NAMED else ""
            summary.notes[f"flagged {flag}"] = f"{len(names)}: {', '.join(names[:FLAGGED_NAMED])}{more}"


def _u8(mask: np.ndarray) -> np.ndarray:
    return (np.clip(mask, 0, 1) * 255.0 + 0.5).astype(np.uint8)


def run(cfg: DictConfig) -> Summary:
    return run_stage(SegmentStage(cfg), cfg)

