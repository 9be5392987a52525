"""``webdataset/``: size-bounded tar shards ``shard-000000.tar``... with ``<key>.png``, ``<key>.json``
(id, scene, captions, modifier tokens, objects) and ``<key>.txt`` (the detailed caption) per sample.
A shard closes once it holds ``shard_maxcount`` samples or reaches ``shard_maxsize`` bytes. Member
mtimes are fixed, so the same items give the same bytes.
"""
from __future__ import annotations

import webdataset

from gen4gen.export.items import ExportContext
from gen4gen.io import json_bytes

NAME = "webdataset"


def write(ctx: ExportContext) -> dict:
    out = ctx.root / NAME
    out.mkdir(parents=True, exist_ok=True)
    with webdataset.ShardWriter(str(out / "shard-%06d.tar"), maxcount=ctx.settings.shard_maxcount,
                                maxsize=ctx.settings.shard_maxsize, verbose=0, mtime=0.0) as sink:
        for it in ctx.items:
            meta = {"id": it.id, "scene": it.scene, "concepts": it.concepts, "size": list(it.size),
                    "captions": {k: getattr(it.captions, k) for k in ("short", "detailed", "personalized")},
                    "modifier_tokens": it.captions.modifier_tokens, "objects": it.objects()}
            sink.write({"__key__": it.key, "png": it.image_path.read_bytes(), "json": json_bytes(meta),
                        "txt": it.captions.detailed})
        shards = sink.shard
    return {"webdataset shards": shards}
