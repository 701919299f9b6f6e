"""HTTP hardening: per-key rate limits, CORS off by default, security headers, no secret in any log."""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import COLOR_LIBRARY
from fastapi.testclient import TestClient
from media import BLUE, GREEN, RED, write_image, write_video
from test_http_api import assert_error, bearer

from zhaopian.api import http as http_module
from zhaopian.api.auth import create_key
from zhaopian.api.http import STATUS, create_app
from zhaopian.api.ratelimit import RateLimiter, RateLimitSettings
from zhaopian.api.security import API_POLICY, UI_POLICY
from zhaopian.api.service import Service
from zhaopian.api.settings import Settings
from zhaopian.api.web import WEB_DIR


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def library(service: Service, media_root: Path) -> dict[str, int]:
    """A small library: two media, by file name."""
    service.create_library("colours", COLOR_LIBRARY)
    files = [write_video(media_root / "a.mp4", [(RED, 2), (GREEN, 2)]), write_image(media_root / "b.png", BLUE)]
    results = service.index(files, library="colours")
    return {Path(r.path).name: r.media_id for r in results}


@pytest.fixture
def keys(service: Service) -> dict[str, str]:
    service.catalog.ensure_tenant(service.settings.tenant)
    service.catalog.ensure_tenant("other")
    return {"mine": create_key(service.catalog, service.settings.tenant).key,
            "admin": create_key(service.catalog, service.settings.tenant, admin=True).key,
            "other": create_key(service.catalog, "other").key}


# -- rate limits -----------------------------------------------------------------------------------
def test_token_bucket():
    clock = Clock()
    limiter = RateLimiter(rate=2, burst=3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)  # empty: the next token comes in 1/rate s
    assert limiter.take("b") == 0.0  # buckets are separate
    clock.now += 0.5
    assert limiter.take("a") == 0.0 and limiter.take("a") > 0
    clock.now += 100  # refills up to the burst, no further
    assert [limiter.take("a") for _ in range(4)][-1] > 0
    off = RateLimiter(rate=0, burst=1)
    assert not off.enabled and all(off.take("a") == 0.0 for _ in range(1000))


def test_buckets_are_bounded():
    limiter = RateLimiter(rate=1, burst=1, clock=Clock(), max_buckets=100)
    for i in range(10_000):  # e.g. made-up keys, each a bucket
        limiter.take(f"key:{i}")
    assert len(limiter._buckets) == 100


def test_rate_limit_settings(monkeypatch):
    assert (RateLimitSettings().rate_limit, RateLimitSettings().rate_burst) == (20.0, 40)
    monkeypatch.setenv("ZHAOPIAN_RATE_LIMIT", "0")
    assert not RateLimiter.from_settings().enabled
    monkeypatch.setenv("ZHAOPIAN_RATE_LIMIT", "5")
    monkeypatch.setenv("ZHAOPIAN_RATE_BURST", "7")
    assert (RateLimiter.from_settings().rate, RateLimiter.from_settings().burst) == (5.0, 7)
    assert STATUS["rate_limited"] == 429 and "rate_limited 429" in http_module.__doc__


def test_each_key_has_its_own_limit(service, library, keys):
    clock = Clock()
    with TestClient(create_app(service, rate_limiter=RateLimiter(rate=1, burst=3, clock=clock))) as client:
        mine, other = bearer(keys["mine"]), bearer(keys["other"])
        assert [client.get("/v1/libraries", headers=mine).status_code for _ in range(3)] == [200] * 3
        limited = client.get("/v1/libraries", headers=mine)
        error = assert_error(limited, 429, "rate_limited")
        assert limited.headers["retry-after"] == "1" and "per second" in error["message"]
        assert_error(client.post("/v1/libraries/colours/search", json={"text": "red"}, headers=mine),
                     429, "rate_limited")  # every /v1 route counts
        assert client.get("/v1/libraries", headers=other).status_code == 200  # another key: its own bucket
        for _ in range(10):
            assert client.get("/v1/health").status_code == 200  # health never counts
            assert client.get("/").status_code == 200  # nor the web UI
        clock.now += 1.0
        assert client.get("/v1/libraries", headers=mine).status_code == 200
        assert_error(client.get("/v1/libraries", headers=mine), 429, "rate_limited")

        # requests without a (valid) key share their address's bucket: 401 until it is empty, then 429
        statuses = [client.get("/v1/libraries", headers=bearer("zp_nothing")).status_code for _ in range(4)]
        assert statuses == [401, 401, 401, 429]


def test_signed_links_have_a_bucket_each(service, library, keys):
    clock = Clock()
    with TestClient(create_app(service, rate_limiter=RateLimiter(rate=1, burst=2, clock=clock))) as client:
        headers = bearer(keys["mine"])
        items = client.get("/v1/libraries/colours/media", headers=headers).json()["items"]
        first, second = (m["thumbnail_url"] for m in items)
        assert [client.get(first).status_code for _ in range(2)] == [200, 200]
        limited = client.get(first)
        assert_error(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1
        assert client.get(second).status_code == 200  # a page of thumbnails does not drain each other
        assert client.get("/v1/libraries", headers=headers).status_code == 200  # nor the key's bucket


def test_rate_limits_off(service, library, keys, monkeypatch):
    monkeypatch.setenv("ZHAOPIAN_RATE_LIMIT", "0")
    with TestClient(create_app(service)) as client:
        assert {client.get("/v1/libraries", headers=bearer(keys["mine"])).status_code for _ in range(60)} == {200}


def test_default_limit_applies(service, library, keys):
    limiter = RateLimiter.from_settings()  # 20/s, bursts of 40
    limiter.clock = Clock()  # a busy machine must not refill the bucket during the test
    with TestClient(create_app(service, rate_limiter=limiter)) as client:
        statuses = [client.get("/v1/me", headers=bearer(keys["mine"])).status_code for _ in range(41)]
    assert statuses == [200] * 40 + [429]


# -- CORS ------------------------------------------------------------------------------------------
def test_no_cors_by_default(service, library, keys):
    with TestClient(create_app(service)) as client:
        origin = {"Origin": "https://evil.example"}
        for response in (client.get("/v1/health", headers=origin),
                         client.get("/v1/libraries", headers={**origin, **bearer(keys["mine"])}),
                         client.options("/v1/libraries", headers={**origin, "Access-Control-Request-Method": "GET",
                                                                  "Access-Control-Request-Headers": "authorization"})):
            assert not [h for h in response.headers if h.lower().startswith("access-control-")], response.headers


def test_cors_for_the_listed_origins_only(service, library, keys, monkeypatch):
    monkeypatch.setenv("ZHAOPIAN_CORS_ORIGINS", "https://editor.example, https://tools.example/")
    with TestClient(create_app(service, rate_limiter=RateLimiter(rate=1, burst=1, clock=Clock()))) as client:
        allowed = client.get("/v1/libraries", headers={"Origin": "https://editor.example", **bearer(keys["mine"])})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://editor.example"
        assert "access-control-allow-credentials" not in allowed.headers
        preflight = client.options("/v1/libraries/colours/search", headers={
            "Origin": "https://tools.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://tools.example"
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        # an answer the browser must be able to read: the 429 with its Retry-After
        limited = client.get("/v1/libraries", headers={"Origin": "https://editor.example", **bearer(keys["mine"])})
        assert limited.status_code == 429 and limited.headers["access-control-allow-origin"] == "https://editor.example"
        assert "retry-after" in limited.headers["access-control-expose-headers"].lower()

        elsewhere = client.get("/v1/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in elsewhere.headers
        refused = client.options("/v1/libraries", headers={"Origin": "https://evil.example",
                                                           "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in refused.headers


# -- security headers ------------------------------------------------------------------------------
def test_security_headers(service, library, keys):
    with TestClient(create_app(service, max_upload_bytes=1024,
                               rate_limiter=RateLimiter(rate=1, burst=5, clock=Clock()))) as client:
        headers = bearer(keys["mine"])
        medium = client.get("/v1/libraries/colours/media", headers=headers).json()["items"][0]
        responses = {
            "ui": client.get("/"), "ui-script": client.get("/app.js"), "ui-missing": client.get("/nothing.html"),
            "health": client.get("/v1/health"), "json": client.get("/v1/libraries", headers=headers),
            "file": client.get(medium["stream_url"]), "thumbnail": client.get(medium["thumbnail_url"]),
            "401": client.get("/v1/libraries"), "404": client.get("/v1/nothing", headers=headers),
            "413": client.post("/v1/libraries/colours/media", headers=headers,
                               files={"file": ("a.png", b"\0" * 4096)}),
            "docs": client.get("/docs"),
        }
        responses["429"] = next(r for r in (client.get("/v1/me", headers=headers) for _ in range(10))
                                if r.status_code == 429)
    for name, response in responses.items():
        assert response.headers["x-content-type-options"] == "nosniff", name
        assert response.headers["referrer-policy"] == "no-referrer", name
    for name in ("ui", "ui-script", "ui-missing"):
        assert responses[name].headers["content-security-policy"] == UI_POLICY, name
    for name in ("health", "json", "file", "thumbnail", "401", "404", "413", "429"):
        assert responses[name].headers["content-security-policy"] == API_POLICY, name
    assert "sandbox" in API_POLICY and "content-security-policy" not in responses["docs"].headers
    assert "frame-ancestors 'none'" in UI_POLICY and "'unsafe-inline'" not in UI_POLICY


def test_the_ui_needs_no_inline_script_or_style():
    """What the strict policy forbids: inline <script>/<style>, style="" and on*="" attributes in the
    pages, and scripts that write style attributes or evaluate strings. (Setting ``element.style.x``
    from a module is allowed.)"""
    for page in WEB_DIR.glob("*.html"):
        html = page.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), page.name
        assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=", html), page.name
    for script in WEB_DIR.glob("*.js"):
        code = script.read_text()
        assert not re.search(r"setAttribute\(\s*['\"]style|\beval\(|new Function\(|cssText|insertRule|"
                             r"\.innerHTML\s*=\s*[^;]*style=", code), script.name


# -- no secret in any log --------------------------------------------------------------------------
class _EchoingLLM(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that refuses the key and repeats it, as real ones partly do."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = json.dumps({"error": {"message": f"Incorrect API key provided: {self.headers['authorization']}"}})
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def llm_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingLLM)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def _call(method: str, url: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, object]:
    """One request with urllib, which logs nothing (httpx logs each URL, signed tokens included)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={**(headers or {}), **({"Content-Type": "application/json"} if data else {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, raw, kind = response.status, response.read(), response.headers.get("content-type", "")
    except urllib.error.HTTPError as error:
        status, raw, kind = error.code, error.read(), error.headers.get("content-type", "")
    return status, json.loads(raw) if kind.startswith("application/json") else raw


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_no_secret_reaches_any_log(env, media_root, llm_url, monkeypatch, caplog):
    """A real server (uvicorn, its access log included) serves keys, signed links and searches that make
    the LLM rewriter fail with its key echoed back; no record at DEBUG holds any of these secrets."""
    import uvicorn

    llm_key = "sk-llm-secret-0123456789abcdef"
    monkeypatch.setenv("ZHAOPIAN_LLM_URL", llm_url)
    monkeypatch.setenv("ZHAOPIAN_LLM_MODEL", "tiny")
    monkeypatch.setenv("ZHAOPIAN_LLM_API_KEY", llm_key)
    caplog.set_level(logging.DEBUG)
    service = Service(Settings())
    try:
        service.create_library("colours", COLOR_LIBRARY)
        service.index([write_video(media_root / "a.mp4", [(RED, 2), (GREEN, 2)])], library="colours")
        service.catalog.ensure_tenant(service.settings.tenant)
        admin = create_key(service.catalog, service.settings.tenant, admin=True).key
        port = _free_port()
        # log_config=None: uvicorn's loggers propagate to the root, where caplog listens
        server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_config=None,
                                               log_level="debug", access_log=True))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        secrets = [admin, llm_key]
        base = f"http://127.0.0.1:{port}"
        made = _call("POST", f"{base}/v1/tenants/{service.settings.tenant}/keys", {}, bearer(admin))[1]
        user = made["key"]
        secrets.append(user)
        found = _call("POST", f"{base}/v1/libraries/colours/search", {"text": "red"}, bearer(user))[1]
        hit = found["results"][0]
        for url in (hit["stream_url"], hit["thumbnail_url"]):
            secrets.append(url.split("token=")[1].split("&")[0])
            assert _call("GET", base + url)[0] == 200
            assert _call("GET", base + url.replace("token=", "token=x"))[0] == 401
        assert _call("GET", f"{base}/v1/libraries", headers=bearer(user[:-3] + "abc"))[0] == 401
        assert _call("GET", f"{base}/v1/me", headers=bearer(user))[0] == 200
        server.should_exit = True
        thread.join(timeout=30)
    finally:
        service.close()
    texts = []
    for record in caplog.records:
        texts.append(record.getMessage())
        texts.append(repr(record.args))
        if record.exc_info:
            texts.append(logging.Formatter().formatException(record.exc_info))
    logged = "\n".join(texts)
    assert "GET /v1/libraries/colours/media/" in logged and "token=***" in logged  # the access log was seen
    assert "query rewrite: the LLM" in logged  # and the rewriter's failure
    for secret in secrets:
        assert secret not in logged, f"a secret in the logs: {secret[:6]}…"
        assert secret[-20:] not in logged, f"part of a secret in the logs: {secret[:6]}…"
