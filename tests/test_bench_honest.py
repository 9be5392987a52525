"""An honest benchmark: intervals that cover at their stated rate, ties between models from one distribution,
provenance of the backbones, identity_mix on constructed cases, counterfactuals that a metric must notice,
difficulty by k, the held-out split and the leakage check."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gen4gen.bench import counterfactual as CF
from gen4gen.bench import prompts as P
from gen4gen.bench.identity import MISSING, identity_margins, identity_mix_score
from gen4gen.bench.provenance import describe, metric_backbones, warning
from gen4gen.bench.report import leaderboard
from gen4gen.bench.stats import bootstrap_ci, paired_diffs, paired_p, tie_ranks
from gen4gen.errors import UserError

COLOURS = {"cat": (220, 40, 40), "dog": (40, 220, 40), "cup": (40, 40, 220), "owl": (220, 220, 40)}


# ---------------------------------------------------------------- intervals and ties
def _simulate(rng, prompts: int, seeds: int, mean: float, prompt_sd: float = 1.0, seed_sd: float = 0.5,
              effect=None):
    """(prompt, seed, score) rows: a per-prompt effect (how hard the prompt is, shared by its seeds and, when
    given, by every model) plus per-image noise."""
    effect = rng.normal(0, prompt_sd, prompts) if effect is None else effect
    return [(f"p{i}", s, mean + effect[i] + rng.normal(0, seed_sd)) for i in range(prompts) for s in range(seeds)]


def test_bootstrap_intervals_cover_the_true_mean_at_the_stated_rate():
    """1,000 simulated benchmarks (40 prompts x 2 seeds, a prompt effect shared by its seeds): the 95 % interval
    holds the true mean in 95 % of them, within 3 binomial standard errors of 1,000 draws (+-0.021)."""
    rng = np.random.default_rng(0)
    runs, hits, widths = 1000, 0, []
    for k in range(runs):
        rows = _simulate(rng, 40, 2, 3.0)
        mean, lo, hi = bootstrap_ci([v for _, _, v in rows], [p for p, _, _ in rows], 1000, seed=k)
        hits += lo <= 3.0 <= hi
        widths.append(hi - lo)
        assert mean == pytest.approx(np.mean([v for _, _, v in rows]))
    assert abs(hits / runs - 0.95) <= 3 * math.sqrt(0.95 * 0.05 / runs)
    # the width a clustered interval should have: 2 x t(39) x sd of a prompt's mean / sqrt(prompts)
    assert np.mean(widths) == pytest.approx(2 * 2.02 * math.sqrt(1 + 0.25 / 2) / math.sqrt(40), rel=0.05)
    # the same rows give the same interval; one prompt gives no interval; missing values are left out
    rows = _simulate(np.random.default_rng(1), 5, 2, 0.0)
    args = ([v for *_, v in rows] + [None, math.nan], [p for p, *_ in rows] + ["p0", "p1"])
    assert bootstrap_ci(*args, 500, seed=3) == bootstrap_ci(*args, 500, seed=3)
    assert bootstrap_ci([1.0, 2.0], ["a", "a"]) == (1.5, None, None)
    assert bootstrap_ci([None], ["a"]) == (None, None, None)


def test_models_from_one_distribution_tie_and_a_real_difference_does_not():
    rng = np.random.default_rng(2)
    ties_same, ties_apart = 0, 0
    for k in range(200):
        hard = rng.normal(0, 1.0, 30)  # both models see the same prompts
        a = {(p, s): v for p, s, v in _simulate(rng, 30, 2, 0.0, effect=hard)}
        b = {(p, s): v for p, s, v in _simulate(rng, 30, 2, 0.0, effect=hard)}
        c = {(p, s): v + 0.5 for (p, s), v in b.items()}  # b shifted by one image-noise sd
        ties_same += paired_p(paired_diffs(a, b), seed=k) >= 0.05
        ties_apart += paired_p(paired_diffs(a, c), seed=k) >= 0.05
    # under the null a level-5 % test ties 95 % of the time (3 standard errors of 200 draws: 0.046)
    assert ties_same / 200 >= 0.95 - 3 * math.sqrt(0.95 * 0.05 / 200)
    assert ties_apart / 200 <= 0.05
    # exact sign-flip test for few prompts: 6 equal positive differences, 2 of 64 arrangements are as extreme
    assert paired_p(np.ones(6)) == pytest.approx(2 / 64)
    assert paired_p(np.zeros(4)) == 1.0 and paired_p(np.array([])) == 1.0
    assert tie_ranks([None, 0.5, 0.01, 0.2]) == ["1=", "1=", "3=", "3="]
    assert tie_ranks([None, 0.001, 0.001]) == ["1", "2", "3"]


def test_the_leaderboard_shows_two_models_of_one_distribution_as_a_tie():
    rng = np.random.default_rng(3)
    rows = []
    for model, shift in (("same-a", 0.0), ("same-b", 0.0), ("better", 3.0)):
        for p, s, v in _simulate(rng, 30, 2, 10.0 + shift, prompt_sd=0.3, seed_sd=0.3):
            rows.append({"model": model, "prompt_key": p, "seed": s, "clip_t": v})
    board = leaderboard(rows, ("model",), "clip_t", resamples=500)
    assert [r["model"] for r in board][0] == "better"
    assert [r["rank"] for r in board] == ["1", "2=", "2="]
    assert board[1]["p_vs_above"] < 0.05 <= board[2]["p_vs_above"]
    for r in board:
        assert r["clip_t_lo"] < r["clip_t"] < r["clip_t_hi"]


# ---------------------------------------------------------------- identity_mix by hand
def test_identity_mix_margin_swapped_blended_and_missing_concepts():
    refs = {"cat": np.array([[1.0, 0, 0]]), "dog": np.array([[0, 1.0, 0]]), "cup": np.array([[0, 0, 1.0]])}
    right = {"cat": np.array([1.0, 0.2, 0]), "dog": np.array([0.1, 1.0, 0])}
    m = identity_margins(right, refs)
    cos = lambda x, y: float(np.dot(x, y) / np.linalg.norm(x) / np.linalg.norm(y))  # noqa: E731
    assert m["cat"] == pytest.approx(cos([1, .2, 0], [1, 0, 0]) - cos([1, .2, 0], [0, 1, 0]))
    assert m["dog"] == pytest.approx(cos([.1, 1, 0], [0, 1, 0]) - cos([.1, 1, 0], [1, 0, 0]))
    swapped = identity_margins({"cat": right["dog"], "dog": right["cat"]}, refs)
    assert swapped["cat"] == pytest.approx(-m["dog"]) and swapped["dog"] == pytest.approx(-m["cat"])
    blended = identity_margins({"cat": np.array([1.0, 1.0, 0]), "dog": right["dog"]}, refs)
    assert blended["cat"] == pytest.approx(0.0)  # the cat with the dog's fur: as close to both
    score = identity_mix_score(m)
    assert score > identity_mix_score(blended) > identity_mix_score(swapped)
    missing = identity_margins({"cat": right["cat"], "dog": None}, refs)
    assert missing["dog"] is None and identity_mix_score(missing) == pytest.approx((m["cat"] + MISSING) / 2)
    # one concept in the whole dataset: nothing to compare with
    assert math.isnan(identity_mix_score(identity_margins({"cat": right["cat"]}, {"cat": refs["cat"]})))


# ---------------------------------------------------------------- a constructed exported dataset
class MeanColour:
    """An image encoder whose features are the image's mean colour less mid-grey: exact to reason about."""

    def encode_images(self, images):
        return np.stack([np.asarray(im.convert("RGB"), np.float64).reshape(-1, 3).mean(0) - 128 for im in images])


class Constant:
    def encode_images(self, images):
        return np.ones((len(images), 3))


def _export(root: Path, scenes: list[list[str]], size: int = 96) -> Path:
    """An exported dataset (``mycanvas/index.jsonl``, images, instance masks, references) of solid-colour
    objects on mid-grey: scene k holds its concepts side by side."""
    mc = root / "mycanvas"
    lines = []
    for c, rgb in COLOURS.items():
        ref = np.full((24, 24, 3), 128, np.uint8)
        ref[4:20, 4:20] = rgb
        (mc / "references" / c).mkdir(parents=True, exist_ok=True)
        Image.fromarray(ref).save(mc / "references" / c / "0.png")
    for k, concepts in enumerate(scenes):
        sid = f"s/{'+'.join(concepts)}_{k:03d}/v0"
        (mc / sid / "instances").mkdir(parents=True, exist_ok=True)
        img = np.full((size, size, 3), 128, np.uint8)
        insts = []
        for j, c in enumerate(concepts):
            x, y, w, h = 8 + j * 44, 30 + 4 * j, 36, 40 - 6 * j
            img[y:y + h, x:x + w] = COLOURS[c]
            mask = np.zeros((size, size), np.uint8)
            mask[y:y + h, x:x + w] = 255
            Image.fromarray(mask).save(mc / sid / "instances" / f"{c}_0.png")
            insts.append({"name": f"{c}_0", "concept": c, "bbox": [x, y, w, h], "mask": f"{sid}/instances/{c}_0.png"})
        Image.fromarray(img).save(mc / sid / "image.png")
        lines.append({"id": sid, "image": f"{sid}/image.png", "scene": "s", "concepts": concepts,
                      "captions": {"detailed": f"a {' and a '.join(concepts)} in a grey room",
                                   "personalized": " and ".join(f"<new{list(COLOURS).index(c) + 1}> {c}" for c in concepts)
                                   + " in a grey room"},
                      "modifier_tokens": {c: f"<new{list(COLOURS).index(c) + 1}>" for c in concepts},
                      "reference_images": {c: [f"mycanvas/references/{c}/0.png"] for c in concepts},
                      "mask": f"{sid}/image.png", "instances": insts})
    (mc / "index.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), "utf-8")
    return root


def test_counterfactuals_change_what_they_say_and_identity_metrics_notice_them(tmp_path):
    ds = _export(tmp_path / "ds", [["cat", "dog"], ["cup", "owl"], ["cat", "cup"]])
    (ds / "mycanvas" / "index.jsonl").write_text((ds / "mycanvas" / "index.jsonl").read_text() + "{not json\n")
    scenes, refs, problems = CF.load_scenes(ds)
    assert [s.id for s in scenes] == ["s/cat+dog_000/v0", "s/cup+owl_001/v0", "s/cat+cup_002/v0"]
    assert len(problems) == 1 and problems[0].startswith("index.jsonl:4: left out of the counterfactual check")
    assert sorted(refs) == ["cat", "cup", "dog", "owl"]
    cases = CF.make_cases(scenes)
    # per image: 1 swap, and per instance a drop, a duplicate and a substitute
    assert [(c.kind, c.target) for c in cases if c.scene == 0] == [
        ("swap", "cat <-> dog"), ("drop", "cat"), ("duplicate", "cat -> dog"), ("substitute", "cat -> owl"),
        ("drop", "dog"), ("duplicate", "dog -> cat"), ("substitute", "dog -> cup")]
    cat, dog = scenes[0].instances
    swap = cases[0].image
    x0, y0, x1, y1 = cat.box
    centre = swap[(y0 + y1) // 2, (x0 + x1) // 2]
    assert tuple(centre) == COLOURS["dog"]  # the dog's pixels where the cat was
    painted = cases[1].image[y0:y1, x0:x1].astype(int)
    assert np.abs(painted - 128).max() <= 8  # painted out (grey, a little green bleeds from the dog nearby)
    rates, rows = CF.check(scenes, refs, MeanColour())
    assert len(rows) == len(cases) == 3 * 7
    by = {(r["metric"], r["kind"]): r for r in rates}
    for kind in CF.KINDS:
        assert by[("identity_mix", kind)]["rate"] == 1.0 and by[("identity_mix", kind)]["flag"] == ""
        assert by[("cp_clip", kind)]["rate"] == 1.0
    assert by[("identity_mix", "swap")]["cases"] == 3 and by[("identity_mix", "drop")]["cases"] == 6
    # a concept without references cannot be compared: its cases are not counted (not "missed")
    no_owl = {c: v for c, v in refs.items() if c != "owl"}
    partial = {(r["metric"], r["kind"]): r["cases"] for r in CF.check(scenes, no_owl, MeanColour())[0]}
    assert partial[("identity_mix", "drop")] == 4 and partial[("clip_i", "swap")] == 3  # cup + owl: cup's refs
    # a metric that cannot see anything notices nothing, and the report says so
    blind, _ = CF.check(scenes, refs, Constant())
    assert all(r["rate"] == 0.0 and r["flag"] == "fails to notice (0% < 95%)" for r in blind)

    # the bench's step: written once, reused while nothing changed (no encoder is built the second time)
    built = []
    run = tmp_path / "run"

    def make():
        built.append(1)
        return MeanColour()

    first = CF.run_check([ds], make, "identity=mean-colour@sha256:0", run)
    again = CF.run_check([ds], make, "identity=mean-colour@sha256:0", run)
    assert built == [1] and again == first and first["images"] == 3
    assert (run / "counterfactual_cases.csv").read_text().count("\n") == 1 + 21
    assert CF.run_check([tmp_path / "nowhere"], make, "x", tmp_path / "run2") is None
    # a file of another shape is read as none (one line) and the check runs again
    (run / "counterfactual.json").write_text('{"key": "k", "backbone": "b", "images": -1, "rates": []}')
    assert CF.read_check(run / "counterfactual.json") is None
    assert CF.run_check([ds], make, "identity=mean-colour@sha256:0", run) == first and built == [1, 1]


# ---------------------------------------------------------------- provenance
def test_provenance_names_source_hash_and_whether_the_backbone_is_standard(tmp_path, monkeypatch):
    from safetensors.numpy import save_file

    tiny = tmp_path / "clip"
    tiny.mkdir()
    save_file({"w": np.zeros((10, 10), np.float32), "b": np.zeros(5, np.float32)}, str(tiny / "model.safetensors"))
    b = describe("clip", str(tiny))
    assert b.sha256 == hashlib.sha256((tiny / "model.safetensors").read_bytes()).hexdigest()
    assert (b.params, b.standard, b.source) == (105, False, str(tiny))
    assert "105 parameters: a tiny test model" in b.note and b.tag == f"clip={tiny}@sha256:{b.sha256[:12]}"

    # a hub snapshot folder of a published checkpoint: standard; the hub's blob name is the file's sha256
    blob = tmp_path / "hub" / "models--openai--clip-vit-large-patch14" / "blobs" / ("ab" * 32)
    blob.parent.mkdir(parents=True)
    blob.write_bytes((tiny / "model.safetensors").read_bytes())
    snap = blob.parent.parent / "snapshots" / "rev1"
    snap.mkdir(parents=True)
    (snap / "model.safetensors").symlink_to(blob)
    hub = describe("clip", str(snap))
    assert (hub.source, hub.sha256, hub.standard) == ("openai/clip-vit-large-patch14", "ab" * 32, True)

    # a hub id: its file in the local hub cache (the layout the hub client writes, read through gen4gen.hub),
    # standard when it is a published checkpoint
    (blob.parent.parent / "refs").mkdir()
    (blob.parent.parent / "refs" / "main").write_text("rev1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    by_id = describe("clip", "openai/clip-vit-large-patch14")
    assert (by_id.source, by_id.sha256, by_id.params, by_id.standard, by_id.note) == (
        "openai/clip-vit-large-patch14", "ab" * 32, 105, True, "")
    assert not describe("clip", "someone/clip-finetune").standard
    # a hub id that is not downloaded here: no hash, and not standard (nothing vouches for the weights)
    gone = describe("dino", "facebook/dino-vits16")
    assert gone.sha256 is None and not gone.standard and "hash unknown" in gone.note
    assert describe("clip", str(tmp_path / "gone")).note == "a local path that is not a folder here: weights unknown"
    embedded = describe("identity", "efficientnet-lite0")
    assert not embedded.standard and len(embedded.sha256) == 64
    by_metric = metric_backbones({"clip": str(tiny), "dino": "facebook/dino-vits16", "detector": str(tiny),
                                  "identity": "clip"}, ["clip_t", "identity_mix"])
    assert [b.role for b in by_metric["identity_mix"]] == ["detector", "identity"]
    assert by_metric["identity_mix"][1].source == str(tiny)  # identity=clip: the CLIP weights
    from gen4gen.bench.provenance import from_json, to_json

    assert from_json(to_json(by_metric)) == by_metric
    with pytest.raises(ValueError, match=r"clip_t\.0\.standard"):
        from_json(b'{"clip_t": [{"role": "clip", "source": "x", "sha256": null, "params": 1, "standard": "maybe"}]}')
    said = warning(by_metric)
    assert said.startswith("These scores come from non-standard backbones: clip=") and str(tiny) in said
    assert warning({"clip_t": [hub]}) is None


# ---------------------------------------------------------------- difficulty by k, split, leakage
def test_k_prompts_come_from_the_datasets_concept_sets_and_split_holds_sets_out(tmp_path):
    from gen4gen.bench.split import main as split_main, read_split

    ds = _export(tmp_path / "ds", [["cat", "dog", "cup"], ["cup", "owl"], ["cat", "owl"]])
    rows = P.load_dataset("mc", ds, caption="personalized", novel_backgrounds=[], k_prompts=2)
    ks = [(p.id, p.category, p.concepts) for p in rows if p.category.startswith("k=")]
    # k=1: 4 concepts (2 kept), k=2: 5 pairs (2 kept), k=3: the one triple
    assert [c for _, c, _ in ks] == ["k=1", "k=1", "k=2", "k=2", "k=3"]
    assert ks[-1] == ("k3__cat+cup+dog", "k=3", ["cat", "cup", "dog"])
    k3 = rows[-1]
    assert k3.text == "a photo of <new1> cat and <new3> cup and <new2> dog"
    assert k3.scored_text == k3.class_text == "a photo of a cat and a cup and a dog"
    assert set(k3.references) == {"cat", "dog", "cup"}
    assert all(len(set(c)) == int(cat[2:]) for _, cat, c in ks)
    # a set's limit picks among the scene prompts; the few k-curve prompts are always kept
    limited, _ = P.load_promptsets({"mc": {"kind": "dataset", "path": str(ds), "limit": 1, "k_prompts": 2,
                                           "novel_backgrounds": []}}, ["mc"])
    assert [p.category for p in limited if not p.category.startswith("k=")] == ["s"]
    assert [p.id for p in limited if p.category.startswith("k=")] == [i for i, _, _ in ks]

    assert split_main([str(ds), "--holdout", "0.34", "--seed", "0"]) == 0
    split = read_split(ds)
    assert len(split.holdout) == 1 and len(split.train) == 2
    held = split.holdout[0]
    ev = P.load_dataset("mc", ds, novel_backgrounds=[], split="eval")
    tr = P.load_dataset("mc", ds, novel_backgrounds=[], split="train")
    assert [sorted(p.concepts) for p in ev] == [held]
    assert len(tr) == 2 and held not in [sorted(p.concepts) for p in tr]
    (ds / "split.json").write_text('{"format": "gen4gen-split/1", "holdout": "cat"}')
    with pytest.raises(UserError, match="split.json: holdout"):
        P.load_dataset("mc", ds, split="eval")
    with pytest.raises(UserError, match="split='both'"):
        P.load_dataset("mc", ds, split="both")


def test_leakage_finds_evaluation_prompts_and_backgrounds_in_the_training_captions(tmp_path):
    from gen4gen.bench.leakage import check, training_data
    from gen4gen.artefacts import Manifest, TokenFile

    ds = _export(tmp_path / "ds", [["cat", "dog"], ["cup", "owl"]])
    run = tmp_path / "run"
    run.mkdir()
    tokens = [TokenFile(token=f"<new{k + 1}>", concept=c, noun=c, file=f"<new{k + 1}>.safetensors")
              for k, c in enumerate(COLOURS)]
    (run / "personalization.json").write_bytes(Manifest(trainer="lora", base="x", base_kind="sd", weights="w",
                                                        tokens=tokens, data="mycanvas",
                                                        caption="personalized").dump())
    (run / "meta.json").write_text(json.dumps({"dataset": str(ds), "config_hash": "h"}))
    captions, sets = training_data(run)
    assert captions == ["<new1> cat and <new2> dog in a grey room", "<new3> cup and <new4> owl in a grey room"]
    assert sets == {("cat", "dog"), ("cup", "owl")}
    prompts = P.load_dataset("mc", ds, caption="personalized", novel_backgrounds=["in a grey room", "on the moon"])
    prompts += [P.Prompt("x", "near", "<new1> cat and <new2> dog in a grey room today"),
                P.Prompt("x", "far", "a red cube", background="in a grey room")]
    row = check("lora-run", prompts, captions, sets, heldout=[["dog", "cat"], ["cat", "owl"]])
    # both scene prompts are training captions; "in a grey room" was dropped from the novel backgrounds at
    # load (it is in the captions), so the novel prompts use "on the moon" only
    assert (row["train_captions"], row["exact"], row["near"]) == (2, 2, 1)
    assert row["backgrounds"] == 2 and row["backgrounds_in_training"] == "in a grey room"
    assert row["heldout_sets_in_training"] == "cat+dog"
    assert row["examples"].split(", ")[:2] == ["mc/s__cat+dog_000__v0", "mc/s__cup+owl_001__v0"]
    with pytest.raises(UserError, match="not a train run"):
        training_data(tmp_path / "nothing")


def test_the_pareto_plot_and_the_gemrec_ranking_show_ties(tmp_path):
    from gen4gen.bench.report import front_ties, plot_pareto, ranking_summary

    rng = np.random.default_rng(4)
    hard = rng.normal(0, 1.0, 30)
    values = {m: {(p, s): v for p, s, v in _simulate(rng, 30, 2, q, effect=hard)}
              for m, q in (("cheap", 10.0), ("dear", 12.0), ("dear-twin", 12.0), ("worse", 8.0))}
    pts = [("cheap", 1.0, 10.0), ("dear", 5.0, 12.05), ("dear-twin", 6.0, 12.0), ("worse", 7.0, 8.0)]
    front = ["cheap", "dear"]
    # dear-twin: beaten by "dear" (cheaper, better) but not significantly; "worse" is beaten significantly
    assert front_ties(pts, front, values) == ["dear-twin"]
    board = [{"model": m, "cost_usd": c / 1000, "clip_t": q, "clip_t_lo": q - 0.4, "clip_t_hi": q + 0.4, "rank": "1"}
             for m, c, q in pts]
    got_front, tied = plot_pareto(board, "clip_t", tmp_path / "p.png", values)
    assert (got_front, tied) == (front, ["dear-twin"]) and (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"

    # GEMRec ranking: two models that share first place half the time tie; a model always last does not
    ranking = []
    for k in range(20):
        a, b = (1, 2) if k % 2 else (2, 1)
        ranking += [{"prompt_key": f"p{k}", "model": "a", "rank": a, "score": 1.0},
                    {"prompt_key": f"p{k}", "model": "b", "rank": b, "score": 1.0},
                    {"prompt_key": f"p{k}", "model": "c", "rank": 3, "score": 0.0}]
    summary = ranking_summary(ranking, resamples=200)
    assert [(r["model"], r["rank"]) for r in summary] == [("a", "1="), ("b", "1="), ("c", "3")]
    assert summary[2]["mean_rank_lo"] == summary[2]["mean_rank_hi"] == 3.0


def test_the_stage_runs_the_leakage_check_for_each_train_run_and_the_report_shows_it(tmp_path, capsys):
    from omegaconf import OmegaConf

    from gen4gen.bench.report import write_reports
    from gen4gen.bench.roster import Roster
    from gen4gen.artefacts import Manifest, TokenFile
    from gen4gen.stages.bench import leakage_rows

    ds = _export(tmp_path / "ds", [["cat", "dog"], ["cup", "owl"]])
    (ds / "split.json").write_text(json.dumps({"holdout": [["cat", "dog"]], "train": [["cup", "owl"]]}))
    run = tmp_path / "run"
    run.mkdir()
    tokens = [TokenFile(token=f"<new{k + 1}>", concept=c, noun=c, file="t") for k, c in enumerate(COLOURS)]
    (run / "personalization.json").write_bytes(Manifest(trainer="lora", base="x", base_kind="sd", weights="w",
                                                        tokens=tokens, data="mycanvas", caption="personalized").dump())
    (run / "meta.json").write_text(json.dumps({"config_hash": "h", "dataset": str(ds)}))
    models = Roster.model_validate({"models": [{"name": "base", "source": "x"},
                                               {"name": "mine", "source": "x", "train_run": str(run)},
                                               {"name": "broken", "source": "x", "train_run": str(tmp_path)}]}).models
    bench = OmegaConf.create({"use": ["mycanvas"], "promptsets": {"mycanvas": {"kind": "dataset", "path": str(ds)}}})
    prompts = P.load_dataset("mycanvas", ds, caption="personalized", novel_backgrounds=[])
    rows = leakage_rows(models, prompts, bench)
    assert [(r["model"], r["exact"], r["heldout_sets_in_training"]) for r in rows] == [("mine", 2, "cat+dog")]
    # a run trained after the split (stage=train records what split.json kept out): judged on what it saw
    (run / "meta.json").write_text(json.dumps({"config_hash": "h", "dataset": str(ds), "heldout": [["cat", "dog"]]}))
    assert [(r["model"], r["exact"], r["heldout_sets_in_training"]) for r in leakage_rows(models, prompts, bench)
            ] == [("mine", 1, "")]
    (run / "meta.json").write_text(json.dumps({"config_hash": "h", "dataset": str(ds)}))  # back to a run from before the split
    assert "bench: leakage check of broken skipped: " in capsys.readouterr().err
    metric_rows = [{"model": "mine", "prompt_key": p.key, "seed": 0, "set": "mycanvas", "category": p.category,
                    "prompt": p.text, "image": "x.png", "clip_t": 20.0 + k, "backbones": {"clip_t": "clip=c@sha256:0"}}
                   for k, p in enumerate(prompts)]
    write_reports(metric_rows, tmp_path / "bench", {}, {}, leakage=rows, resamples=50)
    page = (tmp_path / "bench" / "report" / "leakage.csv").read_text()
    assert page.splitlines()[0].endswith(",backbones") and "clip_t: clip=c@sha256:0" in page
    assert "## Leakage: evaluation prompts vs training captions" in (tmp_path / "bench" / "report" / "leaderboard.md").read_text()
