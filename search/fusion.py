"""Fusing the segments of several routes into one ranking.

Segments of different routes that overlap in time on the same medium become
one result spanning both; its ``routes`` keep each route's own score and its
``matches`` each route's explanations. A match about the whole medium (its
title or tags) strengthens a moment of that medium another route found without
widening it to the whole medium.

* ``rrf``   — reciprocal-rank fusion: score = Σ_route weight / (rrf_k + rank);
* ``blend`` — score = Σ_route weight × (route score min-max normalised within the route).

With a single route there is nothing to fuse: its segments and scores pass through.
"""

from __future__ import annotations

from .library import FusionConfig
from .types import Segment


def fuse(routes: dict[str, list[Segment]], config: FusionConfig) -> list[Segment]:
    routes = {name: segs for name, segs in routes.items() if segs}
    if not routes:
        return []
    if len(routes) == 1:
        return sorted(next(iter(routes.values())), key=lambda s: -s.score)

    contributions: list[tuple[float, str, Segment]] = []
    for name, segs in routes.items():
        weight = config.weights.get(name, 1.0)
        ranked = sorted(segs, key=lambda s: -s.score)
        lo, hi = ranked[-1].score, ranked[0].score
        for rank, seg in enumerate(ranked, start=1):
            if config.method == "rrf":
                value = weight / (config.rrf_k + rank)
            else:
                value = weight * ((seg.score - lo) / (hi - lo) if hi > lo else 1.0)
            contributions.append((value, name, seg))

    fused: list[Segment] = []
    by_medium: dict[int, list[Segment]] = {}  # only segments of the same medium can overlap
    for value, name, seg in sorted(contributions, key=lambda c: -c[0]):
        same = by_medium.setdefault(seg.media_id, [])
        target = next((f for f in same if name not in f.routes and f.overlaps(seg)), None)
        if target is None:
            new = seg.model_copy(update={"score": value, "routes": {name: seg.score}, "matches": list(seg.matches)})
            fused.append(new)
            same.append(new)
            continue
        if target.whole_medium and not seg.whole_medium:  # a moment narrows a whole-medium match
            target.start, target.end, target.thumbnail_time = seg.start, seg.end, seg.thumbnail_time
            target.whole_medium = False
        elif not seg.whole_medium:
            target.start, target.end = min(target.start, seg.start), max(target.end, seg.end)
        target.score += value
        target.routes[name] = seg.score
        target.matches.extend(seg.matches)
    return sorted(fused, key=lambda s: -s.score)
