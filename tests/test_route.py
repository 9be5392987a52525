"""Prompt routing: CEMS costs and tables, a synthetic table with a known best policy, the stage's
report, and the shared CEMS measurements (figures reproduced exactly; the router on a held-out split)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gen4gen.errors import UserError
from gen4gen.route.embed import FeatureMaker, TfidfEmbedder, prompt_stats
from gen4gen.route.report import baseline_policies
from gen4gen.route.router import Router, Target, choose, evaluate, make_predictor, pick_lambda
from gen4gen.route.tables import cems_cost, load_table, model_costs
from tests.conftest import shared

COSTS = {"cheap": 1e-5, "premium": 1e-4, "bad": 5e-5}


def synthetic(n: int, seed: int):
    """Cat prompts: cheap is as good as premium. Car prompts: only premium is good. 'bad' never is."""
    rng = np.random.default_rng(seed)
    words = ["small", "happy", "old", "bright", "tiny", "sleepy", "shiny", "fast", "blue", "green"]
    rows = []
    for i in range(n):
        car = i % 2 == 1
        subject = "a red sports car on a road" if car else "a fluffy cat on a sofa"
        prompt = f"{subject}, {' '.join(rng.choice(words, 3))} style {i}"
        q = {"cheap": 4.0 if car else 5.0, "premium": 5.0, "bad": 3.0}
        rows.append((f"p{seed}_{i}", prompt, {m: v + rng.normal(0, 0.05) for m, v in q.items()}))
    return rows


def write_cems(folder: Path, rows, score: str = "nima"):
    folder.mkdir(parents=True, exist_ok=True)
    for m in COSTS:
        pd.DataFrame({"dataset_id": "SYN", "prompt_id": [r[0] for r in rows], "prompt": [r[1] for r in rows],
                      "mean_time": 0.1, f"{score}_score": [r[2][m] for r in rows]}
                     ).to_csv(folder / f"{score}_score_with_time_{m}.csv", index=False)


def test_cems_cost_formula_and_overrides():
    per_req = model_costs(["SDXL-Turbo", "SD-Turbo", "amused", "TAESD"])
    expect = np.array([0.616 * 10, 0.176 * 5, 0.489 * 4, 1.588 * 4]) * 0.0000166667
    np.testing.assert_allclose(per_req, expect, rtol=1e-12)
    assert per_req[0] * 1000 == pytest.approx(0.1027, abs=1e-4)  # SDXL-Turbo: ~$0.103 per 1,000 prompts
    assert cems_cost(1.0, 3.01) == pytest.approx(4 * 0.0000166667)  # memory billed in whole GB
    got = model_costs(["mine", "SD-Turbo"], overrides={"mine": 0.5, "sd-turbo": {"exec_time_s": 1.0}})
    np.testing.assert_allclose(got, [0.5, 1.0 * 5 * 0.0000166667])
    with pytest.raises(UserError, match="no cost known"):
        model_costs(["unknown-model"])


def test_pick_lambda_targets():
    quality = np.array([[5.0, 5.0], [4.0, 5.0], [4.0, 5.0], [5.0, 5.0]])  # model 0 cheap, 1 premium
    costs = np.array([1.0, 3.0])
    q_hat = quality + np.array([0.0, 0.1])  # a slight bias towards premium
    lam, info = pick_lambda(q_hat, quality, costs, Target.parse("floor_rel:0"))
    assert choose(q_hat, costs, lam).tolist() == [0, 1, 1, 0] and info["val_cost_per_1k"] == 2000
    lam, _ = pick_lambda(q_hat, quality, costs, Target.parse("budget:1000"))
    assert choose(q_hat, costs, lam).tolist() == [0, 0, 0, 0]
    lam, info = pick_lambda(q_hat, quality, costs, Target.parse("best"))
    assert info["val_quality"] == 5.0
    for bad in ("cheapest", "floor:", "budget:x"):
        with pytest.raises(UserError):
            Target.parse(bad)


def test_router_learns_the_known_best_policy(tmp_path):
    write_cems(tmp_path / "train", synthetic(240, 0))
    write_cems(tmp_path / "eval", synthetic(80, 1))
    train, evals = load_table(tmp_path / "train", "nima"), load_table(tmp_path / "eval", "nima")
    costs = model_costs(train.models, overrides=COSTS)
    router = Router(FeatureMaker(TfidfEmbedder(), stats=False), lambda: make_predictor("ridge", alpha=1.0), costs,
                    Target.parse("floor_rel:-0.02"), folds=4).fit(train.prompts, train.quality)
    picks = [train.models[j] for j in router.route(evals.prompts)]
    want = ["premium" if "car" in p else "cheap" for p in evals.prompts]
    assert picks == want
    q, total = evaluate(router.route(evals.prompts), evals.quality, costs)
    oracle = baseline_policies(evals.quality, costs, evals.models)["oracle"]
    assert q == pytest.approx(oracle["quality"], abs=0.05)
    assert total == pytest.approx(40 * 1e-5 + 40 * 1e-4)


def test_route_stage_writes_report_curve_and_predictions(tmp_path, cfg_factory):
    from gen4gen.stages import route

    write_cems(tmp_path / "train", synthetic(200, 0))
    write_cems(tmp_path / "eval", synthetic(60, 1))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red sports car on a road, fast blue old style 7\na fluffy cat on a sofa, sleepy tiny green style 8\n")
    cfg = cfg_factory("stage=route", f"route.train_dir={tmp_path / 'train'}", f"route.eval_dir={tmp_path / 'eval'}",
                      "route.embedding=tfidf", "route.target=floor_rel:-0.02", "route.folds=4", f"route.predict={prompts}",
                      *(f"+route.costs.{m}={c}" for m, c in COSTS.items()))
    summary = route.run(cfg)
    out = Path(summary.out_dir)
    report = json.loads((out / "route_report.json").read_text())
    pol = report["policies"]
    assert set(pol) == {"oracle", "random", "only:cheap", "only:premium", "only:bad", "cems_classifier", "router"}
    for p in pol.values():
        assert set(p) >= {"quality", "total_cost", "cost_per_request", "counts"} and sum(p["counts"].values()) == 60
        assert p["cost_per_request"] == pytest.approx(p["total_cost"] / 60)
    assert pol["only:premium"]["total_cost"] == pytest.approx(60 * 1e-4)
    assert pol["router"]["counts"] == {"cheap": 30, "premium": 30, "bad": 0}
    assert pol["router"]["quality"] > pol["only:cheap"]["quality"] + 0.4
    assert pol["router"]["total_cost"] < 0.6 * pol["only:premium"]["total_cost"]
    assert (out / "route_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    preds = [json.loads(line) for line in (out / "route_predictions.jsonl").read_text().splitlines()]
    assert [p["model"] for p in preds] == ["premium", "cheap"]


def test_bench_results_table_in_long_form(tmp_path):
    rows = [{"model": m, "prompt": p, "seed": s, "clip_score": base + s, "latency_s": 0.5}
            for m, base in (("a", 30.0), ("b", 20.0)) for p in ("x", "y") for s in (0, 1)]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    t = load_table(path, "clip")
    assert t.models == ["a", "b"] and t.prompts == ["x", "y"]
    np.testing.assert_allclose(t.quality, [[30.5, 20.5], [30.5, 20.5]])  # seeds averaged
    got = model_costs(t.models, t, mode="measured", overrides={"a": {"memory_gb": 2}, "b": {"memory_gb": 1.5}})
    np.testing.assert_allclose(got, [0.5 * 2 * 0.0000166667, 0.5 * 2 * 0.0000166667])


def test_shared_cems_figures_are_reproduced_exactly():
    folder = shared("cems")
    for score in ("nima", "clip"):
        t = load_table(folder, score)
        assert len(t) == 9000 and set(t.models) == {"SDXL-Turbo", "SD-Turbo", "amused", "TAESD"}
        costs = model_costs(t.models)
        pol = baseline_policies(t.quality, costs, t.models)
        # independent computation straight from the CSVs, joined on prompt_id
        frames = {m: pd.read_csv(folder / f"{score}_score_with_time_{m}.csv").set_index("prompt_id")[f"{score}_score"]
                  for m in t.models}
        wide = pd.DataFrame(frames)
        for m in t.models:
            assert pol[f"only:{m}"]["quality"] == pytest.approx(wide[m].mean(), rel=1e-12)
        assert pol["oracle"]["quality"] == pytest.approx(wide.max(axis=1).mean(), rel=1e-12)
        best = wide.idxmax(axis=1).value_counts()
        assert pol["oracle"]["counts"] == {m: int(best.get(m, 0)) for m in t.models}
        assert pol["only:SDXL-Turbo"]["cost_per_request"] * 1000 == pytest.approx(0.616 * 10 * 0.0166667, rel=1e-9)
    nima = load_table(folder, "nima")
    assert nima.quality[:, nima.models.index("SDXL-Turbo")].mean() == pytest.approx(5.6358507, abs=1e-6)


def test_shared_cems_router_beats_sdxl_turbo_on_a_held_out_split():
    """TF-IDF features keep this quick (MiniLM over 9,000 prompts takes minutes on 2 cores; the
    benchmark covers it). lambda is chosen by k-fold validation inside the train part only."""
    from gen4gen.stages.route import split_train_eval

    table = load_table(shared("cems"), "clip")
    costs = model_costs(table.models)
    train, held = split_train_eval(table, 0.2, seed=0)
    router = Router(FeatureMaker(TfidfEmbedder(), stats=True), lambda: make_predictor("ridge", alpha=1.0), costs,
                    Target.parse("best"), folds=3).fit(train.prompts, train.quality)
    q, total = evaluate(router.route(held.prompts), held.quality, costs)
    sdxl = baseline_policies(held.quality, costs, held.models)["only:SDXL-Turbo"]
    assert q > sdxl["quality"] and total < sdxl["total_cost"]


def test_prompt_stats_see_length_and_tag_lists():
    short, tags = "a cat", "portrait, highly detailed, 8k, trending on artstation, by Greg " + "word " * 120
    s = prompt_stats([short, tags])
    assert s.shape == (2, 19)
    assert s[1, 0] > s[0, 0] + 3  # log word count
    assert s[1, 3] > 1 and s[0, 3] == 0  # commas
    assert s[0, 6:].all() and not s[1, 6:].any()  # a 2-word prompt is in every length bin, a 129-word one in none


def test_clip_text_embeddings_route_and_are_cached(tmp_path):
    """route.embedding=clip: a tiny CLIP through from_pretrained; the second pass reads the disk cache."""
    from gen4gen.route.embed import make_embedder
    from tests.test_search import _tiny_clip

    clip = _tiny_clip(tmp_path / "clip")
    write_cems(tmp_path / "train", synthetic(40, 0))
    train = load_table(tmp_path / "train", "nima")
    emb = make_embedder("clip", clip=str(clip), device="cpu", cache_dir=tmp_path / "cache")
    router = Router(FeatureMaker(emb, lexical=True), lambda: make_predictor("ensemble", k=5),
                    model_costs(train.models, overrides=COSTS), Target.parse("best"), folds=2).fit(train.prompts, train.quality)
    assert router.x_train.text.shape == (40, 16) and router.route(train.prompts[:3]).shape == (3,)
    # the TF-IDF view rides along (rows kept aligned when sliced) and is the ensemble's third member
    x = router.features.transform(train.prompts[:5])
    assert x.lexical.shape[0] == 5 and (x[[1, 3]].lexical != x.lexical[[1, 3]]).nnz == 0
    parts = router.predictor.parts
    assert [(type(p).__name__, getattr(p, "view", None)) for p in parts] == [
        ("RidgeQuality", "full"), ("KnnQuality", None), ("RidgeQuality", "lexical")]
    np.testing.assert_allclose(router.predictor.predict(x), np.mean([p.predict(x) for p in parts], axis=0))
    assert FeatureMaker(TfidfEmbedder(), lexical=True).lexical is None  # no second copy of the same view
    shards = list((tmp_path / "cache" / "text_embeddings").rglob("*.npz"))
    assert shards
    again = make_embedder("clip", clip=str(clip), device="cpu", cache_dir=tmp_path / "cache")
    again.encoder.encoder = None  # a cache miss would now fail: every vector must come from disk
    np.testing.assert_allclose(again.transform(train.prompts), router.x_train.text, rtol=1e-6)


def test_bench_run_folder_metrics_with_cost_column(tmp_path):
    rows = [{"model": m, "prompt_id": p, "prompt": f"prompt {p}", "seed": 0, "clip_t": q, "latency_s": 0.2,
             "cost_usd": c} for m, q, c in (("a", 0.3, 2e-5), ("b", 0.25, 1e-5)) for p in ("x", "y", "z")]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "results.jsonl").write_text("")
    t = load_table(tmp_path, "clip_t")
    assert t.models == ["a", "b"] and t.quality.shape == (3, 2)
    np.testing.assert_allclose(model_costs(t.models, t, mode="measured"), [2e-5, 1e-5])


def test_bad_rows_are_left_out_with_a_message_and_bad_files_are_named(tmp_path, caplog):
    rows = synthetic(12, seed=3)
    write_cems(tmp_path, rows)
    cheap = tmp_path / "nima_score_with_time_cheap.csv"
    df = pd.read_csv(cheap, dtype=str)
    df.loc[2, "nima_score"] = "n/a"  # non-numeric
    df.loc[5, "nima_score"] = None  # missing
    df = pd.concat([df, df.iloc[[0]].assign(nima_score="9.9")])  # a repeated prompt_id: the first row wins
    df.drop(index=7).to_csv(cheap, index=False)  # one prompt missing from this model's table
    with caplog.at_level("WARNING"):
        t = load_table(tmp_path, "nima")
    kept = [r for i, r in enumerate(rows) if i not in (2, 5, 7)]
    assert t.prompt_ids == [r[0] for r in kept]
    np.testing.assert_allclose(t.quality[:, t.models.index("cheap")], [r[2]["cheap"] for r in kept])
    text = caplog.text
    assert "1 repeated prompt_id" in text and rows[0][0] in text
    assert "not in every nima table" in text and rows[7][0] in text
    assert "2 prompts have a missing or non-numeric nima score" in text and rows[2][0] in text and rows[5][0] in text

    (tmp_path / "nima_score_with_time_zz.csv").write_bytes(b"garbage\x00\xff\xfe\n\x00")
    with pytest.raises(UserError, match="nima_score_with_time_zz.csv: not a readable CSV table"):
        load_table(tmp_path, "nima")


def test_prompts_files_skip_unreadable_lines(tmp_path, caplog):
    from gen4gen.route.tables import read_prompts

    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a cat"}\n\n{broken\n["not", "a dict"]\n{"text": "a dog"}\n{"prompt": 3}\n"a fox"\n')
    with caplog.at_level("WARNING"):
        assert read_prompts(path) == ["a cat", "a dog", "a fox"]
    assert "3 lines without a prompt string" in caplog.text and "lines 3, 4, 6" in caplog.text
    txt = tmp_path / "p.txt"
    txt.write_bytes(b"caf\xe9 au lait\n\n  a robot  \n")
    assert read_prompts(txt) == ["caf\ufffd au lait", "a robot"]
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with pytest.raises(UserError, match="e.csv: not a readable CSV"):
        read_prompts(empty)


def test_eval_table_listing_models_in_another_order(tmp_path, cfg_factory):
    from gen4gen.stages import route

    write_cems(tmp_path / "train", synthetic(200, 0))
    rows = synthetic(40, 1)
    order = ["premium", "bad", "cheap"]  # the CEMS folder sorts its files: bad, cheap, premium
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps({"model": m, "prompt_id": pid, "prompt": p, "nima": q[m]}) + "\n"
                                                 for m in order for pid, p, q in rows))
    cfg = cfg_factory("stage=route", f"route.train_dir={tmp_path / 'train'}", f"route.eval_dir={tmp_path / 'eval.jsonl'}",
                      "route.embedding=tfidf", "route.target=floor_rel:-0.02", "route.folds=4",
                      *(f"+route.costs.{m}={c}" for m, c in COSTS.items()))
    report = json.loads((Path(route.run(cfg).out_dir) / "route_report.json").read_text())
    assert report["models"] == ["bad", "cheap", "premium"]
    assert report["cost_per_request"] == {m: COSTS[m] for m in report["models"]}
    pol = report["policies"]
    assert pol["only:premium"]["quality"] == pytest.approx(np.mean([q["premium"] for _, _, q in rows]))
    assert pol["router"]["counts"] == {"cheap": 20, "premium": 20, "bad": 0}
