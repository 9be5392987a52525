"""The concept registry: every concept of a stages tree with its ``<newK>`` token, kept for good.

``<stages>/concepts.json`` is written where concepts are first known (s2 discovery, from the cut-outs and the
source folders; s4 adds any a tree written before the registry lacks) and read through ``gen4gen.tree``.
Adding or removing concepts never renumbers a token: new concepts get the next numbers, a concept that
goes keeps its entry. The export copies the registry into each dataset (``concepts.json``) and a train run
records the one it was trained with, so a token that means another concept later is one line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import Field, StrictStr, model_validator

from gen4gen.artefacts import Artefact, Name, Record, Text
from gen4gen.errors import ItemFailed, UserError
from gen4gen.io import write_atomic


class ConceptEntry(Record):
    name: Name  # the concept's folder name
    token: Annotated[StrictStr, Field(pattern=r"^<new[1-9][0-9]*>$")]
    class_words: Text  # what the token stands beside in a caption ("teddy bear")
    first_seen: StrictStr = ""  # the scene folder it was first found in

    @property
    def number(self) -> int:
        return int(self.token[4:-1])


class ConceptRegistry(Artefact):
    """``<stages>/concepts.json``: every concept the tree has known and its ``<newK>`` token, for good. New
    concepts get the next numbers (sorted among themselves); a concept that goes keeps its entry, so no
    token is ever renumbered or reused. The export copies it into the dataset, a train run records it."""
    FILE: ClassVar[str] = "concepts.json"
    concepts: list[ConceptEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self):
        for key in ("name", "token"):
            seen = [getattr(c, key) for c in self.concepts]
            if len(set(seen)) != len(seen):
                raise ValueError(f"concepts: a {key} appears twice")
        return self

    @classmethod
    def read(cls, folder: Path) -> "ConceptRegistry":
        """The registry in ``folder`` (empty when there is none); a damaged one is one line, never renumbered."""
        if not (Path(folder) / cls.FILE).is_file():
            return cls()
        try:
            return cls.load(folder)
        except ItemFailed as e:
            raise UserError(f"{Path(folder) / cls.FILE}: {e}; restore it (deleting it renumbers the tokens)") from None

    def tokens(self, names=None) -> dict[str, str]:
        """concept -> token, in token order; ``names``: only those."""
        return {c.name: c.token for c in sorted(self.concepts, key=lambda c: c.number)
                if names is None or c.name in names}

    def adding(self, found: dict[str, str]) -> "ConceptRegistry":
        """This registry with the concepts of ``found`` (concept -> the scene it was seen in) it lacks."""
        from gen4gen.words import display_name

        known = {c.name for c in self.concepts}
        new = sorted(set(found) - known)
        if not new:
            return self
        start = max((c.number for c in self.concepts), default=0) + 1
        added = [{"name": c, "token": f"<new{start + k}>", "class_words": display_name(c), "first_seen": found[c]}
                 for k, c in enumerate(new)]
        return ConceptRegistry.build({"concepts": [c.model_dump() for c in self.concepts] + added})


def record_concepts(stages_dir: Path, found: dict[str, str]) -> ConceptRegistry:
    """The registry of ``stages_dir`` with the concepts of ``found`` (concept -> scene) added and written
    when any was new; the registry as it now stands."""
    old = ConceptRegistry.read(stages_dir)
    new = old.adding(found)
    if new is not old:
        write_atomic(Path(stages_dir) / ConceptRegistry.FILE, new.dump())
    return new


def registry_mismatch(trained: ConceptRegistry, now: ConceptRegistry) -> str:
    """One line naming the tokens that mean another concept in ``now`` than in ``trained`` ("" when none)."""
    then, later = {c.token: c.name for c in trained.concepts}, {c.token: c.name for c in now.concepts}
    moved = [f"{t} was {then[t]}, is now {later[t]}" for t in sorted(then, key=lambda t: int(t[4:-1]))
             if t in later and later[t] != then[t]]
    return "; ".join(moved)


def trained_with(dataset: Path, concepts) -> ConceptRegistry:
    """The registry a train run records (``<run>/concepts.json``): the dataset's, or for a dataset exported
    before registries, one built from the run's concepts (``.name``, ``.token``, ``.noun``)."""
    registry = ConceptRegistry.read(dataset)
    if registry.concepts:
        return registry
    return ConceptRegistry.build({"concepts": [{"name": c.name, "token": c.token, "class_words": c.noun}
                                               for c in concepts]})


def run_mismatch(run_dir: Path, dataset: Path) -> str:
    """One line when a train run's tokens mean other concepts in ``dataset`` than it was trained with ("" when
    they agree, or when either has no registry)."""
    if not (Path(run_dir) / ConceptRegistry.FILE).is_file() or not (Path(dataset) / ConceptRegistry.FILE).is_file():
        return ""
    moved = registry_mismatch(ConceptRegistry.read(run_dir), ConceptRegistry.read(dataset))
    return f"train run {run_dir} was trained with other tokens than {dataset} uses: {moved}" if moved else ""
