"""Safe by default: what every request must pass before a route sees it.

- **Host**: on a loopback address only requests for a loopback address or ``localhost`` are answered, so a web page
  that rebinds its own domain name to 127.0.0.1 cannot read the app (DNS rebinding).
- **Token**: set (``serve.token``, or made and printed when the app listens on another address), it is asked
  of every request: ``?token=`` once (the answer sets an HttpOnly, SameSite=Strict cookie), the cookie, or an
  ``Authorization: Bearer`` header.
- **Origin**: a POST (or any method that changes something) whose ``Origin`` or ``Sec-Fetch-Site`` says it
  comes from another site is refused, so another page open in the same browser cannot review for the user.
- **Headers**: a Content-Security-Policy that allows only this origin's scripts and images (an injected
  ``<script>`` or ``onerror=`` would not run even if escaping failed), no framing, no sniffing.
"""
from __future__ import annotations

import ipaddress
import secrets
import time
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import JSONResponse, Response

COOKIE = "gen4gen_token"
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CSP = ("default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_token(host: str, token: str | None) -> str | None:
    """The token requests must carry: the configured one, else a new one when ``host`` is not loopback."""
    if token:
        return str(token)
    return None if is_loopback(host) else secrets.token_urlsafe(24)


class Guard:
    """The checks above as an HTTP middleware (``app.middleware("http")(Guard(...))``)."""

    def __init__(self, host: str, token: str | None):
        self.loopback, self.token = is_loopback(host), token

    async def __call__(self, request: Request, call_next) -> Response:
        t0 = time.perf_counter()
        refusal = self.refuse(request)
        if refusal:
            return JSONResponse({"detail": refusal}, status_code=403)
        response = await call_next(request)
        # the app's own time, as the browser's network panel and benchmarks/serve.py read it
        response.headers["Server-Timing"] = f"app;dur={1000 * (time.perf_counter() - t0):.2f}"
        if self.token and request.query_params.get("token") and request.cookies.get(COOKIE) != self.token:
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = response.headers.get("Cache-Control", "no-store")
        return response

    def refuse(self, request: Request) -> str | None:
        host_header = request.headers.get("host", "")
        if self.loopback and not is_loopback(urlsplit(f"//{host_header}").hostname or ""):
            return f"host {host_header!r} refused: this app answers only on the address it was started on"
        if self.token and not self._has_token(request):
            return "a token is needed: open the address printed by stage=serve (it ends in ?token=...)"
        if request.method not in SAFE_METHODS:
            origin = request.headers.get("origin")
            if origin is not None and origin != f"{request.url.scheme}://{host_header}":
                return f"cross-origin {request.method} from {origin!r} refused"
            if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
                return f"cross-site {request.method} refused"
        return None

    def _has_token(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        given = [request.query_params.get("token", ""), request.cookies.get(COOKIE, ""),
                 auth[7:] if auth.lower().startswith("bearer ") else ""]
        return any(g and secrets.compare_digest(g.encode(), self.token.encode()) for g in given)
