"""Which concepts a caption may name and the ``<newK>`` token each one gets, global over the dataset."""
from __future__ import annotations

from pathlib import Path
from typing import Container

from gen4gen.artefacts import Layout
from gen4gen.errors import ItemFailed
from gen4gen.markers import done_items


def layout_concepts(layout: Layout | dict) -> set[str]:
    if isinstance(layout, Layout):
        return layout.concepts
    return {str(o["concept"]) for o in layout.get("objects") or [] if o.get("concept")}


def dataset_concepts(s2_root: Path, source_dir: Path | None = None,
                     current: Container[str] | None = None) -> list[str]:
    """Every concept of the dataset, sorted: the concept folders of the source photos plus any concept
    in the s2 output (``current``: only those compositions, so stale ones do not shift the numbering).
    The source folders make the numbering the same in every shard of a run, since a shard's s2 output
    holds only its own scenes."""
    concepts: set[str] = set()
    if source_dir is not None and source_dir.is_dir():
        for scene in sorted(source_dir.iterdir()):
            try:
                concepts |= {c.name for c in scene.iterdir() if c.is_dir() and not c.name.startswith(".")} \
                    if scene.is_dir() and not scene.name.startswith(".") else set()
            except OSError:
                continue  # unreadable or looping folder: s1 reports it
    for folder, _ in done_items(s2_root):
        if current is not None and folder.relative_to(s2_root).as_posix() not in current:
            continue
        try:
            concepts |= Layout.load(folder).concepts
        except ItemFailed:
            continue  # s3 skips it too; its own failure is reported there
    return sorted(concepts)


def modifier_tokens(concepts: list[str]) -> dict[str, str]:
    return {c: f"<new{k}>" for k, c in enumerate(sorted(concepts), start=1)}
