"""Search: rewrite the query per module -> recall -> aggregate -> fuse."""

from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import dataclass, field

from .errors import InvalidQuery
from .fusion import fuse
from .library import Library
from .types import Query, Segment

MAX_QUERY_CHARS = 1000
MAX_TOP_K = 1000


def clean_text(text: str | None) -> str | None:
    """Normalise a text query: NFKC, control characters dropped, whitespace collapsed."""
    if text is None:
        return None
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    text = re.sub(r"\s+", " ", text).strip()
    return text or None


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


def search(library: Library, query: Query) -> SearchReport:
    query = validate(query)
    timings: dict[str, float] = {}
    routes: dict[str, list[Segment]] = {}
    for name, module in library.modules.items():
        t0 = time.perf_counter()
        module_query = module.rewrite(query)
        if module_query is None:
            continue
        t1 = time.perf_counter()
        hits = module.recall(module_query, max(library.config.recall_k, query.top_k))
        t2 = time.perf_counter()
        routes[name] = module.aggregate(hits, module_query)
        t3 = time.perf_counter()
        timings.update({f"{name}.rewrite": (t1 - t0) * 1e3, f"{name}.recall": (t2 - t1) * 1e3,
                        f"{name}.aggregate": (t3 - t2) * 1e3})
    t0 = time.perf_counter()
    fused = fuse(routes, library.config.fusion)[: query.top_k]
    timings["fuse"] = (time.perf_counter() - t0) * 1e3
    return SearchReport(fused, timings)
