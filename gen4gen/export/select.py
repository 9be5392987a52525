"""What goes into a dataset: ``export.scenes=[...]`` and/or ``export.concepts=[...]`` (null: everything).

A final image is exported when its scene is chosen and every concept in it is chosen (a scene with a concept
left out would teach that concept's token without its photos). The reference photos, the left-out lines and
the upstream failures a dataset reports follow the same choice, so a dataset of the user's scenes never shows
the demo's photos or problems.
"""
from __future__ import annotations

from dataclasses import dataclass

from gen4gen.errors import UserError
from gen4gen.settings import ExportSettings


@dataclass(frozen=True)
class Selection:
    scenes: frozenset[str] | None = None  # None: every scene
    concepts: frozenset[str] | None = None  # None: every concept

    @classmethod
    def from_settings(cls, opts: ExportSettings) -> "Selection":
        return cls(*(None if names is None else frozenset(names) for names in (opts.scenes, opts.concepts)))

    @property
    def everything(self) -> bool:
        return self.scenes is None and self.concepts is None

    def takes(self, scene: str, concepts) -> bool:
        return ((self.scenes is None or scene in self.scenes)
                and (self.concepts is None or set(concepts) <= self.concepts))

    def takes_item(self, item) -> bool:
        """An export item, by its scene and the concepts of its layout (known before any image is read)."""
        return self.takes(item.scene, item.layout.concepts)

    def takes_row(self, row: dict) -> bool:
        """A failure or left-out line, by its id: ``<scene>/<concept>/<photo>`` (s1) or
        ``<scene>/<concept+concept>_<k>[/<variant>]`` (s2..s4, the composition names its concepts)."""
        parts = str(row.get("id", "")).split("/")
        if len(parts) < 2:
            return self.scenes is None  # a line about no particular item
        concepts = [parts[1]] if row.get("stage") == "s1" else parts[1].rsplit("_", 1)[0].split("+")
        return self.takes(parts[0], concepts)

    def choose(self, items: list) -> list:
        """The chosen export items; a choice that matches none of several is one line naming what there is."""
        chosen = [it for it in items if self.takes_item(it)]
        if items and not chosen:
            missing = self.unmatched(items)
            raise UserError(f"export selection ({self.describe()}) matches no final image; the stages hold scenes "
                            f"{', '.join(sorted({it.scene for it in items}))}"
                            + (f" (no final image has {', '.join(missing)})" if missing else ""))
        return chosen

    def unmatched(self, items) -> list[str]:
        """Chosen names that no complete final image has: a typo is one line, not an empty dataset."""
        scenes = {it.scene for it in items}
        concepts = {c for it in items for c in it.layout.concepts}
        return ([f"scene {s!r}" for s in sorted((self.scenes or set()) - scenes)]
                + [f"concept {c!r}" for c in sorted((self.concepts or set()) - concepts)])

    def describe(self) -> str:
        if self.everything:
            return "everything the stages made"
        parts = []
        if self.scenes is not None:
            parts.append("scenes " + ", ".join(sorted(self.scenes)))
        if self.concepts is not None:
            parts.append("concepts " + ", ".join(sorted(self.concepts)))
        return "; ".join(parts)
