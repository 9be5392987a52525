"""Stage dispatch: ``stage=<name>`` runs one stage, ``stage=all`` the data pipeline in order."""
from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

from omegaconf import DictConfig
from rich.markup import escape

from gen4gen import run_folders
from gen4gen.console import Summary, console, print_summaries, take_retries
from gen4gen.errors import UserError
from gen4gen.paths import STAGE_DIRS, isolate_sweep_job, shared_stage
from gen4gen.settings import config_problems, missing_key_notes, section, top_level
from gen4gen.stage_reads import PIPELINE, unread_lines
from gen4gen.stage_settings import PathsSettings

log = logging.getLogger("gen4gen")

# name -> module with ``run(cfg) -> Summary``; imported lazily so a stage's heavy deps load only when used
STAGES = {
    "s1": "gen4gen.stages.s1_segment",
    "s2": "gen4gen.stages.s2_compose",
    "s3": "gen4gen.stages.s3_repaint",
    "s4": "gen4gen.stages.s4_caption",
    "export": "gen4gen.stages.export",
    "train": "gen4gen.stages.train",
    "bench": "gen4gen.stages.bench",
    "search": "gen4gen.stages.search",
    "route": "gen4gen.stages.route",
    "serve": "gen4gen.stages.serve",
}


def run(cfg: DictConfig) -> int:
    """Run the configured stage(s); the exit status is non-zero only when nothing could be done or,
    with ``strict=true``, when any item failed."""
    names = PIPELINE if cfg.stage == "all" else [cfg.stage]
    unknown = [n for n in names if n not in STAGES]
    if unknown:  # stage=1 reads as a number: quoted as the name it was meant to be
        console.print(f"[red]unknown stage '{escape(f'{unknown[0]}')}'[/red]; choose one of: all, {', '.join(STAGES)}")
        run_folders.discard(run_folders.current())  # refused at the start: no run folder
        return _exit(cfg, 2)
    if not config_ok(cfg, names):
        run_folders.discard(run_folders.current())
        return _exit(cfg, 2)
    top = top_level(cfg)  # checked by config_ok
    if run_folders.current():
        run_folders.prune(section(cfg, "paths", PathsSettings).outputs_dir / "runs", top.keep_runs, run_folders.current())
    job_dir = isolate_sweep_job(cfg, names)
    if job_dir:
        shared = [n for n in names if n in STAGE_DIRS and (Path(cfg.paths.stages_dir) / STAGE_DIRS[n]).is_symlink()]
        them = "it" if len(shared) == 1 else "them"
        console.print(f"sweep job: stages and datasets go to {job_dir}" + (
            f"; {', '.join(shared)} in the shared folder (no swept setting changes {them})" if shared else ""),
            soft_wrap=True)
    summaries: list[Summary] = []
    code, stopped = 0, ""
    for name in names:
        try:
            with shared_stage(cfg, name):
                summary = importlib.import_module(STAGES[name]).run(cfg)
        except KeyboardInterrupt as e:  # Ctrl-C: finished items stay done; one line, no traceback
            interrupted(sum(s.done for s in summaries) + getattr(e, "done", 0))
        except UserError as e:
            stopped = f"[red]{escape(f'{name}: {e}')}[/red]"  # one line, however long
            code = 2
            break
        except Exception as e:  # noqa: BLE001 - a bug, not bad input: one clear line here, the traceback in the log
            log.debug("stage %s crashed", name, exc_info=True)
            stopped = (f"[red]{escape(f'{name} stopped: {type(e).__name__}: {e}')}[/red] (traceback in the run's "
                       f"gen4gen.log; finished items are kept, rerun to resume)")
            code = 1
            break
        retries = take_retries()
        if retries:  # the HTTP clients' own retry lines are in the log file only
            summary.notes["HTTP retries"] = f"{retries} (429/5xx/timeouts; each in the run's gen4gen.log)"
        summaries.append(summary)
        # the log file's record; the terminal has the summary table
        log.debug("%s: %d done, %d skipped, %d failed of %d in %.1fs", name, summary.done, summary.skipped,
                  summary.failed, summary.total, summary.seconds)
        if summary.nothing_done and summary.total > 0 or (top.strict and summary.failed):
            code = 1
    if summaries:  # the stages that finished; a stage that stopped has its one line, last, and no empty row
        print_summaries(summaries)
    if stopped:
        console.print(stopped, soft_wrap=True)
    if code == 2 and not summaries:  # stopped before anything was done: a refusal leaves no run folder
        run_folders.discard(run_folders.current())
    return _exit(cfg, code)


def config_ok(cfg: DictConfig, names: list[str]) -> bool:
    """The schema check of the composed config: one line per bad value, before any stage starts; and a
    warning for a later stage's missing LLM key and for a setting given that no running stage reads."""
    problems = config_problems(cfg)
    for line in problems:
        console.print(f"[red]{escape(line)}[/red]", soft_wrap=True)
    if not problems:
        for line in missing_key_notes(cfg, names) + unread_lines(cfg, names + _after_sweep(), _command_overrides()):
            console.print(f"[yellow]{escape(line)}[/yellow]", soft_wrap=True)
    return not problems


def _command_overrides() -> list[str]:
    """This job's command-line overrides (none when composed without @hydra.main: tests, notebooks)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _after_sweep() -> list[str]:
    """The stage a sweep's callback runs once its jobs are done (``+experiment=personalize`` benches what it trained):
    its settings are read too."""
    from hydra.core.hydra_config import HydraConfig

    callbacks = HydraConfig.get().callbacks if HydraConfig.initialized() else {}
    return ["bench"] if any("BenchAfterTraining" in str(c.get("_target_", "")) for c in callbacks.values()) else []


def interrupted(done: int = 0) -> None:
    console.print(f"interrupted: {done} items done, rerun to resume")
    sys.exit(130)  # 128 + SIGINT, as a shell reports a Ctrl-C'd command


def _exit(cfg: DictConfig, code: int) -> int:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if code and HydraConfig.initialized() and HydraConfig.get().mode == RunMode.RUN:
        sys.exit(code)
    return code  # multirun: let the other jobs of the sweep go on
