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
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from gen4gen.errors import UserError
from gen4gen.http_client import ReplyTooLarge, capped_http_client
from gen4gen.io import json_bytes, write_atomic
from gen4gen.settings import LLMSettings, parse

log = logging.getLogger(__name__)
T = TypeVar("T", bound=BaseModel)
FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S | re.I)


class ReplyInvalid(ValueError):
    """A reply that parsed but breaks the caller's rules; the message is fed back to the model."""


class LLMUnreachable(UserError):
    """No request can succeed: the key is missing, the server cannot be reached or it refuses the key."""


REDACTED = "[redacted]"
# meta.json ``redo`` of an item that fell back because no reply came: the runner redoes it on the next run
NO_REPLY = "the LLM gave no reply (unreachable, timeouts or errors)"
# this many requests without an answer on any try, and none answered: the server is taken for dead (one such
# request may be bad luck, as when a single error reply beats the first good ones back)
NO_ANSWER_STOP = 2
MIN_SECRET_CHARS = 8  # shorter values ("EMPTY", "x", "ollama") are placeholders of keyless local servers


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
    transport: bool = False  # failed because no reply came (unreachable, timeouts, 5xx), not a bad reply

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

    def cache_key(self, req: Request) -> str:
        blob = json.dumps({"base_url": self.base_url, "model": self.model, "messages": req.messages,
                           "schema": req.schema.model_json_schema(), "temperature": req.temperature},
                          sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    # -------------------------------------------------------------- internals
    async def _run_all(self, requests: list[Request], on_done) -> list[Result]:
        import openai

        client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self._key() or "no-key",
                                    timeout=self._timeouts(self.timeout), max_retries=self.max_retries,
                                    http_client=capped_http_client(self.max_reply_bytes))
        gate = asyncio.Semaphore(self.concurrency)
        self._probe_lock = asyncio.Lock()

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
                invalid = _in_chain(e, lambda x: isinstance(x, (ReplyTooLarge, ReplyInvalid)))
                if invalid:  # the server answered, with too much or the wrong shape: not a dead server
                    self._answered = True
                    result.errors.append(f"attempt {attempt}: {self.redact(str(invalid))}")
                    continue
                result.errors.append(self.redact(_describe(e)))
                result.transport = True
                log.info("llm %s: %s", req.tag, result.errors[-1])
                if _unreachable(e):
                    self.unreachable = self.unreachable or self._unreachable_reason(e)
                elif not self._answered and (why := _no_answer(e)):  # on every try of it, and nothing answered yet
                    self._unanswered += 1
                    if self._unanswered >= NO_ANSWER_STOP:
                        limit = f" (llm.timeout={self.timeout:g} s)" if why == "timed out" else ""
                        self.unreachable = self.unreachable or (
                            f"no reply from {self.base_url}: {self._unanswered} requests {why} on each of their "
                            f"{self.max_retries + 1} tries{limit} and none was answered; check the server")
                    break  # the client's own tries were this attempt's; another would only repeat them
                if _permanent(e):
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
                err = self.redact(_short_error(e))
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
                self.unreachable = self.unreachable or await self._probe()
        return self.unreachable

    async def _probe(self) -> str | None:
        import openai

        key = self._key()
        if not key and self.api_key_env:
            return f"{self.api_key_env} is not set; export it (or llm.api_key_env=null for a server without keys)"
        probe = openai.AsyncOpenAI(base_url=self.base_url, api_key=key or "no-key",
                                   timeout=self._timeouts(min(self.timeout, 10.0)), max_retries=0,
                                   http_client=capped_http_client(self.max_reply_bytes))
        try:
            await probe.models.list()  # GET /models: cheap, and every OpenAI-compatible server has it or a 404
        except openai.APITimeoutError as e:
            # no connection is absent; a connection without an answer is slow, and the requests will tell
            return self._unreachable_reason(e) if _connect_timed_out(e) else None
        except (openai.APIConnectionError, openai.AuthenticationError, openai.PermissionDeniedError) as e:
            return self._unreachable_reason(e)
        except Exception:  # noqa: BLE001 - 404 (no /models), 5xx, an odd body: the server is there
            return None
        finally:
            await probe.close()
        return None

    def _unreachable_reason(self, e: Exception) -> str:
        status = getattr(e, "status_code", None)
        if status == 404:
            return (f"{self.base_url} has no chat endpoint or no model {self.model!r} (HTTP 404); "
                    "check llm.base_url and llm.model")
        if status in (401, 403):
            return f"{self.base_url} refused the key in {self.api_key_env} (HTTP {status}); check it"
        if _connect_timed_out(e):
            return (f"cannot reach {self.base_url} (no connection within {self.connect_timeout:g} s); "
                    "check llm.base_url or raise llm.connect_timeout")
        return f"cannot reach {self.base_url} ({type(e).__name__}); check llm.base_url"

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
        return _reply_text(resp)

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
            text = path.read_text("utf-8")
            if self._has_secret(text):  # written before replies were redacted: never serve it
                return None
            value = req.schema.model_validate(json.loads(text)["value"])
            return req.check(value) if req.check else value
        except Exception:  # noqa: BLE001 - stale or corrupt entry, or one today's checks reject: ask again
            return None

    def _cache_put(self, key: str, text: str, value: BaseModel) -> None:
        path = self._cache_path(key)
        if path:
            write_atomic(path, json_bytes({"model": self.model, "reply": text, "value": value.model_dump()}))


def _permanent(e: Exception) -> bool:
    """Errors no retry can fix: wrong key, model or request."""
    import openai

    return isinstance(e, (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError,
                          openai.BadRequestError, openai.UnprocessableEntityError))


def _unreachable(e: Exception) -> bool:
    """No request of this run can succeed: the connection is refused, the key is, or the model or endpoint
    does not exist."""
    import openai

    if isinstance(e, openai.APITimeoutError):  # slow, not absent, unless no connection was made at all
        return _connect_timed_out(e)
    return isinstance(e, (openai.APIConnectionError, openai.AuthenticationError, openai.PermissionDeniedError,
                          openai.NotFoundError))


def _no_answer(e: Exception) -> str | None:
    """How a request that the client retried got no answer: timed out, or a server error / rate limit (a server
    that answers every request with 500 or 429, e.g. a model that failed to load or a spent quota); else None."""
    import openai

    if isinstance(e, (openai.APITimeoutError, TimeoutError)):
        return "timed out"
    status = getattr(e, "status_code", None)
    if isinstance(e, openai.APIStatusError) and status is not None and (status >= 500 or status == 429):
        return f"got HTTP {status}"
    return None


def _in_chain(e: BaseException | None, test: Callable[[BaseException], bool]) -> BaseException | None:
    """The first exception of ``e``'s cause chain that passes ``test`` (openai wraps its HTTP library's errors)."""
    for _ in range(8):
        if e is None or test(e):
            return e
        e = e.__cause__ or e.__context__
    return None


def _connect_timed_out(e: BaseException) -> bool:
    """The timeout was in connecting. openai raises ``APITimeoutError`` from its HTTP library's
    ``ConnectTimeout`` (httpx or httpx2, by openai version): matched by name, not by import."""
    return _in_chain(e, lambda x: type(x).__name__ == "ConnectTimeout") is not None


def _reply_text(resp) -> tuple[str, dict]:
    """The reply's text and its integer token counts. openai builds the reply without validating it, so any JSON
    may sit where the text should be: content parts are joined, anything else is an invalid reply."""
    try:
        content = resp.choices[0].message.content
    except (AttributeError, IndexError, KeyError, TypeError):
        raise ReplyInvalid("the reply has no choices[0].message") from None
    if isinstance(content, list):  # content parts ({"type": "text", "text": ...}), as some servers send them
        content = "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    if content is not None and not isinstance(content, str):
        raise ReplyInvalid(f"the reply's message content is {type(content).__name__}, not text")
    try:
        usage = {k: v for k, v in resp.usage.model_dump(warnings=False).items() if type(v) is int}
    except Exception:  # noqa: BLE001 - no usage, or usage of another shape: it is only reported
        usage = {}
    return content or "", usage


def _short_error(e: Exception) -> str:
    if isinstance(e, ValidationError):
        parts = [f"{'.'.join(map(str, err['loc'])) or 'reply'}: {err['msg']}" for err in e.errors()[:5]]
        return "schema mismatch: " + "; ".join(parts)
    if isinstance(e, ReplyInvalid):
        return str(e)[:500]
    return f"{type(e).__name__} while checking the reply: {str(e)[:400]}"  # e.g. a number that underflows


def _describe(e: Exception) -> str:
    status = getattr(e, "status_code", None)
    name = type(e).__name__
    return f"{name} (HTTP {status})" if status else f"{name}: {str(e)[:200]}"


def client_from_cfg(llm_cfg, cache_dir: str | Path | None = None) -> LLMClient:
    """The client of a backend's ``llm`` node (``${llm}`` in conf/layout/llm.yaml, conf/captioner/llm.yaml)."""
    return LLMClient(parse(llm_cfg, LLMSettings, "llm"), cache_dir)
