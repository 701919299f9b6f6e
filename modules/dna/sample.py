"""Frames of a file sampled more densely than a library samples them: for clips being checked and
for a new medium whose 1 frame/s codes hinted at a copy without settling it.

Sampling follows ``indexer/decode.py``: every frame is decoded, and the first one at or after each
multiple of the step is kept with its own timestamp; frames are scaled to at most 640 pixels (as
the library's frames are) before being reduced to grey, so both sides' codes are made alike.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from zhaopian.search.errors import MediaError

from .fingerprint import Fingerprint, fingerprint, image_fingerprint, reduce

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MAX_SIDE = 640
MAX_IMAGE_PIXELS = 120_000_000


def is_image(path: Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def duration_of(path: Path) -> float:
    """A video's length in seconds (MediaError when it is not a readable video)."""
    _check_file(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream")
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            return container.duration / av.time_base if container.duration is not None else 0.0
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(f"{path}: not a readable video ({exc.__class__.__name__})") from exc


def sample_file(path: Path, fps: float, duration: float | None = None, threads: int = 0) -> Fingerprint:
    """The fingerprint of a video sampled ``fps`` frames per second (an image: its one frame)."""
    path = Path(path)
    if is_image(path):
        return image_fingerprint(_open_image(path))
    _check_file(path)
    step = 1.0 / fps
    times, greys = [], []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = threads
            start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            width, height = stream.codec_context.width, stream.codec_context.height
            scale = min(1.0, MAX_SIDE / max(width, height, 1))
            size = (max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2))
            next_t = 0.0
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * frame.time_base) - start
                if t + 1e-6 < next_t:
                    continue
                times.append(round(max(t, 0.0), 3))
                greys.append(reduce(frame.to_ndarray(format="rgb24", width=size[0], height=size[1])))
                next_t = (int(t / step + 1e-6) + 1) * step
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(f"{path}: corrupt or truncated video after {len(times)} frames "
                         f"({exc.__class__.__name__})") from exc
    if not times:
        raise MediaError(f"{path}: no decodable video frames")
    if duration is None:
        duration = duration_of(path)
    return fingerprint(times, greys, step, max(duration, times[-1] + step))


def _check_file(path: Path) -> None:
    if not Path(path).is_file():
        raise MediaError(f"{path}: no such file")
    if Path(path).stat().st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")


def _open_image(path: Path) -> np.ndarray:
    _check_file(path)
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise MediaError(f"{path}: image too large ({im.width}x{im.height} pixels)")
            im.draft("RGB", (MAX_SIDE, MAX_SIDE))
            im = im.convert("RGB")
            im.thumbnail((MAX_SIDE, MAX_SIDE))
            return np.asarray(im)
    except MediaError:
        raise
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as exc:
        raise MediaError(f"{path}: unreadable image ({exc.__class__.__name__}: {exc})") from exc
