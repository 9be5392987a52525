"""The files of datasets, train runs and bench runs that train and the bench read back (gen4gen.artefacts): one line
each when they are damaged."""
import json

import pytest

from gen4gen.errors import UserError
from gen4gen.artefacts import TrainMeta, read_concepts_list, read_records, read_roster_entry

GOOD = {"instance_prompt": "photo of a <new1> cat", "class_prompt": "cat", "instance_data_dir": "concepts/cat",
        "class_data_dir": ""}


@pytest.mark.parametrize("body, why", [
    ("{not json", "not valid JSON"),
    (json.dumps(GOOD), "expected a list"),
    (json.dumps([{**GOOD, "instance_prompt": "photo of a cat"}]), "0.instance_prompt: expected a prompt with a <newK>"),
    (json.dumps([{**GOOD, "instance_data_dir": "/etc"}]), "0.instance_data_dir: expected a relative path"),
    (json.dumps([{**GOOD, "instance_data_dir": "../../x"}]), "0.instance_data_dir: expected a relative path"),
    (json.dumps([{**GOOD, "instance_prompt": 3}]), "0.instance_prompt: expected a string"),
])
def test_a_damaged_concepts_list_is_one_line_naming_the_file(tmp_path, body, why):
    (tmp_path / "concepts_list.json").write_text(body)
    with pytest.raises(UserError) as e:
        read_concepts_list(tmp_path)
    assert str(e.value).startswith(f"{tmp_path / 'concepts_list.json'}: ") and why in str(e.value)
    assert "\n" not in str(e.value)


def test_concepts_list_gives_each_concept_its_token(tmp_path):
    (tmp_path / "concepts_list.json").write_text(json.dumps([GOOD, {**GOOD, "instance_prompt": "a <new12> dog",
                                                                    "instance_data_dir": "concepts/dog"}]))
    assert [(c.concept, c.token) for c in read_concepts_list(tmp_path)] == [("cat", "<new1>"), ("dog", "<new12>")]
    with pytest.raises(UserError, match="unreadable"):
        read_concepts_list(tmp_path / "missing")


def test_a_train_marker_that_does_not_read_means_not_trained(tmp_path):
    assert TrainMeta.of(tmp_path) is None
    for bad in ("{", "[]", '{"config_hash": 3}', '{"stage": "train"}'):
        (tmp_path / "meta.json").write_text(bad)
        assert TrainMeta.of(tmp_path) is None, bad
    data = TrainMeta.build({"config_hash": "abc", "stage": "train", "examples": 2, "losses": [0.5, 0.25],
                            "device": "cpu"}).dump()
    (tmp_path / "meta.json").write_bytes(data)
    meta = TrainMeta.of(tmp_path)
    assert (meta.config_hash, meta.examples, meta.losses) == ("abc", 2, [0.5, 0.25])
    assert meta.dump() == data  # round trip, unknown keys kept in order


RECORD = {"id": "m/drawbench/p1/s0", "stage": "bench", "config_hash": "", "fingerprint": "f", "seconds": 0.1,
          "model": "m", "set": "drawbench", "prompt_id": "p1", "prompt": "a cat", "category": "animals", "seed": 0,
          "width": 32, "height": 32, "steps": 2, "guidance": 0.0, "negative": None,
          "image": "images/m/drawbench/p1_s0.png", "latency_s": 0.5, "batch_size": 2, "batch_seconds": 1.0,
          "peak_memory_gb": 0.1, "memory_kind": "cpu_peak_rss", "cost_usd": None, "device": "cpu",
          "pipeline": "StableDiffusionPipeline", "model_fingerprint": "abc", "settings_hash": "def",
          "outputs": {"p1_s0.png": [10, "0"]}}


@pytest.mark.parametrize("field, value, why", [
    ("seed", "zero", "seed: expected a number, got 'zero'"),
    ("width", 0, "width: input should be greater than or equal to 1, got 0"),
    ("image", "../../etc/passwd", "image: expected a relative path inside the item folder, got '../../etc/passwd'"),
    ("model", None, "model: expected a string, got null"),
])
def test_a_bench_image_record_of_a_wrong_type_is_one_line_and_left_out(tmp_path, field, value, why):
    folder = tmp_path / "images" / "m" / "drawbench"
    folder.mkdir(parents=True)
    (folder / "p1_s0.json").write_text(json.dumps(RECORD))
    (folder / "p2_s0.json").write_text(json.dumps({**RECORD, field: value}))
    records, problems = read_records(tmp_path)
    assert [r.key for r in records] == [("m", "drawbench", "p1", 0)]
    assert records[0].row()["latency_s"] == 0.5 and "outputs" not in records[0].row()
    assert problems == [f"{folder}/p2_s0.json: {why}"]


@pytest.mark.parametrize("body, why", [
    ("name: run\nsource: base\nsteps: many\n", "steps: input should be a valid integer"),
    ("name: a/b\nsource: base\n", "name: 'a/b': use letters, digits"),
    ("- name: run\n", "expected a mapping, got list"),
    ("name: [unclosed\n", "not valid YAML"),
])
def test_a_damaged_roster_entry_is_one_line_naming_the_file(tmp_path, body, why):
    (tmp_path / "roster_entry.yaml").write_text(body)
    with pytest.raises(UserError) as e:
        read_roster_entry(tmp_path / "roster_entry.yaml")
    assert str(e.value).startswith(f"{tmp_path / 'roster_entry.yaml'}: ") and why in str(e.value)
    assert "\n" not in str(e.value)
