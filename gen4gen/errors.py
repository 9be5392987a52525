"""The ways a run ends early: the whole run (``UserError``), one work item (``ItemFailed``), or Ctrl-C
(``Interrupted``)."""
from __future__ import annotations


class UserError(Exception):
    """A problem with the whole run (missing weights, empty input, no GPU): printed without a traceback."""


class ItemFailed(Exception):
    """A work item cannot be done; the message is the reason a user reads in failures.jsonl."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a stage, with how many items that stage finished before it (they stay done)."""

    def __init__(self, done: int = 0):
        super().__init__(done)
        self.done = done
