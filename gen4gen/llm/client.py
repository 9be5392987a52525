"""One client for every LLM backend (s2 planner, s4 captioners): any OpenAI-compatible endpoint.

LLM output is data: the reply is parsed as JSON (fences and prose around it tolerated), validated
against a pydantic schema and a caller check, retried with the error fed back, and cached on disk by
request hash. Transport retries (429 with Retry-After, 5xx, timeouts) are the ``openai`` client's own.
The API key is read from the environment at call time and never stored in the config, cache or logs;
a reply that repeats it is redacted before anything reads it and rejected.
A missing key, a server that cannot be reached (refused, or no connection within ``connect_timeout``), one
that refuses the key, or one that has answered nothing when two requests timed out (or got a 5xx / 429) on
every try stops the run with one line (``LLMUnreachable``) unless ``fallback_on_unreachable``: then every
request fails at once and its result says ``transport`` so the caller can redo the item on the next run.
A reply body stops at ``max_reply_mb`` (a hostile or broken server can stream gigabytes: a 3 GB reply took
9 GB of memory) and counts as an invalid reply.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Callable

from gen4gen.http_client import ReplyTooLarge, capped_http_client
from gen4gen.llm.cache import ReplyCache, cache_key
from gen4gen.llm.health import (NO_ANSWER_STOP, LLMUnreachable, describe, in_chain, no_answer, permanent, probe,
                                unreachable, unreachable_reason)
from gen4gen.llm.replies import ReplyInvalid, Request, Result, extract_json, reply_text, short_error
from gen4gen.settings import LLMSettings, parse

log = logging.getLogger(__name__)

REDACTED = "[redacted]"
# meta.json ``redo`` of an item that fell back because no reply came: the runner redoes it on the next run
NO_REPLY = "the LLM gave no reply (unreachable, timeouts or errors)"
MIN_SECRET_CHARS = 8  # shorter values ("EMPTY", "x", "ollama") are placeholders of keyless local servers


class LLMClient:
    def __init__(self, settings: LLMSettings, cache_dir: str | Path | None = None, structured: bool = True):
        """``settings``: the ``llm`` section; ``cache_dir`` (else ``settings.cache_dir``): the reply cache."""
        self.settings = settings
        self.base_url, self.model = settings.base_url, settings.model
        self.api_key_env = settings.api_key_env  # None: a server without keys (a local vLLM / Ollama)
        self.concurrency = settings.concurrency
        self.timeout, self.max_retries = settings.timeout, settings.max_retries
        # a host that drops the connection (a wrong address, a firewall) would otherwise cost the whole
        # ``timeout`` per try; a live server accepts a connection in milliseconds, however busy it is
        self.connect_timeout = min(settings.connect_timeout, self.timeout)
        self.max_reply_bytes = int(settings.max_reply_mb * 1e6)
        self.max_attempts = settings.max_attempts
        cache_dir = cache_dir if cache_dir is not None else settings.cache_dir
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.cache = ReplyCache(self.cache_dir, self.model, self._has_secret)
        self.structured = structured  # json_schema first; turned off when the server rejects it
        self.fallback_on_unreachable = settings.fallback_on_unreachable
        self.unreachable: str | None = None  # why no request can succeed, once known
        self._probe_lock: asyncio.Lock | None = None
        self._probed = False
        self._answered = False  # any reply came this run: a later timeout is a slow server, not a dead one
        self._unanswered = 0  # requests that got no answer on any try while nothing was answered

    # -------------------------------------------------------------- public
    def run(self, requests: list[Request], on_done: Callable[[], None] | None = None) -> list[Result]:
        """Run ``requests`` concurrently (bounded by ``concurrency``); results in request order.
        Raises ``LLMUnreachable`` when the server cannot answer at all, unless ``fallback_on_unreachable``."""
        if not requests:
            return []
        results = asyncio.run(self._run_all(requests, on_done))
        if self.unreachable and not self.fallback_on_unreachable:
            raise LLMUnreachable(f"{self.unreachable} (or llm.fallback_on_unreachable=true)")
        return results

    def redact(self, text: str) -> str:
        """``text`` without the API key (nor the Authorization header, which holds it), in any letter case."""
        return re.sub(re.escape(self._secret()), REDACTED, text, flags=re.I) if self._has_secret(text) else text

    # -------------------------------------------------------------- internals
    async def _run_all(self, requests: list[Request], on_done) -> list[Result]:
        import openai

        client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self._key() or "no-key",
                                    timeout=self._timeouts(self.timeout), max_retries=self.max_retries,
                                    http_client=capped_http_client(self.max_reply_bytes))
        gate = asyncio.Semaphore(self.concurrency)
        self._probe_lock = asyncio.Lock()
        settled = asyncio.Condition()
        inflight = 0

        async def one(req: Request) -> Result:
            nonlocal inflight
            async with gate:
                async with settled:  # a request got no answer and none came yet: send no new one until those in
                    # flight tell whether the server is dead (else a third is sent while the second times out)
                    await settled.wait_for(lambda: not (self._unanswered and not self._answered and inflight))
                    inflight += 1
                try:
                    result = await self._complete(client, req)
                finally:
                    async with settled:
                        inflight -= 1
                        settled.notify_all()
            if on_done:
                on_done()
            return result

        try:
            return list(await asyncio.gather(*(one(r) for r in requests)))
        finally:
            await client.close()

    async def _complete(self, client, req: Request) -> Result:
        key = cache_key(self.base_url, self.model, req)
        cached = self.cache.get(key, req)
        if cached is not None:
            return Result(cached, cached=True)
        result = Result(None)
        if await self._reachable() is not None:
            result.errors.append(self.unreachable or "unreachable")
            result.transport = True
            return result
        messages = list(req.messages)
        for attempt in range(1, self.max_attempts + 1):
            if self.unreachable:  # found by another request meanwhile: do not queue behind its retries
                result.errors.append(self.unreachable)
                result.transport = True
                break
            result.attempts = attempt
            try:
                text, usage = await self._chat(client, messages, req)
            except Exception as e:  # noqa: BLE001 - transport failure after the client's own retries
                invalid = in_chain(e, lambda x: isinstance(x, (ReplyTooLarge, ReplyInvalid)))
                if invalid:  # the server answered, with too much or the wrong shape: not a dead server
                    self._answered = True
                    result.errors.append(f"attempt {attempt}: {self.redact(str(invalid))}")
                    continue
                result.errors.append(self.redact(describe(e)))
                result.transport = True
                log.info("llm %s: %s", req.tag, result.errors[-1])
                if unreachable(e):
                    self.unreachable = self.unreachable or unreachable_reason(self, e)
                elif not self._answered and (why := no_answer(e)):  # on every try of it, and nothing answered yet
                    self._unanswered += 1
                    if self._unanswered >= NO_ANSWER_STOP:
                        limit = f" (llm.timeout={self.timeout:g} s)" if why == "timed out" else ""
                        self.unreachable = self.unreachable or (
                            f"no reply from {self.base_url}: {self._unanswered} requests {why} on each of their "
                            f"{self.max_retries + 1} tries{limit} and none was answered; check the server")
                    break  # the client's own tries were this attempt's; another would only repeat them
                if permanent(e):
                    break
                continue  # a garbled body or a run of 5xx/timeouts: another attempt may get through
            result.transport = False
            self._answered = True
            for k, v in usage.items():
                result.usage[k] = result.usage.get(k, 0) + v
            leaked, text = self._has_secret(text), self.redact(text)
            try:
                data = extract_json(text)
                # also the key written with JSON escapes ("\u0073k-..."), which only parsing reveals
                if leaked or self._has_secret(json.dumps(data, ensure_ascii=False)):
                    raise ReplyInvalid("the reply repeated the API key; never include credentials in a reply")
                value = req.schema.model_validate(data)
                if req.check:
                    value = req.check(value)
            except Exception as e:  # noqa: BLE001 - whatever a reply makes a check raise, it is an invalid reply
                err = self.redact(short_error(e))
                result.errors.append(f"attempt {attempt}: {err}")
                messages = messages + [
                    {"role": "assistant", "content": text[:4000]},
                    {"role": "user", "content": f"That reply was invalid: {err}\nAnswer again with only the JSON object."},
                ]
                continue
            result.value = value
            self.cache.put(key, text, value)
            return result
        return result

    def _key(self) -> str:
        return os.environ.get(self.api_key_env, "") if self.api_key_env else ""

    def _secret(self) -> str:
        key = self._key()
        return key if len(key) >= MIN_SECRET_CHARS else ""

    def _has_secret(self, text: str) -> bool:
        secret = self._secret().lower()
        return bool(secret) and secret in text.lower()

    async def _reachable(self) -> str | None:
        """Once per client, before its first real request: no key, a refused connection or a refused key
        is known in milliseconds, instead of after every request's retries."""
        async with self._probe_lock:
            if not self._probed:
                self._probed = True
                self.unreachable = self.unreachable or await probe(self)
        return self.unreachable

    def _timeouts(self, total: float):
        import openai

        return openai.Timeout(total, connect=min(self.connect_timeout, total))

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
        return reply_text(resp)

    async def _bounded(self, call):
        """The client's timeout bounds each wait for bytes, not the call: a server trickling a byte now and
        then would hold a slot for ever. Bound the whole call, the client's own retries included."""
        try:
            return await asyncio.wait_for(call, self.timeout * (self.max_retries + 2))
        except asyncio.TimeoutError:
            raise TimeoutError(f"no complete reply within {self.timeout * (self.max_retries + 2):.0f} s") from None


def client_from_cfg(llm_cfg, cache_dir: str | Path | None = None) -> LLMClient:
    """The client of a backend's ``llm`` node (``${llm}`` in conf/layout/llm.yaml, conf/captioner/llm.yaml)."""
    return LLMClient(parse(llm_cfg, LLMSettings, "llm"), cache_dir)
