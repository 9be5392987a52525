"""How often each stage run opens the stage tree's files: every ``open()`` of a ``meta.json``, ``layout.json``
and ``captions.json`` is counted (``sys.addaudithook``), per stage run and per file, on a generated tree.

    PYTHONPATH=. python benchmarks/tree_opens.py --compositions 1000
    PYTHONPATH=/work/main python benchmarks/tree_opens.py --compositions 1000   # the code before, same tree

The tree (s1 cut-outs, s2 compositions, s3 final images; no manifests, as a tree built by hand) is written
through ``tests.helpers.tree.StageTree`` with small images, so the numbers measure reading, not imaging.
Measured: s2's and s3's discovery (what they read of upstream stages: their processing reads images only),
and whole runs of s4 (template captions) and the export (MyCanvas + COCO, no gallery). For each: opens of
the upstream stages' files (total, per item, and the most any one file was opened), opens of the stage's own
files (its done check) apart, wall and CPU seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parents[1]))  # tests.helpers; the code measured is PYTHONPATH's
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gen4gen.paths import STAGE_DIRS  # noqa: E402
from tests.helpers.tree import StageTree, ellipse  # noqa: E402

NAMES = ("meta.json", "layout.json", "captions.json")
_opens: list[str] | None = None


def _hook(event, args):
    if event == "open" and _opens is not None and isinstance(args[0], (str, os.PathLike)):
        p = os.fspath(args[0])
        if p.endswith(NAMES):
            _opens.append(p)


def build(stages: Path, n: int, scenes: int = 10, side: int = 48) -> int:
    """``n`` compositions over ``scenes`` scenes of two concepts (two photos each), one final image each."""
    tree = StageTree(stages)
    rgba = np.zeros((side, side, 4), np.uint8)
    rgba[..., :3] = 120
    rgba[..., 3] = ellipse((side, side), (4, 4, side - 8, side - 8))
    per = -(-n // scenes)
    made = 0
    for s in range(scenes):
        scene = f"scene{s:02d}"
        for concept in ("cat", "dog"):
            for k in range(2):
                tree.s1_item(scene, concept, f"{concept}_{k}", rgba)
        for c in range(min(per, n - made)):
            comp = f"cat+dog_{c:03d}"
            a = ellipse((side, side), (2, 10, 20, 30))
            b = ellipse((side, side), (26, 12, 20, 30))
            objects = [{"name": "cat_0", "concept": "cat", "index": 0, "box": [2, 10, 20, 30],
                        "mask": "instances/cat_0.png", "source": f"{scene}/cat/cat_0"},
                       {"name": "dog_0", "concept": "dog", "index": 0, "box": [26, 12, 20, 30],
                        "mask": "instances/dog_0.png", "source": f"{scene}/dog/dog_0"}]
            image = np.dstack([a, b, a // 2])
            tree.composition(scene, comp, image=image, rgba=np.dstack([image, np.maximum(a, b)]),
                             mask=np.maximum(a, b), instances={"cat_0": a, "dog_0": b}, objects=objects,
                             layout={"background_prompt": "in the garden"})
            tree.final(scene, comp, "v0_procedural", image=image, mask_used=255 - np.maximum(a, b),
                       background={"kind": "procedural", "phrase": "in the garden"})
            made += 1
    return made


def measure(label: str, fn, own: str) -> dict:
    global _opens
    _opens = []
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        fn()
    finally:
        seen, _opens = _opens, None
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    counts = Counter(seen)
    up = {p: k for p, k in counts.items() if f"/{own}/" not in p and "/outputs/" not in p}
    mine = {p: k for p, k in counts.items() if f"/{own}/" in p}
    by_name = Counter()
    for p, k in up.items():
        by_name[Path(p).name] += k
    return {"run": label, "upstream opens": sum(up.values()), "upstream files": len(up),
            "most opens of one file": max(up.values(), default=0), "by name": dict(sorted(by_name.items())),
            "own files opened": sum(mine.values()), "wall s": round(wall, 2), "cpu s": round(cpu, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compositions", type=int, default=1000)
    ap.add_argument("--json", type=Path, help="write the rows here too")
    ap.add_argument("--tree", type=Path, help="build the tree here once (kept) and measure on a copy of it: the before "
                                              "and after runs then read the same files, and a 10,000-item tree is built once")
    args = ap.parse_args()
    from hydra import compose, initialize_config_dir

    from gen4gen.__main__ import conf_dir
    from gen4gen.stages import export, s2_compose, s3_repaint, s4_caption

    sys.addaudithook(_hook)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        if args.tree:
            if not (args.tree / "stages").is_dir():
                build(args.tree / "stages", args.compositions)
            shutil.copytree(args.tree / "stages", tmp / "stages", symlinks=True)
            n = sum(1 for _ in (tmp / "stages" / STAGE_DIRS["s2"]).glob("*/*/meta.json"))
        else:
            n = build(tmp / "stages", args.compositions)
        built = time.perf_counter() - t0
        over = [f"paths.source_dir={tmp / 'src'}", f"paths.stages_dir={tmp / 'stages'}",
                f"paths.outputs_dir={tmp / 'outputs'}", f"paths.cache_dir={tmp / 'cache'}",
                "compose.num_samples=1", "export.formats=[mycanvas,coco]", "export.gallery=false"]
        with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
            cfg = compose(config_name="config", overrides=over)
        rows = [measure("s2 discover", lambda: s2_compose.ComposeStage(cfg).discover(), STAGE_DIRS["s2"]),
                measure("s3 discover", lambda: s3_repaint.RepaintStage(cfg).discover(), STAGE_DIRS["s3"]),
                measure("s4 run", lambda: s4_caption.run(cfg), STAGE_DIRS["s4"]),
                measure("export run", lambda: export.run(cfg), "outputs")]
    print(f"tree: {n} compositions, {n} final images, 40 cut-outs (built in {built:.1f} s); code: "
          f"{sys.modules['gen4gen'].__file__}")
    for r in rows:
        per = r["upstream opens"] / n
        print(f"{r['run']:12s} upstream opens {r['upstream opens']:6d} ({per:.2f}/composition; "
              f"{r['upstream files']} files, at most {r['most opens of one file']} each) {r['by name']}  "
              f"own {r['own files opened']:5d}  wall {r['wall s']:.2f} s  cpu {r['cpu s']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
