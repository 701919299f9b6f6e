"""Query rewrite by an LLM behind any OpenAI-compatible chat endpoint.

:class:`LLMRewriter` sends ``POST {llm_url}/chat/completions`` with the model,
temperature 0, a system prompt that explains the fields of :class:`ParsedQuery`
(the routes, the filters, today's date), three worked examples and the query.
It asks for ``response_format`` ``{"type": "json_schema", ...}``; a server that
refuses it (HTTP 400/422) is asked again with ``{"type": "json_object"}`` and
then always so. The answer's message content must be one JSON object (a
```` ```json ```` fence around it is accepted); it is validated into a
ParsedQuery with ``source="llm"``.

The rule-based parse (:func:`parse_query`) runs first, always: its
:class:`InvalidQuery` (contradictory filters, ``type:audio``) is raised as is,
and it is the answer whenever the LLM fails — timeout, connection or HTTP
error, content that is not JSON or not a valid ParsedQuery. Each failure is
logged as one warning naming the host and the reason; the API key is sent only
in the ``Authorization`` header and never logged.

Merging the two parses, field by field:

===========  =======================================================================
field        result
===========  =======================================================================
text         the LLM's (it understands what the rules only trim)
routes       the LLM's known route names; the rules' when the LLM gives none
phrases      the rules' (what the user quoted), then the LLM's other ones
filters      for each field, the rules' value when the rules found one, else the
             LLM's; when the mix contradicts itself (minimum above maximum, start
             not before end), the rules' filters alone
people       the rules' (``person:`` names the user typed)
===========  =======================================================================

Successful answers are cached per (query text, day) in a small LRU map, so a
repeated query costs no request; failures are not cached.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections import OrderedDict
from datetime import date, datetime
from typing import Any

import httpx
from pydantic import ValidationError

from .errors import ConfigError
from .rewrite import ROUTES, RewriteConfig, Rewriter, clean_text, parse_query
from .types import ParsedQuery, QueryFilters

__all__ = ["ANSWER_SCHEMA", "LLMRewriter", "merge", "messages", "parse_answer"]

log = logging.getLogger(__name__)

_NULLABLE_NUMBER = {"type": ["number", "null"]}
_NULLABLE_DATE = {"type": ["string", "null"], "description": "ISO 8601 date-time, local time"}
_STRINGS = {"type": "array", "items": {"type": "string"}}

#: what the LLM must answer: ParsedQuery without ``source``, every field required (strict mode)
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["text", "phrases", "routes", "filters"],
    "properties": {
        "text": {"type": "string"},
        "phrases": _STRINGS,
        "routes": {"type": "array", "items": {"type": "string", "enum": list(ROUTES)}},
        "filters": {
            "type": "object",
            "additionalProperties": False,
            "required": ["kinds", "min_duration", "max_duration", "recorded_after", "recorded_before",
                         "tags", "libraries"],
            "properties": {
                "kinds": {"type": "array", "items": {"type": "string", "enum": ["video", "image"]}},
                "min_duration": _NULLABLE_NUMBER,
                "max_duration": _NULLABLE_NUMBER,
                "recorded_after": _NULLABLE_DATE,
                "recorded_before": _NULLABLE_DATE,
                "tags": _STRINGS,
                "libraries": _STRINGS,
            },
        },
    },
}
JSON_SCHEMA_FORMAT = {"type": "json_schema",
                      "json_schema": {"name": "parsed_query", "strict": True, "schema": ANSWER_SCHEMA}}
JSON_OBJECT_FORMAT = {"type": "json_object"}

SYSTEM_PROMPT = """\
You rewrite search queries for a video library used by video editors. A query, in Chinese or \
English, describes video segments or images someone remembers. Answer with one JSON object and \
nothing else:
{{"text": "...", "phrases": [...], "routes": [...], "filters": {{...}}}}

text: what to look for, for semantic and keyword matching, in the query's own language, without \
the words that became routes, phrases or filters. May be empty.
phrases: text the user put in quotes, which must appear verbatim (on screen, in speech or in the \
metadata), without the quote marks. Never invent phrases.
routes: the search modules to run; [] runs all of them.
  "visual": what is seen (people, objects, scenes, actions, colours);
  "ocr": text shown on screen (subtitles, captions, signs, title cards);
  "asr": words spoken in the audio (dialogue, narration);
  "labels": objects detected by name;
  "meta": the medium's title, description, tags and file name.
  Set routes only when the query says where the words are: 说/says/mentions -> asr, \
字幕/写着/caption/on-screen text -> ocr, 文件名/标题是/file name/titled -> meta.
filters: only what the query states explicitly; otherwise [] or null.
  kinds: ["video"] or ["image"] only for an explicit restriction (只看视频, images only, \
type:image). A word such as 视频 or photo that describes the content is not a filter.
  min_duration, max_duration: seconds, inclusive.
  recorded_after (inclusive), recorded_before (exclusive): when the medium was recorded, as \
"YYYY-MM-DDT00:00:00". Today is {today} ({weekday}). Example: 去年 / last year is \
recorded_after "{last_year}-01-01T00:00:00", recorded_before "{this_year}-01-01T00:00:00".
  tags: only tags written as #tag, tag:x or 标签:x.
  libraries: only libraries written as library:name or 库:name."""

#: worked examples: the query and either the rules' answer (None) or the expected one
EXAMPLES: list[tuple[str, dict[str, Any] | None]] = [
    ("去年 张三 说 '欢迎光临' 的视频 shorter than 1 min", None),
    ("海边日落 只看图片 2023年以后", None),
    ("clip where the narrator explains photosynthesis",
     {"text": "photosynthesis", "phrases": [], "routes": ["asr"],
      "filters": QueryFilters().model_dump(mode="json")}),
]


@functools.lru_cache(maxsize=4)
def _preamble(today: date) -> tuple[dict[str, str], ...]:
    """The system prompt and the worked examples for one day (the examples' dates depend on it)."""
    system = SYSTEM_PROMPT.format(today=today.isoformat(), weekday=today.strftime("%A"),
                                  last_year=today.year - 1, this_year=today.year)
    chat = [{"role": "system", "content": system}]
    for query, answer in EXAMPLES:
        if answer is None:
            answer = parse_query(query, today=today).model_dump(mode="json", exclude={"source"})
        chat += [{"role": "user", "content": query},
                 {"role": "assistant", "content": json.dumps(answer, ensure_ascii=False)}]
    return tuple(chat)


def messages(text: str, today: date) -> list[dict[str, str]]:
    """The chat sent for one query: system prompt, the worked examples, the query."""
    return [dict(m) for m in _preamble(today)] + [{"role": "user", "content": text}]


def _naive(value: Any) -> Any:
    """A datetime with a time zone as local time without one (the rules' datetimes are naive)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone().replace(tzinfo=None)
    return value


def parse_answer(content: str) -> ParsedQuery:
    """The ParsedQuery in an LLM's message content; ValueError when there is none."""
    content = content.strip()
    if content.startswith("```"):  # ```json ... ```
        content = content.split("\n", 1)[1] if "\n" in content else ""
        content = content.rsplit("```", 1)[0]
    data = json.loads(content)
    if not isinstance(data, dict):
        raise ValueError("the answer is not a JSON object")
    raw_filters = data.get("filters") or {}
    if not isinstance(raw_filters, dict):
        raise ValueError("filters is not a JSON object")
    filters = QueryFilters.model_validate(
        {k: v for k, v in raw_filters.items() if k in QueryFilters.model_fields and v is not None})
    filters = filters.model_copy(update={"recorded_after": _naive(filters.recorded_after),
                                         "recorded_before": _naive(filters.recorded_before)})
    routes = data.get("routes") or []
    if not isinstance(routes, list):
        raise ValueError("routes is not a list")
    return ParsedQuery.model_validate({
        "text": clean_text(data.get("text") or "") or "",
        "phrases": data.get("phrases") or [],
        "routes": [r for r in ROUTES if r in routes],
        "filters": filters,
        "source": "llm",
    })


def _consistent(filters: QueryFilters) -> bool:
    low, high = filters.min_duration, filters.max_duration
    after, before = filters.recorded_after, filters.recorded_before
    return (low is None or high is None or low <= high) and (after is None or before is None or after < before)


def merge(rules: ParsedQuery, llm: ParsedQuery) -> ParsedQuery:
    """The LLM's text and routes, the rules' explicit phrases and filters (see the module docstring)."""
    phrases = list(rules.phrases)
    phrases += [p for p in llm.phrases if p.strip() and p not in phrases]
    fields = {}
    for name in QueryFilters.model_fields:
        ours = getattr(rules.filters, name)
        fields[name] = ours if ours not in (None, []) else getattr(llm.filters, name)
    filters = QueryFilters(**fields)
    if not _consistent(filters):
        filters = rules.filters
    return ParsedQuery(text=llm.text, phrases=phrases, routes=llm.routes or rules.routes, filters=filters,
                       people=rules.people, source="llm")


class _LRU:
    """A small thread-safe least-recently-used map."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Any, ParsedQuery] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> ParsedQuery | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Any, value: ParsedQuery) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


def _reason(exc: Exception) -> str:
    """A short, key-free account of a failure for the log."""
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within the timeout ({type(exc).__name__})"
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, httpx.HTTPError):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        return f"invalid answer: {'.'.join(map(str, first['loc']))}: {first['msg']}"
    return f"invalid answer: {str(exc)[:200]}"


class LLMRewriter(Rewriter):
    """Rewrites with an LLM, falls back to the rules; ``transport`` is for tests (httpx's)."""

    def __init__(self, config: RewriteConfig, *, transport: httpx.BaseTransport | None = None) -> None:
        if not config.llm_url or not config.llm_model:
            raise ConfigError("the LLM rewriter needs llm_url and llm_model")
        self.config = config
        self.url = config.llm_url.rstrip("/") + "/chat/completions"
        self.host = httpx.URL(self.url).host
        headers = {}
        if config.llm_api_key is not None:
            headers["Authorization"] = f"Bearer {config.llm_api_key.get_secret_value()}"
        self._client = httpx.Client(timeout=config.timeout, headers=headers, transport=transport)
        self._cache = _LRU(config.cache_size)
        self._json_schema = True  # False once the server refused response_format json_schema

    def __repr__(self) -> str:
        return f"LLMRewriter(url={self.url!r}, model={self.config.llm_model!r})"

    def rewrite(self, text: str, *, today: date | None = None) -> ParsedQuery:
        today = today or date.today()
        rules = parse_query(text, today=today)
        query = clean_text(text) or ""
        if not query:
            return rules
        key = (query, today)
        cached = self._cache.get(key)
        if cached is not None:
            return cached.model_copy(deep=True)
        try:
            answer = self._ask(query, today)
        except (httpx.HTTPError, ValueError) as exc:  # ValueError: bad JSON, bad shape, ValidationError
            log.warning("query rewrite: the LLM at %s failed (%s); using the rule-based parse",
                        self.host, _reason(exc))
            return rules
        merged = merge(rules, answer)
        self._cache.put(key, merged)
        return merged.model_copy(deep=True)

    def _post(self, text: str, today: date, response_format: dict[str, Any]) -> httpx.Response:
        body = {"model": self.config.llm_model, "temperature": 0, "messages": messages(text, today),
                "response_format": response_format}
        return self._client.post(self.url, json=body)

    def _ask(self, text: str, today: date) -> ParsedQuery:
        if self._json_schema:
            response = self._post(text, today, JSON_SCHEMA_FORMAT)
            if response.status_code in (400, 422):  # a server without structured outputs
                retry = self._post(text, today, JSON_OBJECT_FORMAT)
                if retry.is_success:
                    self._json_schema = False
                    log.info("query rewrite: %s refused a JSON schema; asking for a JSON object from now on",
                             self.host)
                response = retry
        else:
            response = self._post(text, today, JSON_OBJECT_FORMAT)
        response.raise_for_status()
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"no message content in the response ({type(exc).__name__})") from None
        if not isinstance(content, str):
            raise ValueError("the message content is not text")
        return parse_answer(content)

    def close(self) -> None:
        self._client.close()
