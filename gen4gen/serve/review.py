"""Review decisions: keep / reject / edited captions per final image, in ``<stages>/review.jsonl``.

The file is a journal: one JSON line per decision, the latest line of an id wins. A decision is one
``write`` on a file opened for appending, then ``fsync``, before the server answers, so a killed server
loses nothing and never leaves a half file (a torn last line is skipped with a warning). Undo is a new
line with the earlier state. Each line carries the item's *content key* (the s3 image's hash and its
captions as s4 wrote them): after an item is redone its decision no longer applies and the item shows
"changed since review"; the export then treats it as unreviewed.

This module needs no web framework: ``stage=export`` calls ``apply_review`` on its collection.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from gen4gen.artefacts import Captions, S3Meta, Text

log = logging.getLogger(__name__)
REVIEW_FILE = "review.jsonl"
CAPTION_KEYS = ("short", "detailed", "personalized")
MAX_CAPTION = 4000  # characters: a caption is a sentence or two; the limit keeps a stray paste out of a dataset
Status = Literal["keep", "reject", "unreviewed"]


class Decision(BaseModel):
    """One line of the journal."""
    model_config = ConfigDict(extra="forbid")
    id: StrictStr
    content: StrictStr
    status: Status
    # not blank, as captions.json requires: an edit replaces a field of the typed captions unvalidated
    captions: dict[Literal["short", "detailed", "personalized"], Annotated[Text, Field(max_length=MAX_CAPTION)]] = {}
    at: float = 0.0


def content_key(s3_meta: S3Meta, captions: Captions) -> str:
    """What a decision was made on: the final image (its stage hash) and the captions s4 wrote for it."""
    body = json.dumps([s3_meta.config_hash, s3_meta.fingerprint,
                       {k: getattr(captions, k) for k in CAPTION_KEYS}], sort_keys=True, ensure_ascii=False)
    return hashlib.blake2b(body.encode("utf-8"), digest_size=12).hexdigest()


def review_path(stages_dir: Path) -> Path:
    return Path(stages_dir) / REVIEW_FILE


def read_decisions(stages_dir: Path) -> dict[str, Decision]:
    """The latest decision per item id; a line that is not a decision (torn, edited by hand) is skipped
    with one warning naming the file and line."""
    path = review_path(stages_dir)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        log.warning("review file %s unreadable (%s): no decisions applied", path, e)
        return {}
    out: dict[str, Decision] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = Decision.model_validate_json(line)
        except ValidationError as e:
            log.warning("%s line %d skipped: not a review decision (%s)", path, n, e.errors()[0]["msg"])
            continue
        out[d.id] = d
    return out


class ReviewStore:
    """The journal of one stages tree, folded in memory; ``record`` appends and syncs one line."""

    def __init__(self, stages_dir: Path):
        self.path = review_path(stages_dir)
        self.decisions = read_decisions(stages_dir)
        self._lock = threading.Lock()
        self.recorded = 0  # decisions of this session

    def record(self, decision: Decision) -> Decision:
        decision.at = round(time.time(), 3)
        line = (decision.model_dump_json() + "\n").encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)  # one write on an O_APPEND file: lines of concurrent writers never interleave
                os.fsync(fd)
            finally:
                os.close(fd)
            self.decisions[decision.id] = decision
            self.recorded += 1
        return decision


def review_state(decision: Decision | None, content: str) -> str:
    """keep | reject | unreviewed | changed (a decision on an earlier version of the item)."""
    if decision is None:
        return "unreviewed"
    if decision.content != content:
        return "changed"
    return decision.status


def apply_review(stages_dir: Path, items: list, left_out: list[dict]) -> tuple[list, dict]:
    """The export's items after review: rejected ones move to ``left_out`` (reason "rejected in review"),
    kept and unreviewed ones get their edited captions. ``items`` are ``ExportItem``s; returns the items to
    export and notes for the summary and the card."""
    decisions = read_decisions(stages_dir)
    if not decisions:
        return items, {}
    kept, rejected, edited, changed = [], 0, 0, 0
    for it in items:
        d = decisions.get(it.id)
        state = review_state(d, content_key(it.s3_meta, it.captions))
        if state == "changed":
            changed += 1
        elif state == "reject":
            left_out.append({"stage": "review", "id": it.id, "reason": "rejected in review"})
            rejected += 1
            continue
        elif d is not None and d.captions:
            it.captions = it.captions.model_copy(update=d.captions)
            edited += 1
        kept.append(it)
    notes = {"review": f"{rejected} rejected in review (left_out.jsonl), {edited} with captions edited in review"}
    if changed:
        notes["review"] += f", {changed} changed since review (exported as unreviewed)"
    return kept, notes
