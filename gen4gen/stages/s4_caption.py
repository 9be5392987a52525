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

from gen4gen.caption.template import CaptionJob, Outcome
from gen4gen.config_check import build_backend
from gen4gen.console import Summary, progress
from gen4gen.errors import ItemFailed, UserError
from gen4gen.hashing import file_fingerprint, stable_hash
from gen4gen.markers import done_items, upstream_reasons
from gen4gen.paths import STAGE_DIRS, composition_dir
from gen4gen.runner import Item, ItemWriter, run_stage

DIR_NAME = STAGE_DIRS["s4"]
S2_DIR = STAGE_DIRS["s2"]
S3_DIR = STAGE_DIRS["s3"]


def layout_concepts(layout: dict) -> set[str]:
    return {str(o["concept"]) for o in layout.get("objects") or [] if o.get("concept")}


def read_layout(path: Path) -> dict:
    try:
        layout = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise ItemFailed(f"cannot read layout {path}: {e}") from None
    if not isinstance(layout, dict) or not isinstance(layout.get("objects"), list):
        raise ItemFailed(f"layout {path} has no object list")
    return layout


def dataset_concepts(s2_root: Path, source_dir: Path | None = None) -> list[str]:
    """Every concept of the dataset, sorted: the concept folders of the source photos plus any concept
    in the s2 output. The source folders make the numbering the same in every shard of a run, since a
    shard's s2 output holds only its own scenes."""
    concepts: set[str] = set()
    if source_dir is not None and source_dir.is_dir():
        for scene in sorted(source_dir.iterdir()):
            try:
                concepts |= {c.name for c in scene.iterdir() if c.is_dir() and not c.name.startswith(".")} \
                    if scene.is_dir() and not scene.name.startswith(".") else set()
            except OSError:
                continue  # unreadable or looping folder: s1 reports it
    for folder, _ in done_items(s2_root):
        try:
            concepts |= layout_concepts(read_layout(folder / "layout.json"))
        except ItemFailed:
            continue  # s3 skips it too; its own failure is reported there
    return sorted(concepts)


def modifier_tokens(concepts: list[str]) -> dict[str, str]:
    return {c: f"<new{k}>" for k, c in enumerate(sorted(concepts), start=1)}


class CaptionStage:
    name = "s4"

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        stages = Path(cfg.paths.stages_dir)
        self.s2_root, self.s3_root, self.out_root = stages / S2_DIR, stages / S3_DIR, stages / DIR_NAME
        self.captioner = build_backend(cfg.captioner, "captioner")
        self.outcomes: dict[str, Outcome] = {}
        self.tokens: dict[str, str] = {}

    def discover(self) -> list[Item]:
        if not self.s3_root.is_dir():
            raise UserError(f"no s3 output in {self.s3_root}; run stage=s3 first")
        # final images sit at <scene>/<composition>/<variant>/
        finals = [(f, m) for f, m in done_items(self.s3_root) if len(f.relative_to(self.s3_root).parts) == 3]
        if not finals and (why := upstream_reasons(self.s3_root.parent, self.name)):
            raise UserError(f"nothing to caption: no s3 image in {self.s3_root}; {why}")
        layouts: dict[Path, dict | str] = {}
        for _, meta in finals:
            path = composition_dir(meta, self.s2_root) / "layout.json"
            if path not in layouts:
                try:
                    layouts[path] = read_layout(path)
                except ItemFailed as e:
                    layouts[path] = str(e)
        concepts = set(dataset_concepts(self.s2_root, Path(self.cfg.paths.source_dir)))
        for layout in layouts.values():
            if isinstance(layout, dict):
                concepts |= layout_concepts(layout)
        self.tokens = modifier_tokens(sorted(concepts))
        items = []
        for folder, meta in finals:
            item_id = folder.relative_to(self.s3_root).as_posix()
            path = composition_dir(meta, self.s2_root) / "layout.json"
            layout = layouts[path]
            if isinstance(layout, str):
                items.append(Item(item_id, self.out_root / item_id, {"path": str(path)}, error=layout))
                continue
            own = {c: self.tokens[c] for c in sorted(layout_concepts(layout))}
            # s3's hash and fingerprint cover the image; the layout file and the tokens cover the words
            phrase = (meta.get("background") or {}).get("phrase")
            fp = stable_hash(json.dumps([meta.get("config_hash"), meta.get("fingerprint"), file_fingerprint(path),
                                         own, phrase], sort_keys=True))
            items.append(Item(item_id, self.out_root / item_id,
                              {"path": str(folder / "image.png"), "layout": layout, "layout_path": str(path),
                               "background": phrase,
                               "s3_config_hash": meta.get("config_hash"), "s3_fingerprint": meta.get("fingerprint")},
                              fingerprint=f"{fp:016x}"))
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
        out.json("captions.json", outcome.captions)
        return {"captioner": outcome.captions["captioner"], "fallback": outcome.captions["fallback"],
                "layout": item.data["layout_path"], "s3_config_hash": item.data["s3_config_hash"],
                "s3_fingerprint": item.data["s3_fingerprint"], **outcome.meta}

    def finish(self, summary: Summary) -> None:
        fallbacks = sum(1 for _, m in done_items(self.out_root) if m.get("fallback"))
        if fallbacks:
            summary.notes["template fallbacks (LLM caption rejected)"] = fallbacks
        redo = sum(1 for _, m in done_items(self.out_root) if m.get("redo"))
        if redo:
            summary.notes["llm gave no reply (template caption; redone on rerun)"] = redo
        summary.notes["modifier tokens"] = " ".join(f"{t}={c}" for c, t in self.tokens.items())


def run(cfg: DictConfig) -> Summary:
    return run_stage(CaptionStage(cfg), cfg)
