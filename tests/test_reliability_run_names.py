"""One train run never silently replaces another (issue 22, class 7). Generated cases: a folder holding a finished
run of other settings (steps, learning rate, captions, rank...: settings that change the hash but not the
name) or a killed run of other settings is refused with one line naming ``train.name``, and every byte of it
stays; the same settings skip or resume; an empty folder or one of someone else's files trains.
``+experiment=personalize`` and ``stage=train trainer=lora`` name their LoRA runs alike, so the experiment is the
case the issue found."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gen4gen.errors import UserError
from gen4gen.io import json_bytes, write_atomic
from gen4gen.markers import META
from gen4gen.train import checkpoints
from gen4gen.train.runs import check_run_folder
from tests.test_train import _cfg, tiny  # noqa: F401 - tiny: the module fixture


def digest(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tiny, tmp_path_factory):  # noqa: F811
    """A real 4-step LoRA run, as `stage=train trainer=lora` leaves it."""
    from gen4gen.stages import train as stage

    root = tmp_path_factory.mktemp("named")
    cfg = _cfg(root, tiny, "trainer=lora")
    assert stage.run(cfg).done == 1
    return root, Path(cfg.train.out_dir) / "lora_mycanvas"


# overrides that change what is trained (the hash), each a run the finished one is not
OTHER = ["train.max_steps=3", "train.lr=2e-3", "train.caption=detailed", "trainer.rank=2",
         "train.masked_loss=true", "train.seed=5", "train.resolution=40"]


@pytest.mark.parametrize("override", OTHER)
def test_a_finished_run_of_other_settings_is_never_replaced(finished, tiny, tmp_path, override):  # noqa: F811
    import shutil

    from gen4gen.stages import train as stage

    root, run = finished
    out = tmp_path / "outputs" / "train"
    shutil.copytree(run, out / run.name)
    before = digest(out / run.name)
    with pytest.raises(UserError) as e:
        stage.run(_cfg(tmp_path, tiny, "trainer=lora", f"train.out_dir={out}", override))
    line = str(e.value)
    assert "\n" not in line and "train.name=" in line and "LoRA on MyCanvas, 4 steps" in line
    assert digest(out / run.name) == before


def test_the_same_settings_skip_and_another_name_trains_beside_it(finished, tiny, tmp_path):  # noqa: F811
    import shutil

    from gen4gen.stages import train as stage

    root, run = finished
    out = tmp_path / "outputs" / "train"
    shutil.copytree(run, out / run.name)
    assert stage.run(_cfg(tmp_path, tiny, "trainer=lora", f"train.out_dir={out}")).skipped == 1
    before = digest(out / run.name)
    summary = stage.run(_cfg(tmp_path, tiny, "trainer=lora", f"train.out_dir={out}", "train.max_steps=2",
                             "train.name=lora_short"))
    assert summary.done == 1 and (out / "lora_short" / META).is_file()
    assert digest(out / run.name) == before


# the state a folder is in -> whether a run of configuration "new" on examples "data" (its TrainMeta.hash
# "new:data") may be written there
STATES = {
    "empty": (lambda d: d.mkdir(parents=True), True),
    "absent": (lambda d: None, True),
    "someone's notes": (lambda d: (d.mkdir(parents=True), (d / "notes.txt").write_text("mine")), True),
    "finished, same": (lambda d: write_atomic(d / META, json_bytes({"config_hash": "new", "fingerprint": "data",
                                                                    "stage": "train"})), True),
    "finished, other": (lambda d: write_atomic(d / META, json_bytes({"config_hash": "old", "fingerprint": "data",
                                                                     "stage": "train", "losses": [1.0, 0.5]})), False),
    "finished, other examples": (lambda d: write_atomic(d / META, json_bytes({"config_hash": "new", "fingerprint": "x",
                                                                              "stage": "train"})), False),
    "finished before runs had fingerprints": (lambda d: write_atomic(d / META, json_bytes({"config_hash": "new"})),
                                              False),
    "killed, same": (lambda d: checkpoints.save(d, 2, {"config_hash": "new:data"}, 2), True),
    "killed, other": (lambda d: checkpoints.save(d, 2, {"config_hash": "old:data"}, 2), False),
    "killed, both": (lambda d: (checkpoints.save(d, 2, {"config_hash": "old:data"}, 2),
                                checkpoints.save(d, 4, {"config_hash": "new:data"}, 2)), True),
    "garbled meta, no checkpoint": (lambda d: write_atomic(d / META, b"{not json"), True),
    "killed, torn checkpoint": (lambda d: write_atomic(d / checkpoints.DIR / "step_0000002.pt", b"torn"), False),
}


@pytest.mark.parametrize("state", STATES)
def test_which_folders_a_run_may_be_written_into(tmp_path, state):
    make, allowed = STATES[state]
    run = tmp_path / "run"
    make(run)
    before = digest(run) if run.exists() else {}
    if allowed:
        check_run_folder(run, "new:data")
    else:
        with pytest.raises(UserError, match=r"holds an? .*run of other settings.*train.name=") as e:
            check_run_folder(run, "new:data")
        assert "\n" not in str(e.value)
    assert (digest(run) if run.exists() else {}) == before


def test_the_experiments_lora_variant_does_not_retrain_a_users_lora_run(finished, tiny, tmp_path):  # noqa: F811
    """The case found: `+experiment=personalize` names its LoRA variant lora_mycanvas, as `stage=train trainer=lora`
    does; its job now stops with one line instead of retraining the user's run."""
    import shutil

    from gen4gen.stages import train as stage

    root, run = finished
    out = tmp_path / "outputs" / "train"
    shutil.copytree(run, out / run.name)
    before = digest(out / run.name)
    with pytest.raises(UserError, match="lora_mycanvas holds a finished run of other settings"):
        stage.run(_cfg(tmp_path, tiny, "+variant=lora_mycanvas", f"train.out_dir={out}", "train.max_steps=5"))
    assert digest(out / run.name) == before
