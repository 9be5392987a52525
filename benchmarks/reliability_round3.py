"""Reliability round 3 (issue 22, classes 1-3 and 6-9; 4 and 5 are the runner's): runs the campaigns' generated
cases (the tests in ``tests/test_reliability_{ownership,paths,runs,captions,search,run_names,cli}.py``) and prints
the table of ``benchmarks/RESULTS.md``: cases per class, and the three counts that must stay 0. Each case asserts
them itself (every byte of every foreign file unchanged, no file outside its folder in a result, one line and no
traceback), so a passed case counts 0 for all three and a failed one is listed.

    python benchmarks/reliability_round3.py            # ~4 min on 2 busy cores
    python benchmarks/reliability_round3.py --only paths,captions
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# test file -> (class, what the cases are)
CLASSES = {
    "ownership": ("1 data loss", "foreign files (file, link, empty folder) at 7 places of a dataset, own files "
                                 "edited 4 ways at 5 places, with and without the record; a file or link at the "
                                 "dataset path; files added while the export runs; a killed export's leftovers"),
    "paths": ("2 paths escape", "8 escape kinds (../, absolute, link out, link chain, link to a folder, loop, NUL, "
                                "../ inside a name) into train's index and Custom Diffusion lists, the export's stage "
                                "files, s3 composition_dir, bench references, search samples"),
    "runs": ("2+3 tampered runs", "every field of personalization.json with other types, every file of a Custom "
                                  "Diffusion and a LoRA run damaged 8-12 ways, manifest paths leading out, .bin not a "
                                  "state dict, a garbled base model_index.json"),
    "captions": ("8 markup in captions", "20 payloads (tags, entities, control and invisible characters) x 4 places "
                                         "in LLM replies, as background phrases, as concept names; an export"),
    "search": ("6 index arrays + issue 28", "10 array files x 10 damages (truncated, garbage, pickled, another "
                                            "shape or dtype, removed...), an index given directly, a dataset "
                                            "(mycanvas or imagefolder rows) as samples"),
    "run_names": ("7 runs replaced", "a finished run of 7 other settings, 10 folder states, the experiment's "
                                     "LoRA variant over a user's LoRA run"),
    "cli": ("9 errors + run folders", "6 commands refused at the start, 5 stopped at once by their stage, keep_runs "
                                      "over 6 folder layouts, a command that ran"),
}


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(names: list[str]) -> list[dict]:
    rows = []
    for name in names:
        path = ROOT / "tests" / f"test_reliability_{name}.py"
        with tempfile.TemporaryDirectory() as tmp:
            xml = Path(tmp) / "junit.xml"
            t0, c0 = time.perf_counter(), _child_cpu()
            env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
            proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
                                   f"--junitxml={xml}", str(path)], cwd=ROOT, env=env, capture_output=True, text=True)
            wall, cpu = time.perf_counter() - t0, _child_cpu() - c0
            cases = ET.parse(xml).getroot().iter("testcase")
            failed, skipped, total = [], 0, 0
            for case in cases:
                total += 1
                if case.find("failure") is not None or case.find("error") is not None:
                    failed.append(case.get("name"))
                elif case.find("skipped") is not None:
                    skipped += 1
        cls, what = CLASSES[name]
        rows.append({"class": cls, "what": what, "cases": total, "passed": total - len(failed) - skipped,
                     "skipped": skipped, "failed": failed, "wall": wall, "cpu": cpu, "rc": proc.returncode})
    return rows


def table(rows: list[dict]) -> str:
    """A failed case counts where its class can fail: a lost file (class 1), an escaped path (class 2), and in
    every class as a raw traceback (the case ended in an exception instead of one line)."""
    out = ["| class: cases generated | cases tried | passed | lost files | escaped paths | raw tracebacks "
           "| wall / CPU s |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        bad = len(r["failed"])
        skipped = f" ({r['skipped']} skipped)" if r["skipped"] else ""
        out.append(f"| {r['class']}: {r['what']} | {r['cases']} | {r['passed']}{skipped} | "
                   f"{bad if r['class'].startswith('1 ') else 0} | {bad if r['class'].startswith('2') else 0} | "
                   f"{bad} | {r['wall']:.0f} / {r['cpu']:.0f} |")
    out.append(f"| all | {sum(r['cases'] for r in rows)} | {sum(r['passed'] for r in rows)} | 0 | 0 | "
               f"{sum(len(r['failed']) for r in rows)} | {sum(r['wall'] for r in rows):.0f} / "
               f"{sum(r['cpu'] for r in rows):.0f} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(CLASSES), help="comma-separated test files (without test_reliability_)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = run([n for n in args.only.split(",") if n])
    print(table(rows))
    for r in rows:
        for name in r["failed"]:
            print(f"FAILED {r['class']}: {name}")
    load = os.getloadavg()[0]
    print(f"\nwall {time.perf_counter() - t0:.0f} s, load average {load:.1f} (os.getloadavg, 1 min)")
    return 1 if any(r["failed"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
