"""export: the complete items of a run as a dataset in ``<outputs_dir>/datasets/<export.name>/``.

Only final images whose s3 and s4 items are both done (and agree) are exported; the rest are listed in
``left_out.jsonl``, the dataset card, the gallery and the summary. The dataset is built in a hidden
sibling folder and swapped in at the end, so a rerun rewrites it cleanly and an interrupted export
leaves the previous one intact; it replaces only a folder that is one of its own datasets (``owned``).
Same inputs give the same bytes (sorted order, fixed tar mtimes, no timestamps).
"""
from __future__ import annotations

import importlib
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from omegaconf import DictConfig

from gen4gen.callbacks import export_deferred
from gen4gen.concepts import ConceptRegistry
from gen4gen.console import Summary, progress
from gen4gen.errors import ItemFailed, UserError
from gen4gen.export import owned
from gen4gen.export.card import card
from gen4gen.export.items import (ExportContext, collect, find_references, load_instances,
                                  render_reference, upstream_failures, write_bytes)
from gen4gen.export.select import Selection
from gen4gen.io import jsonl_bytes
from gen4gen.markers import upstream_reasons
from gen4gen.serve.review import apply_review
from gen4gen.settings import ExportSettings, section
from gen4gen.tree import TreeView

FORMATS = {"mycanvas": "gen4gen.export.mycanvas", "customdiffusion": "gen4gen.export.customdiffusion",
           "imagefolder": "gen4gen.export.imagefolder", "coco": "gen4gen.export.coco", "webdataset": "gen4gen.export.wds",
           "kohya": "gen4gen.export.kohya"}
OPTION = "export.name=<another name>"


def run(cfg: DictConfig) -> Summary:
    t0 = time.perf_counter()
    if export_deferred(cfg):
        return Summary(stage="export", notes={"deferred": "a shard sees only its own items; the dataset is exported once "
                                              "all shards are done (automatic after a shard multirun, else run "
                                              "`python -m gen4gen stage=export`)"})
    opts = section(cfg, "export", ExportSettings)
    name = opts.name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", name):
        raise UserError(f"export.name={name!r} must be a plain folder name (letters, digits, _ . -)")
    formats = opts.formats
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UserError(f"unknown export format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
    stages = Path(cfg.paths.stages_dir)
    datasets = Path(cfg.paths.outputs_dir) / "datasets"
    final = datasets / name
    summary = Summary(stage="export", out_dir=str(final))
    owned.check_replaceable(final, OPTION)  # before any work: a folder of someone else's is never replaced

    tree = TreeView(stages)
    items, left_out = collect(tree)
    items, review_notes = apply_review(stages, items, left_out)  # rejected -> left_out, edited captions used
    failures = upstream_failures(stages)
    chosen = Selection.from_settings(opts)  # export.scenes / export.concepts: the rest is not this dataset's
    unmatched, items = chosen.unmatched(items), chosen.choose(items)
    left_out = [r for r in left_out if chosen.takes_row(r)]
    failures = [r for r in failures if chosen.takes_row(r)]
    workers = max(1, int(cfg.workers))
    threshold = opts.mask_threshold
    # the s2 files an output uses: the gallery draws the layout over image.png, MyCanvas ships mask.png
    s2_files = tuple(f for f, used in (("image.png", opts.gallery), ("mask.png", "mycanvas" in formats))
                     if used)
    loaded, export_failures = [], []
    with progress() as bar, ThreadPoolExecutor(workers) as pool:
        task = bar.add_task("export items", total=len(items))

        def load(it):
            try:
                return load_instances(it, threshold, s2_files), None
            except ItemFailed as e:
                return it, str(e)
            except Exception as e:  # noqa: BLE001 - nothing read from disk may stop the export: one item fails
                return it, f"{type(e).__name__}: {e}"

        for it, err in pool.map(load, items):
            if err:
                export_failures.append({"stage": "export", "id": it.id, "path": str(it.s3_dir), "reason": err})
            else:
                loaded.append(it)
            bar.advance(task)
    if not loaded:
        why = "; ".join(sorted({r["reason"] for r in left_out + export_failures})[:3]) or \
            upstream_reasons(stages, "export") or "no s3 output"
        raise UserError(f"nothing to export from {stages}: no final image has both its s3 image and s4 captions "
                        f"({len(left_out) + len(export_failures)} incomplete: {why})")

    refs = find_references(tree, {c for it in loaded for c in it.concepts})
    refs = {c: [r for r in rows if chosen.takes(r.scene, [c])] for c, rows in refs.items()}
    ref_failures: list[dict] = []  # a bad cut-out loses one reference image, not the items that use the concept
    # the formats that ship reference images, and the gallery that shows them: decoded in full here
    if {"mycanvas", "customdiffusion", "kohya"} & set(formats) or opts.gallery:
        side = opts.reference_size
        flat = [r for rows in refs.values() for r in rows]
        with progress() as bar, ThreadPoolExecutor(workers) as pool:
            task = bar.add_task("export references", total=len(flat))
            for _ in pool.map(lambda r: _render(r, side, ref_failures), flat):
                bar.advance(task)
        refs = {c: [r for r in rows if r.png] for c, rows in refs.items()}

    owned.clear_leftovers(datasets, name)
    tmp = datasets / f".{name}.partial-{os.getpid()}"
    tmp.mkdir(parents=True)
    ref_failures.sort(key=lambda r: r["id"])
    ctx = ExportContext(name, tmp, loaded, refs, left_out + export_failures, failures + ref_failures, opts,
                        tree.concepts, workers)
    try:
        notes: dict = dict(review_notes)  # the card counts them
        with progress() as bar, ThreadPoolExecutor(workers) as pool:  # the writers are I/O-bound: overlap them
            task = bar.add_task("export formats", total=len(formats))
            for written in pool.map(lambda f: importlib.import_module(FORMATS[f]).write(ctx), formats):
                notes.update(written)
                bar.advance(task)
        if opts.gallery:
            from gen4gen.export import gallery

            gallery.write(ctx)
        write_bytes(tmp / "left_out.jsonl", jsonl_bytes(ctx.failures + ctx.left_out))
        write_bytes(tmp / "failures.jsonl", jsonl_bytes(export_failures + ref_failures))
        # the tokens this dataset's captions use, with every concept the tree has known (gen4gen.concepts)
        write_bytes(tmp / ConceptRegistry.FILE, tree.concepts.dump())
        text = card(ctx, formats, notes)
        write_bytes(tmp / "README.md", text.encode("utf-8"))
        if "mycanvas" in formats:
            write_bytes(tmp / "mycanvas" / "README.md", text.encode("utf-8"))
        owned.write_record(tmp)
        owned.swap(tmp, final, OPTION)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only still there when something above failed

    summary.total = len(items)
    summary.done = len(loaded)
    summary.failed = len(export_failures)
    summary.notes["formats"] = ", ".join(formats)
    if not chosen.everything:
        summary.notes["selection"] = chosen.describe() + (f" (no final image has {', '.join(unmatched)})"
                                                          if unmatched else "")
    for stage, what in (("s1", "cut-outs"), ("s2", "compositions"), ("s3", "images"), ("s4", "captions")):
        summary.notes.update(tree.ignored(stage, what))
    if left_out:
        summary.notes["left out (incomplete)"] = f"{len(left_out)}: " + "; ".join(
            f"{n} x {r}" for r, n in _tally(r["reason"] for r in left_out))
    summary.notes.update(review_notes)
    if ref_failures:
        summary.notes["reference cut-outs unreadable"] = len(ref_failures)
    if failures:
        summary.notes["upstream failures"] = ", ".join(
            f"{s} {n}" for s, n in _tally(f["stage"] for f in failures)) + " (see left_out.jsonl)"
    summary.notes["dataset card"] = str(final / "README.md")
    if opts.gallery:
        summary.notes["gallery"] = str(final / "gallery" / "index.html")
    summary.seconds = round(time.perf_counter() - t0, 2)
    return summary


def _render(ref, side, ref_failures):
    try:
        return render_reference(ref, side)
    except Exception as e:  # noqa: BLE001 - ItemFailed, or anything else a bad file raises
        ref_failures.append({"stage": "export", "id": ref.s1_id, "path": str(ref.cutout),
                                "reason": f"reference cut-out unreadable: {e}"})
        return ref


def _tally(values) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))

