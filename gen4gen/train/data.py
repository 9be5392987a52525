"""What a train run learns from: an exported dataset's ``mycanvas/index.jsonl`` read through its artefact model
(``MyCanvasRow``), turned into (image, caption, mask) examples.

``train.data``: ``mycanvas`` (the composed scenes with their personalised captions), ``sources`` (each
concept's reference cut-outs, "a photo of a <newK> <class>": Custom Diffusion's own recipe, the baseline) or
``both``. A row that does not parse, a path that leads outside the dataset (``../``, absolute, a link pointing
out: ``gen4gen.contain``), or an example that names a modifier token no concept owns, is left out with one
line; the run goes on with the rest.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from gen4gen.bench.split import FILE as SPLIT_FILE
from gen4gen.bench.split import read_split
from gen4gen.contain import Escaped, contained
from gen4gen.errors import UserError
from gen4gen.artefacts import MyCanvasRow, read_concepts_list
from gen4gen.words import display_name, plural

DATA_KINDS = ("mycanvas", "sources", "both")
CAPTION_KINDS = ("personalized", "detailed", "short")
TOKEN = re.compile(r"<new\d+>")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass(frozen=True)
class Row:
    """One image of the dataset with absolute paths: a ``MyCanvasRow`` resolved, or a Custom Diffusion list entry."""
    id: str
    image: str
    concepts: list[str]
    captions: dict[str, str | None]
    modifier_tokens: dict[str, str]
    reference_images: dict[str, list[str]]
    mask: str | None = None


@dataclass(frozen=True)
class Concept:
    name: str  # folder name, "teddy_bear"
    token: str  # "<new1>"
    noun: str  # the class words, "teddy bear"


@dataclass(frozen=True)
class Example:
    id: str
    image: Path
    caption: str
    mask: Path | None = None  # where the concepts are (masked loss); None: the whole image counts
    prior: bool = False  # a class image (prior preservation), not an instance of a concept


def with_tokens(text: str, concepts: list[Concept]) -> str:
    """A caption without tokens with each concept's token put before its class words ("two dogs" ->
    "two <new2> dogs"): the detailed/short captions in personalised form."""
    for c in concepts:
        words = rf"\b({re.escape(c.noun)}|{re.escape(plural(c.noun))})\b"
        text = re.sub(words, lambda m, token=c.token: f"{token} {m.group(0)}", text, flags=re.IGNORECASE)
    return text


def source_caption(token: str, noun: str) -> str:
    """The caption of a concept's own photo: "a photo of a <new1> cat" (Custom Diffusion's instance prompt)."""
    return f"a photo of a {token} {noun}"


def read_rows(root: Path, caption: str = "personalized") -> tuple[list[Row], list[str]]:
    """The dataset's images as index rows with absolute paths: ``mycanvas/index.jsonl`` when exported, else
    ``customdiffusion/compositions/`` (``images.txt`` + ``captions.txt`` [+ ``masks.txt``], paths relative to
    the list, personalised captions only; ``concepts_list.json`` names each token's concept and photos)."""
    root = Path(root)
    index = root / "mycanvas" / "index.jsonl"
    listing = root / "customdiffusion" / "compositions" / "images.txt"
    rows, problems = [], []
    if index.is_file():
        parsed, problems = MyCanvasRow.read_index(index)
        mycanvas = root / "mycanvas"
        for r in parsed:
            where = f"{index}: {r.id}"
            if r.image is None:
                problems.append(f"{where}: image: missing")
                continue
            try:
                image = contained(r.image, mycanvas, "index.jsonl image")
                mask = contained(r.mask, mycanvas, "index.jsonl mask") if r.mask else None
            except Escaped as e:
                problems.append(f"{where}: {e}")
                continue
            refs = {c: _inside(ps, root, "index.jsonl reference image", where, problems)
                    for c, ps in r.reference_images.items()}
            rows.append(Row(r.id, str(image), list(r.concepts), dict(r.captions), dict(r.modifier_tokens), refs,
                            str(mask) if mask else None))
        return rows, problems
    if not listing.is_file():
        raise UserError(f"train dataset not found: neither {index} nor {listing} exists "
                        f"(run stage=export, or set train.dataset)")
    if caption != "personalized":
        raise UserError(f"{listing.parent} holds personalised captions only: set train.caption=personalized, "
                        f"or export the mycanvas format")
    cd = listing.parent.parent
    concepts_file = cd / "concepts_list.json"
    concepts = read_concepts_list(cd)
    tokens = {c.concept: c.token for c in concepts}
    refs = {}
    for c in concepts:
        try:
            folder = contained(c.instance_data_dir, cd, "concepts_list.json instance_data_dir")
        except Escaped as e:
            problems.append(f"{concepts_file}: {e}")
            continue
        found = sorted(str(p) for p in folder.glob("*") if p.is_file())
        refs[c.concept] = _inside(found, cd, "instance image", str(folder), problems)
    lists = [(listing.parent / f).read_text("utf-8").splitlines() if (listing.parent / f).is_file() else []
             for f in ("images.txt", "captions.txt", "masks.txt")]
    images, captions, masks = lists
    if len(captions) != len(images):
        raise UserError(f"{listing.parent}: {len(images)} images but {len(captions)} captions")
    for n, (image, text) in enumerate(zip(images, captions)):
        mask = masks[n] if n < len(masks) and masks[n].strip() else None
        try:
            path = contained(image, listing.parent, "images.txt")
            mask_path = contained(mask, listing.parent, "masks.txt") if mask else None
        except Escaped as e:
            problems.append(f"{listing.parent}: line {n + 1}: {e}")
            continue
        used = [c for c, t in tokens.items() if t in text]
        rows.append(Row(f"compositions/{Path(image).stem}", str(path), used, {"personalized": text},
                        tokens, {c: refs.get(c, []) for c in used}, str(mask_path) if mask_path else None))
    return rows, problems


def _inside(paths: list[str], folder: Path, what: str, where: str, problems: list[str]) -> list[str]:
    """The paths that stay inside ``folder`` (as absolute paths); one problem line per path that does not."""
    kept = []
    for p in paths:
        try:
            kept.append(str(contained(p, folder, what)))
        except Escaped as e:
            problems.append(f"{where}: {e}")
    return kept


def heldout_sets(root: Path) -> list[list[str]]:
    """The concept sets a dataset's ``split.json`` holds out for evaluation (``python -m gen4gen.bench.split``);
    none without the file."""
    return read_split(root).holdout if (Path(root) / SPLIT_FILE).is_file() else []


def load_examples(root: Path, data: str = "mycanvas", caption: str = "personalized",
                  heldout: list[list[str]] | None = None) -> tuple[list[Example], list[Concept], list[str]]:
    """Examples, concepts (ordered by token) and one problem line per example or row left out. ``heldout``: the
    concept sets whose scenes stay out (None: the dataset's ``split.json``, as ``stage=train`` reads it; the bench
    passes what a run recorded, so a run trained before the split is judged on what it really saw)."""
    if data not in DATA_KINDS:
        raise UserError(f"train.data={data!r}: choose one of {', '.join(DATA_KINDS)}")
    if caption not in CAPTION_KINDS:
        raise UserError(f"train.caption={caption!r}: choose one of {', '.join(CAPTION_KINDS)}")
    rows, problems = read_rows(root, caption)
    tokens: dict[str, str] = {}
    for r in rows:
        tokens.update(r.modifier_tokens)
    concepts = sorted((Concept(c, t, display_name(c)) for c, t in tokens.items()),
                      key=lambda c: (len(c.token), c.token))
    owned = {c.token for c in concepts}
    examples: list[Example] = []
    if data in ("mycanvas", "both"):
        held = heldout_sets(root) if heldout is None else heldout  # kept for evaluation: never trained on
        scenes = [r for r in rows if sorted(set(r.concepts)) not in held]
        if len(scenes) < len(rows):
            problems.append(f"{Path(root) / SPLIT_FILE}: {len(rows) - len(scenes)} scene(s) of held-out concept sets "
                            f"({', '.join('+'.join(h) for h in held)}) left out of training")
        for r in scenes:
            image = Path(r.image)
            text = r.captions.get(caption) or ""
            if caption != "personalized":
                text = with_tokens(text, [c for c in concepts if c.name in r.concepts])
            problem = _check(r.id, image, text, owned)
            if problem:
                problems.append(problem)
                continue
            mask = Path(r.mask) if r.mask else None
            examples.append(Example(r.id, image, " ".join(text.split()), mask if mask and mask.is_file() else None))
    if data in ("sources", "both"):
        refs: dict[str, set[str]] = {}
        for r in rows:
            for c, paths in r.reference_images.items():
                refs.setdefault(c, set()).update(paths)
        for c in concepts:
            for p in sorted(refs.get(c.name, ())):
                image = Path(p)
                text = source_caption(c.token, c.noun)
                problem = _check(f"{c.name}/{image.name}", image, text, owned)
                if problem:
                    problems.append(problem)
                else:
                    examples.append(Example(f"source/{c.name}/{image.stem}", image, text))
    if not examples:
        raise UserError(f"train dataset {root}: no complete example (data={data}, caption={caption})"
                        + (f"; first problem: {problems[0]}" if problems else ""))
    return examples, concepts, problems


def _check(item: str, image: Path, text: str, owned: set[str]) -> str | None:
    if not image.is_file():
        return f"{item}: image {image} is missing"
    if not text.strip():
        return f"{item}: empty caption"
    stray = sorted(set(TOKEN.findall(text)) - owned)
    if stray:
        return f"{item}: caption uses {', '.join(stray)}, which no concept of the dataset owns (no embedding to train)"
    if not TOKEN.search(text):
        return f"{item}: caption has no modifier token: {text!r}"
    return None


def prior_examples(folder: Path, concepts: list[Concept]) -> list[Example]:
    """Class images for prior preservation: ``<folder>/<concept>/*.{png,jpg}``, captioned "a photo of a <class>"."""
    out = []
    for c in concepts:
        for p in sorted((Path(folder) / c.name).glob("*")):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                out.append(Example(f"prior/{c.name}/{p.stem}", p, f"a photo of a {c.noun}", prior=True))
    if not out:
        raise UserError(f"train.prior.class_dir={folder}: no class images under <concept>/ for "
                        f"{', '.join(c.name for c in concepts)}")
    return out
