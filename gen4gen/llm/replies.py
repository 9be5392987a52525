"""What goes to the LLM and what comes back: a request with its schema and check, the result, and the reply read
as data (the first JSON object in it, bounded; printable text only)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

from pydantic import BaseModel, ValidationError

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


def reply_text(resp) -> tuple[str, dict]:
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


def short_error(e: Exception) -> str:
    if isinstance(e, ValidationError):
        parts = [f"{'.'.join(map(str, err['loc'])) or 'reply'}: {err['msg']}" for err in e.errors()[:5]]
        return "schema mismatch: " + "; ".join(parts)
    if isinstance(e, ReplyInvalid):
        return str(e)[:500]
    return f"{type(e).__name__} while checking the reply: {str(e)[:400]}"  # e.g. a number that underflows
