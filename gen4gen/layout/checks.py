"""Checks of LLM planner replies: pure geometry and name matching, no I/O. Each check maps the reply's
names back to the requested objects (a model-returned name never reaches a file path), repairs what it
can (rescale, clip, grow, reorder) and raises ``ReplyInvalid`` with a reason the model can act on."""
from __future__ import annotations

import math
from collections import Counter

from gen4gen.layout.schema import (LayoutReply, ObjectBox, ObjectRatio, PlanRequest, ScenesReply, SizeRatiosReply,
                                   min_box_area, norm_key, overlap_fraction, prompt_label)
from gen4gen.llm.replies import ReplyInvalid, clean_text


def labels_of(concepts: list[str]) -> list[str]:
    """One distinct prompt label per concept, in order."""
    seen: Counter = Counter()
    out = []
    for c in concepts:
        lab = prompt_label(c)
        seen[lab] += 1
        out.append(lab if seen[lab] == 1 else f"{lab} {seen[lab]}")
    return out


def instance_ids(r: PlanRequest) -> tuple[list[str], list[str]]:
    """The names the model sees for each instance (``"cat_0"``), and each one's label ("cat")."""
    labels = dict(zip([c.name for c in r.concepts], labels_of([c.name for c in r.concepts])))
    ids = [f"{labels[c].replace(' ', '_')}_{k}" for c, k in r.instances]
    return ids, [labels[c] for c, _ in r.instances]


def match_names(names: list[str], ids: list[str], labels: list[str]) -> tuple[list[int | None], list[int]]:
    """For each requested id, the index of the reply entry that is it (None: missing); plus unmatched
    reply entries. Exact or normalised id first, then an entry naming the label ("a cat" -> cat_0)."""
    by_key = {norm_key(i): j for j, i in enumerate(ids)}
    assigned: list[int | None] = [None] * len(ids)
    rest = []
    for e, name in enumerate(names):
        j = by_key.get(norm_key(name))
        if j is not None and assigned[j] is None:
            assigned[j] = e
        else:
            rest.append(e)
    extras = []
    for e in rest:
        key = norm_key(names[e])
        cands = sorted({lab for lab in labels if norm_key(lab) and norm_key(lab) in key}, key=len, reverse=True)
        slot = next((j for lab in cands for j, l2 in enumerate(labels) if l2 == lab and assigned[j] is None), None)
        if slot is None:
            extras.append(e)
        else:
            assigned[slot] = e
    return assigned, extras


def check_layout(reply: LayoutReply, ids: list[str], labels: list[str], frame: int, max_overlap: float,
                 min_area_rule: bool, repairs_out: list[str] | None = None) -> LayoutReply:
    """Map names, rescale / clip / grow boxes, check overlaps; repairs are reported only on success."""
    repairs: list[str] = []
    F = float(frame)
    assigned, extras = match_names([o.name for o in reply.objects], ids, labels)
    missing = [ids[j] for j, e in enumerate(assigned) if e is None]
    if missing:
        raise ReplyInvalid(f"missing objects {missing}; list exactly these {len(ids)} objects by name: {ids}")
    if extras:
        dropped = [clean_text(reply.objects[e].name, 40) for e in extras]
        repairs.append(f"dropped {len(extras)} extra object(s): {dropped}")
    if assigned != sorted(assigned):
        repairs.append("reordered objects to the requested order")
    boxes = []
    for j, e in enumerate(assigned):
        b = [float(v) for v in reply.objects[e].box]
        if not all(math.isfinite(v) for v in b):
            raise ReplyInvalid(f"box of {ids[j]} has a non-numeric value: {reply.objects[e].box}")
        if b[2] <= 0 or b[3] <= 0:
            raise ReplyInvalid(f"box of {ids[j]} has width or height <= 0: {b}; use [x, y, width, height]")
        boxes.append(b)
    extent = max(max(b[0] + b[2], b[1] + b[3]) for b in boxes)
    crossing = sum(max(b[0] + b[2], b[1] + b[3]) > F * 1.05 for b in boxes)
    if crossing > len(boxes) / 2:  # most boxes out: the model used another frame (often the canvas size)
        if extent > F * 4:
            raise ReplyInvalid(f"boxes reach {extent:.0f} px; every box must lie inside the {frame}x{frame} frame")
        s = F / extent
        boxes = [[v * s for v in b] for b in boxes]
        repairs.append(f"rescaled boxes from a {extent:.0f} px frame")
    for j, b in enumerate(boxes):
        clipped = _clip(b, F)
        # a sub-pixel side (1e-200, 5e-324: areas that underflow to zero) is a unit error, never a box to grow
        if not (clipped[2] >= 1.0 and clipped[3] >= 1.0):
            raise ReplyInvalid(f"box of {ids[j]} {b} is under 1 px wide or high inside the {frame}x{frame} "
                               "frame; give [x, y, width, height] in pixels of that frame")
        if clipped[2] * clipped[3] < 0.5 * b[2] * b[3]:
            raise ReplyInvalid(f"box of {ids[j]} {[round(v) for v in b]} lies mostly outside the "
                               f"{frame}x{frame} frame")
        if clipped != b:
            repairs.append(f"clipped {ids[j]} to the frame")
        boxes[j] = clipped
    if min_area_rule:
        a_min = min_box_area((frame, frame), len(boxes))
        for j, b in enumerate(boxes):
            if b[2] * b[3] < a_min * 0.999:
                boxes[j] = _grow(b, a_min, F)
                repairs.append(f"grew {ids[j]} to the minimum area")
    for j in range(len(boxes)):
        for k in range(j + 1, len(boxes)):
            ov = overlap_fraction(boxes[j], boxes[k])
            if ov > max_overlap + 1e-6:
                raise ReplyInvalid(f"{ids[j]} and {ids[k]} overlap by {ov:.0%} of the smaller box; keep every "
                                   f"overlap under {max_overlap:.0%} (boxes after repair: "
                                   f"{[round(v) for v in boxes[j]]}, {[round(v) for v in boxes[k]]})")
    if repairs_out is not None:
        repairs_out[:] = repairs
    return LayoutReply(objects=[ObjectBox(name=i, box=[round(v, 2) for v in b]) for i, b in zip(ids, boxes)],
                       background_prompt=clean_text(reply.background_prompt))


def _clip(b: list[float], F: float) -> list[float]:
    x0, y0 = min(max(b[0], 0.0), F), min(max(b[1], 0.0), F)
    x1, y1 = min(max(b[0] + b[2], 0.0), F), min(max(b[1] + b[3], 0.0), F)
    return [x0, y0, x1 - x0, y1 - y0]


def _grow(b: list[float], area: float, F: float) -> list[float]:
    """Scale a box about its centre (aspect kept) to ``area``, then slide it back inside the frame."""
    g = math.sqrt(area / (b[2] * b[3]))
    w, h = min(F, b[2] * g), min(F, b[3] * g)
    if w * h < area:  # a sliver hit the frame edge: widen the other side
        w, h = (min(F, area / h), h) if w >= F else (w, min(F, area / w))
    cx, cy = b[0] + b[2] / 2, b[1] + b[3] / 2
    x, y = min(max(cx - w / 2, 0.0), F - w), min(max(cy - h / 2, 0.0), F - h)
    return [x, y, w, h]


def check_scenes(reply: ScenesReply) -> ScenesReply:
    scenes, seen = [], set()
    for s in reply.scenes:
        s = clean_text(s, 120).strip(" .").lower()
        s = " ".join(s.split()[:12])
        if s and norm_key(s) not in seen:
            seen.add(norm_key(s))
            scenes.append(s)
    if len(scenes) < 3:
        raise ReplyInvalid(f"need 3 different non-empty scenes, got {len(scenes)}")
    return ScenesReply(scenes=scenes[:3])


def check_ratios(reply: SizeRatiosReply, labels: list[str], smallest: float) -> SizeRatiosReply:
    assigned, _ = match_names([o.name for o in reply.ratios], labels, labels)
    missing = [labels[j] for j, e in enumerate(assigned) if e is None]
    if missing:
        raise ReplyInvalid(f"missing ratios for {missing}; give one ratio for each of {labels}")
    values = [float(reply.ratios[e].ratio) for e in assigned]
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ReplyInvalid(f"ratios must be positive numbers, got {values}")
    top = max(values)
    return SizeRatiosReply(ratios=[ObjectRatio(name=lab, ratio=round(min(1.0, max(smallest, v / top)), 3))
                                   for lab, v in zip(labels, values)])
