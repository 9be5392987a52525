"""Tampered train runs (issue 22, classes 2 and 3): ``personalize.load`` on a run whose manifest, token files or
weights were damaged, swapped or pointed elsewhere is one line naming the file and what is wrong, never a raw
exception, never a file read from outside the run, and the pipeline is left as it was. Cases are generated:
every field of the manifest with values of other types, every file of the run damaged every way, every escape
kind for every path the manifest holds."""
from __future__ import annotations

import io
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from safetensors.torch import save as st_save

from gen4gen.errors import UserError
from gen4gen.artefacts import MANIFEST, Manifest, TokenFile
from tests.helpers.settings import backend
from tests.test_reliability_artefacts import bad_values
from tests.test_reliability_paths import KINDS, hostile
from tests.test_train import _pipeline_class, _save, tiny  # noqa: F401 - tiny: the module fixture


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("runs")
    _save(tiny, "sd", root / "custom_diffusion")
    _save(tiny, "sd", root / "lora", trainer=backend("trainer", "lora", rank=2))
    return root


@pytest.fixture(scope="module")
def pipe(tiny):  # noqa: F811
    """One pipeline for every case: a refused run must leave it exactly as it was."""
    return _pipeline_class("sd").from_pretrained(tiny["sd"])


def _state(pipe) -> tuple:
    return len(pipe.tokenizer), {k: v.clone() for k, v in pipe.unet.state_dict().items() if ".attn2.to_" in k}


# ---------------------------------------------------------------- generated cases
class Evil:
    """A pickle that would run code when loaded without weights_only."""

    def __reduce__(self):
        return (print, ("pwned",))


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _damages(path: Path, width: int) -> dict:
    """Every way one file of a run can be damaged: name -> new bytes (None: the file is removed)."""
    data = path.read_bytes()
    out = {"missing": None, "empty": b"", "truncated": data[: len(data) // 2], "garbage": bytes(range(256)) * 8,
           "a JSON file": b'{"a": 1}\n', "a pickled list": _torch_bytes([1, 2, 3]),
           "a pickle that runs code": pickle.dumps(Evil()), "a plain pickle of a dict": pickle.dumps({"a": 1})}
    key = "<new1>" if path.name.startswith("<new1>") else None
    if key:  # a token file: the right key with the wrong shape or kind, or another key
        out.update({"wrong width": st_save({key: torch.zeros(width + 3)}),
                    "3-d": st_save({key: torch.zeros(2, 2, width)}),
                    "other key": st_save({"<new9>": torch.zeros(width)}), "no tensors": st_save({})})
    elif path.name.endswith(".safetensors"):  # weights: every tensor transposed, or keys of nothing in the UNet
        state = load_file(str(path))
        out.update({"transposed": st_save({k: v.t().contiguous() for k, v in state.items()}),
                    "foreign keys": st_save({f"x.{k}": v for k, v in state.items()}),
                    "no tensors": st_save({})})
    return out


def _write(path: Path, data: bytes | None) -> None:
    path.unlink()
    if data is not None:
        path.write_bytes(data)


# fields load() never reads (names in the card and the bench table): an empty or huge text there is a valid run
UNREAD = {"base", "data", "caption", "concept", "noun"}


def _manifest_cases() -> list:
    def keep(field, kind):
        return not (field in UNREAD and kind in ("empty", "huge") or field == "tokens" and kind == "empty")

    cases = [(f"{field}:{kind}", {field: bad}) for field in Manifest.model_fields
             for kind, bad in bad_values("text" if field != "tokens" else [{}]) if keep(field, kind)]
    cases += [(f"tokens.0.{field}:{kind}", {"tokens.0": {field: bad}}) for field in TokenFile.model_fields
              for kind, bad in bad_values("text") if keep(field, kind)]
    return cases


WIDTH = 32  # the tiny text encoder's hidden size (tests/helpers/bench_tiny.py)


def test_width_of_the_tiny_encoder(pipe):
    assert pipe.text_encoder.get_input_embeddings().weight.shape[1] == WIDTH


def pytest_generate_tests(metafunc):
    if "file_case" in metafunc.fixturenames:
        names = [(t, n, d) for t in ("custom_diffusion", "lora")
                 for n, ds in FILES[t].items() for d in ds]
        metafunc.parametrize("file_case", names, ids=[f"{t}:{n}:{d}" for t, n, d in names])


# the files of each trainer's run and how each can be damaged (names known without training: the checks
# below compare them with what the run really holds)
_COMMON = ["missing", "empty", "truncated", "garbage", "a JSON file", "a pickled list", "a pickle that runs code",
           "a plain pickle of a dict"]
_TOKEN = _COMMON + ["wrong width", "3-d", "other key", "no tensors"]
FILES = {"custom_diffusion": {"pytorch_custom_diffusion_weights.safetensors": _COMMON + ["transposed", "foreign keys",
                                                                                         "no tensors"],
                              "<new1>.safetensors": _TOKEN},
         "lora": {"pytorch_lora_weights.safetensors": _COMMON + ["transposed", "foreign keys", "no tensors"],
                  "<new1>.safetensors": _TOKEN}}


def test_the_generated_file_cases_cover_every_file_of_both_runs(runs):
    for trainer, files in FILES.items():
        man = Manifest.load(runs / trainer)
        assert set(files) == {man.weights, man.tokens[0].file}
        for name, damages in files.items():
            assert set(damages) == set(_damages(runs / trainer / name, WIDTH))


def _load_refused(pipe, run: Path, *names: str) -> str:
    import gen4gen.personalize

    before = _state(pipe)
    with pytest.raises(UserError) as e:
        gen4gen.personalize.load(pipe, run)
    line = str(e.value)
    assert "\n" not in line and any(n in line for n in names), line
    after = _state(pipe)
    assert after[0] == before[0] and all(torch.equal(after[1][k], v) for k, v in before[1].items())
    return line


def test_a_damaged_file_of_a_run_is_one_line_naming_it(runs, pipe, tmp_path, file_case, tiny):  # noqa: F811
    trainer, name, damage = file_case
    run = tmp_path / trainer
    shutil.copytree(runs / trainer, run)
    _write(run / name, _damages(run / name, WIDTH)[damage])
    # LoRA weights go through diffusers, which may have changed the pipeline before it fails: a fresh one
    target = _pipeline_class("sd").from_pretrained(tiny["sd"]) if trainer == "lora" and "weights" in name else pipe
    _load_refused(target, run, name)


def _custom_diffusion_run(runs: Path, tmp_path: Path, weights: str) -> Path:
    """A copy of the Custom Diffusion run whose personalization.json names ``weights``."""
    run = tmp_path / "run"
    shutil.copytree(runs / "custom_diffusion", run)
    man = json.loads((run / MANIFEST).read_text())
    (run / MANIFEST).write_text(json.dumps({**man, "weights": weights}))
    return run


def test_a_custom_diffusion_bin_that_is_not_a_state_dict_is_one_line(runs, pipe, tmp_path):
    run = _custom_diffusion_run(runs, tmp_path, "pytorch_custom_diffusion_weights.bin")
    man = json.loads((run / MANIFEST).read_text())
    for data in [_torch_bytes([1, 2]), pickle.dumps(Evil()), b"garbage", _torch_bytes({"a.b": torch.zeros(3)})]:
        (run / man["weights"]).write_bytes(data)
        _load_refused(pipe, run, man["weights"])


MANIFEST_CASES = _manifest_cases() + [("whole:truncated", ...), ("whole:list", []), ("whole:not utf-8", b"\xff\xfe{"),
                                      ("whole:empty", b"")]


@pytest.mark.parametrize("case,change", MANIFEST_CASES, ids=[c for c, _ in MANIFEST_CASES])
def test_a_damaged_manifest_is_one_line_naming_it(runs, pipe, tmp_path, case, change):
    run = tmp_path / "run"
    shutil.copytree(runs / "custom_diffusion", run)
    path = run / MANIFEST
    if case.startswith("whole:"):
        path.write_bytes(path.read_bytes()[:30] if change is ... else change if isinstance(change, bytes)
                         else json.dumps(change).encode())
    else:
        data = json.loads(path.read_text())
        for where, value in change.items():
            if where == "tokens.0":
                data["tokens"][0].update(value)
            else:
                data[where] = value
        path.write_text(json.dumps(data))
    _load_refused(pipe, run, MANIFEST, run.name)


@pytest.mark.parametrize("field", ["weights", "token"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_manifest_path_leading_out_of_the_run_is_refused(runs, pipe, tmp_path, field, kind):
    run = tmp_path / "run"
    shutil.copytree(runs / "custom_diffusion", run)
    secret = tmp_path / "outside_tok.safetensors"
    shutil.copy(run / ("pytorch_custom_diffusion_weights.safetensors" if field == "weights" else "<new1>.safetensors"),
                secret)  # a valid file: only its place is wrong
    data = json.loads((run / MANIFEST).read_text())
    value = hostile(kind, run, secret)
    if field == "weights":
        data["weights"] = value
    else:
        data["tokens"][0]["file"] = value
    (run / MANIFEST).write_text(json.dumps(data))
    line = _load_refused(pipe, run, MANIFEST)
    assert "refused" in line


def test_etc_passwd_as_weights_is_refused_before_it_is_opened(runs, pipe, tmp_path):
    run = _custom_diffusion_run(runs, tmp_path, "/etc/passwd")
    assert "leads outside" in _load_refused(pipe, run, MANIFEST)


def test_a_garbled_base_model_index_names_the_file(tiny, tmp_path):  # noqa: F811
    from gen4gen.train.models import base_kind

    base = tmp_path / "base"
    shutil.copytree(tiny["sd"], base)
    for data in (b"{not json", b"\xff\xfe", b"[1, 2]", b""):
        (base / "model_index.json").write_bytes(data)
        with pytest.raises(UserError, match="model_index.json") as e:
            base_kind(str(base))
        assert "\n" not in str(e.value)
