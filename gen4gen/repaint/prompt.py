"""The repaint prompt: the concepts *and* the scene.

Gen4Gen's template dropped the objects ("a realistic photo of in a garden"); the inpainting model
then has no reason to keep a cat-shaped context around the cat. Here the layout's objects are named:
"a realistic photo of a cat and two dogs in the garden".
"""
from __future__ import annotations

import re

from gen4gen.artefacts import Layout
from gen4gen.words import count_phrase, join_list


def concept_words(concept: str) -> str:
    """Folder name -> words: "teddy_bear" -> "teddy bear"."""
    return re.sub(r"[\s_\-]+", " ", concept).strip()


def describe_objects(layout: Layout) -> str:
    """``"a cat, a dog and two houseplants"`` from the layout's objects (in paste order of first use)."""
    counts: dict[str, int] = {}
    for obj in layout.objects:
        name = concept_words(obj.concept)
        if name:
            counts[name] = counts.get(name, 0) + 1
    return join_list([count_phrase(n, k) for n, k in counts.items()])


def build_prompt(layout: Layout, background: str, template: str = "a realistic photo of {objects} {background}") -> str:
    text = template.format(objects=describe_objects(layout), background=background.strip())
    return re.sub(r"\s+", " ", text).strip()
