"""A run's terminal holds gen4gen's lines, progress and summary only: no library log lines (HTTP requests,
retries, hub lines, dependency warnings), which go to the run's log file; the summary fits 80 columns."""
import itertools
from pathlib import Path
import re
import warnings

from rich.console import Console

from gen4gen import console as g4console
from gen4gen.console import Summary, summary_lines, summary_table
from tests.helpers.llm_server import LLMServer, Reply
from tests.helpers.pipeline_run import cli
from tests.helpers.trees import fake_s1
from tests.helpers.s2_llm_replies import good

LIBRARY_LINE = re.compile(r"\[(httpx2?|httpcore2?|openai|huggingface_hub|transformers|diffusers|urllib3|py\.warnings)"
                          r"[.\]]|HTTP Request:|Retrying request|Loading weights|Warning:", re.I)


def test_a_stage_run_prints_no_library_log_lines(tmp_path):
    fake_s1(tmp_path / "stages", {"pets": {"cat": 1, "dog": 1}})
    seen = itertools.count()

    def replies(body, n):  # the first two requests are rate-limited: the client retries them
        return Reply(status=429, headers={"Retry-After": "0"}) if next(seen) < 2 else good(body)

    with LLMServer(replies) as srv:
        result = cli(tmp_path, "stage=s2", "layout=llm", f"llm.base_url={srv.base_url}", "llm.concurrency=1",
                     "compose.num_samples=1", "compose.size=[128,128]", env={"OPENAI_API_KEY": "k", "COLUMNS": "80"})
        assert len(srv.requests) == 5  # two 429s, then scenes, ratios, layout
    shown = result.stdout + result.stderr
    assert not [line for line in shown.splitlines() if LIBRARY_LINE.search(line)], shown
    assert "s2: HTTP retries: 2" in shown  # one line for the stage instead of a line per retry
    assert "s2: stages/s2_object_compositions" in shown
    # the library lines are kept for whoever debugs: in the run's log file
    [log] = (tmp_path / "outputs/runs").rglob("gen4gen.log")
    assert log.read_text().count("Retrying request") == 2


def test_dependency_warnings_reach_the_log_not_the_terminal(capsys, monkeypatch):
    import logging

    for key in g4console.QUIET_ENV:  # restored (unset) after the test
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("py.warnings").addHandler(handler)
    try:
        g4console.quiet_libraries()
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("torchvision is deprecated here", DeprecationWarning)
    finally:
        logging.captureWarnings(False)
        logging.getLogger("py.warnings").removeHandler(handler)
    assert "torchvision is deprecated here" in records[0].getMessage()
    assert not g4console.OwnRecords().filter(records[0])  # the terminal's filter drops it
    assert "deprecated" not in capsys.readouterr().err


def test_hub_retry_lines_are_counted_once_not_printed_twice(capfd, monkeypatch):
    import logging

    for key in g4console.QUIET_ENV:
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    g4console.quiet_libraries()
    logging.captureWarnings(False)
    root_records = []
    terminal = logging.Handler()
    terminal.addFilter(g4console.OwnRecords())
    terminal.emit = root_records.append
    logging.getLogger().addHandler(terminal)
    g4console.take_retries()
    openai_log = logging.getLogger("openai._base_client")
    openai_log.setLevel(logging.INFO)  # as under the run's logging config (root at INFO)
    try:
        hub = logging.getLogger("huggingface_hub.utils._http")
        hub.warning("Retrying in 1s [Retry 1/5].")
        hub.warning("Rate limited. Waiting 2s before retry [Retry 2/5].")
        openai_log.info("Retrying request in %f seconds", 0.5)
    finally:
        logging.getLogger().removeHandler(terminal)
        openai_log.setLevel(logging.NOTSET)
    assert g4console.take_retries() == 3 and root_records == []  # counted, and kept off the terminal
    assert "Retrying" not in capfd.readouterr().err  # the hub's own stderr handler is gone


def test_summary_fits_80_columns_and_keeps_paths_whole():
    path = "outputs/datasets/mycanvas_demo_with_a_long_name/gallery/index.html"
    summaries = [Summary("s1", 12, 10, 1, 1, 3.25, "stages/s1_segmented_foreground"),
                 Summary("export", 1, 1, 0, 0, 9.5, "outputs/datasets/mycanvas_demo_with_a_long_name",
                         notes={"gallery": path})]
    narrow = Console(width=80, record=True, force_terminal=False)
    narrow.print(summary_table(summaries))
    table = narrow.export_text()
    assert max(len(line) for line in table.splitlines()) <= 80
    assert re.search(r"s1\s+│\s+12\s+│\s+10\s+│\s+1\s+│\s+1\s+│\s+3\.2", table)
    assert summary_lines(summaries) == ["s1: stages/s1_segmented_foreground",
                                        "export: outputs/datasets/mycanvas_demo_with_a_long_name",
                                        f"export: gallery: {path}"]


LOAD = """
import sys
if sys.argv[2] == "quiet":
    from gen4gen.console import quiet_libraries
    quiet_libraries()
from transformers import BertConfig, BertModel
if sys.argv[3] == "save":
    config = BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    BertModel(config).save_pretrained(sys.argv[1])
else:
    BertModel.from_pretrained(sys.argv[1])
"""


def test_loading_weights_draws_no_bars(tmp_path):
    """transformers draws a "Loading weights" bar per from_pretrained; after quiet_libraries (what the CLI runs
    first) it draws none. Both runs load the same tiny model, so the check is not vacuous."""
    import os
    import subprocess
    import sys

    from tests.helpers.pipeline_run import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    for key in g4console.QUIET_ENV:
        env.pop(key, None)

    def run(*args):
        return subprocess.run([sys.executable, "-c", LOAD, str(tmp_path / "bert"), *args], env=env,
                              capture_output=True, text=True, timeout=300, check=True)
    run("loud", "save")
    assert "Loading weights" in run("loud", "load").stderr
    quiet = run("quiet", "load")
    assert quiet.stderr == "" and quiet.stdout == ""


def test_terminal_log_lines_are_short_and_the_log_file_keeps_the_full_format(tmp_path, capsys):
    """The terminal shows an INFO line as its message and a warning as ``WARNING s2: ...`` (it had ~60 characters
    of date, logger and level before each message); the run's log file keeps time, logger and level."""
    import logging
    import logging.config

    from omegaconf import OmegaConf

    from gen4gen.__main__ import conf_dir

    conf = OmegaConf.load(Path(conf_dir()) / "config.yaml").hydra.job_logging
    conf.handlers.file.filename = str(tmp_path / "gen4gen.log")
    root = logging.getLogger()
    kept = root.handlers[:], root.level
    try:
        logging.config.dictConfig(OmegaConf.to_container(conf))
        logging.getLogger("gen4gen.stages.s2_compose").warning("background photo: %s is unreadable", "a.jpg")
        logging.getLogger("gen4gen.runner").warning("s3: pets/cat+mug_000: no photo")
        logging.getLogger("gen4gen.stages.s3_repaint").info("12 backgrounds")
        for h in root.handlers:
            h.flush()
    finally:
        for h in root.handlers:
            h.close()
        root.handlers[:], _ = kept
        root.setLevel(kept[1])
    assert capsys.readouterr().out.splitlines() == [
        "WARNING s2: background photo: a.jpg is unreadable", "WARNING s3: pets/cat+mug_000: no photo",
        "12 backgrounds"]
    logged = (tmp_path / "gen4gen.log").read_text().splitlines()
    assert re.fullmatch(r"\[[-0-9 :,]+\]\[gen4gen\.stages\.s2_compose\]\[WARNING\] - background photo: a\.jpg is "
                        r"unreadable", logged[0])
