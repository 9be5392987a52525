"""Running the real CLI in a subprocess on small real photos, and comparing what two runs wrote."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from gen4gen.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[2]
# small and fast, but every stage and every export format runs
FAST = ["compose.num_samples=2", "compose.size=[256,256]", "export.reference_size=128", "export.thumb_size=96",
        "workers=2"]


def small_sources(src: Path) -> Path:
    """Two scenes of two concepts, two photos each, from scikit-image's bundled real photos."""
    from skimage import data

    photos = {"pets": {"cat": data.chelsea(), "cup": data.coffee()},
              "space": {"astronaut": data.astronaut(), "rocket": data.rocket()}}
    for scene, concepts in photos.items():
        for concept, rgb in concepts.items():
            folder = src / scene / concept
            folder.mkdir(parents=True, exist_ok=True)
            img = Image.fromarray(rgb)
            img.thumbnail((240, 240))
            img.save(folder / "a.jpg", quality=92)
            img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).crop((4, 4, img.width - 4, img.height - 4)).save(folder / "b.png")
    return src


def cli(workdir: Path, *overrides: str, env: dict | None = None, check: bool = True,
        **popen) -> subprocess.CompletedProcess | subprocess.Popen:
    """``python -m gen4gen`` run in ``workdir`` (stages/, outputs/ and src/ relative to it)."""
    flags = [o for o in overrides if o.startswith("-")]  # Hydra's flags (-m) go before the overrides
    cmd = [sys.executable, "-m", "gen4gen", *flags, "paths.source_dir=src", "paths.stages_dir=stages",
           "paths.outputs_dir=outputs", *(o for o in overrides if not o.startswith("-"))]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **(env or {})}
    if popen.pop("background", False):
        return subprocess.Popen(cmd, cwd=workdir, env=full_env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, **popen)
    result = subprocess.run(cmd, cwd=workdir, env=full_env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"gen4gen exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


VOLATILE = {"seconds", "planning_seconds", "timing", "started", "finished"}


def _stable(meta):
    if isinstance(meta, dict):
        return {k: _stable(v) for k, v in meta.items() if k not in VOLATILE}
    if isinstance(meta, list):
        return [_stable(v) for v in meta]
    return meta


def snapshot(root: Path) -> dict[str, object]:
    """What a run produced: file bytes, meta.json without timings; failure and manifest files by content only."""
    out: dict[str, object] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if not p.is_file() or "/." in f"/{rel}" or rel.startswith(("outputs/runs", "outputs/multiruns")):
            continue
        if rel.startswith("stages/export/") and not p.name.startswith("failures"):
            # the export's marker and manifest: their hashes name this tree's dataset path and its input files'
            # times, so two trees compare by what they say was exported
            data = json.loads(p.read_text("utf-8"))
            out[rel] = sorted(data["items"]) if p.name.startswith("manifest") else \
                {k: data[k] for k in ("id", "images", "exported", "failures")}
        elif p.name == "meta.json":
            out[rel] = _stable(json.loads(p.read_text("utf-8")))
        elif p.name.startswith("failures") and p.suffix == ".jsonl":
            key = rel.rsplit("/", 1)[0] + "/failures"
            rows = out.setdefault(key, [])
            rows += sorted(json.loads(line)["id"] for line in p.read_text("utf-8").splitlines() if line.strip())
            rows.sort()
        elif p.name.startswith("manifest") and p.suffix == ".json":  # per shard: compared merged
            out[rel.rsplit("/", 1)[0] + "/manifest"] = read_manifest(p.parent).items
        else:  # the dataset card and sd-scripts' dataset.toml name the run's absolute paths
            out[rel] = p.read_bytes().replace(str(root.resolve()).encode(), b"<root>")
    return out


def assert_same_outputs(a: Path, b: Path) -> None:
    sa, sb = snapshot(a), snapshot(b)
    assert sorted(sa) == sorted(sb), set(sa) ^ set(sb)
    different = [k for k in sa if sa[k] != sb[k]]
    assert not different, different[:10]


def assert_no_half_done(stages: Path) -> None:
    """Every item whose meta.json exists is whole: each image decodes, each JSON parses."""
    for meta_path in stages.rglob("meta.json"):
        folder = meta_path.parent
        json.loads(meta_path.read_text("utf-8"))
        for p in folder.rglob("*"):
            if p.suffix == ".png" and not p.name.startswith("."):
                with Image.open(p) as im:
                    np.asarray(im)
            elif p.suffix == ".json":
                json.loads(p.read_text("utf-8"))
