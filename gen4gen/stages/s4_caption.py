"""s4: caption every final image (each done s3 variant) from its composition's layout.

``stages/s3_background_repainting/<scene>/<comp>/<variant>/`` -> ``stages/s4_captions/<scene>/<comp>/<variant>/``
with ``captions.json`` = ``{short, detailed, personalized, modifier_tokens, captioner, fallback}`` and
``meta.json``. Modifier tokens are global: every concept of the s2 output, sorted, gets ``<new1>``,
``<new2>``... so the same concept has the same token in every caption of the dataset.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from gen4gen.artefacts import Captions, Layout, S3Meta, S4Meta, stage_rel
from gen4gen.caption.concepts import dataset_concepts, modifier_tokens
from gen4gen.caption.template import CaptionJob, Outcome
from gen4gen.backends import build_backend
from gen4gen.console import Summary, progress
from gen4gen.errors import ItemFailed, UserError
from gen4gen.hashing import file_fingerprint, stable_hash
from gen4gen.manifest import Currency
from gen4gen.markers import META, done_items, upstream_reasons
from gen4gen.paths import STAGE_DIRS
from gen4gen.runner import Item, ItemWriter, run_stage

DIR_NAME = STAGE_DIRS["s4"]
S2_DIR = STAGE_DIRS["s2"]
S3_DIR = STAGE_DIRS["s3"]


class CaptionStage:
    name = "s4"
    meta_model = S4Meta

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.stages_dir = stages = Path(cfg.paths.stages_dir)
        self.s2_root, self.s3_root, self.out_root = stages / S2_DIR, stages / S3_DIR, stages / DIR_NAME
        self.captioner = build_backend(cfg.captioner, "captioner")
        self.outcomes: dict[str, Outcome] = {}
        self.tokens: dict[str, str] = {}
        self._stale = 0

    def discover(self) -> list[Item]:
        if not self.s3_root.is_dir():
            raise UserError(f"no s3 output in {self.s3_root}; run stage=s3 first")
        currency = Currency(self.stages_dir)
        current = currency.current("s3")
        finals: list[tuple[Path, str, S3Meta | str]] = []  # (folder, id, meta or why it is unreadable)
        # final images sit at <scene>/<comp>/<variant>/; a meta.json that does not parse is a failure, not a gap
        for folder in sorted(p.parent for p in self.s3_root.glob(f"*/*/*/{META}")):
            item_id = folder.relative_to(self.s3_root).as_posix()
            try:
                meta = S3Meta.load(folder)
            except ItemFailed as e:
                finals.append((folder, item_id, str(e)))
                continue
            if current.get(item_id) != meta.hash:  # not made by s3's latest run, or from a stale composition
                self._stale += 1
                continue
            finals.append((folder, item_id, meta))
        if not finals and (why := upstream_reasons(self.s3_root.parent, self.name)):
            raise UserError(f"nothing to caption: no s3 image in {self.s3_root}; {why}")
        layouts: dict[Path, Layout | str] = {}
        paths: dict[str, Path | str] = {}  # item id -> its layout file, or why it has none
        for _, item_id, meta in finals:
            if isinstance(meta, S3Meta):
                try:
                    paths[item_id] = path = meta.s2_dir(self.stages_dir) / Layout.FILE
                except ItemFailed as e:  # a composition folder outside the stages
                    paths[item_id] = str(e)
                    continue
                if path not in layouts:
                    try:
                        layouts[path] = Layout.load(path)
                    except ItemFailed as e:  # say which composition's layout, as s4 reads another stage's file
                        layouts[path] = f"cannot read layout {stage_rel(path, self.stages_dir)}: {e}"
        concepts = set(dataset_concepts(self.s2_root, Path(self.cfg.paths.source_dir), currency.current("s2")))
        for layout in layouts.values():
            if isinstance(layout, Layout):
                concepts |= layout.concepts
        self.tokens = modifier_tokens(sorted(concepts))
        items = []
        for folder, item_id, meta in finals:
            if isinstance(meta, str):
                items.append(Item(item_id, self.out_root / item_id, {"path": str(folder)}, error=meta))
                continue
            path = paths[item_id]
            layout = layouts[path] if isinstance(path, Path) else path
            if isinstance(layout, str):
                items.append(Item(item_id, self.out_root / item_id, {"path": str(path)}, error=layout))
                continue
            own = {c: self.tokens[c] for c in sorted(layout.concepts)}
            # s3's hash and fingerprint cover the image; the layout file and the tokens cover the words
            phrase = meta.phrase
            fp = stable_hash(json.dumps([meta.config_hash, meta.fingerprint, file_fingerprint(path),
                                         own, phrase], sort_keys=True))
            items.append(Item(item_id, self.out_root / item_id,
                              {"path": str(folder / "image.png"), "layout": layout.data(),
                               "layout_path": stage_rel(path, self.stages_dir), "background": phrase,
                               "s3_config_hash": meta.config_hash, "s3_fingerprint": meta.fingerprint},
                              fingerprint=f"{fp:016x}", inputs={item_id: meta.hash}))
        return items

    def config(self) -> dict:
        return self.captioner.config()

    def job(self, item: Item) -> CaptionJob:
        return CaptionJob(item.id, item.data["layout"], self.tokens, sorted(self.tokens), Path(item.data["path"]),
                          item.data.get("background"))

    def prepare(self, pending: list[Item]) -> None:
        """All captions at once: an LLM captioner runs its calls concurrently."""
        with progress() as bar:
            task = bar.add_task(f"s4 captions ({self.captioner.name})", total=len(pending))
            outcomes = self.captioner.caption_all([self.job(it) for it in pending], on_done=lambda: bar.advance(task))
        self.outcomes = {it.id: o for it, o in zip(pending, outcomes)}

    def process(self, item: Item, out: ItemWriter, rng: np.random.Generator) -> dict:
        outcome = self.outcomes.pop(item.id, None) or self.captioner.caption_all([self.job(item)])[0]
        if outcome.captions is None:
            raise ItemFailed(outcome.error or "no caption")
        out.bytes("captions.json", Captions.build(outcome.captions).dump())
        return {"captioner": outcome.captions["captioner"], "fallback": outcome.captions["fallback"],
                "layout": item.data["layout_path"], "s3_config_hash": item.data["s3_config_hash"],
                "s3_fingerprint": item.data["s3_fingerprint"], **outcome.meta}

    def finish(self, summary: Summary) -> None:
        fallbacks = sum(1 for _, m in done_items(self.out_root) if m.get("fallback"))
        if fallbacks:
            summary.notes["template fallbacks (LLM caption rejected)"] = fallbacks
        if self._stale:
            summary.notes["stale images ignored (not made by the latest s3 run; rerun stage=s3)"] = self._stale
        redo = sum(1 for _, m in done_items(self.out_root) if m.get("redo"))
        if redo:
            summary.notes["llm gave no reply (template caption; redone on rerun)"] = redo
        summary.notes["modifier tokens"] = " ".join(f"{t}={c}" for c, t in self.tokens.items())


def run(cfg: DictConfig) -> Summary:
    return run_stage(CaptionStage(cfg), cfg)
