"""The HTTP client the LLM client talks through: openai's own, with a limit on how much of a reply it reads.
A reply is data from a server nobody vetted: a broken or hostile one can stream gigabytes, or send a few
megabytes of gzip that inflate to gigabytes (a 3 GB reply took 9 GB of memory before this limit)."""
from __future__ import annotations

import sys
import zlib


class ReplyTooLarge(Exception):
    """A reply body the client will not read: past its size limit, or in an encoding it did not ask for."""


def capped_http_client(limit: int):
    """openai's own async HTTP client (an httpx or httpx2 ``AsyncClient``, by openai version) whose reply bodies
    stop at ``limit`` bytes, counted after decompression: a declared length over it is refused before the body,
    a stream (or a gzip bomb: 2 MB that inflate to gigabytes) is cut where it passes it."""
    import openai

    base = openai.DefaultAsyncHttpxClient
    httpx = sys.modules[base.__mro__[1].__module__.split(".")[0]]
    why = f"the reply passed {limit / 1e6:g} MB (llm.max_reply_mb): not read further"

    class Capped(httpx.AsyncByteStream):
        def __init__(self, inner, inflate: bool):
            # gzip or zlib-wrapped deflate, told apart by the header (wbits 32+)
            self.inner, self.decoder = inner, zlib.decompressobj(32 + zlib.MAX_WBITS) if inflate else None

        async def __aiter__(self):
            seen = 0
            async for chunk in self.inner:
                if self.decoder:  # at most one byte past the limit comes out of any chunk
                    chunk = self.decoder.decompress(chunk, limit + 1 - seen)
                seen += len(chunk)
                if seen > limit:
                    raise ReplyTooLarge(why)
                yield chunk

        async def aclose(self):
            await self.inner.aclose()

    class Transport(httpx.AsyncBaseTransport):
        def __init__(self):
            self.inner = httpx.AsyncHTTPTransport()

        async def handle_async_request(self, request):
            request.headers["Accept-Encoding"] = "gzip, deflate"  # what is decoded here, under the limit
            response = await self.inner.handle_async_request(request)
            declared = response.headers.get("content-length", "")
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            problem = why if declared.isdigit() and int(declared) > limit else None
            if encoding not in ("identity", "", "gzip", "x-gzip", "deflate"):
                problem = f"the reply came in {encoding!r}, which was not asked for"
            if problem:
                await response.aclose()
                raise ReplyTooLarge(problem)
            inflate = encoding not in ("identity", "")
            if inflate:
                del response.headers["content-encoding"]  # decoded here, not again by the client
            response.stream = Capped(response.stream, inflate)
            return response

        async def aclose(self):
            await self.inner.aclose()

    return base(transport=Transport())
