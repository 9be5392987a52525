"""Promptsets of the benchmark: our exported MyCanvas dataset and the standard public sets.

Every loader returns ``Prompt`` rows with a stable id (so a rerun finds its finished images) and whatever
per-prompt settings the set carries (GEMRec: seed, size, negative prompt, CFG; DiffusionDB: seed, size).
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError

from gen4gen.artefacts import explain
from gen4gen.words import as_class_words, count_phrase, display_name
from gen4gen.errors import UserError
from gen4gen.hashing import stable_hash
from gen4gen.artefacts import MyCanvasRow

log = logging.getLogger(__name__)
SHOWN_PROBLEMS = 5  # rows left out that are printed one by one; the rest are counted

# backgrounds for TI-CLIP prompts (Gen4Gen: text alignment where the background was not in training);
# the ones that occur in the dataset's own captions are dropped at load time
NOVEL_BACKGROUNDS = ("on the surface of the moon", "in a snowy forest", "on a wooden boat at sea",
                     "in front of the Eiffel Tower", "in a neon-lit city street at night", "inside a library")


@dataclass
class Prompt:
    set: str  # promptset name (its key in bench.promptsets)
    id: str  # unique within the set, safe as a file name
    text: str  # what the model is given
    category: str = ""
    eval_text: str | None = None  # what CLIP-T scores against when it differs from ``text`` (<newK> tokens)
    seed: int | None = None
    size: tuple[int, int] | None = None  # (width, height)
    negative: str | None = None
    guidance: float | None = None
    concepts: list[str] = field(default_factory=list)
    references: dict[str, list[str]] = field(default_factory=dict)  # concept -> reference image paths
    novel_background: bool = False  # counts in TI-CLIP
    class_text: str | None = None  # ``text`` with each "<newK> class" read as class words (for models without tokens)
    background: str | None = None  # a novel-background prompt's background (the leakage check looks for it)
    unlimited: bool = False  # kept whatever the set's ``limit`` (the k-curve prompts: few by construction)

    def given(self, personalised: bool) -> str:
        """What a model is given: the prompt as written to a personalised model (a train run that owns the
        tokens), with class words to any other (a base model has no <newK> tokens)."""
        return self.text if personalised or not self.class_text else self.class_text

    @property
    def key(self) -> str:
        return f"{self.set}/{self.id}"

    @property
    def scored_text(self) -> str:
        return self.eval_text or self.text


def _rows(path: Path, delimiter: str = ",") -> list[tuple[int, dict]]:
    """(line number, row) of a CSV/TSV promptset; an unreadable file is one line naming it."""
    if not path.is_file():
        raise UserError(f"promptset file not found: {path}. Put the public promptset files (prompts/DrawBench.csv, "
                        f"prompts/PartiPrompts.tsv, prompts/DiffusionDB_sample_seed42.csv, gemrec/promptset_v6.csv) "
                        f"under one folder and set bench.data_dir=<folder> (or GEN4GEN_SHARED_DATA), or pick other "
                        f"promptsets, e.g. bench.use=[mycanvas]")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            # a short row's missing cells are None, a long row's extras sit under the key None
            return [(reader.line_num, {k: v for k, v in r.items() if isinstance(k, str)}) for r in reader]
    except (UnicodeDecodeError, csv.Error, OSError) as e:
        raise UserError(f"{path}: not a readable {'TSV' if delimiter == chr(9) else 'CSV'} promptset ({e})") from None


def _need(rows: list[tuple[int, dict]], path: Path, *columns: str) -> None:
    have = set(rows[0][1]) if rows else set()
    missing = [c for c in columns if c not in have]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(sorted(have)) or 'none'}")


def _blank_is_none(v: Any) -> Any:
    return None if v is None or (isinstance(v, str) and not v.strip()) else v


def _whole(v: Any) -> Any:
    """'7', '7.0' -> 7 (spreadsheets write whole numbers both ways); anything else is left to the field's check."""
    v = _blank_is_none(v)
    try:
        f = float(v)
        return int(f) if f.is_integer() else v
    except (TypeError, ValueError, OverflowError):
        return v


def _size(v: Any) -> Any:
    """'512x768' -> (512, 768)."""
    v = _blank_is_none(v)
    if isinstance(v, str):
        parts = v.lower().split("x")
        if len(parts) != 2:
            raise ValueError(f"expected WIDTHxHEIGHT, got {v[:40]!r}")
        return tuple(_whole(p.strip()) for p in parts)
    return v


# what a promptset row may ask of a model: whole seeds that torch takes, a finite guidance scale (DiffusionDB's
# users set -20 to 120: a pipeline runs them) and sides a pipeline can run (a 100000 px side would be an
# out-of-memory per image, a NaN guidance a black image)
Cell = Annotated[str, StringConstraints(strip_whitespace=True, max_length=20_000)]
Seed = Annotated[Annotated[int, Field(ge=0, lt=2 ** 63)] | None, BeforeValidator(_whole)]
Guidance = Annotated[Annotated[float, Field(ge=-1000, le=1000, allow_inf_nan=False)] | None,
                     BeforeValidator(_blank_is_none)]
Side = Annotated[int, BeforeValidator(_whole), Field(ge=64, le=4096)]


class _Row(BaseModel):
    model_config = ConfigDict(extra="ignore")


class PartiRow(_Row):
    Prompt: Cell
    Category: Cell = ""


class DrawBenchRow(_Row):
    Prompts: Cell
    Category: Cell = ""


class GemrecRow(_Row):
    prompt_id: Annotated[int, BeforeValidator(_whole), Field(ge=0, lt=10 ** 9)]
    tag: Cell = ""
    size: Annotated[tuple[Side, Side] | None, BeforeValidator(_size)] = None
    seed: Seed = None
    prompt: Cell
    negativePrompt: Cell | None = None
    cfgScale: Guidance = None


class DiffusionDBRow(_Row):
    image_name: Cell
    prompt: Cell
    seed: Seed = None
    cfg: Guidance = None
    width: Annotated[Side | None, BeforeValidator(_blank_is_none)] = None
    height: Annotated[Side | None, BeforeValidator(_blank_is_none)] = None
    sampler: Cell = ""


def _valid(rows: list[tuple[int, dict]], path: Path, model: type[_Row], problems: list[str] | None) -> list:
    """The rows that pass ``model``; each one that does not is a line in ``problems`` (file, line, field)."""
    out = []
    for line, row in rows:
        try:
            # a short row's missing cells: the field's default, or "missing" when it has none
            out.append(model.model_validate({k: v for k, v in row.items() if v is not None}))
        except ValidationError as e:
            if problems is not None:
                problems.append(f"{path.name}:{line}: {explain(e)}")
    return out


def load_parti(name: str, path: Path, problems: list[str] | None = None, **_: Any) -> list[Prompt]:
    rows = _rows(path, "\t")
    _need(rows, path, "Prompt", "Category")
    return [Prompt(name, f"{i:05d}", r.Prompt, r.Category)
            for i, r in enumerate(_valid(rows, path, PartiRow, problems)) if r.Prompt]


def load_drawbench(name: str, path: Path, problems: list[str] | None = None, **_: Any) -> list[Prompt]:
    rows = _rows(path)
    _need(rows, path, "Prompts", "Category")
    return [Prompt(name, f"{i:04d}", r.Prompts, r.Category)
            for i, r in enumerate(_valid(rows, path, DrawBenchRow, problems)) if r.Prompts]


def load_gemrec(name: str, path: Path, problems: list[str] | None = None, **_: Any) -> list[Prompt]:
    """GEMRec promptset v6: one seed, size, negative prompt and CFG per prompt (sampler is Euler a for all)."""
    rows = _rows(path)
    _need(rows, path, "prompt_id", "tag", "size", "seed", "prompt", "negativePrompt", "cfgScale")
    return [Prompt(name, f"{r.prompt_id:03d}", r.prompt, r.tag, seed=r.seed, size=r.size,
                   negative=r.negativePrompt or None, guidance=r.cfgScale)
            for r in _valid(rows, path, GemrecRow, problems) if r.prompt]


def load_diffusiondb(name: str, path: Path, problems: list[str] | None = None, **_: Any) -> list[Prompt]:
    rows = _rows(path)
    _need(rows, path, "image_name", "prompt", "seed", "cfg", "width", "height")
    return [Prompt(name, Path(r.image_name).stem, r.prompt, r.sampler, seed=r.seed,
                   size=(r.width, r.height) if r.width and r.height else None, guidance=r.cfg)
            for r in _valid(rows, path, DiffusionDBRow, problems) if r.prompt and Path(r.image_name).stem]


def load_dataset(name: str, path: Path, caption: str = "detailed", novel_backgrounds: Any = None,
                 k_prompts: int = 0, split: str | None = None, problems: list[str] | None = None,
                 **_: Any) -> list[Prompt]:
    """An exported MyCanvas dataset (``<path>/mycanvas/index.jsonl``): one prompt per scene image with the
    chosen caption, scored against the detailed caption (``<newK>`` tokens mean nothing to CLIP), plus per
    concept set one prompt per background absent from the dataset's captions (TI-CLIP), plus up to
    ``k_prompts`` prompts per k = 1, 2, 3, ... concepts drawn from the dataset's own concept sets (category
    ``k=K``: the difficulty curve). ``split``: ``eval`` keeps the concept sets ``split.json`` holds out,
    ``train`` the others."""
    index = Path(path) / "mycanvas" / "index.jsonl"
    if not index.is_file():
        raise UserError(f"no exported dataset at {index}; run `python -m gen4gen stage=export` first")
    root = Path(path)
    if split not in (None, "eval", "train"):
        raise UserError(f"promptset {name}: split={split!r}; use eval, train or null")
    held = None
    if split:
        from gen4gen.bench.split import read_split

        held = read_split(root)
    problems = [] if problems is None else problems
    prompts: list[Prompt] = []
    concept_sets: dict[tuple[str, ...], tuple[dict, dict]] = {}
    captions_seen = []
    rows, bad = MyCanvasRow.read_index(index)
    problems.extend(bad)  # one line each, the run goes on (as train reads the file)
    for row in rows:
        if not (row.captions.get("detailed") or "").strip():  # the text a prompt is scored against
            problems.append(f"{index}: {row.id}: captions.detailed: expected a non-empty text")
            continue
        caps, concepts = row.captions, list(row.concepts)
        if held is not None and not held.keeps(concepts, split):
            continue
        text = caps.get(caption) or caps["detailed"]
        refs = {c: [str(p) for p in _contained_refs(row.reference_images.get(c, []), root, f"{index}: {row.id}")]
                for c in concepts}
        safe_id = row.id.replace("/", "__")
        plain_text = as_class_words(text, {t: display_name(c) for c, t in row.modifier_tokens.items()})
        prompts.append(Prompt(name, safe_id, text, row.scene, eval_text=caps["detailed"],
                              concepts=concepts, references=refs,
                              class_text=plain_text if plain_text != text else None))
        captions_seen.append(" ".join(str(v) for v in caps.values() if isinstance(v, str)).lower())
        concept_sets.setdefault(tuple(sorted(concepts)), (refs, row.modifier_tokens))
    seen = " ".join(captions_seen)
    if novel_backgrounds is None:  # null: the built-in list; [] turns TI-CLIP prompts off
        novel_backgrounds = NOVEL_BACKGROUNDS
    novel = [b for b in novel_backgrounds if b.lower() not in seen]
    for concepts, (refs, tokens) in sorted(concept_sets.items()):
        plain = " and ".join(count_phrase(c, 1) for c in concepts)
        personal = " and ".join(f"{tokens[c]} {c}" if c in tokens else count_phrase(c, 1) for c in concepts)
        for k, bg in enumerate(novel):
            given = f"{personal if caption == 'personalized' else plain} {bg}"
            prompts.append(Prompt(name, f"novel__{'+'.join(concepts)}__{k:02d}", given, "novel background",
                                  eval_text=f"{plain} {bg}", concepts=list(concepts), references=refs,
                                  novel_background=True, class_text=f"{plain} {bg}" if given != f"{plain} {bg}" else None,
                                  background=bg))
    return prompts + k_prompt_rows(name, concept_sets, caption, int(k_prompts or 0))


def k_prompt_rows(name: str, concept_sets: dict[tuple[str, ...], tuple[dict, dict]], caption: str,
                  per_k: int) -> list[Prompt]:
    """"a photo of <new1> cat and <new2> dog": every subset of k concepts of a dataset concept set (k = 1 up to
    the largest set), at most ``per_k`` per k in a stable pseudo-random choice."""
    from itertools import combinations

    if per_k <= 0:
        return []
    refs: dict[str, list[str]] = {}
    tokens: dict[str, str] = {}
    subsets: set[tuple[str, ...]] = set()
    for concepts, (r, t) in concept_sets.items():
        refs.update({c: r[c] for c in concepts if c not in refs})
        tokens.update({c: t[c] for c in concepts if c in t and c not in tokens})
        subsets.update(sub for k in range(1, len(concepts) + 1) for sub in combinations(concepts, k))
    out = []
    for k in sorted({len(s) for s in subsets}):
        chosen = sorted((s for s in subsets if len(s) == k), key=lambda s: stable_hash("+".join(s)))[:per_k]
        for sub in sorted(chosen):
            plain = "a photo of " + " and ".join(count_phrase(c, 1) for c in sub)
            personal = "a photo of " + " and ".join(f"{tokens[c]} {c}" if c in tokens else count_phrase(c, 1)
                                                    for c in sub)
            given = personal if caption == "personalized" else plain
            out.append(Prompt(name, f"k{k}__{'+'.join(sub)}", given, f"k={k}", eval_text=plain, concepts=list(sub),
                              references={c: refs[c] for c in sub}, class_text=plain if given != plain else None,
                              unlimited=True))
    return out


LOADERS: dict[str, Callable[..., list[Prompt]]] = {
    "parti": load_parti, "drawbench": load_drawbench, "gemrec": load_gemrec,
    "diffusiondb": load_diffusiondb, "dataset": load_dataset,
}


def limit_prompts(prompts: list[Prompt], limit: int | None) -> list[Prompt]:
    """A stable pseudo-random subset of ``limit`` prompts (the first rows of a file are often one category),
    kept in file order; the same subset in every run and on every shard."""
    if not limit or limit >= len(prompts):
        return prompts
    keep = set(sorted(range(len(prompts)), key=lambda i: stable_hash(prompts[i].key))[:limit])
    return [p for i, p in enumerate(prompts) if i in keep]


def load_promptsets(sets: dict, use: list[str]) -> tuple[list[Prompt], dict[str, str]]:
    """Prompts of the promptsets named in ``use``; returns them and notes on sets that were skipped
    (an optional set whose file does not exist yet, e.g. the dataset before export ran)."""
    prompts: list[Prompt] = []
    notes: dict[str, str] = {}
    for name in use:
        if name not in sets:
            raise UserError(f"bench.use names promptset {name!r}, not in bench.promptsets ({', '.join(sets)})")
        spec = dict(sets[name])
        kind = spec.pop("kind", name)
        if kind not in LOADERS:
            raise UserError(f"promptset {name!r}: unknown kind {kind!r}; one of {', '.join(LOADERS)}")
        optional = bool(spec.pop("optional", False))
        limit = spec.pop("limit", None)
        path = Path(str(spec.pop("path")))
        problems: list[str] = []
        try:
            rows = LOADERS[kind](name, path, problems=problems, **spec)
        except UserError as e:
            if optional:
                notes[f"promptset {name}"] = f"skipped: {e}"
                continue
            raise
        seen: set[str] = set()
        unique = [p for p in rows if not (p.id in seen or seen.add(p.id))]
        if len(unique) < len(rows):  # e.g. DiffusionDB rows of one image name: the first is kept
            notes[f"promptset {name} ids"] = f"{len(rows) - len(unique)} prompt(s) with a repeated id left out"
        for line in problems[:SHOWN_PROBLEMS]:
            log.warning("promptset %s: row left out: %s", name, line)
        if problems:
            notes[f"promptset {name}"] = (f"{len(problems)} row(s) left out (the first {min(len(problems), SHOWN_PROBLEMS)} "
                                          f"above); {len(unique)} prompt(s) kept")
        kept = {p.key for p in limit_prompts([p for p in unique if not p.unlimited], int(limit) if limit else None)}
        prompts += [p for p in unique if p.unlimited or p.key in kept]
    keys = [p.key for p in prompts]
    if len(set(keys)) != len(keys):
        raise UserError("duplicate prompt ids; give each promptset its own name")
    return prompts, notes


def _contained_refs(paths: list[str], root: Path, where: str) -> list[Path]:
    """The reference images of a row that stay inside the dataset; a warning line for each that does not."""
    from gen4gen.contain import Escaped, contained

    kept = []
    for p in paths:
        try:
            kept.append(contained(p, root, "index.jsonl reference image"))
        except Escaped as e:
            log.warning("%s: %s", where, e)
    return kept
