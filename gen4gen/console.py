"""Terminal output: one rich console (stderr), progress bars, the end-of-stage summary table, and what
reaches the terminal from the logging of gen4gen and its libraries."""
from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

# logs and CI are not terminals: a fixed, wide width keeps paths on one line there
console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)


@dataclass
class Summary:
    """What a stage did, as the end-of-run table shows it."""
    stage: str
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    out_dir: str = ""
    notes: dict = field(default_factory=dict)

    @property
    def nothing_done(self) -> bool:
        return self.done + self.skipped == 0


def duration(seconds: float) -> str:
    """A rough length of time for work estimates: "45 s", "12 min", "3.5 h"."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=console, transient=False, disable=not console.is_terminal,
    )


def summary_table(summaries: list[Summary]) -> Table:
    table = Table(title="gen4gen summary", show_lines=False)
    for col in ("stage", "items", "done", "skipped", "failed", "seconds"):
        table.add_column(col, justify="left" if col == "stage" else "right", no_wrap=True)
    for s in summaries:
        failed = f"[red]{s.failed}[/red]" if s.failed else "0"
        table.add_row(s.stage, str(s.total), str(s.done), str(s.skipped), failed, f"{s.seconds:.1f}")
    return table


def summary_lines(summaries: list[Summary]) -> list[str]:
    """Each stage's output folder and notes, one line each under the table: a table cell would break a long
    path mid-word in an 80-column terminal; a line of its own is wrapped (if at all) by the terminal, and a
    copied path stays whole."""
    lines = []
    for s in summaries:
        if s.out_dir:
            lines.append(f"{s.stage}: {s.out_dir}")
        lines += [f"{s.stage}: {key}: {value}" for key, value in s.notes.items()]
    return lines


def print_summaries(summaries: list[Summary]) -> None:
    console.print(summary_table(summaries))
    for line in summary_lines(summaries):
        console.print(line, soft_wrap=True, highlight=False, markup=False)


# ---------------------------------------------------------------- library logging
# libraries that install their own stderr handler or draw progress bars while loading weights: errors only, no bars
QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
# log lines of an HTTP client that retries a request: counted, not shown
RETRY_LINES = {"openai": ("Retrying",), "huggingface_hub": ("Retrying in", "Rate limited")}
_retries = 0
_retries_lock = threading.Lock()


class OwnRecords(logging.Filter):
    """The terminal handler's filter (conf/config.yaml): gen4gen's and Hydra's records pass; a library's
    records (httpx2 request lines, openai retries, captured warnings) go to the run's log file only. The
    HTTP clients' retries are counted on the way, for one line per stage (:func:`take_retries`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        top = record.name.split(".", 1)[0]
        if top in RETRY_LINES and str(record.msg).startswith(RETRY_LINES[top]):
            global _retries
            with _retries_lock:
                _retries += 1
        return top in ("gen4gen", "hydra")


class ConsoleFormat(logging.Formatter):
    """The terminal handler's format (conf/config.yaml): an INFO line is its message; a warning or error says its
    level and, from a stage, the stage (``WARNING s2: background photo: ...``). The run's log file keeps the full
    format (time, logger, level)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        if record.levelno <= logging.INFO:
            return record.message
        parts = record.name.split(".")
        # gen4gen.stages.s2_compose -> s2, gen4gen.stages.export -> export; other modules: the level alone
        where = parts[2].split("_")[0] if parts[:2] == ["gen4gen", "stages"] and len(parts) > 2 else ""
        return f"{record.levelname} {where}: {record.message}" if where else f"{record.levelname} {record.message}"


def take_retries() -> int:
    """HTTP retries counted since the last call."""
    global _retries
    with _retries_lock:
        n, _retries = _retries, 0
    return n


def quiet_libraries() -> None:
    """Before the stages import their libraries: dependency warnings go to the logging system (and so to the log
    file, not the terminal); transformers and diffusers, which have their own stderr handlers, print errors only
    and draw no weight-loading bars (a user's own setting of these variables wins)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    logging.captureWarnings(True)
    # conf/ in the working directory is optional (a user's own config groups, hydra.searchpath): Hydra warned on
    # every sweep job run anywhere else, before its logging was set up, so on the terminal
    warnings.filterwarnings("ignore", message=r"provider=hydra\.searchpath in main, path=conf is not available")
    # huggingface_hub prints through its own stderr handler *and* propagates to the root logger: each of its
    # retry lines appeared twice. Without its handler its records take the root's way (the log file; the terminal
    # filter counts its retries)
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.get_logger().handlers.clear()
