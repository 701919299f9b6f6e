"""Decode media into frames: 1 frame per second (configurable) with exact timestamps.

Videos are decoded with PyAV (FFmpeg) using frame-level threading. Every frame
is decoded (a codec cannot skip to a time without a keyframe), but only the
frames picked for sampling are converted to RGB and scaled — conversion is the
costly step. A picked frame is the first one whose presentation time reaches
the next sampling time, and its own timestamp is kept, so ``t`` is exact.
Images are one-frame media at ``t = 0``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from zhaopian.search.errors import MediaError
from zhaopian.search.types import Frame

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
#: images, and videos whose frames are, larger than this are refused before decoding (decompression bombs)
MAX_IMAGE_PIXELS = 120_000_000
#: frames are scaled so their longer side is at most this many pixels
DEFAULT_MAX_SIDE = 640


@dataclass(frozen=True)
class Probe:
    kind: str  # "video" | "image"
    duration: float
    width: int
    height: int
    fps: float
    #: when it was recorded (epoch seconds): container creation_time or EXIF date; None if unknown
    recorded: float | None = None


def media_kind(path: Path) -> str:
    return "image" if path.suffix.lower() in IMAGE_SUFFIXES else "video"


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")


def _check_size(path: Path | BinaryIO | str, width: int, height: int, what: str) -> None:
    """Refuse a picture or video frame of no pixels or too many, before any pixel is decoded."""
    if width <= 0 or height <= 0:
        raise MediaError(f"{path}: {what} has no pixels ({width}x{height})")
    if width * height > MAX_IMAGE_PIXELS:
        raise MediaError(f"{path}: {what} too large ({width}x{height} pixels, limit {MAX_IMAGE_PIXELS})")


def _scaled(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height))
    # even sizes keep swscale and most codecs happy
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def _open_header(source: Path | BinaryIO) -> Image.Image:
    """Read only the image header; the caller checks the size (so PIL's bomb warning is noise)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(source)


def open_image(source: Path | BinaryIO, max_side: int = DEFAULT_MAX_SIDE, name: str | None = None) -> Image.Image:
    """Open an image safely: size checked before pixels are decoded, then scaled down."""
    path = name or source
    if isinstance(source, Path):
        _check_file(source)
    try:
        with _open_header(source) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise MediaError(f"{path}: image too large ({im.width}x{im.height} pixels, limit {MAX_IMAGE_PIXELS})")
            im.draft("RGB", (max_side, max_side))  # JPEG: decode at reduced size
            im = im.convert("RGB")
            im.thumbnail((max_side, max_side))
            return im
    except MediaError:
        raise
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as exc:
        raise MediaError(f"{path}: unreadable image ({exc.__class__.__name__}: {exc})") from exc


def probe(path: Path) -> Probe:
    """Kind, duration and size of a medium; raises MediaError for anything not decodable."""
    path = Path(path)
    _check_file(path)
    if media_kind(path) == "image":
        try:
            with _open_header(path) as im:
                _check_size(path, im.width, im.height, "image")
                return Probe("image", 0.0, im.width, im.height, 0.0, _exif_time(im))
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as exc:
            raise MediaError(f"{path}: unreadable image ({exc.__class__.__name__})") from exc
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream")
            stream = container.streams.video[0]
            _check_size(path, stream.codec_context.width, stream.codec_context.height, "video frame")
            duration = _duration(container, stream)
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            return Probe("video", duration, stream.codec_context.width, stream.codec_context.height, fps,
                         _parse_time(container.metadata.get("creation_time") or stream.metadata.get("creation_time")))
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(f"{path}: not a readable video ({exc.__class__.__name__})") from exc


def _parse_time(value: str | None, exif: bool = False) -> float | None:
    """ISO 8601 (``2023-05-01T10:00:00.000000Z``) or EXIF (``2023:05:01 10:00:00``) -> epoch seconds."""
    if not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    if exif:
        text = text.replace(":", "-", 2)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp() if moment.year > 1970 else None


def _exif_time(image) -> float | None:
    try:
        exif = image.getexif()
        value = exif.get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.DateTimeOriginal) or exif.get(ExifTags.Base.DateTime)
    except Exception:  # a damaged EXIF block must not stop indexing
        return None
    return _parse_time(str(value), exif=True) if value else None


def _duration(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def iter_frames(path: Path, fps: float = 1.0, max_side: int = DEFAULT_MAX_SIDE, threads: int = 0) -> Iterator[Frame]:
    """Yield sampled frames of a video (or the single frame of an image).

    ``fps`` is the sampling rate (1.0 = one frame per second). A truncated or
    corrupt video raises MediaError; frames yielded before the damage are valid.
    """
    path = Path(path)
    if fps <= 0:
        raise ValueError("fps must be positive")
    if media_kind(path) == "image":
        yield Frame(0.0, np.asarray(open_image(path, max_side)))
        return
    _check_file(path)
    step = 1.0 / fps
    yielded = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = threads
            start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            _check_size(path, stream.codec_context.width, stream.codec_context.height, "video frame")
            width, height = _scaled(stream.codec_context.width, stream.codec_context.height, max_side)
            next_t = 0.0
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * frame.time_base) - start
                if t + 1e-6 < next_t:
                    continue
                image = frame.to_ndarray(format="rgb24", width=width, height=height)
                yield Frame(round(max(t, 0.0), 3), image)
                yielded += 1
                # next sample: the next multiple of step after this frame
                next_t = (int(t / step + 1e-6) + 1) * step
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(f"{path}: corrupt or truncated video after {yielded} frames ({exc.__class__.__name__})") from exc
    if yielded == 0:
        raise MediaError(f"{path}: no decodable video frames")
