"""Which settings each stage reads. Two uses: a setting given on the command line that no running stage reads gets
one line (``repaint.scene=desert`` with ``stage=s4``), and a sweep job shares the folders of the stages that no swept
setting changes (``gen4gen.paths.isolate_sweep_job``: ``-m stage=all repaint.scene=desert,lake`` segments once).

A key is read by a stage when it lies under one of the stage's entries, or when a value the stage reads takes it
by interpolation (``export.kohya.resolution: ${train.resolution}``). A key the table does not name (``paths.*``,
``workers``, ``stage``, a user's own group) may be read by any stage: it is never said, and a sweep over it gives
every stage its own folder (unless it only places the work: ``gen4gen.paths.NEUTRAL_KEYS``).
"""
from __future__ import annotations

import re

from omegaconf import DictConfig, OmegaConf

PIPELINE = ["s1", "s2", "s3", "s4", "export"]
# s2 chooses each composition's background photo (repaint.backgrounds / scene / source / min_photo_side); ``llm`` is
# read where a backend node takes it (layout=llm, captioner=llm|vlm: ``llm: ${llm}``)
READS = {
    "s1": ("segment", "segmenter", "io"),
    "s2": ("compose", "layout", "io", "seed", "repaint.backgrounds", "repaint.scene", "repaint.source",
           "repaint.min_photo_side"),
    "s3": ("repaint", "inpainter", "io", "seed"),
    "s4": ("caption", "captioner", "seed"),
    "export": ("export",),
    "train": ("train", "trainer", "variant"),
    "bench": ("bench", "roster", "seed"),
    "search": ("search", "io"),
    "route": ("route",),
    # the review app shows the bench run <bench.out_dir>/<bench.name> ranked by the roster, and model search
    "serve": ("serve", "bench.out_dir", "bench.name", "bench.report", "roster", "search", "io"),
}
# sections read only through a backend node that takes them (``llm: ${llm}``), and which backends do
TAKEN = {"llm": "layout=llm or captioner=llm|vlm"}
_KNOWN = {entry.split(".", 1)[0] for entries in READS.values() for entry in entries} | set(TAKEN)
_REF = re.compile(r"\$\{([A-Za-z_][\w.]*)")


def _under(key: str, entry: str) -> bool:
    return key == entry or key.startswith(entry + ".") or entry.startswith(key + ".")


def readers(cfg: DictConfig, key: str) -> list[str] | None:
    """The stages that read ``key`` (a dotted key or a config group), in stage order; None for a key every stage
    reads (not in the table)."""
    if key.split(".", 1)[0] not in _KNOWN:
        return None
    out = []
    for stage, entries in READS.items():
        if any(_under(key, e) for e in entries) or any(_under(key, ref) for e in entries for ref in _refs(cfg, e)):
            out.append(stage)
    return out


def _refs(cfg: DictConfig, entry: str) -> set[str]:
    """The keys that the values under ``entry`` interpolate."""
    node = OmegaConf.select(cfg, entry, default=None)
    if isinstance(node, DictConfig):
        text = str(OmegaConf.to_container(node, resolve=False))
    else:
        parent, _, leaf = entry.rpartition(".")
        holder = OmegaConf.select(cfg, parent) if parent else cfg
        text = str(holder._get_node(leaf)._value()) if isinstance(holder, DictConfig) and leaf in holder else ""
    return set(_REF.findall(text))


def unread_lines(cfg: DictConfig, stages: list[str], overrides: list[str]) -> list[str]:
    """One line per command-line setting that none of ``stages`` reads, saying which stages do."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    lines = []
    for o in OverridesParser.create().parse_overrides(list(overrides)):
        key = o.key_or_group
        who = readers(cfg, key)
        if who is None or set(who) & set(stages):
            continue
        if not who:  # a section only some backends take, and none of this run's does
            lines.append(f"{key} is set but nothing in this run reads it; it is read with "
                         f"{TAKEN.get(key.split('.', 1)[0], 'other backends')}")
            continue
        names = " or ".join(who)
        run = f"stage={who[0]}" + (" or stage=all" if who[0] in PIPELINE else "")
        lines.append(f"{key} is set but stage={cfg.stage} does not run {names}, which read{'s' * (len(who) == 1)} "
                     f"it; run {run}")
    return lines


def first_changed(cfg: DictConfig, keys: set[str]) -> int:
    """The position in ``PIPELINE`` of the first stage that reads one of ``keys`` (len(PIPELINE) when none does);
    a key the table does not name counts as read by s1."""
    first = len(PIPELINE)
    for key in keys:
        who = readers(cfg, key)
        if who is None:
            return 0
        first = min([first] + [PIPELINE.index(s) for s in who if s in PIPELINE])
    return first
