"""One client for every LLM backend (s2 planner, s4 captioners): any OpenAI-compatible endpoint.

LLM output is data: the reply is parsed as JSON (fences and prose around it tolerated), validated
against a pydantic schema and a caller check, retried with the error fed back, and cached on disk by
request hash. Transport retries (429 with Retry-After, 5xx, timeouts) are the ``openai`` client's own.
The API key is read from the environment at call time and never stored in the config, cache or logs.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from gen4gen.io import json_bytes, write_atomic

log = logging.getLogger(__name__)
T = TypeVar("T", bound=BaseModel)
FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S | re.I)


class ReplyInvalid(ValueError):
    """A reply that parsed but breaks the caller's rules; the message is fed back to the model."""


@dataclass
class Request(Generic[T]):
    messages: list[dict]
    schema: type[T]
    temperature: float = 0.7
    check: Callable[[T], T] | None = None  # may repair and return; raises ReplyInvalid
    tag: str = ""  # what the request is for, in logs


@dataclass
class Result(Generic[T]):
    value: T | None
    attempts: int = 0
    cached: bool = False
    errors: list[str] = field(default_factory=list)
    usage: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.value is not None


# layouts and captions are a few kB: a longer reply is cut, and only the first openings are tried, so a
# hostile megabyte of unterminated brackets costs milliseconds, not minutes of re-parsing
MAX_REPLY_CHARS = 200_000
MAX_STARTS = 32


def extract_json(text: str) -> Any:
    """The first JSON object in ``text``: bare, fenced, or with prose around it."""
    text = text[:MAX_REPLY_CHARS]
    candidates = [m.group(1) for m in FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for cand in candidates:
        starts = (i for i, ch in enumerate(cand) if ch in "{[")
        for _, start in zip(range(MAX_STARTS), starts):
            try:
                obj, _ = decoder.raw_decode(cand, start)
                return obj
            except ValueError:
                continue
            except RecursionError:  # thousands of nested brackets: hostile, not a layout
                raise ReplyInvalid("the reply's JSON is nested too deeply") from None
    raise ReplyInvalid("no JSON object found in the reply")


def clean_text(value: str, max_len: int = 200) -> str:
    """Model-supplied strings end up in captions and file names: keep printable text only."""
    value = "".join(ch if ch.isprintable() else " " for ch in str(value))
    return " ".join(value.split())[:max_len]


class LLMClient:
    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", concurrency: int = 8,
                 timeout: float = 60.0, max_retries: int = 4, max_attempts: int = 3,
                 cache_dir: str | Path | None = None, structured: bool = True):
        self.base_url, self.model = base_url, model
        self.api_key_env = api_key_env
        self.concurrency = max(1, int(concurrency))
        self.timeout, self.max_retries = float(timeout), int(max_retries)
        self.max_attempts = max(1, int(max_attempts))
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.structured = structured  # json_schema first; turned off when the server rejects it

    # -------------------------------------------------------------- public
    def run(self, requests: list[Request], on_done: Callable[[], None] | None = None) -> list[Result]:
        """Run ``requests`` concurrently (bounded by ``concurrency``); results in request order."""
        if not requests:
            return []
        return asyncio.run(self._run_all(requests, on_done))

    def cache_key(self, req: Request) -> str:
        blob = json.dumps({"base_url": self.base_url, "model": self.model, "messages": req.messages,
                           "schema": req.schema.model_json_schema(), "temperature": req.temperature},
                          sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    # -------------------------------------------------------------- internals
    async def _run_all(self, requests: list[Request], on_done) -> list[Result]:
        import openai

        client = openai.AsyncOpenAI(base_url=self.base_url, api_key=os.environ.get(self.api_key_env) or "no-key",
                                    timeout=self.timeout, max_retries=self.max_retries)
        gate = asyncio.Semaphore(self.concurrency)

        async def one(req: Request) -> Result:
            async with gate:
                result = await self._complete(client, req)
            if on_done:
                on_done()
            return result

        try:
            return list(await asyncio.gather(*(one(r) for r in requests)))
        finally:
            await client.close()

    async def _complete(self, client, req: Request) -> Result:
        key = self.cache_key(req)
        cached = self._cache_get(key, req)
        if cached is not None:
            return Result(cached, cached=True)
        result = Result(None)
        messages = list(req.messages)
        for attempt in range(1, self.max_attempts + 1):
            result.attempts = attempt
            try:
                text, usage = await self._chat(client, messages, req)
            except Exception as e:  # noqa: BLE001 - transport failure after the client's own retries
                result.errors.append(_describe(e))
                log.info("llm %s: %s", req.tag, result.errors[-1])
                if _permanent(e):
                    break
                continue  # a garbled body or a run of 5xx/timeouts: another attempt may get through
            for k, v in usage.items():
                result.usage[k] = result.usage.get(k, 0) + v
            try:
                value = req.schema.model_validate(extract_json(text))
                if req.check:
                    value = req.check(value)
            except (ReplyInvalid, ValidationError) as e:
                err = _short_error(e)
                result.errors.append(f"attempt {attempt}: {err}")
                messages = messages + [
                    {"role": "assistant", "content": text[:4000]},
                    {"role": "user", "content": f"That reply was invalid: {err}\nAnswer again with only the JSON object."},
                ]
                continue
            result.value = value
            self._cache_put(key, text, value)
            return result
        return result

    async def _chat(self, client, messages: list[dict], req: Request) -> tuple[str, dict]:
        import openai

        kwargs: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": req.temperature}
        if self.structured:
            kwargs["response_format"] = {"type": "json_schema", "json_schema": {
                "name": req.schema.__name__, "schema": req.schema.model_json_schema()}}
        try:
            resp = await self._bounded(client.chat.completions.create(**kwargs))
        except openai.BadRequestError:
            if not self.structured:
                raise
            # a server without structured output: ask for a JSON object and rely on our own validation
            self.structured = False
            kwargs["response_format"] = {"type": "json_object"}
            resp = await self._bounded(client.chat.completions.create(**kwargs))
        if not getattr(resp, "choices", None):
            raise ReplyInvalid("reply had no choices")
        text = resp.choices[0].message.content or ""
        usage = resp.usage.model_dump() if getattr(resp, "usage", None) else {}
        usage = {k: v for k, v in usage.items() if isinstance(v, int)}
        return text, usage

    async def _bounded(self, call):
        """The client's timeout bounds each wait for bytes, not the call: a server trickling a byte now and
        then would hold a slot for ever. Bound the whole call, the client's own retries included."""
        try:
            return await asyncio.wait_for(call, self.timeout * (self.max_retries + 2))
        except asyncio.TimeoutError:
            raise TimeoutError(f"no complete reply within {self.timeout * (self.max_retries + 2):.0f} s") from None

    def _cache_path(self, key: str) -> Path | None:
        return self.cache_dir / key[:2] / f"{key}.json" if self.cache_dir else None

    def _cache_get(self, key: str, req: Request):
        path = self._cache_path(key)
        if not path or not path.is_file():
            return None
        try:
            value = req.schema.model_validate(json.loads(path.read_text("utf-8"))["value"])
            return req.check(value) if req.check else value
        except (ValueError, KeyError, ReplyInvalid, ValidationError):
            return None  # stale or corrupt entry: ask again

    def _cache_put(self, key: str, text: str, value: BaseModel) -> None:
        path = self._cache_path(key)
        if path:
            write_atomic(path, json_bytes({"model": self.model, "reply": text, "value": value.model_dump()}))


def _permanent(e: Exception) -> bool:
    """Errors no retry can fix: wrong key, model or request."""
    import openai

    return isinstance(e, (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError,
                          openai.BadRequestError, openai.UnprocessableEntityError))


def _short_error(e: Exception) -> str:
    if isinstance(e, ValidationError):
        parts = [f"{'.'.join(map(str, err['loc'])) or 'reply'}: {err['msg']}" for err in e.errors()[:5]]
        return "schema mismatch: " + "; ".join(parts)
    return str(e)[:500]


def _describe(e: Exception) -> str:
    status = getattr(e, "status_code", None)
    name = type(e).__name__
    return f"{name} (HTTP {status})" if status else f"{name}: {str(e)[:200]}"


def client_from_cfg(llm_cfg, cache_dir: str | Path | None) -> LLMClient:
    return LLMClient(base_url=llm_cfg.base_url, model=llm_cfg.model, api_key_env=llm_cfg.api_key_env,
                     concurrency=llm_cfg.concurrency, timeout=llm_cfg.timeout, max_retries=llm_cfg.max_retries,
                     max_attempts=llm_cfg.get("max_attempts", 3), cache_dir=cache_dir)
