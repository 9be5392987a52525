"""export: the complete items of a run as a dataset in ``<outputs_dir>/datasets/<export.name>/``.

Only final images whose s3 and s4 items are both done (and agree) are exported; the rest are listed in
``left_out.jsonl``, the dataset card, the gallery and the summary. The dataset is built in a hidden
sibling folder and swapped in at the end, so an interrupted export leaves the previous one intact; it
replaces only a folder that is one of its own datasets (``owned``). Same inputs give the same bytes (sorted
order, fixed tar mtimes, no timestamps).

Through the runner, the dataset is one work item: its marker is ``<stages>/export/<name>.meta.json`` (config:
the export settings; fingerprint: every input file, ``export/inputs.py``), so a rerun on an unchanged tree is
a skip ("already exported") as long as the folder still holds exactly what the export wrote (its ownership
record), and a changed tree redoes it. Final images that cannot be read are failures of the stage
(``stages/export/failures.jsonl``) and of the dataset (its own ``failures.jsonl``); the summary counts final
images, as s3 and s4 do.
"""
from __future__ import annotations

import importlib
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from omegaconf import DictConfig

from gen4gen.callbacks import export_deferred
from gen4gen.concepts import ConceptRegistry
from gen4gen.console import Summary
from gen4gen.errors import ItemFailed, UserError
from gen4gen.export import owned
from gen4gen.export.card import card
from gen4gen.export.inputs import tree_fingerprint
from gen4gen.export.items import (ExportContext, collect, find_references, load_instances,
                                  render_reference, upstream_failures, write_bytes)
from gen4gen.export.select import Selection
from gen4gen.hashing import file_fingerprint
from gen4gen.io import jsonl_bytes
from gen4gen.markers import read_meta, upstream_reasons
from gen4gen.runner import Item, ItemWriter, run_stage
from gen4gen.serve.review import apply_review
from gen4gen.settings import ExportSettings, section, top_level
from gen4gen.stage_settings import PathsSettings
from gen4gen.tree import TreeView

FORMATS = {"mycanvas": "gen4gen.export.mycanvas", "customdiffusion": "gen4gen.export.customdiffusion",
           "imagefolder": "gen4gen.export.imagefolder", "coco": "gen4gen.export.coco", "webdataset": "gen4gen.export.wds",
           "kohya": "gen4gen.export.kohya"}
OPTION = "export.name=<another name>"
DIR_NAME = "export"  # <stages>/export: the runner's markers, manifest and failures of the datasets
FAILURES = "failures.jsonl"  # the dataset's own list of the final images it could not take


class ExportStage:
    """One item: the dataset ``<outputs_dir>/datasets/<export.name>``."""
    name = "export"

    def __init__(self, cfg: DictConfig):
        opts = section(cfg, "export", ExportSettings)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", opts.name):
            raise UserError(f"export.name={opts.name!r} must be a plain folder name (letters, digits, _ . -)")
        unknown = [f for f in opts.formats if f not in FORMATS]
        if unknown:
            raise UserError(f"unknown export format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
        self.opts = opts
        self.threads = top_level(cfg).workers  # inside the item: it is one
        paths = section(cfg, "paths", PathsSettings)
        self.stages = paths.stages_dir
        self.datasets = paths.outputs_dir / "datasets"
        self.final = self.datasets / opts.name
        self.out_root = self.stages / DIR_NAME
        self.marker = self.out_root / f"{opts.name}.meta.json"
        self.built: dict | None = None  # what this run's build found (None: skipped or not run)

    def discover(self) -> list[Item]:
        return [Item(self.opts.name, self.final, {"path": str(self.final)}, fingerprint=tree_fingerprint(self.stages),
                     marker=self.marker)]

    def config(self) -> dict:
        # the absolute path too: the card and kohya's dataset.toml name it
        return {**self.opts.model_dump(mode="json"), "dataset": str(self.final.resolve())}

    def intact(self, item: Item, meta: dict) -> bool:
        """The folder holds exactly the files the export wrote (its ownership record, unchanged) and that record is
        the one this marker vouches for: a file added, edited or removed since redoes the export, which then
        refuses a folder that is no longer its own."""
        try:
            record = file_fingerprint(self.final / owned.RECORD)
        except OSError:
            return False
        return record == meta.get("record") and owned.unchanged(self.final)

    def prepare(self, pending: list[Item]) -> None:
        owned.check_replaceable(self.final, OPTION)  # before any work: a folder of someone else's is never replaced

    def process(self, item: Item, out: ItemWriter, rng) -> dict:
        self.built = build(self.stages, self.final, self.opts, self.threads, out.steps)
        return {**self.built, "record": file_fingerprint(self.final / owned.RECORD)}

    def inner_failures(self) -> list[dict]:
        """The final images the dataset could not take; when it was skipped, those its marker lists (still true:
        nothing changed since)."""
        meta = self.built if self.built is not None else read_meta(self.marker.parent, self.marker.name)
        return list((meta or {}).get("failures", []))

    def finish(self, summary: Summary, metas: dict) -> None:
        """The summary counts final images, as s3 and s4 do: a skipped dataset's images are skipped."""
        meta = metas.get(self.opts.name)
        if meta is None:
            return
        summary.out_dir = str(self.final)
        summary.total = meta["images"]
        if self.built is None:
            summary.done, summary.skipped = 0, meta["exported"]
            summary.notes["already exported"] = "nothing changed in the stages tree or the export settings since"
        else:
            summary.done, summary.skipped = meta["exported"], 0
        summary.notes.update(meta["notes"])


def run(cfg: DictConfig) -> Summary:
    if export_deferred(cfg):
        return Summary(stage="export", notes={"deferred": "a shard sees only its own items; the dataset is exported once "
                                              "all shards are done (automatic after a shard multirun, else run "
                                              "`python -m gen4gen stage=export`)"})
    return run_stage(ExportStage(cfg), cfg)


def build(stages: Path, final: Path, opts: ExportSettings, workers: int, steps) -> dict:
    """Write the dataset ``final`` from the stages tree: counts, summary notes and the failure lines.
    ``steps(description, total)`` shows the progress of each pass."""
    name, formats = opts.name, opts.formats
    datasets = final.parent
    tree = TreeView(stages)
    items, left_out = collect(tree)
    items, review_notes = apply_review(stages, items, left_out)  # rejected -> left_out, edited captions used
    failures = upstream_failures(stages)
    chosen = Selection.from_settings(opts)  # export.scenes / export.concepts: the rest is not this dataset's
    unmatched, items = chosen.unmatched(items), chosen.choose(items)
    left_out = [r for r in left_out if chosen.takes_row(r)]
    failures = [r for r in failures if chosen.takes_row(r)]
    threshold = opts.mask_threshold
    # the s2 files an output uses: the gallery draws the layout over image.png, MyCanvas ships mask.png
    s2_files = tuple(f for f, used in (("image.png", opts.gallery), ("mask.png", "mycanvas" in formats))
                     if used)
    loaded, export_failures = [], []

    def load(it):
        try:
            return load_instances(it, threshold, s2_files), None
        except ItemFailed as e:
            return it, str(e)
        except Exception as e:  # noqa: BLE001 - nothing read from disk may stop the export: one item fails
            return it, f"{type(e).__name__}: {e}"

    for it, err in _threads(load, items, workers, steps("final images", len(items))):
        if err:
            export_failures.append({"stage": "export", "id": it.id, "path": str(it.s3_dir), "reason": err})
        else:
            loaded.append(it)
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
        advance = steps("reference photos", len(flat))
        for _ in _threads(lambda r: _render(r, side, ref_failures), flat, workers, advance):
            pass
        refs = {c: [r for r in rows if r.png] for c, rows in refs.items()}

    owned.clear_leftovers(datasets, name)
    tmp = datasets / f".{name}.partial-{os.getpid()}"
    tmp.mkdir(parents=True)
    ref_failures.sort(key=lambda r: r["id"])
    ctx = ExportContext(name, tmp, loaded, refs, left_out + export_failures, failures + ref_failures, opts,
                        tree.concepts, workers)
    try:  # Ctrl-C or a crash in here: the hidden folder goes, the previous dataset stays as it was
        notes: dict = dict(review_notes)  # the card counts them
        def write(fmt: str) -> dict:  # the writers are I/O-bound: overlapped
            return importlib.import_module(FORMATS[fmt]).write(ctx)

        for written in _threads(write, formats, workers, steps("formats", len(formats))):
            notes.update(written)
        if opts.gallery:
            from gen4gen.export import gallery

            gallery.write(ctx)
        write_bytes(tmp / "left_out.jsonl", jsonl_bytes(ctx.failures + ctx.left_out))
        write_bytes(tmp / FAILURES, jsonl_bytes(export_failures + ref_failures))
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

    notes = {"formats": ", ".join(formats)}
    if not chosen.everything:
        notes["selection"] = chosen.describe() + (f" (no final image has {', '.join(unmatched)})"
                                                  if unmatched else "")
    for stage, what in (("s1", "cut-outs"), ("s2", "compositions"), ("s3", "images"), ("s4", "captions")):
        notes.update(tree.ignored(stage, what))
    if left_out:
        notes["left out (incomplete)"] = f"{len(left_out)}: " + "; ".join(
            f"{n} x {r}" for r, n in _tally(r["reason"] for r in left_out))
    notes.update(review_notes)
    if ref_failures:
        notes["reference cut-outs unreadable"] = len(ref_failures)
    if failures:
        notes["upstream failures"] = ", ".join(
            f"{s} {n}" for s, n in _tally(f["stage"] for f in failures)) + " (see left_out.jsonl)"
    notes["dataset card"] = str(final / "README.md")
    if opts.gallery:
        notes["gallery"] = str(final / "gallery" / "index.html")
    return {"images": len(items), "exported": len(loaded), "notes": notes, "failures": export_failures}


def _threads(fn, items: list, workers: int, advance):
    """``fn`` of each item on ``workers`` threads, the results in order, one step each; when a step raises
    (Ctrl-C stopped the run) what has not started is cancelled instead of run."""
    pool = ThreadPoolExecutor(workers)
    try:
        for result in pool.map(fn, items):
            advance()
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


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

