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

from .types import Hit, Segment


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
                used.add(id(h))
                j += step
        segments.append(Segment(media_id=seed.media_id, start=start, end=end, score=seed.score,
                                thumbnail_time=seed.thumb, routes={route: seed.score}))
    return segments
