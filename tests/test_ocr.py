"""On-screen text: reading lines, skipping frames whose text did not change, tracking lines over time.

Synthetic cases draw English text with Pillow's built-in font on real photos
(scikit-image), so no system font is needed; Chinese is covered by the
committed fixture ``tests/data/narrated.mp4``.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydantic import ValidationError
from zhaopian.indexer.decode import iter_frames
from zhaopian.modules.ocr.reader import (
    ChangeDetector,
    FrameText,
    OcrConfig,
    TextLine,
    TextReader,
        box_iou,
    normalize_text,
    scan_frames,
    track_lines,
)
from zhaopian.search.errors import ModelUnavailable

DATA = Path(__file__).parent / "data"
W, H = 640, 360


def _photo(name: str, size: tuple[int, int] = (W, H)) -> Image.Image:
    skdata = pytest.importorskip("skimage.data", reason="scikit-image ships the real test photos")
    image = Image.fromarray(getattr(skdata, name)()).convert("RGB")
    # the centred crop of the photo's aspect ratio, scaled to the frame
    w, h = image.size
    crop_w, crop_h = min(w, h * size[0] / size[1]), min(h, w * size[1] / size[0])
    box = ((w - crop_w) / 2, (h - crop_h) / 2, (w + crop_w) / 2, (h + crop_h) / 2)
    return image.resize(size, Image.Resampling.BICUBIC, box=box)


def _caption(image: Image.Image, text: str, size: int = 24) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The image with a white, black-outlined subtitle near the bottom, and the subtitle's pixel box."""
    image = image.copy()
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=size)
    xy = (image.width / 2, image.height - 20)
    draw.text(xy, text, font=font, fill="white", anchor="ms", stroke_width=2, stroke_fill="black")
    return image, draw.textbbox(xy, text, font=font, anchor="ms", stroke_width=2)


def _write_video(path: Path, frames: list[Image.Image], fps: int = 10) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "28", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
        for n, image in enumerate(frames):
            frame = av.VideoFrame.from_image(image)
            frame.pts, frame.time_base = n, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _squash(text: str) -> str:
    """Compare readings without spaces: OCR drops or adds spaces next to digits and CJK."""
    return normalize_text(text).replace(" ", "")


@pytest.fixture(scope="module")
def reader() -> TextReader:
    reader = TextReader(OcrConfig(threads=1))
    reader.load()
    return reader


# shown from, until (seconds), text; sampled at 1 fps the frames 0-3 show "Chapter 3", 4-6 "Chapter 4",
# 7-8 nothing, 9 "The end"
SUBTITLES = [(0.0, 3.5, "Chapter 3"), (3.5, 6.5, "Chapter 4"), (8.5, 10.0, "The end")]


@pytest.fixture(scope="module")
def subtitle_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 s of a static real photo (H.264, so with compression noise) whose small subtitle changes."""
    photo = _photo("chelsea")
    fps = 10
    frames = []
    for n in range(10 * fps):
        t = n / fps
        text = next((s for start, end, s in SUBTITLES if start <= t < end), None)
        frames.append(_caption(photo, text, size=18)[0] if text else photo)
    return _write_video(tmp_path_factory.mktemp("ocr") / "subtitles.mp4", frames, fps)


# ---------------------------------------------------------------------------------------------
# Configuration and engine loading
# ---------------------------------------------------------------------------------------------


def test_config_refuses_unknown_and_out_of_range_options():
    assert OcrConfig().threads == 1
    with pytest.raises(ValidationError):
        OcrConfig(lang="en")
    with pytest.raises(ValidationError):
        OcrConfig(threads=0)
    with pytest.raises(ValidationError):
        OcrConfig(min_score=1.5)
    assert OcrConfig(change_threshold=0.2).detector().threshold == 0.2


def test_missing_package_is_a_clear_model_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "rapidocr", None)  # makes `import rapidocr` fail
    reader = TextReader()
    with pytest.raises(ModelUnavailable, match="pip install rapidocr"):
        reader.read(np.asarray(_caption(Image.new("RGB", (200, 60), "grey"), "text")[0]))


def test_engine_loads_once_under_concurrent_first_use(monkeypatch: pytest.MonkeyPatch):
    created = []

    def create(self):
        time.sleep(0.05)  # a slow load, so that both threads arrive while it runs
        created.append(self)
        return object()

    monkeypatch.setattr(TextReader, "_create_engine", create)
    reader = TextReader()
    threads = [threading.Thread(target=reader.load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(created) == 1


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_reads_a_subtitle_with_its_box(reader: TextReader):
    image, (x0, y0, x1, y1) = _caption(_photo("astronaut"), "Meet me at the harbour at six")
    lines = reader.read(np.asarray(image))
    assert [_squash(line.text) for line in lines] == ["meetmeattheharbouratsix"]
    line = lines[0]
    assert 0.6 <= line.score <= 1.0
    assert box_iou(line.box, (x0 / W, y0 / H, x1 / W, y1 / H)) > 0.6


@pytest.mark.slow
def test_photo_without_text_and_flat_frames_give_no_lines(reader: TextReader):
    assert reader.read(np.asarray(_photo("coffee"))) == []
    fresh = TextReader()
    for flat in (np.zeros((H, W, 3), np.uint8), np.full((720, 1280, 3), 255, np.uint8)):
        assert fresh.read(flat) == []
    assert fresh.read(np.zeros((4, 4, 3), np.uint8)) == []  # too small to hold text
    assert fresh._engine is None  # answered without loading the models


@pytest.mark.slow
def test_reads_grayscale_rgba_odd_sized_and_huge_frames(reader: TextReader):
    text = "Harbour bridge at dusk"
    odd, (x0, y0, x1, y1) = _caption(_photo("rocket", (333, 201)), text, size=18)
    gray = np.asarray(odd.convert("L"))
    rgba = np.asarray(odd.convert("RGBA"))
    for image in (gray, gray[:, :, None], rgba, np.asarray(odd)):
        lines = reader.read(image)
        assert [_squash(line.text) for line in lines] == [_squash(text)], image.shape
        assert box_iou(lines[0].box, (x0 / 333, y0 / 201, x1 / 333, y1 / 201)) > 0.5
    # a 4K frame is scaled down before OCR; boxes stay fractions of the frame
    huge, (x0, y0, x1, y1) = _caption(_photo("astronaut", (3840, 2160)), text, size=150)
    lines = reader.read(np.asarray(huge))
    assert [_squash(line.text) for line in lines] == [_squash(text)]
    assert box_iou(lines[0].box, (x0 / 3840, y0 / 2160, x1 / 3840, y1 / 2160)) > 0.5


def test_refuses_frames_that_are_not_images():
    reader = TextReader()
    with pytest.raises(ValueError, match="uint8"):
        reader.read(np.zeros((40, 40, 3), np.float32))
    with pytest.raises(ValueError, match="HxW"):
        reader.read(np.zeros((40, 40, 5), np.uint8))
    with pytest.raises(ValueError):
        ChangeDetector().changed(np.zeros((2, 40, 40, 3), np.uint8))


# ---------------------------------------------------------------------------------------------
# Change detection
# ---------------------------------------------------------------------------------------------


def test_detector_skips_static_frames_and_catches_every_subtitle_change(subtitle_video: Path):
    detector = ChangeDetector()
    frames = list(iter_frames(subtitle_video))
    assert len(frames) == 10
    read = [round(frame.t) for frame in frames if detector.changed(frame.image)]
    # the first frame, "Chapter 3" -> "Chapter 4" (one 18-pixel digit), the subtitle leaving, a new one
    assert read == [0, 4, 7, 9]


def test_detector_ignores_noise_but_not_a_cut_and_starts_over_after_reset():
    photo = np.asarray(_photo("astronaut"))
    rng = np.random.default_rng(0)
    detector = ChangeDetector()
    assert detector.score(photo) == math.inf
    assert detector.changed(photo)
    for _ in range(5):  # sensor-like noise, sigma 2 grey levels
        noisy = np.clip(photo + rng.normal(0, 2, photo.shape), 0, 255).astype(np.uint8)
        assert not detector.changed(noisy)
    other = np.asarray(_photo("coffee"))
    assert detector.changed(other)
    assert not detector.changed(other)
    detector.reset()
    assert detector.changed(other)
    # a new frame size (another medium or a resolution switch) is a change
    assert detector.changed(np.asarray(_photo("coffee", (320, 180))))
    # threshold 0: every frame is read
    always = ChangeDetector(threshold=0.0)
    assert always.changed(other) and always.changed(other)


def test_detector_reads_again_when_a_slow_change_adds_up():
    """A slow cross-fade: no step is above the threshold, but frames are compared with the last one read."""
    a, b = (np.asarray(_photo(name), np.float32) for name in ("astronaut", "rocket"))
    detector = ChangeDetector()
    steps = [(a + (b - a) * i / 40).round().astype(np.uint8) for i in range(41)]
    pairwise = ChangeDetector()
    for previous, current in zip(steps, steps[1:]):
        pairwise.reset()
        pairwise.changed(previous)
        assert pairwise.score(current) <= pairwise.threshold
    read = [i for i, frame in enumerate(steps) if detector.changed(frame)]
    assert read[0] == 0 and 2 <= len(read) < 20


# ---------------------------------------------------------------------------------------------
# Tracking
# ---------------------------------------------------------------------------------------------

BOTTOM = (0.25, 0.85, 0.75, 0.93)
TOP = (0.3, 0.05, 0.7, 0.15)


def _line(text: str, box=BOTTOM, score: float = 0.95, dx: float = 0.0) -> TextLine:
    return TextLine(text, (box[0] + dx, box[1], box[2] + dx, box[3]), score)


def _frames(*lines_per_frame, start: float = 0.0, step: float = 1.0) -> list[FrameText]:
    return [FrameText(start + i * step, step, None if lines is None else tuple(lines))
            for i, lines in enumerate(lines_per_frame)]


def test_tracking_merges_a_jittered_line_into_one_span():
    good, bad = "Fresh espresso every morning", "Fresh espress0 every mornig"
    observations = _frames([_line(good)], [_line(bad, dx=0.004)], [_line(good, dx=-0.003)],
                           [_line("FRESH ESPRESSO  every morning", score=0.7)], None, [_line(good)], [])
    spans = track_lines(observations)
    assert len(spans) == 1
    span = spans[0]
    assert (span.text, span.start, span.end, span.box) == (good, 0.0, 6.0, BOTTOM)
    assert set(span.readings) == {good, bad, "FRESH ESPRESSO  every morning"}
    assert span.readings[0] == good


def test_tracking_splits_different_lines_and_places():
    observations = _frames(
        [_line("限时优惠 50%")], None, [_line("限时优惠 50%"), _line("Welcome", TOP)],
        [_line("Fresh espresso every morning"), _line("Welcome", TOP)],
        [_line("Welcome")],  # the same text somewhere else is another line
    )
    spans = [(s.text, s.start, s.end) for s in track_lines(observations)]
    assert spans == [("限时优惠 50%", 0.0, 3.0), ("Welcome", 2.0, 4.0), ("Fresh espresso every morning", 3.0, 4.0),
                     ("Welcome", 4.0, 5.0)]


def test_tracking_splits_an_edit_that_holds_but_not_a_flicker():
    # "Chapter 3" -> "Chapter 4" in place: similar text, same box, but the new reading holds
    observations = _frames([_line("Chapter 3")], None, None, [_line("Chapter 4")], None, [])
    assert [(s.text, s.start, s.end) for s in track_lines(observations)] == [("Chapter 3", 0.0, 3.0),
                                                                            ("Chapter 4", 3.0, 5.0)]
    # a one-frame misreading in the middle and at the start is jitter
    observations = _frames([_line("Chaptor 3")], [_line("Chapter 3")], [_line("Chapter 8")], [_line("Chapter 3")],
                           [_line("Chapter 3")])
    spans = track_lines(observations)
    assert [(s.text, s.start, s.end) for s in spans] == [("Chapter 3", 0.0, 5.0)]
    assert set(spans[0].readings) == {"Chapter 3", "Chaptor 3", "Chapter 8"}


def test_tracking_gaps_times_and_order():
    a = [_line("Harbour bridge at dusk")]
    # a frame that misses the line ends the span, unless max_gap allows it
    assert [(s.start, s.end) for s in track_lines(_frames(a, [], a))] == [(0.0, 1.0), (2.0, 3.0)]
    assert [(s.start, s.end) for s in track_lines(_frames(a, [], a), max_gap=1.0)] == [(0.0, 3.0)]
    # sampled times are not exact multiples of the step
    observations = [FrameText(0.04, 1.0, tuple(a)), FrameText(1.0, 1.0, None), FrameText(2.08, 1.0, tuple(a))]
    assert [(s.start, s.end) for s in track_lines(observations)] == [(0.04, 3.08)]
    # another sampling step
    assert [(s.start, s.end) for s in track_lines(_frames(a, a, a, [], step=0.5))] == [(0.0, 1.5)]
    assert track_lines([]) == []
    assert track_lines(_frames([], None, [])) == []
    with pytest.raises(ValueError, match="first frame"):
        track_lines(_frames(None, a))
    with pytest.raises(ValueError, match="time order"):
        track_lines([FrameText(2.0, 1.0, tuple(a)), FrameText(1.0, 1.0, tuple(a))])


# ---------------------------------------------------------------------------------------------
# The whole chain on video
# ---------------------------------------------------------------------------------------------


def _scan(path: Path, reader: TextReader, chunk: int = 4) -> list[FrameText]:
    """As the module does it: chunks in time order, one detector for the medium."""
    frames = list(iter_frames(path))
    detector = reader.config.detector()
    observations = []
    for i in range(0, len(frames), chunk):
        observations += scan_frames(frames[i:i + chunk], 1.0, reader, detector)
    return observations


@pytest.mark.slow
def test_subtitle_video_gives_one_span_per_subtitle(subtitle_video: Path, reader: TextReader):
    observations = _scan(subtitle_video, reader)
    assert sum(o.lines is not None for o in observations) == 4
    spans = track_lines(observations)
    assert [(_squash(s.text), s.start, s.end) for s in spans] == [("chapter3", 0.0, 4.0), ("chapter4", 4.0, 7.0),
                                                                ("theend", 9.0, 10.0)]


@pytest.mark.slow
def test_fixture_lines_are_read_with_their_text_and_time_spans(reader: TextReader):
    """tests/data/narrated.mp4: Chinese, English and mixed lines burned in over moving photos."""
    video, truth_file = DATA / "narrated.mp4", DATA / "narrated.json"
    assert video.is_file() and truth_file.is_file(), "build the fixture with tests/data/make_narrated.py"
    truth = json.loads(truth_file.read_text(encoding="utf-8"))
    width, height = truth.get("size", [W, H])
    spans = track_lines(_scan(video, reader, chunk=32))
    unmatched = list(spans)
    for expected in truth["ocr"]:
        found = [s for s in unmatched if any(_squash(r) == _squash(expected["text"]) for r in s.readings)]
        assert len(found) == 1, (expected["text"], spans)
        span = found[0]
        unmatched.remove(span)
        # sampled at 1 fps, a line is seen from the first whole second it is on screen
        assert span.start == pytest.approx(math.ceil(expected["start"]), abs=0.1), expected["text"]
        assert span.end == pytest.approx(math.ceil(expected["end"]), abs=0.1), expected["text"]
        x0, y0, x1, y1 = expected["box"]
        assert box_iou(span.box, (x0 / width, y0 / height, x1 / width, y1 / height)) > 0.5, expected["text"]
        assert span.score >= 0.8
    assert unmatched == [], "text read where there is none"



def test_read_policy_waits_after_an_empty_read_and_reads_every_change_once_text_is_on_screen():
    from zhaopian.modules.ocr.reader import ChangeDetector, ReadPolicy, TextLine, scan_frames
    from zhaopian.search.types import Frame

    class CountingReader:
        """Text is on screen from 6 s on; every frame differs (a moving shot)."""

        def __init__(self) -> None:
            self.read_at: list[float] = []

        def read(self, image):
            t = float(image[0, 0, 0])
            self.read_at.append(t)
            return [TextLine("caption", (0.1, 0.8, 0.9, 0.9), 0.99)] if t >= 6 else []

    rng = np.random.default_rng(0)
    frames = []
    for t in range(12):
        image = rng.integers(0, 255, (90, 160, 3), dtype=np.uint8)  # every frame changes
        image[0, 0, 0] = t
        frames.append(Frame(float(t), image))
    reader = CountingReader()
    reads = scan_frames(frames, 1.0, reader, ReadPolicy(ChangeDetector(0.05), idle_seconds=2.0))
    # without text: one read every 2 s; with text on screen: every changed frame
    assert reader.read_at == [0, 2, 4, 6, 7, 8, 9, 10, 11]
    assert [r.t for r in reads if r.lines is None] == [1, 3, 5]
    plain = CountingReader()
    scan_frames(frames, 1.0, plain, ChangeDetector(0.05))  # no idle wait: every changed frame
    assert plain.read_at == list(range(12))
