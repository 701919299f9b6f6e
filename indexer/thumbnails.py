"""Thumbnails: a JPEG of a medium at a moment, cached on disk by content hash, time and width.

A video is seeked to the keyframe before ``t`` and decoded forward to the first frame at or after
``t``; an image is scaled. Cache files are written then renamed, so a crash never leaves half a JPEG.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import av
from PIL import Image

from zhaopian.search.errors import MediaError

from .decode import open_image

MIN_WIDTH, MAX_WIDTH = 32, 1280
#: thumbnails are cached per tenth of a second
TIME_STEP = 0.1


def frame_at(path: Path, t: float) -> Image.Image:
    """The frame of a video shown at ``t`` seconds (the last one if ``t`` is past the end)."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if t > 0 and stream.time_base:
                container.seek(int(t / stream.time_base), stream=stream, backward=True, any_frame=False)
            last = None
            for frame in container.decode(stream):
                last = frame
                if frame.time is not None and frame.time + 1e-3 >= t:
                    break
    except (av.FFmpegError, IndexError, OSError) as exc:
        raise MediaError(f"{path.name}: cannot decode a frame at {t:.1f} s ({exc})") from exc
    if last is None:
        raise MediaError(f"{path.name}: no frame at {t:.1f} s")
    return last.to_image()


def render(path: Path, kind: str, t: float, width: int) -> bytes:
    """A JPEG ``width`` pixels wide of ``path`` at ``t`` seconds."""
    width = max(MIN_WIDTH, min(MAX_WIDTH, int(width)))
    image = open_image(path, max_side=MAX_WIDTH) if kind == "image" else frame_at(path, max(0.0, t))
    if image.width > width:
        image = image.resize((width, max(1, round(image.height * width / image.width))), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=82, optimize=True)
    return out.getvalue()


def thumbnail(path: Path, kind: str, sha256: str, t: float, width: int, cache_dir: Path) -> Path:
    """The cached JPEG for (content, time, width), rendered on first use."""
    t = 0.0 if kind == "image" else round(max(0.0, t) / TIME_STEP) * TIME_STEP
    width = max(MIN_WIDTH, min(MAX_WIDTH, int(width)))
    target = cache_dir / sha256[:2] / f"{sha256}-{round(t * 1000)}-{width}.jpg"
    if target.is_file():
        return target
    data = render(path, kind, t, width)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".thumb-")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, target)
    return target
