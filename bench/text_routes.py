"""Text routes benchmark: what the ocr, asr, labels and meta routes cost at ingest, and how fast the text index answers.

Part 1, ingest. Three inputs:

* demo: the bundled demo set's own clips (``zhaopian.indexer.demo.build_demo``): four
  480x270 clips, 51 s, slow pans and zooms, no audio track, no text on screen (the narrated
  clip the demo also copies in a source checkout is measured as the next input);
* narrated: the narrated fixture, when present (``tests/data/narrated.mp4`` or
  ``indexer/demo_media/narrated.mp4``, or ``--narrated PATH``): 30 s at 640x360, slow pans
  and zooms, burned-in Chinese and English lines, a narration in both languages;
* static: a tripod shot built once into ``--cache-dir`` (a still photo with sensor-like
  noise and an English subtitle replaced every 5 s, 30 s at 640x360), the kind of video OCR
  change detection is meant for.

Models (and jieba's dictionary) are loaded before timing; every library is fresh, in a
temporary data directory, indexed with 1 torch thread (``Settings(threads=1)``) the way
``Service.index`` does it, one ``Ingestor`` per input, whose ``stats`` give wall seconds
per stage. The bench wraps each module's ``extract`` (and the OCR module's
``TextReader.read``) on the library's instances, without changing product code, to add
CPU seconds: those of the thread that calls ``extract`` plus those of the threads the
module's model started when it loaded (Whisper computes in CTranslate2's worker thread;
torch and ONNX Runtime run in the caller at 1 thread). The OCR module's outputs tell which
sampled frames were read and which change detection skipped (``FrameText.lines is None``).
Libraries:

* all routes: the default modules (visual, labels, ocr, asr, meta);
* ocr only with ``change_threshold: 0, idle_seconds: 0``: every sampled frame read, to compare with the
  default threshold of the first library;
* visual only, labels only: with both on, ``BundledEncoder.forward`` remembers recent
  batches, so labels should cost little beside visual; alone it runs the network itself.
  The bench empties that memo before each library so none profits from an earlier one.

Then ``transcribe`` alone on the narrated clip: wall, process CPU, real-time factor, and
how long language detection and the transcription passes took.

Part 2, text search: a text index (``create_text_index``) of ``--tantivy-units`` units
(100k) in tantivy and of ``--es-units`` (10k) in Elasticsearch. The Elasticsearch figures
come from ``noida-db``, the ES-compatible stand-in the tests use (started on a free local
port, stopped afterwards); it is slow, hence fewer units and queries, and its figures show
the backend's code path here, not a real cluster's speed. Units are composed
deterministically (``--seed``): Chinese sentences and lines of jieba dictionary words drawn
by dictionary frequency, English ones of words drawn by frequency from Python's own
documentation (``pydoc_data``), ImageNet label texts, titles; 100 units per medium, spread
over the ocr, asr, labels and meta modules. Throughput: units added per medium and flushed
every 16 media, as ingestion does (one build). Latency: one ``search`` at a time with
``k`` = 200 (a library's ``recall_k``), each query limited to one module as a route's query
is; words and phrases are taken from random units, so every query finds something. Kinds:
one or two Chinese or English words, an exact Chinese or English phrase, a Chinese word
within 50 given media.

Real-time factor (RTF) = seconds of video / seconds spent (10x = an hour of video in six
minutes). Ingest and query passes run ``--repeat`` times and medians are reported, with
the load average and the CPU other processes used meanwhile ("others", in cores), since
the machine may be shared.

    python bench/text_routes.py                        # ~8 min on 2 cores
    python bench/text_routes.py --quick                # under 2 min, smoke run
    python bench/text_routes.py --narrated PATH --out /tmp/text_routes.json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np
from machine import Clock, machine_info  # bench/machine.py

REPO = Path(__file__).resolve().parent.parent
NARRATED_PLACES = (REPO / "tests" / "data" / "narrated.mp4", REPO / "indexer" / "demo_media" / "narrated.mp4")
ALL_MODULES = ("visual", "labels", "ocr", "asr", "meta")
TEXT_MODULES = ("ocr", "asr", "labels", "meta")
UNITS_PER_MEDIUM = 100
FLUSH_EVERY_MEDIA = 16  # as Ingestor's flush_every
RECALL_K = 200  # a library's default recall_k
FILTER_MEDIA = 50
PACKAGES = ("torch", "av", "rapidocr", "onnxruntime", "faster-whisper", "ctranslate2", "tantivy", "jieba",
            "elasticsearch", "noida-db")


# -- timing helpers ----------------------------------------------------------------------------------
def thread_ids() -> set[int]:
    return {int(tid) for tid in os.listdir("/proc/self/task")}


def threads_cpu(tids: set[int]) -> float:
    """CPU seconds used so far by these threads of this process (a thread that ended counts 0)."""
    total = 0
    for tid in tids:
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


@dataclass
class Cost:
    calls: int = 0
    wall: float = 0.0
    cpu: float = 0.0


@dataclass
class Probe:
    """What the wrapped modules did: cost per module's extract, OCR reads and skips."""

    extract: dict[str, Cost] = field(default_factory=dict)
    ocr_read: Cost = field(default_factory=Cost)
    ocr_frames: int = 0
    ocr_frames_read: int = 0
    ocr_lines: int = 0

    def clear(self) -> None:
        """Zero every figure in place (the wrappers hold these Cost objects)."""
        for cost in [*self.extract.values(), self.ocr_read]:
            cost.calls, cost.wall, cost.cpu = 0, 0.0, 0.0
        self.ocr_frames = self.ocr_frames_read = self.ocr_lines = 0


#: module name -> threads its models started while loading (their CPU is that module's)
HELPER_THREADS: dict[str, set[int]] = {}


def timed(cost: Cost, fn: Callable, helpers: set[int] | frozenset[int] = frozenset()) -> Callable:
    """``fn`` adding its calls, wall seconds and CPU seconds (calling thread + ``helpers``) to ``cost``."""
    def call(*args, **kwargs):
        w, c, h = time.perf_counter(), time.thread_time(), threads_cpu(helpers)
        try:
            return fn(*args, **kwargs)
        finally:
            cost.calls += 1
            cost.wall += time.perf_counter() - w
            cost.cpu += time.thread_time() - c + max(0.0, threads_cpu(helpers) - h)
    return call


def instrument(library, probe: Probe) -> None:
    """Wrap the library's module instances (product classes untouched) so that ``probe`` fills up."""
    for name, module in library.modules.items():
        extract = timed(probe.extract.setdefault(name, Cost()), module.extract, HELPER_THREADS.get(name, set()))
        if name == "ocr":
            module.extract = ocr_counted(extract, probe)
        else:
            module.extract = extract
    if "ocr" in library.modules:
        reader = library.modules["ocr"].reader
        reader.read = timed(probe.ocr_read, reader.read)


def ocr_counted(extract: Callable, probe: Probe) -> Callable:
    """The OCR module's extract, counting the sampled frames it read and those change detection skipped."""
    def call(media, frames):
        out = extract(media, frames)  # one FrameText per frame; lines None = not read
        probe.ocr_frames += len(out)
        read = [o for o in out if o.lines is not None]
        probe.ocr_frames_read += len(read)
        probe.ocr_lines += sum(len(o.lines) for o in read)
        return out
    return call


def warm_up(library) -> None:
    """Load every model of the library now (not while timing), noting the threads each one starts.

    jieba's dictionary, which the first text unit written loads, is loaded here too.
    """
    from zhaopian.modules.asr.transcribe import load_model
    from zhaopian.search.stores.text_analysis import words

    words("预热 warm-up")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (270, 480, 3), np.uint8)
    loaders = {
        "visual": lambda m: m.encoder.encode_images([image]),
        "labels": lambda m: m.classify([image]),
        "ocr": lambda m: m.reader.read(image),
        "asr": lambda m: load_model(m.whisper),
    }
    for name, module in library.modules.items():
        if name in loaders:
            before = thread_ids()
            loaders[name](module)
            HELPER_THREADS.setdefault(name, set()).update(thread_ids() - before)


def clear_forward_memo() -> None:
    """Forget the forward passes the (process-wide) bundled encoder remembers, so that a library
    does not profit from frames an earlier library classified."""
    from zhaopian.modules.visual.encoders.base import EncoderConfig
    from zhaopian.modules.visual.encoders.registry import create_encoder

    encoder = create_encoder(EncoderConfig(backend="bundled"))
    with encoder._memo_lock:
        encoder._memo.clear()


def median_tree(runs: list[Any]) -> Any:
    """The median of every number across runs of the same shape (other values from the first run)."""
    first = runs[0]
    if isinstance(first, dict):
        return {k: median_tree([r[k] for r in runs]) for k in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool) and all(r is not None for r in runs):
        value = statistics.median(runs)
        return round(value, 4) if isinstance(value, float) else value
    return first


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b > 0 else None


# -- inputs -----------------------------------------------------------------------------------------
def find_narrated(given: Path | None) -> Path | None:
    for path in ([given] if given else NARRATED_PLACES):
        if path.is_file():
            return path.resolve()
    return None


STATIC_LINES = ("Welcome to the evening news", "Heavy rain is expected tomorrow", "Trains run every ten minutes",
                "The museum opens at nine", "Tickets cost five euros", "Thank you for watching")
STATIC_SECONDS, STATIC_FPS, STATIC_SIZE = 30, 25, (640, 360)


def build_static(cache_dir: Path) -> Path:
    """A tripod shot with subtitles: a still photo with light sensor-like noise, an English line
    replaced every 5 s (Pillow's built-in font), 30 s of H.264 at 25 fps (built once)."""
    import av
    from PIL import Image, ImageDraw, ImageFont
    from skimage import data

    path = cache_dir / "static-subtitles-v1.mp4"
    if path.is_file():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    width, height = STATIC_SIZE
    photo = Image.fromarray(data.coffee()).resize((width, height), Image.Resampling.BICUBIC)
    font = ImageFont.load_default(size=26)
    per_line = STATIC_SECONDS // len(STATIC_LINES)
    stills = []
    for text in STATIC_LINES:
        image = photo.copy()
        ImageDraw.Draw(image).text((width / 2, height - 24), text, font=font, fill="white", anchor="ms",
                                   stroke_width=2, stroke_fill="black")
        stills.append(np.asarray(image, np.int16))
    rng = np.random.default_rng(3)
    tmp = path.with_name(f".{path.name}.part.mp4")
    with av.open(str(tmp), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=STATIC_FPS, options={"crf": "23", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(STATIC_SECONDS * STATIC_FPS):
            still = stills[min(i // (per_line * STATIC_FPS), len(stills) - 1)]
            noisy = np.clip(still + rng.normal(0, 3, still.shape), 0, 255).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(noisy, format="rgb24")))
        out.mux(stream.encode(None))
    os.replace(tmp, path)
    return path


def build_groups(cache_dir: Path, narrated: Path | None, quick: bool) -> dict[str, list[Path]]:
    from zhaopian.indexer.demo import NARRATED, build_demo
    from zhaopian.indexer.ingest import VIDEO_SUFFIXES

    demo = build_demo(cache_dir / "demo")
    # the demo's own clips; in a source checkout it also copies the narrated fixture, measured on its own
    videos = sorted(p for p in demo.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.name != NARRATED)
    groups = {"demo": videos[:1] if quick else videos}
    if narrated is not None:
        groups["narrated"] = [narrated]
    groups["static"] = [build_static(cache_dir)]
    return groups


def describe(groups: dict[str, list[Path]]) -> dict:
    import av

    from zhaopian.indexer.decode import probe

    out = {}
    for name, paths in groups.items():
        probes = [probe(p) for p in paths]
        audio = []
        for p in paths:
            with av.open(str(p)) as container:
                audio.append(bool(container.streams.audio))
        out[name] = {"files": [str(p) for p in paths], "seconds": round(sum(p.duration for p in probes), 2),
                     "size": sorted({f"{p.width}x{p.height}" for p in probes}),
                     "with_audio": sum(audio)}
    return out


# -- part 1: ingest ---------------------------------------------------------------------------------
class Bench:
    """A Service in a temporary data directory; each measurement indexes into fresh libraries."""

    def __init__(self, data_dir: Path, groups: dict[str, list[Path]]) -> None:
        from zhaopian.api.service import Service
        from zhaopian.api.settings import Settings

        self.groups = groups
        files = [p for paths in groups.values() for p in paths]
        root = Path(os.path.commonpath([str(p.parent) for p in files]))
        self.service = Service(Settings(data_dir=data_dir, media_root=root, threads=1))
        self._count = 0

    def library(self, modules: Sequence[str], options: dict[str, dict] | None = None):
        config = self.service.default_config(modules=modules)
        for name, extra in (options or {}).items():
            config.modules[name] = {**config.modules[name], **extra}
        self._count += 1
        name = f"bench-{self._count}-{'-'.join(modules)}"
        self.service.create_library(name, config)
        library = self.service.library(name)
        warm_up(library)
        return library

    def index(self, modules: Sequence[str], options: dict[str, dict] | None = None) -> dict:
        """Index every group into one fresh library (one Ingestor per group); figures per group."""
        from zhaopian.indexer.ingest import Ingestor

        library = self.library(modules, options)
        probe = Probe()
        instrument(library, probe)
        clear_forward_memo()
        out = {}
        for group, paths in self.groups.items():
            probe.clear()
            before = {m: library.text.count(m) for m in TEXT_MODULES if m in library.modules}
            ingestor = Ingestor(library, self.service.settings.media_roots)
            with Clock() as clock:
                results = ingestor.add(paths)
            failed = [r for r in results if r.status != "indexed"]
            if failed:
                raise SystemExit(f"indexing failed: {failed}")
            units = {m: library.text.count(m) - n for m, n in before.items()}
            if "visual" in library.modules:
                units["visual"] = sum(r.units for r in results) - sum(units.values())
            out[group] = group_figures(ingestor.stats, probe, units, clock)
        return out


def module_figures(extract_wall: float, extract_cpu: float, write: float, units: int, media: float,
                   frames: int) -> dict:
    """One route's figures: CPU s per video s counts extract CPU + write; RTF = video s / (extract + write) wall s."""
    spent = extract_wall + write
    return {"extract_wall_s": round(extract_wall, 3), "extract_cpu_s": round(extract_cpu, 3), "write_s": round(write, 3),
            "units": units, "cpu_s_per_video_s": round((extract_cpu + write) / media, 4),
            "rtf": round(media / spent, 1) if spent else None,
            "cpu_ms_per_frame": round(extract_cpu / frames * 1e3, 1) if frames else None}


def ocr_figures(frames: int, read: int, lines: int, read_cpu: float, extract_cpu: float) -> dict:
    """Frames read vs skipped; CPU per read frame (RapidOCR) and per sampled frame (change detection)."""
    return {"frames": frames, "read": read, "skipped": frames - read,
            "skipped_fraction": round(1 - read / frames, 3) if frames else None, "lines_read": lines,
            "read_cpu_s": round(read_cpu, 3), "extract_cpu_s": round(extract_cpu, 3),
            "cpu_s_per_read_frame": round(read_cpu / read, 3) if read else None,
            "detect_cpu_ms_per_frame": round((extract_cpu - read_cpu) / frames * 1e3, 2) if frames else None}


def group_figures(stats, probe: Probe, units: dict[str, int], clock: Clock) -> dict:
    """The figures of one input indexed by one Ingestor."""
    media, frames = stats.media_seconds, stats.frames
    modules = {name: module_figures(stats.seconds.get(f"extract.{name}", 0.0), cost.cpu,
                                    stats.seconds.get(f"write.{name}", 0.0), units.get(name, 0), media, frames)
               for name, cost in probe.extract.items()}
    attributed = sum(c.cpu for c in probe.extract.values()) + sum(
        v for k, v in stats.seconds.items() if k.startswith("write.") or k == "flush")
    figures = {"video_s": round(media, 2), "frames": frames, **clock.figures(), "rtf": round(media / clock.wall, 2),
               "stages_s": {k: round(v, 3) for k, v in sorted(stats.seconds.items())},
               "decode_and_other_cpu_s": round(clock.cpu - attributed, 2), "modules": modules}
    if "ocr" in probe.extract:
        figures["ocr"] = ocr_figures(probe.ocr_frames, probe.ocr_frames_read, probe.ocr_lines, probe.ocr_read.cpu,
                                     probe.extract["ocr"].cpu)
    return figures


def total_of(groups: dict[str, dict]) -> dict:
    """Figures over all inputs of one run: sums, with the per-second and per-frame figures recomputed."""
    runs = list(groups.values())
    media, frames, wall, cpu = (sum(g[k] for g in runs) for k in ("video_s", "frames", "wall_s", "cpu_s"))
    others = [g["others_cores"] for g in runs]
    out: dict[str, Any] = {
        "video_s": round(media, 2), "frames": frames, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
        "cores_busy": round(cpu / wall, 2), "rtf": round(media / wall, 2),
        "others_cores": None if None in others else round(sum(o * g["wall_s"] for o, g in zip(others, runs)) / wall, 2),
        "decode_and_other_cpu_s": round(sum(g["decode_and_other_cpu_s"] for g in runs), 2), "modules": {}}
    for name in runs[0]["modules"]:
        mods = [g["modules"][name] for g in runs]
        sums = (sum(m[k] for m in mods) for k in ("extract_wall_s", "extract_cpu_s", "write_s", "units"))
        out["modules"][name] = module_figures(*sums, media, frames)
    if "ocr" in runs[0]:
        ocr = [g["ocr"] for g in runs]
        out["ocr"] = ocr_figures(*(sum(o[k] for o in ocr)
                                   for k in ("frames", "read", "lines_read", "read_cpu_s", "extract_cpu_s")))
    return out


def with_total(groups: dict[str, dict]) -> dict:
    return {**groups, "total": total_of(groups)}


def measure_asr_alone(path: Path, repeat: int) -> dict:
    """``transcribe`` on one file, nothing else running in this process: wall, process CPU, RTF.

    Its steps are timed by wrapping the transcribe module's ``_detect_language`` (one call per
    stretch of speech) and ``_run`` (one faster-whisper pass per language found).
    """
    from zhaopian.indexer.decode import probe
    from zhaopian.modules.asr import transcribe as asr

    config = asr.WhisperConfig()
    asr.load_model(config)
    seconds = probe(path).duration
    steps = {"detect_language": Cost(), "passes": Cost()}
    originals = asr._detect_language, asr._run
    asr._detect_language = timed(steps["detect_language"], asr._detect_language)
    asr._run = timed(steps["passes"], asr._run)
    runs = []
    try:
        for _ in range(repeat):
            for cost in steps.values():
                cost.calls, cost.wall, cost.cpu = 0, 0.0, 0.0
            with Clock() as clock:
                transcript = asr.transcribe(path, config)
            runs.append({"video_s": round(seconds, 2), **clock.figures(), "rtf": round(seconds / clock.wall, 2),
                         "cpu_s_per_video_s": round(clock.cpu / seconds, 3), "units": len(transcript.units),
                         "languages": sorted({u.language for u in transcript.units}),
                         "steps_wall_s": {name: round(c.wall, 2) for name, c in steps.items()},
                         "steps_calls": {name: c.calls for name, c in steps.items()}})
    finally:
        asr._detect_language, asr._run = originals
    return {"runs": runs, "median": median_tree(runs)}


# -- part 2: text search ------------------------------------------------------------------------------
@dataclass
class Vocabulary:
    """Words, most frequent first, and their cumulative sampling probabilities."""

    words: list[str]
    cdf: np.ndarray

    @classmethod
    def of(cls, counts: dict[str, float]) -> Vocabulary:
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])
        cdf = np.cumsum([w for _, w in ranked], dtype=np.float64)
        return cls([w for w, _ in ranked], cdf / cdf[-1])

    def draw(self, rng: np.random.Generator, n: int) -> list[str]:
        picks = np.searchsorted(self.cdf, rng.random(n), side="right")
        return [self.words[min(i, len(self.words) - 1)] for i in picks]


def chinese_vocabulary() -> Vocabulary:
    """Words of jieba's dictionary made of Chinese characters only, weighted by their frequency."""
    import jieba

    counts = {}
    with jieba.dt.get_dict_file() as fh:
        for line in fh:
            word, freq, *_ = line.decode("utf-8").split()
            if re.fullmatch(r"[\u4e00-\u9fff]+", word):
                counts[word] = float(freq)
    return Vocabulary.of(counts)


def english_vocabulary() -> Vocabulary:
    """Words of Python's own documentation (``pydoc_data``, ships with Python), weighted by frequency."""
    import pydoc_data.topics

    text = " ".join(pydoc_data.topics.topics.values()).lower()
    return Vocabulary.of(dict(Counter(re.findall(r"\b[a-z]{2,}\b", text))))


def compose_units(n: int, seed: int) -> list:
    """``n`` TextDoc units, 100 per medium, deterministic for a seed (see the module docstring)."""
    from zhaopian.modules.labels.module import label_text
    from zhaopian.search.stores.text import TextDoc

    rng = np.random.default_rng(seed)
    zh, en = chinese_vocabulary(), english_vocabulary()

    def zh_text(lo: int, hi: int) -> str:
        return "".join(zh.draw(rng, int(rng.integers(lo, hi + 1))))

    def en_text(lo: int, hi: int) -> str:
        return " ".join(en.draw(rng, int(rng.integers(lo, hi + 1)))).capitalize()

    docs = []
    for i in range(n):
        media_id, t = i // UNITS_PER_MEDIUM + 1, float(i % UNITS_PER_MEDIUM) * 3.0
        kind = rng.random()
        if kind < 0.45:  # a spoken sentence, 60% Chinese
            module, lang = "asr", "zh" if rng.random() < 0.6 else "en"
            text, field_, end = (zh_text(4, 14) + "。" if lang == "zh" else en_text(5, 18) + "."), "text", t + 3
        elif kind < 0.80:  # a line on screen: Chinese, English or both
            module, r = "ocr", rng.random()
            lang = "en" if 0.5 <= r < 0.8 else "zh"  # as the ocr module tags a line with any Chinese in it
            text = zh_text(1, 5) if r < 0.5 else en_text(1, 4) if r < 0.8 else f"{zh_text(1, 3)} {en_text(1, 3)}"
            field_, end = "text", t + 2
        elif kind < 0.95:  # an ImageNet label
            module, lang, field_, end = "labels", "", "text", t + 4
            text = label_text(int(rng.integers(1000)))
        else:  # a title
            module, field_, end = "meta", "title", 300.0
            lang = "zh" if rng.random() < 0.5 else "en"
            text = zh_text(2, 6) if lang == "zh" else en_text(2, 6)
            t = 0.0
        docs.append(TextDoc(unit_id=i + 1, media_id=media_id, module=module, start=t, end=end, text=text,
                            field=field_, lang=lang))
    return docs


def compose_queries(docs: list, per_kind: int, seed: int) -> dict[str, list]:
    """Queries of each kind, each limited to one module like a route's query.

    Words and phrases are taken from random units (so every query finds at least that unit)
    and searched in that unit's module; the media filter keeps that unit's medium among 50.
    """
    from zhaopian.search.stores.text import TextQuery
    from zhaopian.search.stores.text_analysis import CJK_RE, words

    rng = np.random.default_rng(seed + 1)
    media = docs[-1].media_id
    by_lang = {lang: [d for d in docs if d.lang == lang] for lang in ("zh", "en")}

    def pick(lang: str) -> tuple[Any, list[str]]:
        """A random unit of that language and its content words (Chinese: 2+ characters, English: 3+ letters)."""
        while True:
            doc = by_lang[lang][int(rng.integers(len(by_lang[lang])))]
            tokens = words(doc.text, query=True)
            if lang == "zh":
                tokens = [t for t in tokens if CJK_RE.fullmatch(t)]
            content = [t for t in tokens if len(t) >= (2 if lang == "zh" else 3)]
            if len(content) >= 2 and len(tokens) >= 3:
                return doc, tokens

    def word_query(lang: str, n: int, media_filter: bool = False) -> TextQuery:
        doc, tokens = pick(lang)
        content = [t for t in tokens if len(t) >= (2 if lang == "zh" else 3)]
        chosen = [content[i] for i in sorted(rng.choice(len(content), n, replace=False))]
        allowed = None
        if media_filter:
            others = rng.choice(np.arange(1, media + 1), min(FILTER_MEDIA, media), replace=False)
            allowed = tuple(sorted({doc.media_id, *(int(m) for m in others[: FILTER_MEDIA - 1])}))
        return TextQuery(text=" ".join(chosen), modules=(doc.module,), media_ids=allowed)

    def phrase_query(lang: str) -> TextQuery:
        doc, tokens = pick(lang)
        size = 2 if lang == "zh" else 3
        start = int(rng.integers(len(tokens) - size + 1))
        phrase = ("" if lang == "zh" else " ").join(tokens[start:start + size])  # phrases match case-blind
        return TextQuery(phrases=(phrase,), modules=(doc.module,))

    kinds: dict[str, Callable[[], TextQuery]] = {
        "zh 1 word": lambda: word_query("zh", 1),
        "zh 2 words": lambda: word_query("zh", 2),
        "en 1 word": lambda: word_query("en", 1),
        "en 2 words": lambda: word_query("en", 2),
        "zh phrase": lambda: phrase_query("zh"),
        "en phrase": lambda: phrase_query("en"),
        f"zh 1 word, {FILTER_MEDIA} media": lambda: word_query("zh", 1, media_filter=True),
    }
    return {kind: [make() for _ in range(per_kind)] for kind, make in kinds.items()}


def directory_mib(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 1)


def measure_text_index(config, location, docs: list, queries: dict[str, list], repeat: int) -> dict:
    """Add + flush throughput, then per query kind the median over passes of p50/p95 latency."""
    from zhaopian.search.stores.text import create_text_index

    index = create_text_index(config, location)
    try:
        with Clock() as clock:
            for start in range(0, len(docs), UNITS_PER_MEDIUM):
                index.add(docs[start:start + UNITS_PER_MEDIUM])
                if (start // UNITS_PER_MEDIUM + 1) % FLUSH_EVERY_MEDIA == 0:
                    index.flush()
            index.flush()
        if index.count() != len(docs):
            raise RuntimeError(f"{config.backend}: {index.count()} units counted, {len(docs)} added")
        out: dict[str, Any] = {"units": len(docs), "add_flush": {**clock.figures(),
                                                                 "units_per_s": round(len(docs) / clock.wall)}}
        if config.backend == "tantivy":
            out["disk_mib"] = directory_mib(location.directory)
        for q in [q for qs in queries.values() for q in qs[:3]]:
            index.search(q, RECALL_K)  # warm-up: reader open, caches
        kinds: dict[str, list] = {kind: [] for kind in queries}
        others = []
        for _ in range(repeat):
            with Clock() as pass_clock:
                for kind, qs in queries.items():
                    ms, hits = [], []
                    for q in qs:
                        t = time.perf_counter()
                        found = index.search(q, RECALL_K)
                        ms.append((time.perf_counter() - t) * 1e3)
                        hits.append(len(found))
                    kinds[kind].append({"p50_ms": round(float(np.percentile(ms, 50)), 2),
                                        "p95_ms": round(float(np.percentile(ms, 95)), 2),
                                        "mean_hits": round(float(np.mean(hits)), 1)})
            others.append(pass_clock.others_cores)
        out["queries_per_kind"] = len(next(iter(queries.values())))
        out["search"] = {kind: median_tree(runs) for kind, runs in kinds.items()}
        out["search_others_cores"] = None if None in others else statistics.median(others)
        return out
    finally:
        index.drop()
        index.close()


def analysis_rate(docs: list) -> float:
    """Units per second that ``words`` + ``grams`` (the analysis both backends run in Python) get through."""
    from zhaopian.search.stores.text_analysis import grams, words

    t = time.perf_counter()
    for d in docs:
        words(d.text)
        grams(d.text)
    return round(len(docs) / (time.perf_counter() - t))


class NoidaServer:
    """``noida-db`` (an Elasticsearch-8-compatible server from PyPI) on a free local port, in its own folder."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.process: subprocess.Popen | None = None
        self.url = ""
        self._log: Any = None

    @staticmethod
    def binary() -> str | None:
        beside = Path(sys.executable).parent / "noida-db"
        return str(beside) if beside.exists() else shutil.which("noida-db")

    def __enter__(self) -> Self:
        binary = self.binary()
        if binary is None:
            raise RuntimeError("noida-db is not installed (pip install noida-db==0.2.3)")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(self.data_dir / "server.log", "wb")
        self.process = subprocess.Popen([binary, "start", "--only", "elasticsearch", "--elasticsearch-port", str(port),
                                         "--data-dir", str(self.data_dir / "data")],
                                        stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with urllib.request.urlopen(self.url, timeout=1.0):
                    return self
            except OSError:
                time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"noida-db did not answer on {self.url}")

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # its own session: the server and its children
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        if self._log is not None:
            self._log.close()


def measure_search(tmp: Path, args: argparse.Namespace) -> dict:
    from zhaopian.search.stores.text import TextIndexConfig, TextIndexLocation

    out: dict[str, Any] = {}
    print(f"composing {args.tantivy_units} text units...", file=sys.stderr)
    docs = compose_units(max(args.tantivy_units, args.es_units), args.seed)
    out["analysis_units_per_s"] = analysis_rate(docs[:5000])
    plans = [("tantivy", args.tantivy_units, args.queries), ("elasticsearch", args.es_units, args.es_queries)]
    for backend, n, per_kind in plans:
        if n <= 0:
            continue
        subset = docs[:n]
        queries = compose_queries(subset, per_kind, args.seed)
        print(f"text index {backend}: {n} units, {per_kind} queries per kind...", file=sys.stderr)
        directory = tmp / f"text-{backend}"
        directory.mkdir()
        location = TextIndexLocation(directory, "bench", f"text{n}")
        try:
            if backend == "tantivy":
                out[backend] = measure_text_index(TextIndexConfig(), location, subset, queries, args.repeat)
            elif NoidaServer.binary() is None:
                out[backend] = {"skipped": "noida-db is not installed (pip install noida-db==0.2.3)"}
            else:
                with NoidaServer(directory) as server:
                    config = TextIndexConfig(backend="elasticsearch", url=[server.url], index_prefix="bench",
                                             timeout=120)
                    out[backend] = {"server": f"noida-db {_version('noida-db')} (stand-in)",
                                    **measure_text_index(config, location, subset, queries, args.repeat)}
        except Exception as exc:  # noqa: BLE001 - one backend failing must not lose the other figures
            out[backend] = {"skipped": f"failed: {type(exc).__name__}: {exc}"}
            print(f"text index {backend} failed: {exc!r}", file=sys.stderr)
    return out


# -- output -----------------------------------------------------------------------------------------
def _f(value: Any, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}{suffix}" if isinstance(value, float) else f"{value}{suffix}"


def print_ingest(r: dict) -> None:
    for name, g in r["inputs"].items():
        print(f"  {name}: {len(g['files'])} file(s), {g['seconds']} s, {', '.join(g['size'])}, "
              f"{g['with_audio']} with audio")
    ingest = r["ingest"]
    all_routes = ingest["all routes"]
    print("\nIngest, all routes (visual+labels+ocr+asr+meta), per route (CPU s per video s = extract CPU + write; "
          "RTF = video s / (extract + write) wall s)")
    print("| input | route | units | extract wall s | extract CPU s | write s | CPU s / video s | RTF | CPU ms / frame |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for group, g in all_routes.items():
        for name, mod in g["modules"].items():
            print(f"| {group} | {name} | {mod['units']} | {_f(mod['extract_wall_s'])} | {_f(mod['extract_cpu_s'])} | "
                  f"{_f(mod['write_s'], 3)} | {_f(mod['cpu_s_per_video_s'], 3)} | {_f(mod['rtf'], 1, 'x')} | "
                  f"{_f(mod['cpu_ms_per_frame'], 1)} |")
    print("\nWhole pipeline, all routes ('cores busy' = process CPU s / wall s; 'others' = cores other processes used)")
    print("| input | video s | frames | wall s | CPU s | RTF | cores busy | others | decode + other CPU s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for group, g in all_routes.items():
        print(f"| {group} | {g['video_s']} | {g['frames']} | {_f(g['wall_s'])} | {_f(g['cpu_s'])} | {_f(g['rtf'], 1, 'x')} | "
              f"{_f(g['cores_busy'])} | {_f(g['others_cores'])} | {_f(g['decode_and_other_cpu_s'])} |")
    print("\nOCR: frames read vs skipped (change detection and the idle wait), cost per read frame")
    print("| input, library | sampled frames | read | skipped | skipped % | lines read | CPU s / read frame | "
          "detection CPU ms / frame | OCR extract CPU s | vs reading every frame |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    s = r["summary"]
    for lib in ("all routes", "ocr only, every frame read"):
        for group, g in ingest[lib].items():
            o = g["ocr"]
            versus = _f(s["ocr_cpu_default_vs_every_frame"][group]) if lib == "all routes" else "1"
            print(f"| {group}, {lib} | {o['frames']} | {o['read']} | {o['skipped']} | "
                  f"{_f(100 * o['skipped_fraction'], 0)} | {o['lines_read']} | {_f(o['cpu_s_per_read_frame'], 3)} | "
                  f"{_f(o['detect_cpu_ms_per_frame'], 1)} | {_f(o['extract_cpu_s'])} | {versus} |")
    print("\nLabels and the forward memo (all inputs; extract CPU ms per sampled frame)")
    print("| library | visual | labels |")
    print("|---|---:|---:|")
    for lib in ("visual only", "labels only", "all routes"):
        mods = ingest[lib]["total"]["modules"]
        v, lab = mods.get("visual", {}).get("cpu_ms_per_frame"), mods.get("labels", {}).get("cpu_ms_per_frame")
        print(f"| {lib} | {_f(v, 1)} | {_f(lab, 1)} |")
    print(f"  labels beside the bundled visual encoder cost {_f(s['labels_beside_visual_vs_alone'])} of labels alone "
          f"({_f(s['labels_beside_visual_vs_visual'])} of visual alone)")
    if r.get("asr_alone"):
        a = r["asr_alone"]["median"]
        print(f"\nASR alone (transcribe, narrated clip, {a['video_s']} s): wall {a['wall_s']} s, CPU {a['cpu_s']} s, "
              f"RTF {a['rtf']}x, {a['cpu_s_per_video_s']} CPU s per video s, {a['units']} units "
              f"({', '.join(a['languages'])}), others {_f(a['others_cores'])}")
        steps, calls = a["steps_wall_s"], a["steps_calls"]
        print(f"  of which language detection {steps['detect_language']} s ({calls['detect_language']} stretches), "
              f"transcription {steps['passes']} s ({calls['passes']} passes, one per language)")


def print_search(search: dict) -> None:
    print(f"\nText search (k={RECALL_K}, one query at a time, each limited to one module; medians over passes; "
          f"text analysis alone: {search['analysis_units_per_s']} units/s)")
    print("| backend | units | add+flush units/s | query kind | p50 ms | p95 ms | mean hits |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for backend in ("tantivy", "elasticsearch"):
        b = search.get(backend)
        if not b:
            continue
        if "skipped" in b:
            print(f"| {backend} | - | - | skipped: {b['skipped']} | | | |")
            continue
        for i, (kind, q) in enumerate(b["search"].items()):
            head = f"| {backend} | {b['units']} | {b['add_flush']['units_per_s']} |" if i == 0 else "| | | |"
            print(f"{head} {kind} | {_f(q['p50_ms'])} | {_f(q['p95_ms'])} | {_f(q['mean_hits'], 1)} |")


def print_report(r: dict) -> None:
    m = r["machine"]
    print(f"\nMachine: {m['cpu_model']}, {m['cpus']} CPUs, {m['memory_gib']} GiB, {m['system']}, Python {m['python']}; "
          f"load average {r['load_avg_start']} at start, {r['load_avg_end']} at the end; repeat {r['repeat']} (medians); "
          f"code {r['code']['commit']} ({r['code']['modified_files']} files modified)")
    if r.get("narrated_note"):
        print(f"  {r['narrated_note']}")
    if "ingest" in r:
        print_ingest(r)
    if "search" in r:
        print_search(r["search"])
    print(f"\ntotal {r['total_seconds']} s")


def summarize(ingest: dict) -> dict:
    """The ratios the report quotes: OCR with / without change detection, labels with / without visual."""
    every = ingest["ocr only, every frame read"]
    out: dict[str, Any] = {"ocr_cpu_default_vs_every_frame": {
        group: ratio(g["modules"]["ocr"]["extract_cpu_s"], every[group]["modules"]["ocr"]["extract_cpu_s"])
        for group, g in ingest["all routes"].items()}}
    labels_alone = ingest["labels only"]["total"]["modules"]["labels"]["extract_cpu_s"]
    labels_beside = ingest["all routes"]["total"]["modules"]["labels"]["extract_cpu_s"]
    visual_alone = ingest["visual only"]["total"]["modules"]["visual"]["extract_cpu_s"]
    out["labels_beside_visual_vs_alone"] = ratio(labels_beside, labels_alone)
    out["labels_beside_visual_vs_visual"] = ratio(labels_beside, visual_alone)
    return out


#: the ingest measurements: libraries with these modules (and module options)
LIBRARIES: dict[str, tuple[tuple[str, ...], dict[str, dict]]] = {
    "all routes": (ALL_MODULES, {}),
    "ocr only, every frame read": (("ocr",), {"ocr": {"change_threshold": 0.0, "idle_seconds": 0.0}}),
    "visual only": (("visual",), {}),
    "labels only": (("labels",), {}),
}


def measure_ingest(data_dir: Path, groups: dict[str, list[Path]], repeat: int) -> dict:
    """Every library of LIBRARIES, ``repeat`` times in turn; medians per figure."""
    bench = Bench(data_dir, groups)
    runs: dict[str, list] = {name: [] for name in LIBRARIES}
    try:
        for i in range(repeat):
            for name, (modules, options) in LIBRARIES.items():
                print(f"ingest {i + 1}/{repeat}: {name}...", file=sys.stderr)
                runs[name].append(with_total(bench.index(modules, options)))
    finally:
        bench.service.close()
    return {name: median_tree(r) for name, r in runs.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: one demo clip, 1 repeat, small text indexes")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement; medians are reported")
    places = " or ".join(str(p.relative_to(REPO)) for p in NARRATED_PLACES)
    parser.add_argument("--narrated", type=Path, help=f"the narrated fixture (default: {places})")
    parser.add_argument("--tantivy-units", type=int, default=100_000)
    parser.add_argument("--es-units", type=int, default=10_000, help="units in the Elasticsearch stand-in (0: skip)")
    parser.add_argument("--queries", type=int, default=30, help="queries per kind, tantivy (default: %(default)s)")
    parser.add_argument("--es-queries", type=int, default=8, help="queries per kind, Elasticsearch (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-ingest", action="store_true", help="text search only")
    parser.add_argument("--skip-search", action="store_true", help="ingest only")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "zhaopian-bench",
                        help="where the demo set is built and reused (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "text_routes.json",
                        help="JSON results (default: bench/results/text_routes.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat, args.tantivy_units, args.es_units, args.queries, args.es_queries = 1, 5000, 1000, 10, 5

    t_start = time.perf_counter()
    results: dict[str, Any] = {"machine": {**machine_info(), **{p: _version(p) for p in PACKAGES}},
                               "code": code_version(), "load_avg_start": round(os.getloadavg()[0], 2),
                               "repeat": args.repeat}
    narrated = find_narrated(args.narrated)
    if narrated is None:
        looked = [args.narrated] if args.narrated else NARRATED_PLACES
        results["narrated_note"] = (f"narrated fixture absent (looked for {', '.join(map(str, looked))}): "
                                    "demo set only, no speech or on-screen text figures")
        print(results["narrated_note"], file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="zhaopian-bench-text-") as tmp:
        if not args.skip_ingest:
            groups = build_groups(args.cache_dir, narrated, args.quick)
            results["inputs"] = describe(groups)
            results["ingest"] = measure_ingest(Path(tmp) / "data", groups, args.repeat)
            results["summary"] = summarize(results["ingest"])
            if narrated is not None:
                print("asr alone...", file=sys.stderr)
                results["asr_alone"] = measure_asr_alone(narrated, args.repeat)
        if not args.skip_search:
            results["search"] = measure_search(Path(tmp), args)
    results["load_avg_end"] = round(os.getloadavg()[0], 2)
    results["total_seconds"] = round(time.perf_counter() - t_start, 1)
    print_report(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def code_version() -> dict:
    """The commit measured and whether the working tree differed from it."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10,
                                  check=False).stdout
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "--short", "HEAD").strip() or None,
            "modified_files": len([line for line in git("status", "--porcelain").splitlines() if line.strip()])}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
