"""A video's fingerprint: one 128-bit code per sampled frame, robust to how copies get altered.

Per frame:

1. grey, scaled so its longer side is ``SIDE`` (128) pixels (box filter);
2. black borders removed: a row or column at the edge whose pixels are mostly dark, and flat
   where dark, in the *typical* frame of the medium (the per-pixel median over its frames) is a
   letterbox or pillarbox bar; the median ignores subtitles shown now and then in a bar, "mostly"
   lets a logo that is always there sit in one, and "flat" keeps dark picture (a night sky) in;
3. the remaining picture, the same picture with ``CROPS`` (4 % and 8 %) cut from each side,
   and the whole frame (borders and all) each give a difference hash: the sign of the brightness
   step between neighbouring cells of a 9x8 grid (64 bits across) and of an 8x9 grid (64 bits
   down). So a frame has ``LEVELS`` (4) codes.

Gradient signs do not change with brightness, contrast, colour or re-encoding; each bit depends
on two neighbouring cells, so a logo changes only the few bits whose cells it covers; the crop
levels meet a copy that was cropped (or an original whose copy is cropped) part way; the whole
frame's code still meets its copy when dark picture at an edge was taken for a bar on one side
and not on the other (a brightened copy of a dark film). Frames with
almost no contrast (black, fades, flat colour) get no code: their bits would be noise, and
noise that all blank frames share.

Measured on the test copies (``bench/dna.py``): a frame and its copy differ in at most 0.23 of the
bits (median 0.01-0.07 per transform); frames of unrelated videos in at least 0.23 (0.1 % below
0.31).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

#: frames are reduced to this many pixels on their longer side before anything else
SIDE = 128
#: fractions cut from each side of the de-bordered picture: a code per level
CROPS = (0.0, 0.04, 0.08)
#: code levels of a frame: the de-bordered picture at each crop, then the whole frame
LEVELS = len(CROPS) + 1
WHOLE = len(CROPS)
BITS = 128
BYTES = BITS // 8
#: a pixel darker than this (0-255) in the typical frame may belong to a border bar
DARK = 40
#: a row or column is a bar when at least this share of its pixels is dark ...
BAR_SHARE = 0.7
#: ... and neighbouring dark pixels differ by at most this much on average (bars: 0-0.5; dark picture: 0.8-3)
BAR_FLAT = 0.6
#: borders are only removed when the picture keeps at least this share of each side
MIN_KEEP = 0.4
#: a frame whose 16x16 cells vary less than this (standard deviation, 0-255) gets no code
MIN_CONTRAST = 3.0


@dataclass
class Fingerprint:
    """Codes of a medium's (or a clip's) frames: only frames with enough contrast have one."""

    #: seconds of each coded frame
    times: np.ndarray  # (n,) float64
    #: codes per frame and crop level, packed bits
    codes: np.ndarray  # (n, LEVELS, BYTES) uint8
    #: seconds between sampled frames (0 for an image)
    step: float
    #: frames sampled in all (coded or not) and the medium's length in seconds
    sampled: int = 0
    duration: float = 0.0

    def __len__(self) -> int:
        return len(self.times)


def reduce(image: np.ndarray | Image.Image) -> np.ndarray:
    """RGB (or grey) picture -> grey uint8 with the longer side ``SIDE`` pixels."""
    im = image if isinstance(image, Image.Image) else Image.fromarray(image)
    im = im.convert("L")
    scale = SIDE / max(im.size)
    size = (max(9, round(im.width * scale)), max(9, round(im.height * scale)))
    return np.asarray(im.resize(size, Image.Resampling.BOX))


def content_box(greys: Sequence[np.ndarray] | np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the picture inside letterbox/pillarbox bars, from reduced frames."""
    stack = np.asarray(greys)
    typical = stack if stack.ndim == 2 else np.median(stack, axis=0)
    dark = typical < DARK
    height, width = dark.shape
    top, bottom = _inner(_bars(typical, dark, axis=1))
    left, right = _inner(_bars(typical.T, dark.T, axis=1))
    if bottom - top < MIN_KEEP * height or right - left < MIN_KEEP * width:
        return 0, height, 0, width  # a dark picture, not bars
    return top, bottom, left, right


def _bars(typical: np.ndarray, dark: np.ndarray, axis: int) -> np.ndarray:
    """Per row: mostly dark, and flat among its dark pixels."""
    steps = np.abs(np.diff(typical.astype(np.float32), axis=axis))
    pairs = dark[:, 1:] & dark[:, :-1]
    count = pairs.sum(axis=axis)
    flat = np.where(count > 0, (steps * pairs).sum(axis=axis) / np.maximum(count, 1), np.inf)
    return (dark.mean(axis=axis) >= BAR_SHARE) & (flat <= BAR_FLAT)


def _inner(bar: np.ndarray) -> tuple[int, int]:
    n = len(bar)
    start = 0
    while start < n and bar[start]:
        start += 1
    end = n
    while end > start and bar[end - 1]:
        end -= 1
    return start, end


def frame_codes(grey: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray | None:
    """The codes (``LEVELS`` of them) of a reduced frame whose picture is ``box``; None for a frame
    without contrast."""
    top, bottom, left, right = box
    picture = Image.fromarray(grey)
    cells = np.asarray(picture.resize((16, 16), Image.Resampling.BOX, box=(left, top, right, bottom)), np.float32)
    if cells.std() < MIN_CONTRAST:
        return None
    areas = []
    for crop in CROPS:
        dy, dx = (bottom - top) * crop, (right - left) * crop
        areas.append((left + dx, top + dy, right - dx, bottom - dy))
    areas.append((0, 0, grey.shape[1], grey.shape[0]))
    out = np.empty((LEVELS, BYTES), np.uint8)
    for level, area in enumerate(areas):
        across = np.asarray(picture.resize((9, 8), Image.Resampling.BOX, box=area), np.int16)
        down = np.asarray(picture.resize((8, 9), Image.Resampling.BOX, box=area), np.int16)
        bits = np.concatenate([(across[:, 1:] > across[:, :-1]).ravel(), (down[1:, :] > down[:-1, :]).ravel()])
        out[level] = np.packbits(bits)
    return out


def comparable(query_level: np.ndarray, stored_level: np.ndarray) -> np.ndarray:
    """Which pairs of code levels are compared: the de-bordered pictures with one side uncropped
    (crops up to ~10 % apart), and the whole frames with each other or with an uncropped picture."""
    q_whole, s_whole = query_level == WHOLE, stored_level == WHOLE
    pictures = ~q_whole & ~s_whole & ((query_level == 0) | (stored_level == 0))
    return pictures | (q_whole & (s_whole | (stored_level == 0))) | (s_whole & (query_level == 0))


def fingerprint(times: Iterable[float], greys: Sequence[np.ndarray], step: float, duration: float = 0.0) -> Fingerprint:
    """Codes of reduced frames sampled at ``times`` (bars found over all of them)."""
    times = list(times)
    if not greys:
        return Fingerprint(np.zeros(0), np.zeros((0, LEVELS, BYTES), np.uint8), step, 0, duration)
    shapes = {g.shape for g in greys}
    if len(shapes) > 1:  # a stream that changes size midway: find bars on the most common size
        common = max(shapes, key=lambda s: sum(g.shape == s for g in greys))
        greys = [g if g.shape == common else _resize(g, common) for g in greys]
    box = content_box(greys)
    kept_t, kept_c = [], []
    for t, grey in zip(times, greys, strict=True):
        codes = frame_codes(grey, box)
        if codes is not None:
            kept_t.append(t)
            kept_c.append(codes)
    codes = np.stack(kept_c) if kept_c else np.zeros((0, LEVELS, BYTES), np.uint8)
    return Fingerprint(np.asarray(kept_t, np.float64), codes, step, len(greys), duration)


def _resize(grey: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.asarray(Image.fromarray(grey).resize((shape[1], shape[0]), Image.Resampling.BOX))


def image_fingerprint(image: np.ndarray | Image.Image) -> Fingerprint:
    """An image's codes (its own borders removed; the whole-frame level keeps them)."""
    grey = reduce(image)
    codes = frame_codes(grey, content_box(grey))
    stacked = codes[None] if codes is not None else np.zeros((0, LEVELS, BYTES), np.uint8)
    return Fingerprint(np.zeros(len(stacked)), stacked, 0.0, 1, 0.0)
