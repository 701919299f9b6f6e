"""Frames of a segment for the rerankers: which times, what size, decoded with PyAV.

Qwen-VL models read a video as frames taken at a fixed rate and grouped in
pairs (``temporal_patch_size`` 2: two frames make one temporal patch), each
resized so that its height and width are multiples of ``patch_size × merge_size``
(14 × 2 = 28 for Qwen2-VL and Qwen2.5-VL, 16 × 2 = 32 for Qwen3-VL) within a pixel
budget. :func:`sample_times` and :func:`frame_size` reproduce that:

* frames at ``fps`` (2 by default) over the segment, at least ``min_frames`` and
  at most ``max_frames`` of them, their count a multiple of the temporal patch
  (a long segment is sampled more sparsely, a short one more densely);
* the size from transformers' own ``smart_resize`` (Qwen2-VL's image processor),
  so the model's processor has nothing left to resize;
* :func:`group_times`: the time of each temporal group (the mean of its frames),
  which Qwen3-VL writes into its prompt as ``<1.2 seconds>``.

:func:`decode_at` decodes a video at given times in one pass: it seeks to the
keyframe before the first time, decodes forward and keeps, for each time, the
first frame shown at or after it (as ``indexer/thumbnails.py`` ``frame_at`` does for
one time), seeking again only across long gaps. A still image gives the same
picture for every time.

The built-in reranker uses :func:`grid_times` and :func:`decode_at` to look at a
segment again at a higher rate; its frames are on a fixed grid so that frames
seen for one query are reused for the next.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

from .errors import MediaError

#: the same limit as ingestion (indexer/decode.py): larger images are refused
MAX_IMAGE_PIXELS = 120_000_000
#: a gap between two wanted times longer than this many seconds is crossed by seeking, not decoding
SEEK_GAP = 3.0


@dataclass(frozen=True)
class FramePlan:
    """How a reranker samples a segment (Qwen-VL's video conventions by default)."""

    fps: float = 2.0
    min_frames: int = 4
    max_frames: int = 16
    #: frames per temporal patch: the frame count is a multiple of it
    temporal_patch: int = 2
    #: height and width are multiples of this (patch_size × merge_size)
    factor: int = 28
    min_pixels: int = 16 * 28 * 28
    max_pixels: int = 192 * 28 * 28


@dataclass
class ClipFrames:
    """Frames sampled from one segment."""

    #: seconds into the medium, one per frame
    times: list[float]
    #: HxWx3 uint8 RGB, all of one size
    frames: list[np.ndarray]
    start: float
    end: float
    #: the sampling rate: frame i is at ``start + i / fps``
    fps: float

    @property
    def relative_times(self) -> list[float]:
        return [t - self.start for t in self.times]


def frame_count(duration: float, plan: FramePlan) -> int:
    """``fps`` × duration, kept within [min_frames, max_frames] and a multiple of the temporal patch."""
    m = plan.temporal_patch
    low = max(m, math.ceil(plan.min_frames / m) * m)
    high = max(low, plan.max_frames // m * m)
    n = round(max(duration, 0.0) * plan.fps / m) * m
    return min(max(n, low), high)


def sample_rate(start: float, end: float, plan: FramePlan) -> float:
    """Frames per second that put :func:`frame_count` frames over [start, end) (``plan.fps`` for an instant)."""
    duration = max(end - start, 0.0)
    return frame_count(duration, plan) / duration if duration > 1e-3 else plan.fps


def sample_times(start: float, end: float, plan: FramePlan) -> list[float]:
    """Evenly spaced times over [start, end): the first at ``start``, ``1 / rate`` apart."""
    n = frame_count(max(end - start, 0.0), plan)
    rate = sample_rate(start, end, plan)
    return [round(start + i / rate, 4) for i in range(n)]


def group_times(times: list[float], temporal_patch: int = 2) -> list[float]:
    """The mean time of each group of ``temporal_patch`` frames (the last frame repeats to fill a group)."""
    padded = list(times) + [times[-1]] * (-len(times) % temporal_patch) if times else []
    return [(padded[i] + padded[i + temporal_patch - 1]) / 2 for i in range(0, len(padded), temporal_patch)]


def frame_size(height: int, width: int, plan: FramePlan) -> tuple[int, int]:
    """(height, width) for the model: multiples of ``plan.factor`` within the pixel budget.

    transformers' ``smart_resize`` (Qwen2-VL's image processor) when transformers is installed;
    without it (the endpoint reranker needs no transformers) the aspect ratio is kept within the
    budget and the server's own processor aligns the size.
    """
    try:
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize
    except ImportError:
        scale = min(1.0, math.sqrt(plan.max_pixels / max(height * width, 1)))
        return max(1, round(height * scale)), max(1, round(width * scale))
    return smart_resize(height, width, factor=plan.factor, min_pixels=plan.min_pixels, max_pixels=plan.max_pixels)


def grid_times(start: float, end: float, fps: float, max_frames: int, duration: float) -> list[float]:
    """Times on the fixed grid ``k / fps`` within [start, end] (and the medium), at most ``max_frames``
    of them (evenly thinned, still on the grid)."""
    lo = max(0.0, start)
    hi = min(end, duration) if duration > 0 else end
    first, last = math.ceil(lo * fps - 1e-6), math.floor(hi * fps + 1e-6)
    if duration > 0 and last / fps >= duration:  # no frame is shown at the very end
        last = math.ceil(duration * fps) - 1
    ks = list(range(first, last + 1)) or [max(0, min(first, last))]
    if len(ks) > max_frames:
        picks = np.linspace(0, len(ks) - 1, max_frames).round().astype(int)
        ks = [ks[i] for i in dict.fromkeys(picks.tolist())]
    return [round(k / fps, 4) for k in ks]


def _resized(image: Image.Image, size: tuple[int, int] | None) -> np.ndarray:
    if size is not None and (image.height, image.width) != size:
        image = image.resize((size[1], size[0]), Image.Resampling.BICUBIC)
    return np.asarray(image.convert("RGB"))


def _open_still(path: Path, max_side: int | None) -> Image.Image:
    """An indexed still image (checked at ingest), scaled down to ``max_side`` while decoding."""
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise MediaError(f"{path.name}: image too large ({image.width}x{image.height} pixels)")
            if max_side:
                image.draft("RGB", (max_side, max_side))  # JPEG: decode at reduced size
            image = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise MediaError(f"{path.name}: unreadable image ({type(exc).__name__})") from exc
    if max_side:
        image.thumbnail((max_side, max_side))
    return image


def decode_at(path: Path | str, kind: str, times: list[float], size: tuple[int, int] | None = None,
              max_side: int | None = None) -> list[np.ndarray]:
    """The frames shown at ``times`` (seconds, any order) as HxWx3 uint8 arrays.

    ``size`` is (height, width) of every returned frame; otherwise ``max_side`` bounds the longer
    side (aspect kept), otherwise frames keep the video's size. Raises MediaError.
    """
    path = Path(path)
    if not times:
        return []
    if kind == "image":
        frame = _resized(_open_still(path, max(size) if size else max_side), size)
        return [frame] * len(times)
    order = sorted(range(len(times)), key=lambda i: times[i])
    out: list[np.ndarray | None] = [None] * len(times)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            origin = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            width, height = stream.codec_context.width, stream.codec_context.height
            if size is not None:
                height, width = size
            elif max_side is not None and max(width, height) > max_side:
                scale = max_side / max(width, height)
                width, height = max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)
            _decode_sorted(container, stream, origin, [times[i] for i in order], order, out, width, height)
    except (av.FFmpegError, IndexError, OSError, ValueError) as exc:
        raise MediaError(f"{path.name}: cannot decode frames at {times[order[0]]:.1f}-{times[order[-1]]:.1f} s "
                         f"({type(exc).__name__})") from exc
    if any(f is None for f in out):
        raise MediaError(f"{path.name}: no frame at {times[order[0]]:.1f} s")
    return out  # type: ignore[return-value]


def _decode_sorted(container, stream, origin: float, wanted: list[float], slots: list[int],
                   out: list, width: int, height: int) -> None:
    """Fill ``out[slots[j]]`` with the frame shown at ``wanted[j]`` (ascending), seeking across long gaps."""
    j = 0
    while j < len(wanted):
        t = wanted[j]
        if t > 0 and stream.time_base:
            container.seek(int((t + origin) / stream.time_base), stream=stream, backward=True, any_frame=False)
        last = None
        jumped = False
        served = 0  # times filled since this seek: only a gap after one of them is worth a new seek
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            last = frame
            shown = frame.time - origin
            image = None
            while j < len(wanted) and shown + 1e-3 >= wanted[j]:
                if image is None:
                    image = frame.to_ndarray(format="rgb24", width=width, height=height)
                out[slots[j]] = image
                j += 1
                served += 1
            if j >= len(wanted):
                return
            if served and wanted[j] - shown > SEEK_GAP:
                jumped = True
                break
        if not jumped:  # the video ended: the last frame stands for every later time
            if last is None:
                return
            image = last.to_ndarray(format="rgb24", width=width, height=height)
            while j < len(wanted):
                out[slots[j]] = image
                j += 1


def plan_clip(kind: str, start: float, end: float, duration: float, plan: FramePlan,
              source_size: tuple[int, int]) -> ClipFrames:
    """A segment's times and rate for a VLM (``frames`` still empty): ``plan``'s times over [start, end]."""
    if duration > 0:
        end = min(end, duration)
        start = min(start, max(0.0, end - 1e-3))
    if kind == "image":  # a still is one temporal patch of identical frames, as Qwen-VL reads an image
        start = end = 0.0
        times = [0.0] * plan.temporal_patch
    else:
        times = sample_times(start, end, plan)
    return ClipFrames(times=times, frames=[], start=start, end=end, fps=sample_rate(start, end, plan))


def sample_clips(path: Path | str, kind: str, clips: list[ClipFrames], size: tuple[int, int]) -> list[ClipFrames]:
    """Fill planned clips of one medium with their frames (``size``: height, width) in one decoding pass."""
    times = [t for c in clips for t in c.times]
    frames = decode_at(path, kind, times, size=size)
    out, k = [], 0
    for c in clips:
        out.append(ClipFrames(times=c.times, frames=frames[k:k + len(c.times)], start=c.start, end=c.end, fps=c.fps))
        k += len(c.times)
    return out


def sample_clip(path: Path | str, kind: str, start: float, end: float, duration: float, plan: FramePlan,
                source_size: tuple[int, int]) -> ClipFrames:
    """A segment's frames for a VLM: ``plan``'s times over [start, end] and size from ``source_size``
    (the medium's height, width)."""
    clip = plan_clip(kind, start, end, duration, plan, source_size)
    return sample_clips(path, kind, [clip], frame_size(*source_size, plan))[0]
