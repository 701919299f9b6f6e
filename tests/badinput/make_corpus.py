"""The bad-input corpus: malformed and hostile files, paths, queries and HTTP requests.

    python tests/badinput/make_corpus.py OUT_DIR     # writes the corpus, prints one line per case

``OUT_DIR`` gets ``media/`` (the files, meant to be the media root or inside it), ``outside/``
(targets of links that leave the media root), ``requests/`` (HTTP bodies) and ``manifest.json``
(every case: what it is and which error codes may answer it). Deterministic: the same bytes on
every run (seeded noise, one-threaded encoders, bit-exact muxers). Nothing of it is committed;
``tests/test_bad_input.py`` writes it into a temporary folder and feeds every case through the
service and the HTTP API.

A case's ``expect`` lists the acceptable outcomes: error codes of the API's documented list, and
``ok`` where success is right too (a valid file with a strange name, a damaged video FFmpeg still
reads up to the damage, a query that is odd but means something).
"""

from __future__ import annotations

import io
import json
import os
import random
import struct
import sys
import tempfile
import zlib
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

SEED = 20240611
MEDIA_ERRORS = ("media_invalid",)
#: a 1 MiB query (and the limit of the app the tests build must let it through to the query check)
HUGE_QUERY_CHARS = 1 << 20


@dataclass
class FileCase:
    """A file (or link, folder, pipe) under ``media/``: indexed by path and, if ``upload``, uploaded."""

    name: str
    #: relative to the corpus's media folder
    path: str
    expect: list[str]
    what: str
    upload: bool = True


@dataclass
class PathCase:
    """A path string handed to ``zhaopian index`` / ``Service.index`` and ``{"path": ...}``."""

    name: str
    #: ``{media}``, ``{outside}`` and ``{data}`` are replaced by the folders' absolute paths
    path: str
    expect: list[str]
    what: str
    #: also given to ``zhaopian index`` (an empty argument there is the current folder, as in any command)
    cli: bool = True


@dataclass
class QueryCase:
    name: str
    text: str | None
    expect: list[str]
    what: str


@dataclass
class RequestCase:
    """An HTTP request. ``url`` may name ``{library}``, ``{medium}``, ``{job}``, ``{token}``;
    ``body`` is a file under ``requests/``; ``body_size`` ``over_limit`` means zeros past the upload limit."""

    name: str
    method: str
    url: str
    expect: list[str]
    what: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    #: multipart parts: name -> [filename, body file, content type]
    files: dict[str, list[str]] | None = None
    form: dict[str, str] | None = None
    body_size: str | None = None
    #: send the body in chunks without a Content-Length
    chunked: bool = False


@dataclass
class Corpus:
    root: Path
    files: list[FileCase]
    paths: list[PathCase]
    queries: list[QueryCase]
    requests: list[RequestCase]

    @property
    def media(self) -> Path:
        return self.root / "media"

    @property
    def outside(self) -> Path:
        return self.root / "outside"

    def body(self, name: str) -> bytes:
        return (self.root / "requests" / name).read_bytes()

    def __len__(self) -> int:
        return len(self.files) + len(self.paths) + len(self.queries) + len(self.requests)


# -- media makers ----------------------------------------------------------------------------------
def _frames(n: int, size: tuple[int, int], seed: int):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 3)
    for i in range(n):
        rgb = np.clip(base + i * 9 + rng.integers(-6, 7, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
        yield av.VideoFrame.from_ndarray(rgb, format="rgb24")


def video_bytes(fmt: str = "mp4", seconds: float = 3.0, fps: int = 10, size: tuple[int, int] = (64, 48),
                seed: int = 1, faststart: bool = False, codec: str = "libx264") -> bytes:
    """A short H.264 (or ``codec``) video in ``fmt``, the same bytes every time."""
    options = {"fflags": "+bitexact"}
    if faststart:
        options["movflags"] = "+faststart"
    codec = codec if codec in av.codecs_available else "mpeg4"
    with tempfile.TemporaryDirectory() as tmp:  # faststart rewrites the file by its name
        path = Path(tmp) / f"video.{fmt}"
        with av.open(str(path), "w", format=fmt, container_options=options) as container:
            stream = container.add_stream(codec, rate=fps, options={"threads": "1"} if codec == "libx264" else {})
            stream.width, stream.height = size
            stream.pix_fmt = "yuv420p"
            stream.codec_context.flags |= av.codec.context.Flags.bitexact
            for frame in _frames(int(seconds * fps), size, seed):
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        return path.read_bytes()


def audio_bytes(fmt: str, codec: str, seconds: float = 2.0, rate: int = 48000) -> bytes:
    """Sound only: a sine tone, no video stream."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt, container_options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        stream.codec_context.flags |= av.codec.context.Flags.bitexact
        fmt_name = stream.codec_context.format.name
        n = stream.codec_context.frame_size or 1024
        t = 0
        while t < seconds * rate:
            samples = np.sin(2 * np.pi * 440 * (np.arange(t, t + n) / rate)) * 0.3
            planar = fmt_name.endswith("p")
            dtype = {"flt": np.float32, "fltp": np.float32, "s16": np.int16, "s16p": np.int16,
                     "s32": np.int32, "s32p": np.int32}[fmt_name]
            if dtype is not np.float32:
                samples = samples * np.iinfo(dtype).max
            data = samples.astype(dtype).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(data if planar else data.reshape(1, -1), format=fmt_name, layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, t, Fraction(1, rate)
            container.mux(stream.encode(frame))
            t += n
        container.mux(stream.encode(None))
    return buffer.getvalue()


def image_bytes(fmt: str, rgb: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, rgb).save(buffer, format=fmt)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, bit_depth: int = 8, colour_type: int = 0, pixels: bool = True) -> bytes:
    """A PNG of zeros of any declared size: the IDAT is zlib-compressed row by row, so a
    20000x20000 picture is a few tens of KB (a decompression bomb); ``pixels=False`` gives the header only."""
    ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0))
    out = b"\x89PNG\r\n\x1a\n" + ihdr
    if pixels:
        channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
        row = b"\x00" * (1 + (width * channels * bit_depth + 7) // 8)
        compressor = zlib.compressobj(9)
        data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
        out += _png_chunk(b"IDAT", data)
    return out + _png_chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header (SOF0) claims ``width`` x ``height``."""
    data = bytearray(image_bytes("JPEG", (200, 120, 40), (32, 16)))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def gif_declaring(width: int, height: int) -> bytes:
    data = bytearray(image_bytes("GIF", (10, 200, 10), (16, 16)))
    struct.pack_into("<HH", data, 6, width, height)  # logical screen
    image = data.find(b"\x2c")  # image descriptor
    struct.pack_into("<HH", data, image + 5, width, height)
    return bytes(data)


def bmp_declaring(width: int, height: int) -> bytes:
    """BITMAPFILEHEADER + BITMAPINFOHEADER for a 24-bit picture of that size, and 64 bytes of pixels."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 64, 0, 0, 54) + info + b"\x80" * 64


def tiff_declaring(width: int, height: int) -> bytes:
    """A little-endian TIFF whose one IFD says ``width`` x ``height``, 8-bit grey, one strip of 16 bytes."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8 + 2 + 12 * 8 + 4), (277, 3, 1, 1), (279, 4, 1, 16)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 16


def webp_declaring(width: int, height: int) -> bytes:
    """A RIFF/WEBP with an extended header (VP8X) declaring the canvas, and no image data."""
    vp8x = struct.pack("<I", 0) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


def png_frames_video(width: int, height: int, frames: int = 2) -> bytes:
    """An AVI of PNG frames, each all zeros at ``width`` x ``height``: a video that is small on disk
    and enormous decoded (a 12000x12000 one is about 300 KB)."""
    frame = png_bytes(width, height)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="avi", container_options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = width, height, "gray"
        for i in range(frames):
            packet = av.Packet(frame)
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, i, i, Fraction(1, 1)
            container.mux(packet)
    return buffer.getvalue()


def flipped(data: bytes, start: int, end: int, count: int, seed: int) -> bytes:
    """``count`` random bytes in ``[start, end)`` replaced by random values."""
    rng = random.Random(seed)
    out = bytearray(data)
    for _ in range(count):
        i = rng.randrange(start, min(end, len(out)))
        out[i] = rng.randrange(256) if out[i] != 0 else rng.randrange(1, 256)
    return bytes(out)


# -- the corpus ------------------------------------------------------------------------------------
def _files(media: Path, outside: Path) -> list[FileCase]:
    cases: list[FileCase] = []

    def put(name: str, rel: str, data: bytes, expect: tuple[str, ...], what: str) -> None:
        path = media / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        cases.append(FileCase(name, rel, list(expect), what))

    mp4 = video_bytes("mp4", seed=1)
    fast = video_bytes("mp4", seed=2, faststart=True)
    mkv = video_bytes("matroska", seed=3)
    ts = video_bytes("mpegts", seed=4)
    png = image_bytes("PNG", (30, 200, 90))
    jpg = image_bytes("JPEG", (200, 30, 90), (64, 48))

    # empty files
    for suffix in (".mp4", ".mkv", ".mov", ".webm", ".png", ".jpg", ".gif"):
        put(f"empty{suffix}", f"empty/empty{suffix}", b"", MEDIA_ERRORS, "zero bytes")

    # truncated: a damaged tail may still decode up to the cut (ok), or not at all (media_invalid)
    for cut in (8, 64, 1024):
        put(f"truncated-mp4-{cut}b", f"truncated/mp4-{cut}b.mp4", mp4[:cut], MEDIA_ERRORS, f"first {cut} bytes")
    for pct in (10, 25, 50, 75, 90, 99):
        put(f"truncated-mp4-{pct}pct", f"truncated/mp4-{pct}pct.mp4", mp4[: len(mp4) * pct // 100],
            ("ok", *MEDIA_ERRORS) if pct == 99 else MEDIA_ERRORS, f"mp4 (index at the end) cut at {pct}%")
    for pct in (25, 50, 75, 95):
        put(f"truncated-faststart-{pct}pct", f"truncated/faststart-{pct}pct.mp4", fast[: len(fast) * pct // 100],
            ("ok", *MEDIA_ERRORS), f"mp4 (index first) cut at {pct}%")
    for pct in (5, 30, 60, 90):
        put(f"truncated-mkv-{pct}pct", f"truncated/mkv-{pct}pct.mkv", mkv[: len(mkv) * pct // 100],
            ("ok", *MEDIA_ERRORS), f"Matroska cut at {pct}%")
    for pct in (1, 50):
        put(f"truncated-ts-{pct}pct", f"truncated/ts-{pct}pct.ts", ts[: len(ts) * pct // 100],
            ("ok", *MEDIA_ERRORS), f"MPEG-TS cut at {pct}%")
    put("truncated-png", "truncated/half.png", png[: len(png) // 2], MEDIA_ERRORS, "PNG cut in half")
    put("truncated-jpeg", "truncated/half.jpg", jpg[: len(jpg) // 2], ("ok", *MEDIA_ERRORS), "JPEG cut in half")

    # corrupt: random bytes replaced in the header or the middle
    for seed in range(3):
        put(f"corrupt-mp4-head-{seed}", f"corrupt/mp4-head-{seed}.mp4", flipped(mp4, 0, 64, 8, seed),
            ("ok", *MEDIA_ERRORS), "mp4 with bytes flipped in its first 64")
        put(f"corrupt-mp4-middle-{seed}", f"corrupt/mp4-middle-{seed}.mp4",
            flipped(mp4, len(mp4) // 3, 2 * len(mp4) // 3, 64, seed), ("ok", *MEDIA_ERRORS),
            "mp4 with 64 bytes flipped in its middle third")
    for seed in range(2):
        put(f"corrupt-mkv-head-{seed}", f"corrupt/mkv-head-{seed}.mkv", flipped(mkv, 0, 200, 12, seed),
            ("ok", *MEDIA_ERRORS), "Matroska with its header damaged")
        put(f"corrupt-faststart-index-{seed}", f"corrupt/faststart-index-{seed}.mp4",
            flipped(fast, 0, 1500, 40, seed + 10), ("ok", *MEDIA_ERRORS), "mp4 with its index (moov) damaged")
    put("corrupt-png-crc", "corrupt/crc.png", flipped(png, 16, 29, 3, 7), ("ok", *MEDIA_ERRORS), "PNG header damaged")
    put("corrupt-jpeg-middle", "corrupt/middle.jpg", flipped(jpg, len(jpg) // 2, len(jpg), 20, 8),
        ("ok", *MEDIA_ERRORS), "JPEG with its scan damaged")
    rng = random.Random(SEED)
    put("random-bytes-mp4", "corrupt/noise.mp4", rng.randbytes(50_000), MEDIA_ERRORS, "50 KB of noise")
    put("random-bytes-png", "corrupt/noise.png", rng.randbytes(5_000), MEDIA_ERRORS, "5 KB of noise")

    # no video stream
    put("audio-only-mp4", "audio/tone.mp4", audio_bytes("mp4", "aac"), MEDIA_ERRORS, "AAC in mp4, no video")
    put("audio-only-m4a", "audio/tone.m4a.mp4", audio_bytes("ipod", "aac"), MEDIA_ERRORS, "m4a (AAC), no video")
    put("audio-only-mkv", "audio/tone.mkv", audio_bytes("matroska", "libopus"), MEDIA_ERRORS, "Opus in Matroska")
    put("wav-as-mp4", "audio/tone-wav.mp4", audio_bytes("wav", "pcm_s16le", seconds=0.5), MEDIA_ERRORS,
        "a WAV named .mp4")
    put("mp3-as-mov", "audio/tone.mov", audio_bytes("mp3", "libmp3lame", seconds=1), MEDIA_ERRORS,
        "an MP3 named .mov")

    # enormous declared sizes, decompression bombs
    put("png-header-100000", "huge/header-100000.png", png_bytes(100_000, 100_000, pixels=False), MEDIA_ERRORS,
        "PNG header declaring 100000x100000, no pixels")
    put("jpeg-sof-65535", "huge/sof-65535.jpg", jpeg_declaring(65535, 65535), MEDIA_ERRORS,
        "JPEG frame header declaring 65535x65535")
    put("jpeg-sof-12000", "huge/sof-12000.jpg", jpeg_declaring(12000, 12000), MEDIA_ERRORS,
        "JPEG frame header declaring 12000x12000 (over the pixel limit, under PIL's)")
    put("gif-65535", "huge/screen-65535.gif", gif_declaring(65535, 65535), MEDIA_ERRORS, "GIF of 65535x65535")
    put("bmp-100000", "huge/header-100000.bmp", bmp_declaring(100_000, 100_000), MEDIA_ERRORS, "BMP of 100000x100000")
    put("bmp-negative", "huge/negative.bmp", bmp_declaring(-40, -2_000_000_000), MEDIA_ERRORS,
        "BMP with negative width and height")
    put("tiff-100000", "huge/header-100000.tif", tiff_declaring(100_000, 100_000), MEDIA_ERRORS,
        "TIFF of 100000x100000")
    put("webp-16384", "huge/canvas-16384.webp", webp_declaring(16384, 16384), MEDIA_ERRORS,
        "WebP canvas of 16384x16384, no image")
    put("bomb-png-12000", "huge/bomb-12000.png", png_bytes(12_000, 12_000, bit_depth=1), MEDIA_ERRORS,
        "a real 12000x12000 PNG in 20 KB (144 Mpx: over the pixel limit, under PIL's bomb error)")
    put("bomb-png-20000", "huge/bomb-20000.png", png_bytes(20_000, 20_000, bit_depth=1), MEDIA_ERRORS,
        "a real 20000x20000 PNG in 50 KB (400 Mpx)")
    put("bomb-video-12000", "huge/bomb-12000.avi", png_frames_video(12_000, 12_000), MEDIA_ERRORS,
        "a 300 KB AVI whose frames decode to 12000x12000")

    # wrong extensions
    put("text-as-mp4", "wrong/notes.mp4", b"just some notes, not a video\n" * 20, MEDIA_ERRORS, "text named .mp4")
    put("html-as-jpg", "wrong/page.jpg", b"<!doctype html><script>alert(1)</script>", MEDIA_ERRORS, "HTML named .jpg")
    put("json-as-webm", "wrong/data.webm", b'{"a": [1, 2, 3]}', MEDIA_ERRORS, "JSON named .webm")
    put("script-as-avi", "wrong/run.avi", b"#!/bin/sh\nrm -rf /\n", MEDIA_ERRORS, "a shell script named .avi")
    put("pdf-as-mov", "wrong/doc.mov", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n",
        MEDIA_ERRORS, "PDF named .mov")
    put("zip-as-mkv", "wrong/archive.mkv", b"PK\x05\x06" + b"\0" * 18, MEDIA_ERRORS, "empty zip named .mkv")
    put("svg-as-png", "wrong/vector.png", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        MEDIA_ERRORS, "SVG (with a script) named .png")
    put("mp4-as-png", "wrong/video.png", video_bytes("mp4", seed=5, seconds=1), MEDIA_ERRORS,
        "an mp4 named .png (read as an image)")
    put("png-as-mp4", "wrong/image.mp4", image_bytes("PNG", (90, 90, 250)), ("ok", *MEDIA_ERRORS),
        "a PNG named .mp4 (FFmpeg reads it as a one-frame video)")
    put("jpeg-as-gif", "wrong/photo.gif", image_bytes("JPEG", (250, 90, 90)), ("ok", *MEDIA_ERRORS),
        "a JPEG named .gif (PIL reads the content)")

    # strange names on valid media: these must index
    names = {
        "name-cjk-emoji": "名字/猫の写真 🐱 照片.png",
        "name-255-bytes": "名字/" + "长" * 83 + "xx.png",
        "name-newline": "名字/line\nbreak.png",
        "name-tab-cr": "名字/tab\there\r.png",
        "name-ansi-escape": "名字/\x1b[31mred\x1b[0m.png",
        "name-bell-del": "名字/bell\x07del\x7f.png",
        "name-rtl-override": "名字/\u202egnp.exe.png",
        "name-nfd": "名字/cafe\u0301.png",
        "name-leading-dash": "名字/-rf --help.png",
        "name-spaces": "名字/ spaced out .png",
        "name-quotes": "名字/it's \"quoted\" <b>.png",
        "name-percent": "名字/100%25 %s %n.png",
    }
    for i, (name, rel) in enumerate(names.items()):
        put(name, rel, image_bytes("PNG", (17 * i % 256, 255 - 13 * i % 256, 101), (24 + i, 20)), ("ok",),
            "valid PNG, unusual name")
    bad_utf8 = os.fsdecode(b"\xff\xfe not utf-8.png")
    put("name-not-utf8", f"名字/{bad_utf8}", image_bytes("PNG", (1, 2, 3)), ("ok", *MEDIA_ERRORS),
        "valid PNG whose name is not UTF-8")

    # links, loops, pipes, folders
    outside.mkdir(parents=True, exist_ok=True)
    secret = outside / "secret.png"
    secret.write_bytes(image_bytes("PNG", (5, 5, 5)))
    (outside / "folder").mkdir(exist_ok=True)
    (outside / "folder" / "inner.png").write_bytes(image_bytes("PNG", (6, 6, 6)))
    links = media / "links"
    links.mkdir(parents=True, exist_ok=True)

    def link(name: str, rel: str, target: str | Path, expect: tuple[str, ...], what: str) -> None:
        (media / rel).symlink_to(target)
        cases.append(FileCase(name, rel, list(expect), what, upload=False))

    link("symlink-out-file", "links/secret.png", secret, ("path_outside_media_root",), "link to a file outside")
    link("symlink-out-relative", "links/escape.png", Path("..") / ".." / "outside" / "secret.png",
         ("path_outside_media_root",), "relative link climbing out")
    link("symlink-etc-passwd", "links/passwd.png", "/etc/passwd", ("path_outside_media_root",), "link to /etc/passwd")
    link("symlink-proc", "links/environ.mp4", "/proc/self/environ", ("path_outside_media_root",),
         "link to /proc/self/environ")
    link("symlink-out-folder", "links/elsewhere", outside / "folder", ("path_outside_media_root",),
         "link to a folder outside")
    link("symlink-loop", "links/loop-a.mp4", "loop-b.mp4", MEDIA_ERRORS, "link loop a -> b -> a")
    (links / "loop-b.mp4").symlink_to("loop-a.mp4")
    link("symlink-self", "links/self.mp4", "self.mp4", MEDIA_ERRORS, "link to itself")
    link("symlink-dangling", "links/dangling.mp4", "nowhere.mp4", MEDIA_ERRORS, "link to nothing")
    os.mkfifo(media / "links" / "pipe.mp4")
    cases.append(FileCase("fifo", "links/pipe.mp4", list(MEDIA_ERRORS), "a named pipe called .mp4", upload=False))
    (media / "links" / "folder.mp4").mkdir()
    cases.append(FileCase("folder-named-mp4", "links/folder.mp4", ["ok", *MEDIA_ERRORS],
                          "an empty folder called .mp4", upload=False))
    return cases


def _paths() -> list[PathCase]:
    out = ("path_outside_media_root",)
    bad = ("path_outside_media_root", "media_invalid", "request_invalid")
    return [
        PathCase("dotdot", "../outside/secret.png", list(out), "relative path climbing out"),
        PathCase("dotdot-deep", "../../../../../../etc/passwd", list(out), "many ../"),
        PathCase("dotdot-inside", "links/../../outside/secret.png", list(out), "../ after a folder"),
        PathCase("absolute-outside", "{outside}/secret.png", list(out), "absolute path outside"),
        PathCase("absolute-etc", "/etc/passwd", list(out), "/etc/passwd"),
        PathCase("root", "/", list(out), "the file system root"),
        PathCase("home", "~", ["path_outside_media_root", "media_invalid"], "~ (the API takes it as a name)"),
        PathCase("data-dir", "{data}", list(out), "the server's data folder"),
        PathCase("data-secret", "{data}/secret.key", list(out), "the signing secret"),
        PathCase("dotdot-root", "..", list(out), "the media root's parent"),
        PathCase("empty-path", "", ["request_invalid"], "an empty path", cli=False),
        PathCase("missing", "nothing/here.mp4", list(MEDIA_ERRORS), "a file that does not exist"),
        PathCase("nul", "empty/\x00.mp4", list(bad), "a NUL byte"),
        PathCase("surrogate", "empty/\udc80\ud800.mp4", list(bad), "lone surrogates (not encodable)"),
        PathCase("very-long", "a" * 5000 + ".mp4", [*bad, "io_error"], "a 5000-character name"),
        PathCase("deep", "/".join(["d"] * 2000) + ".mp4", list(bad), "2000 folders deep"),
        PathCase("percent-encoded", "%2e%2e/%2e%2e/etc/passwd", list(bad), "percent-encoded ../"),
        PathCase("backslashes", "..\\..\\outside\\secret.png", list(bad), "Windows separators"),
        PathCase("file-url", "file:///etc/passwd", list(bad), "a file:// URL"),
        PathCase("link-loop", "links/loop-a.mp4", list(MEDIA_ERRORS), "a link loop, named directly"),
        PathCase("link-out-folder", "links/elsewhere", list(out), "a link to a folder outside, named directly"),
        PathCase("link-into-folder", "links/elsewhere/inner.png", list(out), "a file through a link outside"),
        PathCase("links-folder", "links", ["path_outside_media_root", "media_invalid"],
                 "the folder of links (a job each, each failing)"),
    ]


def _queries() -> list[QueryCase]:
    invalid = ("query_invalid",)
    either = ("ok", "query_invalid")
    return [
        QueryCase("huge-1mb", "猫" * (HUGE_QUERY_CHARS // 3) + "a" * (HUGE_QUERY_CHARS % 3 + 1), list(invalid),
                  "1 MiB of text"),
        QueryCase("just-over-limit", "a" * 1001, list(invalid), "1001 characters"),
        QueryCase("nfkc-expansion", "\ufdfa" * 100, list(invalid), "100 characters that NFKC makes 1800"),
        QueryCase("empty", "", list(invalid), "empty"),
        QueryCase("none", None, list(invalid), "no text, no image"),
        QueryCase("whitespace", " \t\n\r\u3000\u00a0\u2003 ", list(invalid), "only whitespace"),
        QueryCase("control-only", "".join(chr(c) for c in range(32)) + "\x7f\x85", list(invalid),
                  "only control characters"),
        QueryCase("zero-width", "\u200b\u200c\u200d\ufeff\u2060", list(invalid), "only zero-width characters"),
        QueryCase("bidi-only", "\u202a\u202b\u202e\u2066\u2069", list(invalid), "only bidi controls"),
        QueryCase("surrogates-only", "\ud800\udfff\udc80", [*invalid, "request_invalid"], "lone surrogates"),
        QueryCase("control-around", "\x00red\x1b[31m\x07", list(either), "control characters around a word"),
        QueryCase("surrogate-around", "red \ud800 car", [*either, "request_invalid"], "a lone surrogate in a query"),
        QueryCase("punctuation", "!!!???...,,,", list(either), "punctuation only"),
        QueryCase("quotes", '"' * 999, list(either), "999 quote marks"),
        QueryCase("brackets", "(" * 500 + ")" * 499, list(either), "unbalanced brackets"),
        QueryCase("sql", "'; DROP TABLE media; -- \" OR 1=1", list(either), "SQL injection"),
        QueryCase("search-syntax", 'title:foo AND (bar OR "baz ~2^3 * ? [a TO z] {x}', list(either),
                  "search-engine query syntax"),
        QueryCase("regex", ".*+?^$()[]{}|\\", list(either), "regex metacharacters"),
        QueryCase("html", "<script>alert(1)</script><em>x</em>", list(either), "HTML"),
        QueryCase("combining", "a" + "\u0301" * 900, list(either), "900 combining accents"),
        QueryCase("emoji", "🐱" * 300 + "👨‍👩‍👧‍👦", list(either), "emoji"),
        QueryCase("type-unknown", "type:audio", list(invalid), "an unknown kind"),
        QueryCase("contradiction", "longer than 10 min shorter than 1 min", list(invalid), "contradictory durations"),
        QueryCase("bad-date", "2023年2月30日", list(invalid), "February 30"),
        QueryCase("library-elsewhere", "library:nope red", ["not_found"], "a library: filter naming nothing"),
        QueryCase("library-traversal", "library:../../x red", list(either) + ["not_found"], "library:../"),
        QueryCase("huge-numbers", "shorter than 999999 hours 最近99999年", list(either), "huge numbers in filters"),
        QueryCase("many-tags", " ".join(f"#t{i}" for i in range(150)), list(either), "150 tags"),
    ]


def _requests(root: Path) -> list[RequestCase]:
    bodies = root / "requests"
    bodies.mkdir(parents=True, exist_ok=True)
    cases: list[RequestCase] = []
    json_type = {"Content-Type": "application/json"}

    def body(name: str, data: bytes) -> str:
        (bodies / name).write_bytes(data)
        return name

    def req(name: str, method: str, url: str, expect: tuple[str, ...], what: str, **kw) -> None:
        cases.append(RequestCase(name, method, url, list(expect), what, **kw))

    invalid = ("request_invalid",)
    search = "/v1/libraries/{library}/search"
    raw_json = {
        "truncated": b'{"text": "red"',
        "trailing": b'{"text": "red"} trailing',
        "array": b"[]",
        "string": b'"red"',
        "number": b"42",
        "null": b"null",
        "nan-text": b'{"text": NaN}',
        "nan-topk": b'{"text": "red", "top_k": NaN}',
        "inf-topk": b'{"text": "red", "top_k": Infinity}',
        "neg-inf-topk": b'{"text": "red", "top_k": -Infinity}',
        "float-topk": b'{"text": "red", "top_k": 1.5}',
        "e308-topk": b'{"text": "red", "top_k": 1e308}',
        "e400-topk": b'{"text": "red", "top_k": 1e400}',
        "list-text": b'{"text": ["red"]}',
        "object-text": b'{"text": {"$ne": null}}',
        "routes-string": b'{"text": "red", "routes": "visual"}',
        "unknown-field": b'{"text": "red", "colour": "x"}',
        "deep-nesting": b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "deep-object": b'{"text": "red", "routes": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}",
        "invalid-utf8": b'{"text": "\xff\xfe\xc0\xaf"}',
        "utf16": '{"text": "red"}'.encode("utf-16"),
        "empty": b"",
        "bom": b'\xef\xbb\xbf{"text": "red"}',
        "nul": b'{"text": "red"}\x00',
        "many-keys": b"{" + b",".join(f'"k{i}": {i}'.encode() for i in range(20_000)) + b"}",
    }
    for name, data in raw_json.items():
        # JSON may come in UTF-16 or with a byte-order mark (RFC 8259 lets a parser take them)
        expect = ("ok", *invalid) if name in ("utf16", "bom") else invalid
        req(f"search-json-{name}", "POST", search, expect, f"search body: {name}", headers=json_type,
            body=body(f"search-{name}.json", data))
    for name, value, expect in [
        ("topk-negative", -1, ("query_invalid",)),
        ("topk-zero", 0, ("query_invalid",)),
        ("topk-huge", 10**6, ("query_invalid",)),
        ("topk-10e30", 10**30, ("query_invalid",)),
        ("topk-string", "10", ("ok", "request_invalid")),
        ("topk-bool", True, ("ok", "request_invalid")),
        ("routes-unknown", None, ("ok", "query_invalid", "request_invalid", "config_invalid")),
        ("duplicate-keys", None, ("ok",)),
    ]:
        if name == "routes-unknown":
            data = json.dumps({"text": "red", "routes": ["nope", "../x", ""]}).encode()
        elif name == "duplicate-keys":
            data = b'{"text": "red", "text": "blue"}'
        else:
            data = json.dumps({"text": "red", "top_k": value}).encode()
        req(f"search-{name}", "POST", search, expect, f"search: {name}", headers=json_type,
            body=body(f"search-{name}.json", data))
    for name, ctype, data in [
        ("text-plain", "text/plain", b'{"text": "red"}'),
        ("form-urlencoded", "application/x-www-form-urlencoded", b"text=red"),
        ("xml", "application/xml", b"<text>red</text>"),
        ("no-type", "", b'{"text": "red"}'),
    ]:
        headers = {"Content-Type": ctype} if ctype else {}
        req(f"search-content-type-{name}", "POST", search, ("ok", "request_invalid", "content_type_unsupported"),
            f"search body sent as {ctype or 'no content type'}", headers=headers, body=body(f"search-{name}.bin", data))
    req("search-multipart", "POST", search, ("request_invalid", "content_type_unsupported"),
        "search with a multipart body", files={"text": ["", body("red.txt", b"red"), "text/plain"]})

    image = "/v1/libraries/{library}/search/image"
    req("image-search-json", "POST", image, invalid, "image search with JSON", headers=json_type,
        body=body("image-json.json", b'{"text": "red"}'))
    req("image-search-empty", "POST", image, MEDIA_ERRORS, "image search with 0 bytes",
        files={"image": ["q.png", body("empty.bin", b""), "image/png"]})
    req("image-search-text", "POST", image, MEDIA_ERRORS, "image search with text",
        files={"image": ["q.png", body("text.bin", b"not an image"), "image/png"]})
    req("image-search-bomb", "POST", image, MEDIA_ERRORS, "image search with a 400 Mpx PNG",
        files={"image": ["q.png", body("bomb.png", png_bytes(20_000, 20_000, bit_depth=1)), "image/png"]})
    req("image-search-header-bomb", "POST", image, MEDIA_ERRORS, "image search with a 100000x100000 header",
        files={"image": ["q.png", body("header.png", png_bytes(100_000, 100_000, pixels=False)), "image/png"]})
    req("image-search-oversize", "POST", image, ("payload_too_large",), "image search over the limit",
        files={"image": ["q.png", "", "image/png"]}, body_size="over_limit")
    red_png = body("red.png", image_bytes("PNG", (230, 20, 20)))
    for name, value, expect in [("nan", "nan", invalid), ("negative", "-1", ("query_invalid",)),
                                ("huge", "99999999999999999999999", ("query_invalid", "request_invalid"))]:
        req(f"image-search-topk-{name}", "POST", image, expect, f"image search top_k={value}",
            files={"image": ["q.png", red_png, "image/png"]}, form={"top_k": value})

    media = "/v1/libraries/{library}/media"
    for name, data, ctype, expect in [
        ("path-number", b'{"path": 1}', "application/json", invalid),
        ("path-null", b'{"path": null}', "application/json", invalid),
        ("path-list", b'{"path": ["a.mp4"]}', "application/json", invalid),
        ("no-path", b"{}", "application/json", invalid),
        ("extra-field", b'{"path": "a.mp4", "tenant": "other"}', "application/json", invalid),
        ("bad-json", b'{"path": ', "application/json", invalid),
        ("deep-json", b'{"path": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json", invalid),
        ("surrogate-json", b'{"path": "\\ud800.mp4"}', "application/json",
         ("request_invalid", "media_invalid", "path_outside_media_root")),
        ("nul-json", b'{"path": "a\\u0000.mp4"}', "application/json", ("request_invalid", "media_invalid")),
        ("text-plain", b"a.mp4", "text/plain", ("content_type_unsupported",)),
        ("form-urlencoded", b"path=a.mp4", "application/x-www-form-urlencoded", ("content_type_unsupported",)),
        ("octet-stream", b"\x00\x01", "application/octet-stream", ("content_type_unsupported",)),
        ("no-type", b'{"path": "a.mp4"}', "", ("content_type_unsupported",)),
        ("multipart-no-boundary", b"--x\r\n", "multipart/form-data", ("request_invalid",)),
        ("multipart-garbage", b"garbage", "multipart/form-data; boundary=zz", ("request_invalid",)),
    ]:
        headers = {"Content-Type": ctype} if ctype else {}
        req(f"media-{name}", "POST", media, expect, f"add media: {name}", headers=headers,
            body=body(f"media-{name}.bin", data))
    req("upload-oversize", "POST", media, ("payload_too_large",), "upload over the limit",
        files={"file": ["big.mp4", "", "video/mp4"]}, body_size="over_limit")
    req("upload-oversize-chunked", "POST", media, ("payload_too_large",),
        "upload over the limit without a Content-Length", files={"file": ["big.mp4", "", "video/mp4"]},
        body_size="over_limit", chunked=True)
    req("upload-lying-length", "POST", media, ("payload_too_large",), "a Content-Length of 10^20",
        headers={"Content-Type": "application/json", "Content-Length": "100000000000000000000"},
        body=body("tiny.json", b"{}"))
    upload_png = body("upload.png", image_bytes("PNG", (3, 3, 250)))
    for name, filename, expect in [
        ("filename-empty", "", ("request_invalid", "media_invalid")),
        ("filename-dotdot", "..", MEDIA_ERRORS),
        ("filename-slash", "/", ("request_invalid", "media_invalid")),
        ("filename-traversal", "../../../../tmp/evil.png", ("ok",)),
        ("filename-300-bytes", "长" * 100 + ".png", ("ok",)),
        ("filename-4000-chars", "a" * 4000 + ".png", ("ok",)),
        ("filename-control", "a\x00b\x1b[2J\r\n.png", ("ok", "media_invalid")),
        ("filename-no-suffix", "picture", ("ok", "media_invalid")),
    ]:
        req(f"upload-{name}", "POST", media + "?wait=true", expect, f"upload named {filename!r}",
            files={"file": [filename, upload_png, "image/png"]})
    req("upload-two-files", "POST", media, invalid, "two file parts",
        files={"file": ["a.png", upload_png, "image/png"], "other": ["b.png", upload_png, "image/png"]})
    req("upload-many-fields", "POST", media, invalid, "a form with 6 fields",
        files={"file": ["a.png", upload_png, "image/png"]}, form={f"f{i}": "x" for i in range(6)})
    req("upload-wrong-part", "POST", media, invalid, "the file under another name",
        files={"upload": ["a.png", upload_png, "image/png"]})
    req("upload-part-is-field", "POST", media, invalid, "'file' as a plain field",
        files={"other": ["a.png", upload_png, "image/png"]}, form={"file": "a.png"})

    medium = "/v1/libraries/{library}/media/{medium}"
    for name, data, expect in [
        ("patch-surrogate", b'{"title": "\\ud800"}', ("ok", "request_invalid")),
        ("patch-nul", b'{"title": "a\\u0000b"}', ("ok", "request_invalid")),
        ("patch-tags-string", b'{"tags": "a,b"}', invalid),
        ("patch-tags-numbers", b'{"tags": [1, 2]}', invalid),
        ("patch-fields-nested", b'{"fields": {"a": {"b": 1}}}', invalid),
        ("patch-fields-number", b'{"fields": {"a": 1}}', invalid),
        ("patch-fields-surrogate-key", b'{"fields": {"\\udc80": "x"}}', ("ok", "request_invalid")),
        ("patch-unknown", b'{"title": "x", "status": "ready"}', invalid),
        ("patch-id", b'{"id": 5}', invalid),
        ("patch-array", b"[]", invalid),
        ("patch-huge-title", json.dumps({"title": "标" * 300_000}).encode(), ("ok", "request_invalid")),
        ("patch-many-tags", json.dumps({"tags": [f"t{i}" for i in range(20_000)]}).encode(),
         ("ok", "request_invalid")),
    ]:
        req(name, "PATCH", medium, expect, f"edit medium: {name}", headers=json_type, body=body(f"{name}.json", data))

    not_found = ("not_found",)
    for name, url, expect in [
        ("id-huge", "/v1/libraries/{library}/media/99999999999999999999", ("not_found", "request_invalid")),
        ("id-int64-max", "/v1/libraries/{library}/media/9223372036854775807", not_found),
        ("id-negative", "/v1/libraries/{library}/media/-1", not_found),
        ("id-float", "/v1/libraries/{library}/media/1.5", invalid),
        ("id-exp", "/v1/libraries/{library}/media/1e3", invalid),
        ("id-nul", "/v1/libraries/{library}/media/%00", invalid),
        ("offset-negative", "/v1/libraries/{library}/media?offset=-1", invalid),
        ("offset-huge", "/v1/libraries/{library}/media?offset=99999999999999999999", ("ok", "request_invalid")),
        ("limit-zero", "/v1/libraries/{library}/media?limit=0", invalid),
        ("limit-huge", "/v1/libraries/{library}/media?limit=1000000", invalid),
        ("limit-nan", "/v1/libraries/{library}/media?limit=nan", invalid),
        ("thumb-t-nan", "/v1/libraries/{library}/media/{medium}/thumbnail?t=nan", invalid),
        ("thumb-t-negative", "/v1/libraries/{library}/media/{medium}/thumbnail?t=-1", invalid),
        ("thumb-t-inf", "/v1/libraries/{library}/media/{medium}/thumbnail?t=inf", ("ok", "request_invalid")),
        ("thumb-t-1e309", "/v1/libraries/{library}/media/{medium}/thumbnail?t=1e309", ("ok", "request_invalid")),
        ("thumb-width-nan", "/v1/libraries/{library}/media/{medium}/thumbnail?width=nan", invalid),
        ("thumb-width-negative", "/v1/libraries/{library}/media/{medium}/thumbnail?width=-5", invalid),
        ("thumb-width-huge", "/v1/libraries/{library}/media/{medium}/thumbnail?width=99999999999999999999", invalid),
        ("library-dotdot", "/v1/libraries/%2e%2e/media", ("not_found",)),
        ("library-nul", "/v1/libraries/%00/media", ("not_found",)),
        ("library-bad-utf8", "/v1/libraries/%ff%fe/media", ("not_found", "request_invalid")),
        ("library-newline", "/v1/libraries/{library}%0A/media", ("not_found",)),
        ("library-long", "/v1/libraries/" + "l" * 10_000 + "/media", ("not_found",)),
        ("jobs-huge-id", "/v1/jobs/99999999999999999999", ("not_found", "request_invalid")),
        ("jobs-negative-id", "/v1/jobs/-1", not_found),
        ("jobs-status", "/v1/jobs?status=lost", invalid),
        ("jobs-offset-huge", "/v1/jobs?offset=99999999999999999999", ("ok", "request_invalid")),
        ("jobs-library-nul", "/v1/jobs?library=%00", ("ok",)),
        ("token-garbage", "/v1/libraries/{library}/media/{medium}/file?token=~~~", ("unauthorized",)),
        ("token-long", "/v1/libraries/{library}/media/{medium}/file?token=" + "A" * 20_000, ("unauthorized",)),
        ("token-bad-utf8", "/v1/libraries/{library}/media/{medium}/file?token=%ff~1~%fe", ("unauthorized",)),
        ("token-huge-expiry", "/v1/libraries/{library}/media/{medium}/file?token=YQ~999999999999999999999999~00",
         ("unauthorized",)),
        ("token-other-medium", "/v1/libraries/{library}/media/999/file?token={token}", ("unauthorized",)),
    ]:
        req(name, "GET", url, expect, f"GET {name}")
    for name, value in [("range-garbage", "bytes=abc"), ("range-reversed", "bytes=5-1"),
                        ("range-huge", "bytes=99999999999999999999-"), ("range-many", "bytes=" + ",".join(
                            f"{i}-{i}" for i in range(0, 4000, 2))), ("range-unit", "lines=1-2")]:
        req(name, "GET", "/v1/libraries/{library}/media/{medium}/file", ("ok", "request_invalid", "range"),
            f"Range: {value[:40]}", headers={"Range": value})
    req("cancel-huge-id", "POST", "/v1/jobs/99999999999999999999/cancel", ("not_found", "request_invalid"),
        "cancel a job id past 64 bits")
    req("method-put", "PUT", "/v1/libraries", ("method_not_allowed",), "PUT on a collection")
    req("method-trace", "TRACE", "/v1/libraries", ("method_not_allowed",), "TRACE")

    libraries = "/v1/libraries"
    for name, data, expect in [
        ("library-fps-nan", b'{"name": "x1", "config": {"sample_fps": NaN}}', invalid),
        ("library-fps-inf", b'{"name": "x2", "config": {"sample_fps": Infinity}}', invalid),
        ("library-fps-negative", b'{"name": "x3", "config": {"sample_fps": -1}}', invalid),
        ("library-fps-zero", b'{"name": "x4", "config": {"sample_fps": 0}}', invalid),
        ("library-name-empty", b'{"name": ""}', ("config_invalid",)),
        ("library-name-dotdot", b'{"name": ".."}', ("config_invalid",)),
        ("library-name-slash", b'{"name": "a/b"}', ("config_invalid",)),
        ("library-name-newline", b'{"name": "x5\\n"}', ("config_invalid",)),
        ("library-name-nul", b'{"name": "x6\\u0000"}', ("config_invalid",)),
        ("library-name-surrogate", b'{"name": "\\ud800"}', ("config_invalid", "request_invalid")),
        ("library-name-long", json.dumps({"name": "n" * 10_000}).encode(), ("config_invalid",)),
        ("library-name-number", b'{"name": 7}', invalid),
        ("library-modules-string", b'{"name": "x7", "config": {"modules": "visual"}}', invalid),
        ("library-modules-unknown", b'{"name": "x8", "config": {"modules": ["../../etc"]}}', ("config_invalid",)),
        ("library-modules-empty", b'{"name": "x9", "config": {"modules": []}}', ("ok", "config_invalid")),
        ("library-encoder-traversal", b'{"name": "x10", "config": {"encoder": "onnx:../../../etc"}}',
         ("ok", "config_invalid")),
        ("library-encoder-long", json.dumps({"name": "x11", "config": {"encoder": "e" * 100_000}}).encode(),
         ("config_invalid",)),
        ("library-unknown-field", b'{"name": "x12", "owner": "other"}', invalid),
        ("library-config-unknown", b'{"name": "x13", "config": {"modules": ["visual"], "gpu": true}}', invalid),
        ("tenant-as-user", b'{"name": "evil"}', ("forbidden",)),
    ]:
        url = "/v1/tenants" if name.startswith("tenant") else libraries
        req(name, "POST", url, expect, f"create: {name}", headers=json_type, body=body(f"{name}.json", data))
    for name, value in [("auth-huge", "Bearer zp_" + "a" * 100_000), ("auth-basic", "Basic dXNlcjpwYXNz"),
                        ("auth-empty", "Bearer "), ("auth-no-scheme", "zp_12345678_abc"),
                        ("auth-sql", "Bearer zp_' OR 1=1 --_x")]:
        req(name, "GET", libraries, ("unauthorized",), f"Authorization: {value[:30]}",
            headers={"Authorization": value})
    return cases


def make_corpus(root: Path) -> Corpus:
    """Write the corpus under ``root`` (which must not exist yet or be empty)."""
    root = Path(root).absolute()
    root.mkdir(parents=True, exist_ok=True)
    corpus = Corpus(root, _files(root / "media", root / "outside"), _paths(), _queries(), _requests(root))
    manifest = {
        "files": [asdict(c) for c in corpus.files],
        "paths": [asdict(c) for c in corpus.paths],
        "queries": [asdict(c) for c in corpus.queries],
        "requests": [asdict(c) for c in corpus.requests],
    }
    # lone surrogates survive as JSON escapes (ensure_ascii)
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=True), encoding="ascii")
    return corpus


def load(root: Path) -> Corpus:
    manifest = json.loads((Path(root) / "manifest.json").read_text(encoding="ascii"))
    return Corpus(Path(root), [FileCase(**c) for c in manifest["files"]], [PathCase(**c) for c in manifest["paths"]],
                  [QueryCase(**c) for c in manifest["queries"]], [RequestCase(**c) for c in manifest["requests"]])


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    corpus = make_corpus(Path(argv[0]))
    for kind in ("files", "paths", "queries", "requests"):
        for case in getattr(corpus, kind):
            print(f"{kind[:-1] if kind != 'queries' else 'query'}\t{case.name}\t{'|'.join(case.expect)}\t{case.what}")
    print(f"{len(corpus)} cases in {corpus.root}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))


