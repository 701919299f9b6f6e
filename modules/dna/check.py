"""Which indexed videos contain this clip, and where: ``zhaopian dna check`` and
``POST /v1/libraries/{name}/dna/check``.

A video clip is sampled at the module's ``check_fps`` (4 frames/s) and aligned with the library's
media (modules/dna/align.py): each match is a span of the clip ↔ a span of an indexed medium.
An image is matched frame by frame: the media showing that picture, at which moments.

A clip with less than ``min_seconds`` (2 s) of picture, or whose frames are all blank or flat,
is refused with ``media_too_short``; a file that is not a readable video or image is
``media_invalid``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from zhaopian.search.errors import ConfigError, MediaError, NotFound, ZhaopianError
from zhaopian.search.library import Library
from zhaopian.search.segments import merge_hits
from zhaopian.search.types import CopySpan

from .module import DnaModule
from .sample import duration_of, is_image, sample_file


class TooShort(ZhaopianError):
    """A clip with too little picture to fingerprint."""

    code = "media_too_short"


class Contains(BaseModel):
    """An indexed medium that shows part of the clip, and where."""

    media_id: int
    title: str
    video: str
    duration: float
    #: best first; ``start``/``end`` are in this medium, ``query_start``/``query_end`` in the clip
    spans: list[CopySpan]


class CheckReport(BaseModel):
    clip: str
    kind: Literal["video", "image"]
    duration: float
    #: frames sampled, and how many of them had a fingerprint (the rest were blank or flat)
    frames: int
    coded: int
    #: media sharing a part with the clip, best first
    matches: list[Contains] = Field(default_factory=list)
    timings_ms: dict[str, float] = Field(default_factory=dict)


def dna_module(library: Library) -> DnaModule:
    module = library.modules.get("dna")
    if not isinstance(module, DnaModule):
        raise ConfigError(f"library {library.name!r} has no dna module; copies are found in a library created "
                          f"with it, e.g. zhaopian library create NAME --modules visual,dna")
    return module


def check_file(library: Library, path: Path, name: str | None = None) -> CheckReport:
    """The indexed media that contain (part of) the video or image at ``path`` (called ``name`` in messages:
    an upload's own name, not where the server keeps it)."""
    name = name or str(path)
    try:
        return _check(library, Path(path), name)
    except MediaError as exc:
        raise MediaError(exc.message.replace(str(path), name)) from exc


def _check(library: Library, path: Path, name: str) -> CheckReport:
    module = dna_module(library)
    library.refresh()  # what workers indexed meanwhile
    t0 = time.perf_counter()
    minimum = module.config.min_seconds
    if is_image(path):
        fp = sample_file(path, 1.0)
        if not len(fp):
            raise TooShort(f"{name}: the picture is blank or flat: nothing to fingerprint")
        t1 = time.perf_counter()
        spans = _frame_spans(module, module.frames_like(fp))
        kind, duration = "image", 0.0
    else:
        duration = duration_of(path)
        if duration < minimum:
            raise TooShort(f"{name}: too short to fingerprint: needs at least {minimum:g} s of video "
                           f"(this one has {duration:.1f} s)")
        fp = sample_file(path, module.config.check_fps, duration)
        if len(fp) * fp.step < minimum:
            raise TooShort(f"{name}: too short to fingerprint: needs at least {minimum:g} s of picture, and only "
                           f"{len(fp) * fp.step:.1f} s of it is not blank or flat")
        t1 = time.perf_counter()
        spans = module.check(fp)
        kind, duration = "video", fp.duration
    t2 = time.perf_counter()
    by_media: dict[int, list[CopySpan]] = {}
    for span in spans:
        by_media.setdefault(span.media_id, []).append(span)
    matches = []
    for media_id, found in by_media.items():
        try:
            record = library.media.get(media_id)
        except NotFound:  # deleted meanwhile
            continue
        matches.append(Contains(media_id=media_id, title=record.title, video=record.path, duration=record.duration,
                                spans=found))
    return CheckReport(clip=name, kind=kind, duration=round(duration, 3), frames=fp.sampled, coded=len(fp),
                       matches=matches, timings_ms={"fingerprint": round((t1 - t0) * 1e3, 1),
                                                    "match": round((t2 - t1) * 1e3, 1)})


def _frame_spans(module: DnaModule, hits) -> list[CopySpan]:
    """An image's matching frames -> one span per run of touching frames of a medium, best first."""
    segments = merge_hits(hits, module.name, max_gap=module.config.merge_gap, spread=1.0)
    return [CopySpan(media_id=s.media_id, start=round(s.start, 2), end=round(s.end, 2), query_start=0.0,
                     query_end=0.0, score=round(s.score, 4), relation="part_of")
            for s in sorted(segments, key=lambda s: -s.score)]
