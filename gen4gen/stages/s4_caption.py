"""s4: caption every final image (each done s3 variant) from its composition's layout.

``stages/s3_background_repainting/<scene>/<comp>/<variant>/`` -> ``stages/s4_captions/<scene>/<comp>/<variant>/``
with ``captions.json`` = ``{short, detailed, personalized, modifier_tokens, captioner, fallback}`` and
``meta.json``. Modifier tokens come from the tree's concept registry (gen4gen.concepts): the same concept has
the same token in every caption of the dataset and in every later run.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from gen4gen.artefacts import Captions, Layout, S4Meta, stage_rel
from gen4gen.caption.template import CaptionJob, Outcome
from gen4gen.backends import build_backend
from gen4gen.console import Summary, progress
from gen4gen.errors import ItemFailed, UserError
from gen4gen.concepts import ConceptRegistry, record_concepts
from gen4gen.hashing import stable_hash
from gen4gen.markers import upstream_reasons
from gen4gen.paths import STAGE_DIRS
from gen4gen.runner import Item, ItemWriter, run_stage
from gen4gen.settings import section
from gen4gen.stage_settings import PathsSettings
from gen4gen.tree import TreeView

DIR_NAME = STAGE_DIRS["s4"]
S2_DIR = STAGE_DIRS["s2"]
S3_DIR = STAGE_DIRS["s3"]


class CaptionStage:
    name = "s4"
    meta_model = S4Meta

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.stages_dir = stages = section(cfg, "paths", PathsSettings).stages_dir
        self.s2_root, self.s3_root, self.out_root = stages / S2_DIR, stages / S3_DIR, stages / DIR_NAME
        self.captioner = build_backend(cfg.captioner, "captioner")
        self.outcomes: dict[str, Outcome] = {}
        self.tokens: dict[str, str] = {}
        self._ignored: dict[str, int] = {}  # upstream items not taken, by what to do about them
        self._added = 0

    def discover(self) -> list[Item]:
        if not self.s3_root.is_dir():
            raise UserError(f"no s3 output in {self.s3_root}; run stage=s3 first")
        tree = TreeView(self.stages_dir)
        self._ignored = tree.ignored("s3", "images")
        bad = tree.unreadable("s3")  # a meta.json that does not parse is a failure, not a gap
        finals = tree.items("s3")
        if not finals and not bad and (why := upstream_reasons(self.s3_root.parent, self.name)):
            raise UserError(f"nothing to caption: no s3 image in {self.s3_root}; {why}")
        layouts: dict[str, Layout | str] = {}
        s2_dirs: dict[str, Path] = {}
        for item_id, entry in finals.items():
            try:  # s2_dir refuses a composition folder outside the stages (ItemFailed) where paths are contained
                s2_dirs[item_id] = s2_dir = entry.meta.s2_dir(self.stages_dir)
            except ItemFailed as e:
                layouts[item_id] = str(e)
                continue
            try:
                layouts[item_id] = tree.layout(s2_dir)
            except ItemFailed as e:  # say which composition's layout, as s4 reads another stage's file
                layouts[item_id] = f"cannot read layout {stage_rel(s2_dir / Layout.FILE, self.stages_dir)}: {e}"
        registry = self._registry(tree, [lay for lay in layouts.values() if isinstance(lay, Layout)])
        self.tokens = registry.tokens()
        items = [Item(iid, self.out_root / iid, {"path": str(folder)}, error=reason)
                 for iid, (folder, reason) in bad.items()]
        for item_id, entry in finals.items():
            meta, layout, s2_dir = entry.meta, layouts[item_id], s2_dirs.get(item_id)
            if isinstance(layout, str):
                where = s2_dir / Layout.FILE if s2_dir else entry.dir
                items.append(Item(item_id, self.out_root / item_id, {"path": str(where)}, error=layout))
                continue
            own = {c: self.tokens[c] for c in sorted(layout.concepts)}
            # s3's hash and fingerprint cover the image; the layout file and the tokens cover the words
            phrase = meta.phrase
            fp = stable_hash(json.dumps([meta.config_hash, meta.fingerprint, tree.layout_digest(s2_dir),
                                         own, phrase], sort_keys=True))
            items.append(Item(item_id, self.out_root / item_id,
                              {"path": str(entry.dir / "image.png"), "layout": layout,
                               "layout_path": stage_rel(s2_dir / Layout.FILE, self.stages_dir), "background": phrase,
                               "s3_config_hash": meta.config_hash, "s3_fingerprint": meta.fingerprint},
                              fingerprint=f"{fp:016x}", inputs={item_id: meta.hash}))
        return sorted(items, key=lambda it: it.id)

    def _registry(self, tree: TreeView, layouts: list[Layout]) -> ConceptRegistry:
        """The tree's registry; concepts of a layout it lacks (a tree composed before the registry) are
        recorded now, in the same numbering s2 would have given them."""
        registry = tree.concepts
        known = registry.tokens()
        missing = {c: lay.scene for lay in reversed(layouts) for c in lay.concepts if c not in known}
        if missing:
            self._added = len(missing)
            registry = record_concepts(self.stages_dir, missing)
        return registry

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

    def finish(self, summary: Summary, metas: dict[str, S4Meta]) -> None:
        fallbacks = sum(1 for m in metas.values() if m.fallback)
        if fallbacks:
            summary.notes["template fallbacks (LLM caption rejected)"] = fallbacks
        summary.notes.update(self._ignored)
        if self._added:
            summary.notes["concepts added to the registry (not recorded by s2)"] = self._added
        redo = sum(1 for m in metas.values() if getattr(m, "redo", None))
        if redo:
            summary.notes["llm gave no reply (template caption; redone on rerun)"] = redo
        summary.notes["modifier tokens"] = " ".join(f"{t}={c}" for c, t in self.tokens.items())


def run(cfg: DictConfig) -> Summary:
    return run_stage(CaptionStage(cfg), cfg)
