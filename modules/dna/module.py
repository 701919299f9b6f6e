"""The ``dna`` module: near-duplicates and partial copies, found by video fingerprints.

extract   frames -> grey 128-pixel frames (modules/dna/fingerprint.py)
write     the medium's frames -> one 128-bit code per frame and crop level (bars removed over the
          whole medium), kept in ``dna.npz`` (modules/dna/store.py); before that, the new medium is
          aligned with the library's media (modules/dna/align.py) and the spans it shares with them
          are kept as copies (``copies``, reported by the core with the ingest result)
rewrite   an image -> its codes (text: nothing to say)
recall    frames whose codes are within ``image_max_distance`` bits: media showing that exact frame
aggregate touching frames merge into segments (search/segments.py)

``check`` aligns any clip's fingerprint with the library (``zhaopian dna check``,
``POST /v1/libraries/{name}/dna/check``; modules/dna/check.py).

At ingest the new medium's codes are those of the library's own frames (1 per second by default):
nothing is decoded twice. Frames sampled at the same rate on both sides can be up to half a step
apart, which a short or much-altered copy does not survive; so when frames match a medium but no
span qualifies, the new file is sampled again at ``check_fps`` and aligned once more. An unrelated
medium almost never has a frame match, so it costs nothing extra.

Off unless a library lists it (``zhaopian library create news --modules visual,dna``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import Field, model_validator

from zhaopian.modules.base import Module, ModuleConfig, ModuleContext, Query
from zhaopian.search.errors import MediaError, NotFound
from zhaopian.search.segments import merge_hits
from zhaopian.search.types import CopySpan, Frame, Hit, MediaInfo, Segment

from .align import AlignParams, Span, align
from .fingerprint import BITS, Fingerprint, fingerprint, image_fingerprint, reduce
from .sample import sample_file
from .store import CodeStore, CopyRecord, FrameMatches

STORE_FILE = "dna.npz"


class DnaConfig(ModuleConfig):
    #: two frames match when their codes differ in at most this many of 128 bits (copies measured:
    #: at most 29, median 1-9 per kind of change; unrelated frames: at least 30, 0.1 % below 40)
    max_distance: int = Field(default=26, ge=0, le=64)
    #: an image query matches frames at most this many bits away (a single frame has no timeline to
    #: confirm it, so the bar is higher)
    image_max_distance: int = Field(default=20, ge=0, le=64)
    #: clips being checked (and new media whose first alignment was not conclusive) are sampled this
    #: many frames per second
    check_fps: float = Field(default=4.0, gt=0, le=30)
    #: a clip needs at least this many seconds of picture to be fingerprinted; a shared span at least as long
    min_seconds: float = Field(default=2.0, gt=0, le=60)
    #: a shared span needs this many matched frames (on the more sparsely sampled side) ...
    min_frames: int = Field(default=2, ge=1, le=100)
    #: ... and this share of its frames matched
    min_coverage: float = Field(default=0.5, gt=0, le=1)
    #: speed changes looked for: a copy may play this much slower or faster
    min_speed: float = Field(default=0.88, ge=0.5, le=1.0)
    max_speed: float = Field(default=1.12, ge=1.0, le=2.0)
    #: seconds without a matching frame that split a shared span in two
    max_gap: float = Field(default=6.0, gt=0)
    #: look for copies among the library's media when a medium is added
    detect_copies: bool = True
    #: image queries: frames at most this many seconds apart merge into one segment
    merge_gap: float = Field(default=1.0, ge=0)

    @model_validator(mode="after")
    def _image_bar(self) -> DnaConfig:
        if self.image_max_distance > self.max_distance:
            raise ValueError("image_max_distance cannot exceed max_distance")
        return self

    def align_params(self) -> AlignParams:
        return AlignParams(max_distance=self.max_distance, min_speed=self.min_speed, max_speed=self.max_speed,
                           min_frames=self.min_frames, min_coverage=self.min_coverage,
                           min_seconds=self.min_seconds, max_gap=self.max_gap)


@dataclass(frozen=True)
class DnaQuery:
    codes: np.ndarray
    media_ids: frozenset[int] | None = None


class DnaModule(Module):
    name = "dna"
    Config = DnaConfig

    def __init__(self, config: DnaConfig, context: ModuleContext) -> None:
        super().__init__(config, context)
        self._lock = threading.RLock()
        self._store_cache: CodeStore | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._dirty = False

    # store -----------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self.context.library_dir / STORE_FILE

    def store(self) -> CodeStore:
        with self._lock:
            if self._store_cache is None:
                self._stamp = _stamp(self.path)
                self._store_cache = CodeStore.load(self.path)
            return self._store_cache

    # ingestion -------------------------------------------------------------------------------
    def extract(self, media: MediaInfo, frames: Sequence[Frame]) -> list[tuple[float, np.ndarray]]:
        return [(f.t, reduce(f.image)) for f in frames]

    def write(self, media: MediaInfo, features: list[list[tuple[float, np.ndarray]]]) -> int:
        frames = [item for chunk in features for item in chunk]
        if not frames:
            return 0
        step = 0.0 if media.kind == "image" else media.sample_step
        fp = fingerprint([t for t, _ in frames], [g for _, g in frames], step, media.duration)
        if not len(fp):  # blank or flat throughout
            return 0
        with self._lock:
            store = self.store()
            if self.config.detect_copies and media.kind == "video" and media.duration >= self.config.min_seconds:
                found = self._copies_of_new(media, fp)
                store.add_copies([CopyRecord(media.media_id, other, s.q_start, s.q_end, s.start, s.end, s.score,
                                             s.speed, s.offset) for other, s in found])
            end = min(float(fp.times[-1]) + step, media.duration) if media.duration > 0 else float(fp.times[-1])
            [unit] = self.context.media.add_units(media.media_id, self.name, [(float(fp.times[0]), end,
                                                                               float(fp.times[0]))])
            store.add(media.media_id, fp, media.duration, unit)
            self._dirty = True
        return 1

    def _copies_of_new(self, media: MediaInfo, fp: Fingerprint) -> list[tuple[int, Span]]:
        """Spans the new medium shares with media already in the store (its own earlier version excepted)."""
        store = self.store()
        matches = store.match(fp.codes, self.config.max_distance)
        same_path = self._same_path(media, set(store.media[matches.row].tolist()))
        found, hinted = self._align(fp, matches, exclude=same_path | {media.media_id})
        if hinted:
            try:
                dense = sample_file(media.path, self.config.check_fps, media.duration)
            except MediaError:
                dense = None
            if dense is not None and len(dense):
                more, _ = self._align(dense, store.match(dense.codes, self.config.max_distance), only=hinted)
                found += more
        return found

    def _same_path(self, media: MediaInfo, candidates: set[int]) -> set[int]:
        """Media in the store at the new medium's path: the version it replaces is no copy of it."""
        out = set()
        for other in candidates:
            try:
                if self.context.media.record(other).path == str(media.path):
                    out.add(other)
            except NotFound:
                out.add(other)
        return out

    def remove(self, media_ids: list[int]) -> None:
        with self._lock:
            if self._store_cache is None and not self.path.exists():
                return
            if self.store().remove(media_ids):
                self._dirty = True

    def flush(self) -> None:
        with self._lock:
            if self._dirty and self._store_cache is not None:
                self._store_cache.save(self.path)
                self._stamp = _stamp(self.path)
            self._dirty = False

    def compact(self) -> None:
        """The file holds no removed media (removal rewrites the arrays): writing it again is all there is."""
        with self._lock:
            if self._store_cache is not None or self.path.exists():
                self.store()
                self._dirty = True
            self.flush()

    def stored_units(self) -> set[int]:
        if self._store_cache is None and not self.path.exists():
            return set()
        return set(self.store().units.values())

    def drop_units(self, unit_ids: set[int]) -> None:
        with self._lock:
            store = self.store()
            gone = [m for m, u in store.units.items() if u in unit_ids]
            if gone and store.remove(gone):
                self._dirty = True

    def reload(self) -> None:
        """Another process wrote to the library: the file is read again when next used if it changed."""
        with self._lock:
            if not self._dirty and self._store_cache is not None and _stamp(self.path) != self._stamp:
                self._store_cache = None

    def copies(self, media_id: int) -> list[CopySpan]:
        with self._lock:
            return self._copies(media_id)

    def _copies(self, media_id: int) -> list[CopySpan]:
        store = self.store()
        out = []
        for c in store.copies_of(media_id):
            if c.a == media_id:
                out.append(self._copy_span(c.b, (c.b_start, c.b_end), (c.a_start, c.a_end), c.score, c.speed,
                                           c.offset, store.duration(media_id)))
            else:
                out.append(self._copy_span(c.a, (c.a_start, c.a_end), (c.b_start, c.b_end), c.score, 1 / c.speed,
                                           -c.offset / c.speed, store.duration(media_id)))
        return sorted(out, key=lambda s: (s.query_start, s.media_id))

    # alignment -------------------------------------------------------------------------------
    def _align(self, fp: Fingerprint, matches: FrameMatches, *, exclude: set[int] = frozenset(),
               only: set[int] | None = None) -> tuple[list[tuple[int, Span]], set[int]]:
        """Spans ``fp`` shares with each stored medium, and the media whose frames matched although no
        span qualified (worth a denser look)."""
        store = self.store()
        params = self.config.align_params()
        found: list[tuple[int, Span]] = []
        hinted: set[int] = set()
        if not len(matches):
            return found, hinted
        owner = store.media[matches.row]
        for other in np.unique(owner).tolist():
            if other in exclude or (only is not None and other not in only):
                continue
            sel = owner == other
            first, count = store.range_of(other)
            spans = align(fp.times, store.times[first:first + count].astype(np.float64), matches.query[sel],
                          matches.row[sel] - first, matches.distance[sel].astype(np.float64), q_step=fp.step,
                          r_step=store.step(other), q_duration=fp.duration, r_duration=store.duration(other),
                          bits=BITS, params=params)
            found += [(other, s) for s in spans]
            if not spans and len(np.unique(matches.query[sel])) >= params.min_frames:
                hinted.add(other)
        return found, hinted

    def check(self, fp: Fingerprint) -> list[CopySpan]:
        """Spans a clip (its fingerprint) shares with the library's ready media, best first."""
        with self._lock:  # rows found by matching must still be the store's rows when aligned
            matches = self.store().match(fp.codes, self.config.max_distance)
            found, _ = self._align(fp, matches)
            ready = self._ready({m for m, _ in found})
            spans = [self._copy_span(m, (s.start, s.end), (s.q_start, s.q_end), s.score, s.speed, s.offset,
                                     fp.duration) for m, s in found if m in ready]
        return sorted(spans, key=lambda s: -(s.score * (s.query_end - s.query_start)))

    def frames_like(self, fp: Fingerprint, max_distance: int | None = None,
                    allowed: frozenset[int] | None = None) -> list[Hit]:
        """Stored frames near an image's codes, best first (score: the share of bits that agree)."""
        with self._lock:
            return self._frames_like(fp, max_distance, allowed)

    def _frames_like(self, fp: Fingerprint, max_distance: int | None, allowed: frozenset[int] | None) -> list[Hit]:
        store = self.store()
        matches = store.match(fp.codes, self.config.image_max_distance if max_distance is None else max_distance)
        if not len(matches):
            return []
        best: dict[int, int] = {}
        for row, distance in zip(matches.row.tolist(), matches.distance.tolist()):
            best[row] = min(distance, best.get(row, distance))
        owners = {int(store.media[row]) for row in best}
        ready = self._ready(owners if allowed is None else owners & set(allowed))
        hits = []
        for row, distance in best.items():
            media_id = int(store.media[row])
            if media_id not in ready:
                continue
            t = float(store.times[row])
            step = store.step(media_id)
            end = min(t + step, store.duration(media_id)) if store.duration(media_id) > 0 else t + step
            hits.append(Hit(media_id, t, max(end, t), round(1.0 - distance / BITS, 6), t,
                            detail={"distance": int(distance)}))
        hits.sort(key=lambda h: (-h.score, h.media_id, h.start))
        return hits

    def _ready(self, media_ids: set[int]) -> set[int]:
        if not media_ids:
            return set()
        store = self.store()
        units = [store.units[m] for m in media_ids if m in store.units]
        return {u.media_id for u in self.context.media.ready_units(units).values()}

    def _copy_span(self, other: int, span: tuple[float, float], this: tuple[float, float], score: float,
                   speed: float, offset: float, this_duration: float) -> CopySpan:
        other_whole = _covers(span[1] - span[0], self.store().duration(other))
        this_whole = _covers(this[1] - this[0], this_duration)
        relation = ("duplicate" if other_whole and this_whole else "part_of" if this_whole
                    else "contains" if other_whole else "overlap")
        return CopySpan(media_id=other, start=round(span[0], 2), end=round(span[1], 2), query_start=round(this[0], 2),
                        query_end=round(this[1], 2), score=round(score, 4), speed=round(speed, 4),
                        offset=round(offset, 3), relation=relation)

    # search ----------------------------------------------------------------------------------
    def rewrite(self, query: Query) -> DnaQuery | None:
        if query.image is None:
            return None
        fp = image_fingerprint(query.image)
        if not len(fp):
            query.notes.append("the query image is too flat to fingerprint; the dna route was skipped")
            return None
        return DnaQuery(fp.codes, query.media_ids)

    def recall(self, module_query: DnaQuery, k: int) -> list[Hit]:
        if module_query.media_ids is not None and not module_query.media_ids:
            return []
        fp = Fingerprint(np.zeros(len(module_query.codes)), module_query.codes, 0.0)
        return self.frames_like(fp, allowed=module_query.media_ids)[:k]

    def aggregate(self, hits: list[Hit], module_query: DnaQuery) -> list[Segment]:
        return merge_hits(hits, self.name, max_gap=self.config.merge_gap, spread=0.25)


def _covers(length: float, duration: float) -> bool:
    """A span is (nearly) all of a medium: it misses at most 1.5 s or a tenth of it."""
    return duration <= 0 or length >= duration - max(1.5, 0.1 * duration)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino
