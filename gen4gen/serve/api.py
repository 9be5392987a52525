"""The JSON API the pages use, and the media routes (images by item id, never by a path from the request)."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from fastapi import APIRouter, File, HTTPException, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from gen4gen.errors import ItemFailed, UserError
from gen4gen.serve.items import Catalog, ReviewItem
from gen4gen.serve.leaderboard import BenchRun
from gen4gen.serve.review import CAPTION_KEYS, MAX_CAPTION, Decision, ReviewStore, review_state
from gen4gen.serve.search import ModelSearch
from gen4gen.serve.thumbs import PALETTE, Thumbnails

MAX_LIMIT = 500
MEDIA_CACHE = {"Cache-Control": "private, max-age=86400"}  # URLs carry the content key (?v=): a redo is a new URL


@dataclass
class Served:
    """What one app serves."""
    catalog: Catalog
    store: ReviewStore
    thumbs: Thumbnails
    bench: BenchRun | None = None
    search: ModelSearch | None = None
    max_upload: int = 20 << 20


class ReviewBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["keep", "reject", "unreviewed"]
    captions: dict[Literal["short", "detailed", "personalized"], str] | None = Field(default=None)


def media(kind: str, item: ReviewItem, extra: str = "") -> str:
    return f"/media/{kind}{extra}/{quote(item.id)}?v={item.content}"


def router(s: Served) -> APIRouter:
    api = APIRouter()

    def item_or_404(item_id: str) -> ReviewItem:
        item = s.catalog.by_id.get(item_id)
        if item is None:
            raise HTTPException(404, f"no item {item_id!r}")
        return item

    def summary(it: ReviewItem) -> dict:
        d = s.store.decisions.get(it.id)
        state = review_state(d, it.content)
        edits = d.captions if d is not None and state != "changed" else {}
        return {"id": it.id, "scene": it.scene, "composition": it.composition, "variant": it.variant,
                "concepts": it.concepts, "image": media("image", it), "thumbnail": media("thumb", it),
                "captions": {**it.captions, **edits}, "edited": sorted(edits), "flags": it.flags,
                "status": state}

    @api.get("/api/items")
    def items(scene: str = "", concept: str = "", q: str = "", flag: str = "",
              status: Literal["", "keep", "reject", "unreviewed", "changed"] = "",
              offset: int = Query(0, ge=0), limit: int = Query(60, ge=1, le=MAX_LIMIT)) -> dict:
        words = q.lower().split()
        hits = s.catalog.items if not (scene or concept or flag or words or status) else [
            it for it in s.catalog.items
            if (not scene or it.scene == scene) and (not concept or concept in it.concepts)
            and (not flag or flag in it.flags) and all(w in it.text for w in words)
            and (not status or review_state(s.store.decisions.get(it.id), it.content) == status)]
        return {"total": len(hits), "offset": offset, "limit": limit,
                "items": [summary(it) for it in hits[offset:offset + limit]]}

    @api.get("/api/facets")
    def facets() -> dict:
        counts: dict[str, int] = {}
        for it in s.catalog.items:
            state = review_state(s.store.decisions.get(it.id), it.content)
            counts[state] = counts.get(state, 0) + 1
        return {**s.catalog.facets, "status": counts, "total": len(s.catalog.items),
                "left_out": len(s.catalog.left_out), "stale": s.catalog.stale}

    @api.get("/api/items/{item_id:path}/detail")
    def detail(item_id: str) -> dict:
        it = item_or_404(item_id)
        w, h = it.size
        objects = [{"name": o["name"], "concept": o["concept"], "box": o["box"], "z": o["z"],
                    "visible_fraction": o["visible_fraction"], "colour": "#%02x%02x%02x" % PALETTE[k % len(PALETTE)],
                    "box_pct": [100 * o["box"][0] / w, 100 * o["box"][1] / h, 100 * o["box"][2] / w,
                                100 * o["box"][3] / h]} for k, o in enumerate(it.objects)]
        sources = [{"name": src.name, "concept": src.concept,
                    "url": media("cutout", it, f"/{k}") if src.cutout else None} for k, src in enumerate(it.sources)]
        variants = [summary(s.catalog.by_id[v]) for v in s.catalog.variants.get(it.composition, [])]
        return {**summary(it), "size": [w, h], "background": it.background, "original_captions": it.captions,
                "overlay": media("overlay", it), "composed": media("composed", it), "objects": objects,
                "sources": sources, "variants": variants}

    @api.post("/api/items/{item_id:path}/review")
    def review(item_id: str, body: ReviewBody) -> dict:
        it = item_or_404(item_id)
        old = s.store.decisions.get(it.id)
        edits = dict(old.captions) if old is not None and old.content == it.content else {}
        for key, text in (body.captions or {}).items():
            text = " ".join(text.split())  # one line: captions files and kohya .txt hold one
            if not text or len(text) > MAX_CAPTION:
                raise HTTPException(422, f"caption {key!r} must be 1 to {MAX_CAPTION} characters")
            if text == it.captions[key]:
                edits.pop(key, None)  # back to what s4 wrote: no longer an edit
            else:
                edits[key] = text
        s.store.record(Decision(id=it.id, content=it.content, status=body.status,
                                captions={k: edits[k] for k in CAPTION_KEYS if k in edits}))
        return summary(it)

    @api.get("/media/cutout/{k}/{item_id:path}")
    def cutout(k: int, item_id: str) -> FileResponse:
        it = item_or_404(item_id)
        if not 0 <= k < len(it.sources) or it.sources[k].cutout is None:
            raise HTTPException(404, f"no cut-out {k} of {item_id!r}")
        try:
            return FileResponse(s.thumbs.cutout(it, k), headers=MEDIA_CACHE)
        except ItemFailed as e:
            raise HTTPException(404, f"cut-out {k} of {item_id!r} unreadable: {e}") from None

    @api.get("/api/leaderboard")
    def board() -> dict:
        return s.bench.board() if s.bench else {"run": None, "notes": ["no bench run: set serve.bench_run"], "weights": {},
                                                "metrics": [], "models": [], "categories": [], "pareto": None}

    @api.get("/api/leaderboard/prompts")
    def prompts(offset: int = Query(0, ge=0), limit: int = Query(20, ge=1, le=200)) -> dict:
        if not s.bench:
            return {"total": 0, "offset": 0, "models": [], "prompts": []}
        return s.bench.prompts(offset, limit, lambda i: f"/media/bench/{i}")

    @api.get("/media/bench/{row}")
    def bench_image(row: int) -> FileResponse:
        if not s.bench or not 0 <= row < len(s.bench.images) or not s.bench.images[row].is_file():
            raise HTTPException(404, f"no bench image {row}")
        return FileResponse(s.bench.images[row], headers=MEDIA_CACHE)

    def searched(kind: str, value: str, k: int) -> dict:
        if s.search is None:
            raise HTTPException(404, "no search index: set serve.search_index (or search.index)")
        try:
            out = s.search.query(kind, value, k)
        except UserError as e:
            raise HTTPException(422, str(e)) from None
        for hit in out["results"]:
            hit["samples"] = [f"/media/sample/{k}/{quote(hit['model'])}" for k in range(s.search.n_samples(hit["model"]))]
        return out

    @api.get("/api/search")
    def search_get(text: str = "", model: str = "", k: int = Query(10, ge=1, le=100)) -> dict:
        if bool(text.strip()) == bool(model.strip()):
            raise HTTPException(422, "give one of text= or model= (an image is a POST to /api/search)")
        return searched("text", text.strip(), k) if text.strip() else searched("model", model.strip(), k)

    @api.post("/api/search")
    async def search_image(image: UploadFile = File(...), k: int = Query(10, ge=1, le=100)) -> dict:
        data = await image.read(s.max_upload + 1)
        if len(data) > s.max_upload:
            raise HTTPException(413, f"the image is over {s.max_upload >> 20} MB (serve.max_upload_mb)")
        with tempfile.TemporaryDirectory(prefix="gen4gen-query-") as tmp:
            path = Path(tmp) / "query"  # the name from the upload is never used on disk
            path.write_bytes(data)
            return await run_in_threadpool(searched, "image", str(path), k)

    @api.get("/media/sample/{k}/{model:path}")
    def sample(k: int, model: str) -> FileResponse:
        if s.search is None:
            raise HTTPException(404, "no search index")
        try:
            return FileResponse(s.search.sample(model, k), headers=MEDIA_CACHE)
        except UserError as e:
            raise HTTPException(404, str(e)) from None

    # last: the routes above with their own /media/<name>/ prefix win
    @api.get("/media/{kind}/{item_id:path}")
    def item_media(kind: Literal["image", "thumb", "overlay", "composed"], item_id: str) -> FileResponse:
        it = item_or_404(item_id)
        try:
            path = {"image": lambda: it.image, "composed": lambda: it.composed, "thumb": lambda: s.thumbs.thumbnail(it),
                    "overlay": lambda: s.thumbs.overlay(it)}[kind]()
        except ItemFailed as e:
            raise HTTPException(404, f"{kind} of {item_id!r} unreadable: {e}") from None
        return FileResponse(path, headers=MEDIA_CACHE)

    return api
