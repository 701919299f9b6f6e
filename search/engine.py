"""Search: parse the query -> filters -> per module rewrite -> recall -> aggregate -> fuse.

1. The text is cleaned (:func:`validate`) and parsed by the library's rewriter
   (search/rewrite.py: rules, or an LLM) into free text, exact phrases, the
   routes its cues steer to (说 -> speech, 字幕 -> on-screen text) and filters.
2. Filters (kind, duration, recording date, tags) become the set of media the
   query may return, decided on the catalog before any route runs.
3. Every enabled module the cues allow rewrites the query into its own form
   (or declines), recalls from its store and aggregates its hits into segments.
4. Fusion merges the routes' segments (search/fusion.py).
5. The library's reranker, if it has one, re-scores the first fused segments within its
   time budget (search/rerank.py); ``query.options["rerank"] = False`` skips it.

A query with filters but nothing to match lists the media that pass them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .errors import InvalidQuery
from .fusion import fuse
from .library import Library
from .rerank import rerank
from .rewrite import clean_text
from .types import ParsedQuery, Query, Segment

Rewrite = Callable[[str], ParsedQuery]

MAX_QUERY_CHARS = 1000
MAX_TOP_K = 1000


def validate(query: Query) -> Query:
    text = clean_text(query.text)
    if text is not None and len(text) > MAX_QUERY_CHARS:
        raise InvalidQuery(f"query too long ({len(text)} characters, limit {MAX_QUERY_CHARS})")
    if text is None and query.image is None:
        raise InvalidQuery("empty query: give a text or an image")
    if not 1 <= query.top_k <= MAX_TOP_K:
        raise InvalidQuery(f"top-k must be between 1 and {MAX_TOP_K}")
    return Query(text=text, image=query.image, top_k=query.top_k, options=query.options)


@dataclass
class SearchReport:
    segments: list[Segment]
    timings_ms: dict[str, float] = field(default_factory=dict)
    parsed: ParsedQuery | None = None
    #: modules that ran, and remarks for the user (a cue for a route this library does not have, ...)
    routes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _default_rewrite(text: str) -> ParsedQuery:
    from .rewrite import parse_query

    return parse_query(text)


def search(library: Library, query: Query, rewrite: Rewrite | None = None,
           only: list[str] | None = None) -> SearchReport:
    """Run ``query`` on ``library``; ``only`` limits the routes (modules) used, e.g. to evaluate one alone."""
    query = validate(query)
    timings: dict[str, float] = {}
    notes: list[str] = []
    t0 = time.perf_counter()
    parsed = (rewrite or _default_rewrite)(query.text) if query.text else ParsedQuery()
    query.parsed = parsed
    if not parsed.filters.empty:
        query.media_ids = frozenset(library.media.matching(parsed.filters))
    timings["rewrite"] = (time.perf_counter() - t0) * 1e3
    if not parsed.search_text and not parsed.people and query.image is None:
        if parsed.filters.empty:
            raise InvalidQuery("nothing to search for: the query has only cues or punctuation; "
                               "add what should be seen, said or written")
        return SearchReport(_list_media(library, query), timings, parsed, [], notes)

    modules = library.modules
    if only is not None:
        unknown = sorted(set(only) - set(modules))
        if unknown:
            raise InvalidQuery(f"this library has no route {', '.join(unknown)}; it has {', '.join(modules)}")
        modules = {n: m for n, m in modules.items() if n in only}
    if parsed.routes:
        steered = {n: m for n, m in modules.items() if n in parsed.routes}
        if steered:
            modules = steered
        else:
            notes.append(f"the query asks for {', '.join(parsed.routes)}, which this library does not index; "
                         f"searched everything instead")
    if parsed.people and "faces" not in library.modules:
        notes.append(f"person:{','.join(parsed.people)} is searched by the faces module, which this library "
                     f"does not have (create one with --modules visual,faces)")
    # routes run side by side: their stores (FAISS, tantivy, SQLite) and encoders release the GIL
    k = max(library.config.recall_k, query.top_k)
    if len(modules) > 1:
        futures = {name: _ROUTE_POOL.submit(_route, module, query, k) for name, module in modules.items()}
        outcomes = {name: future.result() for name, future in futures.items()}
    else:
        outcomes = {name: _route(module, query, k) for name, module in modules.items()}
    routes: dict[str, list[Segment]] = {}
    for name, (segments, spent) in outcomes.items():
        if segments is not None:
            routes[name] = segments
            timings.update({f"{name}.{step}": ms for step, ms in spent.items()})
    notes += [n for n in dict.fromkeys(query.notes) if n not in notes]
    t0 = time.perf_counter()
    fused = fuse(routes, library.config.fusion)
    timings["fuse"] = (time.perf_counter() - t0) * 1e3
    if library.config.rerank.enabled and query.options.get("rerank", True):
        t0 = time.perf_counter()
        fused = rerank(library, query, fused, notes)
        timings["rerank"] = (time.perf_counter() - t0) * 1e3
    return SearchReport(fused[: query.top_k], timings, parsed, list(routes), notes)


#: threads that run the routes of a query side by side (shared by all queries of the process)
_ROUTE_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="route")


def _route(module, query: Query, k: int) -> tuple[list[Segment] | None, dict[str, float]]:
    """One route: the module's rewrite, recall and aggregate, with the milliseconds of each."""
    t0 = time.perf_counter()
    module_query = module.rewrite(query)
    if module_query is None:
        return None, {}
    t1 = time.perf_counter()
    hits = module.recall(module_query, k)
    t2 = time.perf_counter()
    segments = module.aggregate(hits, module_query)
    t3 = time.perf_counter()
    return segments, {"rewrite": (t1 - t0) * 1e3, "recall": (t2 - t1) * 1e3, "aggregate": (t3 - t2) * 1e3}


def _list_media(library: Library, query: Query) -> list[Segment]:
    """Media passing the filters, most recently recorded first, as whole-medium results."""
    records = [library.media.record(i) for i in sorted(query.media_ids or ())]
    records.sort(key=lambda r: -r.recorded)
    return [Segment(media_id=r.id, start=0.0, end=r.duration, score=0.0, thumbnail_time=0.0, whole_medium=True)
            for r in records[: query.top_k]]
