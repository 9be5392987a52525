"""Import GEMRec's roster (``roster.csv``: 197 Civitai fine-tunes + SD 1.4/1.5/2.1) as a gen4gen roster.

    python -m gen4gen.bench.gemrec ../shared/data/gemrec/roster.csv --models-dir ~/civitai --out conf/roster/gemrec.yaml

The CSV holds metadata only (``tag, model_name, model_id, modelVersion_name, modelVersion_id, modelVersion_url,
modelVersion_trainedWords, model_download_count, baseModel``). Each model version is mapped to a file the user
downloaded into ``--models-dir``, found by its version id: ``<id>.safetensors``, ``<id>_<anything>.safetensors``
(or ``.ckpt``), or a diffusers folder ``<id>/`` with a ``model_index.json``. Hugging Face versions (the SD base
models) fall back to their hub repo id. Versions without a local file are listed with their download URL and
left out (``--keep-missing`` writes them with the expected path). Generation settings follow GEMRec's
promptset: Euler ancestral, the prompt's CFG (7), ``--steps`` steps, 512 px (768 for SD 2.1 768).
"""
from __future__ import annotations

import argparse
import ast
import csv
import re
import sys
from pathlib import Path

import yaml

from gen4gen.artefacts import Roster

# diffusers configs a single-file SD checkpoint is assembled with, per GEMRec ``baseModel``
BASE_CONFIGS = {
    "SD 1.4": ("stable-diffusion-v1-5/stable-diffusion-v1-5", 512),
    "SD 1.5": ("stable-diffusion-v1-5/stable-diffusion-v1-5", 512),
    "SD 2.1": ("stabilityai/stable-diffusion-2-1-base", 512),
    "SD 2.1 768": ("stabilityai/stable-diffusion-2-1", 768),
}
# hub repos that moved since GEMRec was published
MOVED = {"runwayml/stable-diffusion-v1-5": "stable-diffusion-v1-5/stable-diffusion-v1-5"}
COLUMNS = ("tag", "model_name", "modelVersion_name", "modelVersion_id", "modelVersion_url",
           "modelVersion_trainedWords", "model_download_count", "baseModel")


def _slug(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")


def _trained_words(text: str) -> list[str]:
    """The CSV holds a Python list literal (``['hanfu']``): parsed as a literal, never evaluated."""
    try:
        words = ast.literal_eval(text) if text else []
    except (ValueError, SyntaxError):
        words = [text]
    if isinstance(words, str):
        words = [words]
    return [w.strip() for w in words if isinstance(w, str) and w.strip()]


def find_local(models_dir: Path | None, version_id: str) -> Path | None:
    if models_dir is None or not models_dir.is_dir():
        return None
    folder = models_dir / version_id
    if (folder / "model_index.json").is_file():
        return folder
    for ext in (".safetensors", ".ckpt"):
        exact = models_dir / f"{version_id}{ext}"
        if exact.is_file():
            return exact
        hits = sorted(models_dir.glob(f"{version_id}_*{ext}"))
        if hits:
            return hits[0]
    return None


def import_roster(csv_path: Path, models_dir: Path | None, name: str = "gemrec", steps: int = 25,
                  keep_missing: bool = False) -> tuple[dict, list[str]]:
    """The roster as a dict (validated) and the lines about versions with no local file."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    missing_cols = [c for c in COLUMNS if rows and c not in rows[0]]
    if not rows or missing_cols:
        raise SystemExit(f"{csv_path}: not a GEMRec roster (missing columns: {', '.join(missing_cols) or 'no rows'})")
    models, missing, names = [], [], set()
    for r in rows:
        vid = str(r["modelVersion_id"]).strip()
        base = r["baseModel"].strip()
        url = r["modelVersion_url"].strip()
        local = find_local(models_dir, vid)
        hub = url.split("huggingface.co/", 1)[1].strip("/") if "huggingface.co/" in url else None
        hub = MOVED.get(hub, hub)
        if local is not None:
            source = str(local)
        elif hub:
            source = hub
        else:
            source = str((models_dir or Path(".")) / f"{vid}.safetensors")
            missing.append(f"{url}\t{source}\t{r['model_name'].strip()} / {r['modelVersion_name'].strip()}")
            if not keep_missing:
                continue
        slug = _slug(r["model_name"])[:40].strip("-")
        entry_name = f"{slug}-{vid}" if slug else f"civitai-{vid}"
        if entry_name in names:
            entry_name = f"{entry_name}-{len(names)}"
        names.add(entry_name)
        config, res = BASE_CONFIGS.get(base, (None, 512))
        entry = {
            "name": entry_name, "source": source, "dtype": "float16", "steps": steps, "guidance": None,
            "scheduler": {"class": "EulerAncestralDiscreteScheduler"}, "resolution": res,
            "tags": [t.strip() for t in r["tag"].split("|") if t.strip()], "base_model": base,
            "popularity": float(r["model_download_count"] or 0),
            "trained_words": _trained_words(r["modelVersion_trainedWords"]),
        }
        if base in BASE_CONFIGS:
            entry["pipeline"] = "sd"
        if source.endswith((".safetensors", ".ckpt")) and config:
            entry["single_file_config"] = config
        models.append(entry)
    roster = {"name": name, "models": models}
    Roster.model_validate(roster)  # fail here, not at generation time
    return roster, missing


def bench_command(roster_file: Path, cwd: Path | None = None) -> str:
    """The exact command that benchmarks a roster written to ``roster_file``. Hydra finds config groups in
    the package's conf/ and in ``conf/`` of the working directory (``hydra.searchpath`` in config.yaml); a
    roster elsewhere needs its config folder (the parent of ``roster/``) on the search path."""
    roster_file = roster_file.resolve()
    name = roster_file.stem
    command = f"python -m gen4gen stage=bench roster={name}"
    conf = roster_file.parent.parent
    if roster_file.parent.name != "roster":
        return (f"mkdir -p conf/roster && mv {roster_file} conf/roster/ && {command}  "
                "(rosters are found in a roster/ folder)")
    if conf in (((cwd or Path.cwd()) / "conf").resolve(), (Path(__file__).parents[1] / "conf").resolve()):
        return command
    return f"{command} 'hydra.searchpath=[file://{conf}]'"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gen4gen.bench.gemrec", description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", type=Path, help="GEMRec roster.csv")
    ap.add_argument("--models-dir", type=Path, default=None, help="folder with the downloaded checkpoints")
    ap.add_argument("--out", type=Path, default=Path("conf/roster/gemrec.yaml"))
    ap.add_argument("--name", default="gemrec", help="roster name (the run folder name)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--keep-missing", action="store_true", help="also write versions with no local file")
    args = ap.parse_args(argv)
    if args.models_dir is not None and not args.models_dir.is_dir():
        print(f"--models-dir {args.models_dir} is not a folder: only the hub models can be mapped", file=sys.stderr)
    roster, missing = import_roster(args.csv, args.models_dir, args.name, args.steps, args.keep_missing)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("# imported from GEMRec roster.csv by python -m gen4gen.bench.gemrec\n"
                        + yaml.safe_dump(roster, sort_keys=False, allow_unicode=True), "utf-8")
    print(f"wrote {args.out}: {len(roster['models'])} models; run it with:\n  {bench_command(args.out)}")
    if missing:
        verb = "kept with the expected path" if args.keep_missing else "left out"
        todo = args.out.with_suffix(".missing.tsv")
        todo.write_text("url\tsave_as\tmodel / version\n" + "\n".join(missing) + "\n", "utf-8")
        print(f"{len(missing)} versions have no local file in {args.models_dir} ({verb}); their download URLs and "
              f"the file names to save them as are in {todo}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
