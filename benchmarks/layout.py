"""s2 benchmark: LLM layout planning wall time and composition throughput.

1. 200 layouts against the local OpenAI-compatible test server answering every request after 250 ms:
   our planner (all requests at once, bounded by llm.concurrency) vs a sequential client with
   Gen4Gen's pacing (one request at a time, a 70 s pause after every 20 requests). The baseline
   replays exactly the requests our planner sent, one after another with the synchronous ``openai``
   client, and its wall time is measured; the 70 s pauses are added arithmetically (not slept).
   A rerun of our planner with the disk cache is timed too.
2. Composition throughput at 1024x1024: the s2 stage (heuristic planner, writes included) on
   synthetic s1 cut-outs of photo size, with ``workers`` threads on this machine's cores.
3. Plausibility of the built-in planner's compositions (issue 17): share with occlusion vs
   ``--occlusion``, size-order violations, scene phrase vs drawn background (colour statistics of the
   procedural style), coverage and object heights next to Gen4Gen's own compositions (shared masks),
   and the planner's speed next to the planner at ``--baseline-ref``.

    python benchmarks/layout.py [--layouts 200] [--latency 0.25] [--compositions 24]
    python benchmarks/layout.py --only-plausibility --plausible 150 --baseline-ref 222a4a5
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gen4gen.layout.schema import ConceptCount, PlanRequest  # noqa: E402
from gen4gen.llm.replies import extract_json  # noqa: E402
from gen4gen.paths import STAGE_DIRS  # noqa: E402
from tests.helpers.llm_server import LLMServer, Reply  # noqa: E402
from tests.helpers.s2_llm_replies import good_content  # noqa: E402
from tests.helpers.settings import backend  # noqa: E402

GEN4GEN_BATCH, GEN4GEN_PAUSE = 20, 70.0  # Gen4Gen's script sleeps 70 s after every 20 requests

CONCEPT_SETS = [("cat", "dog"), ("cat", "dog", "houseplant"), ("astronaut", "rocket"), ("cup", "teapot"),
                ("dog", "teddy_bear"), ("lion", "cat"), ("car", "bicycle", "dog"), ("houseplant", "vase"),
                ("guitar", "chair"), ("cat", "cup", "book", "lamp")]


def plan_requests(n: int) -> list[PlanRequest]:
    per_set = -(-n // len(CONCEPT_SETS))
    reqs = [PlanRequest(tuple(ConceptCount(c) for c in names), (1024, 1024), seed=1000 * i + k, sample=k,
                        key=f"bench/{'+'.join(names)}_{k:03d}")
            for i, names in enumerate(CONCEPT_SETS) for k in range(per_set)]
    return reqs[:n]


def ours(base_url: str, requests, concurrency: int, cache_dir: Path | None):
    from tests.helpers.llm_server import llm_client

    client = llm_client(base_url, "bench-model", api_key_env=None, concurrency=concurrency, max_retries=2,
                        cache_dir=cache_dir)  # the local test server takes no key
    planner = backend("layout", "llm", client=client)
    t0 = time.perf_counter()
    layouts = planner.plan_many(requests)
    return time.perf_counter() - t0, layouts


def sequential_baseline(base_url: str, bodies: list[dict]) -> tuple[float, int]:
    """Gen4Gen's way: one blocking request at a time; returns the measured wall time and valid replies."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="no-key", max_retries=2)
    ok = 0
    t0 = time.perf_counter()
    for body in bodies:
        resp = client.chat.completions.create(model=body["model"], messages=body["messages"],
                                              temperature=body.get("temperature", 0.7))
        try:
            extract_json(resp.choices[0].message.content or "")
            ok += 1
        except ValueError:
            pass
    return time.perf_counter() - t0, ok


def bench_layouts(n: int, latency: float, concurrencies: list[int]) -> list[tuple]:
    rows = []
    with LLMServer(lambda body, k: Reply(good_content(body), delay=latency)) as srv:
        requests = plan_requests(n)
        for conc in concurrencies:
            start = len(srv.requests)
            wall, layouts = ours(srv.base_url, requests, conc, None)
            n_req = len(srv.requests) - start
            llm_made = sum(lay.planner == "llm" for lay in layouts)
            rows.append((f"ours, concurrency {conc}", n_req, wall, 0.0, wall, llm_made, srv.max_in_flight))
        bodies = srv.requests[:n_req]  # exactly what our planner asked, in its order
        with tempfile.TemporaryDirectory() as cache:
            ours(srv.base_url, requests, concurrencies[-1], Path(cache))
            before = len(srv.requests)
            wall, layouts = ours(srv.base_url, requests, concurrencies[-1], Path(cache))
            rows.append(("ours, rerun from the disk cache", len(srv.requests) - before, wall, 0.0, wall,
                         sum(lay.planner == "llm" for lay in layouts), 0))
        wall, ok = sequential_baseline(srv.base_url, bodies)
        pauses = (len(bodies) - 1) // GEN4GEN_BATCH * GEN4GEN_PAUSE
        rows.append(("sequential + Gen4Gen pacing", len(bodies), wall, pauses, wall + pauses, ok, 1))
    return rows


def bench_compose(n: int, workers: int, photo: tuple[int, int]) -> dict:
    from tests.conftest import make_cfg
    from tests.helpers.trees import fake_s1
    from gen4gen.stages.s2_compose import run

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fake_s1(tmp / "stages", {"bench": {"cat": 3, "dog": 3, "houseplant": 3}}, size=photo, soft=True)
        cfg = make_cfg(tmp, "stage=s2", f"compose.num_samples={n}", "compose.size=[1024,1024]", f"workers={workers}")
        t0 = time.perf_counter()
        summary = run(cfg)
        wall = time.perf_counter() - t0
        import json

        metas = [json.loads(p.read_text()) for p in (tmp / "stages" / STAGE_DIRS["s2"]).rglob("meta.json")]
    timing = {k: sum(m["timing"][k] for m in metas) / max(1, len(metas)) for k in ("plan_s", "compose_s", "write_s")}
    return {"done": summary.done, "wall": wall, "rate": summary.done / wall, **timing}


# ---------------------------------------------------------------- plausibility (issue 17)
GEN4GEN_DIR = Path(os.environ.get("GEN4GEN_SHARED_DATA", ROOT.parent / "shared" / "data")) / "compositions" / "gen4gen"
PLAUSIBLE_SETS = [("cat", "lion"), ("cat", "dog", "houseplant"), ("cat", "dog", "dog2", "horse"),
                  ("astronaut", "rocket"), ("cup", "teapot", "book")]


def mask_stats(mask: np.ndarray) -> dict:
    """Coverage and per-object heights (fractions of H) of a composition's union mask (objects =
    connected components of at least 0.2 % of the canvas)."""
    import cv2

    solid = (mask > 127).astype(np.uint8)
    _, _, st, _ = cv2.connectedComponentsWithStats(solid, connectivity=8)
    H = mask.shape[0]
    heights = [int(s[3]) / H for s in st[1:] if s[4] >= 0.002 * mask.size]
    return {"coverage": float(solid.mean()), "heights": heights, "largest": max(heights, default=0.0)}


def gen4gen_reference() -> list[dict]:
    import cv2

    return [mask_stats(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)) for p in sorted(GEN4GEN_DIR.glob("*_mask_*.png"))]


def _heuristic_from(ref: str):
    """The built-in planner as it was at git ``ref`` (for a side-by-side speed and coverage run)."""
    import subprocess
    import types

    code = subprocess.run(["git", "show", f"{ref}:gen4gen/layout/heuristic.py"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout
    mod = types.ModuleType("heuristic_baseline")
    exec(compile(code, f"{ref}:heuristic.py", "exec"), mod.__dict__)  # noqa: S102 - our own file at a commit
    return mod.HeuristicPlanner


def yaml_composer(tmp: Path):
    """The s2 composer of the yaml's ``compose`` and ``io`` sections."""
    from gen4gen.layout.compose import Composer
    from gen4gen.settings import section
    from gen4gen.stage_settings import ComposeSettings, IOSettings
    from tests.conftest import make_cfg

    cfg = make_cfg(tmp)
    return Composer(section(cfg, "compose", ComposeSettings), section(cfg, "io", IOSettings))


def plausibility_report(n: int, occlusion: float, size: int, baseline_ref: str | None) -> dict:
    """N compositions over PLAUSIBLE_SETS through planner + composer (synthetic cut-outs shaped like their
    category, their aspect passed to the planner as the s2 stage does), each composition measured."""
    import tempfile as tf

    from gen4gen.layout.compose import Source, with_boxes
    from gen4gen.layout.heuristic import size_prior
    from gen4gen.layout.plausibility import occluded, plausibility_of
    from gen4gen.stages.s2_compose import concept_aspect, read_s1
    from gen4gen.tree import TreeView
    from gen4gen.layout.scenes import STYLE_PHRASES, style_for
    from gen4gen.repaint.backgrounds import procedural
    from tests.helpers.background_signatures import looks_like
    from tests.helpers.trees import fake_s1

    planners = {"ours": backend("layout", "heuristic", occlusion=occlusion)}
    if baseline_ref:
        planners[f"baseline {baseline_ref[:7]}"] = _heuristic_from(baseline_ref)()
    intended = {p: s for s, ps in STYLE_PHRASES.items() for p in ps}
    out = {}
    with tf.TemporaryDirectory() as tmp:
        names = sorted({c for s in PLAUSIBLE_SETS for c in s})
        for i, c in enumerate(names):  # cut-outs shaped like the thing (a tall plant, a wide horse), as s1 gives
            fake_s1(Path(tmp), {"bench": {c: 2}}, size=(round(400 * size_prior(c)[2]), 400), soft=True, seed=10 * i)
        found = read_s1(TreeView(tmp))[0]
        src: dict[str, list[Source]] = {c: [s for s, _ in v] for c, v in found["bench"].items()}
        aspect = {c: concept_aspect(v) for c, v in src.items()}  # what the s2 stage tells the planner
        composer = yaml_composer(Path(tmp))
        for label, planner in planners.items():
            rows = []
            per_set = -(-n // len(PLAUSIBLE_SETS))
            for si, names_ in enumerate(PLAUSIBLE_SETS):
                for k in range(per_set):
                    r = PlanRequest(tuple(ConceptCount(c, 1, aspect[c]) for c in names_), (size, size), 7919 * si + k,
                                    sample=k)
                    lay = planner.plan(r)
                    comp = composer.compose(lay, src, np.random.default_rng(r.seed), replan=lambda a, r=r, lay=lay:
                                            with_boxes(lay, planner.plan(r.reseeded(r.seed + 7919 * a),
                                                                         ratios=lay.size_ratios, scenes=lay.scenes)))
                    check = plausibility_of(comp.layout, comp.objects)
                    phrase = comp.layout.background_prompt
                    style = style_for(phrase)
                    hz = (comp.layout.camera or {}).get("horizon", 0.42)
                    drawn = looks_like(procedural(style, 192, 192, np.random.default_rng(k), horizon=hz), hz)
                    rows.append({**mask_stats(comp.mask), "occluded": occluded(comp.objects),
                                 "violations": len(check["size_order_violations"]),
                                 "agrees": drawn == intended.get(phrase, style) and phrase in intended,
                                 "min_visible": min(o["visible_fraction"] for o in comp.objects)})
            out[label] = rows[:n]
    return out


def _q(values, qs=(10, 50, 90)) -> str:
    return " / ".join(f"{np.percentile(values, q):.2f}" for q in qs) if len(values) else "-"


def print_plausibility(report: dict, ref: list[dict], occlusion: float) -> None:
    print(f"\nplausibility of the built-in planner's compositions (compose.occlusion {occlusion:.0%}); "
          "p10 / p50 / p90 where three numbers")
    print(f"{'layouts':24} {'n':>4} {'occluded':>9} {'order viol.':>11} {'phrase=drawn':>12} {'min visible':>11} "
          f"{'coverage':>18} {'largest obj. H':>18} {'object H':>18}")
    for label, rows in report.items():
        print(f"{label:24} {len(rows):4d} {np.mean([r['occluded'] for r in rows]):9.0%} "
              f"{sum(r['violations'] for r in rows):11d} {np.mean([r['agrees'] for r in rows]):12.0%} "
              f"{min(r['min_visible'] for r in rows):11.2f} {_q([r['coverage'] for r in rows]):>18} "
              f"{_q([r['largest'] for r in rows]):>18} {_q([h for r in rows for h in r['heights']]):>18}")
    if ref:
        print(f"{'Gen4Gen (shared masks)':24} {len(ref):4d} {'-':>9} {'-':>11} {'-':>12} {'-':>11} "
              f"{_q([r['coverage'] for r in ref]):>18} {_q([r['largest'] for r in ref]):>18} "
              f"{_q([h for r in ref for h in r['heights']]):>18}")


def planner_speed(ref: str | None, repeats: int = 3) -> list[tuple]:
    """ms per layout (wall and CPU) of our planner and the one at ``ref``, interleaved in one run."""

    reqs = [PlanRequest(tuple(ConceptCount(c) for c in s), (1024, 1024), seed=i, sample=i)
            for i in range(300) for s in PLAUSIBLE_SETS]
    planners = {"ours": backend("layout", "heuristic")}
    if ref:
        planners[f"baseline {ref[:7]}"] = _heuristic_from(ref)()
    times = {k: [] for k in planners}
    for _ in range(repeats):
        for label, p in planners.items():
            t0, c0 = time.perf_counter(), time.process_time()
            for r in reqs:
                p.plan(r)
            times[label].append(((time.perf_counter() - t0) / len(reqs) * 1e3,
                                 (time.process_time() - c0) / len(reqs) * 1e3))
    return [(label, [w for w, _ in t], [c for _, c in t]) for label, t in times.items()]


# ---------------------------------------------------------------- contact sheet (look at it)
def contact_sheet(path: Path, seeds: int = 8, side: int = 384) -> Path:
    """A cat, two dogs and a horse: the shared pet photos cut out with their IS-Net masks and scikit-image's
    horse silhouette (painted brown), planned, composed and repainted by the classical backend over the
    background the layout names, one tile per seed, captioned with the phrase and what is hidden."""
    import cv2
    from skimage import data as skdata

    from gen4gen.io import png_bytes, write_atomic
    from gen4gen.layout.compose import Source, with_boxes
    from gen4gen.repaint import RepaintJob
    from gen4gen.repaint.backgrounds import procedural, style_for
    from gen4gen.repaint.mask import repaint_mask

    seg = GEN4GEN_DIR.parent.parent / "segmentation" / "gen4gen"
    with tempfile.TemporaryDirectory() as tmp:
        src: dict[str, list[Source]] = {}
        for concept, stem in (("cat", "cat_01"), ("dog", "dog_01"), ("dog", "dog_02")):
            rgb = cv2.cvtColor(cv2.imread(str(seg / "images" / f"{stem}.jpg")), cv2.COLOR_BGR2RGB)
            alpha = cv2.imread(str(seg / "isnet_ref" / f"{stem}.png"), cv2.IMREAD_GRAYSCALE)
            alpha = cv2.resize(alpha, (rgb.shape[1], rgb.shape[0]))
            p = Path(tmp) / f"{stem}.png"
            write_atomic(p, png_bytes(np.dstack([rgb, alpha])))
            ys, xs = np.nonzero(alpha > 127)
            src.setdefault(concept, []).append(Source(stem, p, float(np.ptp(xs) + 1) / float(np.ptp(ys) + 1)))
        sil = skdata.horse()  # True = background
        body = (~sil).astype(np.uint8) * 255
        rng = np.random.default_rng(0)
        shade = np.clip(np.array([120, 78, 46], np.float32) * (0.85 + 0.3 * rng.random(body.shape)[..., None]), 0, 255)
        p = Path(tmp) / "horse.png"
        write_atomic(p, png_bytes(np.dstack([shade.astype(np.uint8), cv2.GaussianBlur(body, (0, 0), 1.0)])))
        src["horse"] = [Source("horse", p, body.shape[1] / body.shape[0])]
        planner = backend("layout", "heuristic", occlusion=0.5)
        composer = yaml_composer(Path(tmp))
        inpainter = backend("inpainter", "classical")
        concepts = (ConceptCount("cat", 1, src["cat"][0].aspect), ConceptCount("dog", 2, src["dog"][0].aspect),
                    ConceptCount("horse", 1, src["horse"][0].aspect))
        tiles = []
        for k in range(seeds):
            r = PlanRequest(concepts, (side, side), 1000 + k, sample=k)
            lay = planner.plan(r)
            comp = composer.compose(lay, src, np.random.default_rng(k), replan=lambda a, r=r, lay=lay: with_boxes(
                lay, planner.plan(r.reseeded(r.seed + 7919 * a), ratios=lay.size_ratios, scenes=lay.scenes)))
            lay = comp.layout
            bg = procedural(style_for(lay.background_prompt), side, side, np.random.default_rng(k),
                            horizon=lay.camera["horizon"])
            job = RepaintJob(rgb=comp.rgba[..., :3].copy(), alpha=comp.mask.astype(np.float32) / 255.0,
                             repaint=repaint_mask(comp.mask), background=bg)
            tile = inpainter([job])[0].copy()
            hidden = [f"{o['name']} {1 - o['visible_fraction']:.0%}" for o in comp.objects
                      if o["visible_fraction"] < 0.99]
            caption = f"{lay.background_prompt}" + (f" | hidden: {', '.join(hidden)}" if hidden else "")
            cv2.rectangle(tile, (0, side - 22), (side, side), (0, 0, 0), -1)
            cv2.putText(tile, caption[:60], (6, side - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1,
                        cv2.LINE_AA)
            tiles.append(tile)
    cols = 4
    rows = [np.hstack(tiles[i:i + cols]) for i in range(0, len(tiles), cols)]
    sheet = np.vstack(rows)
    path.write_bytes(png_bytes(sheet))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layouts", type=int, default=200)
    ap.add_argument("--latency", type=float, default=0.25)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--compositions", type=int, default=24)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--photo", type=int, nargs=2, default=[1600, 1200], help="synthetic cut-out size W H")
    ap.add_argument("--plausible", type=int, default=150, help="compositions in the plausibility report (0: skip)")
    ap.add_argument("--occlusion", type=float, default=0.3)
    ap.add_argument("--size", type=int, default=1024, help="canvas side of the plausibility compositions")
    ap.add_argument("--baseline-ref", default=None, help="git ref of the built-in planner to compare with")
    ap.add_argument("--only-plausibility", action="store_true")
    ap.add_argument("--contact-sheet", type=Path, default=None, help="write a contact sheet PNG of a 4-instance scene")
    args = ap.parse_args()

    if args.contact_sheet:
        print(f"contact sheet: {contact_sheet(args.contact_sheet)}")

    if args.plausible:
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
        for label, walls, cpus in planner_speed(args.baseline_ref):
            print(f"planner {label:20} ms/layout wall {' '.join(f'{v:.3f}' for v in walls)}  "
                  f"cpu {' '.join(f'{v:.3f}' for v in cpus)}")
        print_plausibility(plausibility_report(args.plausible, args.occlusion, args.size, args.baseline_ref),
                           gen4gen_reference(), args.occlusion)
    if args.only_plausibility:
        return
    rows = bench_layouts(args.layouts, args.latency, args.concurrency)
    base = rows[-1][4]
    print(f"\n{args.layouts} layouts, test server answering after {args.latency * 1000:.0f} ms per request")
    print(f"{'client':34} {'requests':>8} {'measured s':>10} {'+pauses s':>9} {'total s':>9} {'valid':>6} "
          f"{'in flight':>9} {'speed-up':>9}")
    for name, n_req, wall, pauses, total, ok, inflight in rows:
        print(f"{name:34} {n_req:8d} {wall:10.2f} {pauses:9.0f} {total:9.2f} {ok:6d} {inflight:9d} "
              f"{base / total:8.1f}x")
    c = bench_compose(args.compositions, args.workers, tuple(args.photo))
    print(f"\ncomposition at 1024x1024 (heuristic planner, 3 objects, {args.photo[0]}x{args.photo[1]} cut-outs, "
          f"{args.workers} workers, {os.cpu_count()} cores)")
    print(f"{'compositions':>12} {'wall s':>8} {'per s':>8} {'compose s/item':>15} {'write s/item':>13}")
    print(f"{c['done']:12d} {c['wall']:8.2f} {c['rate']:8.2f} {c['compose_s']:15.3f} {c['write_s']:13.3f}")


if __name__ == "__main__":
    main()
