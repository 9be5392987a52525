"""Depth cues agree: beside a close-up the others stand where their drawn size puts them in its perspective,
and no concept stands nearer than another while drawn smaller for its real size (many seeds)."""
import itertools
from collections import Counter

import pytest

from gen4gen.layout.closeups import shown_share
from gen4gen.layout.heuristic import TOP_MARGIN, real_height
from gen4gen.layout.plausibility import depth_inversions
from gen4gen.layout.schema import ConceptCount, PlanRequest, min_box_area
from tests.helpers.settings import backend

SIZE = (1024, 1024)
# (name, aspect of its cut-outs, cut edges): the demo's cat head with a cup, a head-and-shoulders crop, a body
# entering from the side beside a horse far bigger and a cup far smaller, an unknown name
CLOSEUP_SETS = [
    [("cat", 1.4, ("top", "bottom")), ("cup", 1.1, ())],
    [("cat", 1.0, ("bottom",)), ("cup", None, ()), ("teapot", None, ())],
    [("dog", 1.0, ("left",)), ("horse", None, ()), ("cup", None, ())],
    [("astronaut", 0.6, ("bottom",)), ("rocket", None, ())],
    [("alpaca", 1.0, ("top", "bottom")), ("bicycle", None, ()), ("lamp", None, ())],
    [("dog", 1.2, ("right",)), ("cat", None, ()), ("houseplant", None, ())],
]
SEEDS = range(120)


def plans(sets):
    planner = backend("layout", "heuristic")
    for cs, seed in itertools.product(sets, SEEDS):
        req = PlanRequest(tuple(ConceptCount(n, 1, a, e) for n, a, e in cs), SIZE, seed, sample=seed)
        yield planner, planner.plan(req)


def at_floor(planner, plan, box) -> bool:
    """Held at Gen4Gen's bounds: the minimum area, or smallest_ratio of the tallest other."""
    others = [b for b in plan.boxes if not b.cut_edges]
    return (box.box[2] * box.box[3] <= 1.05 * min_box_area(SIZE, len(plan.boxes))
            or box.box[3] <= 1.02 * planner.smallest_ratio * max(b.box[3] for b in others))


@pytest.mark.parametrize("cs", CLOSEUP_SETS, ids=lambda cs: "+".join(c[0] for c in cs))
def test_others_stand_where_their_size_puts_them_in_the_closeups_perspective(cs):
    W, H = SIZE
    on_near = held = 0
    nearest = 0.0
    for planner, plan in plans([cs]):
        close = next(b for b in plan.boxes if b.cut_edges)
        r = plan.size_ratios
        unit = close.box[3] / (shown_share(close.cut_edges) * r[close.concept])  # px per ratio unit, nearest line
        hz, near = plan.camera["horizon"], plan.camera["near"]
        for b in plan.boxes:
            if b is close:
                continue
            x, y, w, h = b.box
            d = ((y + h) / H - hz) / (near - hz)  # depth from its feet: 1 on the nearest line
            assert 0 < d <= 1 + 1e-6 and y >= -1e-6 and x >= -1e-6 and x + w <= W + 1e-6, (plan.seed, b)
            assert plan.depth[b.name] == pytest.approx(d, abs=2e-3)
            expected = d * unit * r[b.concept]  # the pinhole: drawn height = depth x its height on the nearest line
            if h > expected * 1.01:  # larger than the close-up's scale allows: only held at a bound, nearest line
                assert d == pytest.approx(1.0, abs=1e-3) and at_floor(planner, plan, b), (plan.seed, b, expected)
                held += 1
            else:
                assert h == pytest.approx(expected, rel=0.01), (plan.seed, b)
            on_near += d > 0.98
            nearest = max(nearest, d)
        # the close-up's camera is recorded: height on the nearest line = (near - horizon) x real / camera
        assert plan.camera["height"] == pytest.approx((near - hz) * H / unit, rel=1e-3, abs=6e-5)
    if cs[0][0] == "cat" and cs[0][2] == ("top", "bottom"):  # the demo: the cup always well behind the cat's head
        assert on_near == 0 and held == 0 and nearest < 0.55  # (main: its feet at 0.83-0.96 H, on the nearest line)


def test_closeup_others_keep_gen4gens_sizes():
    """Visible enough to train on: every other at least smallest_ratio of the tallest other, and the tallest other
    at 0.45 of the close-up unless the strip's width holds it, or it is as tall as its feet are low (too tall to
    stand further back inside the canvas, its head TOP_MARGIN below the top: perspective wins there), never under 0.85 of that (the strip's growth
    stops at the other boxes' caps, as before this branch)."""
    held = Counter()
    for planner, plan in plans(CLOSEUP_SETS):
        close = next(b for b in plan.boxes if b.cut_edges)
        others = [b for b in plan.boxes if not b.cut_edges]
        x, y, w, h = max(others, key=lambda b: b.box[3]).box
        assert all(b.box[3] >= planner.smallest_ratio * h * 0.97 for b in others), plan.seed
        why = ("0.45" if h >= 0.45 * close.box[3] - 1 else "width" if w >= 0.99 * (SIZE[0] - close.box[2])
               else "feet" if y <= TOP_MARGIN * SIZE[1] + 1 else "short")
        assert why != "short" or h >= 0.85 * 0.45 * close.box[3], plan.seed
        held[why] += 1
    # measured: 509 of 720 at 0.45, 120 held by the width, 61 by their feet, 30 short (main: 34 short)
    assert held["0.45"] >= 0.65 * sum(held.values()) and held["short"] <= 0.05 * sum(held.values()), held


SETS = [["cat", "lion"], ["cat", "dog", "houseplant"], ["astronaut", "rocket"], ["cup", "teapot", "book"],
        ["cat", "cup"], ["cat", "dog", "horse"], ["car", "bicycle", "person"]]


@pytest.mark.parametrize("closeups", [True, False], ids=["with close-up", "without"])
def test_no_concept_nearer_yet_smaller_for_its_size(closeups):
    """Pairs: feet lower (nearer) never come with fewer pixels per cm than the farther one has (boxes held at
    Gen4Gen's minimum size left out: they are drawn larger for their size, the conflict the planner accepts)."""
    sets = CLOSEUP_SETS if closeups else [[(n, None, ()) for n in s] for s in SETS]
    bad = []
    for planner, plan in plans(sets):
        rows = [(b.name, real_height(b.concept) * (shown_share(b.cut_edges) if b.cut_edges else 1.0), b.box)
                for b in plan.boxes if b.cut_edges or not at_floor(planner, plan, b)]
        bad += [(plan.seed, v) for v in depth_inversions(rows, SIZE)]
    assert bad == []


def test_depth_inversions_reads_feet_and_scale():
    cup_near, cup_far = ("cup", 10, [0, 600, 100, 100]), ("cup", 10, [0, 300, 100, 300])
    assert depth_inversions([cup_near, cup_far], SIZE) and not depth_inversions([cup_near[:2] + ([0, 300, 300, 400],),
                                                                                 cup_far], SIZE)
    head = ("cat", 41 * 0.35, [300, 0, 700, 1024])  # a frame-high head: nothing is nearer and larger-scaled
    assert not depth_inversions([head, ("cup", 9, [0, 400, 330, 300])], SIZE)
    assert depth_inversions([("cat", 41, [300, 0, 700, 1024]), ("cup", 9, [0, 600, 330, 300])], SIZE)


def test_a_whole_subject_far_back_keeps_its_head_off_the_top_edge():
    """Beside a close-up, one standing far back near a high horizon is shrunk until its head is TOP_MARGIN of the
    canvas below the top (a horse on the far slope with its ears on the frame read as cut by it)."""
    tops = [b.box[1] for _, plan in plans(CLOSEUP_SETS) for b in plan.boxes if not b.cut_edges]
    assert min(tops) >= TOP_MARGIN * SIZE[1] - 1.0
