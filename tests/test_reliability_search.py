"""Damaged model index arrays repair themselves (issue 22, class 6), and an exported dataset is searched as what it
is (issue 28). Generated cases: every array file of an index (both spaces, raw features on) damaged every way
(truncated, garbage, header only, empty, pickled, another shape, another dtype, removed): one warning, the index
rebuilt from the samples, and the answer equal to the undamaged index's."""
from __future__ import annotations

import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gen4gen.search.scores import log_density, ranked
from gen4gen.search.index import ModelIndex, MomentSpec
from gen4gen.search.repair import damage


class MeanColour:
    """A tiny deterministic image encoder (mean and spread of each channel): builds in milliseconds."""
    name, dim, normalised = "mean-colour", 6, False

    def encode_images(self, images):
        rows = [np.concatenate([np.asarray(im, np.float32).reshape(-1, 3).mean(0) / 255,
                                np.asarray(im, np.float32).reshape(-1, 3).std(0) / 255]) for im in images]
        return np.asarray(rows, np.float32)


class WordCount:
    """A tiny text encoder: letter counts of six letters."""
    name, dim, normalised = "word-count", 6, False

    def encode_texts(self, texts):
        return np.asarray([[t.count(c) for c in "aeiors"] for t in texts], np.float32)


COLOURS = {"crimson": (220, 30, 30), "azure": (30, 30, 220), "forest": (30, 190, 40)}
SPEC = MomentSpec("diag", eps=0.1)


def samples(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(4):
            a = np.clip(np.array(colour)[None, None] + rng.normal(0, 25, (24, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(root / name / f"{i}.png")
            (root / name / f"{i}.txt").write_text(f"a {name} square number {i}")
    return root


def build(root: Path, index_dir: Path) -> tuple[Path, bool]:
    """The stage's index through the runner, with the tiny encoders: the folder and whether it was built now."""
    from gen4gen.stages.search import index

    path, summary = index(root, index_dir, MeanColour, WordCount, SPEC, True, {"enc": "mean-colour"})
    return path, summary.done > 0


def answer(index_dir: Path) -> list:
    space = ModelIndex(index_dir).spaces["image"]
    q = MeanColour().encode_images([Image.new("RGB", (8, 8), (200, 40, 40))])[0]
    return [h["model"] for h in ranked(ModelIndex(index_dir), log_density(space, q), 3)]


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def damages(path: Path) -> dict:
    a = np.load(path)
    data = path.read_bytes()
    return {"truncated": data[: len(data) // 2], "garbage": bytes(range(256)) * 4, "header only": data[:10],
            "empty": b"", "pickled": pickle.dumps(a), "object array": _npy(np.array([object()] * len(a), object)),
            "one row more": _npy(np.concatenate([a, a[:1]])), "another dtype": _npy(a.astype("U3")),
            "a scalar": _npy(np.float32(1)), "removed": None}


ARRAYS = ["image_mu", "image_mu_hat", "image_count", "image_logdet", "image_var", "image_raw", "image_offsets",
          "caption_mu", "caption_var", "caption_offsets"]
KINDS = ["truncated", "garbage", "header only", "empty", "pickled", "object array", "one row more", "another dtype",
         "a scalar", "removed"]
CASES = [(a, k) for a in ARRAYS for k in KINDS]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = samples(tmp_path_factory.mktemp("search_repair") / "samples")
    index_dir = root.parent / "index"
    build(root, index_dir)
    return root, index_dir, answer(index_dir)


def test_the_cases_cover_every_array_the_build_writes(built):
    _, index_dir, _ = built
    assert {p.stem for p in index_dir.glob("*.npy")} == set(ARRAYS) | {"caption_mu_hat", "caption_count",
                                                                        "caption_logdet", "caption_raw"}
    assert set(damages(index_dir / "image_mu.npy")) == set(KINDS)


@pytest.mark.parametrize("array,kind", CASES, ids=[f"{a}:{k}" for a, k in CASES])
def test_a_damaged_array_is_one_warning_a_rebuild_and_the_same_answer(built, tmp_path, capsys, array, kind):
    root, good, want = built
    index_dir = tmp_path / "index"
    shutil.copytree(good, index_dir)
    path = index_dir / f"{array}.npy"
    bad = damages(path)[kind]
    path.unlink()
    if bad is not None:
        path.write_bytes(bad)
    assert damage(index_dir)
    path_out, rebuilt = build(root, index_dir)
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if "is damaged (" in line]
    assert rebuilt and len(warned) == 1 and f"{array}.npy" in warned[0]
    assert damage(index_dir) is None and answer(index_dir) == want


@pytest.mark.parametrize("kind", ["truncated", "one row more", "removed"])
def test_an_index_given_directly_is_rebuilt_from_the_samples_it_was_built_from(built, tmp_path, capsys, kind):
    root, good, want = built
    index_dir = tmp_path / "index"
    shutil.copytree(good, index_dir)
    path = index_dir / "image_mu_hat.npy"
    bad = damages(path)[kind]
    path.unlink()
    if bad is not None:
        path.write_bytes(bad)
    assert build(index_dir, tmp_path / "unused") == (index_dir, True)
    assert "damaged" in capsys.readouterr().err and answer(index_dir) == want


def test_without_its_samples_a_damaged_index_is_one_line(built, tmp_path):
    from gen4gen.errors import UserError

    root, good, _ = built
    copy = tmp_path / "samples"
    shutil.copytree(root, copy)
    index_dir = tmp_path / "index"
    build(copy, index_dir)
    shutil.rmtree(copy)
    (index_dir / "image_offsets.npy").write_bytes(b"garbage")
    with pytest.raises(UserError, match="image_offsets.npy is unreadable.*samples folder is not known or gone") as e:
        build(index_dir, tmp_path / "unused")
    assert "\n" not in str(e.value)


def test_a_rebuild_drops_the_fast_search_files_of_the_old_arrays(built, tmp_path):
    root, good, _ = built
    index_dir = tmp_path / "index"
    shutil.copytree(good, index_dir)
    for name in ("image_ivf_vecs.npy", "image_ivf_recall.json", "image_pq.faiss", "image_pq_recall.json"):
        (index_dir / name).write_bytes(b"from the old arrays")
    (index_dir / "image_mu.npy").write_bytes(b"garbage")
    build(root, index_dir)
    assert not list(index_dir.glob("image_ivf_*")) and not list(index_dir.glob("image_pq*"))


# ---------------------------------------------------------------- issue 28: an exported dataset as samples
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from gen4gen.stages import export, s4_caption
    from tests.conftest import make_cfg
    from tests.helpers.trees import make_pipeline

    root = tmp_path_factory.mktemp("search_dataset")
    make_pipeline(root)
    cfg = make_cfg(root, "export.name=demo", "export.formats=[mycanvas,customdiffusion,imagefolder,coco,webdataset]")
    s4_caption.run(cfg)
    export.run(cfg)
    return root, root / "outputs" / "datasets" / "demo"


def _digest(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["", "imagefolder", "imagefolder/images", "mycanvas"])
@pytest.mark.parametrize("by", ["concept", "dataset"])
def test_an_exported_dataset_is_indexed_by_concept_with_its_captions_outside_it(dataset, tmp_path, cfg_factory,
                                                                                 where, by):
    from gen4gen.search.dataset import dataset_samples
    from gen4gen.stages import search

    _, ds = dataset
    before = _digest(ds)
    cfg = cfg_factory(f"search.index={ds / where}", f"search.dataset_by={by}", "device=cpu",
                      "search.query.text='a cat on a kitchen table'")
    summary = search.run(cfg)
    index_dir = tmp_path / "outputs" / "search" / "demo"
    assert summary.notes["index"] == f"built {index_dir}"
    assert _digest(ds) == before  # nothing written into the dataset
    index = ModelIndex(index_dir)
    rows = [json.loads(line) for line in (ds / "mycanvas/index.jsonl").read_text().splitlines()]
    concepts = sorted({c for r in rows for c in r["concepts"]})
    assert index.names == (concepts if by == "concept" else ["demo"])
    models, captions = dataset_samples(ds, by)
    assert sorted(captions.values()) == sorted(r["captions"]["detailed"] for r in rows)  # every image captioned
    assert "caption" in index.spaces  # the captions were read: text queries work without CLIP
    out = json.loads((Path(summary.out_dir) / "search_results.json").read_text())
    assert [h["model"] for h in out["results"]["text:first_moment"]][: len(index.names)] != []


def test_a_dataset_exported_without_mycanvas_is_read_from_its_imagefolder_rows(dataset, tmp_path, caplog):
    from gen4gen.search.dataset import dataset_root, dataset_samples

    _, ds = dataset
    copy = tmp_path / "demo"
    shutil.copytree(ds, copy)
    shutil.rmtree(copy / "mycanvas")
    meta = copy / "imagefolder" / "metadata.jsonl"
    rows = [json.loads(line) for line in meta.read_text().splitlines()]
    meta.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"file_name": "../../README.md"}\n[1]\n')
    assert dataset_root(copy / "imagefolder") == copy
    models, captions = dataset_samples(copy, "concept")
    assert sorted(models) == sorted({c for r in rows for c in r["concepts"]})
    assert sorted(captions.values()) == sorted(r["caption_plain"] for r in rows)
    assert all(p.parent == copy / "imagefolder" / "images" for ps in models.values() for p in ps)
    said = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(said) == 2 and any("refused" in s for s in said)
