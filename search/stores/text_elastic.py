"""The Elasticsearch text index: one index per library on an Elasticsearch 8.x server.

Documents are the same as in the embedded backend (``text_tantivy.py``), analysed
in Python by ``text_analysis.py`` so both backends match alike:

* ``words``  — ``words(text)`` (jieba, search mode) joined by spaces, indexed with
  a whitespace tokenizer + ``lowercase`` + the Porter2 English stemmer
  (mentions ~ mentioned; the same stems as tantivy's ``en_stem`` and the highlighter);
* ``grams``  — ``grams(text)`` (CJK unigrams and bigrams), whitespace-analysed;
* ``text``   — the original text, stored and also indexed with Elasticsearch's
  built-in ``cjk`` analyzer. It only adds a small share of score to units that
  already match through ``words`` or ``grams``, never makes a unit match on its
  own, so both backends return the same units and rank them mostly alike.

A query is a bool query: its words (jieba precise mode) on ``words`` (boost 1)
and its bigrams on ``grams`` (boost 0.5), at least one of them required.
Phrases require all their bigrams (and their Latin words) and are then checked
exactly against the stored text in Python, fetching more candidates while
fewer than ``k`` pass. Filters on module, field and media are ``terms``
filters. Document ids are unit ids, so writing a unit again replaces it.

Crash safety. ``flush`` sends the queued writes with the bulk helper and
refreshes; Elasticsearch has no multi-document transactions, so a crash
during a flush can leave part of it written. That is enough here because every
write is idempotent (ids are unit ids; removal is by media), the core marks a
medium ready only after every store flushed, and on open a library removes
the units of media that never became ready. A flush that fails raises
:class:`StoreUnavailable` listing the refused items and drops its queue: the
media it carried are not marked ready and are cleaned up the same way.

The connection and the index are created lazily: constructing the index sends
nothing, the first write creates the index (mappings below), and searching or
counting an index that does not exist yet finds nothing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from elasticsearch import (
    ApiError,
    AuthenticationException,
    AuthorizationException,
    Elasticsearch,
    NotFoundError,
    TransportError,
    helpers,
)

from zhaopian.search.errors import ConfigError, StoreUnavailable

from .text import TextDoc, TextHit, TextIndex, TextIndexConfig, TextQuery
from .text_analysis import contains_phrase, grams, highlight, query_grams, query_words, words

URL_ENV = "ZHAOPIAN_ES_URL"
#: ranking weights: words, CJK bigrams, and Elasticsearch's own CJK analysis of the stored text
WORDS_BOOST = 1.0
GRAMS_BOOST = 0.5
CJK_BOOST = 0.2
#: the most hits Elasticsearch pages through (its default ``index.max_result_window``)
MAX_WINDOW = 10_000
#: media per page when listing the media of an index
MEDIA_PAGE = 10_000

SETTINGS_ANALYSIS = {
    # Porter2 (snowball English) as tantivy's ``en_stem`` and the highlighter: the same stems everywhere
    "filter": {"zhaopian_english": {"type": "stemmer", "language": "porter2"}},
    "analyzer": {
        "zhaopian_words": {"type": "custom", "tokenizer": "whitespace", "filter": ["lowercase", "zhaopian_english"]},
        "zhaopian_grams": {"type": "custom", "tokenizer": "whitespace"},
    }
}
MAPPINGS = {
    "dynamic": "strict",
    "_source": {"excludes": ["words", "grams"]},  # derived from ``text``; no need to keep them
    "properties": {
        "unit_id": {"type": "long"},
        "media_id": {"type": "long"},
        "module": {"type": "keyword"},
        "field": {"type": "keyword"},
        "lang": {"type": "keyword"},
        "start": {"type": "float"},
        "end": {"type": "float"},
        "text": {"type": "text", "analyzer": "cjk"},
        "words": {"type": "text", "analyzer": "zhaopian_words"},
        "grams": {"type": "text", "analyzer": "zhaopian_grams"},
        "data": {"type": "object", "enabled": False},
    },
}


def server_urls(configured: Sequence[str]) -> list[str]:
    """The configured URLs, else those in ``ZHAOPIAN_ES_URL`` (comma-separated)."""
    urls = [u.strip() for u in configured if u.strip()]
    if not urls:
        urls = [u.strip() for u in os.environ.get(URL_ENV, "").split(",") if u.strip()]
    if not urls:
        raise ConfigError(f"the elasticsearch backend needs a server: set its url in the library config "
                          f"or the {URL_ENV} environment variable (e.g. http://localhost:9200)")
    return urls


def connect(urls: Sequence[str], timeout: float) -> Elasticsearch:
    """A client that retries connection errors and timeouts on the next node (it connects on first request)."""
    return Elasticsearch(list(urls), request_timeout=timeout, max_retries=3, retry_on_timeout=True)


@contextmanager
def server_errors(urls: Sequence[str]) -> Iterator[None]:
    """Report an unreachable or refusing server as :class:`StoreUnavailable`, naming it."""
    try:
        yield
    except (TransportError, AuthenticationException, AuthorizationException) as exc:
        raise StoreUnavailable(f"Elasticsearch at {', '.join(urls)}: {exc}") from exc


def _failures(errors: list[dict[str, Any]], limit: int = 5) -> str:
    """``id: reason`` of the first refused bulk items."""
    parts = []
    for item in errors[:limit]:
        op, info = next(iter(item.items()))
        reason = info.get("error", info.get("result", "failed"))
        if isinstance(reason, dict):
            reason = f"{reason.get('type', '')}: {reason.get('reason', '')}"
        parts.append(f"{op} {info.get('_id')}: {reason}")
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more


class ElasticsearchTextIndex(TextIndex):
    """A library's text units in the Elasticsearch index ``index_name`` (tenant-scoped by the caller)."""

    def __init__(self, config: TextIndexConfig, index_name: str) -> None:
        self.config = config
        self.index_name = index_name
        self.urls = server_urls(config.url)
        self._client: Elasticsearch | None = None
        self._created = False
        self._lock = threading.Lock()
        #: queued writes in order: ("index", TextDoc) or ("remove", (media_ids, module))
        self._queue: list[tuple[str, Any]] = []

    # connection and index -------------------------------------------------------------------
    @property
    def client(self) -> Elasticsearch:
        if self._client is None:
            self._client = connect(self.urls, self.config.timeout)
        return self._client

    def _exists(self) -> bool:
        if not self._created:
            self._created = bool(self.client.indices.exists(index=self.index_name))
        return self._created

    def _create(self) -> None:
        if self._exists():
            return
        settings = {"number_of_shards": self.config.shards, "number_of_replicas": self.config.replicas,
                    "analysis": SETTINGS_ANALYSIS}
        try:
            self.client.indices.create(index=self.index_name, settings=settings, mappings=MAPPINGS)
        except ApiError as exc:  # another writer created it first
            if exc.error != "resource_already_exists_exception":
                raise
        self._created = True

    # writes --------------------------------------------------------------------------------
    def add(self, docs: Sequence[TextDoc]) -> None:
        with self._lock:
            self._queue.extend(("index", d) for d in docs)

    def remove(self, media_ids: Sequence[int], module: str | None = None) -> None:
        if media_ids:
            with self._lock:
                self._queue.append(("remove", ([int(m) for m in media_ids], module)))

    def _action(self, doc: TextDoc) -> dict[str, Any]:
        return {
            "_op_type": "index",
            "_index": self.index_name,
            "_id": str(doc.unit_id),
            "_source": {
                "unit_id": doc.unit_id, "media_id": doc.media_id, "module": doc.module, "field": doc.field,
                "lang": doc.lang, "start": doc.start, "end": doc.end, "text": doc.text,
                "words": " ".join(words(doc.text)), "grams": " ".join(grams(doc.text)),
                "data": doc.data,
            },
        }

    def _send(self, docs: list[TextDoc]) -> None:
        if not docs:
            return
        self._create()
        _, errors = helpers.bulk(self.client, (self._action(d) for d in docs), raise_on_error=False,
                                 max_retries=3, chunk_size=500)
        if errors:
            raise StoreUnavailable(f"Elasticsearch index {self.index_name} refused {len(errors)} of "
                                   f"{len(docs)} units: {_failures(errors)}")

    def _delete(self, media_ids: list[int], module: str | None) -> None:
        if not self._exists():
            return
        self.client.indices.refresh(index=self.index_name)  # delete-by-query sees only refreshed documents
        filters: list[dict[str, Any]] = [{"terms": {"media_id": media_ids}}]
        if module is not None:
            filters.append({"term": {"module": module}})
        result = self.client.delete_by_query(index=self.index_name, query={"bool": {"filter": filters}},
                                             refresh=True, conflicts="proceed")
        if result.get("failures"):
            raise StoreUnavailable(f"Elasticsearch index {self.index_name} could not remove the units of media "
                                   f"{media_ids}: {result['failures'][:3]}")

    def flush(self) -> None:
        """Send the queued writes in order (bulk between removals) and refresh; see the module docstring."""
        with self._lock:
            queue, self._queue = self._queue, []
        if not queue:
            return
        with server_errors(self.urls):
            pending: list[TextDoc] = []
            for op, item in queue:
                if op == "index":
                    pending.append(item)
                    continue
                self._send(pending)
                pending = []
                self._delete(*item)
            self._send(pending)
            if self._exists():
                self.client.indices.refresh(index=self.index_name)

    # search --------------------------------------------------------------------------------
    def _query(self, query: TextQuery) -> dict[str, Any] | None:
        """The bool query, or None when the query has nothing that can match."""
        ranking = []
        wanted = " ".join(dict.fromkeys(query_words(query.text)))
        if wanted:
            ranking.append({"match": {"words": {"query": wanted, "boost": WORDS_BOOST}}})
        bigrams = " ".join(dict.fromkeys(query_grams(query.text)))
        if bigrams:
            ranking.append({"match": {"grams": {"query": bigrams, "boost": GRAMS_BOOST}}})
        cjk = [{"match": {"text": {"query": query.text, "boost": CJK_BOOST}}}] if ranking else []

        phrases = [p for p in query.phrases if p.strip()]
        required: list[dict[str, Any]] = []
        for phrase in phrases:  # a unit containing the phrase has all its bigrams and ASCII words
            ascii_words = " ".join(w for w in words(phrase, query=True) if w.isascii())
            if ascii_words:
                required.append({"match": {"words": {"query": ascii_words, "operator": "and"}}})
            phrase_grams = " ".join(dict.fromkeys(query_grams(phrase)))
            if phrase_grams:
                required.append({"match": {"grams": {"query": phrase_grams, "operator": "and"}}})
        filters: list[dict[str, Any]] = []
        if query.modules is not None:
            filters.append({"terms": {"module": list(query.modules)}})
        if query.fields is not None:
            filters.append({"terms": {"field": list(query.fields)}})
        if query.media_ids is not None:
            filters.append({"terms": {"media_id": [int(m) for m in query.media_ids]}})

        if phrases:  # the phrases decide what matches (and score, as in the embedded index); the words only rank
            return {"bool": {"must": required, "should": ranking + cjk, "filter": filters}}
        if not ranking:
            return None
        return {"bool": {"must": [{"bool": {"should": ranking, "minimum_should_match": 1}}], "should": cjk,
                         "filter": filters}}

    def search(self, query: TextQuery, k: int) -> list[TextHit]:
        if k <= 0 or query.empty:
            return []
        es_query = self._query(query)
        if es_query is None:
            return []
        phrases = [p for p in query.phrases if p.strip()]
        # with phrases, fetch more than k: some candidates fail the exact check
        page = min(max(4 * k, 100), MAX_WINDOW) if phrases else min(k, MAX_WINDOW)
        hits: list[TextHit] = []
        offset = 0
        with server_errors(self.urls):
            while len(hits) < k and offset < MAX_WINDOW:
                size = min(page, MAX_WINDOW - offset)
                try:
                    result = self.client.search(index=self.index_name, query=es_query, from_=offset, size=size,
                                                track_total_hits=False)
                except NotFoundError:
                    return []  # nothing written yet
                batch = result["hits"]["hits"]
                for h in batch:
                    src = h["_source"]
                    if all(contains_phrase(src["text"], p) for p in phrases):
                        hits.append(self._hit(src, h["_score"] or 0.0, query))
                if len(batch) < size or not phrases:
                    break
                offset += size
        return hits[:k]

    @staticmethod
    def _hit(src: dict[str, Any], score: float, query: TextQuery) -> TextHit:
        return TextHit(unit_id=int(src["unit_id"]), media_id=int(src["media_id"]), module=src["module"],
                       start=float(src["start"]), end=float(src["end"]), score=float(score), text=src["text"],
                       field=src.get("field", "text"), lang=src.get("lang", ""), data=src.get("data") or {},
                       highlight=highlight(src["text"], query.text, query.phrases))

    # bookkeeping ---------------------------------------------------------------------------
    def count(self, module: str | None = None) -> int:
        query = {"term": {"module": module}} if module is not None else {"match_all": {}}
        with server_errors(self.urls):
            try:
                return int(self.client.count(index=self.index_name, query=query)["count"])
            except NotFoundError:
                return 0

    def media_ids(self) -> set[int]:
        """Every media id with units, a page of ids at a time (a terms aggregation in key order)."""
        found: set[int] = set()
        last: int | None = None
        with server_errors(self.urls):
            while True:
                query = {"range": {"media_id": {"gt": last}}} if last is not None else {"match_all": {}}
                aggs = {"media": {"terms": {"field": "media_id", "size": MEDIA_PAGE, "order": {"_key": "asc"}}}}
                try:
                    result = self.client.search(index=self.index_name, query=query, aggs=aggs, size=0)
                except NotFoundError:
                    return found
                keys = [int(b["key"]) for b in result["aggregations"]["media"]["buckets"]]
                found.update(keys)
                if len(keys) < MEDIA_PAGE:
                    return found
                last = max(keys)

    def drop(self) -> None:
        with self._lock:
            self._queue.clear()
        with server_errors(self.urls):
            self.client.options(ignore_status=404).indices.delete(index=self.index_name)
        self._created = False

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
