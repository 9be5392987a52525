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
