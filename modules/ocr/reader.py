"""On-screen text: read the lines in a frame, skip frames whose text cannot have changed, track lines over time.

Three parts, used in this order while a medium is indexed:

* ``ChangeDetector`` compares each sampled frame with the last frame that was
  read, tile by tile in grayscale. A frame is read again only when some small
  tile changed more than noise and compression can change it (a subtitle
  line replaced on a static shot changes a few tiles a lot). It costs a few
  milliseconds per frame; OCR costs about half a second.
* ``TextReader`` wraps RapidOCR (PP-OCR text detection and recognition, ONNX
  weights shipped in the ``rapidocr`` package, Chinese and English in one
  model) and returns each line with a box normalised to 0..1 and a score.
* ``track_lines`` merges the same line seen in consecutive sampled frames
  (same text up to OCR jitter, same place) into one time span: the unit the
  ``ocr`` module stores.

``scan_frames`` drives the first two over one chunk of frames.
"""

from __future__ import annotations

import difflib
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from zhaopian.search.errors import ModelUnavailable
from zhaopian.search.types import Frame

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of the frame's width and height

#: frames smaller than this (either side, pixels) cannot hold a readable line
MIN_SIDE = 8
#: a frame whose grayscale standard deviation is below this is flat (black, white, one colour): no text
FLAT_STD = 2.0
#: a "line" covering more of the frame than this is a detector artefact (it boxes the whole picture)
MAX_LINE_AREA = 0.35


class OcrConfig(BaseModel):
    """How on-screen text is read."""

    model_config = ConfigDict(extra="forbid")

    #: frames are scaled down so their longer side is at most this many pixels before OCR (never up);
    #: smaller is faster (480: about 2/3 of the time of 640), larger reads smaller text
    limit_side_len: int = Field(default=640, ge=160, le=4096)
    #: lines recognised with a lower confidence are dropped
    min_score: float = Field(default=0.6, ge=0.0, le=1.0)
    #: a frame is read again when the mean grayscale change (0..1) of one of its small tiles since
    #: the last frame read exceeds this (0: read every frame); see ChangeDetector
    change_threshold: float = Field(default=0.05, ge=0.0, le=1.0)
    #: after a read that found no text, the next read waits this many seconds even if the picture
    #: changes (moving shots without text cost a third; new text is found up to this much later)
    idle_seconds: float = Field(default=2.0, ge=0.0, le=60.0)
    #: ONNX Runtime intra-op threads per OCR engine
    threads: int = Field(default=1, ge=1, le=64)

    def detector(self) -> ChangeDetector:
        """A change detector with this configuration's threshold (one per medium being indexed)."""
        return ChangeDetector(self.change_threshold)


@dataclass(frozen=True)
class TextLine:
    """One line of text read in one frame."""

    text: str
    box: Box
    score: float


@dataclass(frozen=True)
class FrameText:
    """What was read in one sampled frame at time ``t`` (it stands for ``[t, t + step)``).

    ``lines`` is None when the frame was not read because its text cannot have
    changed since the previous frame: the previous frame's lines still hold.
    """

    t: float
    step: float
    lines: tuple[TextLine, ...] | None


@dataclass(frozen=True)
class TextSpan:
    """A line of text on screen from ``start`` to ``end`` seconds.

    ``text`` is the reading best supported over the span's frames (summed
    scores); ``readings`` holds every distinct reading, ``text`` first. They
    differ when OCR jitters, or when a line is edited in place by a character
    or two (a counter ticking): index them all so no reading is lost.
    """

    text: str
    start: float
    end: float
    box: Box
    score: float
    readings: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def as_rgb(image: np.ndarray) -> np.ndarray:
    """An HxWx3 uint8 RGB frame from a grayscale (HxW, HxWx1), RGB or RGBA one; ValueError otherwise."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError("a frame must be a uint8 numpy array")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"a frame must be HxW, HxWx1, HxWx3 or HxWx4, not {image.shape}")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image[:, :, :3]


def _gray(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(as_rgb(image)).convert("L"))


def _fit(image: np.ndarray, max_side: int) -> np.ndarray:
    """Scale down (area averaging) so the longer side is at most ``max_side``."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


class TextReader:
    """Reads text lines in frames with RapidOCR; the engine loads on first use (thread-safe)."""

    def __init__(self, config: OcrConfig | None = None) -> None:
        self.config = config or OcrConfig()
        self._engine: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the detection and recognition models now (``read`` does it when needed)."""
        if self._engine is not None:
            return
        with self._lock:
            if self._engine is None:
                self._engine = self._create_engine()

    def _create_engine(self) -> Any:
        try:
            from rapidocr import RapidOCR
        except ImportError as exc:
            raise ModelUnavailable("reading on-screen text needs RapidOCR: pip install rapidocr==3.10.0 "
                                   f"onnxruntime ({exc})") from exc
        threads = self.config.threads
        params = {
            "Global.log_level": "error",
            "Global.text_score": self.config.min_score,
            # video text is upright: the 180-degree line classifier would only cost time
            "Global.use_cls": False,
            # frames arrive already scaled to limit_side_len; the detector must not scale them up
            "Global.max_side_len": self.config.limit_side_len,
            "Det.limit_type": "max",
            "Det.limit_side_len": self.config.limit_side_len,
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
        try:
            engine = RapidOCR(params=params)
            # the models load lazily inside RapidOCR: load them here so failures surface now
            engine._load_det_model()
            engine._load_rec_model()
        except Exception as exc:  # missing weights, a broken onnxruntime, a failed download
            raise ModelUnavailable(f"RapidOCR models cannot be loaded ({exc.__class__.__name__}: {exc}); "
                                   "reinstall with pip install --force-reinstall rapidocr==3.10.0") from exc
        return engine

    def read(self, image: np.ndarray) -> list[TextLine]:
        """The text lines of an RGB (or grayscale/RGBA) frame, top to bottom."""
        rgb = as_rgb(image)
        h, w = rgb.shape[:2]
        if min(h, w) < MIN_SIDE or float(_gray(rgb).std()) < FLAT_STD:
            return []
        rgb = _fit(rgb, self.config.limit_side_len)
        h, w = rgb.shape[:2]
        self.load()
        result = self._engine(np.ascontiguousarray(rgb[:, :, ::-1]))  # RapidOCR takes arrays as BGR
        boxes, txts, scores = getattr(result, "boxes", None), getattr(result, "txts", None), getattr(result, "scores", None)
        if boxes is None or txts is None or scores is None:
            return []
        lines = []
        for quad, text, score in zip(boxes, txts, scores):
            text = text.strip()
            if not text or score < self.config.min_score:
                continue
            quad = np.asarray(quad, dtype=np.float64)
            x0, y0 = quad.min(axis=0)
            x1, y1 = quad.max(axis=0)
            box = (_clip(x0 / w), _clip(y0 / h), _clip(x1 / w), _clip(y1 / h))
            if (box[2] - box[0]) * (box[3] - box[1]) > MAX_LINE_AREA:
                continue
            lines.append(TextLine(text, box, round(float(score), 4)))
        return lines


def _clip(v: float) -> float:
    return round(min(1.0, max(0.0, float(v))), 4)


# ---------------------------------------------------------------------------------------------
# Change detection
# ---------------------------------------------------------------------------------------------


class ChangeDetector:
    """Decides whether a frame's text may differ from the last frame that was read.

    Frames are compared in grayscale at no more than ``work_side`` pixels on
    the longer side. The absolute difference with the reference (the last
    frame read) is averaged over square tiles, ``tiles_across`` of them along
    the longer side (8x8 pixels at 640x360), and the largest tile mean is
    compared with ``threshold``. Replacing one digit of a 10-pixel subtitle on
    a static shot moves its tile by 0.07 or more; compression noise on a
    static shot stays below 0.03. A whole-frame average or hash would dilute a
    small subtitle change among the unchanged pixels. Camera motion and moving
    subjects change many tiles a lot, so such frames are read: the detector
    saves work on static shots (talking heads on a tripod, slides, screen
    recordings), not on moving ones. Comparing with the last frame read rather
    than the previous frame makes slow drift add up until it triggers a read.

    State is per medium: call ``reset`` before the first frame of a new one.
    """

    def __init__(self, threshold: float = 0.05, work_side: int = 640, tiles_across: int = 80) -> None:
        self.threshold = threshold
        self.work_side = work_side
        self.tiles_across = tiles_across
        self._reference: np.ndarray | None = None

    def reset(self) -> None:
        self._reference = None

    def signature(self, image: np.ndarray) -> np.ndarray:
        """The frame as compared: grayscale at working size, float32 in 0..1."""
        return _fit(_gray(image), self.work_side).astype(np.float32) / 255.0

    def score(self, image: np.ndarray) -> float:
        """The largest tile change of ``image`` against the reference (inf when there is none)."""
        return self._score(self.signature(image))

    def _score(self, signature: np.ndarray) -> float:
        ref = self._reference
        if ref is None or ref.shape != signature.shape:
            return float("inf")
        diff = np.abs(signature - ref)
        h, w = diff.shape
        tile = max(1, max(h, w) // self.tiles_across)
        # box-averaging down to a grid of ceil(side / tile) cells gives each tile's mean, edge tiles included
        grid = (-(-w // tile), -(-h // tile))
        tiles = np.asarray(Image.fromarray(diff).resize(grid, Image.Resampling.BOX))
        return float(tiles.max())

    def changed(self, image: np.ndarray) -> bool:
        """True when the frame must be read; it then becomes the new reference."""
        signature = self.signature(image)
        if self.threshold > 0 and self._score(signature) <= self.threshold:
            return False
        self._reference = signature
        return True


@dataclass
class ReadPolicy:
    """Which frames of one medium are read: changed ones, and while the screen shows no text, at most
    one every ``idle_seconds`` (text that appears meanwhile is found at most that much later)."""

    detector: ChangeDetector
    idle_seconds: float = 0.0
    quiet_until: float = -1.0  # no read before this time: the last read found no text

    def read_now(self, frame: Frame) -> bool:
        if frame.t < self.quiet_until:
            return False
        return self.detector.changed(frame.image)

    def after_read(self, frame: Frame, lines: tuple[TextLine, ...]) -> None:
        self.quiet_until = frame.t + self.idle_seconds - 1e-6 if not lines and self.idle_seconds > 0 else -1.0


def scan_frames(frames: Sequence[Frame], step: float, reader: TextReader,
                policy: ChangeDetector | ReadPolicy) -> list[FrameText]:
    """Read the frames of one chunk whose text may have changed; the others reuse the previous read."""
    if isinstance(policy, ChangeDetector):
        policy = ReadPolicy(policy)
    out = []
    for frame in frames:
        lines = None
        if policy.read_now(frame):
            lines = tuple(reader.read(frame.image))
            policy.after_read(frame, lines)
        out.append(FrameText(frame.t, step, lines))
    return out


# ---------------------------------------------------------------------------------------------
# Tracking
# ---------------------------------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """Text as compared across frames: NFKC (full-width to half-width), case-folded, spaces collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def text_similarity(a: str, b: str) -> float:
    """0..1 similarity of two normalised lines (1 = equal)."""
    if a == b:
        return 1.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def box_iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class _Seen:
    """A line on screen in one sampled frame: read there, or held over from the previous read."""

    t: float
    end: float
    line: TextLine
    key: str  # normalised text


@dataclass
class _Track:
    """One line followed from frame to frame."""

    seen: list[_Seen] = field(default_factory=list)

    @property
    def last(self) -> _Seen:
        return self.seen[-1]

    def spans(self, stable_frames: int) -> list[TextSpan]:
        """Split where the reading changes for good: a reading held fewer than ``stable_frames``
        frames is OCR jitter and joins its neighbours; a longer one starts a span of its own."""
        runs: list[list[_Seen]] = []
        for item in self.seen:
            if runs and runs[-1][-1].key == item.key:
                runs[-1].append(item)
            else:
                runs.append([item])
        groups: list[list[_Seen]] = []
        group_key: str | None = None  # the last stable reading of the group being built
        for run in runs:
            stable = len(run) >= stable_frames
            if groups and (not stable or group_key is None or run[0].key == group_key):
                groups[-1] += run
            else:
                groups.append(list(run))
            if stable:
                group_key = run[0].key
        return [_span(group) for group in groups]


def _span(seen: list[_Seen]) -> TextSpan:
    support: dict[str, float] = {}
    for item in seen:
        support[item.line.text] = support.get(item.line.text, 0.0) + item.line.score
    readings = tuple(sorted(support, key=lambda text: -support[text]))
    best = max(seen, key=lambda item: item.line.score).line
    score = sum(item.line.score for item in seen) / len(seen)
    return TextSpan(readings[0], round(seen[0].t, 3), round(seen[-1].end, 3), best.box, round(score, 4), readings)


def track_lines(observations: Iterable[FrameText], similarity: float = 0.8, min_iou: float = 0.3,
                max_gap: float = 0.0, stable_frames: int = 2) -> list[TextSpan]:
    """Merge the lines of consecutive frames into time spans, sorted by start then position.

    A line continues a span of the previous frame when their normalised texts
    are at least ``similarity`` alike (difflib ratio) and their boxes overlap by
    ``min_iou`` (intersection over union); each span takes at most one line
    per frame. A frame with ``lines=None`` holds every line of the previous
    frame. A span survives frames that miss it for up to ``max_gap`` seconds
    (0: the next frame without the line ends it) and ends at the last frame it
    was seen in plus that frame's step. A line followed this way is split
    where its reading changes and the new reading holds at least
    ``stable_frames`` frames ("Chapter 3" becoming "Chapter 4"); a reading that
    flickers for fewer frames is OCR jitter and stays in the span's
    ``readings``. ``observations`` must be one medium's frames in time order.
    """
    open_tracks: list[_Track] = []
    done: list[_Track] = []
    prev_t: float | None = None
    for obs in observations:
        if prev_t is not None and obs.t <= prev_t:
            raise ValueError(f"frames must be in increasing time order ({obs.t} after {prev_t})")
        if prev_t is None and obs.lines is None:
            raise ValueError("the first frame of a medium must have been read (lines=None has nothing to reuse)")
        prev_t = obs.t
        end = obs.t + obs.step
        # sampled times are not exact multiples of the step: allow half a step of slack
        slack = obs.step / 2
        # lines unseen for longer than max_gap are over
        done += [track for track in open_tracks if obs.t - track.last.end > max_gap + slack]
        open_tracks = [track for track in open_tracks if obs.t - track.last.end <= max_gap + slack]
        if obs.lines is None:
            for track in open_tracks:
                if obs.t - track.last.end <= slack:  # on screen in the previous frame, so still on screen
                    track.seen.append(_Seen(obs.t, end, track.last.line, track.last.key))
            continue
        keys = [normalize_text(line.text) for line in obs.lines]
        # every (track, line) pair that may match, best first: by text, then by box agreement
        pairs = []
        for ti, track in enumerate(open_tracks):
            for li, key in enumerate(keys):
                sim = text_similarity(track.last.key, key)
                iou = box_iou(track.last.line.box, obs.lines[li].box)
                if sim >= similarity and iou >= min_iou:
                    pairs.append((sim, iou, ti, li))
        pairs.sort(reverse=True)
        used_tracks: set[int] = set()
        used_lines: set[int] = set()
        for _, _, ti, li in pairs:
            if ti not in used_tracks and li not in used_lines:
                used_tracks.add(ti)
                used_lines.add(li)
                open_tracks[ti].seen.append(_Seen(obs.t, end, obs.lines[li], keys[li]))
        for li, line in enumerate(obs.lines):
            if li not in used_lines:
                open_tracks.append(_Track([_Seen(obs.t, end, line, keys[li])]))
    spans = [span for track in done + open_tracks for span in track.spans(stable_frames)]
    return sorted(spans, key=lambda s: (s.start, s.box[1], s.box[0]))
