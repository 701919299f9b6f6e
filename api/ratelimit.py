"""Per-key rate limits: a token bucket per API key, in this process.

    ZHAOPIAN_RATE_LIMIT   requests per second each key may make on average; 0 turns limits off (20)
    ZHAOPIAN_RATE_BURST   requests a key may make at once after a pause (40)

Every ``/v1`` route but ``/v1/health`` counts. A request's bucket is its API key's public prefix
(``zp_xxxxxxxx``); a signed media link without a key has a bucket per link (per token, so a page of
thumbnails does not drain the others); anything else (no key, a malformed one) the client's address.
Over the limit the answer is 429 ``rate_limited`` with ``Retry-After`` in whole seconds. Buckets live in
memory: each server process counts on its own.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from urllib.parse import parse_qs

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .auth import key_prefix

#: buckets kept at most (the least recently used go first: a forgotten bucket is a full one)
MAX_BUCKETS = 10_000
#: paths that never count
EXEMPT = frozenset({"/v1/health"})


class RateLimitSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZHAOPIAN_", extra="ignore")

    rate_limit: float = Field(default=20.0, ge=0, allow_inf_nan=False)
    rate_burst: int = Field(default=40, ge=1)


class RateLimiter:
    """Token buckets by key: each holds up to ``burst`` tokens, refilled at ``rate`` per second;
    a request takes one. ``rate=0`` lets everything through."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 max_buckets: int = MAX_BUCKETS) -> None:
        self.rate, self.burst, self.clock, self.max_buckets = rate, burst, clock, max_buckets
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, when)
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: RateLimitSettings | None = None) -> RateLimiter:
        settings = settings or RateLimitSettings()
        return cls(settings.rate_limit, settings.rate_burst)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str) -> float:
        """Take a token from ``key``'s bucket: 0.0 if there was one, else the seconds until there is."""
        if not self.enabled:
            return 0.0
        with self._lock:
            now = self.clock()
            tokens, then = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            self._buckets[key] = (tokens - 1 if tokens >= 1 else tokens, now)
            while len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
            return wait


def bucket_key(scope: Scope) -> str:
    """Whose bucket a request draws from (see the module docstring)."""
    authorization = Headers(scope=scope).get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and (prefix := key_prefix(credentials.strip())):
        return f"key:{prefix}"
    if not authorization:
        token = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
        if token:
            return f"link:{token[-64:]}"  # ends with the link's signature
    client = scope.get("client")
    return f"addr:{client[0] if client else '-'}"


class RateLimitMiddleware:
    """ASGI middleware: ``/v1`` requests over their bucket's limit get 429 ``rate_limited``."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app, self.limiter = app, limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not self.limiter.enabled or not (path == "/v1" or path.startswith("/v1/")) or path in EXEMPT:
            await self.app(scope, receive, send)
            return
        wait = self.limiter.take(bucket_key(scope))
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        retry = max(1, math.ceil(wait))
        body = {"error": {"code": "rate_limited",
                          "message": f"too many requests: at most {self.limiter.rate:g} per second "
                                     f"(bursts of {self.limiter.burst}); retry in {retry} s"}}
        await JSONResponse(body, status_code=429, headers={"Retry-After": str(retry)})(scope, receive, send)
