"""Ingestion: file -> checks -> content hash -> decode -> modules.extract -> modules.write -> flush.

A batch keeps going when one file fails: the failure is reported for that
file and nothing already indexed is touched. Media become visible to search
only when their module stores have been flushed to disk (``ready``); a crash
before that leaves them ``indexing``, and the library removes them on its
next open (``Library.recover``).
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from zhaopian.search.errors import MediaError, PathOutsideRoot, ZhaopianError
from zhaopian.search.library import Library
from zhaopian.search.types import CopySpan, Frame, MediaInfo

from . import decode

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".flv",
                  ".wmv", ".3gp", ".ogv"}
MEDIA_SUFFIXES = VIDEO_SUFFIXES | decode.IMAGE_SUFFIXES


@dataclass
class IngestResult:
    path: str
    status: Literal["indexed", "duplicate", "replaced", "failed"]
    media_id: int | None = None
    message: str = ""
    code: str = ""
    frames: int = 0
    units: int = 0
    duration: float = 0.0
    #: spans the new medium shares with media already in the library (near-duplicates, partial copies)
    copies: list[CopySpan] = field(default_factory=list)


@dataclass
class IngestStats:
    """Seconds spent per stage and amounts processed: the benchmark reads these."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    frames: int = 0
    media_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:  # file modules report from their own threads
            self.seconds[stage] += seconds


def check_path(path: Path | str) -> None:
    """Refuse a path that no file system or catalog can hold: a NUL byte, or a name that is not UTF-8
    (Linux allows any bytes; the catalog, the text index and JSON need text)."""
    text = str(path)
    if "\x00" in text:
        raise MediaError(f"{printable(text)}: a path cannot contain a NUL byte")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise MediaError(f"{printable(text)}: the file name is not valid UTF-8; rename the file") from None


def printable(path: Path | str) -> str:
    """A path as text that can be stored and shown (bytes that are not UTF-8 as ``\\xNN``)."""
    text = str(path).replace("\x00", "\\x00")
    return text.encode("utf-8", "surrogateescape" if _escaped_bytes(text) else "backslashreplace") \
        .decode("utf-8", "backslashreplace")


def _escaped_bytes(text: str) -> bool:
    """Whether every surrogate in ``text`` stands for an undecodable byte (os.fsdecode's surrogateescape)."""
    return all(0xDC80 <= ord(ch) <= 0xDCFF for ch in text if 0xD800 <= ord(ch) <= 0xDFFF)


def resolve_under(path: Path, roots: list[Path]) -> Path:
    """The real path of ``path`` (symlinks resolved) if it lies inside one of ``roots``."""
    check_path(path)
    try:
        real = Path(path).expanduser().resolve()
    except RuntimeError as exc:  # Python < 3.13: a symlink loop
        raise MediaError(f"{path}: a symbolic link loop") from exc
    for root in roots:
        if real.is_relative_to(Path(root).expanduser().resolve()):
            return real
    raise PathOutsideRoot(f"{path}: outside the media root ({', '.join(str(r) for r in roots)}); "
                          f"set ZHAOPIAN_MEDIA_ROOT to a folder that contains it")


def expand(paths: Iterable[Path], roots: list[Path] | None = None) -> Iterator[Path]:
    """Files named directly, and media files (by extension) inside named folders, sorted. Folders that
    cannot be read are skipped; with ``roots``, a folder outside them is given back unscanned (it then
    fails as outside the media root instead of walking, say, the whole disk)."""
    for path in paths:
        path = Path(path).expanduser()
        if not _is_dir(path) or (roots is not None and not _inside(path, roots)):
            yield path
            continue
        found = [Path(folder) / name for folder, _dirs, names in os.walk(path)  # unreadable folders: skipped
                 for name in names if Path(name).suffix.lower() in MEDIA_SUFFIXES]
        yield from sorted(p for p in found if p.is_file())


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):  # a name too long, a NUL byte, not encodable: the file checks report it
        return False


def _inside(path: Path, roots: list[Path]) -> bool:
    try:
        resolve_under(path, roots)
    except ZhaopianError:
        return False
    return True


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def prefetch(iterator: Iterator[list[Frame]], depth: int = 2) -> Iterator[list[Frame]]:
    """Run the decoder in a background thread so decoding overlaps extraction."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def run() -> None:
        try:
            for item in iterator:
                q.put(item)
            q.put(done)
        except BaseException as exc:  # handed to the consumer
            q.put(exc)

    threading.Thread(target=run, daemon=True).start()
    while (item := q.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


def chunks(frames: Iterator[Frame], size: int) -> Iterator[list[Frame]]:
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


ProgressFn = Callable[[str, IngestResult | None], None]
#: (step, fraction done): step is "decode", a module's name or "write"; raising stops the medium cleanly
StepFn = Callable[[str, float], None]


class Ingestor:
    """Adds media to one library."""

    def __init__(self, library: Library, media_roots: list[Path], *, chunk_size: int = 32, flush_every: int = 16,
                 decode_threads: int = 0, on_step: StepFn | None = None) -> None:
        self.library = library
        self.on_step = on_step
        self.media_roots = media_roots
        self.chunk_size = chunk_size
        self.flush_every = flush_every
        self.decode_threads = decode_threads
        self.stats = IngestStats()
        self._pending: list[int] = []
        self._replaced: list[int] = []

    def add(self, paths: Iterable[Path], progress: ProgressFn | None = None) -> list[IngestResult]:
        results = []
        with self.library.write_lock():
            for path in paths:
                if progress:
                    progress(str(path), None)
                result = self._add_one(Path(path))
                results.append(result)
                if progress:
                    progress(str(path), result)
                if len(self._pending) >= self.flush_every:
                    self.flush()
            self.flush()
        return results

    def _add_one(self, path: Path) -> IngestResult:
        try:
            return self._index(path)
        except ZhaopianError as exc:
            return IngestResult(printable(path), "failed", message=exc.message, code=exc.code)
        except OSError as exc:
            return IngestResult(printable(path), "failed", message=f"{printable(path)}: {exc.strerror or exc}",
                                code="io_error")

    def _index(self, path: Path) -> IngestResult:
        media = self.library.media
        t0 = time.perf_counter()
        real = resolve_under(path, self.media_roots)
        if not real.is_file():
            raise MediaError(f"{path}: no such file")
        digest = sha256_file(real)
        self.stats.add("hash", time.perf_counter() - t0)
        if (same := media.find(sha256=digest)) is not None:
            return IngestResult(str(real), "duplicate", same.id, f"already indexed as medium {same.id}")
        previous = media.find(path=str(real))

        probe = decode.probe(real)
        stat = real.stat()
        media_id = media.add_media(path=str(real), kind=probe.kind, sha256=digest, size=stat.st_size,
                                   duration=probe.duration, width=probe.width, height=probe.height, title=real.stem,
                                   recorded=probe.recorded or stat.st_mtime)
        step = 1.0 / self.library.config.sample_fps
        info = MediaInfo(media_id, real, probe.kind, probe.duration, probe.width, probe.height, step)
        modules = self.library.modules
        frame_modules = {n: m for n, m in modules.items() if m.reads == "frames"}
        file_modules = {n: m for n, m in modules.items() if m.reads == "file"}
        try:
            self._step("decode", 0.0)
            for name in modules:
                self._step(name, 0.0)
            features: dict[str, list] = {name: [] for name in modules}
            # modules that read the whole file (speech, metadata) run beside the frame loop
            with ThreadPoolExecutor(max_workers=max(1, len(file_modules)), thread_name_prefix="extract") as pool:
                pending = {name: pool.submit(self._timed, f"extract.{name}", module.extract, info, ())
                           for name, module in file_modules.items()}
                frames = self._extract_frames(real, info, frame_modules, features) if frame_modules else 0
                self._step("decode", 1.0)
                for name, future in pending.items():
                    features[name].append(future.result())
                    self._step(name, 0.95)
            units = 0
            for name, module in modules.items():
                t = time.perf_counter()
                units += module.write(info, features[name])
                self.stats.add(f"write.{name}", time.perf_counter() - t)
                self._step(name, 1.0)
        except BaseException:
            for module in modules.values():
                module.remove([media_id])
            media.purge([media_id])
            raise
        self.stats.frames += frames
        self.stats.media_seconds += probe.duration
        self._pending.append(media_id)
        if previous is not None:
            self._replaced.append(previous.id)
        status = "replaced" if previous is not None else "indexed"
        copies = [span for module in modules.values() for span in module.copies(media_id)]
        return IngestResult(str(real), status, media_id, frames=frames, units=units, duration=probe.duration,
                            copies=copies)

    def _step(self, step: str, fraction: float) -> None:
        if self.on_step is not None:
            self.on_step(step, min(1.0, fraction))

    def _timed(self, stage: str, fn: Callable, *args):
        t = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.stats.add(stage, time.perf_counter() - t)

    def _extract_frames(self, path: Path, info: MediaInfo, modules: dict, features: dict[str, list]) -> int:
        """Decode sampled frames (in a prefetch thread) and hand each chunk to every frame module."""
        frames = 0
        # frame modules report 0.95 when all frames are read; writing the features is the rest
        expected = max(1.0, info.duration / info.sample_step) if info.kind == "video" else 1.0
        t_decode = time.perf_counter()
        stream = prefetch(chunks(decode.iter_frames(path, self.library.config.sample_fps,
                                                    threads=self.decode_threads), self.chunk_size))
        for chunk in stream:
            self.stats.add("decode_wait", time.perf_counter() - t_decode)
            frames += len(chunk)
            self._step("decode", 0.95 * frames / expected)
            for name, module in modules.items():
                features[name].append(self._timed(f"extract.{name}", module.extract, info, chunk))
                self._step(name, 0.95 * frames / expected)
            t_decode = time.perf_counter()
        return frames

    def flush(self) -> None:
        """Persist module stores, then make the pending media visible (and drop what they replaced)."""
        if not self._pending and not self._replaced:
            return
        t = time.perf_counter()
        for module in self.library.modules.values():
            module.flush()
        self.library.media.set_status(self._pending, "ready")
        if self._replaced:
            self.library.delete_media(self._replaced)
        self.stats.add("flush", time.perf_counter() - t)
        self._pending.clear()
        self._replaced.clear()
