"""LLM and VLM captioners against the local OpenAI-compatible server: good, wrong (missing or invented
concept) and failing replies; the template caption replaces what stays wrong, and the reason is recorded."""
import base64
import io
import json

import pytest
from omegaconf import OmegaConf
from PIL import Image

from gen4gen.artefacts import Layout
from gen4gen.caption.llm import LLMCaptioner, VLMCaptioner
from gen4gen.caption.template import CaptionJob
from gen4gen.markers import read_meta
from gen4gen.paths import STAGE_DIRS
from gen4gen.stages import s4_caption
from tests.helpers.trees import make_pipeline
from tests.helpers.llm_server import LLMServer, Reply, yaml_llm
from tests.helpers.settings import captioner_args

LAYOUT = Layout.parse({"scene": "pets", "composition_id": "cat+dog_000", "size": [200, 200], "background_prompt": "in the garden",
          "objects": [{"name": "cat_0", "concept": "cat", "box": [10, 80, 40, 40]},
                      {"name": "dog_0", "concept": "dog", "box": [100, 80, 40, 40]},
                      {"name": "dog_1", "concept": "dog", "box": [150, 80, 40, 40]}]})
TOKENS = {"cat": "<new1>", "dog": "<new2>", "plant": "<new3>"}
GOOD = "A ginger cat sits on the grass to the left of two playful dogs in a sunny garden."


def caption(text: str) -> Reply:
    return Reply(json.dumps({"caption": text}))


def llm_cfg(url: str, model: str = "test-model"):
    return OmegaConf.create({**yaml_llm(), "cache_dir": None, "base_url": url, "model": model,
                             "api_key_env": "GEN4GEN_TEST_KEY", "concurrency": 4, "timeout": 10, "max_retries": 0})


def job(image=None):
    return CaptionJob("pets/cat+dog_000/v0", LAYOUT, TOKENS, sorted(TOKENS), image)


def test_good_reply_becomes_the_detailed_caption(tmp_path):
    with LLMServer(lambda body, n: caption(GOOD)) as srv:
        captioner = LLMCaptioner(llm_cfg(srv.base_url), **captioner_args("llm", cache_dir=str(tmp_path)))
        [out] = captioner.caption_all([job()])
    caps = out.captions
    assert caps["detailed"] == GOOD and caps["fallback"] is None and caps["captioner"] == "llm:test-model"
    assert caps["personalized"] == ("A ginger <new1> cat sits on the grass to the left of two playful <new2> dogs "
                                    "in a sunny garden.")
    assert caps["short"] == "a photo of a cat and two dogs in the garden"  # CLIP-sized, from the template
    assert out.meta["llm"]["attempts"] == 1
    prompt = srv.requests[0]["messages"][1]["content"]
    facts = json.loads(prompt.split("\n", 1)[1])
    assert {o["concept"]: o["count"] for o in facts["objects"]} == {"cat": 1, "dog": 2}
    assert facts["do_not_mention"] == ["plant"] and facts["background"] == "in the garden"
    assert "the cat is to the left of the dogs" in facts["relations"]


def test_missing_concept_is_fed_back_and_retried(tmp_path):
    replies = [caption("Two dogs play in a sunny garden."), caption(GOOD)]
    with LLMServer(lambda body, n: replies[min(n, 1)]) as srv:
        [out] = LLMCaptioner(llm_cfg(srv.base_url), **captioner_args("llm")).caption_all([job()])
    assert out.captions["detailed"] == GOOD and out.meta["llm"]["attempts"] == 2
    feedback = srv.requests[1]["messages"][-1]["content"]
    assert "does not mention the cat" in feedback


@pytest.mark.parametrize("bad, why", [
    ("A cat, two dogs and a potted plant in a garden.", "mentions a plant, which is not in this picture"),
    ("A cat and three dogs in a garden.", "it says 3 dogs but there are 2 dogs"),
    ("A cat and two dogs " + "running " * 70, "the limit is 60"),
])
def test_reply_that_stays_wrong_falls_back_to_the_template(tmp_path, bad, why):
    with LLMServer(lambda body, n: caption(bad)) as srv:
        [out] = LLMCaptioner(llm_cfg(srv.base_url), **captioner_args("llm")).caption_all([job()])
    caps = out.captions
    assert len(srv.requests) == 3  # max_attempts
    assert caps["captioner"] == "template" and why in caps["fallback"]
    assert caps["detailed"] == "A photo of a cat and two dogs in the garden. The cat is to the left of the dogs."
    assert caps["personalized"] == "a photo of <new1> cat and two <new2> dogs in the garden"


def test_server_failure_and_garbage_fall_back(tmp_path):
    with LLMServer(lambda body, n: Reply(status=500)) as srv:
        [out] = LLMCaptioner(llm_cfg(srv.base_url), **captioner_args("llm")).caption_all([job()])
    assert out.captions["captioner"] == "template" and "HTTP 500" in out.captions["fallback"]
    with LLMServer(lambda body, n: Reply("Sure! Here is a lovely caption about cats.")) as srv:
        [out] = LLMCaptioner(llm_cfg(srv.base_url), **captioner_args("llm")).caption_all([job()])
    assert "no JSON object" in out.captions["fallback"]


def test_vlm_sends_the_image_as_a_downscaled_data_url(tmp_path):
    path = tmp_path / "final.png"
    Image.new("RGB", (1024, 768), (10, 200, 30)).save(path)
    with LLMServer(lambda body, n: caption(GOOD)) as srv:
        cap = VLMCaptioner(llm_cfg(srv.base_url, "llava"), **captioner_args("vlm", image_side=256))
        [out] = cap.caption_all([job(path)])
    assert out.captions["detailed"] == GOOD and out.captions["captioner"] == "vlm:llava"
    content = srv.requests[0]["messages"][1]["content"]
    text = next(p["text"] for p in content if p["type"] == "text")
    url = next(p["image_url"]["url"] for p in content if p["type"] == "image_url")
    assert '"count": 2' in text and url.startswith("data:image/jpeg;base64,")
    im = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert im.size == (256, 192)
    # an unreadable image is that item's failure, not a crash of the batch
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"<html>not an image</html>")
    with LLMServer(lambda body, n: caption(GOOD)) as srv:
        outs = VLMCaptioner(llm_cfg(srv.base_url, "llava"), **captioner_args("vlm")).caption_all([job(bad), job(path)])
    assert outs[0].captions is None and "not an image" in outs[0].error and outs[1].captions["detailed"] == GOOD


def test_s4_stage_with_llm_runs_calls_concurrently_and_records_fallbacks(tmp_path, cfg_factory):
    make_pipeline(tmp_path, variants=("v0_procedural", "v1_photo"))

    def replies(body, n):
        facts = json.loads(body["messages"][1]["content"].split("\n", 1)[1])
        names = {o["concept"] for o in facts["objects"]}
        if names == {"cat", "plant"}:  # the kitchen: the model keeps inventing a dog
            return caption("A cat and a dog in front of a plant on a kitchen table.")
        return Reply(json.dumps({"caption": GOOD}), delay=0.3)

    with LLMServer(replies) as srv:
        cfg = cfg_factory("stage=s4", "captioner=llm", f"llm.base_url={srv.base_url}", "llm.model=test-model",
                          "llm.max_retries=0")
        summary = s4_caption.run(cfg)
    assert summary.done == 4 and summary.failed == 0
    assert summary.notes["template fallbacks (LLM caption rejected)"] == 2
    assert srv.max_in_flight > 1
    root = tmp_path / "stages" / STAGE_DIRS["s4"]
    pets = json.loads((root / "pets/cat+dog_000/v0_procedural/captions.json").read_text())
    kitchen = json.loads((root / "kitchen/cat+plant_000/v1_photo/captions.json").read_text())
    assert pets["detailed"] == GOOD and pets["modifier_tokens"] == {"cat": "<new1>", "dog": "<new2>"}
    assert kitchen["captioner"] == "template" and "mentions a dog" in kitchen["fallback"]
    assert kitchen["personalized"] == "a photo of <new3> plant and <new1> cat on a kitchen table"
    meta = read_meta(root / "kitchen/cat+plant_000/v1_photo")
    assert meta["llm"]["attempts"] == 3 and meta["fallback"] == kitchen["fallback"]
    # a rerun is served from the disk cache / skipped: no new requests
    n = len(srv.requests)
    with LLMServer(replies) as srv2:
        cfg = cfg_factory("stage=s4", "captioner=llm", f"llm.base_url={srv.base_url}", "llm.model=test-model")
        again = s4_caption.run(cfg)
    assert again.skipped == 4 and again.done == 0 and len(srv2.requests) == 0 and n == len(srv.requests)


def test_captioner_group_builds_each_backend_and_keeps_the_key_out(cfg_factory, monkeypatch):
    from hydra.utils import instantiate

    monkeypatch.setenv("OPENAI_API_KEY", "sk-sentinel-4242")
    built = {name: instantiate(cfg_factory(f"captioner={name}").captioner) for name in ("template", "llm", "vlm")}
    assert type(built["template"]).__name__ == "TemplateCaptioner"
    assert isinstance(built["llm"], LLMCaptioner) and not isinstance(built["llm"], VLMCaptioner)
    assert isinstance(built["vlm"], VLMCaptioner) and built["vlm"].image_side == 512
    for cap in built.values():
        assert "sk-sentinel" not in json.dumps(cap.config())
    assert built["vlm"].config()["model"] == "gpt-4o-mini" and built["template"].config()["max_words"] == 60


def test_api_key_goes_to_the_server_only(tmp_path, cfg_factory, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-sentinel-4242")
    make_pipeline(tmp_path)

    def replies(body, n):
        pets = '"concept": "dog"' in body["messages"][1]["content"]
        return caption("A cat and two dogs in the garden." if pets else "A plant and a cat on a kitchen table.")

    with LLMServer(replies) as srv:
        summary = s4_caption.run(cfg_factory("captioner=llm", f"llm.base_url={srv.base_url}", "llm.max_retries=0"))
    assert summary.done == 2
    assert summary.notes.get("template fallbacks (LLM caption rejected)") is None
    auth = [{k.lower(): v for k, v in h.items()}.get("authorization") for h in srv.headers]
    assert auth and all(a == "Bearer sk-sentinel-4242" for a in auth)
    for p in (tmp_path / "stages").rglob("*"):
        if p.is_file():
            assert b"sk-sentinel" not in p.read_bytes(), p
    for p in (tmp_path / "cache").rglob("*"):
        if p.is_file():
            assert b"sk-sentinel" not in p.read_bytes(), p
