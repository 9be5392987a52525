"""The stage tree as later stages read it: a typed, read-only view built once per run.

``TreeView(stages_dir)`` answers, per stage, which finished items are *current* (gen4gen.manifest: in the
stage's latest manifest, their meta still has the hash recorded there, every input they list is current),
with their typed metas; the layouts and captions of those items; and the concept registry. Each file is
opened at most once per view: metas when a stage is first asked about, a ``layout.json`` or
``captions.json`` when first asked for, cached after. Stages are read upstream first and only as far as
asked (s2 reads s1; the export reads s1..s4).

Code that reads another stage's output goes through this view, never by walking folders or re-deriving
what an earlier stage recorded (README, "How the code is laid out"). A stage's own folder is the runner's.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from gen4gen.artefacts import META_MODELS, Captions, Layout, StageMeta
from gen4gen.concepts import ConceptRegistry
from gen4gen.errors import ItemFailed
from gen4gen.manifest import ORDER, read_manifest
from gen4gen.markers import META
from gen4gen.paths import STAGE_DIRS

ITEM_DEPTH = {"s1": 3, "s2": 2, "s3": 3, "s4": 3}  # <scene>/<concept>/<photo>, <scene>/<comp>, .../<variant>


@dataclass(frozen=True)
class Entry:
    """One finished item of a stage: its id (``<scene>/<comp>/<variant>``), folder and typed meta."""
    id: str
    dir: Path
    meta: StageMeta


@dataclass
class _Stage:
    current: dict[str, Entry]  # id -> entry, sorted by id
    done: dict[str, Entry]  # every finished item with a readable meta, current or not
    unreadable: dict[str, tuple[Path, str]]  # finished items whose meta.json its model refuses: folder, reason
    leftover: set[str]  # not current, and no rerun makes them so: the latest run does not make them (any more)
    outdated: set[str]  # not current until the stage runs again (made before an input or a setting changed)
    other: set[str]  # made by a shard run with other settings than the stage's latest (gen4gen.manifest)


class TreeView:
    def __init__(self, stages_dir: Path | str):
        self.stages_dir = Path(stages_dir)
        self._stages: dict[str, _Stage] = {}
        self._files: dict[Path, Layout | Captions | ItemFailed] = {}
        self._digests: dict[Path, str] = {}
        self._registry: ConceptRegistry | None = None

    def root(self, stage: str) -> Path:
        return self.stages_dir / STAGE_DIRS[stage]

    # ------------------------------------------------------------ items
    def items(self, stage: str) -> dict[str, Entry]:
        """The current items of ``stage``: id -> entry, sorted by id."""
        return self._stage(stage).current

    def finished(self, stage: str) -> dict[str, Entry]:
        """Every finished item of ``stage`` whose meta.json reads, current or not (to say why one is not)."""
        return self._stage(stage).done

    def unreadable(self, stage: str) -> dict[str, tuple[Path, str]]:
        """Finished items of ``stage`` whose meta.json cannot be read through its model: id -> (folder, reason)."""
        return self._stage(stage).unreadable

    def stale(self, stage: str) -> int:
        """Finished items of ``stage`` that are not current: ``leftover`` plus ``outdated``."""
        return len(self._stage(stage).leftover) + len(self._stage(stage).outdated)

    def leftover(self, stage: str) -> int:
        """Finished items of ``stage`` that its latest run does not make (after ``compose.num_samples=5`` then 3,
        compositions 003 and 004 and what was made from them): left on disk, nothing needs rerunning."""
        return len(self._stage(stage).leftover)

    def outdated(self, stage: str) -> int:
        """Finished items of ``stage`` made before one of their inputs or settings changed: rerun the stage."""
        return len(self._stage(stage).outdated)

    def other_settings(self, stage: str) -> int:
        """Finished items of ``stage`` left out because a run with other settings than the stage's latest
        made them (a shard run with ``compose.num_samples=3`` beside one with 2): never merged silently."""
        return len(self._stage(stage).other)

    def ignored(self, stage: str, what: str) -> dict[str, int]:
        """Summary notes on the finished items of ``stage`` (``what``: "compositions") that are not taken, by
        what a user should do about them: nothing, rerun the stage, or run every shard alike."""
        s, notes = self._stage(stage), {}
        if s.leftover:
            notes[f"{what} left on disk that {stage}'s latest run does not make (e.g. a larger compose.num_samples "
                  "or repaint.max_backgrounds before): ignored, nothing needs rerunning"] = len(s.leftover)
        if s.outdated:
            notes[f"{what} made before their inputs or settings changed: ignored (rerun stage={stage})"] = \
                len(s.outdated)
        if s.other:
            notes[f"{what} of a shard run with other settings than {stage}'s latest: ignored (run every shard "
                  "with the same settings)"] = len(s.other)
        return notes

    def unfinished(self, stage: str) -> dict[str, Path]:
        """Item folders of ``stage`` without a meta.json (a killed run): id -> folder."""
        root, seen = self.root(stage), self._stage(stage)
        if not root.is_dir():
            return {}
        known = set(seen.done) | set(seen.unreadable)
        pattern = "/".join("*" * ITEM_DEPTH[stage])
        return {iid: p for p in sorted(root.glob(pattern)) if p.is_dir() and not p.name.startswith(".")
                and (iid := p.relative_to(root).as_posix()) not in known}

    def hashes(self, stage: str) -> dict[str, str]:
        return {iid: e.meta.hash for iid, e in self.items(stage).items()}

    def _stage(self, stage: str) -> _Stage:
        if stage in self._stages:
            return self._stages[stage]
        k = ORDER.index(stage)
        upstream = self.hashes(ORDER[k - 1]) if k > 0 else {}
        root = self.root(stage)
        done: dict[str, Entry] = {}
        unreadable: dict[str, tuple[Path, str]] = {}
        model = META_MODELS[stage]
        if root.is_dir():
            for path in sorted(root.rglob(META)):
                folder = path.parent
                iid = folder.relative_to(root).as_posix()
                try:
                    done[iid] = Entry(iid, folder, model.load(path))
                except ItemFailed as e:
                    unreadable[iid] = (folder, str(e))
        manifest = read_manifest(root) if root.is_dir() else None
        leftover: set[str] = set()
        if manifest is None:  # an older tree (no manifest): every finished item counts
            current, other = done, set()
        else:
            current = {iid: e for iid, e in done.items() if (m := manifest.items.get(iid)) is not None
                       and m["hash"] == e.meta.hash and all(upstream.get(u) == h for u, h in m["inputs"].items())}
            other = manifest.other_settings & (done.keys() - current.keys())
            gone = (self._stages[ORDER[k - 1]].leftover | self._stages[ORDER[k - 1]].other) if k > 0 else set()
            for iid in done.keys() - current.keys() - other:
                m = manifest.items.get(iid)
                if m is None or any(u in gone for u in m["inputs"]):
                    leftover.add(iid)
        outdated = done.keys() - current.keys() - other - leftover
        self._stages[stage] = _Stage(current, done, unreadable, leftover, outdated, other)
        return self._stages[stage]

    # ------------------------------------------------------------ files of items
    def layout(self, s2_dir: Path) -> Layout:
        """The ``layout.json`` of the composition in ``s2_dir`` (ItemFailed when unreadable), read once."""
        return self._file(Layout, Path(s2_dir) / Layout.FILE)

    def layout_digest(self, s2_dir: Path) -> str:
        """A hash of the layout file's bytes (the words of a caption depend on it), from the one read."""
        path = Path(s2_dir) / Layout.FILE
        self._file(Layout, path)
        return self._digests.get(path, "")

    def captions(self, s4_dir: Path) -> Captions:
        return self._file(Captions, Path(s4_dir) / Captions.FILE)

    def _file(self, model, path: Path):
        if path not in self._files:
            try:
                data = model.read_bytes(path)
                self._digests[path] = hashlib.blake2b(data, digest_size=12).hexdigest()
                self._files[path] = model.from_bytes(data, path)
            except ItemFailed as e:
                self._files[path] = e
        found = self._files[path]
        if isinstance(found, ItemFailed):
            raise found
        return found

    # ------------------------------------------------------------ concepts
    @property
    def concepts(self) -> ConceptRegistry:
        """The concept registry kept with the tree (empty when no stage has recorded one)."""
        if self._registry is None:
            self._registry = ConceptRegistry.read(self.stages_dir)
        return self._registry

