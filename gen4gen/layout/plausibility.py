"""Could the layout be a photo? Pure measures on boxes, shared by the LLM reply checks, s2's summary and
``benchmarks/layout.py``: size order at equal depth, bases on a plausible ground, occlusion.

Boxes are ``[x, y, w, h]`` in canvas pixels; ``ratios`` are real-world sizes relative to the biggest concept.
"""
from __future__ import annotations

SAME_DEPTH = 0.05  # bases closer than this fraction of H stand at about the same depth (no camera known)
ORDER_TOL = 0.03  # a height within 3 % of the other one is not an inversion (rounding, aspect jitter)
RATIO_GAP = 0.05  # concepts whose ratios differ by less than this have no order to keep


def size_order_violations(boxes: list[tuple[str, str, list[float]]], ratios: dict[str, float],
                          size: tuple[int, int], camera: dict | None = None) -> list[str]:
    """Pairs drawn in the wrong order for their real sizes: ``boxes`` are (instance, concept, box).
    With a camera (horizon, near) each height is brought to the nearest ground line by the perspective
    factor of its base; without one, only pairs standing at about the same depth are compared."""
    H = float(size[1])
    norm = []
    for name, concept, b in boxes:
        base = (b[1] + b[3]) / H
        h = b[3]
        if camera:
            d = (base - camera["horizon"]) / max(camera["near"] - camera["horizon"], 1e-6)
            h = h / d if d > 1e-6 else float("inf")
        norm.append((name, concept, base, h))
    out = []
    for i, (ni, ci, bi, hi) in enumerate(norm):
        for nj, cj, bj, hj in norm[i + 1:]:
            ri, rj = ratios.get(ci), ratios.get(cj)
            if ri is None or rj is None or abs(ri - rj) < RATIO_GAP:
                continue
            if not camera and abs(bi - bj) > SAME_DEPTH:
                continue
            (small, hs), (big, hb) = ((ni, hi), (nj, hj)) if ri < rj else ((nj, hj), (ni, hi))
            if hs > hb * (1 + ORDER_TOL):
                out.append(f"{small} is drawn taller than {big} at the same depth, though smaller in reality")
    return out


def depth_inversions(boxes: list[tuple[str, float, list[float]]], size: tuple[int, int],
                     feet_tol: float = 0.02, scale_tol: float = 0.05) -> list[str]:
    """Pairs that contradict the ground plane: ``boxes`` are (instance, real height, box), the real height in
    any unit shared by all (a close-up's: the part of its subject it shows). One whose feet are lower (nearer
    the camera, by more than ``feet_tol`` of H) than another's must be drawn at least as large for its real
    size (pixels per unit, within ``scale_tol``): nearer and smaller-scaled reads as pasted."""
    H = float(size[1])
    feet = [((b[1] + b[3]) / H, b[3] / max(r, 1e-9), n) for n, r, b in boxes]
    return [f"{ni} stands nearer than {nj} (feet at {fi:.0%} vs {fj:.0%} of H) but is drawn at {si / sj:.0%} "
            f"of its scale" for fi, si, ni in feet for fj, sj, nj in feet
            if fi > fj + feet_tol and si < sj * (1 - scale_tol)]


def floating(boxes: list[tuple[str, str, list[float]]], size: tuple[int, int], ground: float = 0.45) -> list[str]:
    """Instances whose base lies above ``ground`` (fraction of H from the top): standing on nothing."""
    H = float(size[1])
    return [f"{name} has its base at {(b[1] + b[3]) / H:.0%} of the height, above the ground (>= {ground:.0%})"
            for name, _, b in boxes if (b[1] + b[3]) / H < ground]


def occluded(objects: list[dict], threshold: float = 0.99) -> bool:
    """Whether some instance of a composition (layout.json objects) is partly hidden by a nearer one."""
    return any(float(o.get("visible_fraction", 1.0)) < threshold for o in objects)


def coverage(boxes: list[list[float]], size: tuple[int, int]) -> float:
    """Share of the canvas inside the union of the boxes (rasterised on a coarse grid)."""
    import numpy as np

    W, H = size
    g = np.zeros((256, 256), bool)
    for x, y, w, h in boxes:
        g[int(y / H * 256):int(np.ceil((y + h) / H * 256)), int(x / W * 256):int(np.ceil((x + w) / W * 256))] = True
    return float(g.mean())


# things that are photographed in the air as often as on the ground: no base check
AIRBORNE = ("bird", "parrot", "owl", "kite", "balloon", "drone", "plane", "airplane", "butterfly", "rocket")


def check_plausible(reply, concepts: list[str], ratios: dict[str, float], frame: int, ground: float = 0.45):
    """An LLM layout reply (names already mapped, boxes in request order) that could be a photo, else
    ``ReplyInvalid`` with what to change, which the client feeds back to the model on its retry. ``ground``: where
    the ground starts (fraction of the height; a background photo's horizon when it is lower than 0.45)."""
    from gen4gen.llm.replies import ReplyInvalid

    boxes = [(o.name, c, list(o.box)) for o, c in zip(reply.objects, concepts)]
    problems = size_order_violations(boxes, ratios, (frame, frame))
    grounded = [b for b in boxes if not any(w in b[1].lower() for w in AIRBORNE)]
    problems += floating(grounded, (frame, frame), ground)
    if problems:
        where = f"in the lower half of the {frame}x{frame} frame" if ground <= 0.45 else \
            f"below y = {int(ground * frame)}, where the photo's ground starts"
        raise ReplyInvalid("implausible layout: " + "; ".join(problems[:4]) + ". Stand every object on the ground "
                           f"(its base {where}); at the same depth a smaller "
                           "real object must be drawn smaller, further back means higher and smaller")
    return reply


def fitting_llm_scenes(scenes: list[str], concepts: list[str], rng) -> tuple[list[str], list[str]]:
    """The model's scene phrases with each one that contradicts a concept (or names no drawable background)
    replaced by a built-in phrase that fits; returns the scenes and one reason per replacement."""
    from gen4gen.layout.heuristic import size_prior, suggest_scenes
    from gen4gen.layout.scenes import scene_conflict

    cats = [size_prior(c)[0] for c in concepts]
    why_not = [scene_conflict(p, cats) for p in scenes]
    if not any(why_not):
        return list(scenes), []
    spare = [p for p in suggest_scenes(concepts, rng, k=6) if p not in scenes]
    out, reasons = [], []
    for phrase, why in zip(scenes, why_not):
        if why is None or not spare:
            out.append(phrase)
        else:
            out.append(spare.pop(0))
            reasons.append(f"{why}: replaced by {out[-1]!r}")
    return out, reasons


def plausibility_of(layout, objects: list[dict]) -> dict:
    from gen4gen.layout.heuristic import size_ratios  # the priors, for a layout that came without ratios

    """layout.json's ``plausibility``: whether an instance is partly hidden, and size-order inversions of the
    planned boxes (against the layout's own ratios, at equal depth)."""
    boxes = [(b.name, b.concept, b.box) for b in layout.boxes if not b.cut_edges]  # a close-up is meant big
    ratios = layout.size_ratios or size_ratios(sorted({b.concept for b in layout.boxes}))
    return {"occluded": occluded(objects),
            "size_order_violations": size_order_violations(boxes, ratios, layout.size, layout.camera)}


__all__ = ["size_order_violations", "depth_inversions", "floating", "occluded", "coverage", "plausibility_of",
           "check_plausible", "fitting_llm_scenes", "AIRBORNE"]
