"""Where a library's fingerprints live: one array file, read whole into memory, searched with FAISS.

``dna.npz`` (written to a temporary file, then renamed over the old one) holds, per coded frame,
its medium, its time and its codes (one per level); per medium its duration, sampling step and
catalog unit (one unit per medium: the span its codes cover); and the copies found when media
were added (medium a's span ↔ medium b's span). A medium's frames are contiguous and in time
order (added at once, removed by filtering). Frame matches come from a FAISS ``IndexBinaryFlat``
over every code (exact Hamming distances), built when the file is read.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from zhaopian.search.stores.files import atomic_write

from .fingerprint import BITS, BYTES, LEVELS, Fingerprint, comparable

FORMAT = 1
#: a query frame keeps at most this many matching frames (a still shot matches all its frames)
MAX_PER_FRAME = 256
#: query frames searched at once (bounds the memory of one range search)
BATCH = 256


@dataclass
class FrameMatches:
    """Pairs (query frame, stored frame) closer than the radius: one row per pair, best crop levels."""

    query: np.ndarray  # (k,) index into the query's frames
    row: np.ndarray  # (k,) index into the store's frames
    distance: np.ndarray  # (k,) bits that differ

    def __len__(self) -> int:
        return len(self.query)


@dataclass
class CopyRecord:
    """Medium ``a``'s span [a_start, a_end] shows what medium ``b``'s span [b_start, b_end] shows;
    ``b_t = speed * a_t + offset``."""

    a: int
    b: int
    a_start: float
    a_end: float
    b_start: float
    b_end: float
    score: float
    speed: float
    offset: float

    def row(self) -> list[float]:
        return [self.a, self.b, self.a_start, self.a_end, self.b_start, self.b_end, self.score, self.speed,
                self.offset]


class CodeStore:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.media = np.zeros(0, np.int64)
        self.times = np.zeros(0, np.float32)
        self.codes = np.zeros((0, LEVELS, BYTES), np.uint8)
        #: media_id -> (duration, step)
        self.info: dict[int, tuple[float, float]] = {}
        #: media_id -> its catalog unit
        self.units: dict[int, int] = {}
        self.copies: list[CopyRecord] = []
        self._index: faiss.IndexBinaryFlat | None = None
        self._ranges: dict[int, tuple[int, int]] | None = None

    # -- files -----------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path) -> CodeStore:
        store = cls()
        if not path.exists():
            return store
        with np.load(path, allow_pickle=False) as data:
            if int(data["format"]) != FORMAT:
                raise ValueError(f"{path}: unknown fingerprint file format {int(data['format'])}")
            store.media, store.times, store.codes = data["media"], data["times"], data["codes"]
            store.info = {int(m): (float(d), float(s)) for m, d, s, _ in data["info"]}
            store.units = {int(m): int(u) for m, _, _, u in data["info"]}
            store.copies = [CopyRecord(int(r[0]), int(r[1]), *map(float, r[2:])) for r in data["copies"]]
        return store

    def save(self, path: Path) -> None:
        with self._lock:
            info = np.array([(m, d, s, self.units[m]) for m, (d, s) in sorted(self.info.items())],
                            np.float64).reshape(-1, 4)
            copies = np.array([c.row() for c in self.copies], np.float64).reshape(-1, 9)
            arrays = {"format": np.array(FORMAT), "media": self.media, "times": self.times, "codes": self.codes,
                      "info": info, "copies": copies}

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

        atomic_write(path, write)

    # -- data ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.media)

    def add(self, media_id: int, fp: Fingerprint, duration: float, unit: int) -> None:
        with self._lock:
            if media_id in self.info:
                self.remove([media_id])
            order = np.argsort(fp.times, kind="stable")
            self.media = np.concatenate([self.media, np.full(len(fp), media_id, np.int64)])
            self.times = np.concatenate([self.times, fp.times[order].astype(np.float32)])
            self.codes = np.concatenate([self.codes, fp.codes[order]])
            self.info[media_id] = (duration, fp.step)
            self.units[media_id] = unit
            self._ranges = None
            if self._index is not None:
                self._index.add(np.ascontiguousarray(fp.codes[order].reshape(-1, BYTES)))

    def add_copies(self, records: list[CopyRecord]) -> None:
        with self._lock:
            self.copies.extend(records)

    def remove(self, media_ids: list[int]) -> bool:
        """Forget these media's frames and the copies they are part of; whether anything changed."""
        gone = set(media_ids)
        with self._lock:
            keep = ~np.isin(self.media, list(gone))
            copies = [c for c in self.copies if c.a not in gone and c.b not in gone]
            changed = not keep.all() or len(copies) != len(self.copies) or bool(gone & set(self.info))
            if not changed:
                return False
            self.media, self.times, self.codes = self.media[keep], self.times[keep], self.codes[keep]
            self.copies = copies
            for m in gone:
                self.info.pop(m, None)
                self.units.pop(m, None)
            self._index = None
            self._ranges = None
            return True

    def range_of(self, media_id: int) -> tuple[int, int]:
        """(first row, row count) of a medium's frames."""
        with self._lock:
            if self._ranges is None:
                ids, first, count = np.unique(self.media, return_index=True, return_counts=True)
                self._ranges = {int(m): (int(f), int(c)) for m, f, c in zip(ids, first, count)}
            return self._ranges.get(media_id, (0, 0))

    def duration(self, media_id: int) -> float:
        return self.info.get(media_id, (0.0, 1.0))[0]

    def step(self, media_id: int) -> float:
        return self.info.get(media_id, (0.0, 1.0))[1]

    def copies_of(self, media_id: int) -> list[CopyRecord]:
        with self._lock:
            return [c for c in self.copies if media_id in (c.a, c.b)]

    # -- search ----------------------------------------------------------------------------------
    def _searcher(self) -> faiss.IndexBinaryFlat:
        if self._index is None:
            index = faiss.IndexBinaryFlat(BITS)
            if len(self.codes):
                index.add(np.ascontiguousarray(self.codes.reshape(-1, BYTES)))
            self._index = index
        return self._index

    def match(self, codes: np.ndarray, max_distance: int) -> FrameMatches:
        """Every (query frame, stored frame) pair within ``max_distance`` bits, at the best pair of code
        levels that are compared (``fingerprint.comparable``)."""
        empty = FrameMatches(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32))
        with self._lock:
            if not len(codes) or not len(self.codes):
                return empty
            index = self._searcher()
            parts = []
            for begin in range(0, len(codes), BATCH):
                block = np.ascontiguousarray(codes[begin:begin + BATCH].reshape(-1, BYTES))
                lims, dist, ids = index.range_search(block, max_distance + 1)
                if not len(ids):
                    continue
                rows = np.repeat(np.arange(len(block)), np.diff(lims.astype(np.int64)))
                ok = comparable(rows % LEVELS, ids % LEVELS)
                parts.append((rows[ok] // LEVELS + begin, ids[ok] // LEVELS, dist[ok].astype(np.int32)))
        if not parts:
            return empty
        query = np.concatenate([p[0] for p in parts])
        row = np.concatenate([p[1] for p in parts]).astype(np.int64)
        distance = np.concatenate([p[2] for p in parts])
        # one pair per (query frame, stored frame): its best crop levels; then each query frame's nearest
        order = np.lexsort((distance, row, query))
        query, row, distance = query[order], row[order], distance[order]
        first = np.ones(len(query), bool)
        first[1:] = (query[1:] != query[:-1]) | (row[1:] != row[:-1])
        query, row, distance = query[first], row[first], distance[first]
        order = np.lexsort((distance, query))
        query, row, distance = query[order], row[order], distance[order]
        starts = np.searchsorted(query, query, side="left")
        keep = np.arange(len(query)) - starts < MAX_PER_FRAME
        return FrameMatches(query[keep], row[keep], distance[keep])
