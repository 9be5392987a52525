"""A roster (any config group option) written to conf/ of the working directory is found by name, and the
GEMRec importer prints the exact command that runs the roster it wrote."""
import os
import subprocess
import sys
from pathlib import Path

import yaml

from gen4gen.bench.gemrec import bench_command

ROOT = Path(__file__).resolve().parents[1]


def test_roster_in_the_working_directory_conf_is_found(tmp_path):
    roster = {"name": "my_models", "models": [{"name": "tiny", "pipeline": "sd", "repo": "some/where"}]}
    (tmp_path / "conf/roster").mkdir(parents=True)
    (tmp_path / "conf/roster/mine.yaml").write_text(yaml.safe_dump(roster))
    r = subprocess.run([sys.executable, "-m", "gen4gen", "stage=bench", "roster=mine", "--cfg", "job"], cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load(r.stdout)
    assert cfg["roster"] == roster and cfg["bench"]["name"] == "${oc.select:roster.name,roster}"


def test_importer_names_the_command_for_where_the_roster_went(tmp_path):
    assert bench_command(tmp_path / "conf/roster/gemrec.yaml", cwd=tmp_path) == \
        "python -m gen4gen stage=bench roster=gemrec"
    assert bench_command(ROOT / "conf/roster/fewstep.yaml", cwd=tmp_path) == "python -m gen4gen stage=bench roster=fewstep"
    elsewhere = tmp_path / "x/conf/roster/gem.yaml"
    assert bench_command(elsewhere, cwd=tmp_path) == \
        f"python -m gen4gen stage=bench roster=gem 'hydra.searchpath=[file://{tmp_path / 'x/conf'}]'"
    assert bench_command(tmp_path / "gem.yaml", cwd=tmp_path).startswith(
        f"mkdir -p conf/roster && mv {tmp_path / 'gem.yaml'} conf/roster/ && python -m gen4gen stage=bench roster=gem")


def test_the_searchpath_command_it_prints_works(tmp_path):
    conf = tmp_path / "x/conf"
    (conf / "roster").mkdir(parents=True)
    (conf / "roster/gem.yaml").write_text(yaml.safe_dump({"name": "gem", "models": []}))
    command = bench_command(conf / "roster/gem.yaml", cwd=tmp_path)
    override = command.split("'")[1]
    r = subprocess.run([sys.executable, "-m", "gen4gen", "stage=bench", "roster=gem", override, "--cfg", "job"],
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["roster"] == {"name": "gem", "models": []}
