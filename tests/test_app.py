"""The dispatcher: a stage that crashes is one clear line and a non-zero status, not a traceback."""
from gen4gen import app
from gen4gen.stages import s2_compose


def test_a_crashing_stage_is_reported_in_one_line(cfg_factory, monkeypatch, capsys):
    def boom(cfg):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(s2_compose, "run", boom)
    assert app.run(cfg_factory("stage=s2")) == 1
    err = capsys.readouterr().err
    assert "s2 stopped: RuntimeError: disk on fire" in err and "Traceback" not in err
    assert err.count("disk on fire") == 1 and "gen4gen summary" not in err  # one line, no empty summary table


def test_unknown_stage_lists_the_stages(cfg_factory, capsys):
    assert app.run(cfg_factory("stage=s9")) == 2
    assert "unknown stage 's9'" in capsys.readouterr().err


def test_help_is_the_stages_the_groups_and_the_ten_keys_people_change(tmp_path):
    import re

    from omegaconf import OmegaConf

    from tests.conftest import make_cfg
    from tests.helpers.pipeline_run import ROOT, cli

    out = cli(tmp_path, "--help", "compose.num_samples=7").stdout
    lines = out.splitlines()
    assert len(lines) < 60 and "_target_" not in out and "sd-turbo" not in out  # not the config, not the roster
    for name in ["all", *app.STAGES]:
        assert any(re.match(rf"  {name} +\w", x) for x in lines), name  # each stage with its line
    groups = sorted(p for p in (ROOT / "conf").iterdir() if p.is_dir() and p.name not in {"hydra", "__pycache__"})
    for group in groups:
        assert f"{group.name}: {', '.join(sorted(f.stem for f in group.glob('*.yaml')))}" in lines
    start = lines.index("== Keys people change most (key=value; now) ==")
    keys = [m.group(1) for x in lines[start:] for m in re.finditer(r"(?:^  |\s)([a-z_.]+)=", x) if x.startswith("  ")
            and not x.startswith("      ")]
    assert len(keys) == 11 and "shard.count" in keys  # ten settings, the shard pair on one line
    cfg = make_cfg(tmp_path)
    missing = object()
    assert [k for k in keys if OmegaConf.select(cfg, k, default=missing) is missing] == []
    meanings = [lines[i + 1] for i, x in enumerate(lines[start:-3], start) if re.match(r"  [a-z]", x)]
    assert len(meanings) == 10 and all(m.startswith("      ") and len(m.split()) >= 3 for m in meanings)
    assert "  compose.num_samples=7" in lines  # the values shown are the config's, overrides included
    assert "python -m gen4gen --cfg job" in lines[-2]


def test_a_sweep_job_folder_name_holds_no_path(tmp_path):
    """A path override (repaint.backgrounds=/home/me/bg) is left out of the job folder's name, which would
    otherwise nest folders (0_repaint.backgrounds=/home/...); every key the list names exists."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from gen4gen.__main__ import conf_dir

    over = [f"repaint.backgrounds={tmp_path}/bg", "repaint.scene=desert", "segmenter.model_path=/m/isnet.onnx",
            "train.dataset=/d/cats", "search.index=/i", "route.train_dir=/t", "seed=1"]
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=over, return_hydra_config=True)
        others = compose(config_name="config", overrides=["layout=llm", "segmenter=sam"])  # their own keys
    assert cfg.hydra.job.override_dirname == "repaint.scene=desert,seed=1"
    for key in cfg.hydra.job.config.override_dirname.exclude_keys:
        assert any(OmegaConf.select(c, key, default="missing") != "missing" for c in (cfg, others)), key
