"""The embedded captioner: captions written from the layout alone, so they are true by construction.

``short``: ``a photo of a cat and two dogs in the garden`` (within CLIP's 77 tokens);
``detailed``: the same plus where the concepts stand relative to each other;
``personalized``: ``a photo of <new1> cat and two <new2> dogs in the garden`` for personalisation training.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable

from pydantic import Field

from gen4gen.artefacts import Layout
from gen4gen.backends import typed_settings
from gen4gen.caption.facts import Facts, facts_from_layout
from gen4gen.caption.tokens import ClipTokenCounter
from gen4gen.words import background_clause, join_list, number_word, plural, word_count


@dataclass
class CaptionJob:
    id: str  # "<scene>/<composition id>/<variant>"
    layout: Layout
    tokens: dict[str, str]  # concept -> "<newK>", global over the dataset
    known: list[str]  # every concept of the dataset (none outside the picture may be named)
    image_path: Path | None = None
    background: str | None = None  # the phrase of the background s3 actually painted, when it says one


@dataclass
class Outcome:
    captions: dict | None  # captions.json, None when the job cannot be captioned
    meta: dict = field(default_factory=dict)  # extra meta.json fields (LLM attempts, usage)
    error: str | None = None


class TemplateCaptioner:
    name = "template"

    @typed_settings
    def __init__(self, *, max_words: Annotated[int, Field(ge=1)], clip_tokenizer: str | None):
        """``max_words`` and ``clip_tokenizer``: the ``caption`` section (conf/captioner/*.yaml interpolate it)."""
        self.max_words = max_words
        self.clip_tokenizer = clip_tokenizer
        self.counter = ClipTokenCounter(clip_tokenizer)

    def config(self) -> dict:
        return {"captioner": self.name, "max_words": self.max_words, "token_counter": self.counter.source}

    def caption_all(self, jobs: list[CaptionJob], on_done: Callable[[], None] | None = None) -> list[Outcome]:
        outcomes = []
        for job in jobs:
            outcomes.append(self.outcome(job))
            if on_done:
                on_done()
        return outcomes

    def outcome(self, job: CaptionJob) -> Outcome:
        try:
            facts = facts_from_layout(job.layout, job.background)
        except (ValueError, KeyError, TypeError) as e:
            return Outcome(None, error=f"cannot caption layout: {e}")
        return Outcome(self.captions(facts, job.tokens))

    def captions(self, facts: Facts, tokens: dict[str, str]) -> dict:
        return {"short": self.short(facts), "detailed": self.detailed(facts),
                "personalized": self.personalized(facts, tokens),
                "modifier_tokens": {g.concept: tokens[g.concept] for g in sorted(facts.groups, key=lambda g: g.concept)
                                    if g.concept in tokens},
                "captioner": self.name, "fallback": None}

    # ------------------------------------------------------------ the three variants
    def short(self, facts: Facts) -> str:
        return self._fit_clip(join_list([g.phrase for g in facts.groups]), facts.background)

    def personalized(self, facts: Facts, tokens: dict[str, str]) -> str:
        def phrase(g) -> str:
            tok = tokens.get(g.concept)
            noun = f"{tok} {g.noun}" if tok else g.noun
            return noun if g.count == 1 else f"{number_word(g.count)} {tok + ' ' if tok else ''}{plural(g.noun)}"
        return self._fit_clip(join_list([phrase(g) for g in facts.groups]), facts.background)

    def detailed(self, facts: Facts) -> str:
        bg = background_clause(facts.background)
        sentences = [f"A photo of {join_list([g.phrase for g in facts.groups])}{bg}."]
        for r in facts.relations:
            s, o = facts.group(r.subject), facts.group(r.object)
            sentences.append(f"{s.the[0].upper()}{s.the[1:]} {s.be} {r.relation} {o.the}.")
        while len(sentences) > 1 and word_count(" ".join(sentences)) > self.max_words:
            sentences.pop()  # relations go first: the counts must stay
        return " ".join(sentences)

    def _fit_clip(self, subjects: str, background: str) -> str:
        """The longest of the wordings that fits CLIP's window (every concept is always named)."""
        bg = background_clause(background)
        options = [f"a photo of {subjects}{bg}", f"{subjects}{bg}", f"a photo of {subjects}", subjects]
        return next((o for o in options if self.counter.fits(o)), options[-1])
