"""HTTP hardening around the API and the web UI: security headers, CORS (off unless configured), a
request-body limit for bodies sent without a Content-Length, and per-key rate limits (api/ratelimit.py).

    ZHAOPIAN_CORS_ORIGINS   browser origins allowed to call the API, comma-separated, e.g.
                            https://editor.example.com (none: no Access-Control-* headers at all)

Every response carries ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer`` (keys
travel in the URL fragment and live in the browser's storage; links carry signed tokens). The web UI's
pages get a strict Content-Security-Policy (scripts, styles and media from the server itself only, no
framing); API answers get ``default-src 'none'; sandbox`` so a served file can never run as a page.
The interactive docs (``/docs``, ``/redoc``) load Swagger UI from a CDN and get no policy.
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .ratelimit import RateLimiter, RateLimitMiddleware

UI_POLICY = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; style-src 'self'; "
             "script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
API_POLICY = "default-src 'none'; frame-ancestors 'none'; sandbox"
#: no policy: Swagger UI and ReDoc load their scripts from a CDN
DOCS = ("/docs", "/redoc", "/openapi.json")
COMMON_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]


class SecuritySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZHAOPIAN_", extra="ignore")

    cors_origins: str = ""

    @property
    def origins(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]


def secure(app: FastAPI, limiter: RateLimiter | None = None, settings: SecuritySettings | None = None) -> None:
    """Add the middleware (after the app's own, so around it): rate limits inside CORS, security headers
    outermost. BodyLimitMiddleware goes in first instead, innermost (see its docstring)."""
    settings = settings or SecuritySettings()
    app.add_middleware(RateLimitMiddleware, limiter=limiter or RateLimiter.from_settings())
    if settings.origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.origins, allow_credentials=False,
                           allow_methods=["GET", "HEAD", "POST", "PATCH", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "Range"],
                           expose_headers=["Retry-After", "Content-Range", "Accept-Ranges", "Content-Length",
                                           "Content-Disposition"],
                           max_age=600)
    app.add_middleware(SecurityHeadersMiddleware)


def policy_for(path: str) -> str | None:
    if path == "/v1" or path.startswith("/v1/"):
        return API_POLICY
    if path.startswith(DOCS):
        return None
    return UI_POLICY


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = policy_for(scope.get("path", ""))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                extra = [*COMMON_HEADERS, *([(b"content-security-policy", policy.encode())] if policy else [])]
                headers += [(name, value) for name, value in extra if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimitMiddleware:
    """A request body past ``limit`` bytes ends in 413 while it is read, whether or not it declared a
    Content-Length (a chunked upload would otherwise be spooled to disk whole before any check).

    It raises from ``receive`` into the route, where the app's exception handlers answer; so it must
    be the innermost middleware (inside Starlette's BaseHTTPMiddleware, whose task group would turn
    the error into an ExceptionGroup and a 500)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # raised where the route reads: the API's handler answers the JSON 413
                    raise HTTPException(413, f"request body too large (over {self.limit} bytes)")
            return message

        await self.app(scope, counted, send)
