"""A small OpenAI-compatible HTTP server on 127.0.0.1 for the LLM backends' tests.

``replies`` is a function ``(request_body: dict, n: int) -> Reply``; ``n`` counts requests from 0.
The server is threaded with a large listen queue, so concurrency in the client is real concurrency here.
Hostile cases: ``ECHO_KEY`` / ``ECHO_AUTH`` in a reply (content, raw body or error body) are replaced by the
request's bearer key / whole Authorization header, as a server that echoes credentials would (``ECHO_KEY_ESCAPED``:
the key with its first character as a JSON ``\\uXXXX`` escape, inside a JSON string);
``NUMERIC_BOXES`` are boxes whose arithmetic underflows or overflows; ``stream_mb`` streams a huge body. ``GET /models`` answers
``models_status`` (200 with an empty list by default).
"""
from __future__ import annotations

import functools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable


@dataclass
class Reply:
    content: str | None = None  # the assistant message; None with a non-200 status
    status: int = 200
    headers: dict = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a timeout when over the client's timeout)
    raw: bytes | None = None  # send these bytes as the body instead (truncated JSON, HTML...)
    trickle: float = 0.0  # seconds between the body's bytes (a server that never quite times out)
    stream_mb: float = 0.0  # a body of this many MB of a JSON string, with no Content-Length (ends when it closes)


ECHO_KEY, ECHO_AUTH, ECHO_KEY_ESCAPED = "{{ECHO_KEY}}", "{{ECHO_AUTH}}", "{{ECHO_KEY_ESCAPED}}"
# [x, y, w, h] that a naive check turns into ZeroDivisionError, inf or nan
NUMERIC_BOXES = [[0, 0, 1e-200, 1e-200], [-0.0, -0.0, 5e-324, 5e-324], [0, 0, 1e308, 1e308],
                 [1e-320, 1e-320, 1e-320, 300], [0, 0, 1e-154, 1e-154], [10, 10, 0.4, 400], [-1e308, -1e308, 1e308, 1e308],
                 [0, 0, 10 ** 400, 10], [1e308, 1e308, 1e308, 1e308]]


def chat_body(content: str, model: str = "test-model") -> bytes:
    return json.dumps({
        "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
    }).encode()


class LLMServer:
    def __init__(self, replies: Callable[[dict, int], Reply], models_status: int = 200):
        self.replies = replies
        self.models_status = models_status
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.in_flight = 0
        self.streamed_mb = 0  # of the ``stream_mb`` bodies, what the client took
        self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                payload = json.dumps({"object": "list", "data": []} if server.models_status == 200 else
                                     {"error": {"message": "scripted error"}}).encode()
                self.send_response(server.models_status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    n = len(server.requests)
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    reply = server.replies(body, n)
                    if reply.delay:
                        time.sleep(reply.delay)
                    if reply.stream_mb:
                        self.send_response(200)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Connection", "close")
                        self.end_headers()
                        self.wfile.write(b'{"id": "')
                        for _ in range(int(reply.stream_mb)):
                            self.wfile.write(b"x" * 1_000_000)
                            server.streamed_mb += 1  # until the client hangs up
                        self.close_connection = True
                        return
                    payload = reply.raw if reply.raw is not None else (
                        chat_body(reply.content or "") if reply.status == 200
                        else json.dumps({"error": {"message": reply.content or "scripted error",
                                                   "type": "server_error"}}).encode())
                    auth = self.headers.get("Authorization") or ""
                    key = auth.removeprefix("Bearer ")
                    # inside a JSON body the escape itself is escaped once more: \\u0073 reads \u0073 in the content
                    escaped = f"\\\\u{ord(key[0]):04x}{key[1:]}" if key else ""
                    payload = payload.replace(ECHO_AUTH.encode(), auth.encode()).replace(
                        ECHO_KEY_ESCAPED.encode(), escaped.encode()).replace(ECHO_KEY.encode(), key.encode())
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in reply.headers.items():
                        self.send_header(k, str(v))
                    self.end_headers()
                    if reply.trickle:
                        for i in range(len(payload)):
                            self.wfile.write(payload[i:i + 1])
                            self.wfile.flush()
                            time.sleep(reply.trickle)
                    else:
                        self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): fine
                finally:
                    with server._lock:
                        server.in_flight -= 1

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 512

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "LLMServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@functools.cache
def yaml_llm() -> dict:
    """conf/config.yaml's ``llm`` section, resolved."""
    from gen4gen.settings import LLMSettings, section
    from tests.conftest import make_cfg

    return section(make_cfg(Path("/nonexistent")), "llm", LLMSettings).model_dump()


def llm_client(base_url: str, model: str = "m", **settings):
    """An ``LLMClient`` on the yaml's ``llm`` settings with ``base_url``, ``model`` and ``settings`` over them;
    no reply cache unless ``cache_dir`` is given."""
    from gen4gen.llm.client import LLMClient
    from gen4gen.settings import LLMSettings

    settings = {k: str(v) if isinstance(v, Path) else v for k, v in settings.items()}
    return LLMClient(LLMSettings.model_validate({**yaml_llm(), "cache_dir": None, "base_url": base_url,
                                                 "model": model, **settings}))
