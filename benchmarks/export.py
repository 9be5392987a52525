"""Export throughput: final images per second for N synthetic complete items (s1-s3 fabricated as the
stage contracts say, s4 run with the template captioner), all formats together and one by one.

    python benchmarks/export.py [--items 500] [--size 512] [--workers 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gen4gen.console import console  # noqa: E402
from gen4gen.stages import export, s4_caption  # noqa: E402
from tests.conftest import make_cfg  # noqa: E402
from tests.helpers.trees import make_pipeline  # noqa: E402
from timing import timed  # noqa: E402  (benchmarks/timing.py: the script folder is on sys.path)

CONCEPTS = ["cat", "dog", "plant", "teddy_bear", "mug", "lamp", "backpack", "owl"]


def scenes(n_compositions: int, size: int, per_scene: int = 10) -> dict:
    """Scenes of ``per_scene`` compositions each (as a user's scene folder yields many), every composition
    2-3 of the scene's concepts side by side, boxes scaled to ``size``."""
    out: dict = {}
    for i in range(n_compositions):
        scene = i // per_scene
        pool = [CONCEPTS[(scene + j) % len(CONCEPTS)] for j in range(3)]  # the scene's concepts
        k = 2 + i % 2
        names = pool[:k] if i % 3 else pool[-k:]
        w = size // (k + 1)
        objects = [(c, 0, (j * size // k + 8, size // 3 + (j % 2) * size // 10, w, size // 2))
                   for j, c in enumerate(names)]
        comp = f"{'+'.join(sorted(names))}_{i % per_scene:03d}"
        out.setdefault(f"scene{scene:03d}", []).append((comp, "in the garden", objects))
    return out



def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=500)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        make_pipeline(root, size=(args.size, args.size), variants=("v0_procedural", "v1_photo"),
                      scenes=scenes(args.items // 2, args.size))
        console.print(f"fabricated {args.items} final images at {args.size} px in {time.perf_counter() - t0:.0f} s")
        base = [f"workers={args.workers}", "export.name=bench"]
        cfg = make_cfg(root, *base, "caption.clip_tokenizer=null")
        rows = [("s4 captions (template)", timed(lambda: s4_caption.run(cfg), 1))]
        import webdataset  # noqa: F401 - import once (it pulls in torch), not inside a timing

        runs = [("export: all 5 formats + gallery", [])]
        runs += [(f"export: {fmt} only", [f"export.formats=[{fmt}]", "export.gallery=false"])
                 for fmt in ("mycanvas", "customdiffusion", "imagefolder", "coco", "webdataset")]
        runs += [("export: gallery only", ["export.formats=[]"])]
        size_mb = 0.0
        marker = root / "stages" / export.DIR_NAME / "bench.meta.json"

        def rebuild(cfg):  # without its marker the dataset is built again: each repeat times a build, not a skip
            marker.unlink(missing_ok=True)
            return export.run(cfg)

        for name, overrides in runs:
            cfg = make_cfg(root, *base, *overrides)
            rows.append((name, timed(lambda: rebuild(cfg), args.repeat)))
            if not overrides:
                size_mb = sum(p.stat().st_size for p in (root / "outputs/datasets/bench").rglob("*")
                              if p.is_file()) / 1e6
                rows.append(("export: rerun on the unchanged tree (skip)", timed(lambda: export.run(cfg), args.repeat)))
    print(f"\n{args.items} final images, {args.size}x{args.size} px, workers={args.workers}, cpu_count={os.cpu_count()}")
    print("| step | seconds | images/s |\n|---|---|---|")
    for name, s in rows:
        print(f"| {name} | {s:.1f} | {args.items / s:.0f} |")
    print(f"(dataset with every format: {size_mb:.0f} MB)")


if __name__ == "__main__":
    main()
