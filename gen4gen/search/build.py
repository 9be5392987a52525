"""Build a model index from a folder of sample images per model (``<root>/<model>/**/*.png``), or a bench
run folder (its ``images/<model>/...``). Captions, when present, come from a sidecar ``<image>.txt`` or
``<image stem>.json`` (key ``prompt|text|caption``), or a table in the model folder, the root or its parent
(``metadata.jsonl`` / ``results.jsonl`` / ``results.csv`` with an image column ``file_name|image|path``,
relative to the table, and a text column ``text|prompt|caption``)."""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from rich.markup import escape

from gen4gen.console import console, progress
from gen4gen.contain import Escaped, contained
from gen4gen.errors import UserError
from gen4gen.images import IMAGE_EXTENSIONS, BadImage, read_image
from gen4gen.search.dataset import dataset_root, dataset_samples
from gen4gen.search.index import IndexInfo, IndexWriter, MomentSpec, read_info, write_info
from gen4gen.search.repair import clear_derived

log = logging.getLogger(__name__)
CAPTION_TABLES = ("metadata.jsonl", "results.jsonl", "results.csv")
IMAGE_COLS = ("file_name", "image", "path", "image_path")
TEXT_COLS = ("text", "prompt", "caption")


def samples_root(root: Path) -> Path:
    """A bench run folder keeps its samples in ``images/<model>/``."""
    bench = root / "images"
    if bench.is_dir() and any((root / n).is_file() for n in CAPTION_TABLES):
        return bench
    return root


def discover(root: Path) -> dict[str, list[Path]]:
    """model name -> its sample images (sorted); hidden folders and the index itself are skipped."""
    if not root.is_dir():
        raise UserError(f"search.index={root} is not a folder of <model>/<images>")
    models = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        images = sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                        and not any(part.startswith(".") for part in p.relative_to(d).parts) and _inside(p, root))
        if images:
            models[d.name] = images
        else:
            console.print(f"[yellow]search: skipped {d}: no sample images ({', '.join(sorted(IMAGE_EXTENSIONS))})[/yellow]")
    if not models:
        raise UserError(f"no <model>/<image> samples under {root}")
    return models


def _inside(path: Path, root: Path) -> bool:
    """A sample that is a link leading out of the samples folder is left out with one line."""
    try:
        contained(path, root, "sample")
        return True
    except Escaped as e:
        console.print(f"[yellow]search: skipped {escape(str(e))}[/yellow]", soft_wrap=True)
        return False


def _table_captions(path: Path) -> dict[Path, str]:
    try:
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            import pandas as pd

            rows = pd.read_csv(path).to_dict("records")
    except (OSError, ValueError) as e:
        log.warning("ignoring caption table %s: %s", path, e)
        return {}
    out = {}
    for r in rows:
        img = next((r[c] for c in IMAGE_COLS if isinstance(r.get(c), str)), None)
        text = next((r[c] for c in TEXT_COLS if isinstance(r.get(c), str)), None)
        if img and text:
            out[(path.parent / img).resolve()] = text
    return out


def captions_for(root: Path, model_dir: Path, images: list[Path]) -> list[str | None]:
    table: dict[Path, str] = {}
    for folder in (root.parent, root, model_dir):
        for name in CAPTION_TABLES:
            if (folder / name).is_file():
                table.update(_table_captions(folder / name))
    out = []
    for p in images:
        side = next((s for s in (p.with_name(p.name + ".txt"), p.with_suffix(".txt")) if s.is_file()), None)
        out.append(side.read_text(encoding="utf-8").strip() if side else _json_caption(p.with_suffix(".json"))
                   or table.get(p.resolve()))
    return out


def _json_caption(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return next((meta[k] for k in TEXT_COLS if isinstance(meta, dict) and isinstance(meta.get(k), str)), None)


def fingerprint(root: Path, models: dict[str, list[Path]], config: dict) -> str:
    h = hashlib.blake2b(json.dumps(config, sort_keys=True).encode(), digest_size=12)
    tables = [d / n for d in (root.parent, root, *(root / m for m in models)) for n in CAPTION_TABLES]
    images = [q for imgs in models.values() for q in imgs]
    for f in tables + [s for p in images for s in (p, p.with_name(p.name + ".txt"), p.with_suffix(".txt"),
                                                  p.with_suffix(".json"))]:
        if f.is_file():
            st = f.stat()
            h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


@dataclass
class IndexPlan:
    """What an index of ``root`` is built from: the samples folder, its models (entry -> images), the captions a
    dataset brings along (None: looked up beside the images), the build settings and the fingerprint of all of it
    (samples by path, size and time). The stage runner (gen4gen.stages.search) compares the fingerprint with the
    index's marker and builds only when they differ or the index is damaged."""
    root: Path
    models: dict[str, list[Path]]
    captions: dict[Path, str] | None
    config: dict
    fingerprint: str


def plan_index(root: Path, config: dict) -> IndexPlan:
    dataset = dataset_root(root)
    if dataset is not None:  # an exported dataset: its concepts (or itself) as entries, its captions
        models, table = dataset_samples(dataset, str(config.get("dataset_by", "concept")))
        config = {**config, "captions": sorted((str(p), c) for p, c in table.items())}
        return IndexPlan(dataset, models, table, config, fingerprint(dataset, models, config))
    root = samples_root(root)
    models = discover(root)
    return IndexPlan(root, models, None, config, fingerprint(root, models, config))


def samples_of(index: Path, why: str) -> Path:
    """The samples folder the damaged index (``why``) was built from, as its index.json records it; a UserError
    when that is not known or gone."""
    try:
        samples = Path(str(read_info(index).notes.get("root") or ""))
    except UserError:
        samples = Path(".")
    if not str(samples) or samples == Path(".") or not samples.is_dir():
        raise UserError(f"model index {index}: {why}; rebuild the index (its samples folder is not known or gone)")
    return samples


def said_damaged(index: Path, why: str) -> None:
    console.print(f"[yellow]search: the model index {escape(str(index))} is damaged ({escape(why)}); "
                  f"rebuilding it from the samples[/yellow]", soft_wrap=True)


def build_index(root: Path, out: Path, models: dict[str, list[Path]], image_enc, text_enc_factory, spec: MomentSpec,
                keep_raw: bool, fp: str, io_cfg=None, captions: dict[Path, str] | None = None) -> IndexInfo:
    """``captions``: image -> caption when the samples come with their own (a dataset); else they are looked up
    beside the images (:func:`captions_for`)."""
    (out / "index.json").unlink(missing_ok=True)  # the folder is not an index until it is complete
    clear_derived(out)
    limits = {"max_pixels": int(io_cfg.max_pixels), "min_side": int(io_cfg.min_side)} if io_cfg else {}
    names, feats, caps, failures = [], [], [], []
    with progress() as bar:
        task = bar.add_task("encoding model samples", total=sum(map(len, models.values())))
        for name, paths in models.items():
            images, kept = [], []
            for p in paths:
                try:
                    images.append(Image.fromarray(read_image(p, mode="RGB", **limits)))
                    kept.append(p)
                except BadImage as e:
                    failures.append(f"{p}: {e}")
                bar.advance(task)
            if not images:
                failures.append(f"{name}: no readable image; model left out")
                continue
            names.append(name)
            feats.append(image_enc.encode_images(images).astype(np.float32))
            found = captions_for(root, root / name, kept) if captions is None else [captions.get(p) for p in kept]
            caps.append([c for c in found if c])
    for f in failures:
        console.print(f"[yellow]search: skipped {f}[/yellow]")
    if not names:
        raise UserError(f"no model under {root} has a readable image")
    spaces = {"image": _write_space(out, "image", feats, image_enc, spec, keep_raw)}
    if any(caps):
        text_enc = text_enc_factory()
        cap_feats = [text_enc.encode_texts(c) if c else np.zeros((0, text_enc.dim), np.float32) for c in caps]
        spaces["caption"] = _write_space(out, "caption", cap_feats, text_enc, MomentSpec("diag", eps=spec.eps,
                                                                                        dtype=spec.dtype), keep_raw)
    info = IndexInfo(names=names, spaces=spaces, fingerprint=fp,
                     notes={"root": str(root), "failures": failures[:100], "n_failures": len(failures)})
    write_info(out, info)
    return info


def _write_space(out: Path, space: str, feats: list[np.ndarray], enc, spec: MomentSpec, keep_raw: bool) -> dict:
    raw_rows = sum(len(f) for f in feats) if keep_raw else 0
    w = IndexWriter(out, space, len(feats), enc.dim, spec, raw_rows)
    for i, f in enumerate(feats):
        if len(f):
            w.add(i, f)
        elif keep_raw:
            w.arrays["offsets"][i + 1] = w.raw_pos
    w.close()
    return {"dim": enc.dim, "encoder": enc.name, "moment": spec.kind, "rank": spec.rank, "raw": keep_raw,
            "normalised": bool(enc.normalised)}
