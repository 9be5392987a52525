"""The files of datasets and train runs that train and the bench read back (gen4gen.outputs): one line each
when they are damaged."""
import json

import pytest

from gen4gen.errors import UserError
from gen4gen.outputs import TrainMeta, read_concepts_list

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
