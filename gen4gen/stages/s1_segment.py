"""s1: segment the foreground of every personal-concept photo.

``<source_dir>/<scene>/<concept>/<photo>`` -> ``<stages_dir>/s1_segmented_foreground/<scene>/<concept>/<stem>/``
with ``cutout.png`` (RGBA, soft alpha, foreground colours estimated in the soft edge), ``mask.png`` (8-bit
soft mask) and ``meta.json``.

The concept is what its photos share, so a photo is not segmented alone: ``prepare`` runs the first pass
over every photo of each concept with work pending (done ones included, so a choice does not depend on
which items a run redoes) and chooses each photo's subject among its objects (``gen4gen.segment.objects``);
``process`` zooms on that subject, keeps it and cleans the cut-out. A shard owns whole concepts, and each
item's fingerprint covers its concept's photos: a photo added to a concept redoes the concept.
"""
from __future__ import annotations

import hashlib
import shutil
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from gen4gen.artefacts import S1Meta
from gen4gen.backends import build_backend
from gen4gen.console import Summary, progress
from gen4gen.device import PoolSizes, usable_cores
from gen4gen.errors import UserError
from gen4gen.hashing import file_fingerprint, shard_key
from gen4gen.images import IMAGE_EXTENSIONS, read_image
from gen4gen.io import png_bytes
from gen4gen.paths import STAGE_DIRS
from gen4gen.runner import Item, ItemWriter, run_stage
from gen4gen.segment.cutout import clean_alpha, estimate_foreground, fill_translucent, keep_region, translucent
from gen4gen.segment.objects import PhotoObjects, analysis_map, choose, features, find_objects, split_foreign
from gen4gen.segment.quality import keep_largest, mask_stats
from gen4gen.settings import section, top_level
from gen4gen.stage_settings import IOSettings, PathsSettings, SegmenterNode, SegmentSettings

DIR_NAME = STAGE_DIRS["s1"]
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
        paths = section(cfg, "paths", PathsSettings)
        self.source_dir = paths.source_dir
        self.out_root = paths.stages_dir / DIR_NAME
        self.top = top_level(cfg)
        self.settings = section(cfg, "segment", SegmentSettings)
        self.io = section(cfg, "io", IOSettings)
        self.rounds, self.features = self.settings.rounds, self.settings.features
        self.workers = self.top.workers
        self.keep = section(cfg, "segmenter", SegmenterNode).keep
        self._segmenter = None
        self._encoder = None
        self._lock = threading.Lock()
        self._concepts: dict[str, list[Item]] = {}
        self._pools = PoolSizes(usable_cores() // max(1, self.workers))  # while the stage runs
        self._first: dict[str, tuple] = {}

    @property
    def segmenter(self):
        if self._segmenter is None:  # built once, on first use, shared by the worker threads
            extra = {}
            if "threads" in self.cfg.segmenter and not self.cfg.segmenter.threads:
                # items run on `workers` threads: split the cores between them instead of oversubscribing
                extra["threads"] = max(1, usable_cores() // self.workers)
            node = self.cfg.segmenter.copy()
            with open_dict(node):
                node.pop("keep", None)  # the stage's choice, not the backend's
            self._segmenter = build_backend(node, "segmenter", **extra)
        return self._segmenter

    @property
    def encoder(self):
        with self._lock:  # loaded once, when a photo first holds two objects
            if self._encoder is None:
                self._encoder = image_features(self.features, self.top.device)
        self._pools.torch()  # torch's OpenMP width is a setting of each thread that encodes: set in this one
        return self._encoder

    def discover(self) -> list[Item]:
        if not self.source_dir.is_dir():
            raise UserError(f"no source folder {self.source_dir}; put photos in <scene>/<concept>/<photo> there "
                            f"(see data/s0_source_images/README.md) or run `make examples`")
        items = discover_photos(self.source_dir, self.out_root)
        prints: dict[str, list[str]] = {}
        for it in items:
            if it.error is None:
                prints.setdefault(concept_of(it.id), []).append(it.fingerprint)
        # a photo's cut-out depends on its concept's other photos: their fingerprints are part of its own
        shared = {c: hashlib.blake2b("".join(sorted(fps)).encode(), digest_size=12).hexdigest()
                  for c, fps in prints.items()}
        items = [replace(it, fingerprint=f"{it.fingerprint}+{shared[concept_of(it.id)]}") if it.error is None else it
                 for it in items]
        self._concepts = {}
        for it in items:
            if it.error is None:
                self._concepts.setdefault(concept_of(it.id), []).append(it)
        return items

    def shard_key(self, item_id: str) -> str:
        """A shard owns whole concepts (whole scenes under ``stage=all``): the choice sees every photo."""
        whole = self.top.stage == "all"
        return shard_key(item_id, whole) if whole else concept_of(item_id)

    def config(self) -> dict:
        return {"segmenter": OmegaConf.to_container(self.cfg.segmenter, resolve=True), "rounds": self.rounds,
                "features": self.features,
                "io": OmegaConf.to_container(self.cfg.io, resolve=True)}

    def prepare(self, pending: list[Item]) -> None:
        _ = self.segmenter  # load weights before the threads start (and fail once, clearly)
        self._pools.opencv()
        concepts = sorted({concept_of(it.id) for it in pending})
        photos = [it for c in concepts for it in self._concepts.get(c, [])]
        with progress() as bar, ThreadPoolExecutor(self.workers) as pool:
            task = bar.add_task("s1 first pass (whole concepts)", total=len(photos))

            def first(it: Item) -> tuple | None:
                try:
                    return self._first_pass(it)
                finally:
                    bar.advance(task)

            firsts = list(pool.map(first, photos))
        self._first = {it.id: f for it, f in zip(photos, firsts) if f is not None}
        for c in concepts:
            group = {it.id: self._first[it.id][1] for it in self._concepts.get(c, []) if it.id in self._first}
            if len(group) < 2:
                continue  # one photo: nothing to compare with
            split_foreign(group)
            if all(o.count < 2 for o in group.values()):
                continue  # no photo with a second object or piece: nothing to choose
            for pid, objects in group.items():
                if objects.features is None and objects.count:
                    objects.features = features(self.encoder, self._read(self._path(pid)), objects)
            choose(group)
        waiting = {it.id for it in pending}  # done photos were only references: their first passes can go
        self._first = {k: v for k, v in self._first.items() if k in waiting}

    def _path(self, item_id: str) -> str:
        return next(it.data["path"] for it in self._concepts[concept_of(item_id)] if it.id == item_id)

    def _first_pass(self, item: Item) -> tuple | None:
        """(the backend's first pass: its coarse map or its whole mask and info, the photo's objects);
        None for a photo that cannot be read (``process`` reports it)."""
        try:
            # a concept of one photo has no choice to make: its features are needed only to group far parts
            compared = len(self._concepts.get(concept_of(item.id), ())) > 1
            return self._first_of(self._read(item.data["path"]), compared)
        except Exception:  # noqa: BLE001 - the item's own run reports why
            return None

    def _first_of(self, rgb: np.ndarray, compared: bool = False) -> tuple:
        seg = self.segmenter
        h, w = rgb.shape[:2]
        if hasattr(seg, "coarse"):
            first = ("coarse", seg.coarse(rgb).astype(np.float16), {})
            soft = first[1].astype(np.float32)
        else:
            mask, info = self._segment(rgb)
            first, soft = ("mask", png_bytes(_u8(mask), zlib.Z_RLE), info), mask
        return first, find_objects(analysis_map(soft, w, h), rgb, _LazyEncoder(self), compared)

    def _read(self, path: str) -> np.ndarray:
        return read_image(path, max_pixels=self.io.max_pixels, min_side=self.io.min_side)

    def process(self, item: Item, out: ItemWriter, rng: np.random.Generator) -> dict:
        rgb = self._read(item.data["path"])
        (kind, first, first_info), objects = self._first.pop(item.id, None) or self._first_of(rgb)
        focus = objects.focus() if self.keep == "concept" else objects.focus_all()
        # zoom on the chosen subject when another separate object was dropped (a piece cut from a joined part
        # goes by its side of the cut, after the zoom: a crop around the rest alone finds new things at its
        # scale, a tree trunk the dog passes behind); else on everything the first pass
        # found, or on the objects without far specks when those make the crop too large to gain anything
        zoom_on = (focus,) if self.keep == "concept" and objects.dropped_whole else (None, objects.focus_all())
        rounds, current = [], rgb
        shutil.rmtree(out.path("rounds"), ignore_errors=True)  # an earlier run's rounds (maybe more of them)
        for k in range(self.rounds):
            t0 = time.perf_counter()
            if k:
                mask, info = self._segment(current)
            elif kind == "coarse":
                mask, info = self.segmenter.segment(rgb, coarse=first.astype(np.float32), focus=zoom_on)
                mask = np.clip(mask, 0.0, 1.0).astype(np.float32)
            else:
                mask, info = read_image_bytes(first), first_info
            stats = mask_stats(mask, frame=info.get("frame_xyxy"))
            rounds.append((mask, stats, round(time.perf_counter() - t0, 4), info))
            if self.rounds > 1:
                out.image(f"rounds/{k}_mask.png", _u8(mask))
            if k + 1 < self.rounds:  # the next round sees the cut-out on white (Gen4Gen re-segments its output)
                current = (rgb * mask[..., None] + 255.0 * (1.0 - mask[..., None])).astype(np.uint8)
        best = max(range(len(rounds)), key=lambda k: rounds[k][1]["quality"])
        mask, held, _, info = rounds[best]
        cleaned = {"dropped_fraction": 0.0, "filled_fraction": 0.0}
        # filled first: a solid part the segmenter doubted (a held helmet) is then a firm part, not a fragment
        mask, cleaned["filled_fraction"] = fill_translucent(mask, rgb=rgb, concept=objects.concept_colours)
        if objects.count:
            gone = objects.dropped(rgb.shape[1], rgb.shape[0]) if self.keep == "concept" else None
            cut = 0.0
            if gone is not None:  # a piece cut from a joined part goes with its side of the cut
                cut = float((gone & (mask >= 0.5)).mean())
                mask = np.where(gone, 0.0, mask).astype(np.float32)
            mask, dropped = clean_alpha(mask, keep_region(focus, rgb.shape[1], rgb.shape[0]))
            cleaned["dropped_fraction"] = round(dropped + cut, 5)
        if self.keep == "largest":
            mask = keep_largest(mask)
        # the flag and the parts say what the photo held; the rest describes the kept mask
        # the flag and the parts say what the photo held, the quality what chose the round; the rest describes
        # the kept mask
        stats = {**mask_stats(mask, frame=info.get("frame_xyxy"), objects=objects.separate), "parts": held["parts"],
                 "quality": held["quality"]}
        stats["flags"] += [f for f, on in (("ambiguous", objects.ambiguous), ("translucent", translucent(mask))) if on]
        alpha = _u8(mask)
        cut = estimate_foreground(rgb, alpha.astype(np.float32) / 255.0)
        # same pixels as ItemWriter.image, zlib strategies chosen for a photo and a mask (see png_bytes)
        out.bytes("cutout.png", png_bytes(np.dstack([cut, alpha]), zlib.Z_HUFFMAN_ONLY))
        out.bytes("mask.png", png_bytes(alpha, zlib.Z_RLE))
        return {"source": item.data["path"], "scene": item.data["scene"], "concept": item.data["concept"],
                "backend": getattr(self.segmenter, "name", type(self.segmenter).__name__),
                "size": [int(rgb.shape[1]), int(rgb.shape[0])], **stats, "keep": self.keep,
                "objects": objects.record(), **cleaned, **info,
                "rounds": [{"round": k, "seconds": t, "quality": s["quality"], **i}
                           for k, (_, s, t, i) in enumerate(rounds)],
                "chosen_round": best}

    def _segment(self, rgb: np.ndarray) -> tuple[np.ndarray, dict]:
        """The mask and what the backend says about it (zoom crop, GrabCut's box) when it says anything."""
        seg = self.segmenter
        mask, info = seg.segment(rgb) if hasattr(seg, "segment") else (seg(rgb), {})
        return np.clip(mask, 0.0, 1.0).astype(np.float32), info

    def finish(self, summary: Summary, metas: dict[str, S1Meta]) -> None:
        self._pools.restore()
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


class _LazyEncoder:
    """The stage's encoder, loaded only when a photo's objects need features."""

    def __init__(self, stage: SegmentStage):
        self.stage = stage

    def encode_images(self, images):
        return self.stage.encoder.encode_images(images)


def concept_of(item_id: str) -> str:
    """``scene/concept`` of a photo's item id."""
    return "/".join(item_id.split("/")[:2])


def image_features(name: str, device: str):
    """``segment.features``: ``efficientnet-lite0`` (embedded), ``clip:<folder or hub id>`` or
    ``dino:<folder or hub id>``."""
    from gen4gen.encoders import Clip, Dino, EfficientNetLite0

    kind, _, path = name.partition(":")
    if kind == "efficientnet-lite0":
        return EfficientNetLite0(device)
    return (Clip if kind == "clip" else Dino)(path, device)


def read_image_bytes(data: bytes) -> np.ndarray:
    """A mask kept as PNG bytes (``png_bytes``), back as HxW float32 in [0, 1]."""
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0


def _u8(mask: np.ndarray) -> np.ndarray:
    return (np.clip(mask, 0, 1) * 255.0 + 0.5).astype(np.uint8)


def run(cfg: DictConfig) -> Summary:
    return run_stage(SegmentStage(cfg), cfg)

