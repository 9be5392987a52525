"""The LLM planner: boxes from any OpenAI-compatible model, in the spirit of LLM-grounded Diffusion.

Per concept set (shared by its samples) the model suggests 3 scenes and, optionally, real-world
size ratios (biggest 1.0, smallest >= 0.4); per composition it places one box ``[x, y, w, h]`` per
object in a 512x512 frame. Every reply is parsed JSON validated by pydantic, then checked here:
names are mapped back to the requested objects (a model-returned name never reaches a file path),
boxes are rescaled / clipped / grown to the minimum area and re-ordered, and what cannot be
repaired goes back to the model as the error of a retry; so do implausible boxes (a smaller thing
drawn taller than a bigger one at the same depth against its own ratios, a base above the ground).
Suggested scenes that contradict a concept, or that no background can be drawn for, are replaced by
built-in ones that fit, with the reason in layout.json (``llm.scene_replacements``). A composition
whose layout still fails gets the heuristic planner's boxes, and layout.json says why (``fallback``).
All requests of a run go out at once through ``LLMClient.run`` (bounded concurrency, disk cache).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from gen4gen.backends import typed_settings
from gen4gen.console import progress
from gen4gen.layout.checks import check_layout, check_ratios, check_scenes, instance_ids, labels_of
from gen4gen.layout.coco_examples import CocoExamples
from gen4gen.layout.heuristic import HeuristicPlanner, Share, size_ratios, size_source, suggest_scenes
from gen4gen.layout.plausibility import check_plausible, fitting_llm_scenes
from gen4gen.layout.prompts import (LAYOUT_SYSTEM, RATIOS_SYSTEM, RATIOS_USER, SCENES_SYSTEM, SCENES_USER,
                                    layout_user)
from gen4gen.layout.schema import Plan, LayoutReply, PlacedBox, PlanRequest, ScenesReply, SizeRatiosReply, \
    depth_order, min_box_area
from gen4gen.llm.client import LLMClient, client_from_cfg
from gen4gen.llm.replies import Request, Result, clean_text


@dataclass
class Draft:
    """One composition between its set-level answers (scenes, ratios) and its layout reply."""
    plan: PlanRequest
    scenes: list[str]
    ratios: dict | None
    notes: list[str]  # what fell back to built-in answers
    set_errors: list[str]  # errors of the scenes / ratios requests
    set_transport: bool  # a scenes / ratios request got no reply (server down, timeouts): redo later
    background: str
    replaced: list[str] = field(default_factory=list)  # llm scenes that contradicted a concept, and why
    repairs: list[str] = field(default_factory=list)  # filled by the layout check on success
    request: Request | None = None


class LLMPlanner:
    name = "llm"

    @typed_settings
    def __init__(self, llm: Any, *, frame: Annotated[int, Field(ge=64)], scenes: bool, size_ratios: bool, smallest_ratio: Share,
                 temperatures: list[Annotated[float, Field(ge=0)]] | None, max_overlap: Share, min_area_rule: bool,
                 in_context_coco: str | None, in_context_captions: str | None,
                 in_context_examples: Annotated[int, Field(ge=0)], fallback: HeuristicPlanner,
                 client: LLMClient | None = None, cache_dir: str | Path | None = None):
        """The settings are conf/layout/llm.yaml's, ``llm`` its ``${llm}`` block; ``client``: one made already
        (tests), ``cache_dir`` None: the block's own."""
        self.client = client or client_from_cfg(llm, cache_dir)
        self.frame = frame
        self.use_scenes, self.use_ratios = scenes, size_ratios
        self.smallest_ratio = smallest_ratio
        self.temperatures = temperatures or [self.client.settings.temperature]
        self.max_overlap = max_overlap
        self.min_area_rule = min_area_rule
        self.examples = CocoExamples(in_context_coco, in_context_captions, self.frame) if in_context_coco else None
        self.n_examples = in_context_examples
        self.fallback = fallback

    def config(self) -> dict:
        """What the layouts depend on (not concurrency, timeouts or where the cache lives)."""
        return {"base_url": self.client.base_url, "model": self.client.model, "frame": self.frame,
                "scenes": self.use_scenes, "size_ratios": self.use_ratios, "smallest_ratio": self.smallest_ratio,
                "temperatures": self.temperatures, "max_overlap": self.max_overlap,
                "min_area_rule": self.min_area_rule, "max_attempts": self.client.max_attempts,
                "in_context": self.examples.source if self.examples else None, "n_examples": self.n_examples,
                "fallback": self.fallback.config()}

    # -------------------------------------------------------------- planning
    def plan(self, request: PlanRequest) -> Plan:
        return self.plan_many([request])[0]

    def plan_many(self, requests: list[PlanRequest], on_done=None) -> list[Plan]:
        """Plan every request concurrently: scenes and ratios once per concept set, then one layout each."""
        sets = sorted({self._set_key(r) for r in requests})
        # a set whose compositions all have the user's photo (its scene fixed in s2) asks for no scenes
        open_scenes = {self._set_key(r) for r in requests if not r.scenes}
        set_reqs: list[tuple[tuple, str, Request]] = []
        for key in sets:
            labels = labels_of(list(key))
            if self.use_scenes and key in open_scenes:
                set_reqs.append((key, "scenes", self._scenes_request(labels)))
            if self.use_ratios:
                set_reqs.append((key, "ratios", self._ratios_request(labels)))
        n_total = len(set_reqs) + len(requests)
        with progress() as bar:
            task = bar.add_task("s2 layout (llm)", total=n_total)

            def tick():
                bar.advance(task)
                if on_done:
                    on_done()

            set_results = self.client.run([r for _, _, r in set_reqs], on_done=tick)
            per_set: dict[tuple, dict[str, tuple[Request, Result]]] = {}
            for (key, kind, req), res in zip(set_reqs, set_results):
                per_set.setdefault(key, {})[kind] = (req, res)

            drafts = []
            for r in requests:
                info = per_set.get(self._set_key(r), {})
                scenes, ratios, notes, errors = self._set_answers(r, info)
                transport = any(res.transport for _, res in info.values())
                rng = np.random.default_rng(int(r.seed) & 0xFFFFFFFF)
                scenes, replaced = fitting_llm_scenes(scenes, [c.name for c in r.concepts], rng)
                pick = int(rng.integers(len(scenes)))
                if r.scenes:  # the user's background photo was chosen for this composition: its scene holds
                    scenes, replaced, pick = list(r.scenes), [], 0
                draft = Draft(r, scenes, ratios, notes, errors, transport, background=scenes[pick], replaced=replaced)
                draft.request = self._layout_request(r, draft.background, ratios, rng, draft.repairs)
                drafts.append(draft)
            layout_results = self.client.run([d.request for d in drafts], on_done=tick)
        return [self._assemble(d, res) for d, res in zip(drafts, layout_results)]

    @staticmethod
    def _set_key(r: PlanRequest) -> tuple:
        return tuple(c.name for c in r.concepts)

    def _set_answers(self, r: PlanRequest, info: dict):
        """Scenes and size ratios of the request's concept set; built-in ones where the LLM failed,
        with a note saying so, and the errors of those requests."""
        concepts = [c.name for c in r.concepts]
        rng = np.random.default_rng(int(r.seed) & 0xFFFFFFFF)
        notes: list[str] = []
        errors = [f"{kind} {e}" for kind, (_, res) in sorted(info.items()) for e in res.errors]
        scenes, ratios = None, None
        if "scenes" in info:
            _, res = info["scenes"]
            if res.ok:
                scenes = list(res.value.scenes[:3])
            else:
                notes.append(f"llm scene suggestion failed ({_last(res)}): built-in scenes used")
        if "ratios" in info:
            _, res = info["ratios"]
            if res.ok:
                by_label = {o.name: o.ratio for o in res.value.ratios}
                ratios = {c: by_label[lab] for c, lab in zip(concepts, labels_of(concepts))}
            else:
                notes.append(f"llm size ratios failed ({_last(res)}): built-in size priors used")
        if scenes is None:
            scenes = suggest_scenes(concepts, rng)
        return scenes, ratios, notes, errors

    def _assemble(self, d: Draft, res: Result) -> Plan:
        r, scenes, ratios, notes, background = d.plan, d.scenes, d.ratios, d.notes, d.background
        errors = d.set_errors + [f"layout {e}" for e in res.errors]
        llm_info = {"attempts": res.attempts, "cached": res.cached, "usage": dict(res.usage), "errors": errors,
                    "repairs": list(d.repairs), "temperature": d.request.temperature,
                    "scene_replacements": list(d.replaced),
                    # no reply (rather than a bad one) behind a fallback: the stage redoes the item next run
                    "transport_failed": bool(d.set_transport or res.transport)}
        W, H = r.size
        if res.ok and r.closeup is not None:  # its box must lie on the frame's edges: the built-in placement
            notes.append(f"{r.closeup.name} is a close-up cut by {', '.join(r.closeup.cut_edges)}: placed from "
                         "that edge by the built-in planner")
        elif res.ok:
            sx, sy = W / self.frame, H / self.frame
            boxes = [PlacedBox(c, k, [o.box[0] * sx, o.box[1] * sy, o.box[2] * sx, o.box[3] * sy])
                     for (c, k), o in zip(r.instances, res.value.objects)]
            llm_info["background"] = clean_text(res.value.background_prompt)
            return Plan(size=(W, H), boxes=boxes, paste_order=depth_order(boxes), scenes=scenes,
                          background_prompt=background, planner=self.name, seed=int(r.seed), size_ratios=ratios,
                          fallback="; ".join(notes) or None, llm=llm_info, backdrop=r.backdrop,
                          size_source={c.name: "llm" if ratios else size_source(c.name) for c in r.concepts})
        reason = None if res.ok else f"llm layout failed after {res.attempts} attempt(s): {_last(res)}"
        layout = self.fallback.plan(r, ratios=ratios, scenes=scenes)
        layout.background_prompt = background
        layout.fallback = "; ".join(filter(None, [reason, *notes]))
        layout.llm = llm_info
        return layout

    # -------------------------------------------------------------- prompts
    def _temperature(self, r: PlanRequest) -> float:
        return self.temperatures[r.sample % len(self.temperatures)]

    def _scenes_request(self, labels: list[str]) -> Request:
        msgs = [{"role": "system", "content": SCENES_SYSTEM},
                {"role": "user", "content": SCENES_USER.format(objects=json.dumps(sorted(set(labels))))}]
        return Request(msgs, ScenesReply, temperature=self.temperatures[0], check=check_scenes, tag="scenes")

    def _ratios_request(self, labels: list[str]) -> Request:
        msgs = [{"role": "system", "content": RATIOS_SYSTEM},
                {"role": "user", "content": RATIOS_USER.format(smallest=self.smallest_ratio,
                                                               objects=json.dumps(labels))}]
        return Request(msgs, SizeRatiosReply, temperature=self.temperatures[0],
                       check=lambda v: check_ratios(v, labels, self.smallest_ratio), tag="ratios")

    def _layout_request(self, r: PlanRequest, background: str, ratios: dict | None, rng: np.random.Generator,
                        repairs: list[str]) -> Request:
        ids, labels = instance_ids(r)
        n = len(ids)
        min_side = int(math.sqrt(min_box_area((self.frame, self.frame), n))) if self.min_area_rule else 1
        system = LAYOUT_SYSTEM.format(F=self.frame, min_side=min_side, overlap=int(round(self.max_overlap * 100)))
        msgs = [{"role": "system", "content": system}]
        if self.examples:
            for ex in self.examples.pick(self.n_examples, rng):
                msgs += [{"role": "user", "content": layout_user(ex["ids"], ex["labels"], ex["scene"])},
                         {"role": "assistant", "content": json.dumps(ex["reply"])}]
        hint = None
        if ratios:
            concepts = [c.name for c in r.concepts]
            hint = {lab: ratios[c] for c, lab in zip(concepts, labels_of(concepts))}
        aspects = {c.name: c.aspect for c in r.concepts}
        # on the user's photo the objects stand below its ground line (a desk photo's table top starts low)
        ground = max(0.45, r.horizon) if r.backdrop and r.horizon is not None else 0.45
        msgs.append({"role": "user", "content": layout_user(
            ids, labels, background, hint, r.sample, [aspects[c] for c, _ in r.instances],
            ground_y=int(r.horizon * self.frame) if r.backdrop and r.horizon is not None else None)})
        concepts = [c for c, _ in r.instances]
        own = ratios or size_ratios(sorted(set(concepts)))  # the size order it is held to: its own ratios

        def check(v: LayoutReply) -> LayoutReply:
            v = check_layout(v, ids, labels, self.frame, self.max_overlap, self.min_area_rule, repairs)
            return check_plausible(v, concepts, own, self.frame, ground)

        return Request(msgs, LayoutReply, temperature=self._temperature(r), tag=f"layout {r.key}", check=check)


def _last(res: Result) -> str:
    return res.errors[-1] if res.errors else "no reply"
