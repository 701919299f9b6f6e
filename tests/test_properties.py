"""Property-based tests (hypothesis): the query parser, the API's input models and the HTTP routes
take any input without breaking.

* ``parse_query`` / ``RuleRewriter`` on any unicode text: a ParsedQuery or InvalidQuery, nothing else;
  routes from the known set; filters that can hold (ranges ordered); ``clean_text`` idempotent.
* The request models validate or raise pydantic's ValidationError, for any JSON value or bytes.
* Every route with a JSON body answers any JSON with 2xx or a documented 4xx code (never a 500).
"""

from __future__ import annotations

import json
from datetime import date

import pytest
from conftest import COLOR_LIBRARY
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from media import BLUE, RED, write_video
from pydantic import ValidationError

from zhaopian.api.auth import create_key
from zhaopian.api.http import (
    STATUS,
    LibraryCreate,
    LibraryOptions,
    MediumPatch,
    RegisterPath,
    SearchRequest,
    create_app,
)
from zhaopian.api.ratelimit import RateLimiter
from zhaopian.api.service import Service
from zhaopian.api.settings import Settings
from zhaopian.search.errors import InvalidQuery
from zhaopian.search.rewrite import ROUTES, RuleRewriter, clean_text, parse_query
from zhaopian.search.types import ParsedQuery

# -- strategies ------------------------------------------------------------------------------------
#: words the parser acts on, so that random text often holds filters, cues and quotes
PARSER_WORDS = [
    "说", "字幕", "文件名", "标题", "says", "caption", "titled", "text on screen", "2023年", "2023年以后", "去年",
    "最近7天", "since 2021", "before May 2020", "last month", "past 3 weeks", "短于30秒", "超过5分钟",
    "shorter than 2 min", "longer than 10 s", "type:video", "type:image", "只看图片", "videos only", "#tag",
    "tag:a,b", "标签:x", "library:films", "person:李雷", '"', "“", "」", "《", "'", ":", "：", "#", "年", "月",
    "日", "13月", "2月30日", "0", "1900", "2099", "半", "两", "十五", "一百零五", "\x00", "\u200b", "\u202e",
    "\ufdfa", "\ud800", "說過", "時長超過5分鐘", "🐱",
]
parser_text = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(st.sampled_from(PARSER_WORDS), st.text(max_size=8)), max_size=25).map(" ".join),
    st.lists(st.one_of(st.sampled_from(PARSER_WORDS), st.text(max_size=3)), max_size=25).map("".join),
)

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                         st.text(max_size=30))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)), max_leaves=20)

MODELS = [SearchRequest, LibraryCreate, MediumPatch, RegisterPath, LibraryOptions]


def model_inputs(model) -> st.SearchStrategy:
    """Objects shaped like the model: its own field names (nested ones too) with any JSON values."""
    fields = list(model.model_fields)
    nested = {"config": st.dictionaries(st.sampled_from(list(LibraryOptions.model_fields)), json_values, max_size=6),
              "rerank": st.one_of(st.text(max_size=20), st.sampled_from(["builtin", "vlm:x", "endpoint:m@u", "nope:x"]),
                                  st.fixed_dictionaries({"backend": st.one_of(st.sampled_from(
                                      ["none", "builtin", "vlm", "endpoint", "nope", "a.b:C"]), st.text(max_size=8))},
                                      optional={"top_n": st.integers(-5, 600), "options": json_values,
                                                "budget_ms": json_scalars, "cache_size": json_scalars}))}
    value = st.deferred(lambda: json_values)
    keys = st.one_of(st.sampled_from(fields), st.text(max_size=8))
    shaped = st.dictionaries(keys, value, max_size=len(fields) + 1)
    with_nested = st.fixed_dictionaries({}, optional={f: nested.get(f, json_values) for f in fields})
    return st.one_of(json_values, shaped, with_nested)


# -- the query parser ------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(text=parser_text, today=st.dates(min_value=date(1901, 1, 1), max_value=date(2098, 12, 31)))
def test_parser_takes_any_text(text, today):
    try:
        parsed = parse_query(text, today=today)
    except InvalidQuery as exc:
        assert exc.code == "query_invalid" and exc.message
        return
    assert isinstance(parsed, ParsedQuery)
    assert set(parsed.routes) <= set(ROUTES) and len(parsed.routes) == len(set(parsed.routes))
    filters = parsed.filters
    if filters.recorded_after is not None and filters.recorded_before is not None:
        assert filters.recorded_after < filters.recorded_before
    if filters.min_duration is not None and filters.max_duration is not None:
        assert 0 <= filters.min_duration <= filters.max_duration
    assert set(filters.kinds) <= {"video", "image"}
    assert all(tag.strip() for tag in filters.tags) and all(p.strip() for p in parsed.phrases)
    assert parsed.text == parsed.text.strip() and "\x00" not in parsed.text
    json.dumps(parsed.model_dump(mode="json"))  # answerable as JSON (no lone surrogates)
    assert RuleRewriter().rewrite(text, today=today) == parsed


@settings(max_examples=200, deadline=None)
@given(text=st.one_of(st.text(), parser_text))
def test_clean_text_is_idempotent(text):
    once = clean_text(text)
    assert clean_text(once) == once
    if once is not None:
        assert once and once == once.strip() and "  " not in once
        assert not any(ch in once for ch in "\x00\n\t\r\x1b")


# -- the request models ----------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_models_validate_or_raise_validation_error(model, data):
    value = data.draw(model_inputs(model))
    try:
        model.model_validate(value)
    except ValidationError:
        pass
    try:
        raw = json.dumps(value, allow_nan=True).encode()
    except (ValueError, UnicodeEncodeError):
        return
    try:
        model.model_validate_json(raw)
    except ValidationError:
        pass


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@settings(max_examples=40, deadline=None)
@given(raw=st.binary(max_size=200))
def test_models_take_any_bytes(model, raw):
    try:
        model.model_validate_json(raw)
    except ValidationError:
        pass


# -- the HTTP routes -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("properties")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZHAOPIAN_DATA_DIR", str(root / "data"))
        mp.setenv("ZHAOPIAN_MEDIA_ROOT", str(root / "media"))
        svc = Service(Settings())
        svc.create_library("colours", COLOR_LIBRARY)
        [result] = svc.index([write_video(root / "media" / "a.mp4", [(RED, 2), (BLUE, 2)])], library="colours")
        svc.catalog.ensure_tenant(svc.settings.tenant)
        key = create_key(svc.catalog, svc.settings.tenant, admin=True).key
        with TestClient(create_app(svc, max_upload_bytes=1 << 20, rate_limiter=RateLimiter(0, 1)),
                        raise_server_exceptions=False) as client:
            yield client, {"Authorization": f"Bearer {key}"}, result.media_id
        svc.close()


def json_body_routes(client: TestClient) -> list[tuple[str, str]]:
    """Every route whose body may be JSON, from the OpenAPI schema (a new one is covered by itself)."""
    routes = []
    for path, methods in client.app.openapi()["paths"].items():
        for method, operation in methods.items():
            if "application/json" in operation.get("requestBody", {}).get("content", {}):
                routes.append((method.upper(), path))
    return routes


def test_json_body_routes_are_found(api):
    client, _, _ = api
    found = json_body_routes(client)
    assert ("POST", "/v1/libraries/{name}/search") in found and ("PATCH", "/v1/libraries/{name}/media/{media_id}") \
        in found and ("POST", "/v1/libraries/{name}/media") in found and len(found) >= 6


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_routes_answer_any_json(api, data):
    client, headers, media_id = api
    method, path = data.draw(st.sampled_from(json_body_routes(client)))
    body = data.draw(st.one_of(json_values, model_inputs(SearchRequest), model_inputs(LibraryCreate),
                               model_inputs(MediumPatch), model_inputs(RegisterPath)))
    try:
        content = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
    except ValueError:
        assume(False)
    url = path.replace("{name}", "colours").replace("{media_id}", str(media_id)).replace("{tenant}", "default")
    response = client.request(method, url, content=content, headers={**headers, "Content-Type": "application/json"})
    assert "Traceback" not in response.text
    if response.status_code >= 300:
        error = response.json()["error"]
        assert error["code"] != "internal" and STATUS.get(error["code"]) == response.status_code, \
            (method, url, content[:200], response.status_code, response.text[:300])
        assert 400 <= response.status_code < 500, (method, url, content[:200], response.text[:300])
