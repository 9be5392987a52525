"""The app factory: three pages (review, leaderboard, model search), their static files, the JSON API, and
the request guard. Pages are jinja2 templates with autoescaping; the data comes from the API and is put into
the page with ``textContent`` / attributes by the scripts, never as HTML."""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from gen4gen.serve.api import Served, router
from gen4gen.serve.security import Guard
from gen4gen.templates import environment, render

STATIC = Path(__file__).parent / "static"
PAGES = {"/": ("review", "Review"), "/leaderboard": ("leaderboard", "Leaderboard"), "/search": ("search", "Model search")}


def create_app(served: Served, host: str = "127.0.0.1", token: str | None = None, page_size: int = 60) -> FastAPI:
    app = FastAPI(title="gen4gen", docs_url=None, redoc_url=None, openapi_url=None)  # nothing loaded from a CDN
    app.middleware("http")(Guard(host, token))
    app.include_router(router(served))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    nav = [{"href": href, "label": label, "page": page} for href, (page, label) in PAGES.items()]

    def page(name: str, title: str):
        def show() -> HTMLResponse:
            return HTMLResponse(render(f"serve_{name}.html.j2", title=title, page=name, nav=nav, page_size=page_size,
                                       stages=str(served.store.path.parent),
                                       bench=str(served.bench.root) if served.bench else "",
                                       search=str(served.search.root) if served.search else ""))
        return show

    for href, (name, title) in PAGES.items():
        environment().get_template(f"serve_{name}.html.j2")  # compiled now, not on the first visit
        app.get(href, response_class=HTMLResponse)(page(name, title))
    return app
