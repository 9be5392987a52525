"""stage=serve in headless Chromium (Playwright, Debian's chromium, no browser download): the real app under
uvicorn on a free 127.0.0.1 port. Review with the keyboard, reload, edit a caption, export; the leaderboard
sorts and reweights; a text search returns models; hostile captions and names stay text."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gen4gen.io import png_bytes
from gen4gen.serve.review import REVIEW_FILE
from gen4gen.stages.serve import build
from tests.conftest import make_cfg
from tests.helpers.serve_fixtures import LiveServer, bench_run, search_samples, serve_cfg, stages_tree
from tests.helpers.needs import chromium_path

pytestmark = pytest.mark.needs("chromium")
HOSTILE = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_ui")
    stages_tree(root)
    bench_run(root)
    samples = search_samples(root)
    shutil.copytree(samples / "azure", samples / HOSTILE.replace("/", "|"))  # a model whose name is markup
    return root


def serve(root: Path, search: bool = False):
    cfg = serve_cfg(root, f"serve.bench_run={root / 'bench' / 'tiny'}",
                    f"serve.search_index={root / 'samples'}" if search else "serve.search_index=null")
    return LiveServer(build(cfg)[0])


def page_of(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    return page


def badges(page) -> list[str]:
    return page.locator(".card .meta .badge:first-child").all_text_contents()


def press_and_wait(page, key: str) -> dict:
    with page.expect_response(lambda r: r.url.endswith("/review") and r.request.method == "POST") as resp:
        page.keyboard.press(key)
    assert resp.value.status == 200
    return resp.value.json()


def test_review_with_the_keyboard_reload_edit_and_export(browser, pristine, tmp_path):
    from gen4gen.stages import export

    root = tmp_path / "t"
    shutil.copytree(pristine, root)
    page = page_of(browser)
    with serve(root) as url:
        page.goto(url + "/")
        page.wait_for_selector(".card >> nth=3")
        ids = page.locator(".card .cid").evaluate_all("nodes => nodes.map(n => n.title)")  # the full item ids
        assert page.locator(".card .cid").first.text_content() == ids[0].split("/", 1)[1]  # composition/variant shown
        assert badges(page) == ["unreviewed"] * 4
        # keep, reject, keep: each decision moves to the next image
        assert [press_and_wait(page, k)["status"] for k in ("k", "x", "k")] == ["keep", "reject", "keep"]
        assert press_and_wait(page, "x")["id"] == ids[3]
        undone = press_and_wait(page, "z")
        assert (undone["id"], undone["status"]) == (ids[3], "unreviewed")
        lines = [json.loads(x) for x in (root / "stages" / REVIEW_FILE).read_text().splitlines()]
        assert [(d["id"], d["status"]) for d in lines[:3]] == list(zip(ids[:3], ["keep", "reject", "keep"]))
        page.reload()
        page.wait_for_selector(".card >> nth=3")
        page.wait_for_function("() => document.querySelectorAll('.card .badge').length >= 4")
        assert badges(page) == ["kept", "rejected", "kept", "unreviewed"]
        assert "2 kept · 1 rejected · 1 unreviewed" in page.text_content("#counts")

        # the detail view of the first image: overlays toggle, then its short caption is edited
        page.locator(".card").first.click()
        page.keyboard.press("Enter")
        page.wait_for_selector("#d-objects tr")
        assert page.text_content("#d-title") == ids[0]
        page.wait_for_selector("#d-boxes .box >> nth=0", state="visible", timeout=15000)
        assert page.is_hidden("#d-overlay")
        page.keyboard.press("m")
        page.keyboard.press("b")
        # the mask overlay is an image: visible once it has loaded and has a size (a loaded machine takes a while)
        page.wait_for_selector("#d-overlay", state="visible", timeout=15000)
        page.wait_for_selector("#d-boxes", state="hidden", timeout=15000)
        page.wait_for_function("() => document.getElementById('d-overlay').complete")
        assert page.evaluate("() => document.getElementById('d-overlay').naturalWidth") == 160
        assert page.locator("#d-variants figure").count() == 2 and page.locator("#d-sources img").count() >= 2
        page.keyboard.press("e")
        page.wait_for_function("() => document.activeElement && document.activeElement.name === 'short'")
        page.keyboard.press("Control+a")
        page.keyboard.type("a ginger cat beside a green plant")
        saved = press_and_wait(page, "Control+Enter")
        assert saved["captions"]["short"] == "a ginger cat beside a green plant" and saved["edited"] == ["short"]
        assert saved["status"] == "keep"  # editing keeps the decision
        page.wait_for_selector(".card.sel .badge.edited")
        assert page.errors == []
    page.close()

    summary = export.run(make_cfg(root, "export.formats=[mycanvas]", "export.gallery=false"))
    out = Path(summary.out_dir)
    left = [json.loads(x) for x in (out / "left_out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in left if r["reason"] == "rejected in review"] == [ids[1]]
    index = {json.loads(x)["id"]: json.loads(x) for x in (out / "mycanvas" / "index.jsonl").read_text().splitlines()}
    assert sorted(index) == sorted([ids[0], ids[2], ids[3]])
    assert index[ids[0]]["captions"]["short"] == "a ginger cat beside a green plant"


def test_hostile_captions_and_names_stay_text(browser, pristine, tmp_path):
    import httpx2 as httpx  # what FastAPI's TestClient runs on

    root = tmp_path / "t"
    shutil.copytree(pristine, root)
    page = page_of(browser)
    with serve(root, search=True) as url:
        item = httpx.get(url + "/api/items").json()["items"][0]
        r = httpx.post(f"{url}/api/items/{item['id']}/review", json={"status": "keep", "captions": {"short": HOSTILE}})
        assert r.status_code == 200
        page.goto(url + "/")
        page.wait_for_selector(".card .caption")
        assert page.locator(".card .caption").first.text_content() == HOSTILE
        page.keyboard.press("Enter")
        page.wait_for_selector("#d-captions textarea")
        assert page.input_value("#d-captions textarea[name=short]") == HOSTILE
        page.goto(url + "/leaderboard")
        page.wait_for_selector("#prompt-grid th.prompt")
        assert "a red bicycle <b>leaning</b> on a wall" in page.locator("#prompt-grid th.prompt p").all_text_contents()
        assert page.locator("#prompt-grid b").count() == 0
        page.goto(url + "/search")
        page.fill("#s-text", "an azure coloured square")
        page.keyboard.press("Enter")
        page.wait_for_selector(".hit")
        assert HOSTILE.replace("/", "|") in page.locator(".hit .model").all_text_contents()
        assert page.evaluate("() => window.pwned") is None and page.locator("img[src=x]").count() == 0
        assert page.errors == []
    page.close()


def test_leaderboard_sorts_reweights_and_plots_the_front(browser, pristine):
    page = page_of(browser)
    with serve(pristine) as url:
        page.goto(url + "/leaderboard")
        page.wait_for_selector("#lb tbody tr")

        def models():
            return page.locator("#lb tbody tr td:nth-child(2)").all_text_contents()

        # default weights (CLIP-T 1, MCOS 0.8), each min-max normalised: mid 5/7 + 0.8 = 1.51 beats big_good
        # 1 + 0.8 x 0.2/0.4 = 1.4; dominated 2/7 + 0 = 0.29 beats fast_bad 0 + 0.8 x 0.1/0.4 = 0.2
        assert models() == ["mid", "big_good", "dominated", "fast_bad"]
        page.click("#lb th[data-key=clip_t]")
        assert models() == ["big_good", "mid", "dominated", "fast_bad"]
        page.click("#lb th[data-key=clip_t]")
        assert models() == ["fast_bad", "dominated", "mid", "big_good"]
        page.click("#lb th[data-key=score]")
        for metric, weight in (("clip_t", "0"), ("mcos", "0"), ("cost_usd", "1")):
            page.fill(f"#lb input[data-metric={metric}]", weight)
        assert models() == ["fast_bad", "mid", "big_good", "dominated"]  # cheapest first, live
        assert page.locator("#lb tbody tr td:first-child").all_text_contents() == ["1", "2", "3", "4"]
        page.select_option("#lb-group", "categories")
        assert page.locator("#lb tbody tr").count() == 8
        assert page.locator("#pareto circle").count() == 4 and page.locator("#pareto .pt.on").count() == 3
        assert "fast_bad, mid, big_good" in page.text_content("#pareto-caption")
        assert page.locator("#prompt-grid td img").count() == 2 * 4 * 2
        page.wait_for_function("() => [...document.querySelectorAll('#prompt-grid img')].every(i => i.complete && i.naturalWidth === 32)")
        assert page.errors == []
    page.close()


def test_a_text_search_returns_models_with_samples(browser, pristine):
    page = page_of(browser)
    with serve(pristine, search=True) as url:
        page.goto(url + "/search")
        page.fill("#s-text", "a crimson coloured square")
        page.keyboard.press("Enter")
        page.wait_for_selector(".hit")
        assert page.locator(".hit .model").first.text_content() == "crimson"
        assert page.locator(".hit").count() == 4
        page.wait_for_function("() => [...document.querySelectorAll('.hit:first-child .samples img')].every(i => i.complete && i.naturalWidth === 40)")
        assert page.locator(".hit").first.locator(".samples img").count() == 3
        # an uploaded image searches by itself (a forest-green square finds forest)
        page.set_input_files("#s-image", files=[{"name": "query.png", "mimeType": "image/png",
                                                 "buffer": png_bytes(np.full((40, 40, 3), (30, 190, 40), np.uint8))}])
        page.wait_for_function("() => document.querySelector('#s-notes').textContent.includes('image query')")
        assert page.locator(".hit .model").first.text_content() == "forest"
        assert page.errors == []
    page.close()
