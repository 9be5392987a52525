"""Terminal output: one rich console (stderr), progress bars and the end-of-stage summary table."""
from __future__ import annotations

import sys
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


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=console, transient=False, disable=not console.is_terminal,
    )


def summary_table(summaries: list[Summary]) -> Table:
    table = Table(title="gen4gen summary", show_lines=False)
    for col in ("stage", "items", "done", "skipped", "failed", "seconds", "output"):
        # paths wrap instead of being cut: the last lines a user sees name the dataset and gallery
        table.add_column(col, justify="right" if col not in ("stage", "output") else "left",
                         overflow="fold" if col == "output" else "ellipsis")
    for s in summaries:
        failed = f"[red]{s.failed}[/red]" if s.failed else "0"
        table.add_row(s.stage, str(s.total), str(s.done), str(s.skipped), failed, f"{s.seconds:.1f}", s.out_dir)
        for key, value in s.notes.items():
            table.add_row("", "", "", "", "", "", f"[dim]{key}: {value}[/dim]")
    return table


def print_summaries(summaries: list[Summary]) -> None:
    console.print(summary_table(summaries))
