"""What an export is made from, as one hash: the runner's fingerprint of a dataset item (gen4gen.stages.export).

Every file of the s1..s4 folders counts (metas, layouts, captions, images, masks, cut-outs), with the concept
registry and the review decisions: a dataset is redone when any of them changed since it was written, and a
rerun on an unchanged tree is a skip. Item files count by path, size and modification time (a stat each: a
redone item has a new time); the files a stage rewrites on every run, even when it skips every item
(manifests, failure lists), and the registry and review journal count by their bytes, so a rerun of s1..s4
that changes nothing leaves the export done.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from gen4gen.concepts import ConceptRegistry
from gen4gen.paths import STAGE_DIRS
from gen4gen.serve.review import REVIEW_FILE

BY_CONTENT = (ConceptRegistry.FILE, REVIEW_FILE)


def tree_fingerprint(stages_dir: Path) -> str:
    h = hashlib.blake2b(digest_size=12)
    stages_dir = Path(stages_dir)
    for name in BY_CONTENT:
        h.update(f"{name}\0".encode())
        h.update(_content(stages_dir / name))
    for folder in STAGE_DIRS.values():
        root = stages_dir / folder
        for top, dirs, files in os.walk(root):
            dirs.sort()
            base = Path(top)
            rel = base.relative_to(root).as_posix()
            for f in sorted(files):
                if f.startswith(".") and f.endswith(".tmp"):  # a write in progress or a killed run's: not an input
                    continue
                path = base / f
                h.update(f"{folder}/{rel}/{f}\0".encode())
                if base == root:  # the stage's own lists, rewritten by every run of it
                    h.update(_content(path))
                    continue
                try:
                    st = path.stat()
                except OSError:
                    continue
                h.update(f"{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _content(path: Path) -> bytes:
    try:
        return hashlib.blake2b(path.read_bytes(), digest_size=12).digest()
    except OSError:
        return b"-"
