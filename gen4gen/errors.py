"""The two ways a problem ends: the whole run (``UserError``) or one work item (``ItemFailed``)."""
from __future__ import annotations


class UserError(Exception):
    """A problem with the whole run (missing weights, empty input, no GPU): printed without a traceback."""


class ItemFailed(Exception):
    """A work item cannot be done; the message is the reason a user reads in failures.jsonl."""
