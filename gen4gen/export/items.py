"""What an export holds: every final image whose s3 and s4 items are both done and agree, with its layout,
captions and instance masks; everything else is listed as left out with the reason.
"""
from __future__ import annotations

import hashlib
import io
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from gen4gen.artefacts import Captions, Layout, S3Meta
from gen4gen.concepts import ConceptRegistry
from gen4gen.contain import contained
from gen4gen.errors import ItemFailed
from gen4gen.images import read_image
from gen4gen.settings import ExportSettings
from gen4gen.io import png_bytes
from gen4gen.markers import read_failures
from gen4gen.paths import STAGE_DIRS
from gen4gen.tree import TreeView



@dataclass
class Instance:
    name: str  # "dog_1"
    concept: str
    mask_path: Path
    bbox: list[float] = field(default_factory=list)  # x, y, w, h of the mask pixels >= threshold
    area: int = 0
    rle: dict | None = None  # COCO RLE, counts as str


@dataclass
class ExportItem:
    id: str  # "<scene>/<composition id>/<variant>"
    key: str  # the same as a flat file name: "pets__cat+dog_000__v0_procedural"
    s3_dir: Path
    s2_dir: Path
    s4_dir: Path
    s3_meta: S3Meta
    layout: Layout
    captions: Captions
    size: tuple[int, int] = (0, 0)
    instances: list[Instance] = field(default_factory=list)

    @property
    def scene(self) -> str:
        return self.id.split("/")[0]

    @property
    def composition(self) -> str:  # "<scene>/<composition id>"
        return self.id.rsplit("/", 1)[0]

    @property
    def variant(self) -> str:
        return self.id.rsplit("/", 1)[1]

    @property
    def image_path(self) -> Path:
        return self.s3_dir / "image.png"

    @property
    def concepts(self) -> list[str]:
        return sorted({i.concept for i in self.instances})

    def objects(self) -> list[dict]:
        return [{"name": i.name, "concept": i.concept, "bbox": i.bbox, "area": i.area} for i in self.instances]


@dataclass
class Reference:
    """One concept photo, as its s1 cut-out composited on white."""
    concept: str
    scene: str
    s1_id: str  # "<scene>/<concept>/<stem>"
    cutout: Path
    bbox_xyxy: list | None
    file_name: str  # "<scene>__<stem>.png"
    backend: str = ""  # the segmenter that cut it out
    png: bytes = b""


def flat_key(item_id: str) -> str:
    """An item id as one file-name-safe word without dots (WebDataset splits keys at the first dot)."""
    return re.sub(r"[^A-Za-z0-9_+\-]", "_", item_id.replace("/", "__"))


def fit_name(name: str, limit: int = 200) -> str:
    """``name`` unchanged when it fits in one file name with room for a suffix; else cut, with a hash of
    the whole name so that two long names stay apart (file systems stop at 255 bytes)."""
    if len(name.encode("utf-8")) <= limit:
        return name
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).hexdigest()
    return name.encode("utf-8")[:limit - 17].decode("utf-8", "ignore") + "_" + digest


def collect(tree: TreeView) -> tuple[list[ExportItem], list[dict]]:
    """Complete items (sorted by id) and the final images left out, each ``{stage, id, reason}``; finished
    images that are not current are never exported (``tree.ignored`` says how many and why)."""
    stages_dir = tree.stages_dir
    s4_root = tree.root("s4")
    items, left_out, keys = [], [], set()
    # every s3 variant with a meta.json, readable or not: a broken meta is a left-out line, not a silent gap
    finals = {**{iid: reason for iid, (_, reason) in tree.unreadable("s3").items()}, **tree.items("s3")}
    current4, done4, bad4 = tree.items("s4"), tree.finished("s4"), tree.unreadable("s4")
    s4_reasons = {f["id"]: f["reason"] for f in read_failures(s4_root)} if s4_root.is_dir() else {}
    tokens = tree.concepts.tokens()
    for item_id, entry in sorted(finals.items()):
        def leave(stage: str, reason: str) -> None:
            left_out.append({"stage": stage, "id": item_id, "reason": reason})

        if isinstance(entry, str):
            leave("export", entry)
            continue
        meta, s4_dir = entry.meta, s4_root / item_id
        if item_id in bad4:
            leave("export", bad4[item_id][1])
            continue
        s4 = done4.get(item_id)
        if s4 is None:
            reason = s4_reasons.get(item_id)
            leave("s4", f"captioning failed: {reason}" if reason else "no captions yet (run stage=s4)")
            continue
        if (s4.meta.s3_config_hash, s4.meta.s3_fingerprint) != (meta.config_hash, meta.fingerprint):
            leave("s4", "captions are out of date: the s3 image changed after s4 ran (rerun stage=s4)")
            continue
        if item_id not in current4:
            leave("s4", "captions were not made by the latest s4 run (rerun stage=s4)")
            continue
        try:  # s2_dir refuses a composition folder outside the stages where paths are contained
            s2_dir = meta.s2_dir(stages_dir)
            layout, captions = tree.layout(s2_dir), tree.captions(s4_dir)
        except ItemFailed as e:
            leave("export", str(e))
            continue
        if any(tokens.get(c) != t for c, t in captions.modifier_tokens.items()):  # a tree captioned before the
            leave("s4", "captions use other tokens than the tree's concept registry (rerun stage=s4)")  # registry
            continue
        key = fit_name(flat_key(item_id))
        while key in keys:  # ids that differ only in odd characters
            key += "_"
        keys.add(key)
        items.append(ExportItem(item_id, key, entry.dir, s2_dir, s4_dir, meta, layout, captions))
    return items, left_out


def upstream_failures(stages_dir: Path) -> list[dict]:
    """Every failure line of s1..s4 (photos, compositions, final images that never got made)."""
    rows = []
    for stage, d in STAGE_DIRS.items():
        if (stages_dir / d).is_dir():
            rows += [{"stage": r.get("stage", stage), "id": r.get("id", ""), "reason": r.get("reason", "")}
                     for r in read_failures(stages_dir / d)]
    return rows


def load_instances(item: ExportItem, threshold: int, s2_files: tuple[str, ...] = ("image.png", "mask.png")
                   ) -> ExportItem:
    """Instance masks -> boxes, areas and COCO RLE. Every image the export ships or draws (the final
    image, the instance masks and the ``s2_files`` the chosen outputs use) is decoded in full here, so a
    truncated file whose header still reads fails this item instead of reaching a dataset; sizes must
    match the layout."""
    try:  # what the export ships must be the stages' own files: a link pointing out is refused
        final = read_image(contained(item.image_path.name, item.s3_dir, "s3 image"))
    except ItemFailed as e:
        raise ItemFailed(f"final image: {e}") from None
    for name in s2_files:
        try:
            read_image(contained(name, item.s2_dir, "s2 file"))
        except ItemFailed as e:
            raise ItemFailed(f"s2 {name}: {e}") from None
    size = (int(final.shape[1]), int(final.shape[0]))
    want = tuple(item.layout.size)
    if size != want:
        raise ItemFailed(f"final image is {size[0]}x{size[1]} but the layout says {want[0]}x{want[1]}")
    item.size = size
    item.instances = []
    for obj in item.layout.objects:
        try:
            path = contained(obj.mask_file, item.s2_dir, "layout.json mask")
            mask = read_image(path, mode="L")
        except ItemFailed as e:
            raise ItemFailed(f"instance mask {obj.mask_file}: {e}") from None
        if mask.shape != (size[1], size[0]):
            raise ItemFailed(f"instance mask {path.name} is {mask.shape[1]}x{mask.shape[0]}, not the image size")
        binary = np.asfortranarray((mask >= threshold).astype(np.uint8))
        if not binary.any():
            continue  # fully hidden: nothing to annotate (the captions do not count it either)
        rle = mask_utils.encode(binary)
        rle["counts"] = rle["counts"].decode("ascii")
        item.instances.append(Instance(obj.name, obj.concept, path,
                                       [float(v) for v in mask_utils.toBbox(rle)], int(mask_utils.area(rle)), rle))
    if not item.instances:
        raise ItemFailed("no instance has visible pixels")
    return item


def find_references(tree: TreeView, concepts: set[str]) -> dict[str, list[Reference]]:
    """The current s1 cut-outs of each concept (all scenes), sorted."""
    refs: dict[str, list[Reference]] = {c: [] for c in sorted(concepts)}
    for s1_id, entry in tree.items("s1").items():
        meta, folder = entry.meta, entry.dir
        if meta.concept in refs and (folder / "cutout.png").is_file():
            refs[meta.concept].append(Reference(meta.concept, meta.scene, s1_id, folder / "cutout.png",
                                                meta.bbox_xyxy, fit_name(f"{flat_key(meta.scene)}__{flat_key(folder.name)}") + ".png",
                                                meta.backend))
    return refs


def render_reference(ref: Reference, side: int) -> Reference:
    """The cut-out on white, cropped to the object with a margin, padded square, at most ``side`` px."""
    rgb = read_image(ref.cutout, mode="RGB")  # RGBA composited on white by the reader
    h, w = rgb.shape[:2]
    if ref.bbox_xyxy and len(ref.bbox_xyxy) == 4:
        x0, y0, x1, y1 = (int(v) for v in ref.bbox_xyxy)
        m = int(0.08 * max(x1 - x0, y1 - y0))
        x0, y0, x1, y1 = max(0, x0 - m), max(0, y0 - m), min(w, x1 + m), min(h, y1 + m)
        if x1 > x0 and y1 > y0:
            rgb = rgb[y0:y1, x0:x1]
    h, w = rgb.shape[:2]
    s = max(h, w)
    square = np.full((s, s, 3), 255, np.uint8)
    square[(s - h) // 2:(s - h) // 2 + h, (s - w) // 2:(s - w) // 2 + w] = rgb
    im = Image.fromarray(square)
    if s > side:
        im = im.resize((side, side), Image.Resampling.LANCZOS)
    ref.png = png_bytes(im)
    return ref


def jpeg_bytes(im: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@dataclass
class ExportContext:
    """Everything a format writer needs; writers write under ``root / <format>``."""
    name: str
    root: Path
    items: list[ExportItem]  # sorted by id, instances loaded
    references: dict[str, list[Reference]]  # concept -> rendered references
    left_out: list[dict]  # final images not exported: {stage, id, reason}
    failures: list[dict]  # failure lines of every stage (s1..s4 and export)
    settings: ExportSettings  # the export config block
    registry: ConceptRegistry  # the stage tree's concepts and tokens (gen4gen.concepts)
    workers: int = 2  # threads (the bytes written do not depend on it)

    @property
    def tokens(self) -> dict[str, str]:
        """concept -> ``<newK>`` of the exported concepts, in token order: the registry's, the same in every
        caption and every dataset of the tree."""
        return self.registry.tokens(set(self.concepts))

    @property
    def concepts(self) -> list[str]:
        return sorted({c for it in self.items for c in it.concepts})

    @property
    def final(self) -> Path:
        """Where the dataset lives once the export swaps it in (``root`` is its temporary sibling): the absolute
        path that cards and configs name."""
        return (self.root.parent / self.name).resolve()


def copy_file(src: Path, dst: Path) -> None:
    """Byte copy (the export folder is fresh, so no atomic dance is needed here: the whole folder is swapped in)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def write_bytes(dst: Path, data: bytes) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)
