"""s2 benchmark: LLM layout planning wall time and composition throughput.

1. 200 layouts against the local OpenAI-compatible test server answering every request after 250 ms:
   our planner (all requests at once, bounded by llm.concurrency) vs a sequential client with
   Gen4Gen's pacing (one request at a time, a 70 s pause after every 20 requests). The baseline
   replays exactly the requests our planner sent, one after another with the synchronous ``openai``
   client, and its wall time is measured; the 70 s pauses are added arithmetically (not slept).
   A rerun of our planner with the disk cache is timed too.
2. Composition throughput at 1024x1024: the s2 stage (heuristic planner, writes included) on
   synthetic s1 cut-outs of photo size, with ``workers`` threads on this machine's cores.

    python benchmarks/layout.py [--layouts 200] [--latency 0.25] [--compositions 24]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gen4gen.layout.llm import LLMPlanner  # noqa: E402
from gen4gen.layout.schema import ConceptCount, PlanRequest  # noqa: E402
from gen4gen.llm import LLMClient, extract_json  # noqa: E402
from gen4gen.paths import STAGE_DIRS  # noqa: E402
from tests.llm_server import LLMServer, Reply  # noqa: E402
from tests.s2_llm_replies import good_content  # noqa: E402

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
    client = LLMClient(base_url, "bench-model", concurrency=concurrency, max_retries=2, cache_dir=cache_dir)
    planner = LLMPlanner(client=client)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layouts", type=int, default=200)
    ap.add_argument("--latency", type=float, default=0.25)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--compositions", type=int, default=24)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--photo", type=int, nargs=2, default=[1600, 1200], help="synthetic cut-out size W H")
    args = ap.parse_args()

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
