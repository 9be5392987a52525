"""Runner overhead, before vs after, side by side in one run.

A no-op stage (``process`` returns ``{}``: the runner writes only each item's ``meta.json``) over N items:
``first`` = every item pending (overhead per item: discovery, sharding, the done check, the thread pool, the
atomic fsync'd marker write, failures file), ``rerun`` = every item already done (what a resumed or repeated
run pays before doing anything). ``after`` is this checkout; ``before`` is the code at ``--base`` (the original
commit checked out there), imported in its own subprocess with that folder first on ``sys.path``. Runs
alternate before/after so both see the same machine load; wall and process CPU time are reported.

    python benchmarks/runner.py --items 10000 --repeats 3 [--no-fsync] [--base /work/base]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
from pathlib import Path
from omegaconf import OmegaConf
import gen4gen.runner as R

out = Path(sys.argv[1])
n, workers, batch, reruns, fsync = (int(a) for a in sys.argv[2:7])
if not fsync:  # the runner's own overhead, without the disk's flush time (which swamps it on a shared disk)
    import os
    os.fsync = lambda fd: None

class NoOp:
    name = "noop"
    out_root = out
    workers = 1
    def discover(self):
        return [R.Item(f"s{k % 7}/c{k % 13}/{k:06d}", out / f"s{k % 7}/c{k % 13}/{k:06d}", {"path": str(k)})
                for k in range(n)]
    def config(self):
        return {"v": 1}
    def process(self, item, w, rng):
        return {}

class NoOpBatched(NoOp):
    def process_batch(self, items, writers, rngs):
        return [{} for _ in items]

stage = NoOpBatched() if batch > 1 else NoOp()
stage.workers = workers
stage.batch_size = batch
cfg = OmegaConf.create({"seed": 0, "stage": "noop", "shard": {"index": 0, "count": 1}})
res = {"runner": R.__file__}
for phase in ["first"] + ["rerun"] * reruns:
    w0, c0 = time.perf_counter(), time.process_time()
    s = R.run_stage(stage, cfg)
    res.setdefault(phase, []).append({"wall": time.perf_counter() - w0, "cpu": time.process_time() - c0,
                                      "done": s.done, "skipped": s.skipped})
print(json.dumps(res))
"""


def one(code_root: Path, items: int, workers: int, batch: int, reruns: int, fsync: bool) -> dict:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        env = {**os.environ, "PYTHONPATH": str(code_root)}
        r = subprocess.run([sys.executable, "-c", CHILD, str(Path(tmp) / "out"), str(items), str(workers), str(batch),
                            str(reruns), str(int(fsync))],
                           env=env, capture_output=True, text=True, cwd=tmp)
        if r.returncode:
            raise SystemExit(f"{code_root}: {r.stderr[-2000:]}")
        res = json.loads(r.stdout.strip().splitlines()[-1])
        # a rerun's figure: the median of its repeats in this process (the first run happens once)
        return {"runner": res["runner"], "first": res["first"][0],
                "rerun": {k: statistics.median(x[k] for x in res["rerun"]) for k in ("wall", "cpu", "skipped")},
                "rerun_walls": [round(x["wall"], 3) for x in res["rerun"]]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--reruns", type=int, default=5, help="reruns per process (median)")
    ap.add_argument("--no-fsync", action="store_true", help="os.fsync as a no-op: the runner's CPU overhead alone")
    ap.add_argument("--base", default="/work/base")
    args = ap.parse_args()
    variants = {"before": (Path(args.base), 1), "after": (ROOT, 1), "after, batch hook (16)": (ROOT, 16)}
    runs: dict[str, list[dict]] = {k: [] for k in variants}
    load = [os.getloadavg()[0]]
    names = list(variants)
    for rep in range(args.repeats):
        for name in names[rep % len(names):] + names[:rep % len(names)]:  # rotated: no variant always goes first
            root, batch = variants[name]
            res = one(root, args.items, args.workers, batch, args.reruns, not args.no_fsync)
            assert res["runner"].startswith(str(root)), res["runner"]
            assert res["first"]["done"] == args.items and res["rerun"]["skipped"] == args.items
            runs[name].append(res)
            load.append(os.getloadavg()[0])
    n = args.items
    print(f"{n} items, {args.repeats} processes per variant (median; each rerun figure itself the median of "
          f"{args.reruns} reruns), workers={args.workers}, fsync={'off' if args.no_fsync else 'on'}, "
          f"load average {min(load):.1f}-{max(load):.1f} on {os.cpu_count()} cores")
    print("| variant | first run: wall s | us/item wall | us/item CPU | rerun (all done): wall s | CPU s "
          "| ratio first / rerun vs before |")
    print("|---|---|---|---|---|---|---|")
    med = {name: {ph: {k: statistics.median(r[ph][k] for r in rs) for k in ("wall", "cpu")}
                  for ph in ("first", "rerun")} for name, rs in runs.items()}
    for name, m in med.items():
        ratio = (f"{m['first']['wall'] / med['before']['first']['wall']:.2f}x / "
                 f"{m['rerun']['wall'] / med['before']['rerun']['wall']:.2f}x")
        print(f"| {name} | {m['first']['wall']:.2f} | {m['first']['wall'] / n * 1e6:.0f} | "
              f"{m['first']['cpu'] / n * 1e6:.0f} | {m['rerun']['wall']:.3f} | {m['rerun']['cpu']:.3f} | {ratio} |")
    spread = {name: {"first": [round(r["first"]["wall"], 2) for r in rs], "rerun": [r["rerun_walls"] for r in rs]}
              for name, rs in runs.items()}
    print("every run's wall seconds:", json.dumps(spread))


if __name__ == "__main__":
    main()
