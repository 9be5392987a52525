"""Template captions on constructed layouts: counts in words, relations from the boxes, background,
CLIP length, modifier tokens; and the caption checker that guards LLM captions."""
import pytest

from gen4gen.artefacts import Layout
from gen4gen.caption.check import caption_problems, personalize
from gen4gen.caption.facts import facts_from_layout, relation
from gen4gen.caption.template import TemplateCaptioner
from gen4gen.caption.tokens import ClipTokenCounter
from gen4gen.words import count_phrase, plural
from tests.helpers.clip_tokenizer import build_clip_tokenizer
from tests.helpers.settings import captioner_args
from tests.conftest import shared


def layout(*objects, background="in the garden", size=(200, 200)):
    return Layout.parse({"scene": "s", "composition_id": "c", "size": list(size), "background_prompt": background,
            "objects": [{"name": f"{c}_{i}", "concept": c, "index": i, "box": list(b)}
                        for i, (c, b) in enumerate(objects)]})


TOKENS = {"cat": "<new1>", "dog": "<new2>", "plant": "<new3>"}


def captions(lay, tokens=TOKENS, **kw):
    return TemplateCaptioner(**captioner_args(**kw)).captions(facts_from_layout(lay), tokens)


def test_personalized_caption_has_the_documented_form():
    c = captions(layout(("cat", (10, 80, 40, 40)), ("dog", (120, 80, 40, 40))))
    assert c["personalized"] == "a photo of <new1> cat and <new2> dog in the garden"
    assert c["short"] == "a photo of a cat and a dog in the garden"
    assert c["detailed"] == "A photo of a cat and a dog in the garden. The cat is to the left of the dog."
    assert c["modifier_tokens"] == {"cat": "<new1>", "dog": "<new2>"} and c["fallback"] is None


@pytest.mark.parametrize("a, b, expected", [
    ((10, 80, 40, 40), (120, 80, 40, 40), "to the left of"),
    ((120, 80, 40, 40), (10, 80, 40, 40), "to the right of"),
    ((80, 10, 40, 40), (80, 130, 40, 40), "above"),
    ((80, 130, 40, 40), (80, 10, 40, 40), "below"),
    ((60, 100, 60, 80), (80, 40, 60, 80), "in front of"),   # overlapping, a's bottom edge 40 px lower
    ((60, 40, 60, 80), (80, 100, 60, 80), "behind"),
    ((60, 60, 60, 80), (100, 62, 60, 80), "next to"),       # overlapping, same footing
])
def test_relation_from_boxes(a, b, expected):
    assert relation(a, b, height=200) == expected


def test_counts_in_words_and_relations_in_detailed_caption():
    lay = layout(("cat", (10, 120, 40, 40)), ("dog", (120, 130, 30, 30)), ("dog", (160, 130, 30, 30)),
                 ("plant", (60, 5, 40, 40)), background="on a sofa")
    c = captions(lay)
    # named left to right by box centre: cat (x 30), plant (80), dogs (155)
    assert c["short"] == "a photo of a cat, a plant and two dogs on a sofa"
    assert c["personalized"] == "a photo of <new1> cat, <new3> plant and two <new2> dogs on a sofa"
    assert c["detailed"] == ("A photo of a cat, a plant and two dogs on a sofa. The cat is below the plant. "
                             "The plant is above the dogs.")


def test_detailed_caption_respects_the_word_limit_but_keeps_the_counts():
    lay = layout(("cat", (10, 120, 40, 40)), ("dog", (120, 130, 30, 30)), ("plant", (60, 5, 40, 40)))
    c = captions(lay, max_words=14)
    assert c["detailed"] == "A photo of a cat, a plant and a dog in the garden."


def test_overlap_puts_the_lower_object_in_front():
    c = captions(layout(("plant", (60, 20, 80, 120)), ("cat", (80, 110, 60, 80))))
    assert "The cat is in front of the plant." in c["detailed"]


def test_background_without_a_preposition_follows_a_comma():
    c = captions(layout(("cat", (10, 80, 40, 40)), ("dog", (120, 80, 40, 40)), background="a sunny beach"))
    assert c["short"] == "a photo of a cat and a dog, a sunny beach"
    assert c["detailed"].startswith("A photo of a cat and a dog, a sunny beach. ")


def test_hidden_instances_are_not_counted_and_no_background_is_fine():
    lay = layout(("dog", (10, 10, 40, 40)), ("dog", (60, 10, 0, 0)), ("cat", (120, 10, 40, 40)), background="")
    c = captions(lay)
    assert c["short"] == "a photo of a dog and a cat"


def test_words_plurals_and_multiword_concepts():
    assert plural("fox") == "foxes" and plural("puppy") == "puppies" and plural("teddy bear") == "teddy bears"
    assert plural("mouse") == "mice" and plural("sheep") == "sheep" and plural("toy") == "toys"
    assert count_phrase("owl", 1) == "an owl" and count_phrase("owl", 3) == "three owls"
    assert count_phrase("bird", 14) == "14 birds"


@pytest.mark.parametrize("noun, phrase", [
    ("unicorn", "a unicorn"), ("hour", "an hour"), ("hourglass", "an hourglass"), ("honest man", "an honest man"),
    ("heir", "an heir"), ("university", "a university"), ("ukulele", "a ukulele"), ("european robin", "a european robin"),
    ("one-eyed cat", "a one-eyed cat"), ("umbrella", "an umbrella"), ("owl", "an owl"), ("x-ray machine", "an x-ray machine"),
    ("cat", "a cat"), ("yacht", "a yacht")])
def test_articles_follow_the_sound_not_the_letter(noun, phrase):
    assert count_phrase(noun, 1) == phrase
    c = captions(layout(("teddy_bear", (10, 10, 40, 40)), ("teddy_bear", (60, 10, 40, 40)), ("owl", (150, 10, 40, 40))),
                 tokens={"owl": "<new1>", "teddy_bear": "<new2>"})
    assert c["short"] == "a photo of two teddy bears and an owl in the garden"
    assert c["personalized"] == "a photo of two <new2> teddy bears and <new1> owl in the garden"


def test_template_captions_pass_the_checker():
    lay = layout(("cat", (10, 120, 40, 40)), ("dog", (100, 80, 30, 30)), ("dog", (150, 80, 30, 30)))
    c = captions(lay)
    counts = {"cat": 1, "dog": 2}
    for kind in ("short", "detailed", "personalized"):
        assert caption_problems(c[kind], counts, ["cat", "dog", "plant"], 60) == [], kind


def test_checker_finds_missing_wrong_count_invented_and_too_long():
    counts, known = {"cat": 1, "dog": 2}, ["cat", "dog", "plant"]
    assert caption_problems("Two dogs play near a cat on the lawn.", counts, known, 60) == []
    assert caption_problems("A pair of dogs and one cat.", counts, known, 60) == []
    missing = caption_problems("Two dogs sit on the lawn.", counts, known, 60)
    assert missing == ["it does not mention the cat (there is 1 cat)"]
    wrong = caption_problems("A cat and three dogs sit on the lawn.", counts, known, 60)
    assert len(wrong) == 1 and "3 dogs" in wrong[0] and "2 dogs" in wrong[0]
    vague = caption_problems("A cat and some dogs sit on the lawn.", counts, known, 60)
    assert vague == ["it must state the number of dogs: there are 2 dogs"]
    plural_single = caption_problems("Cats and two dogs.", counts, known, 60)
    assert plural_single == ["it calls the single cat 'cats'; there is exactly one"]
    invented = caption_problems("A cat, two dogs and a plant.", counts, known, 60)
    assert invented == ["it mentions a plant, which is not in this picture"]
    owl = caption_problems("A cat, two dogs and an owl.", counts, known + ["owl"], 60)
    assert owl == ["it mentions an owl, which is not in this picture"]
    long = caption_problems("A cat and two dogs " + "very " * 60, counts, known, 60)
    assert any("limit is 60" in p for p in long)


def test_personalize_inserts_tokens_before_each_noun():
    text = "Two fluffy dogs play near a cat; the cat watches the dogs."
    assert personalize(text, TOKENS) == ("Two fluffy <new2> dogs play near a <new1> cat; the <new1> cat watches "
                                         "the <new2> dogs.")
    assert caption_problems(personalize(text, TOKENS), {"cat": 1, "dog": 2}, list(TOKENS), 60) == []


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return build_clip_tokenizer(shared("tokenizers", "bpe_simple_vocab_16e6.txt.gz"),
                                tmp_path_factory.mktemp("clip_tok"))


def test_short_caption_fits_clip_with_the_real_tokenizer(clip_dir):
    concepts = ["hippopotamus", "rhinoceros", "chrysanthemum", "grasshopper", "xylophone", "saxophone",
                "stegosaurus", "tyrannosaurus", "archaeopteryx", "pterodactyl", "velociraptor", "triceratops"]
    objects = [(c, (i * 16, 10, 12, 40)) for i, c in enumerate(concepts)] + [("saxophone", (50, 100, 10, 10))]
    lay = layout(*objects, background="in a very large and extremely old natural history museum at night under a full moon",
                 size=(200, 200))
    tokens = {c: f"<new{k}>" for k, c in enumerate(sorted(concepts), 1)}
    real = ClipTokenCounter(str(clip_dir))
    assert real.source == str(clip_dir)
    cap = TemplateCaptioner(**captioner_args(clip_tokenizer=str(clip_dir))).captions(facts_from_layout(lay), tokens)
    assert real.count(cap["short"]) <= 77 and real.count(cap["personalized"]) <= 77
    for c in concepts:  # every concept still named
        assert c in cap["short"] or plural(c) in cap["short"]
    # the full wording was too long, so the captioner dropped the background rather than a concept
    assert cap["short"].startswith("a photo of a hippopotamus") and "museum" not in cap["short"]
    assert real.count(cap["short"] + " " + lay.background_prompt) > 77


def test_rule_counter_never_undercounts_the_real_tokenizer(clip_dir):
    real, rule = ClipTokenCounter(str(clip_dir)), ClipTokenCounter(None)
    assert rule.source == "rule" and ClipTokenCounter("no/such/tokenizer").source == "rule"
    shell = clip_dir.parent / "shell"  # a folder without the vocabulary is not a tokenizer
    shell.mkdir(exist_ok=True)
    (shell / "tokenizer_config.json").write_text((clip_dir / "tokenizer_config.json").read_text())
    assert ClipTokenCounter(str(shell)).source == "rule"
    texts = ["a photo of a cat and two dogs in the garden", "a photo of <new1> cat and two <new2> dogs",
             "A hippopotamus, 13 rhinoceroses and an archaeopteryx beside a chrysanthemum.",
             "Two fluffy golden retrievers lounge on a weathered Adirondack chair at dusk."]
    for t in texts:
        assert rule.count(t) >= real.count(t), t
