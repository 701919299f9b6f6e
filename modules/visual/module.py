"""The ``visual`` module: frame embeddings in FAISS, searched by text or by image.

extract   frames -> one embedding per frame in each of the encoder's spaces
write     adjacent similar frames merge into clips (one unit, one vector per space)
rewrite   text -> text-space vector; image -> image-query-space vector
recall    nearest clips in the FAISS store of that space
aggregate touching clips that match merge into segments (search/segments.py)
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import Field, model_validator

from zhaopian.modules.base import Module, ModuleConfig, ModuleContext, Query
from zhaopian.search.errors import ConfigError
from zhaopian.search.segments import merge_hits
from zhaopian.search.stores.vectors import FaissVectorStore, VectorStore, open_vector_store
from zhaopian.search.types import Frame, Hit, MediaInfo, Segment

from .encoders.base import EncoderConfig, l2_normalize
from .encoders.registry import create_encoder, encoder_class

#: with filters, recall fetches up to this many times k clips before dropping media the filters exclude
FILTER_OVERFETCH = 10
#: text query vectors remembered per library
TEXT_CACHE = 1024


class VisualConfig(ModuleConfig):
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    #: adjacent frames at least this similar (cosine, in the image-query space) share one clip
    clip_similarity: float = Field(default=0.9, ge=0.0, le=1.0)
    #: a clip never spans more than this many seconds
    max_clip_seconds: float = Field(default=10.0, gt=0)
    #: how many clips recall fetches before aggregation
    recall_k: int = Field(default=200, ge=1, le=10_000)
    #: segments: clips at most this many seconds apart can merge
    merge_gap: float = Field(default=1.0, ge=0)
    #: segments: a neighbour joins when its score is within spread × (score range) of the seed
    merge_spread: float = Field(default=0.25, ge=0, le=1)

    @model_validator(mode="after")
    def _backend_exists(self) -> VisualConfig:
        encoder_class(self.encoder.backend)  # ConfigError with a clear message if not
        return self


@dataclass
class FrameFeatures:
    times: list[float]
    vectors: dict[str, np.ndarray]  # space -> (n, dim)


@dataclass
class VisualQuery:
    space: str
    vector: np.ndarray
    media_ids: frozenset[int] | None = None  # only these media (the query's filters)


@dataclass
class Clip:
    start: float
    end: float
    thumb: float
    vectors: dict[str, np.ndarray]  # space -> (dim,)


def merge_frames(times: list[float], vectors: dict[str, np.ndarray], key_space: str, similarity: float,
                 max_seconds: float, step: float, duration: float) -> list[Clip]:
    """Group consecutive frames into clips while each frame stays similar to the clip's mean.

    A frame sampled at ``t`` covers ``[t, t + step)``. A clip's vector in each
    space is the normalised mean of its frames; its thumbnail is the frame
    closest to that mean.
    """
    clips: list[Clip] = []
    n = len(times)
    key = vectors[key_space]
    begin = 0
    for i in range(1, n + 1):
        if i < n:
            mean = l2_normalize(key[begin:i].mean(axis=0))
            if float(mean @ key[i]) >= similarity and times[i] - times[begin] < max_seconds:
                continue
        members = slice(begin, i)
        mean_key = l2_normalize(key[members].mean(axis=0))
        best = begin + int(np.argmax(key[members] @ mean_key))
        end = times[i - 1] + step
        if duration > 0:
            end = min(end, duration)
        clips.append(Clip(start=times[begin], end=max(end, times[i - 1]), thumb=times[best],
                          vectors={s: l2_normalize(v[members].mean(axis=0)) for s, v in vectors.items()}))
        begin = i
    return clips


class VisualModule(Module):
    name = "visual"
    Config = VisualConfig

    def __init__(self, config: VisualConfig, context: ModuleContext) -> None:
        super().__init__(config, context)
        self.encoder = create_encoder(config.encoder)
        self._stores: dict[str, VectorStore] = {}
        #: each open store's file as it was when read or written: another process may replace it
        self._stamps: dict[str, tuple[int, int, int] | None] = {}
        self._dirty: set[str] = set()
        self._checked = False
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._text_lock = threading.Lock()

    # stores -----------------------------------------------------------------------------------
    def _store_path(self, space: str) -> Path:
        return self.context.library_dir / f"visual.{space}.faiss"

    def _check_fingerprint(self) -> None:
        """Vectors of different encoders must never share a store."""
        path = self.context.library_dir / "visual.json"
        info = {"encoder": self.encoder.fingerprint(), "spaces": self.encoder.spaces}
        if path.exists():
            stored = json.loads(path.read_text())
            if stored["encoder"] != info["encoder"]:
                raise ConfigError(f"this library was indexed with encoder {stored['encoder']!r}, "
                                  f"not {info['encoder']!r}; create a new library for another encoder")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(info))

    def _store(self, space: str) -> VectorStore:
        if not self._checked:
            self.encoder.load()
            self._check_fingerprint()
            self._checked = True
        if space not in self._stores:
            self._stamps[space] = _stamp(self._store_path(space))
            self._stores[space] = open_vector_store(self._store_path(space), self.encoder.spaces[space],
                                                    self.context.vector_store,
                                                    self.context.store_name("visual", space))
        return self._stores[space]

    def _existing_spaces(self) -> list[str]:
        return [p.name.split(".")[1] for p in self.context.library_dir.glob("visual.*.faiss")]

    # ingestion --------------------------------------------------------------------------------
    def extract(self, media: MediaInfo, frames: Sequence[Frame]) -> FrameFeatures:
        return FrameFeatures([f.t for f in frames], self.encoder.encode_images([f.image for f in frames]))

    def write(self, media: MediaInfo, features: list[FrameFeatures]) -> int:
        times = [t for f in features for t in f.times]
        if not times:
            return 0
        vectors = {s: np.concatenate([f.vectors[s] for f in features]) for s in features[0].vectors}
        clips = merge_frames(times, vectors, self.encoder.image_query_space, self.config.clip_similarity,
                             self.config.max_clip_seconds,
                             0.0 if media.kind == "image" else media.sample_step, media.duration)
        ids = np.asarray(self.context.media.add_units(media.media_id, self.name,
                                                      [(c.start, c.end, c.thumb) for c in clips]), dtype=np.int64)
        for space in vectors:
            self._store(space).add(ids, np.stack([c.vectors[space] for c in clips]))
            self._dirty.add(space)
        return len(clips)

    def remove(self, media_ids: list[int]) -> None:
        ids = self.context.media.unit_ids(media_ids, self.name)
        if not ids:
            return
        for space in set(self._existing_spaces()) | set(self._stores):
            if self._open_for_removal(space).remove(ids):
                self._dirty.add(space)

    def flush(self) -> None:
        for space in sorted(self._dirty):
            self._stores[space].save(self._store_path(space))
            self._stamps[space] = _stamp(self._store_path(space))
        self._dirty.clear()

    def compact(self) -> None:
        for space in self._existing_spaces():
            store = self._open_for_removal(space)
            if isinstance(store, FaissVectorStore):  # a server-side store compacts itself
                store.compact()
                self._dirty.add(space)
        self.flush()

    def stored_units(self) -> set[int]:
        found: set[int] = set()
        for space in self._existing_spaces():
            found |= {int(i) for i in self._open_for_removal(space).ids()}
        return found

    def drop_units(self, unit_ids: set[int]) -> None:
        ids = sorted(unit_ids)
        for space in self._existing_spaces():
            if self._open_for_removal(space).remove(ids):
                self._dirty.add(space)

    def _open_for_removal(self, space: str) -> VectorStore:
        """A space's store without loading the encoder (the file knows its dimension)."""
        if space not in self._stores:
            self._stamps[space] = _stamp(self._store_path(space))
            self._stores[space] = open_vector_store(self._store_path(space), None, self.context.vector_store,
                                                    self.context.store_name("visual", space))
        return self._stores[space]

    def reload(self) -> None:
        """Another process wrote to the library: stores whose file changed are read again when next used."""
        for space in list(self._stores):
            if space not in self._dirty and _stamp(self._store_path(space)) != self._stamps.get(space):
                self._stores.pop(space, None)

    # search -----------------------------------------------------------------------------------
    def rewrite(self, query: Query) -> VisualQuery | None:
        if query.image is not None:
            space = self.encoder.image_query_space
            return VisualQuery(space, self.encoder.encode_images([query.image])[space][0], query.media_ids)
        text = query.parsed.search_text if query.parsed is not None else (query.text or "")
        if text:
            return VisualQuery(self.encoder.text_space, self._text_vector(text), query.media_ids)
        return None

    def _text_vector(self, text: str) -> np.ndarray:
        """A text query's vector, remembered for the next ``TEXT_CACHE`` distinct texts (paging, retries
        and popular queries skip the text encoder)."""
        with self._text_lock:
            if (vector := self._text_cache.get(text)) is not None:
                self._text_cache.move_to_end(text)
                return vector
        vector = self.encoder.encode_texts([text])[0]
        vector.setflags(write=False)
        with self._text_lock:
            self._text_cache[text] = vector
            while len(self._text_cache) > TEXT_CACHE:
                self._text_cache.popitem(last=False)
        return vector

    def recall(self, module_query: VisualQuery, k: int) -> list[Hit]:
        allowed = module_query.media_ids
        if allowed is not None and not allowed:
            return []
        # with filters, look deeper so that k clips of allowed media remain after filtering
        fetch = k if allowed is None else min(k * FILTER_OVERFETCH, max(k, len(self._store(module_query.space))))
        scores, ids = self._store(module_query.space).search(module_query.vector[None, :], fetch)
        units = self.context.media.ready_units([int(i) for i in ids[0] if i >= 0])
        hits = [Hit(u.media_id, u.start, u.end, float(s), u.thumb)
                for s, i in zip(scores[0], ids[0])
                if (u := units.get(int(i))) and (allowed is None or u.media_id in allowed)]
        return hits[:k]

    def aggregate(self, hits: list[Hit], module_query: VisualQuery) -> list[Segment]:
        return merge_hits(hits, self.name, max_gap=self.config.merge_gap, spread=self.config.merge_spread)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino
