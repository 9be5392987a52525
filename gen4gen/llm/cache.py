"""The LLM reply cache: one JSON file per request hash, so a rerun costs nothing. An entry that today's checks
reject, or one that holds the API key (written before replies were redacted), is never served."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from pydantic import BaseModel

from gen4gen.io import json_bytes, write_atomic
from gen4gen.llm.replies import Request


def cache_key(base_url: str, model: str, req: Request) -> str:
    blob = json.dumps({"base_url": base_url, "model": model, "messages": req.messages,
                       "schema": req.schema.model_json_schema(), "temperature": req.temperature},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ReplyCache:
    def __init__(self, folder: Path | None, model: str, has_secret: Callable[[str], bool]):
        self.folder, self.model, self.has_secret = folder, model, has_secret

    def path(self, key: str) -> Path | None:
        return self.folder / key[:2] / f"{key}.json" if self.folder else None

    def get(self, key: str, req: Request):
        path = self.path(key)
        if not path or not path.is_file():
            return None
        try:
            text = path.read_text("utf-8")
            if self.has_secret(text):  # written before replies were redacted: never serve it
                return None
            value = req.schema.model_validate(json.loads(text)["value"])
            return req.check(value) if req.check else value
        except Exception:  # noqa: BLE001 - stale or corrupt entry, or one today's checks reject: ask again
            return None

    def put(self, key: str, text: str, value: BaseModel) -> None:
        path = self.path(key)
        if path:
            write_atomic(path, json_bytes({"model": self.model, "reply": text, "value": value.model_dump()}))
