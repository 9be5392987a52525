"""The embedded planner: geometry rules, size priors, scenes, determinism and variety."""
import itertools

import pytest

from gen4gen.layout.heuristic import MEDIUM, size_prior, size_ratios, suggest_scenes
from gen4gen.layout.schema import ConceptCount, PlanRequest, hidden_share, min_box_area, overlap_fraction
from tests.helpers.settings import backend

NAMES = ["cat", "dog", "houseplant", "cup", "car", "astronaut", "rocket", "zorblax", "teddy_bear", "lion"]


def request(names, size=(1024, 1024), seed=0, counts=None):
    counts = counts or {}
    return PlanRequest(tuple(ConceptCount(n, counts.get(n, 1)) for n in names), size, seed)


@pytest.mark.parametrize("size", [(1024, 1024), (1024, 640), (512, 768)])
def test_boxes_inside_canvas_above_min_area_and_overlap_bounded(size):
    planner = backend("layout", "heuristic", max_overlap=0.2)
    W, H = size
    for n, seed in itertools.product(range(1, 8), range(25)):
        names = [NAMES[(seed + 3 * i) % len(NAMES)] + str(i) for i in range(n)]
        lay = planner.plan(request(names, size, seed))
        assert len(lay.boxes) == n
        a_min = min_box_area(size, n)
        for b in lay.boxes:
            x, y, w, h = b.box
            assert x >= 0 and y >= 0 and x + w <= W + 1e-6 and y + h <= H + 1e-6, (n, seed, b)
            assert w * h >= a_min, (n, seed, b, a_min)
        for a, b in itertools.combinations(lay.boxes, 2):
            if lay.occluding and {a.name, b.name} == set(lay.occluding):  # the planned pair: the farther box
                near, far = (a, b) if a.name == lay.occluding[0] else (b, a)  # keeps all but 0.2 of its area
                assert hidden_share(near.box, far.box) <= 0.2 + 1e-6, (n, seed)
            else:
                assert overlap_fraction(a.box, b.box) <= 0.2 + 1e-6, (n, seed)


def test_min_area_rule_matches_gen4gen():
    assert min_box_area((1000, 1000), 3) == pytest.approx(200 ** 2)
    assert min_box_area((1200, 1200), 4) == pytest.approx(200 ** 2)
    assert min_box_area((800, 800), 6) == pytest.approx(100 ** 2)


def test_deterministic_per_seed_and_varied_across_seeds():
    planner = backend("layout", "heuristic")
    names = ["cat", "dog", "houseplant"]
    a, b = planner.plan(request(names, seed=7)), planner.plan(request(names, seed=7))
    assert [x.box for x in a.boxes] == [x.box for x in b.boxes] and a.background_prompt == b.background_prompt
    orders, lefts, backgrounds = set(), set(), set()
    for seed in range(20):
        lay = planner.plan(request(names, seed=seed))
        orders.add(tuple(sorted(lay.boxes, key=lambda bx: bx.box[0])[i].concept for i in range(3)))
        lefts.add(round(min(bx.box[0] for bx in lay.boxes)))
        backgrounds.add(lay.background_prompt)
    assert len(orders) >= 4  # left-right order changes with the seed
    assert len(lefts) >= 10  # and so does the spacing
    assert len(backgrounds) >= 2


SETS = [("cat", "dog"), ("cat", "dog", "horse"), ("cat", "dog", "dog2", "horse"), ("cup", "teapot", "car"),
        ("astronaut", "rocket"), ("houseplant", "vase", "cat"), ("lion", "cat", "hamster"), ("zorblax", "cup"),
        ("teddy_bear", "dog", "bottle", "plate", "elephant")]


def plans(seeds=range(60), sets=SETS, planner=None, size=(1024, 1024)):
    planner = planner or backend("layout", "heuristic")
    for names in sets:
        for seed in seeds:
            r = PlanRequest(tuple(ConceptCount(n) for n in names), size, seed, sample=seed)
            yield names, planner.plan(r)


def test_ground_plane_depth_perspective_and_paste_order():
    H = 1024
    horizons, cams = set(), set()
    for names, lay in plans():
        cam = lay.camera
        assert 0.3 <= cam["horizon"] <= 0.5 and 0.9 <= cam["near"] <= 0.99 and 0.6 <= cam["height"] <= 1.3
        horizons.add(cam["horizon"])
        cams.add(cam["height"])
        for b in lay.boxes:  # further back = base higher (towards the horizon), by the perspective factor
            d = lay.depth[b.name]
            assert 0.4 <= d <= 1.0
            base = (b.box[1] + b.box[3]) / H
            assert base == pytest.approx(cam["horizon"] + d * (cam["near"] - cam["horizon"]), abs=1e-3)
        by_name = {b.name: b for b in lay.boxes}
        bases = [by_name[n].box[1] + by_name[n].box[3] for n in lay.paste_order]
        assert bases == sorted(bases)  # pasted far to near
        assert [lay.depth[n] for n in lay.paste_order] == sorted(lay.depth[n] for n in lay.paste_order)
    assert len(horizons) > 100 and len(cams) > 100  # camera varies per seed


def test_size_order_kept_at_equal_depth_and_gen4gen_bound_met():
    from gen4gen.layout.heuristic import real_height
    from gen4gen.layout.plausibility import size_order_violations

    compressed = 0
    for names, lay in plans():
        triples = [(b.name, b.concept, b.box) for b in lay.boxes]
        assert size_order_violations(triples, lay.size_ratios, lay.size, lay.camera) == [], (names, lay.seed)
        # normalised to the same depth, heights follow real heights (a cat never taller than a dog, nor a dog
        # than a horse)
        at_near = sorted((real_height(b.concept), b.box[3] / lay.depth[b.name]) for b in lay.boxes)
        for (ra, ha), (rb, hb) in zip(at_near, at_near[1:]):
            if rb > ra * 1.05:
                assert ha <= hb * 1.001, (names, lay.seed, at_near)
        heights = [b.box[3] for b in lay.boxes]
        assert min(heights) >= 0.4 * max(heights) - 1e-6, (names, lay.seed)  # Gen4Gen's bound, on the drawing
        if lay.camera["gamma"] < 1.0:  # depth was not enough: the smallest object came in front of the biggest first
            compressed += 1
            smallest = min(lay.boxes, key=lambda b: lay.size_ratios[b.concept])
            biggest = max(lay.boxes, key=lambda b: lay.size_ratios[b.concept])
            assert lay.depth[smallest.name] >= lay.depth[biggest.name], (names, lay.seed)
    assert 0 < compressed < len(SETS) * 60  # both paths are exercised


def test_small_objects_are_moved_nearer_instead_of_enlarged():
    # cat next to a horse: 0.24 of its height in reality; depth alone keeps the bound when the horse stands back
    nearer = 0
    for _, lay in plans(sets=[("cat", "horse")]):
        cat, horse = lay.boxes
        assert cat.box[3] >= 0.4 * horse.box[3] - 1e-6
        if lay.camera["gamma"] == 1.0:  # real proportions: the cat stands in front
            nearer += lay.depth["cat_0"] > lay.depth["horse_0"]
            assert (cat.box[3] / lay.depth["cat_0"]) / (horse.box[3] / lay.depth["horse_0"]) == pytest.approx(
                lay.size_ratios["cat"], rel=1e-3)
    assert nearer >= 10


# a crowded set (the minimum area rule fills the row) has fewer pairs that can overlap: 44 % at a 0.6 setting
@pytest.mark.parametrize("share,sets", [(0.0, [("cat", "dog"), ("cat", "dog", "horse")]),
                                        (0.3, [("cat", "dog"), ("cat", "dog", "horse")]), (0.6, [("cat", "dog")])])
def test_occlusion_share_follows_the_setting(share, sets):
    planner = backend("layout", "heuristic", occlusion=share, max_overlap=0.35)
    n = 0
    for names in sets:
        planned = 0
        for _, lay in plans(seeds=range(100), sets=[names], planner=planner):
            boxes = {b.name: b.box for b in lay.boxes}
            if lay.occluding:
                planned += 1
                near, far = lay.occluding
                assert lay.paste_order.index(near) > lay.paste_order.index(far)  # the nearer one is pasted later
                assert 0.02 <= hidden_share(boxes[near], boxes[far]) <= 0.35 + 1e-6  # the farther box stays 65 % clear
            else:  # no overlap at all between any two objects
                assert all(overlap_fraction(a, b) == 0 for a, b in itertools.combinations(boxes.values(), 2))
        # the crowded set with compressed ratios gives up an overlap that would stand the horse in front of the
        # dog (nearer, yet drawn small for its size; test_s2_layout_depth.py): 23 of 100 at 0.3, 26 before
        assert abs(planned / 100 - share) <= (0.08 if "horse" in names else 0.05), (names, planned)
        n += planned
    assert n == 0 if share == 0 else n > 0


def test_unknown_names_are_medium_and_say_so():
    lay = backend("layout", "heuristic").plan(request(["zorblax", "cat"], seed=2))
    assert lay.size_source == {"zorblax": "unknown", "cat": "prior"}


def test_size_priors_ratios_and_unknown_names():
    assert size_prior("zorblax") == MEDIUM
    assert size_prior("my_black_cat")[0] == "pet" and size_prior("Houseplant2")[0] == "plant"
    ratios = size_ratios(["dog", "cup", "rocket"])  # real heights, unbounded: the planner applies the bound
    assert ratios["rocket"] == 1.0 and 0 < ratios["cup"] < ratios["dog"] < 0.4
    ratios = size_ratios(["dog", "cat"])
    assert ratios["dog"] == 1.0 and 0.4 <= ratios["cat"] < 1.0
    lay = backend("layout", "heuristic").plan(request(["dog", "cat"], seed=3))
    dog, cat = lay.boxes
    assert dog.box[3] / lay.depth["dog_0"] > cat.box[3] / lay.depth["cat_0"]


def test_counts_make_several_instances():
    lay = backend("layout", "heuristic").plan(request(["cat", "dog"], seed=1, counts={"dog": 2}))
    assert [b.name for b in lay.boxes] == ["cat_0", "dog_0", "dog_1"]


def test_plausible_scenes_per_concept_type():
    import numpy as np

    from gen4gen.layout.scenes import scene_conflict, style_for

    rng = np.random.default_rng(0)
    pets = suggest_scenes(["cat", "dog"], rng)
    assert len(set(pets)) == 3 and {style_for(p) for p in pets[:2]} == {"garden", "room"}
    assert {style_for(p) for p in suggest_scenes(["cup", "mug"], rng)} <= {"kitchen", "room", "studio"}
    assert "kitchen" in {style_for(p) for p in suggest_scenes(["cup", "mug"], rng)}
    # a cat and a mug share real scenes (a kitchen table, a living room), not only a studio backdrop
    assert {style_for(p) for p in suggest_scenes(["cat", "mug"], rng)[:2]} == {"kitchen", "room"}
    assert {style_for(p) for p in suggest_scenes(["astronaut", "rocket"], rng)} == {"moon", "desert", "night"}
    assert len(set(suggest_scenes(["zorblax"], rng))) == 3
    for seed in range(40):  # a horse is never in a living room, a cup never on a farm; mixed sets share a scene
        r = np.random.default_rng(seed)
        horse = suggest_scenes(["cat", "horse"], r)
        assert all(style_for(p) in {"garden", "beach", "snow", "farm"} for p in horse), horse
        assert all(style_for(p) == "studio" for p in suggest_scenes(["cup", "horse"], r))
        for names in SETS:
            cats = [size_prior(n)[0] for n in names]
            assert all(scene_conflict(p, cats) is None for p in suggest_scenes(list(names), r)), names
    assert scene_conflict("in a cozy living room", ["pet", "farm"]) == \
        "'in a cozy living room' (room) does not fit farm concepts"
    assert "names no background" in scene_conflict("somewhere nice", ["pet"])


def test_known_cutout_aspect_shapes_the_box():
    r = PlanRequest((ConceptCount("cat", 1, aspect=2.0), ConceptCount("zorblax", 1, aspect=0.5)), (1024, 1024), 4)
    cat, other = backend("layout", "heuristic").plan(r).boxes
    assert cat.box[2] / cat.box[3] == pytest.approx(2.0) and other.box[2] / other.box[3] == pytest.approx(0.5)
