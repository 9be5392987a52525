"""The repaint prompt: the concepts *and* the scene.

Gen4Gen's template dropped the objects ("a realistic photo of in a garden"); the inpainting model
then has no reason to keep a cat-shaped context around the cat. Here the layout's objects are named:
"a realistic photo of a cat and two dogs in the garden".
"""
from __future__ import annotations

import re

NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def concept_words(concept: str) -> str:
    """Folder name -> words: "teddy_bear" -> "teddy bear"."""
    return re.sub(r"[\s_\-]+", " ", concept).strip()


def plural(noun: str) -> str:
    last = noun.split(" ")[-1]
    if re.search(r"(s|x|z|ch|sh)$", last):
        return noun + "es"
    if re.search(r"[^aeiou]y$", last):
        return noun[:-1] + "ies"
    return noun + "s"


def article(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def describe_objects(layout: dict) -> str:
    """``"a cat, a dog and two houseplants"`` from the layout's objects (in paste order of first use)."""
    counts: dict[str, int] = {}
    for obj in layout.get("objects") or []:
        name = concept_words(str(obj.get("concept", "")))
        if name:
            counts[name] = counts.get(name, 0) + 1
    if not counts:  # a layout without objects: the composition id still names the concepts ("cat+dog_000")
        cid = str(layout.get("composition_id", ""))
        for c in re.sub(r"_\d+$", "", cid).split("+"):
            if concept_words(c):
                counts[concept_words(c)] = 1
    parts = [article(n) if k == 1 else f"{NUMBERS[k] if k < len(NUMBERS) else k} {plural(n)}"
             for n, k in counts.items()]
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def build_prompt(layout: dict, background: str, template: str = "a realistic photo of {objects} {background}") -> str:
    text = template.format(objects=describe_objects(layout), background=background.strip())
    return re.sub(r"\s+", " ", text).strip()
