"""Example scenes made from the real photos that scikit-image ships (no download, nothing committed).

``python -m gen4gen.examples [--dest data/demo/s0_source_images]`` writes, only where absent (the demo's own
source folder, ``+experiment=demo``; never your ``data/s0_source_images``)::

    cat_and_cup/cat/*.jpg          (scikit-image ``chelsea``, a cat)
    cat_and_cup/cup/*.jpg          (``coffee``, a cup of coffee)
    astronaut_and_rocket/astronaut/*.jpg   (``astronaut``, Eileen Collins)
    astronaut_and_rocket/rocket/*.jpg      (``rocket``, a Falcon 9 on the pad)

Each concept gets several distinct photos (the original, a mirrored and a smaller copy),
as a user would take several shots of their own cat.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

TAGS = ("01", "02_mirrored", "03_small")
# scene -> concept -> scikit-image loader name (all bundled with the package, no pooch download)
SCENES = {
    "cat_and_cup": {"cat": "chelsea", "cup": "coffee"},
    "astronaut_and_rocket": {"astronaut": "astronaut", "rocket": "rocket"},
}


def variants(photo: np.ndarray) -> dict[str, np.ndarray]:
    """Three distinct files of one photo: as is, mirrored, and smaller. Whole frames on purpose: a tight
    crop of ``chelsea`` (a face filling the frame) already defeats U²-Net-p's saliency."""
    h, w = photo.shape[:2]
    small = Image.fromarray(photo).resize((round(w * 0.75), round(h * 0.75)), Image.Resampling.LANCZOS)
    return dict(zip(TAGS, (photo, np.ascontiguousarray(photo[:, ::-1]), np.asarray(small))))


def make_examples(dest: Path) -> list[Path]:
    """Write the example photos that are missing under ``dest``; returns the files written."""
    from skimage import data

    written = []
    for scene, concepts in SCENES.items():
        for concept, loader in concepts.items():
            folder = dest / scene / concept
            if all((folder / f"{concept}_{tag}.jpg").exists() for tag in TAGS):
                continue
            photo = np.asarray(getattr(data, loader)())[..., :3]
            folder.mkdir(parents=True, exist_ok=True)
            for tag, image in variants(photo).items():
                path = folder / f"{concept}_{tag}.jpg"
                if path.exists():
                    continue
                tmp = path.with_name(f".{path.name}.tmp")
                Image.fromarray(image).save(tmp, format="JPEG", quality=95)
                tmp.replace(path)
                written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gen4gen.examples", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dest", default="data/demo/s0_source_images",
                    help="source folder (the demo's paths.source_dir, conf/experiment/demo.yaml)")
    args = ap.parse_args(argv)
    written = make_examples(Path(args.dest))
    print(f"{len(written)} example photos written under {args.dest}" if written
          else f"example scenes already present under {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
