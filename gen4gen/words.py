"""English for captions: concept display names, plurals, counts in words, lists."""
from __future__ import annotations

import re
from functools import lru_cache

import inflect

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve"]
# words that state a count when they stand before a noun ("a cat", "two dogs", "a pair of shoes" is not used)
COUNT_WORDS = {"a": 1, "an": 1, "one": 1, "single": 1, "lone": 1, "couple": 2, "pair": 2,
               **{w: i for i, w in enumerate(NUMBER_WORDS) if i >= 2}}
_IRREGULAR = {"mouse": "mice", "person": "people", "child": "children", "man": "men", "woman": "women",
              "foot": "feet", "tooth": "teeth", "goose": "geese", "ox": "oxen", "leaf": "leaves",
              "knife": "knives", "wolf": "wolves", "shelf": "shelves", "cactus": "cacti"}
_INVARIANT = {"sheep", "fish", "deer", "moose", "series", "species", "aircraft", "glasses", "headphones",
              "scissors", "jeans", "shorts", "trousers", "pants"}


def display_name(concept: str) -> str:
    """``teddy_bear`` / ``teddy-bear`` -> ``teddy bear`` (folder names become words)."""
    return " ".join(re.split(r"[_\-\s]+", concept.strip())).lower()


def plural(noun: str) -> str:
    """Plural of a (possibly multi-word) noun phrase: the last word changes."""
    head, _, last = noun.rpartition(" ")
    if last in _INVARIANT:
        p = last
    elif last in _IRREGULAR:
        p = _IRREGULAR[last]
    elif re.search(r"(s|x|z|ch|sh)$", last):
        p = last + "es"
    elif re.search(r"[^aeiou]y$", last):
        p = last[:-1] + "ies"
    else:
        p = last + "s"
    return f"{head} {p}" if head else p


_INFLECT = inflect.engine()


@lru_cache(maxsize=4096)
def article(noun: str) -> str:
    """``a`` or ``an`` by the sound of the phrase ("an hour", "a unicorn", "an heir", "a one-eyed cat"): a
    first letter is no rule; inflect knows the exceptions."""
    return _INFLECT.a(noun).split(" ", 1)[0] if noun.strip() else "a"


def count_phrase(noun: str, count: int) -> str:
    """``a cat``, ``an owl``, ``two dogs``, ``13 birds``."""
    if count == 1:
        return f"{article(noun)} {noun}"
    return f"{number_word(count)} {plural(noun)}"


def number_word(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def join_list(parts: list[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


PREPOSITIONS = {"in", "on", "at", "by", "near", "under", "inside", "beside", "behind", "above", "below", "over",
                "against", "along", "among", "across", "around", "outside", "underneath", "with", "during", "amid",
                "beneath", "within", "atop", "before", "next", "onto", "into", "through", "from"}


def background_clause(phrase: str) -> str:
    """How a background phrase follows the subjects: ``" in the garden"``; a phrase that is not a
    prepositional one (an LLM planner's "a sunny beach") follows a comma: ``", a sunny beach"``."""
    phrase = " ".join(phrase.split())
    if not phrase:
        return ""
    return f" {phrase}" if phrase.split()[0].lower() in PREPOSITIONS else f", {phrase}"


def word_count(text: str) -> int:
    return len(text.split())


# words after which a noun takes no article of its own ("the cat", "two dogs", "my cat")
_DETERMINERS = {"the", "this", "that", "these", "those", "my", "your", "his", "her", "its", "our", "their", "each",
                "every", "another", "no", "some", "any", *COUNT_WORDS}


def as_class_words(text: str, nouns: dict[str, str]) -> str:
    """A personalised caption read as class words, ``nouns`` = {token: class words}: "a photo of <new1> cat and
    two <new2> dogs" -> "a photo of a cat and two dogs", a bare "<new1>" -> "a cat" (what a model without the
    tokens is given, and what CLIP-T scores). A singular noun gets its article unless a determiner or a count
    stands before it."""
    for token, noun in nouns.items():
        def words(m: re.Match, noun: str = noun) -> str:
            before, named = m.group(1) or "", (m.group(2) or "").strip() or noun
            counted = before.strip().lower() in _DETERMINERS or before.strip().isdigit()
            many = named.lower() == plural(noun).lower() != noun.lower()
            return before + (named if counted or many else f"{article(named)} {named}")
        pattern = rf"(\b[\w']+\s+)?{re.escape(token)}(\s+(?:{re.escape(plural(noun))}|{re.escape(noun)})\b)?"
        text = re.sub(pattern, words, text, flags=re.IGNORECASE)
    return " ".join(text.split())
