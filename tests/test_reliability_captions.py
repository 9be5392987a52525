"""Markup and control characters never reach a caption (issue 22, class 8). Generated cases: every payload
(tags, event handlers, entities, comments, control and invisible formatting characters) at every place of an
LLM reply is an invalid reply that falls back to the template with the reason; as a planner's background
phrase it is left out of the template captions; as a concept name the item fails with one line. Nothing
of it reaches the training captions of an export."""
from __future__ import annotations

import json

import pytest

from gen4gen.caption.check import markup_problem
from gen4gen.caption.llm import LLMCaptioner
from gen4gen.caption.template import CaptionJob, TemplateCaptioner
from tests.helpers.llm_server import LLMServer
from tests.helpers.settings import captioner_args
from tests.test_caption_llm import GOOD, LAYOUT, TOKENS, caption, llm_cfg

MARKUP = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "<b>bold</b>", "&lt;script&gt;",
          "&#60;svg onload=alert(1)&#62;", "&#x3c;iframe&#x3e;", "<!-- hidden -->", "<new1 onclick=alert(1)>",
          "</textarea>", "a > b", "<"]
CONTROL = ["\x00", "\x1b[31m", "\x07", "\x7f", "\x85", "\u202e", "\u200b", "\ufeff", "\u2066"]
PAYLOADS = MARKUP + CONTROL
PLACES = {"before": lambda p, t: f"{p} {t}", "inside": lambda p, t: t.replace(" sits ", f" sits {p} "),
          "after": lambda p, t: f"{t} {p}", "glued": lambda p, t: t.replace("cat", f"cat{p}", 1)}
CASES = [(p, place) for p in PAYLOADS for place in PLACES]
PLAIN = [GOOD, "A photo of <new1> cat and two <new2> dogs.", "Tom & Jerry: a cat and two dogs!",
         "A cat (left) and two dogs; 3 > 2 is false", "a cat\nand two dogs\tin a garden"]


@pytest.mark.parametrize("payload,place", CASES, ids=[f"{p!r}:{pl}" for p, pl in CASES])
def test_markup_or_control_characters_anywhere_make_a_caption_invalid(payload, place):
    assert markup_problem(PLACES[place](payload, GOOD))


@pytest.mark.parametrize("text", PLAIN[:3] + PLAIN[4:])
def test_plain_captions_and_modifier_tokens_pass(text):
    assert markup_problem(text) is None


def test_a_comparison_sign_in_prose_is_refused_too():
    assert markup_problem(PLAIN[3])  # "<" and ">" have no place in a caption: one simple rule


def test_llm_replies_with_markup_fall_back_to_the_template_with_the_reason(tmp_path):
    """Every payload at every place, against the local server: each job's replies are bad on every attempt."""
    jobs = [CaptionJob(f"pets/cat+dog_000/v{k}", LAYOUT, TOKENS, sorted(TOKENS)) for k in range(len(CASES))]

    def chaos(body, n):  # whatever the job, every reply carries a payload
        payload, place = CASES[n % len(CASES)]
        return caption(PLACES[place](payload, GOOD))

    with LLMServer(chaos) as srv:
        outs = LLMCaptioner(llm_cfg(srv.base_url), **captioner_args("llm", cache_dir=str(tmp_path))).caption_all(jobs)
    assert len(srv.requests) == 3 * len(jobs)  # every reply refused, retried, refused
    for out in outs:
        caps = out.captions
        assert caps["captioner"] == "template" and "write plain words only" in caps["fallback"]
        assert not [k for k in ("short", "detailed", "personalized") if markup_problem(caps[k])]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_background_phrase_with_markup_is_left_out_of_the_template_captions(payload):
    layout = LAYOUT.model_copy(update={"background_prompt": f"in the garden {payload}"})
    template = TemplateCaptioner(**captioner_args())
    out = template.outcome(CaptionJob("pets/cat+dog_000/v0", layout, TOKENS, sorted(TOKENS)))
    caps = out.captions
    assert not [k for k in ("short", "detailed", "personalized") if markup_problem(caps[k])]
    if markup_problem(" ".join(payload.split())):  # not a character Python counts as spacing (\x85): left out
        assert caps["short"] == "a photo of a cat and two dogs"
    # and as the phrase s3 painted (a background folder's name)
    out = template.outcome(CaptionJob("pets/cat+dog_000/v0", LAYOUT, TOKENS, sorted(TOKENS),
                                      background=f"on {payload} a beach"))
    assert not markup_problem(out.captions["detailed"])


@pytest.mark.parametrize("payload", [p for p in PAYLOADS if "/" not in p and not p.isspace()])  # \x85: spacing
def test_a_concept_named_with_markup_fails_its_item_with_one_line(payload):
    concept = f"cat{payload}"
    # copied unvalidated: the name reaches the captioner whatever layout.json's model would say of it
    layout = LAYOUT.model_copy(update={"objects": [LAYOUT.objects[0].model_copy(update={"concept": concept}),
                                                   *LAYOUT.objects[1:]]})
    out = TemplateCaptioner(**captioner_args()).outcome(CaptionJob("pets/x/v0", layout, {**TOKENS, concept: "<new4>"},
                                                 sorted({*TOKENS, concept})))
    assert out.captions is None and "cannot go into a caption" in out.error and "\n" not in out.error


def test_nothing_of_a_hostile_background_reaches_an_export(tmp_path):
    from gen4gen.stages import export, s4_caption
    from tests.conftest import make_cfg
    from tests.helpers.trees import SCENES, make_pipeline

    scenes = {s: (comp, f"{phrase} {MARKUP[k]}{CONTROL[k]}", objects)
              for k, (s, (comp, phrase, objects)) in enumerate(SCENES.items())}
    make_pipeline(tmp_path, scenes=scenes)
    cfg = make_cfg(tmp_path, "export.name=demo",
                   "export.formats=[mycanvas,customdiffusion,imagefolder,coco,webdataset]")
    s4_caption.run(cfg)
    export.run(cfg)
    ds = tmp_path / "outputs" / "datasets" / "demo"
    for name in ("customdiffusion/compositions/captions.txt", "imagefolder/metadata.jsonl",
                 "mycanvas/index.jsonl", "coco/annotations/captions.json"):
        text = (ds / name).read_text("utf-8")
        assert "<script" not in text and "onerror" not in text and "\x1b" not in text and "\x00" not in text
    rows = [json.loads(line) for line in (ds / "imagefolder/metadata.jsonl").read_text().splitlines()]
    assert len(rows) == len(SCENES)
    assert not [r for r in rows for k in ("caption_plain", "caption_plain_short", "caption_personalized")
                if markup_problem(r[k])]
