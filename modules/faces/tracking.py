"""Faces over time: which sampled frames to look at, when to compute a descriptor, and tracks.

A :class:`FaceScanner` follows one medium's sampled frames in time order (across chunks):

1. **Unchanged frames are not looked at.** The OCR module's tile change detector compares each
   frame with the last one examined; a frame where no tile changed beyond compression noise shows
   the same faces as that frame (or none), so the detector does not run. This skips static shots
   (slides, title cards, a tripod shot of an empty room).
2. **Detection** runs dlib's HOG detector on the frame scaled to ``detect_side`` pixels.
3. **Descriptors are reused along a track.** A face whose box overlaps (IoU ≥ ``link_iou``) a face
   of the previous examined frame and whose small grayscale patch still correlates with it
   (≥ ``link_patch``: the same face, not another person who took the same place after a cut)
   continues that face's track without a new descriptor, until ``describe_every`` seconds have
   passed since the track's last descriptor. Descriptors cost about 160 ms each, detection 45 ms.
4. **Every other face is described**, and joins the live track (seen within ``track_gap``
   seconds) whose mean descriptor is nearest, if nearer than ``track_distance`` (dlib distance);
   otherwise it starts a new track.

:func:`build_tracks` turns a medium's sightings into :class:`Track` s: a time span, the face's
mean raw descriptor over the track, a thumbnail time (the largest, most confident sighting) and
its box. A track longer than ``max_track_seconds`` is cut so results point at moments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from zhaopian.modules.ocr.reader import ChangeDetector
from zhaopian.search.types import Frame

from .analyzer import Box, Detection, FaceAnalyzer, as_rgb_array, iou

#: side of the grayscale patch compared between frames to tell that a face is still the same one
PATCH_SIDE = 16


class ScanConfig(BaseModel):
    """How faces are found and followed in a medium's sampled frames."""

    model_config = ConfigDict(extra="forbid")

    #: frames are scaled down to this longer side before detection: the smallest face found is about
    #: 80 px at this size (at 640, 1/8 of the frame's width); smaller is cheaper
    detect_side: int = Field(default=640, ge=80, le=4096)
    #: upsample the frame this many times before detection (finds faces half as large, 4x the cost)
    upsample: int = Field(default=0, ge=0, le=2)
    #: detections scored below this by the HOG detector are dropped (dlib's default is 0)
    min_score: float = Field(default=0.0, ge=-2.0, le=3.0)
    #: a frame is examined when one of its small tiles changed by more than this (0..1) since the last
    #: frame examined; 0 examines every frame (see the OCR module's ChangeDetector)
    change_threshold: float = Field(default=0.05, ge=0.0, le=1.0)
    #: a face continues the previous frame's face without a descriptor when their boxes overlap this much
    link_iou: float = Field(default=0.3, gt=0.0, le=1.0)
    #: ... and their 16x16 grayscale patches correlate at least this much
    link_patch: float = Field(default=0.5, ge=-1.0, le=1.0)
    #: a followed face is described again after this many seconds (its track's descriptor gets better)
    describe_every: float = Field(default=5.0, gt=0.0)
    #: a described face joins a live track whose mean descriptor is nearer than this (dlib distance)
    track_distance: float = Field(default=0.5, gt=0.0, le=2.0)
    #: a track stays live this many seconds after its last sighting (missed detections, a turned head)
    track_gap: float = Field(default=2.0, ge=0.0)
    #: a track is cut after this many seconds, so a result points at a moment, not a whole programme
    max_track_seconds: float = Field(default=60.0, gt=0.0)


@dataclass(frozen=True)
class Sighting:
    """One face in one sampled frame: its track (within the medium) and, if computed, its descriptor."""

    t: float
    track: int
    box: Box
    score: float
    descriptor: np.ndarray | None = None


@dataclass(frozen=True)
class FrameFaces:
    """What the scanner made of one sampled frame."""

    t: float
    sightings: tuple[Sighting, ...]
    examined: bool  # the detector ran (False: unchanged since the last examined frame)
    described: int  # descriptors computed


@dataclass
class _Live:
    """A track being followed."""

    start: float
    last: float
    last_described: float
    total: np.ndarray  # sum of raw descriptors
    count: int

    @property
    def mean(self) -> np.ndarray:
        return self.total / self.count


@dataclass
class _Seen:
    """A face of the last examined frame."""

    track: int
    box: Box
    score: float
    patch: np.ndarray


@dataclass
class FaceScanner:
    """Finds and follows the faces of one medium; feed it the medium's frames in time order."""

    analyzer: FaceAnalyzer
    config: ScanConfig = field(default_factory=ScanConfig)
    #: seconds between sampled frames: a track stays live at least one and a half of them
    step: float = 1.0

    def __post_init__(self) -> None:
        self.detector = ChangeDetector(self.config.change_threshold, work_side=320, tiles_across=40)
        self.gap = max(self.config.track_gap, 1.5 * self.step) + 1e-6
        self._live: dict[int, _Live] = {}
        self._last: list[_Seen] = []
        self._last_t: float | None = None
        self._next = 0

    def scan(self, frames: Sequence[Frame]) -> list[FrameFaces]:
        return [self.scan_frame(f.t, f.image) for f in frames]

    def scan_frame(self, t: float, image) -> FrameFaces:
        rgb = as_rgb_array(image)
        if not self.detector.changed(rgb) and self._last_t is not None:
            return self._carry(t)
        self._forget(t)
        detections = self.analyzer.detect(rgb, max_side=self.config.detect_side, upsample=self.config.upsample,
                                          min_score=self.config.min_score)
        gray = np.asarray(Image.fromarray(rgb).convert("L"))
        patches = [_patch(gray, d.box) for d in detections]
        followed, to_describe = self._follow(t, detections, patches)
        faces = self.analyzer.describe(rgb, [detections[i] for i in to_describe])
        sightings: dict[int, Sighting] = {}
        taken = {s.track for s in followed.values()}
        for i, s in followed.items():
            sightings[i] = s
        for i, face in zip(to_describe, faces):
            track = self._join(t, face.descriptor, taken)
            taken.add(track)
            sightings[i] = Sighting(t, track, detections[i].box, detections[i].score, face.descriptor)
        ordered = tuple(sightings[i] for i in range(len(detections)))
        self._last = [_Seen(s.track, s.box, s.score, patches[i]) for i, s in enumerate(ordered)]
        self._last_t = t
        for s in ordered:
            self._live[s.track].last = t
        return FrameFaces(t, ordered, True, len(to_describe))

    # steps ---------------------------------------------------------------------------------------
    def _carry(self, t: float) -> FrameFaces:
        """An unchanged frame shows what the last examined frame showed (tracks too long are cut)."""
        out = []
        for seen in self._last:
            live = self._live[seen.track]
            if t - live.start >= self.config.max_track_seconds:
                # start a new track with the same face: it keeps the old track's mean as its first descriptor
                seen.track = self._new_track(t, live.mean)
                out.append(Sighting(t, seen.track, seen.box, seen.score, live.mean.copy()))
            else:
                out.append(Sighting(t, seen.track, seen.box, seen.score))
            self._live[seen.track].last = t
        self._last_t = t
        return FrameFaces(t, tuple(out), False, 0)

    def _follow(self, t: float, detections: list[Detection],
                patches: list[np.ndarray]) -> tuple[dict[int, Sighting], list[int]]:
        """Faces that continue a face of the last examined frame without a new descriptor, and the rest."""
        followed: dict[int, Sighting] = {}
        used: set[int] = set()
        for i, (d, patch) in enumerate(zip(detections, patches)):
            best, best_iou = None, self.config.link_iou
            for j, seen in enumerate(self._last):
                overlap = iou(d.box, seen.box)
                if j not in used and overlap >= best_iou:
                    best, best_iou = j, overlap
            if best is None:
                continue
            seen = self._last[best]
            live = self._live[seen.track]
            if (_correlation(patch, seen.patch) >= self.config.link_patch
                    and t - live.last_described < self.config.describe_every
                    and t - live.start < self.config.max_track_seconds):
                used.add(best)
                followed[i] = Sighting(t, seen.track, d.box, d.score)
        return followed, [i for i in range(len(detections)) if i not in followed]

    def _join(self, t: float, descriptor: np.ndarray, taken: set[int]) -> int:
        """The live track this described face belongs to (nearest mean within track_distance), or a new one."""
        best, best_d = None, self.config.track_distance
        for track, live in self._live.items():
            if track in taken or t - live.last > self.gap:
                continue
            if t - live.start >= self.config.max_track_seconds:
                continue
            d = float(np.linalg.norm(live.mean - descriptor))
            if d < best_d:
                best, best_d = track, d
        if best is None:
            return self._new_track(t, descriptor)
        live = self._live[best]
        live.total = live.total + descriptor
        live.count += 1
        live.last_described = t
        return best

    def _new_track(self, t: float, descriptor: np.ndarray) -> int:
        track = self._next
        self._next += 1
        self._live[track] = _Live(t, t, t, descriptor.astype(np.float64).copy(), 1)
        return track

    def _forget(self, t: float) -> None:
        """Tracks gone for good are dropped (a long video must not make every join slower)."""
        keep = {seen.track for seen in self._last}
        for old in [k for k, v in self._live.items() if k not in keep and t - v.last > self.gap]:
            del self._live[old]


@dataclass(frozen=True)
class Track:
    """A face followed over a time span: one unit of the ``faces`` module."""

    start: float
    end: float
    thumb: float
    box: Box  # at the thumbnail time
    score: float  # the best detector score
    descriptor: np.ndarray  # mean raw descriptor of the track's described sightings (float32)
    sightings: int
    described: int


def build_tracks(frames: Sequence[FrameFaces], step: float, duration: float) -> list[Track]:
    """A medium's sightings grouped by track; a sighting at ``t`` covers ``[t, t + step)``."""
    groups: dict[int, list[Sighting]] = {}
    for frame in frames:
        for s in frame.sightings:
            groups.setdefault(s.track, []).append(s)
    tracks = []
    for sightings in groups.values():
        described = [s.descriptor for s in sightings if s.descriptor is not None]
        if not described:  # cannot happen: a track starts with a described face
            continue
        best = max(sightings, key=lambda s: ((s.box[2] - s.box[0]) * (s.box[3] - s.box[1]), s.score))
        start, last = sightings[0].t, sightings[-1].t
        end = last + step
        if duration > 0:
            end = min(end, duration)
        tracks.append(Track(start, max(end, last), best.t, best.box, max(s.score for s in sightings),
                            np.mean(described, axis=0).astype(np.float32), len(sightings), len(described)))
    return sorted(tracks, key=lambda tr: (tr.start, tr.thumb))


def _patch(gray: np.ndarray, box: Box) -> np.ndarray:
    """The face's grayscale box as a zero-mean, unit-variance 16x16 patch."""
    h, w = gray.shape
    x0, y0 = int(box[0] * w), int(box[1] * h)
    x1, y1 = max(x0 + 1, round(box[2] * w)), max(y0 + 1, round(box[3] * h))
    crop = Image.fromarray(gray[y0:y1, x0:x1]).resize((PATCH_SIDE, PATCH_SIDE), Image.Resampling.BOX)
    p = np.asarray(crop, np.float32)
    std = float(p.std())
    return (p - p.mean()) / std if std > 1e-3 else np.zeros_like(p)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).mean())
