"""Hold out concept sets for evaluation: ``split.json`` in an exported dataset names the concept sets (the
combinations, e.g. {dog, plant}) that a personalised model must not be trained on and the bench evaluates.

    python -m gen4gen.bench.split outputs/datasets/mycanvas_demo --holdout 0.25 --seed 0

Each concept still appears in training through the other sets it belongs to; only the combination is new at
evaluation. A dataset promptset with ``split: eval`` keeps the held-out sets only (``split: train`` the rest);
the report's leakage check names any held-out set that a personalised model's training data contains.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gen4gen.artefacts import explain
from gen4gen.errors import UserError
from gen4gen.hashing import stable_hash
from gen4gen.io import write_atomic
from gen4gen.artefacts import MyCanvasRow

FILE = "split.json"


class Split(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["gen4gen-split/1"] = "gen4gen-split/1"
    seed: int = 0
    holdout: list[list[str]] = Field(default_factory=list)  # sorted concept names per held-out set
    train: list[list[str]] = Field(default_factory=list)

    def keeps(self, concepts, part: str) -> bool:
        held = sorted(set(concepts)) in self.holdout
        return held if part == "eval" else not held


def concept_sets(root: Path) -> list[tuple[str, ...]]:
    """The dataset's concept sets (sorted names), from ``mycanvas/index.jsonl``."""
    index = Path(root) / "mycanvas" / "index.jsonl"
    if not index.is_file():
        raise UserError(f"no exported dataset at {index}; run `python -m gen4gen stage=export` first")
    sets = set()
    for n, line in enumerate(index.read_text("utf-8").splitlines(), 1):
        if line.strip():
            try:
                sets.add(tuple(sorted(set(MyCanvasRow.parse(json.loads(line), "index.jsonl").concepts))))
            except ValueError as e:
                raise UserError(f"{index}:{n}: not a MyCanvas index line ({e})") from None
    return sorted(sets)


def split_sets(sets: list[tuple[str, ...]], fraction: float, seed: int = 0) -> Split:
    """A stable pseudo-random ``fraction`` of the sets held out (at least one when there are two or more, never
    all of them); the same sets for the same seed whatever their order."""
    if not 0 <= fraction < 1:
        raise UserError(f"--holdout {fraction}: a share in [0, 1)")
    order = sorted(sets, key=lambda s: stable_hash(f"{seed}/{'+'.join(s)}"))
    n = min(len(sets) - 1, max(1, round(fraction * len(sets)))) if fraction > 0 and len(sets) > 1 else 0
    held = sorted(order[:n])
    return Split(seed=seed, holdout=[list(s) for s in held], train=[list(s) for s in sorted(order[n:])])


def read_split(root: Path) -> Split:
    path = Path(root) / FILE
    try:
        return Split.model_validate_json(path.read_text("utf-8"))
    except OSError:
        raise UserError(f"{path} is missing: run python -m gen4gen.bench.split {root} --holdout 0.25") from None
    except ValidationError as e:
        raise UserError(f"{path}: {explain(e)}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gen4gen.bench.split", description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", type=Path, help="an exported dataset folder (with mycanvas/index.jsonl)")
    ap.add_argument("--holdout", type=float, default=0.25, help="share of concept sets held out for evaluation")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        split = split_sets(concept_sets(args.dataset), args.holdout, args.seed)
    except UserError as e:
        print(e, file=sys.stderr)
        return 2
    write_atomic(args.dataset / FILE, (split.model_dump_json(indent=2) + "\n").encode("utf-8"))
    print(f"wrote {args.dataset / FILE}: {len(split.holdout)} held-out, {len(split.train)} training concept set(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
