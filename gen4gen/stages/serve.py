"""serve: a local web app over the stages tree (review), a bench run (leaderboard) and a search index.

``python -m gen4gen stage=serve`` prints ``http://127.0.0.1:8765/`` and serves until Ctrl-C. Decisions go to
``<stages>/review.jsonl`` as they are made; ``stage=export`` honours them. See the README's "Review,
leaderboard and model search" for the pages, the keys and the JSON API.
"""
from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig

from gen4gen.console import Summary, console
from gen4gen.errors import UserError
from gen4gen.settings import ServeSettings, section
from gen4gen.stage_settings import PathsSettings


def build(cfg: DictConfig, sv: ServeSettings | None = None):
    """The app and what it serves, from the config (no server started: tests and benchmarks use this); ``sv``: the
    ``serve`` section when the caller has read it."""
    from gen4gen.serve.api import Served
    from gen4gen.serve.app import create_app
    from gen4gen.serve.items import load_catalog
    from gen4gen.serve.leaderboard import load_run
    from gen4gen.serve.review import ReviewStore
    from gen4gen.serve.search import ModelSearch
    from gen4gen.serve.security import make_token
    from gen4gen.serve.thumbs import Thumbnails

    sv = sv or section(cfg, "serve", ServeSettings)
    stages = section(cfg, "paths", PathsSettings).stages_dir
    bench_root = Path(sv.bench_run) if sv.bench_run else Path(str(cfg.bench.out_dir)) / str(cfg.bench.name)
    if sv.bench_run and not bench_root.is_dir():
        raise UserError(f"serve.bench_run={bench_root} is not a folder (a bench run: <bench.out_dir>/<name>)")
    bench = load_run(bench_root, _popularity(cfg), dict(cfg.bench.report.weights)) if bench_root.is_dir() else None
    search = None
    if sv.search_index:
        from gen4gen.device import resolve_device

        search = ModelSearch(cfg, Path(sv.search_index), resolve_device(cfg.device))
    served = Served(load_catalog(stages), ReviewStore(stages), Thumbnails(Path(sv.thumbs_dir), sv.thumb_size),
                    bench, search, int(sv.max_upload_mb * (1 << 20)))
    token = make_token(sv.host, sv.token)
    return create_app(served, sv.host, token, sv.page_size), served, token


def run(cfg: DictConfig) -> Summary:
    import uvicorn

    t0 = time.perf_counter()
    sv = section(cfg, "serve", ServeSettings)
    app, served, token = build(cfg, sv)
    host, port = sv.host, sv.port
    cat = served.catalog
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/" + (f"?token={token}" if token else "")
    console.print(f"serve: {len(cat.items)} final images to review ({cat.stale} stale, {len(cat.left_out)} incomplete), "
                  f"bench run: {served.bench.root if served.bench else '-'}, "
                  f"search index: {served.search.root if served.search else '-'}")
    console.print(f"serve: open {url}  (Ctrl-C stops)", soft_wrap=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    # items: the decisions of this session (none is not a failure: a look at the leaderboard is a fine session)
    made = served.store.recorded
    summary = Summary(stage="serve", total=made, done=made, out_dir=str(served.store.path))
    summary.notes["reviewed"] = f"{len(served.store.decisions)} of {len(cat.items)} final images have a decision"
    summary.seconds = round(time.perf_counter() - t0, 2)
    return summary


def _popularity(cfg: DictConfig) -> dict:
    """The roster's downloads per model (GEMRec's popularity term); none when the roster does not load."""
    from gen4gen.bench.roster import load_roster

    try:
        return {m.name: m.popularity for m in load_roster(cfg.roster).models}
    except UserError:
        return {}
