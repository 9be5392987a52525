"""stage=serve through FastAPI's test client: the items API (filters, pages, exact fields), review decisions
written at once and read back, "changed since review", thumbnails made once, overlays, the export honouring
the review, the leaderboard and model search."""
from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from gen4gen.paths import STAGE_DIRS
from gen4gen.serve.review import REVIEW_FILE, read_decisions
from gen4gen.serve.thumbs import PALETTE
from gen4gen.stages.serve import build
from tests.helpers.serve_fixtures import BENCH, bench_run, search_samples, serve_cfg, stages_tree

BASE = "http://127.0.0.1:8765"
PETS = "pets/cat+dog_000/v0_procedural"
KITCHEN = "kitchen/cat+plant_000/v1_procedural"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    stages_tree(root)
    bench_run(root)
    search_samples(root)
    return root


@pytest.fixture
def root(pristine, tmp_path):
    """A fresh copy of the tree per test: tests write decisions."""
    shutil.copytree(pristine, tmp_path / "t")
    return tmp_path / "t"


def client(root: Path, *overrides: str) -> tuple[TestClient, object]:
    app, served, _ = build(serve_cfg(root, f"serve.bench_run={root / 'bench' / 'tiny'}", "serve.search_index=null",
                                     *overrides))
    return TestClient(app, base_url=BASE), served


def captions_on_disk(root: Path, item_id: str) -> dict:
    return json.loads((root / "stages" / STAGE_DIRS["s4"] / item_id / "captions.json").read_text())


def test_items_filters_pages_and_fields(root):
    c, _ = client(root)
    every = c.get("/api/items").json()
    ids = [it["id"] for it in every["items"]]
    assert every["total"] == 4 and ids == sorted(ids) and PETS in ids and KITCHEN in ids
    it = next(i for i in every["items"] if i["id"] == PETS)
    disk = captions_on_disk(root, PETS)
    assert it["captions"] == {k: disk[k] for k in ("short", "detailed", "personalized")}
    assert (it["scene"], it["composition"], it["variant"]) == ("pets", "pets/cat+dog_000", "v0_procedural")
    assert it["concepts"] == ["cat", "dog"] and it["status"] == "unreviewed" and it["edited"] == []
    assert it["image"].startswith("/media/image/pets/cat%2Bdog_000/v0_procedural?v=")
    assert it["thumbnail"].startswith("/media/thumb/pets/cat%2Bdog_000/v0_procedural?v=")
    assert c.get(it["image"]).content == (root / "stages" / STAGE_DIRS["s3"] / PETS / "image.png").read_bytes()

    def ids_for(**q):
        return [i["id"] for i in c.get("/api/items", params=q).json()["items"]]

    assert ids_for(scene="pets") == [PETS, "pets/cat+dog_000/v1_procedural"]
    assert ids_for(concept="plant") == ["kitchen/cat+plant_000/v0_procedural", KITCHEN]
    assert ids_for(q="GARDEN") == ids_for(scene="pets")  # caption text, any case
    assert ids_for(q="kitchen two dogs") == []  # every word must match
    assert ids_for(flag="no such flag") == []
    assert ids_for(status="unreviewed") == ids
    page = c.get("/api/items", params={"offset": 3, "limit": 3}).json()
    assert page["total"] == 4 and [i["id"] for i in page["items"]] == ids[3:]
    for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"status": "maybe"}):
        assert c.get("/api/items", params=bad).status_code == 422
    facets = c.get("/api/facets").json()
    assert facets["scene"] == ["kitchen", "pets"] and facets["concept"] == ["cat", "dog", "plant"]
    assert facets["status"] == {"unreviewed": 4}


def test_decisions_are_written_at_once_and_survive_a_new_server(root):
    c, served = client(root)
    url = f"/api/items/{PETS}/review"
    assert c.post(url, json={"status": "reject"}).json()["status"] == "reject"
    lines = (root / "stages" / REVIEW_FILE).read_text().splitlines()  # on disk before the answer came back
    assert len(lines) == 1 and json.loads(lines[0])["status"] == "reject" and json.loads(lines[0])["id"] == PETS
    edited = c.post(f"/api/items/{KITCHEN}/review",
                    json={"status": "keep", "captions": {"short": "  a  ginger cat\nby a plant "}}).json()
    assert edited["captions"]["short"] == "a ginger cat by a plant" and edited["edited"] == ["short"]
    assert edited["status"] == "keep"
    # a second server on the same tree (a reload, a restart) sees both
    c2, _ = client(root)
    got = {i["id"]: i for i in c2.get("/api/items").json()["items"]}
    assert got[PETS]["status"] == "reject" and got[KITCHEN]["captions"]["short"] == "a ginger cat by a plant"
    assert [i["id"] for i in c2.get("/api/items", params={"status": "reject"}).json()["items"]] == [PETS]
    # undo is the earlier state posted again; a caption set back to what s4 wrote is no longer an edit
    original = captions_on_disk(root, KITCHEN)["short"]
    back = c2.post(f"/api/items/{KITCHEN}/review", json={"status": "unreviewed", "captions": {"short": original}}).json()
    assert back["edited"] == [] and back["status"] == "unreviewed"
    assert read_decisions(root / "stages")[KITCHEN].captions == {}
    assert len((root / "stages" / REVIEW_FILE).read_text().splitlines()) == 3


@pytest.mark.parametrize("body, code", [({"status": "delete"}, 422), ({"status": "keep", "captions": {"short": ""}}, 422),
                                        ({"status": "keep", "captions": {"title": "x"}}, 422),
                                        ({"status": "keep", "captions": {"short": "x" * 4001}}, 422),
                                        ({"status": "keep", "extra": 1}, 422), ({}, 422)])
def test_bad_review_bodies_are_refused_and_write_nothing(root, body, code):
    c, _ = client(root)
    assert c.post(f"/api/items/{PETS}/review", json=body).status_code == code
    assert c.post("/api/items/pets/none/v9/review", json={"status": "keep"}).status_code == 404
    assert not (root / "stages" / REVIEW_FILE).exists()


def test_a_torn_line_is_skipped_with_a_warning(root, caplog):
    c, _ = client(root)
    c.post(f"/api/items/{PETS}/review", json={"status": "keep"})
    path = root / "stages" / REVIEW_FILE
    with open(path, "ab") as f:
        f.write(b'{"id": "' + KITCHEN.encode() + b'", "content": "x", "sta')  # a write cut by a crash
    with caplog.at_level(logging.WARNING):
        decisions = read_decisions(root / "stages")
    assert list(decisions) == [PETS] and decisions[PETS].status == "keep"
    assert f"{path} line 2 skipped" in caplog.text


def test_a_redone_item_shows_changed_since_review_and_exports_as_unreviewed(root):
    from gen4gen.stages import export
    from tests.conftest import make_cfg

    c, _ = client(root)
    c.post(f"/api/items/{PETS}/review", json={"status": "reject"})
    path = root / "stages" / STAGE_DIRS["s4"] / PETS / "captions.json"
    caps = json.loads(path.read_text())
    caps["short"] = "a cat and two dogs, captioned again"
    path.write_text(json.dumps(caps))
    c2, _ = client(root)
    assert {i["id"]: i["status"] for i in c2.get("/api/items").json()["items"]}[PETS] == "changed"
    assert [i["id"] for i in c2.get("/api/items", params={"status": "changed"}).json()["items"]] == [PETS]
    summary = export.run(make_cfg(root, "export.formats=[imagefolder]", "export.gallery=false"))
    assert summary.done == 4 and "1 changed since review" in summary.notes["review"]


def test_export_leaves_the_rejected_out_and_uses_the_edited_captions(root):
    from gen4gen.stages import export
    from tests.conftest import make_cfg

    c, _ = client(root)
    c.post(f"/api/items/{PETS}/review", json={"status": "reject"})
    c.post(f"/api/items/{KITCHEN}/review", json={"status": "keep", "captions": {"detailed": "An edited caption."}})
    summary = export.run(make_cfg(root, "export.formats=[imagefolder,mycanvas]"))
    out = Path(summary.out_dir)
    assert summary.done == 3
    left = [json.loads(x) for x in (out / "left_out.jsonl").read_text().splitlines()]
    assert {"stage": "review", "id": PETS, "reason": "rejected in review"} in left
    meta = [json.loads(x) for x in (out / "imagefolder" / "metadata.jsonl").read_text().splitlines()]
    texts = {m["id"]: m["caption_plain"] for m in meta}
    assert len(texts) == 3 and PETS not in texts and texts[KITCHEN] == "An edited caption."
    other = KITCHEN.replace("v1", "v0")
    assert texts[other] == captions_on_disk(root, other)["detailed"]
    index = {json.loads(x)["id"]: json.loads(x) for x in (out / "mycanvas" / "index.jsonl").read_text().splitlines()}
    assert PETS not in index and index[KITCHEN]["captions"]["detailed"] == "An edited caption."
    card = (out / "README.md").read_text()
    assert "1 rejected in review (left_out.jsonl), 1 with captions edited in review" in card
    assert summary.notes["review"].startswith("1 rejected in review")


def test_thumbnails_are_made_once_per_content(root):
    c, served = client(root, "serve.thumb_size=64")
    url = c.get("/api/items").json()["items"][0]["thumbnail"]
    first = c.get(url)
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(first.content)).size == (64, 48)  # 160x120, longest side 64
    assert c.get(url).content == first.content and served.thumbs.made == 1
    assert len(list((root / "thumbs").glob("*.jpg"))) == 1
    c2, restarted = client(root, "serve.thumb_size=64")  # a restarted server finds the file
    assert c2.get(url).content == first.content and restarted.thumbs.made == 0


def test_detail_overlay_and_cutouts(root):
    c, _ = client(root)
    d = c.get(f"/api/items/{KITCHEN}/detail").json()
    layout = json.loads((root / "stages" / STAGE_DIRS["s2"] / "kitchen/cat+plant_000/layout.json").read_text())
    assert [(o["name"], o["concept"], o["box"]) for o in d["objects"]] == \
        [(o["name"], o["concept"], o["box"]) for o in layout["objects"]]
    assert d["size"] == [160, 120] and d["background"] == "on a kitchen table"
    assert [v["id"] for v in d["variants"]] == ["kitchen/cat+plant_000/v0_procedural", KITCHEN]
    assert [s["concept"] for s in d["sources"]] == ["plant", "cat"] and all(s["url"] for s in d["sources"])
    cut = Image.open(io.BytesIO(c.get(d["sources"][0]["url"]).content))
    assert cut.mode == "RGBA" and np.asarray(cut)[..., 3].min() == 0  # cropped cut-out keeps its transparency
    overlay = np.asarray(Image.open(io.BytesIO(c.get(d["overlay"]).content)).convert("RGBA"))
    folder = root / "stages" / STAGE_DIRS["s2"] / "kitchen/cat+plant_000"
    masks = [np.asarray(Image.open(folder / o["mask"])) >= 128 for o in layout["objects"]]
    for k, on in enumerate(masks):
        assert on.any() and (overlay[on][:, :3] == PALETTE[k]).all() and (overlay[on][:, 3] == 140).all()
    assert (overlay[..., 3][~np.any(masks, axis=0)] == 0).all()
    assert c.get("/api/items/kitchen/nothing/detail").status_code == 404


def test_leaderboard_means_categories_and_pareto(root):
    c, _ = client(root)
    b = c.get("/api/leaderboard").json()
    models = {r["model"]: r for r in b["models"]}
    assert set(models) == set(BENCH) and b["n_images"] == 16
    for name, m in BENCH.items():
        assert models[name]["clip_t"] == pytest.approx(m["clip_t"] + 0.05)  # two seeds: +0 and +0.1
        assert models[name]["cost_usd"] == pytest.approx(m["cost_usd"]) and models[name]["n"] == 4
    assert b["pareto"]["x"] == "cost_usd" and b["pareto"]["front"] == ["fast_bad", "mid", "big_good"]
    assert {(r["model"], r["category"]) for r in b["categories"]} == {(m, c) for m in BENCH for c in ("objects", "animals")}
    assert [m["key"] for m in b["metrics"]] == ["clip_t", "mcos", "latency_s", "cost_usd"]  # no popularity known
    assert b["weights"] == {"clip_t": 1.0, "mcos": 0.8, "popularity": 0.2}  # bench.report.weights
    grid = c.get("/api/leaderboard/prompts", params={"limit": 1}).json()
    assert grid["total"] == 2 and grid["models"] == sorted(BENCH)
    p = grid["prompts"][0]
    assert p["key"] == "drawbench/p0" and p["prompt"] == "a red bicycle <b>leaning</b> on a wall"
    cell = p["cells"]["mid"]
    assert [x["seed"] for x in cell] == [0, 1]
    assert c.get(cell[1]["url"]).content == (root / "bench/tiny/images/mid/drawbench/p0_s1.png").read_bytes()


def test_model_search_by_text_image_and_model(root):
    c, served = client(root, f"serve.search_index={root / 'samples'}", "serve.max_upload_mb=0.01")
    out = c.get("/api/search", params={"text": "a crimson coloured square"}).json()
    assert [h["model"] for h in out["results"]][0] == "crimson" and len(out["results"]) == 3
    assert out["method"] == "first_moment" and "MiniLM" in out["notes"][0]
    samples = out["results"][0]["samples"]
    assert len(samples) == 3 and c.get(samples[2]).content == (root / "samples/crimson/2.png").read_bytes()
    assert c.get("/api/search", params={"model": "azure"}).json()["results"][0]["model"] == "azure"
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), (30, 190, 40), np.uint8)).save(buf, format="PNG")
    hit = c.post("/api/search", files={"image": ("../../evil name.png", buf.getvalue(), "image/png")}).json()
    assert hit["results"][0]["model"] == "forest" and hit["method"] == "log_density"
    assert c.post("/api/search", files={"image": ("big.png", b"x" * 20000, "image/png")}).status_code == 413
    assert c.post("/api/search", files={"image": ("bad.png", b"not an image", "image/png")}).status_code == 422
    assert c.get("/api/search").status_code == 422
    assert c.get("/api/search", params={"model": "nobody"}).status_code == 422


@pytest.mark.slow
def test_the_cli_prints_the_address_serves_and_stops_on_ctrl_c(root):
    import os
    import signal
    import subprocess
    import sys
    import time

    import httpx2 as httpx  # what FastAPI's TestClient runs on

    from tests.helpers.serve_fixtures import free_port

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "gen4gen", "stage=serve", f"paths.stages_dir={root / 'stages'}",
                             f"paths.outputs_dir={root / 'outputs'}", f"serve.port={port}", "serve.token=abc123-for-tests",
                             f"serve.thumbs_dir={root / 'thumbs'}", f"hydra.run.dir={root / 'run'}"],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/items", params={"token": "abc123-for-tests"}, timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.time() < deadline, "the server did not come up"
                time.sleep(0.5)
        assert r.status_code == 200 and r.json()["total"] == 4
        assert httpx.get(f"http://127.0.0.1:{port}/api/items").status_code == 403  # the token is asked for
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert f"open http://127.0.0.1:{port}/?token=abc123-for-tests" in out and "4 final images to review" in out


def test_roster_popularity_is_a_metric_of_the_leaderboard(root):
    import math

    from gen4gen.serve.leaderboard import load_run

    board = load_run(root / "bench" / "tiny", {"mid": 1000, "big_good": None}, {"clip": 0.5, "popularity": 1}).board()
    models = {r["model"]: r for r in board["models"]}
    assert models["mid"]["popularity"] == pytest.approx(math.log1p(1000)) and models["big_good"]["popularity"] is None
    assert board["metrics"][-1] == {"key": "popularity", "label": "popularity", "higher_better": True}
    assert board["weights"] == {"clip_t": 0.5, "mcos": 0.8, "popularity": 1.0}
    assert [r["popularity"] for r in board["categories"] if r["model"] == "mid"] == [math.log1p(1000)] * 2


@pytest.mark.parametrize("override, line", [("serve.port=0", "serve.port=0: must be at least 1"),
                                            ("serve.page_size=abc", "serve.page_size=abc: expected a whole number"),
                                            ("serve.token=short", "serve.token=short: string should have at least 8"),
                                            ("+serve.colour=red", "serve.colour=red: extra inputs are not permitted")])
def test_bad_settings_are_one_line_naming_the_key(root, override, line):
    from gen4gen.errors import UserError

    with pytest.raises(UserError) as e:
        build(serve_cfg(root, override))
    assert str(e.value).startswith(line)
