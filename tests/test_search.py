"""Model search: moments and every query type on synthetic Gaussians with known answers, the
embedded EfficientNet-Lite0 features, a tiny CLIP through from_pretrained, and the stage end to end."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image
from scipy import linalg, stats

from gen4gen.encoders import unit
from gen4gen.errors import UserError
from gen4gen.search.index import IndexInfo, IndexWriter, ModelIndex, MomentSpec, gaussian_moments, write_info
from gen4gen.search.ivf import build_ivf, has_ivf, ivf_recall, ivf_topk
from gen4gen.search.pq import PQ_MIN_MODELS, build_pq, has_pq, pq_recall, pq_topk
from gen4gen.search.recall import MIN_RECALL
from gen4gen.search.scores import (combine, first_moment, first_moment_topk, frechet, log_density, monte_carlo, ranked,
                                   second_moment)


def make_index(root, feats: dict[str, np.ndarray], kind: str, rank: int = 3, eps: float = 0.05, raw: bool = True):
    spec = MomentSpec(kind, rank=rank, eps=eps, dtype="float32")
    d = next(iter(feats.values())).shape[1]
    w = IndexWriter(root, "image", len(feats), d, spec, raw_rows=sum(map(len, feats.values())) if raw else 0)
    for i, x in enumerate(feats.values()):
        w.add(i, x)
    w.close()
    write_info(root, IndexInfo(names=list(feats), spaces={"image": {"dim": d, "encoder": "synthetic", "moment": kind,
                                                                    "rank": rank, "raw": raw, "normalised": False}}))
    return ModelIndex(root)


def dense_sigma(space, row) -> np.ndarray:
    if space.kind == "diag":
        return np.diag(np.asarray(space.var[row], np.float64))
    if space.kind == "full":
        return np.asarray(space.cov[row], np.float64)
    u, lam = np.asarray(space.U[row], np.float64), np.asarray(space.lam[row], np.float64)
    return (u * lam) @ u.T + float(space.noise[row]) * np.eye(space.dim)


@pytest.fixture(scope="module")
def gaussians():
    """Six models in 6-d: distinct directions, and model 'b_twin' drawn from nearly b's Gaussian."""
    rng = np.random.default_rng(0)
    d, n = 6, 400
    means = {"a": np.eye(d)[0] * 4, "b": np.eye(d)[1] * 4, "b_twin": np.eye(d)[1] * 4 + 0.05,
             "c": np.eye(d)[2] * 4, "wide": np.eye(d)[3] * 4, "narrow": np.eye(d)[3] * 4}
    scales = {"wide": 2.0, "narrow": 0.2}
    feats = {}
    for name, mu in means.items():
        a = rng.normal(size=(d, d)) * 0.3 + np.eye(d) * scales.get(name, 0.5)
        feats[name] = (rng.normal(size=(n, d)) @ a.T + mu).astype(np.float32)
    return feats


@pytest.mark.parametrize("kind", ["diag", "full", "lowrank"])
def test_every_query_type_finds_the_known_model(tmp_path, gaussians, kind):
    index = make_index(tmp_path / kind, gaussians, kind)
    space = index.spaces["image"]
    names = index.names
    # text, first moment: a direction finds the model whose mean points there
    q = np.eye(6)[2]
    assert ranked(index, first_moment(space, q), 1)[0]["model"] == "c"
    rows, scores = first_moment_topk(space.mu_hat, q[None], k=3, chunk=2)
    brute = np.argsort(-np.asarray(space.mu_hat) @ q)[:3]
    assert rows[0].tolist() == brute.tolist()
    # text, second moment: same mean direction, the wider model wins by the tau^2 q^T Sigma q term
    sm = second_moment(space, np.eye(6)[3], tau=4.0)
    assert sm[names.index("wide")] > sm[names.index("narrow")]
    for row in range(len(names)):
        expect = 4.0 * float(space.mu[row] @ np.eye(6)[3]) + 8.0 * dense_sigma(space, row)[3, 3]
        assert sm[row] == pytest.approx(expect, rel=1e-5)
    # image: the exact Gaussian log-density from the cached factorisations
    x = gaussians["c"][0]
    ld = log_density(space, x)
    assert names[int(np.argmax(ld))] == "c"
    for row in range(len(names)):
        ref = stats.multivariate_normal(np.asarray(space.mu[row], np.float64), dense_sigma(space, row)).logpdf(x)
        assert ld[row] == pytest.approx(ref, rel=1e-4)
    # model: Frechet distance, exact against scipy's sqrtm; the twin is nearest
    fr = frechet(space, names.index("b"), rerank=6)
    assert ranked(index, fr, 2)[1]["model"] == "b_twin"
    s0 = dense_sigma(space, names.index("b"))
    for row in range(len(names)):
        s1 = dense_sigma(space, row)
        covmean = linalg.sqrtm(s0 @ s1).real
        ref = float(((space.mu[names.index("b")] - space.mu[row]) ** 2).sum() + np.trace(s0 + s1 - 2 * covmean))
        assert -fr[row] == pytest.approx(ref, rel=1e-3, abs=1e-3)
    # Monte-Carlo baseline agrees with the ranking of the moment score it approximates
    mc = monte_carlo(space, np.eye(6)[2], tau=2.0)
    assert names[int(np.argmax(mc))] == "c"
    # multimodal: a text query for c and an image of a: both lead the combined ranking, b trails
    comb = combine([(first_moment(space, np.eye(6)[2]), 1.0), (log_density(space, gaussians["a"][0]), 1.0)])
    top2 = {h["model"] for h in ranked(index, comb, 2)}
    assert top2 == {"a", "c"}


def test_lowrank_moments_keep_the_total_variance():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 10)) @ rng.normal(size=(10, 10))
    m = gaussian_moments(x, MomentSpec("lowrank", rank=4, eps=0.0))
    sigma = (m["U"] * m["lam"]) @ m["U"].T + m["noise"] * np.eye(10)
    assert np.trace(sigma) == pytest.approx(np.trace(np.cov(x.T, bias=True)), rel=1e-6)
    assert m["logdet"] == pytest.approx(np.linalg.slogdet(sigma)[1], rel=1e-6)
    # fewer samples than dimensions: the Gram-matrix path gives the same top eigenvectors
    few = gaussian_moments(x[:6], MomentSpec("lowrank", rank=3, eps=0.0))
    cov = np.cov(x[:6].T, bias=True)
    top = np.linalg.eigh(cov)[1][:, ::-1][:, :3]
    assert np.abs(np.abs(few["U"].T @ top).diagonal()).min() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("backend", ["faiss", "numpy"])
def test_ivf_matches_exact_search_when_probing_every_list(tmp_path, backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(20, 16))
    mu = centres[rng.integers(0, 20, 3000)] + 0.1 * rng.normal(size=(3000, 16))
    spec = MomentSpec("diag", dtype="float32")
    w = IndexWriter(tmp_path, "image", len(mu), 16, spec)
    w.set_rows(slice(0, len(mu)), mu=mu, var=np.ones_like(mu))
    w.close()
    write_info(tmp_path, IndexInfo(names=[f"m{i}" for i in range(len(mu))],
                                   spaces={"image": {"dim": 16, "encoder": "synthetic", "moment": "diag", "rank": 0, "raw": False}}))
    space = ModelIndex(tmp_path).spaces["image"]
    assert build_ivf(space, n_lists=25, seed=0, backend=backend) == backend
    order = np.load(tmp_path / "image_ivf_order.npy")
    assert sorted(order.tolist()) == list(range(len(mu)))  # every model in exactly one list
    q = unit(np.ravel(mu[123] + 0.01), np.float32)
    exact_rows, exact = first_moment_topk(space.mu_hat, q[None], k=10)
    rows, scores = ivf_topk(space, q, k=10, nprobe=25)
    assert rows.tolist() == exact_rows[0].tolist()
    np.testing.assert_allclose(scores, exact[0], rtol=1e-6)
    rows4, _ = ivf_topk(space, q, k=10, nprobe=4, min_recall=0)  # a few lists hold a clustered query's neighbours
    assert len(set(rows4.tolist()) & set(exact_rows[0].tolist())) >= 8


def _synthetic_space(root, mu):
    w = IndexWriter(root, "image", len(mu), mu.shape[1], MomentSpec("diag"))
    w.set_rows(slice(0, len(mu)), mu=mu, var=np.ones_like(mu))
    w.close()
    write_info(root, IndexInfo(names=[f"m{i}" for i in range(len(mu))], spaces={
        "image": {"dim": mu.shape[1], "encoder": "synthetic", "moment": "diag", "rank": 0, "raw": False}}))
    return ModelIndex(root).spaces["image"]


def test_an_ivf_that_misses_neighbours_is_not_used(tmp_path, caplog):
    """Unclustered means (one Gaussian): a few lists hold few of a query's true neighbours, so the IVF's measured
    recall is low and the search is exact; on clustered means the IVF is used."""
    rng = np.random.default_rng(4)
    space = _synthetic_space(tmp_path / "gauss", rng.normal(size=(4000, 64)))
    build_ivf(space, n_lists=64, backend="numpy", pq=False)  # no compressed scan to turn to (as without faiss)
    assert not has_pq(space)
    assert ivf_recall(space, 2) < 0.5
    assert json.loads((tmp_path / "gauss/image_ivf_recall.json").read_text()) == {"2": ivf_recall(space, 2)}
    q = unit(np.ravel(space.mu_hat[5] + 0.05 * rng.normal(size=64)), np.float32)
    exact_rows, exact = first_moment_topk(space.mu_hat, q[None], k=10)
    with caplog.at_level("WARNING", logger="gen4gen.search.ivf"):
        for _ in range(2):
            rows, scores = ivf_topk(space, q, k=10, nprobe=2)
            assert rows.tolist() == exact_rows[0].tolist() and np.allclose(scores, exact[0])
    assert len([r for r in caplog.records if "searching exactly" in r.getMessage()]) == 1  # said once

    centres = rng.normal(size=(16, 64))
    clustered = _synthetic_space(tmp_path / "clustered", centres[rng.integers(0, 16, 4000)]
                                 + 0.1 * rng.normal(size=(4000, 64)))
    build_ivf(clustered, n_lists=64, backend="numpy")  # lists that pass are written, no codes
    assert (tmp_path / "clustered/image_ivf_vecs.npy").exists() and not has_pq(clustered)
    assert ivf_recall(clustered, 8) >= MIN_RECALL
    rows, _ = ivf_topk(clustered, unit(np.ravel(clustered.mu_hat[5]), np.float32), k=10, nprobe=8)
    assert 5 in rows.tolist()
    build_ivf(clustered, n_lists=32, backend="numpy")  # a rebuilt file is measured afresh
    assert not (tmp_path / "clustered/image_ivf_recall.json").exists()


def test_compressed_scan_serves_unclustered_means(tmp_path, caplog):
    """Gaussian means: the IVF misses neighbours, so the build writes PQ codes instead of lists; the PQ scan + exact
    rescoring finds the exact top-10 and is used when its measured recall passes; with too few candidates it
    fails the same check and the search is exact."""
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(4)
    mu = rng.normal(size=(4000, 64))
    space = _synthetic_space(tmp_path, mu)
    build_ivf(space, n_lists=64, backend="numpy", pq=False)
    lists_recall = ivf_recall(space, 8)  # measured through the written lists
    assert lists_recall < MIN_RECALL
    build_ivf(space, n_lists=64, backend="numpy")  # measures the lists before writing them: codes instead
    assert faiss.read_index(str(tmp_path / "image_pq.faiss")).ntotal == 4000 and has_ivf(space)
    assert not (tmp_path / "image_ivf_centroids.npy").exists() and not (tmp_path / "image_ivf_vecs.npy").exists()
    assert ivf_recall(space, 8) == lists_recall and ivf_recall(space, 2) == 0.0  # 2: not measured, no lists
    assert pq_recall(space, 400) >= MIN_RECALL > pq_recall(space, 10)
    assert set(json.loads((tmp_path / "image_pq_recall.json").read_text())) == {"400", "10"}
    qs = np.stack([unit(mu[r] + 0.05 * rng.normal(size=64), np.float32) for r in (5, 17, 123, 2500, 3999)])
    exact_rows, exact = first_moment_topk(space.mu_hat, qs, k=10)
    batch_rows, batch = pq_topk(space, qs, k=10, candidates=400)
    assert batch_rows.tolist() == exact_rows.tolist()
    np.testing.assert_allclose(batch, exact, rtol=1e-6)
    with caplog.at_level("INFO", logger="gen4gen.search.ivf"):
        for q, e in zip(qs, exact_rows):
            assert ivf_topk(space, q, k=10, nprobe=8, candidates=400)[0].tolist() == e.tolist()
            assert ivf_topk(space, q, k=10, nprobe=8, candidates=10)[0].tolist() == e.tolist()  # exact
    said = [r.getMessage() for r in caplog.records]
    assert len([m for m in said if "rescoring 400 candidates finds" in m and "using it" in m]) == 1  # said once
    assert len([m for m in said if "at 10 candidates: searching exactly" in m]) == 1

    # the codes and the measured recall round-trip through a reopened index; a rebuild drops both
    reopened = ModelIndex(tmp_path).spaces["image"]
    assert pq_topk(reopened, qs, k=10, candidates=400)[0].tolist() == exact_rows.tolist()
    assert pq_recall(reopened, 400) == pq_recall(space, 400)
    build_ivf(reopened, n_lists=64, backend="numpy", pq=False)
    assert not has_pq(reopened) and not (tmp_path / "image_pq_recall.json").exists()
    few = _synthetic_space(tmp_path / "few", mu[:PQ_MIN_MODELS - 1])  # too few models to train codes on
    build_ivf(few, n_lists=8, backend="numpy", nprobe=1)
    assert not has_pq(few) and (tmp_path / "few/image_ivf_vecs.npy").exists()  # lists, exact where they fail


def test_an_index_whose_lists_predate_the_codes_gets_them_on_its_next_search(tmp_path, capsys):
    """Lists built without codes (before they existed) on means without clusters: the searcher adds the codes once
    and answers through them, as a new build would."""
    from omegaconf import OmegaConf

    from gen4gen.search.searcher import Searcher

    pytest.importorskip("faiss")
    rng = np.random.default_rng(4)
    mu = rng.normal(size=(4000, 64))
    space = _synthetic_space(tmp_path, mu)
    build_ivf(space, n_lists=64, backend="numpy", pq=False)  # an index from before the codes
    assert not has_pq(space) and ivf_recall(space, 8) < MIN_RECALL
    sc = OmegaConf.create({"ivf": {"min_models": 1000, "nprobe": 8, "candidates": 400}, "top_k": 10})
    searcher = Searcher(ModelIndex(tmp_path), sc, "cpu", str(tmp_path / "cache"), None)
    q = unit(mu[17] + 0.05 * rng.normal(size=64), np.float32)
    scores = searcher._first_moment(searcher.image_space, q)
    exact_rows, exact = first_moment_topk(space.mu_hat, q[None], k=10)
    assert has_pq(space) and (tmp_path / "image_ivf_vecs.npy").exists()  # codes added, lists kept
    assert np.argsort(-scores)[:10].tolist() == exact_rows[0].tolist() and np.isfinite(scores).sum() == 10
    assert capsys.readouterr().err.count("building PQ codes") == 1  # the console writes to stderr
    searcher._first_moment(searcher.image_space, q)
    assert "building" not in capsys.readouterr().err  # once


@pytest.mark.parametrize("damage", ["truncated codes", "garbled recall", "truncated lists", "garbled lists header"])
def test_unreadable_fast_search_files_are_dropped_and_the_query_is_exact(tmp_path, caplog, damage):
    """The inverted file and the codes are derived from mu_hat: a damaged one costs one warning and an exact answer,
    and is removed so the next search rebuilds it; a damaged mu_hat itself is one line naming the file."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(4)
    if "codes" in damage or "recall" in damage:  # Gaussian means: the build writes codes
        mu = rng.normal(size=(4000, 64))
    else:
        mu = rng.normal(size=(16, 64))[rng.integers(0, 16, 4000)] + 0.1 * rng.normal(size=(4000, 64))
    space = _synthetic_space(tmp_path, mu)
    build_ivf(space, n_lists=64, backend="numpy")
    q = unit(mu[17] + 0.05 * rng.normal(size=64), np.float32)
    ivf_topk(space, q, k=10, nprobe=8, candidates=400)  # measured and opened once, then damaged on disk
    reopened = ModelIndex(tmp_path).spaces["image"]
    target = {"truncated codes": "image_pq.faiss", "garbled recall": "image_pq_recall.json",
              "truncated lists": "image_ivf_vecs.npy", "garbled lists header": "image_ivf_offsets.npy"}[damage]
    path = tmp_path / target
    data = path.read_bytes()
    path.write_bytes({"truncated codes": data[:len(data) // 3], "garbled recall": b'{"400": [0.99]}',
                      "truncated lists": data[:len(data) // 2], "garbled lists header": b"\x93NUMPY garbage"}[damage])
    exact_rows, exact = first_moment_topk(reopened.mu_hat, q[None], k=10)
    with caplog.at_level("WARNING", logger="gen4gen.search.ivf"):
        for _ in range(2):
            rows, scores = ivf_topk(reopened, q, k=10, nprobe=8, candidates=400)
            assert rows.tolist() == exact_rows[0].tolist() and np.allclose(scores, exact[0])
    said = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(said) == 1 and "searching exactly; the next search rebuilds them" in said[0] and "\n" not in said[0]
    assert not has_ivf(reopened) and not path.exists()  # gone: the searcher builds them again

    (tmp_path / "image_mu_hat.npy").write_bytes(b"\x93NUMPY")
    with pytest.raises(UserError, match=r"image_mu_hat.npy is unreadable .*; rebuild the index"):
        first_moment_topk(ModelIndex(tmp_path).spaces["image"].mu_hat, q[None])


def test_an_index_whose_files_disagree_is_one_line(tmp_path):
    """names.txt, index.json and the arrays must describe the same models: else scores would name wrong models."""
    _synthetic_space(tmp_path, np.random.default_rng(1).normal(size=(50, 8)))
    names = tmp_path / "names.txt"
    names.write_text("\n".join(names.read_text().splitlines()[:40]) + "\n")
    with pytest.raises(UserError, match=r"image_mu_hat.npy holds 50 x 8 values, index.json and names.txt say "
                                         r"40 x 8; rebuild the index"):
        ModelIndex(tmp_path)
    info = json.loads((tmp_path / "index.json").read_text())
    (tmp_path / "index.json").write_text(json.dumps({**info, "spaces": {"image": {"dim": 8}}}))
    with pytest.raises(UserError, match=r"index.json has no usable spaces \(KeyError\('moment'\)\)"):
        ModelIndex(tmp_path)


def test_ivf_falls_back_to_numpy_without_faiss(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss raises ImportError
    mu = np.random.default_rng(3).normal(size=(400, 8))
    w = IndexWriter(tmp_path, "image", len(mu), 8, MomentSpec("diag"))
    w.set_rows(slice(0, len(mu)), mu=mu, var=np.ones_like(mu))
    w.close()
    write_info(tmp_path, IndexInfo(names=[f"m{i}" for i in range(len(mu))],
                                   spaces={"image": {"dim": 8, "encoder": "synthetic", "moment": "diag", "rank": 0, "raw": False}}))
    space = ModelIndex(tmp_path).spaces["image"]
    assert build_ivf(space, n_lists=10) == "numpy"
    assert not has_pq(space) and has_ivf(space) and not build_pq(space)  # no codes without faiss
    rows, _ = ivf_topk(space, unit(np.ravel(mu[7]), np.float32), k=5, nprobe=10)
    assert rows[0] == 7
    q = unit(np.ravel(mu[7] + 0.3), np.float32)
    assert ivf_recall(space, 1) < MIN_RECALL  # one list of ten: exact search, no compressed scan to try
    assert ivf_topk(space, q, k=5, nprobe=1)[0].tolist() == first_moment_topk(space.mu_hat, q[None], 5)[0][0].tolist()


def _samples(root, colours: dict[str, tuple], n: int = 3, caption: str = "{name} picture"):
    rng = np.random.default_rng(0)
    for name, colour in colours.items():
        d = root / name
        d.mkdir(parents=True)
        for i in range(n):
            a = np.clip(np.array(colour)[None, None] + rng.normal(0, 25, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(d / f"{i}.png")
            (d / f"{i}.txt").write_text(caption.format(name=name, i=i))


def test_efficientnet_features_shape_and_determinism():
    from gen4gen.search.features import EfficientNetLite0

    enc = EfficientNetLite0(device="cpu")
    rng = np.random.default_rng(0)
    ims = [Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)), Image.new("RGB", (50, 50), (200, 30, 30))]
    a, b = enc.encode_images(ims), enc.encode_images(ims[::-1])
    assert a.shape == (2, 1280) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_allclose(a, b[::-1], rtol=1e-5, atol=1e-6)  # no batch effects, same numbers each call
    assert np.abs(a[0] - a[1]).max() > 0.1


def test_search_stage_builds_reuses_and_answers(tmp_path, cfg_factory):
    from gen4gen.stages import search

    root = tmp_path / "samples"
    _samples(root, {"crimson": (220, 30, 30), "azure": (30, 30, 220), "forest": (30, 190, 40)},
             caption="a {name} coloured square, sample {i}")
    query = tmp_path / "q.png"
    noise = np.random.default_rng(7).normal(0, 25, (40, 40, 3))  # a new image in crimson's style
    Image.fromarray(np.clip(np.array([220, 30, 30]) + noise, 0, 255).astype(np.uint8)).save(query)
    (root / "azure" / "broken.png").write_bytes(b"not a png")  # a bad sample is skipped with a message
    cfg = cfg_factory(f"search.index={root}", "stage=search", "search.query.text='a crimson coloured square'",
                      f"search.query.image={query}", "search.query.model=azure", "device=cpu")
    summary = search.run(cfg)
    assert summary.notes["index"].startswith("built")
    out = json.loads((__import__("pathlib").Path(summary.out_dir) / "search_results.json").read_text())
    assert out["text_fallback"] is True and "MiniLM" in out["notes"][0]
    res = out["results"]
    assert res["text:first_moment"][0]["model"] == "crimson"
    assert res["image:log_density"][0]["model"] == "crimson"
    assert res["model:frechet"][0]["model"] == "azure" and res["model:frechet"][0]["score"] == pytest.approx(0, abs=1e-6)
    assert {"text:second_moment", "text:monte_carlo", "image:monte_carlo", "multimodal"} <= set(res)
    assert len(res["multimodal"]) == 3
    # unchanged samples: the index is reused; a new sample makes it stale
    assert search.run(cfg_factory(f"search.index={root}", "device=cpu")).notes["index"].startswith("reused")
    Image.new("RGB", (40, 40), (0, 0, 0)).save(root / "forest" / "new.png")
    assert search.run(cfg_factory(f"search.index={root}", "device=cpu")).notes["index"].startswith("built")


def _tiny_clip(path):
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    path.mkdir()
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {}
    for tok in ["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in letters), "re", "red</w>"]:
        vocab.setdefault(tok, len(vocab))
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\nr e\nre d</w>\n")
    tok = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    cfg = CLIPConfig(text_config=dict(vocab_size=len(vocab), max_position_embeddings=32, bos_token_id=0,
                                      eos_token_id=1, pad_token_id=1, **small),
                     vision_config=dict(image_size=32, patch_size=8, **small), projection_dim=16)
    import torch

    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def test_clip_path_through_from_pretrained(tmp_path, cfg_factory):
    from gen4gen.encoders import Clip as ClipEncoder
    from gen4gen.stages import search

    clip = _tiny_clip(tmp_path / "clip")
    enc = ClipEncoder(str(clip), device="cpu")
    t = enc.encode_texts(["red", "a red cat"])
    im = enc.encode_images([Image.new("RGB", (48, 40), (200, 0, 0))])
    assert t.shape == (2, 16) and im.shape == (1, 16)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(enc.encode_texts(["red"]), t[:1], rtol=1e-5, atol=1e-6)

    root = tmp_path / "samples"
    _samples(root, {"crimson": (220, 30, 30), "azure": (30, 30, 220)})
    cfg = cfg_factory(f"search.index={root}", f"search.clip={clip}", "search.query.text=red", "search.moment=lowrank",
                      "search.rank=2", "device=cpu")
    summary = search.run(cfg)
    out = json.loads((__import__("pathlib").Path(summary.out_dir) / "search_results.json").read_text())
    assert out["text_fallback"] is False and out["notes"] == []
    # scored in CLIP space: the reported cosine is the query against each model's mean image feature
    index = ModelIndex(root / ".gen4gen_index")
    assert index.spaces["image"].encoder == enc.name
    q = enc.encode_texts(["red"])[0]
    mu_hat = np.asarray(index.spaces["image"].mu_hat, np.float32)
    by_model = {h["model"]: h["score"] for h in out["results"]["text:first_moment"]}
    for name, row in zip(index.names, mu_hat):
        assert by_model[name] == pytest.approx(float(row @ q), abs=2e-3)  # mu_hat stored in float16
    assert math.isfinite(out["results"]["text:second_moment"][0]["score"])


def test_bench_run_folder_layout_and_captions(tmp_path):
    """bench writes images/<model>/<set>/<prompt id>_s<seed>.png with results.jsonl in the run folder."""
    from gen4gen.search.build import captions_for, discover, samples_root

    run = tmp_path / "run"
    for model in ("sd-turbo", "amused"):
        d = run / "images" / model / "drawbench"
        d.mkdir(parents=True)
        for pid in ("p1", "p2"):
            Image.new("RGB", (8, 8)).save(d / f"{pid}_s0.png")
    (run / "images" / "amused" / "drawbench" / "p2_s0.json").write_text(json.dumps({"prompt": "from the sidecar"}))
    (run / "results.jsonl").write_text("".join(json.dumps({"model": m, "image": f"images/{m}/drawbench/{p}_s0.png",
                                                           "prompt": f"{m} prompt {p}"}) + "\n"
                                               for m in ("sd-turbo", "amused") for p in ("p1", "p2")))
    root = samples_root(run)
    assert root == run / "images"
    models = discover(root)
    assert sorted(models) == ["amused", "sd-turbo"] and len(models["amused"]) == 2
    caps = captions_for(root, root / "amused", models["amused"])
    assert caps == ["amused prompt p1", "from the sidecar"]


def test_discover_names_model_folders_without_images(tmp_path, capsys):
    from gen4gen.search.build import discover

    (tmp_path / "empty").mkdir()
    (tmp_path / "notes_only").mkdir()
    (tmp_path / "notes_only" / "readme.txt").write_text("no images here")
    (tmp_path / "weird name (v2)" / "nested").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "weird name (v2)" / "nested" / "a.PNG")
    (tmp_path / ".gen4gen_index").mkdir()  # the index itself is not a model
    assert list(discover(tmp_path)) == ["weird name (v2)"]
    out = capsys.readouterr().err
    assert "skipped" in out and "empty" in out and "notes_only" in out and ".gen4gen_index" not in out
