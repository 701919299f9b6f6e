"""The LLM query rewrite (search/rewrite_llm.py) against a local OpenAI-compatible test server."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from datetime import date, datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr

from zhaopian.search.errors import InvalidQuery
from zhaopian.search.rewrite import RewriteConfig, create_rewriter, parse_query
from zhaopian.search.rewrite_llm import ANSWER_SCHEMA, LLMRewriter, merge, parse_answer
from zhaopian.search.types import ParsedQuery, QueryFilters

TODAY = date(2026, 3, 15)
KEY = "sk-test-SECRET-4242"
EMPTY_FILTERS = QueryFilters().model_dump(mode="json")

#: (status, body, seconds to wait first) for one request
Reply = tuple[int, bytes, float]


def chat_reply(content: str, status: int = 200) -> Reply:
    return status, json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode(), 0.0


def answer(text: str = "", phrases=(), routes=(), **filters: Any) -> str:
    return json.dumps({"text": text, "phrases": list(phrases), "routes": list(routes),
                       "filters": {**EMPTY_FILTERS, **filters}}, ensure_ascii=False)


class FakeLLM(ThreadingHTTPServer):
    """An OpenAI-compatible endpoint: records each request and answers with ``self.reply(request)``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []
        self.reply: Callable[[dict[str, Any]], Reply] = lambda request: chat_reply(answer())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def handle_error(self, request, client_address) -> None:
        pass  # a client that gave up (timeout test) closes the socket under a sleeping reply


class _Handler(BaseHTTPRequestHandler):
    server: FakeLLM

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = {"path": self.path, "headers": dict(self.headers), "body": body}
        self.server.requests.append(request)
        status, payload, delay = self.server.reply(request)
        time.sleep(delay)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server():
    fake = FakeLLM()
    thread = threading.Thread(target=fake.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake
    fake.shutdown()
    fake.server_close()
    thread.join(timeout=5)


@pytest.fixture
def llm(server: FakeLLM):
    server.requests.clear()
    server.reply = lambda request: chat_reply(answer())
    config = RewriteConfig(llm_url=server.url, llm_model="test-model", llm_api_key=SecretStr(KEY), timeout=2.0)
    rewriter = create_rewriter(config)
    assert isinstance(rewriter, LLMRewriter)
    yield rewriter
    rewriter.close()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record, httpx's and httpcore's debug lines included; none may contain the key."""
    caplog.set_level(logging.DEBUG)
    yield caplog
    assert KEY not in caplog.text


# --- a good answer ----------------------------------------------------------------------------


def test_the_request_and_a_good_answer(llm: LLMRewriter, server: FakeLLM, logs):
    server.reply = lambda request: chat_reply(answer("主持人 新年快乐", routes=["asr"]))
    parsed = llm.rewrite("主持人在节目里祝大家新年快乐", today=TODAY)

    assert parsed == ParsedQuery(text="主持人 新年快乐", routes=["asr"], source="llm")
    [request] = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    body = request["body"]
    assert body["model"] == "test-model"
    assert body["temperature"] == 0
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == ANSWER_SCHEMA
    system, *examples, question = body["messages"]
    assert system["role"] == "system"
    assert "2026-03-15" in system["content"]
    for route in ("visual", "ocr", "asr", "labels", "meta"):
        assert f'"{route}"' in system["content"]
    assert [m["role"] for m in examples] == ["user", "assistant"] * (len(examples) // 2)
    for example in examples[1::2]:  # every worked example is itself a valid answer
        parse_answer(example["content"])
    assert question == {"role": "user", "content": "主持人在节目里祝大家新年快乐"}


def test_the_schema_covers_every_field_of_a_parsed_query():
    # people are the person: names the user typed: the rules read them, the LLM is not asked
    assert set(ANSWER_SCHEMA["properties"]) == set(ParsedQuery.model_fields) - {"source", "people"}
    assert set(ANSWER_SCHEMA["properties"]["filters"]["properties"]) == set(QueryFilters.model_fields)


def test_the_rules_keep_what_the_user_wrote_explicitly(llm: LLMRewriter, server: FakeLLM):
    # the LLM forgets the quoted phrase and the date, adds a phrase and a duration
    server.reply = lambda request: chat_reply(answer("张三", phrases=["谢谢"], routes=["asr"], max_duration=60))
    parsed = llm.rewrite("去年 张三 说 '欢迎光临' 的视频", today=TODAY)
    assert parsed.source == "llm"
    assert parsed.text == "张三"
    assert parsed.phrases == ["欢迎光临", "谢谢"]
    assert parsed.routes == ["asr"]
    assert parsed.filters.recorded_after == datetime(2025, 1, 1)
    assert parsed.filters.recorded_before == datetime(2026, 1, 1)
    assert parsed.filters.max_duration == 60


def test_an_llm_filter_contradicting_the_rules_is_dropped(llm: LLMRewriter, server: FakeLLM):
    server.reply = lambda request: chat_reply(answer("cat", max_duration=10))
    parsed = llm.rewrite("cat longer than 1 minute", today=TODAY)
    assert parsed.text == "cat"
    assert (parsed.filters.min_duration, parsed.filters.max_duration) == (60, None)


def test_rule_routes_are_kept_when_the_llm_gives_none_and_unknown_routes_are_dropped(llm, server):
    server.reply = lambda request: chat_reply(answer("你好", routes=["audio", "smell"]))
    parsed = llm.rewrite("字幕 你好", today=TODAY)
    assert parsed.routes == ["ocr"]


def test_dates_with_a_time_zone_become_local(llm: LLMRewriter, server: FakeLLM):
    server.reply = lambda request: chat_reply(answer("snow", recorded_after="2024-01-01T00:00:00+00:00"))
    parsed = llm.rewrite("snow at the start of 2024", today=TODAY)
    after = parsed.filters.recorded_after
    assert after.tzinfo is None
    assert after == datetime(2024, 1, 1, tzinfo=timezone.utc).astimezone().replace(tzinfo=None)


def test_a_fenced_json_answer_is_accepted(llm: LLMRewriter, server: FakeLLM):
    server.reply = lambda request: chat_reply("```json\n" + answer("海边 日落") + "\n```")
    assert llm.rewrite("海边的日落", today=TODAY).text == "海边 日落"


def test_a_server_without_json_schema_is_asked_for_a_json_object(llm: LLMRewriter, server: FakeLLM, logs):
    def reply(request):
        if request["body"]["response_format"]["type"] == "json_schema":
            return 400, b'{"error": {"message": "response_format json_schema is not supported"}}', 0.0
        return chat_reply(answer("dog"))

    server.reply = reply
    assert llm.rewrite("a dog", today=TODAY) == ParsedQuery(text="dog", source="llm")
    assert [r["body"]["response_format"]["type"] for r in server.requests] == ["json_schema", "json_object"]
    server.requests.clear()
    assert llm.rewrite("a cat", today=TODAY).source == "llm"
    assert [r["body"]["response_format"]["type"] for r in server.requests] == ["json_object"]


# --- failures fall back to the rules ----------------------------------------------------------------

FAILURES = {
    "invalid JSON": chat_reply("the query is about a dog"),
    "a JSON list": chat_reply("[1, 2]"),
    "an invalid field": chat_reply(answer("dog", min_duration=-5)),
    "phrases not a list": chat_reply(json.dumps({"text": "dog", "phrases": 3})),
    "no choices": (200, b'{"choices": []}', 0.0),
    "a body that is not JSON": (200, b"<html>oops</html>", 0.0),
    "HTTP 500": (500, b'{"error": "overloaded"}', 0.0),
    "HTTP 401": (401, b'{"error": "bad key"}', 0.0),
    "a timeout": chat_reply(answer("dog")),  # sent after the client gave up (below)
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_failures_fall_back_to_the_rules(case: str, server: FakeLLM, logs):
    status, body, _ = FAILURES[case]
    delay = 1.0 if case == "a timeout" else 0.0
    server.requests.clear()
    server.reply = lambda request: (status, body, delay)
    config = RewriteConfig(llm_url=server.url, llm_model="test-model", llm_api_key=SecretStr(KEY), timeout=0.3)
    rewriter = LLMRewriter(config)
    try:
        query = "字幕 'hello' only photos of a dog"
        parsed = rewriter.rewrite(query, today=TODAY)
    finally:
        rewriter.close()
    assert parsed == parse_query(query, today=TODAY)
    assert parsed.source == "rules"
    assert len(server.requests) == 1
    warnings = [r for r in logs.records if r.levelno == logging.WARNING and r.name.endswith("rewrite_llm")]
    assert len(warnings) == 1
    assert "using the rule-based parse" in warnings[0].getMessage()
    assert "127.0.0.1" in warnings[0].getMessage()


def test_an_unreachable_server_falls_back_to_the_rules(logs):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = RewriteConfig(llm_url=f"http://127.0.0.1:{port}/v1", llm_model="m", llm_api_key=SecretStr(KEY))
    rewriter = LLMRewriter(config)
    try:
        assert rewriter.rewrite("字幕 你好", today=TODAY) == parse_query("字幕 你好", today=TODAY)
    finally:
        rewriter.close()
    assert "ConnectError" in logs.text


def test_invalid_filters_are_reported_without_asking_the_llm(llm: LLMRewriter, server: FakeLLM):
    with pytest.raises(InvalidQuery, match="contradict"):
        llm.rewrite("longer than 10 min shorter than 1 min", today=TODAY)
    assert server.requests == []


def test_an_empty_query_is_not_sent(llm: LLMRewriter, server: FakeLLM):
    assert llm.rewrite("  \x00 ", today=TODAY) == ParsedQuery()
    assert server.requests == []


# --- cache ------------------------------------------------------------------------------------------


def test_answers_are_cached_per_query_and_day(llm: LLMRewriter, server: FakeLLM):
    server.reply = lambda request: chat_reply(answer("dog"))
    first = llm.rewrite("a dog", today=TODAY)
    first.phrases.append("changed by the caller")
    assert llm.rewrite("a  dog", today=TODAY) == ParsedQuery(text="dog", source="llm")  # same cleaned text
    assert len(server.requests) == 1
    llm.rewrite("a dog", today=date(2026, 3, 16))
    llm.rewrite("a cat", today=TODAY)
    assert len(server.requests) == 3


def test_failures_are_not_cached(llm: LLMRewriter, server: FakeLLM):
    server.reply = lambda request: (500, b"{}", 0.0)
    assert llm.rewrite("a dog", today=TODAY).source == "rules"
    server.reply = lambda request: chat_reply(answer("dog"))
    assert llm.rewrite("a dog", today=TODAY).source == "llm"
    assert len(server.requests) == 2


def test_the_cache_is_bounded(server: FakeLLM):
    server.requests.clear()
    server.reply = lambda request: chat_reply(answer("x"))
    rewriter = LLMRewriter(RewriteConfig(llm_url=server.url, llm_model="m", cache_size=2))
    try:
        for query in ["a", "b", "c", "a"]:  # "a" was evicted by "c"
            rewriter.rewrite(query, today=TODAY)
    finally:
        rewriter.close()
    assert len(server.requests) == 4
    assert "Authorization" not in server.requests[0]["headers"]  # no key configured, no header


# --- merge ------------------------------------------------------------------------------------------


def test_merge_rule():
    rules = ParsedQuery(text="张三 视频", phrases=["欢迎光临"], routes=["asr"],
                        filters=QueryFilters(kinds=["video"], tags=["a"]))
    llm = ParsedQuery(text="张三", phrases=["欢迎光临", "你好"], routes=[], source="llm",
                      filters=QueryFilters(kinds=["image"], min_duration=5, libraries=["news"]))
    merged = merge(rules, llm)
    assert merged == ParsedQuery(text="张三", phrases=["欢迎光临", "你好"], routes=["asr"], source="llm",
                                 filters=QueryFilters(kinds=["video"], tags=["a"], min_duration=5,
                                                      libraries=["news"]))


def test_merge_keeps_the_rules_people():
    """``person:`` names are the user's words: the LLM's parse cannot drop them."""
    merged = merge(ParsedQuery(text="海边", people=["张三"]), ParsedQuery(text="张三 海边", source="llm"))
    assert merged.people == ["张三"] and merged.text == "张三 海边"
