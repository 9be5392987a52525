"""HTML pages through jinja2 templates (``*.html.j2`` here) with autoescaping: every value a page shows is
escaped by the engine, none by hand."""
from __future__ import annotations

from functools import lru_cache

import jinja2


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("gen4gen", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True)


def render(template: str, **values) -> str:
    return environment().get_template(template).render(**values)
