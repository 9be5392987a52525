"""s2: compose the concepts of each scene into layouts planned by the configured planner.

``stages/s1_segmented_foreground/<scene>/<concept>/<photo>/`` -> ``stages/s2_object_compositions/
<scene>/<concepts joined by "+">_<sample:03d>/`` with image.png, image_rgba.png, mask.png,
instances/<concept>_<k>.png, layout.json and meta.json. The planner (``layout=heuristic|llm``) plans
every pending composition up front in ``prepare`` (an LLM planner sends all its requests at once);
the composer then works per item, in threads.
"""
from __future__ import annotations

import difflib
import itertools
import logging
import threading
import time
from collections import Counter

import numpy as np
from omegaconf import DictConfig, OmegaConf

from gen4gen.artefacts import Layout, S2Meta, stage_rel
from gen4gen.backends import build_backend, choice_node
from gen4gen.console import Summary
from gen4gen.errors import UserError
from gen4gen.hashing import config_hash, stable_hash
from gen4gen.layout.backdrop import BackdropChooser
from gen4gen.layout.closeups import Cast, cast, cut_edges_of
from gen4gen.layout.compose import Composer, Source, with_boxes
from gen4gen.layout.heuristic import HeuristicPlanner
from gen4gen.layout.plausibility import plausibility_of
from gen4gen.layout.schema import ConceptCount, Plan, PlanRequest, layout_fields
from gen4gen.llm.client import NO_REPLY
from gen4gen.concepts import record_concepts
from gen4gen.manifest import read_manifest
from gen4gen.markers import upstream_reasons
from gen4gen.paths import STAGE_DIRS
from gen4gen.runner import Item, ItemWriter, run_stage
from gen4gen.settings import section, top_level
from gen4gen.stage_settings import (BackendNode, ComposeSettings, IOSettings, PathsSettings, RepaintSettings,
                                    canvas_size)
from gen4gen.tree import TreeView

log = logging.getLogger(__name__)
DIR_NAME = STAGE_DIRS["s2"]
S1_DIR = STAGE_DIRS["s1"]
MAX_NAME_BYTES = 240  # most file systems stop at 255 bytes per path component


def read_s1(tree: TreeView) -> tuple[dict[str, dict[str, list[tuple[Source, str]]]], Counter, int]:
    """scene -> concept -> [(source, hash)] of usable, current cut-outs; per (scene, concept) the number
    of cut-outs skipped because s1 flagged their mask empty; and how many finished s1 items were left
    out because they are stale (not made by s1's latest run or its settings) or their meta.json is malformed."""
    found: dict[str, dict[str, list[tuple[Source, str]]]] = {}
    empty: Counter = Counter()
    ignored = tree.stale("s1") + tree.other_settings("s1") + len(tree.unreadable("s1"))
    for item_id, entry in tree.items("s1").items():
        meta = entry.meta
        cutout = entry.dir / "cutout.png"
        if not cutout.is_file():
            ignored += 1
            continue
        if "empty" in meta.flags:
            empty[(meta.scene, meta.concept)] += 1
            continue
        found.setdefault(meta.scene, {}).setdefault(meta.concept, []).append(
            (Source(item_id, cutout, meta.aspect, cut_edges_of(meta)), meta.hash))
    return found, empty, ignored


def concept_aspect(sources: list[Source]) -> float | None:
    values = [s.aspect for s in sources if s.aspect]
    return round(float(np.median(values)), 4) if values else None


class ComposeStage:
    name = "s2"
    meta_model = S2Meta

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.top = top_level(cfg)
        self.io = section(cfg, "io", IOSettings)
        self.compose = cc = section(cfg, "compose", ComposeSettings)
        self.paths = section(cfg, "paths", PathsSettings)
        self.stages_dir = self.paths.stages_dir
        self.s1_root = self.stages_dir / S1_DIR
        self.out_root = self.stages_dir / DIR_NAME
        self.size = canvas_size(cc.size, self.io.max_pixels)
        self.min_objects, self.sets, self.num_samples = cc.min_objects, cc.sets, cc.num_samples
        self.counts = dict(cc.counts or {})
        self.planner_target = section(cfg, "layout", BackendNode).target
        self.planner = build_backend(cfg.layout, "layout")
        # a user's own planner without a fallback: the yaml's heuristic draws the re-planned layouts
        self.heuristic = self.planner if isinstance(self.planner, HeuristicPlanner) else \
            getattr(self.planner, "fallback", None) or build_backend(choice_node(cfg, "layout", "heuristic"), "layout")
        self.composer = Composer(cc, self.io)
        self.workers = self.top.workers
        # the user's background photos: each composition stands on the ground of the photo chosen for it
        self.backdrops = BackdropChooser.from_settings(section(cfg, "repaint", RepaintSettings), self.io,
                                                       cfg.paths.cache_dir, log)
        self.plans: dict[str, Plan] = {}
        self.plan_seconds = 0.0
        self._stats: Counter = Counter()
        self._left_out: Counter = Counter()  # photo or concept -> compositions it was left out of
        self._first_fallback = ""
        self._lock = threading.Lock()

    # -------------------------------------------------------------- items
    def discover(self) -> list[Item]:
        if not self.s1_root.is_dir():
            raise UserError(f"no s1 output in {self.s1_root}; run `python -m gen4gen stage=s1` first")
        found, empty, ignored = read_s1(TreeView(self.stages_dir))
        if ignored:
            self._stats["s1 cut-outs ignored (stale or malformed)"] = ignored
        if not found:
            flagged = f"{sum(empty.values())} cut-out(s) with an empty mask (s1 flag 'empty')" if empty else ""
            why = "; ".join(filter(None, [flagged, upstream_reasons(self.s1_root.parent, self.name)]))
            raise UserError(f"no usable s1 cut-outs in {self.s1_root}: {why or 's1 finished no photo'}")
        self._record_concepts(found)
        return [it for scene in sorted(found) for it in self._scene_items(scene, found[scene], empty)]

    def _record_concepts(self, found: dict) -> None:
        """The concepts of the cut-outs and of the source folders (a shard's s1 output holds only its own
        scenes, the folders all) into the registry, where their tokens stay; ``compose.counts`` checked
        against them, since a typo there would silently count 1 of everything."""
        seen = {c: scene for scene in sorted(found, reverse=True) for c in found[scene]}
        source = self.paths.source_dir
        try:
            for scene in sorted(source.iterdir(), reverse=True):
                if scene.is_dir() and not scene.name.startswith("."):
                    seen |= {c.name: scene.name for c in scene.iterdir() if c.is_dir() and not c.name.startswith(".")}
        except OSError:
            pass  # no or unreadable source folder: the s1 output alone (s1 reported the folder)
        unknown = sorted(set(self.counts) - set(seen))
        if unknown:
            close = {u: difflib.get_close_matches(u, sorted(seen), n=1) for u in unknown}
            hints = "".join(f" (did you mean {m[0]}?)" for m in close.values() if m)
            raise UserError(f"compose.counts names {', '.join(map(repr, unknown))}: no such concept{hints}; "
                            f"the concepts are {', '.join(sorted(seen))}")
        record_concepts(self.stages_dir, seen)

    def _scene_items(self, scene: str, by_concept: dict, empty: Counter) -> list[Item]:
        """``num_samples`` compositions per concept set of ``scene``, or one failure saying why none."""
        concepts = sorted(by_concept)
        where = {"path": str(self.s1_root / scene)}
        if len(concepts) < self.min_objects:
            lost = sorted(c for (s, c) in empty if s == scene and c not in by_concept)
            why = f"; {', '.join(lost)} had only empty masks in s1" if lost else ""
            return [Item(scene, self.out_root / scene, where,
                         error=f"scene {scene!r} has {len(concepts)} usable concept(s) ({', '.join(concepts)}){why}; "
                               f"compose.min_objects={self.min_objects} needs at least {self.min_objects}: "
                               "add concept folders or lower compose.min_objects")]
        items = []
        for subset in self._concept_sets(concepts):
            sources = {c: by_concept[c] for c in subset}
            fp = config_hash(sorted(f"{s.item_id}={f}" for c in subset for s, f in sources[c]))
            inputs = {s.item_id: f for c in subset for s, f in sources[c]}
            data = {"scene": scene, "concepts": list(subset),
                    "sources": {c: [s for s, _ in v] for c, v in sources.items()}}
            for k in range(self.num_samples):
                comp_id = f"{'+'.join(subset)}_{k:03d}"
                item_id = f"{scene}/{comp_id}"
                if len(comp_id.encode("utf-8")) > MAX_NAME_BYTES:
                    items.append(Item(item_id, self.out_root / scene, where,
                                      error=f"composition id {comp_id[:60]!r}... is {len(comp_id.encode())} bytes, "
                                            f"over the {MAX_NAME_BYTES}-byte file name limit: shorten the concept "
                                            "folder names or use compose.sets=subsets with fewer concepts"))
                else:
                    items.append(Item(item_id, self.out_root / scene / comp_id,
                                      {**data, "composition_id": comp_id, "sample": k}, fp, inputs=inputs))
        return items

    def _concept_sets(self, concepts: list[str]) -> list[tuple[str, ...]]:
        if self.sets == "all":
            return [tuple(concepts)]
        return [s for n in range(self.min_objects, len(concepts) + 1) for s in itertools.combinations(concepts, n)]

    def selection(self) -> dict:
        return {"sets": self.sets, "num_samples": self.num_samples, "min_objects": self.min_objects}

    def config(self) -> dict:
        # the sections as composed, hashed as they always were: a finished item stays done across versions
        cc = OmegaConf.to_container(self.cfg.compose, resolve=True)
        for key in ("sets", "num_samples", "min_objects"):  # they choose items, not what an item holds
            cc.pop(key, None)
        out = {"compose": cc, "layout": self._planner_config(), "seed": self.top.seed,
               "io": OmegaConf.to_container(self.cfg.io, resolve=True)}
        if self.backdrops:  # another photo folder, scene or photo there: other layouts
            out["backdrops"] = self.backdrops.fingerprint()
        return out

    def _planner_config(self) -> dict:
        conf = getattr(self.planner, "config", None)
        return {"target": self.planner_target, **(conf() if conf else {})}

    def cast(self, item: Item) -> Cast:
        """Who is in the composition, from which photos, and which one is the close-up (seeded by the item)."""
        rng = np.random.default_rng(stable_hash(f"{self.top.seed}:{item.id}:cast") & 0xFFFFFFFF)
        return cast(item.data["concepts"], item.data["sources"], rng)

    def request(self, item: Item) -> PlanRequest:
        d, who = item.data, self.cast(item)
        req = PlanRequest(concepts=tuple(ConceptCount(c, 1 if c == who.closeup else self.counts.get(c, 1),
                                                      concept_aspect(who.sources[c]),
                                                      who.edges if c == who.closeup else ())
                                         for c in who.concepts),
                          size=self.size, seed=stable_hash(f"{self.top.seed}:{item.id}") & 0xFFFFFFFF,
                          sample=int(d["sample"]), key=item.id)
        return self.backdrops.apply(req) if self.backdrops else req

    # -------------------------------------------------------------- work
    def prepare(self, pending: list[Item]) -> None:
        """Plan every pending composition at once: an LLM planner sends its requests concurrently."""
        t0 = time.perf_counter()
        requests = [self.request(it) for it in pending]
        plan_many = getattr(self.planner, "plan_many", None)
        layouts = plan_many(requests) if plan_many else [self.planner.plan(r) for r in requests]
        self.plans = {it.id: lay for it, lay in zip(pending, layouts)}
        self.plan_seconds = time.perf_counter() - t0

    def process(self, item: Item, out: ItemWriter, rng: np.random.Generator) -> dict:
        d = item.data
        t0 = time.perf_counter()
        request = self.request(item)
        layout = self.plans.pop(item.id, None) or self.planner.plan(request)
        t_plan = time.perf_counter() - t0
        redo = bool((layout.llm or {}).get("transport_failed"))
        replan = None
        if layout.planner == "heuristic":  # a hidden instance: draw a new heuristic layout, keep the scenes
            def replan(attempt: int) -> Plan:
                return with_boxes(layout, self.heuristic.plan(request.reseeded(request.seed + 7919 * attempt),
                                                              ratios=layout.size_ratios, scenes=layout.scenes))
        who = self.cast(item)
        comp = self.composer.compose(layout, who.sources, rng, replan)
        t_compose = time.perf_counter() - t0 - t_plan
        out.image("image.png", comp.image)
        out.image("image_rgba.png", comp.rgba)
        out.image("mask.png", comp.mask)
        for name, m in comp.instances.items():
            out.image(f"instances/{name}.png", m)
        final = comp.layout
        check = plausibility_of(final, comp.objects)
        objects = [{**o, "source_path": stage_rel(o["source_path"], self.stages_dir)} if o.get("source_path") else o
                   for o in comp.objects]  # relative: a moved or copied stages folder reads its own cut-outs
        out.bytes("layout.json", Layout.build(
            {"scene": d["scene"], "composition_id": d["composition_id"], **layout_fields(final), "objects": objects,
             "paste_order": list(final.paste_order), "attempts": comp.attempts, "rejected": comp.rejected,
             "plausibility": check, **closeup_fields(who)}).dump())
        with self._lock:
            self._stats[f"planner {final.planner}"] += 1
            self._stats["composed"] += 1
            self._stats["occluded"] += check["occluded"]
            if who.closeup:
                self._stats["close-ups (cut-off subjects at their edge)"] += 1
            self._left_out.update(d.get("source") or d.get("concept") for d in who.left_out)
            self._stats["size-order violations"] += len(check["size_order_violations"])
            if final.fallback:
                self._stats["with fallback"] += 1
                self._first_fallback = self._first_fallback or f"{item.id}: {final.fallback}"
            if redo:
                self._stats["llm gave no reply (fell back; redone on rerun)"] += 1
        return {"scene": d["scene"], "composition_id": d["composition_id"], "concepts": d["concepts"],
                "counts": {c.name: c.count for c in request.concepts}, "planner": final.planner,
                "planner_target": self.planner_target, "fallback": final.fallback,
                "background_prompt": final.background_prompt, "size": list(self.size), "attempts": comp.attempts,
                "sources": sorted({o["source"] for o in comp.objects}),
                **({"redo": NO_REPLY} if redo else {}),
                "timing": {"plan_s": round(t_plan, 4), "compose_s": round(t_compose, 4),
                           "write_s": round(time.perf_counter() - t0 - t_plan - t_compose, 4)}}

    def finish(self, summary: Summary, metas: dict) -> None:
        composed = self._stats.pop("composed", 0)
        occluded = self._stats.pop("occluded", 0)
        for key, n in sorted(self._stats.items()):
            summary.notes[key] = n
        if self._left_out:  # one photo left out of every composition is one photo, not one per composition
            names = ", ".join(f"{n} ({k})" for n, k in sorted(self._left_out.items()))
            summary.notes["photos or concepts left out (cut off; in how many compositions; reason in layout.json)"] = \
                f"{len(self._left_out)}: {names}"[:300]
        if composed:  # plausibility of this run's compositions (benchmarks/layout.py measures it over many)
            share = float(getattr(self.heuristic, "occlusion", 0.0))
            summary.notes["occluded compositions"] = f"{occluded}/{composed} (compose.occlusion {share:.0%})"
        if self._first_fallback:  # e.g. a wrong llm.base_url or a missing key: say it once, loudly
            summary.notes["first fallback"] = self._first_fallback[:300]
        if self.plan_seconds:
            summary.notes["planning seconds"] = round(self.plan_seconds, 2)
        manifest = read_manifest(self.out_root)  # just written: every shard of these settings
        if manifest is not None:
            on_disk = {p.parent.relative_to(self.out_root).as_posix() for p in self.out_root.glob("*/*/meta.json")}
            left = on_disk - manifest.items.keys() - manifest.other_settings
            if left:
                summary.notes["compositions left on disk that these settings do not make (e.g. a larger "
                              "compose.num_samples before)"] = f"{len(left)}: later stages and the export leave " \
                                                               "them out; nothing needs rerunning"


def closeup_fields(who: Cast) -> dict:
    """layout.json's record of the cut-off subject and of what was left out, and why."""
    out: dict = {"left_out": who.left_out} if who.left_out else {}
    if who.closeup:
        out["closeup"] = {"instance": f"{who.closeup}_0", "edges": list(who.edges), "flags": who.flags}
    return out


def run(cfg: DictConfig) -> Summary:
    return run_stage(ComposeStage(cfg), cfg)
