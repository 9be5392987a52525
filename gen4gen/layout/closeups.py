"""Cut-off subjects: which photos of a composition come as a close-up, and which stay out.

s1 records which edges of its photo a subject's mask is cut by (``cut_edges``; older trees: the
``touches_border`` flag with the mask box). A subject cut by the bottom edge is a head-and-shoulders crop:
it enters the canvas from the bottom edge, scaled as a close-up in front; one cut by a side enters from that
side. A composition has at most one close-up, and whole subjects are preferred. A photo cut on three or more
sides (or on two opposite ones) shows no outline to stand on: it is left out of multi-concept scenes with the
reason, unless it is all there is of its concept (then it is used as the close-up and flagged).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gen4gen.layout.schema import PlacedBox

EDGES = ("top", "bottom", "left", "right")


def cut_edges_of(meta, border: int = 2) -> tuple[str, ...]:
    """The edges of its photo that an s1 cut-out is cut by: s1's ``cut_edges`` when it recorded them (an empty
    list included: a paw tip on the frame is no cut), else, for a tree older than the field, the sides its mask box
    reaches when s1 flagged ``touches_border``."""
    fields = getattr(meta, "model_fields_set", None)  # a pydantic meta: what the file had, defaults aside
    if ("cut_edges" in fields) if fields is not None else hasattr(meta, "cut_edges"):
        return tuple(e for e in EDGES if e in set(meta.cut_edges))
    if "touches_border" not in (meta.flags or []) or meta.bbox_xyxy is None or meta.size is None:
        return ()
    x0, y0, x1, y1 = meta.bbox_xyxy
    w, h = meta.size
    hits = {"top": y0 <= border, "bottom": y1 >= h - border, "left": x0 <= border, "right": x1 >= w - border}
    return tuple(e for e in EDGES if hits[e])


def boxed_in(edges) -> bool:
    """Cut on three sides, or on two opposite ones: no outline to stand on and no frame edge to enter from."""
    e = set(edges)
    return len(e) >= 3 or {"top", "bottom"} <= e or {"left", "right"} <= e


@dataclass
class Cast:
    """Who is in one composition and how: the sources each concept draws from, the close-up's cut edges."""
    concepts: list[str]
    sources: dict[str, list]  # concept -> the Sources it may draw from in this composition
    closeup: str | None = None  # the concept that comes as the close-up
    edges: tuple[str, ...] = ()  # its cut edges
    left_out: list[dict] = field(default_factory=list)  # {"concept" | "source", "reason"}
    flags: list[str] = field(default_factory=list)


def cast(concepts: list[str], sources: dict[str, list], rng: np.random.Generator) -> Cast:
    """Choose, for one composition, the photos each concept draws from: whole subjects when there are any; at
    most one close-up (a concept with cut-off photos only, or by chance one with both, in proportion to its
    cut-off photos); photos cut on 3+ (or two opposite) sides out of multi-concept scenes unless they are all of
    their concept."""
    multi = len(concepts) > 1
    out = Cast([], {})
    whole, cut = {}, {}
    for c in concepts:
        pool = sources[c]
        boxed = [s for s in pool if boxed_in(s.cut_edges)]
        if multi and boxed and len(boxed) < len(pool):
            for s in boxed:
                out.left_out.append({"source": s.item_id, "reason": f"cut by {', '.join(s.cut_edges)}: no outline "
                                     "to stand on in a scene with other concepts (another photo of it is used)"})
            pool = [s for s in pool if not boxed_in(s.cut_edges)]
        whole[c] = [s for s in pool if not s.cut_edges]
        cut[c] = [s for s in pool if s.cut_edges]
    forced = [c for c in concepts if not whole[c]]
    order = [forced[i] for i in rng.permutation(len(forced))] if forced else []
    chance = rng.random()  # drawn whatever happens: one setting never reshuffles the rest
    if not order:  # everyone has whole photos: a close-up now and then, as often as such photos are there
        mixed = [c for c in concepts if cut[c]]
        share = sum(len(cut[c]) for c in mixed) / max(1, sum(len(sources[c]) for c in concepts))
        if mixed and chance < share:
            order = [mixed[int(rng.integers(len(mixed)))]]
    closeup = order[0] if order else None
    for c in order[1:]:
        out.left_out.append({"concept": c, "reason": f"every photo of {c} is cut off by its frame and "
                             f"{closeup} is already this composition's close-up (at most one per composition)"})
    for c in concepts:
        if c in order[1:]:
            continue
        if c == closeup:
            pick = cut[c][int(rng.integers(len(cut[c])))]
            out.sources[c] = [s for s in cut[c] if s.cut_edges == pick.cut_edges]  # one kind of crop: one placement
            out.closeup, out.edges = c, tuple(pick.cut_edges)
            if boxed_in(pick.cut_edges):
                out.flags.append(f"{c}: its only photos are cut by {', '.join(pick.cut_edges)}; used as the close-up, "
                                 "a straight edge may show")
        else:
            out.sources[c] = whole[c]
        out.concepts.append(c)
    return out


def shown_share(edges) -> float:
    """How much of its subject's height a close-up shows, for its scale (pixels per cm) against the others':
    cut on top and bottom, a head (about a third of a standing animal); on one of them, head and shoulders;
    by a side only, the whole height. Guesses on the safe side: a smaller share makes the close-up nearer."""
    e = set(edges)
    return 0.35 if {"top", "bottom"} <= e else 0.6 if e & {"top", "bottom"} else 1.0


def closeup_box(c, aspect: float, size: tuple[int, int], near: float, u: list[float], others: bool):
    """The close-up's box and the side it takes: on the canvas edges its photo cut it by (from the bottom a
    head-and-shoulders crop, from a side a body entering the frame), 50-85% of the canvas high, at most half the
    width when other concepts share the canvas. ``u``: three uniform draws (side, size, -)."""
    W, H = size
    edges = set(c.cut_edges)
    side = "left" if "left" in edges else "right" if "right" in edges else ("left" if u[0] < 0.5 else "right")
    span, tall = {"left", "right"} <= edges, {"top", "bottom"} <= edges  # cut on both opposite sides: frame-wide
    hc = H if tall else H * ((0.62 + 0.23 * u[1]) if edges & {"top", "bottom"} else (0.5 + 0.2 * u[1]))
    # a frame-high close-up needs its own width (else its top cut would float); others share what is left
    wc = W if span else min(hc * aspect, (0.65 if tall else 0.5) * W if others else 0.9 * W)
    hc = hc if span or tall else min(hc, H, wc / aspect)
    if side in edges or tall:  # a frame-high one is cropped by this side too (compose.Composer._closeup)
        x = 0.0 if side == "left" else W - wc
    else:  # a real outline on this side: a small margin to the frame
        x = 0.03 * W if side == "left" else W - wc - 0.03 * W
    if "bottom" in edges:
        y = H - hc
    elif "top" in edges:
        y = 0.0
    else:  # cut by a side only: its feet stand on the nearest ground line
        y = max(0.0, near * H - hc)
    return PlacedBox(c.name, 0, [float(x), float(y), float(wc), float(hc)], cut_edges=tuple(sorted(edges))), side


__all__ = ["EDGES", "cut_edges_of", "boxed_in", "Cast", "cast", "closeup_box", "shown_share"]
