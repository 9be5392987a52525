"""Leakage: a personalised model's evaluation prompts and backgrounds checked against its training captions.

A train run records the dataset it read (``meta.json``) and how (``personalization.json``: data kind and
caption kind); its training captions are rebuilt with the train stage's own loader. Texts are compared after
normalising (lower case, ``<newK>`` tokens and punctuation removed): ``exact`` equal texts, ``near`` word sets
overlapping by at least ``NEAR`` (Jaccard). Novel-background prompts (TI-CLIP) must have backgrounds that no
training caption contains, and held-out concept sets (``split.json``) must not be among the sets trained on.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from gen4gen.errors import UserError

NEAR = 0.8
COLUMNS = ["model", "train_captions", "prompts", "exact", "near", "backgrounds", "backgrounds_in_training",
           "heldout_sets_in_training", "examples"]


def normalise(text: str) -> str:
    text = re.sub(r"<new\d+>", " ", text.lower())
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text).split())


def training_data(train_run: Path) -> tuple[list[str], set[tuple[str, ...]]]:
    """The captions a run trained on and the concept sets of its training images."""
    from gen4gen.artefacts import Manifest, TrainMeta
    from gen4gen.errors import ItemFailed
    from gen4gen.train.data import load_examples, read_rows

    man = Manifest.load(Path(train_run))
    try:
        meta = TrainMeta.load(Path(train_run))
    except ItemFailed as e:
        raise UserError(f"{train_run}: {e} (an unfinished train run?)") from None
    dataset = meta.dataset
    if not dataset:
        raise UserError(f"{train_run}: meta.json names no dataset (an unfinished train run)")
    heldout = meta.heldout  # what split.json kept out when it trained (older runs: nothing)
    examples, _, _ = load_examples(Path(dataset), man.data or "mycanvas", man.caption or "personalized", heldout)
    rows, _ = read_rows(Path(dataset), man.caption or "personalized")
    sets = {tuple(sorted(set(r.concepts))) for r in rows if sorted(set(r.concepts)) not in heldout} \
        if man.data in ("mycanvas", "both", "") else set()
    return [e.caption for e in examples if not e.prior], sets


def check(model: str, prompts: Sequence, captions: Sequence[str], train_sets: set[tuple[str, ...]],
          heldout: Sequence[Sequence[str]] = ()) -> dict:
    """One leakage row: ``prompts`` are bench ``Prompt`` rows (their text as this model is given it)."""
    seen = {normalise(c) for c in captions}
    words = [set(c.split()) for c in seen]
    exact, near, examples = 0, 0, []
    for p in prompts:
        text = normalise(p.given(True))
        if text in seen:
            exact += 1
            examples.append(p.key)
            continue
        mine = set(text.split())
        if mine and any(len(mine & w) / len(mine | w) >= NEAR for w in words):
            near += 1
            examples.append(p.key)
    backgrounds = sorted({p.background for p in prompts if getattr(p, "background", None)})
    joined = " | ".join(seen)
    leaked_bg = [b for b in backgrounds if normalise(b) in joined]
    leaked_sets = sorted("+".join(s) for s in (tuple(sorted(h)) for h in heldout) if s in train_sets)
    return {"model": model, "train_captions": len(seen), "prompts": len(prompts), "exact": exact, "near": near,
            "backgrounds": len(backgrounds), "backgrounds_in_training": ", ".join(leaked_bg) or "",
            "heldout_sets_in_training": ", ".join(leaked_sets), "examples": ", ".join(examples[:5])}
