"""Is the LLM server there? The probe before a client's first request, and what a transport error says: a
server that cannot answer any request (refused, no connection, refused key, no such model), one that gave no
answer to a request (timeouts, 5xx, 429 on every try), or an error no retry can fix."""
from __future__ import annotations

from typing import Callable

from gen4gen.errors import UserError
from gen4gen.http_client import capped_http_client

# this many requests without an answer on any try, and none answered: the server is taken for dead (one such
# request may be bad luck, as when a single error reply beats the first good ones back)
NO_ANSWER_STOP = 2


class LLMUnreachable(UserError):
    """No request can succeed: the key is missing, the server cannot be reached or it refuses the key."""


async def probe(client) -> str | None:
    """Once per client, before its first real request: no key, a refused connection or a refused key is known
    in milliseconds, instead of after every request's retries."""
    import openai

    key = client._key()
    if not key and client.api_key_env:
        return f"{client.api_key_env} is not set; export it (or llm.api_key_env=null for a server without keys)"
    trial = openai.AsyncOpenAI(base_url=client.base_url, api_key=key or "no-key",
                               timeout=client._timeouts(min(client.timeout, 10.0)), max_retries=0,
                               http_client=capped_http_client(client.max_reply_bytes))
    try:
        await trial.models.list()  # GET /models: cheap, and every OpenAI-compatible server has it or a 404
    except openai.APITimeoutError as e:
        # no connection is absent; a connection without an answer is slow, and the requests will tell
        return unreachable_reason(client, e) if connect_timed_out(e) else None
    except (openai.APIConnectionError, openai.AuthenticationError, openai.PermissionDeniedError) as e:
        return unreachable_reason(client, e)
    except Exception:  # noqa: BLE001 - 404 (no /models), 5xx, an odd body: the server is there
        return None
    finally:
        await trial.close()
    return None


def unreachable_reason(client, e: Exception) -> str:
    """One line saying why no request of ``client`` can succeed."""
    status = getattr(e, "status_code", None)
    if status == 404:
        return (f"{client.base_url} has no chat endpoint or no model {client.model!r} (HTTP 404); "
                "check llm.base_url and llm.model")
    if status in (401, 403):
        return f"{client.base_url} refused the key in {client.api_key_env} (HTTP {status}); check it"
    if connect_timed_out(e):
        return (f"cannot reach {client.base_url} (no connection within {client.connect_timeout:g} s); "
                "check llm.base_url or raise llm.connect_timeout")
    return f"cannot reach {client.base_url} ({type(e).__name__}); check llm.base_url"


def permanent(e: Exception) -> bool:
    """Errors no retry can fix: wrong key, model or request."""
    import openai

    return isinstance(e, (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError,
                          openai.BadRequestError, openai.UnprocessableEntityError))


def unreachable(e: Exception) -> bool:
    """No request of this run can succeed: the connection is refused, the key is, or the model or endpoint
    does not exist."""
    import openai

    if isinstance(e, openai.APITimeoutError):  # slow, not absent, unless no connection was made at all
        return connect_timed_out(e)
    return isinstance(e, (openai.APIConnectionError, openai.AuthenticationError, openai.PermissionDeniedError,
                          openai.NotFoundError))


def no_answer(e: Exception) -> str | None:
    """How a request that the client retried got no answer: timed out, or a server error / rate limit (a server
    that answers every request with 500 or 429, e.g. a model that failed to load or a spent quota); else None."""
    import openai

    if isinstance(e, (openai.APITimeoutError, TimeoutError)):
        return "timed out"
    status = getattr(e, "status_code", None)
    if isinstance(e, openai.APIStatusError) and status is not None and (status >= 500 or status == 429):
        return f"got HTTP {status}"
    return None


def in_chain(e: BaseException | None, test: Callable[[BaseException], bool]) -> BaseException | None:
    """The first exception of ``e``'s cause chain that passes ``test`` (openai wraps its HTTP library's errors)."""
    for _ in range(8):
        if e is None or test(e):
            return e
        e = e.__cause__ or e.__context__
    return None


def connect_timed_out(e: BaseException) -> bool:
    """The timeout was in connecting. openai raises ``APITimeoutError`` from its HTTP library's
    ``ConnectTimeout`` (httpx or httpx2, by openai version): matched by name, not by import."""
    return in_chain(e, lambda x: type(x).__name__ == "ConnectTimeout") is not None


def describe(e: Exception) -> str:
    status = getattr(e, "status_code", None)
    name = type(e).__name__
    return f"{name} (HTTP {status})" if status else f"{name}: {str(e)[:200]}"
