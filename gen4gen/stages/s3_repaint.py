"""s3: repaint the background of every s2 composition.

``<stages_dir>/s2_object_compositions/<scene>/<composition id>/`` ->
``<stages_dir>/s3_background_repainting/<scene>/<composition id>/<variant>/{image.png, mask_used.png, meta.json}``
with one variant ``v<k>_<kind>`` per background source (up to ``repaint.max_backgrounds``). Concept
pixels stay exact where ``mask_used.png`` is 0 (the classical backend's matched light and grain aside, which
change a concept's colours, not its shape), so s2's instance masks and boxes hold for the s3 image.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from gen4gen.artefacts import S3Meta, stage_rel
from gen4gen.backends import build_backend
from gen4gen.console import Summary
from gen4gen.errors import ItemFailed, UserError
from gen4gen.hashing import config_hash, item_rng
from gen4gen.images import read_image
from gen4gen.layout.scene_fit import SceneFit, minilm_embed
from gen4gen.markers import upstream_reasons
from gen4gen.paths import STAGE_DIRS
from gen4gen.repaint import RepaintJob
from gen4gen.repaint.backgrounds import (BackgroundSource, feet_line, plan_sources, procedural_ground, render,
                                         salient_share)
from gen4gen.repaint.photo_crop import render_photo
from gen4gen.repaint.photos import library_for
from gen4gen.repaint.mask import repaint_mask, to_u8
from gen4gen.repaint.prompt import build_prompt
from gen4gen.runner import Item, ItemWriter, run_stage
from gen4gen.settings import section, top_level
from gen4gen.stage_settings import IOSettings, PathsSettings, RepaintSettings
from gen4gen.tree import Entry, TreeView

log = logging.getLogger(__name__)

DIR_NAME = STAGE_DIRS["s3"]
S2_DIR_NAME = STAGE_DIRS["s2"]
# inpainter keys that change speed or placement only (one generator per item: batching changes no result)
SPEED_ONLY = ("device", "batch_size", "attention", "channels_last", "compile", "compile_mode", "fuse_qkv",
              "cpu_offload")


def item_seed(seed: int, item_id: str) -> int:
    """The item's seed (background texture, diffusion noise): the same whichever batch it runs in."""
    return int(item_rng(seed, item_id).integers(0, 2 ** 31 - 1))


class RepaintStage:
    name = "s3"
    meta_model = S3Meta

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.top = top_level(cfg)
        self.io = section(cfg, "io", IOSettings)
        self.repaint = section(cfg, "repaint", RepaintSettings)
        self.stages_dir = stages = section(cfg, "paths", PathsSettings).stages_dir
        self.in_root = stages / S2_DIR_NAME
        self.out_root = stages / DIR_NAME
        self.kind = self.repaint.kind
        self.library = self._library() if self.kind == "photo" else None
        # a composition s2 planned without the photo folder gets the scene that fits its concepts by meaning
        self.rank = SceneFit(minilm_embed(cfg.paths.cache_dir)).rank if self.library is not None else None
        self._unplanned: set[str] = set()  # such compositions: they do not stand on their photo's ground
        self.backend = build_backend(cfg.inpainter, "inpainter")
        # the runner hands process_batch() batches of this many items of one size (batch_key)
        self.batch_size = max(1, int(getattr(self.backend, "batch_size", 1)))
        # the CPU backend is stateless and OpenCV releases the GIL: threads help. A diffusers pipeline keeps
        # scheduler state per call: one thread, the GPU parallelism comes from batches
        self.workers = self.top.workers if getattr(self.backend, "thread_safe", False) else 1
        self._bg_info: dict[str, dict] = {}  # item -> salient share, the photo used instead, or a flag
        self._ignored: dict[str, int] = {}  # upstream items not taken, by what to do about them

    def _library(self):
        if not self.repaint.backgrounds:
            raise UserError("repaint.source=photo needs repaint.backgrounds=<dir> with <dir>/<scene>/*.jpg")
        return library_for(self.repaint, self.io, log)

    # ------------------------------------------------------------ runner hooks
    def discover(self) -> list[Item]:
        if not self.in_root.is_dir():
            raise UserError(f"no s2 output at {self.in_root}; run `python -m gen4gen stage=s2` first")
        tree = TreeView(self.stages_dir)
        self._ignored = tree.ignored("s2", "compositions")
        found = {**{cid: (folder, "s2 composition is unfinished (no meta.json); rerun stage=s2")
                    for cid, folder in tree.unfinished("s2").items()},
                 **tree.unreadable("s2"), **tree.items("s2")}
        items: list[Item] = []
        for cid, entry in sorted(found.items()):
            if isinstance(entry, tuple):
                items.append(Item(cid, self.out_root / cid, {"path": str(entry[0])}, error=entry[1]))
            else:
                items += self._items_for(tree, entry)
        if not items and (why := upstream_reasons(self.in_root.parent, self.name)):
            raise UserError(f"nothing to repaint: no s2 composition in {self.in_root}; {why}")
        return items

    def _items_for(self, tree: TreeView, comp: Entry) -> list[Item]:
        cid, meta = comp.id, comp.meta
        try:
            layout = tree.layout(comp.dir)
        except ItemFailed as e:
            return [Item(cid, self.out_root / cid, {"path": str(comp.dir)}, error=str(e))]
        sources = plan_sources(layout, kind=self.kind, max_backgrounds=self.repaint.max_backgrounds,
                               rng=item_rng(self.top.seed, cid + "/backgrounds"),
                               library=self.library, rank=self.rank)
        if self.library is not None and not layout.backdrop:
            self._unplanned.add(cid)
        items = []
        for k, src in enumerate(sources):
            variant = f"v{k}_{src.kind}"
            vid = f"{cid}/{variant}"
            fp = config_hash([meta.config_hash, meta.fingerprint, src.describe()])
            items.append(Item(vid, self.out_root / vid, {"path": str(comp.dir), "composition": cid,
                                                        "variant": variant, "source": src, "layout": layout}, fp,
                              inputs={cid: meta.hash}))
        return items

    def config(self) -> dict:
        inpainter = OmegaConf.to_container(self.cfg.inpainter, resolve=True)
        for key in SPEED_ONLY:  # how fast, not what: switching them keeps finished items
            inpainter.pop(key, None)
        # the sections as composed, hashed as they always were: a finished item stays done across versions
        return {"repaint": OmegaConf.to_container(self.cfg.repaint, resolve=True), "inpainter": inpainter,
                "io": OmegaConf.to_container(self.cfg.io, resolve=True)}

    def prepare(self, pending: list[Item]) -> None:
        load = getattr(self.backend, "load", None)
        if load:
            load()  # weights load once, before the loop, and a bad model id fails the run clearly

    def batch_key(self, item: Item):
        return tuple(item.data["layout"].size)  # a batch is one tensor: one image size

    def process_batch(self, items: list[Item], writers: list[ItemWriter], rngs) -> list:
        """Repaint ``items`` in one backend call (an exception there fails the batch, in the runner)."""
        results: list = [None] * len(items)
        jobs: dict[int, RepaintJob] = {}
        for k, item in enumerate(items):
            try:
                jobs[k] = self.job(item)
            except ItemFailed as e:
                results[k] = e
        if not jobs:
            return results
        images = self.backend(list(jobs.values()))
        secs = getattr(self.backend, "last_batch_seconds", None)  # GPU backends time their pipeline call
        extra = {} if secs is None else {"batch": {"size": len(jobs), "seconds": round(float(secs), 4)}}
        for (k, job), image in zip(jobs.items(), images):
            results[k] = self._write(items[k], job, image, writers[k], extra)
        return results

    def _write(self, item: Item, job: RepaintJob, image, out: ItemWriter, extra: dict) -> dict:
        out.image("image.png", image)
        out.image("mask_used.png", to_u8(job.repaint))
        src: BackgroundSource = item.data["source"]
        # a user's photo with a bicycle where the pets stand: another of its folder, else flagged (see _calm_photo)
        background = {**src.describe(), **self._bg_info.pop(item.id, {})}
        return {"composition": item.data["composition"],
                "composition_dir": stage_rel(item.data["path"], self.stages_dir),
                "variant": item.data["variant"], "background": background,
                "backend": getattr(self.backend, "name", type(self.backend).__name__), "prompt": job.prompt,
                "negative_prompt": job.negative_prompt, "seed": job.seed, "size": list(job.size),
                "repaint_fraction": round(float(job.repaint.mean()), 4),
                "exact_fraction": round(float((job.repaint <= 0).mean()), 4),
                "inpainter": self.backend.describe(), **extra}

    def finish(self, summary: Summary, metas: dict[str, S3Meta]) -> None:
        summary.notes["inpainter"] = getattr(self.backend, "name", type(self.backend).__name__)
        summary.notes["backgrounds"] = self.kind if self.kind != "procedural" else \
            "procedural: a preview, not photographs (repaint.backgrounds=<folder of photos>, or inpainter=sdxl on a GPU)"
        summary.notes.update(self._ignored)
        if self.library is not None and self.library.problems:
            summary.notes["background photos, folders or sidecars not used (one line each above)"] = \
                len(self.library.problems)
        if self.library is not None and self.library.notes:
            summary.notes["background photos used after a conversion (grayscale, CMYK)"] = len(self.library.notes)
        if self._unplanned:
            summary.notes["compositions s2 planned without repaint.backgrounds (photo chosen here by scene phrase or "
                          "meaning; rerun s2 with it so they stand on the photo's ground)"] = len(self._unplanned)
        backgrounds = [m.background or {} for m in metas.values()]
        fallbacks = sum(1 for b in backgrounds if b.get("fallback"))
        if fallbacks:
            summary.notes["no matching photo folder (procedural used)"] = fallbacks
        swapped, busy = sum(1 for b in backgrounds if b.get("skipped")), sum(1 for b in backgrounds if b.get("flag"))
        if swapped:
            summary.notes["photo with a salient object behind the concepts (another used)"] = swapped
        if busy:
            summary.notes["photo with a salient object behind the concepts (flagged)"] = busy
        small = sorted({b["source"] for m, b in zip(metas.values(), backgrounds) if _upscale(self.library, b, m.size)
                        > UPSCALE_WARN})
        if small:  # a 400 px photo behind a 1024 px canvas looks soft next to the sharp concepts
            summary.notes[f"background photos enlarged over {UPSCALE_WARN:g}x to fill the canvas (soft; larger "
                          "photos look better)"] = f"{len(small)}: " + ", ".join(Path(s).name for s in small)[:200]

    # ------------------------------------------------------------ work
    def job(self, item: Item) -> RepaintJob:
        """Read the s2 files of ``item`` and build its repaint job (ItemFailed on a bad input)."""
        d, layout = Path(item.data["path"]), item.data["layout"]
        io = self.io
        rgba, mask = (_read(d / name, mode, io) for name, mode in (("image_rgba.png", "RGBA"), ("mask.png", "L")))
        h, w = rgba.shape[:2]
        if mask.shape != (h, w):
            raise ItemFailed(f"mask.png is {mask.shape[1]}x{mask.shape[0]} but image_rgba.png is {w}x{h}")
        if list(layout.size) != [w, h]:
            raise ItemFailed(f"layout.json size {layout.size} does not match image_rgba.png {w}x{h}")
        r = self.repaint
        rep = repaint_mask(mask, blur=r.blur, low=r.mask_low, high=r.mask_high, solid=r.mask_solid, invert=r.invert)
        seed = item_seed(self.top.seed, item.id)
        src: BackgroundSource = item.data["source"]
        light = float(np.random.default_rng(seed + 1).uniform(-1, 1))  # procedural: one seeded light per image
        horizon = _horizon(layout.camera)
        if src.kind == "photo":
            bg, ground, light = self._calm_photo(item.id, src, (w, h), horizon, mask > 127)
        else:
            feet = feet_line(mask)
            bg = render(src, (w, h), np.random.default_rng(seed), max_pixels=io.max_pixels, horizon_max=feet,
                        horizon=horizon)
            ground = procedural_ground(src.source, h, seed, feet, horizon) if src.kind == "procedural" else None
            self._bg_info.setdefault(item.id, {})
        self._bg_info[item.id].update(ground=None if ground is None else round(ground, 4), light=round(light, 3))
        return RepaintJob(rgb=np.ascontiguousarray(rgba[..., :3]), alpha=mask.astype(np.float32) / 255.0,
                          repaint=rep, background=bg,
                          prompt=build_prompt(layout, src.phrase, r.prompt),
                          negative_prompt=r.negative_prompt or "", seed=seed, ground=ground, light=light,
                          exposures=[(list(o.box), o.source_light) for o in layout.objects])

    def _calm_photo(self, item_id: str, src: BackgroundSource, size: tuple[int, int], horizon: float | None,
                    concepts: np.ndarray, tries: int = 3) -> tuple[np.ndarray, float, float]:
        """The photo of ``src`` cropped so its ground lies under the layout's, with its ground line and light; or,
        when a salient object of it stands where the concepts stand (a bicycle behind the pets), the first calm
        photo among the next ``tries`` of its scene, cropped as variant ``crop + k`` for the k-th photo on: the
        variants of a composition start at different photos of the scene, so two that move to the same calm photo
        get different crops of it, never the same background twice; flagged when none is calm."""
        limit = self.repaint.max_salient
        photos = self.library.scenes.get(src.scene, [])
        first = self.library.by_path(src.source)
        start = photos.index(first) if first in photos else 0
        skipped, info, best = [], {}, None
        for k in range(min(tries, len(photos)) + 1 if len(photos) > 1 else 1):
            photo = first if k == 0 else photos[(start + k) % len(photos)]
            if photo is None or (k and photo is first):
                continue
            try:
                out = render_photo(photo, size, target=horizon, variant=src.crop + k, blur=self.repaint.photo_blur,
                                   max_pixels=self.io.max_pixels)
            except ItemFailed:
                if k == 0:
                    raise
                continue
            share = salient_share(out[0], concepts)
            best = best or (out, share)
            if share <= limit:
                info = {"salient_share": round(share, 3), **({"source": str(photo.path), "crop": src.crop + k,
                                                               "skipped": skipped} if k else {})}
                self._bg_info[item_id] = info
                return out
            skipped.append(str(photo.path))
        if best is None:
            raise ItemFailed(f"background photo {src.source} is not in the scanned folder any more")
        (out, share) = best
        self._bg_info[item_id] = {"salient_share": round(share, 3), "flag": (
            f"a salient object of the photo covers {share:.0%} of where the concepts stand (repaint.max_salient) "
            "and no other photo of the folder is calmer there")}
        return out


UPSCALE_WARN = 2.0  # a photo enlarged more than this to cover the canvas is named in the summary


def _upscale(library, background: dict, size) -> float:
    """How much the photo behind a final image was enlarged at least to cover its canvas (0 when not a photo)."""
    photo = library.by_path(background.get("source") or "") if library is not None and size else None
    if photo is None or background.get("kind") != "photo":
        return 0.0
    return max(size[0] / photo.size[0], size[1] / photo.size[1])


def _read(path: Path, mode: str, io: IOSettings) -> np.ndarray:
    try:
        return read_image(path, mode=mode, max_pixels=io.max_pixels, min_side=io.min_side)
    except ItemFailed as e:  # say which of the s2 files is bad
        raise ItemFailed(f"s2 {path.name}: {e}") from None


def _horizon(camera: dict | None) -> float | None:
    """The planner's horizon (fraction of H), when layout.json has a usable one."""
    value = (camera or {}).get("horizon")
    return float(value) if isinstance(value, (int, float)) and 0.05 <= value <= 0.95 else None


def run(cfg: DictConfig) -> Summary:
    return run_stage(RepaintStage(cfg), cfg)
