"""Turning a route's hits into segments.

The rule, for the hits of one route and one query:

1. Hits are taken best first. The best hit not yet used seeds a segment.
2. The segment grows over hits of the same medium whose spans touch it
   (a gap of at most ``max_gap`` seconds) and whose score is within
   ``spread`` × (best − worst score among the recalled hits) of the seed.
3. A segment's score is its seed's score — the best unit in it — so a long
   segment is not ranked above a short one just for being long; its
   thumbnail is the seed's representative frame.

A medium can give several segments when separate parts of it match.
"""

from __future__ import annotations

from collections import defaultdict

from .types import Hit, Match, Segment

#: at most this many matched texts are kept per segment to explain it
MAX_MATCHES = 5


def _matches(hits: list[Hit], route: str) -> list[Match]:
    """The explanations carried by hits (text routes put text and highlight in ``detail``)."""
    out = [Match(route=route, start=h.start, end=h.end, score=h.score, text=h.detail["text"],
                 highlight=h.detail.get("highlight", ""), field=h.detail.get("field", "text"))
           for h in sorted(hits, key=lambda h: -h.score) if "text" in h.detail]
    return out[:MAX_MATCHES]


def merge_hits(hits: list[Hit], route: str, max_gap: float = 1.0, spread: float = 0.25) -> list[Segment]:
    if not hits:
        return []
    scores = [h.score for h in hits]
    tolerance = spread * (max(scores) - min(scores))
    by_media: dict[int, list[Hit]] = defaultdict(list)
    for h in hits:
        by_media[h.media_id].append(h)
    position: dict[int, int] = {}  # id(hit) -> index in its medium's timeline
    for items in by_media.values():
        items.sort(key=lambda h: h.start)
        position.update({id(h): k for k, h in enumerate(items)})

    used: set[int] = set()  # id() of consumed hits
    segments: list[Segment] = []
    for seed in sorted(hits, key=lambda h: -h.score):
        if id(seed) in used:
            continue
        timeline = by_media[seed.media_id]
        i = position[id(seed)]
        start, end = seed.start, seed.end
        members = [seed]
        used.add(id(seed))
        floor = seed.score - tolerance
        for step in (-1, 1):
            j = i + step
            while 0 <= j < len(timeline):
                h = timeline[j]
                touches = (h.end >= start - max_gap) if step < 0 else (h.start <= end + max_gap)
                if id(h) in used or not touches or h.score < floor:
                    break
                start, end = min(start, h.start), max(end, h.end)
                members.append(h)
                used.add(id(h))
                j += step
        segments.append(Segment(media_id=seed.media_id, start=start, end=end, score=seed.score,
                                thumbnail_time=seed.thumb, routes={route: seed.score},
                                matches=_matches(members, route)))
    return segments
