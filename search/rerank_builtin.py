"""The built-in reranker: the library's own visual encoder looks at each candidate again, closer.

No extra model. For each candidate segment of a video:

1. **Look again.** Frames on the fixed grid ``k / fps`` (4 per second by default) from
   ``margin`` seconds before the segment to ``margin`` seconds after it (at most
   ``max_frames``, thinned evenly on the grid) are decoded and encoded with the visual
   module's encoder; their similarity to the query's vector from ``visual.rewrite(query)``
   (the text space for a text query, the image-query space for an image) is measured.
   Ingestion saw one frame per second, merged into clips whose vector is a mean; this sees
   four, one by one.
2. **Re-score by the best frames:** the mean similarity of the ``top_frames`` best frames.
3. **Fit the span** to the evidence, the most exact first:

   * words on screen or said (the ``span_routes``, ``ocr`` and ``asr``): the matched lines and
     sentences (those scoring at least half the route's best match); speech is timed to the
     word, on-screen lines to the frames OCR read;
   * else, for a segment the visual route found, the run of frames around the best one whose
     similarity is at least ``best - tighten × (best - worst)`` over the window (dips shorter
     than ``gap`` seconds are bridged), plus one frame step;
   * else other time-stamped matches (``labels``' runs).

   Whole-medium (metadata) matches and stills keep theirs.
4. **Order.** The candidates are fused again by the library's fusion rule (RRF or blend, its
   weights), each route ranking the candidates it found by its own score, except that the
   visual route now ranks *every* candidate by the best-frame score. A segment found by
   several routes gains a term from each, so agreement between routes ranks higher; a
   segment found only by words keeps its text routes' terms, so a query about what is said or
   shown as text is not taken over by look-alike pictures.

The visual look is skipped when the library has no visual module or the query is steered
away from it (说 / says, 字幕 / text on screen): then only the spans of text matches are used
and the order stays the fused one.

Frame vectors (every space of the encoder) are cached per (medium content, time) on the
grid: the next query over the same segments, or overlapping ones, encodes nothing again. A
new frame costs one decode and one encoder pass (the bundled encoder: tens of milliseconds of
CPU), so a first query over unseen footage is the expensive one (docs/benchmarks.md, "Reranker").
``tighten`` 0.3 and ``top_frames`` 5 were chosen on the demo's labelled queries (bench/rerank.py).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .rerank import Candidate, Deadline, Judgement, Reranker, RerankQuery, RerankTimeout
from .rerank_frames import decode_at, grid_times

#: routes whose matches are not moments of their own: metadata is about the whole medium; visual has none
_NOT_MOMENTS = {"meta", "visual"}


class BuiltinOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: frames per second looked at
    fps: float = Field(default=4.0, gt=0, le=30)
    #: seconds looked at before and after the segment
    margin: float = Field(default=1.0, ge=0, le=30)
    #: at most this many frames per candidate (a long segment is looked at more sparsely)
    max_frames: int = Field(default=16, ge=1, le=1000)
    #: frames are decoded with their longer side at most this (the encoder resizes them anyway)
    max_side: int = Field(default=320, ge=32, le=4096)
    #: the score: mean similarity of this many best frames (5 at 4 frames/s: a match must last about a second)
    top_frames: int = Field(default=5, ge=1, le=100)
    #: a frame belongs to the match when its similarity is within tighten × (best - worst) of the best
    tighten: float = Field(default=0.3, ge=0, le=1)
    #: seconds of lower similarity bridged inside a match
    gap: float = Field(default=0.5, ge=0, le=10)
    #: routes whose matched units are timed exactly (lines on screen, spoken sentences): they set the span
    span_routes: list[str] = Field(default_factory=lambda: ["ocr", "asr"])
    #: frames whose vectors are kept in memory (per medium content and time; every space the encoder has)
    frame_cache: int = Field(default=5000, ge=0, le=1_000_000)


class _FrameCache:
    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, int], dict[str, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple[str, int]) -> dict[str, np.ndarray] | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple[str, int], value: dict[str, np.ndarray]) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


def _run(times: list[float], sims: np.ndarray, tighten: float, gap: float) -> tuple[int, int]:
    """Indices (first, last) of the frames around the best one that match (see the module docstring)."""
    best = int(np.argmax(sims))
    threshold = sims[best] - tighten * (sims[best] - sims.min())
    ok = sims >= threshold - 1e-9
    first = last = best
    for step in (-1, 1):
        i = best
        edge = best
        while 0 <= i + step < len(times):
            i += step
            if ok[i]:
                edge = i
            elif abs(times[i] - times[edge]) > gap:
                break
        if step < 0:
            first = edge
        else:
            last = edge
    return first, last


def _match_span(candidate: Candidate, routes: Callable[[str], bool]) -> tuple[float, float] | None:
    """The hull of the segment's time-stamped matches of these routes that score at least half their
    route's best match."""
    matches = [m for m in candidate.segment.matches if routes(m.route) and m.end >= m.start]
    if not matches:
        return None
    best: dict[str, float] = {}
    for m in matches:
        best[m.route] = max(best.get(m.route, m.score), m.score)
    strong = [m for m in matches if m.score >= 0.5 * best[m.route]]
    return min(m.start for m in strong), max(m.end for m in strong)


def _thumbnail(seg, times: list[float], sims: np.ndarray, start: float | None, end: float | None) -> float | None:
    """The best-matching frame inside the (new) span; None keeps the segment's own thumbnail."""
    lo, hi = (seg.start, seg.end) if start is None else (start, end)
    inside = [i for i, t in enumerate(times) if lo - 1e-6 <= t <= hi + 1e-6]
    if not inside:
        return None if lo <= seg.thumbnail_time <= hi else lo
    return times[max(inside, key=lambda i: sims[i])]


class BuiltinReranker(Reranker):
    name = "builtin"
    Config = BuiltinOptions
    default_budget_ms = 3000.0
    image_queries = True

    def __init__(self, options: BuiltinOptions, library) -> None:
        super().__init__(options, library)
        self.frames = _FrameCache(options.frame_cache)

    def fingerprint(self) -> str:
        visual = self.library.modules.get("visual")
        encoder = visual.encoder.fingerprint() if visual is not None else "-"
        return f"builtin:{encoder}:{self.options.model_dump_json()}"

    def declines(self, query: RerankQuery) -> str | None:
        return None  # without a visual look it still tightens text matches

    def _visual(self, query: RerankQuery):
        """(visual module, its query) when the visual look applies to this query, else (None, None)."""
        visual = self.library.modules.get("visual")
        parsed = query.query.parsed
        if visual is None or (parsed is not None and parsed.routes and "visual" not in parsed.routes):
            return None, None
        module_query = visual.rewrite(query.query)
        if module_query is None:
            return None, None
        return visual, module_query

    def _times(self, c: Candidate) -> list[float]:
        o = self.options
        if c.kind == "image":
            return [0.0]
        if c.segment.whole_medium:
            return grid_times(0.0, c.duration, o.fps, o.max_frames, c.duration)
        return grid_times(c.segment.start - o.margin, c.segment.end + o.margin, o.fps, o.max_frames, c.duration)

    def _look(self, visual, space: str, candidates: list[Candidate], times_of: list[list[float]],
              deadline: Deadline) -> dict[tuple[str, int], dict[str, np.ndarray]]:
        """Frame vectors for every candidate's times: from the cache, else decoded (one pass per medium,
        in the candidates' order) and encoded."""
        seen: dict[tuple[str, int], dict[str, np.ndarray]] = {}
        needed: dict[str, tuple[Candidate, set[float]]] = {}
        wanted: set[tuple[str, int]] = set()
        for c, times in zip(candidates, times_of):
            for t in times:
                key = (c.sha256, round(t * 1000))
                if key in seen or key in wanted:
                    continue
                cached = self.frames.get(key)
                if cached is not None and space in cached:
                    seen[key] = cached
                else:
                    wanted.add(key)
                    needed.setdefault(c.sha256, (c, set()))[1].add(t)
        chunk = max(1, visual.encoder.config.batch_size)
        for sha, (c, new) in needed.items():
            if deadline.expired:
                raise RerankTimeout()
            times = sorted(new)
            images = decode_at(c.path, c.kind, times, max_side=self.options.max_side)
            for first in range(0, len(times), chunk):  # the deadline is checked between batches
                if deadline.expired:
                    raise RerankTimeout()
                vectors = visual.encoder.encode_images(images[first:first + chunk])  # every space, for later queries
                for k, t in enumerate(times[first:first + chunk]):
                    key = (sha, round(t * 1000))
                    seen[key] = {name: v[k] for name, v in vectors.items()}
                    self.frames.put(key, seen[key])
        return seen

    def judge(self, query: RerankQuery, candidates: list[Candidate], deadline: Deadline) -> Iterator[tuple[int, Judgement]]:
        visual, module_query = self._visual(query)
        o = self.options
        if visual is not None:
            times_of = [self._times(c) for c in candidates]
            seen = self._look(visual, module_query.space, candidates, times_of, deadline)
        for index, c in enumerate(candidates):
            if deadline.expired:
                raise RerankTimeout()
            seg = c.segment
            fits = c.kind != "image" and not seg.whole_medium
            said = _match_span(c, lambda r: r in o.span_routes) if fits else None
            other = _match_span(c, lambda r: r not in o.span_routes and r not in _NOT_MOMENTS) if fits else None
            if visual is None:
                start, end = said or other or (None, None)
                yield index, Judgement(score=0.0, start=start, end=end)
                continue
            times = times_of[index]
            vectors = np.stack([seen[(c.sha256, round(t * 1000))][module_query.space] for t in times])
            sims = vectors @ np.asarray(module_query.vector, dtype=np.float32)
            top = np.sort(sims)[::-1][: o.top_frames]
            score = float(top.mean())
            start, end = said or (None, None)
            if fits and said is None and "visual" in seg.routes:
                first, last = _run(times, sims, o.tighten, o.gap)
                start, end = times[first], min(times[last] + 1.0 / o.fps, c.duration or times[last] + 1.0 / o.fps)
            elif fits and said is None and other is not None:
                start, end = other
            yield index, Judgement(score=score, start=start, end=end, thumbnail_time=_thumbnail(seg, times, sims, start, end)
                                   if fits else None, detail=(("visual", score),))

    def order(self, query: RerankQuery, candidates: list[Candidate], judgements: list[Judgement]) -> list[float]:
        """The library's fusion rule over the candidates, the visual route ranking all of them by their best frames."""
        fusion = self.library.config.fusion
        looked = any(dict(j.detail).get("visual") is not None for j in judgements)
        if not looked:  # nothing new was seen: the fused order stands
            return [-float(c.rank) for c in candidates]
        per_route: dict[str, dict[int, float]] = {}
        for i, c in enumerate(candidates):
            for route, score in c.segment.routes.items():
                if route in ("rerank", "visual"):
                    continue
                per_route.setdefault(route, {})[i] = score
        per_route["visual"] = {i: dict(j.detail)["visual"] for i, j in enumerate(judgements)}
        keys = [0.0] * len(candidates)
        for route, scores in per_route.items():
            weight = fusion.weights.get(route, 1.0)
            ranked = sorted(scores, key=lambda i: (-scores[i], i))
            lo, hi = scores[ranked[-1]], scores[ranked[0]]
            for rank, i in enumerate(ranked, start=1):
                if fusion.method == "rrf":
                    keys[i] += weight / (fusion.rrf_k + rank)
                else:
                    keys[i] += weight * ((scores[i] - lo) / (hi - lo) if hi > lo else 1.0)
        return keys

    def stats(self) -> dict[str, Any]:
        return {"frame_cache_hits": self.frames.hits, "frame_cache_misses": self.frames.misses}
