"""stage=serve on a 10,000-item stages tree: start-up (reading the tree), the first page, thumbnails (made
once), a review action, filtered queries; the real app under uvicorn on 127.0.0.1, timed from the client
(wall) and by the app itself (its Server-Timing header). Optionally screenshots of the views in Chromium.

    python benchmarks/serve.py [--items 10000] [--root /tmp/serve10k] [--shots benchmarks/]

The tree is fabricated as the stage contracts say (s1 cut-outs, s2 compositions with instance masks and
layouts, s3 finals, s4 captions, every file through its artefact model) and kept in ``--root`` for reruns.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from gen4gen.artefacts import META_MODELS, Captions, Layout, stage_rel  # noqa: E402
from gen4gen.io import png_bytes  # noqa: E402
from gen4gen.paths import STAGE_DIRS  # noqa: E402

CONCEPTS = ["cat", "dog", "plant", "teddy_bear", "mug", "lamp", "backpack", "owl"]
PLACES = ["in the garden", "on a kitchen table", "on a sofa", "on a beach", "in a snowy forest"]
VARIANTS = ("v0_procedural", "v1_photo", "v2_photo", "v3_photo")
W, H = 192, 144


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)  # a fabricated tree: no fsync per file (65k files)


def _meta(stage: str, folder: Path, item_id: str, **fields) -> dict:
    meta = {"id": item_id, "stage": stage, "config_hash": f"{stage}hash", "fingerprint": f"fp-{item_id}", **fields}
    _write(folder / "meta.json", META_MODELS[stage].build(meta).dump())
    return meta


def fabricate(root: Path, items: int) -> Path:
    stages = root / "stages"
    if (stages / ".complete").is_file():
        return stages
    rng = np.random.default_rng(0)
    d = {s: stages / STAGE_DIRS[s] for s in ("s1", "s2", "s3", "s4")}
    yy, xx = np.mgrid[0:H, 0:W]
    for c in CONCEPTS:  # one cut-out per concept
        rgba = np.zeros((80, 60, 4), np.uint8)
        rgba[..., :3] = rng.integers(40, 220, 3)
        rgba[10:70, 8:52, 3] = 255
        _write(d["s1"] / "all" / c / "photo" / "cutout.png", png_bytes(rgba))
        _meta("s1", d["s1"] / "all" / c / "photo", f"all/{c}/photo", scene="all", concept=c, size=[60, 80],
              bbox_xyxy=[8, 10, 52, 70], flags=["touches_border"] if c == "owl" else [])
    for i in range(items // len(VARIANTS)):
        scene = f"scene{i // 100:03d}"
        names = [CONCEPTS[(i + j) % len(CONCEPTS)] for j in range(2 + i % 2)]
        comp = f"{'+'.join(sorted(names))}_{i % 100:03d}"
        s2 = d["s2"] / scene / comp
        canvas = np.zeros((H, W, 3), np.uint8)
        union = np.zeros((H, W), np.uint8)
        objects = []
        for j, c in enumerate(names):
            box = [8 + j * W // len(names), H // 3, W // (len(names) + 1), H // 2]
            m = ((xx >= box[0]) & (xx < box[0] + box[2]) & (yy >= box[1]) & (yy < box[1] + box[3])).astype(np.uint8) * 255
            canvas[m > 0] = rng.integers(40, 220, 3)
            union = np.maximum(union, m)
            _write(s2 / "instances" / f"{c}_0.png", png_bytes(m))
            objects.append({"name": f"{c}_0", "concept": c, "index": 0, "box": box, "source": f"all/{c}/photo",
                            "source_path": f"{STAGE_DIRS['s1']}/all/{c}/photo/cutout.png", "mask": f"instances/{c}_0.png",
                            "z": j, "visible_fraction": 1.0})
        place = PLACES[i % len(PLACES)]
        _write(s2 / "image.png", png_bytes(canvas))
        _write(s2 / "mask.png", png_bytes(union))
        _write(s2 / "layout.json", Layout.build({"scene": scene, "composition_id": comp, "size": [W, H],
                                                  "planner": "heuristic", "background_prompt": place,
                                                  "scenes": [place], "objects": objects}).dump())
        _meta("s2", s2, f"{scene}/{comp}", scene=scene, composition_id=comp)
        for v, variant in enumerate(VARIANTS):
            item_id = f"{scene}/{comp}/{variant}"
            s3 = d["s3"] / item_id
            bg = np.dstack([xx * 255 // W, yy * 255 // H, np.full_like(xx, 40 * v + (i * 7) % 100)]).astype(np.uint8)
            final = np.where(union[..., None] > 0, canvas, bg)
            _write(s3 / "image.png", png_bytes(final))
            meta3 = _meta("s3", s3, item_id, composition=f"{scene}/{comp}", composition_dir=stage_rel(s2, stages),
                          variant=variant, backend="classical")
            said = " and ".join(f"{'an' if c[0] in 'aeiou' else 'a'} {c.replace('_', ' ')}" for c in names)
            caps = {"short": f"a photo of {said} {place}", "detailed": f"A photo of {said} {place}, variant {v}.",
                    "personalized": f"a photo of {' and '.join(f'<new{CONCEPTS.index(c) + 1}> {c}' for c in names)} {place}",
                    "modifier_tokens": {c: f"<new{CONCEPTS.index(c) + 1}>" for c in names}, "captioner": "template"}
            _write(d["s4"] / item_id / "captions.json", Captions.build(caps).dump())
            _meta("s4", d["s4"] / item_id, item_id, captioner="template", s3_config_hash=meta3["config_hash"],
                  s3_fingerprint=meta3["fingerprint"])
    (stages / ".complete").write_text("")
    return stages


def timed_get(client, url: str, method: str = "GET", **kw) -> tuple[float, float, object]:
    """(wall ms at the client, app ms from Server-Timing, response)."""
    t0 = time.perf_counter()
    r = client.request(method, url, **kw)
    wall = 1000 * (time.perf_counter() - t0)
    assert r.status_code == 200, (url, r.status_code, r.text[:200])
    return wall, float(r.headers["server-timing"].split("dur=")[1]), r


def main() -> None:
    import httpx2 as httpx  # what FastAPI's TestClient runs on

    from gen4gen.stages.serve import build
    from tests.conftest import make_cfg
    from tests.helpers.serve_fixtures import LiveServer

    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--root", default="/tmp/gen4gen_serve_bench")
    ap.add_argument("--shots", default=None, help="folder for Chromium screenshots of the views")
    args = ap.parse_args()
    root = Path(args.root)
    t0, c0 = time.perf_counter(), time.process_time()
    fabricate(root, args.items)
    print(f"tree: {args.items} final images under {root} ({time.perf_counter() - t0:.1f} s wall)")
    for old in (root / "thumbs").glob("*"):
        old.unlink()
    (root / "stages" / "review.jsonl").unlink(missing_ok=True)
    extra = ["serve.search_index=null", "serve.bench_run=null"]
    if args.shots:  # the leaderboard and search views need a bench run and models: the test fixtures' small ones
        from tests.helpers.serve_fixtures import bench_run, search_samples

        extra = [f"serve.bench_run={bench_run(root)}", f"serve.search_index={search_samples(root)}"]
    cfg = make_cfg(root, "device=cpu", f"serve.thumbs_dir={root / 'thumbs'}", *extra)
    t0, c0 = time.perf_counter(), time.process_time()
    app, served, _ = build(cfg)
    startup = 1000 * (time.perf_counter() - t0)
    rows = [("start-up: read the tree (once)", startup, startup, f"{1000 * (time.process_time() - c0):.0f} ms CPU")]
    assert len(served.catalog.items) == args.items, len(served.catalog.items)
    with LiveServer(app) as url, httpx.Client(base_url=url) as c:
        first = [timed_get(c, p) for p in ("/", "/static/review.js", "/api/facets", "/api/items?offset=0&limit=60")]
        rows.append(("first page: HTML + script + facets + 60 items", sum(f[0] for f in first), sum(f[1] for f in first),
                     f"{len(first[3][2].content) / 1024:.0f} KiB of JSON"))
        thumbs = [it["thumbnail"] for it in first[3][2].json()["items"]]
        cold = [timed_get(c, u) for u in thumbs]
        made = served.thumbs.made
        warm = [timed_get(c, u) for u in thumbs]
        assert served.thumbs.made == made == 60, served.thumbs.made
        rows.append(("60 thumbnails, first request (made)", sum(x[0] for x in cold), sum(x[1] for x in cold),
                     f"{made} made"))
        rows.append(("60 thumbnails, again (from disk)", sum(x[0] for x in warm), sum(x[1] for x in warm),
                     f"{served.thumbs.made - made} made"))
        ids = [it["id"] for it in first[3][2].json()["items"]]
        acts = [timed_get(c, f"/api/items/{ids[k % 60]}/review", "POST",
                          json={"status": ("keep", "reject", "unreviewed")[k % 3]}) for k in range(150)]
        wall = sorted(a[0] for a in acts)
        app_ms = sorted(a[1] for a in acts)
        rows.append(("review action (POST, fsync'd), median of 150", statistics.median(wall), statistics.median(app_ms),
                     f"p95 {wall[int(0.95 * len(wall))]:.1f} ms wall / {app_ms[int(0.95 * len(app_ms))]:.1f} ms app"))
        for label, q in ((f"filter: caption text 'dog garden' over {args.items}", "/api/items?q=dog%20garden&limit=60"),
                         ("filter: status=unreviewed, last page", f"/api/items?status=unreviewed&offset={args.items - 60}&limit=60"),
                         ("filter: scene + concept", "/api/items?scene=scene007&concept=owl&limit=60"),
                         ("detail of one item", f"/api/items/{ids[5]}/detail")):
            runs = [timed_get(c, q) for _ in range(5)]
            rows.append((label + " (median of 5)", statistics.median(r[0] for r in runs),
                         statistics.median(r[1] for r in runs), f"total {runs[0][2].json().get('total', '-')}"))
        lines = (root / "stages" / "review.jsonl").read_text().splitlines()
        assert len(lines) == 150 and json.loads(lines[-1])["status"] == "unreviewed"  # 149 % 3
        if args.shots:
            screenshots(url, Path(args.shots))
    print(f"| step | wall ms (client) | app ms (Server-Timing) | note |\n|---|---|---|---|")
    for label, w, a, note in rows:
        print(f"| {label} | {w:.1f} | {a:.1f} | {note} |")
    print(f"load: {os.getloadavg()}")


def screenshots(url: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = b.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url + "/")
        page.wait_for_function("() => [...document.querySelectorAll('.card img')].slice(0, 12).every(i => i.complete)")
        page.keyboard.press("k")
        page.keyboard.press("x")
        page.wait_for_selector(".card.st-reject")
        page.screenshot(path=str(out / "serve_review.png"))
        page.keyboard.press("Enter")
        page.wait_for_selector("#d-objects tr")
        page.keyboard.press("m")
        page.wait_for_function("() => document.getElementById('d-overlay').complete")
        page.wait_for_timeout(300)
        page.screenshot(path=str(out / "serve_detail.png"))
        page.goto(url + "/leaderboard")
        page.wait_for_function("() => [...document.querySelectorAll('#prompt-grid img')].every(i => i.complete)")
        page.screenshot(path=str(out / "serve_leaderboard.png"), full_page=True)
        page.goto(url + "/search")
        page.fill("#s-text", "a crimson coloured square")
        page.keyboard.press("Enter")
        page.wait_for_selector(".hit", timeout=120_000)
        page.wait_for_function("() => [...document.querySelectorAll('.samples img')].every(i => i.complete)")
        page.screenshot(path=str(out / "serve_search.png"))
        b.close()


if __name__ == "__main__":
    main()
