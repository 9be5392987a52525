"""Is a caption true to its layout? Each concept named with the right count, no concept of the
dataset that is not in the picture, a length bound, and plain text (``markup_problem``: no markup, no
control characters). Used on every LLM caption (the problems go back to the model) and, in tests, on the
template's own captions.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from gen4gen.words import COUNT_WORDS, count_phrase, display_name, plural, word_count

# a backwards scan from a noun for its count stops at these: they start another phrase
_STOP = {"the", "this", "that", "these", "those", "its", "their", "his", "her", "my", "your", "our", "and", "or",
         "with", "while", "beside", "near", "behind", "next", "than", "but", "where", "which", "who"}
_VAGUE = {"some", "several", "many", "few", "multiple", "various"}
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")
# a caption is plain words: "<" or ">" outside a modifier token, or an HTML entity, is markup (tags, an
# "<img onerror=...>", "&lt;script&gt;"); captions end up in training files and web pages
_TOKEN = re.compile(r"<new\d+>")
_MARKUP = re.compile(r"[<>]|&(?:#\d+|#x[0-9a-f]+|[a-z][a-z0-9]*);", re.I)
_SPACES = {"\n", "\r", "\t"}  # line breaks and tabs are only spacing: they become one space


@dataclass(frozen=True)
class Mention:
    concept: str
    start: int  # char offset of the noun phrase in the caption
    end: int
    plural: bool
    claimed: int | None  # the count the words before it state, None when they state none


def _pattern(concepts: list[str]) -> re.Pattern:
    forms = []
    for c in concepts:
        noun = display_name(c)
        forms += [(plural(noun), c, True), (noun, c, False)]
    forms.sort(key=lambda f: -len(f[0]))  # longest first: "teddy bears" before "bear"
    alts = "|".join(r"\s+".join(map(re.escape, f[0].split())) for f in forms)
    return re.compile(rf"(?<![\w<])({alts})(?![\w>])", re.I), {f[0]: (f[1], f[2]) for f in forms}


def mentions(text: str, concepts: list[str]) -> list[Mention]:
    """Every place a concept's noun (singular or plural) appears in ``text``."""
    if not concepts:
        return []
    pattern, forms = _pattern(concepts)
    found = []
    for m in pattern.finditer(text):
        concept, is_plural = forms[" ".join(m.group(1).lower().split())]
        found.append(Mention(concept, m.start(), m.end(), is_plural, _claimed_count(text[:m.start()])))
    return found


def _claimed_count(before: str) -> int | None:
    words = _WORD.findall(before.lower())[-5:][::-1]
    for i, w in enumerate(words):
        if w.startswith("new") and i and words[i - 1] == ">":  # a modifier token "<new1>" before the noun
            continue
        if w in ("<", ">"):
            continue
        if w.isdigit():
            return int(w)
        if w == "of":  # "a pair of shoes" counts; "a photo of cats" does not
            if i + 1 < len(words) and words[i + 1] in ("pair", "couple"):
                return 2
            return None
        if w == "both":
            return 2
        if w in COUNT_WORDS:
            return COUNT_WORDS[w]
        if w in _VAGUE or w in _STOP or not w.isalnum():
            return None
    return None


def markup_problem(text: str) -> str | None:
    """Why ``text`` is not plain text (markup, a control or invisible formatting character), or None."""
    m = _MARKUP.search(_TOKEN.sub(" ", text))
    if m:
        return f"it contains markup ({m.group(0)!r}); write plain words only"
    bad = next((c for c in text if c not in _SPACES and unicodedata.category(c) in ("Cc", "Cf")), None)
    if bad is not None:
        return f"it contains the control character U+{ord(bad):04X}; write plain words only"
    return None


def caption_problems(text: str, counts: dict[str, int], known: list[str], max_words: int,
                     min_words: int = 3) -> list[str]:
    """What is wrong with ``text`` for a picture holding ``counts`` (concept -> visible instances);
    ``known`` are all concepts of the dataset (those not in the picture must not be named)."""
    problems = []
    n = word_count(text)
    if n > max_words:
        problems.append(f"the caption has {n} words; the limit is {max_words}")
    if n < min_words:
        problems.append(f"the caption has {n} words; write at least {min_words}")
    everything = sorted(set(known) | set(counts))
    found = mentions(text, everything)
    for concept, count in sorted(counts.items()):
        noun = display_name(concept)
        mine = [m for m in found if m.concept == concept]
        want = f"{count} {plural(noun) if count > 1 else noun}"
        if not mine:
            problems.append(f"it does not mention the {noun} (there {'is' if count == 1 else 'are'} {want})")
            continue
        wrong = sorted({m.claimed for m in mine if m.claimed is not None and m.claimed != count})
        if wrong:
            problems.append(f"it says {' or '.join(map(str, wrong))} {plural(noun) if max(wrong) > 1 else noun} "
                            f"but there {'is' if count == 1 else 'are'} {want}")
        elif count == 1 and any(m.plural for m in mine):
            problems.append(f"it calls the single {noun} '{plural(noun)}'; there is exactly one")
        elif count > 1 and count not in {m.claimed for m in mine}:
            problems.append(f"it must state the number of {plural(noun)}: there are {want}")
    invented = sorted({m.concept for m in found if m.concept not in counts})
    for concept in invented:
        problems.append(f"it mentions {count_phrase(display_name(concept), 1)}, which is not in this picture")
    return problems


def personalize(text: str, tokens: dict[str, str]) -> str:
    """Put each concept's modifier token before its noun: ``two dogs`` -> ``two <new2> dogs``."""
    found = mentions(text, sorted(tokens))
    for m in sorted(found, key=lambda m: -m.start):
        text = f"{text[:m.start]}{tokens[m.concept]} {text[m.start:]}"
    return text
