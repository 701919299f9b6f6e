"""Temporal alignment: frame matches between a clip and one medium -> the spans they share.

A copy maps the clip's time to the medium's by a line, ``medium_t = speed * clip_t + offset``
(speed 1 unless the copy was sped up or slowed down). Frame matches of a real copy lie on that
line; chance matches of look-alike frames do not line up. So:

1. **Hough voting.** For each speed of a grid (0.88-1.12 by default, step 0.01), every frame
   match votes for the offset ``medium_t - speed * clip_t``, in bins half a sampling step wide; a
   clip frame votes at most once per bin, weighted by how close its codes are and divided by
   the square root of how many frames of the medium it matches (a frame of a still shot matches
   all of the shot's frames). The best (speed, offset) bin, with its two neighbours, is a
   candidate (a speed away from 1 is discounted 2 % per 0.01 when the matches span up to 10 s, less
   when they span longer: a few seconds of a slow shot fit many lines, a long clip shows the drift).
2. **Line fit.** Matches within a tolerance of the candidate line (about half the coarser
   sampling step) are kept, one per clip frame and one per medium frame (the nearest to the
   line); speed and offset are re-fitted by weighted least squares, twice.
3. **Spans.** The kept matches, in time order, split where neither side matches for ``max_gap``
   seconds. Each part is a span: clip [first, last + step] ↔ the same mapped on the medium. Its
   *coverage* is the share of the medium's (or the clip's, whichever is sampled more sparsely)
   coded frames in the span that matched; its score is coverage × mean bit agreement.
4. The span's matches are taken out and the next best line is looked for (a clip may show
   several parts of a medium, or one part twice).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AlignParams:
    max_distance: int = 26
    min_speed: float = 0.88
    max_speed: float = 1.12
    speed_step: float = 0.01
    #: a span needs this many matched frames (on the more sparsely sampled side) ...
    min_frames: int = 2
    #: ... and this share of its coded frames matched
    min_coverage: float = 0.5
    #: a span is at least this long (seconds, on the clip)
    min_seconds: float = 2.0
    #: seconds without a match that split a span in two
    max_gap: float = 6.0
    #: at most this many lines are looked for per medium
    max_lines: int = 8


@dataclass(frozen=True)
class Span:
    """``query`` [q_start, q_end] shows what the medium shows in [start, end]; medium_t = speed * q_t + offset."""

    q_start: float
    q_end: float
    start: float
    end: float
    speed: float
    offset: float
    score: float
    coverage: float
    matched: int


def align(tq: np.ndarray, tr: np.ndarray, qi: np.ndarray, ri: np.ndarray, dist: np.ndarray, *, q_step: float,
          r_step: float, q_duration: float, r_duration: float, bits: int,
          params: AlignParams = AlignParams()) -> list[Span]:
    """Spans shared by a clip (coded frames at ``tq``) and a medium (coded frames at ``tr``), given frame
    matches ``(qi[k], ri[k])`` at ``dist[k]`` bits."""
    if not len(qi):
        return []
    coarse = max(q_step, r_step, 1e-3)
    tol = 0.6 * coarse + 0.25
    bin_width = 0.5 * coarse
    # a match weighs by how close its codes are, and by how specific it is: a frame of a still shot
    # matches every frame of that shot, and those matches say little about where the line is
    per_frame = np.bincount(qi, minlength=qi.max() + 1)[qi]
    weight = (1.0 - dist / (params.max_distance + 1.0)) / np.sqrt(per_frame)
    active = np.ones(len(qi), bool)
    grid = np.arange(params.min_speed, params.max_speed + 1e-9, params.speed_step)
    speeds = grid[np.argsort(np.abs(grid - 1.0), kind="stable")]  # on a tie, the speed nearest 1 wins
    spans: list[Span] = []
    for _ in range(params.max_lines):
        peak = _vote(tq, tr, qi, ri, weight, active, speeds, bin_width)
        if peak is None or peak[2] < params.min_frames:
            break
        speed, offset, _ = peak
        inliers = np.zeros(0, np.int64)
        for _ in range(3):
            inliers = _inliers(tq, tr, qi, ri, active, speed, offset, tol, weight)
            if len(inliers) < 2:
                break
            speed, offset = _fit(tq[qi[inliers]], tr[ri[inliers]], weight[inliers], speed, offset, params)
        inliers = _inliers(tq, tr, qi, ri, active, speed, offset, tol, weight)
        found = False
        for run in _runs(tq[qi[inliers]], tr[ri[inliers]], params.max_gap, coarse):
            members = inliers[run]
            span = _span(tq, tr, qi[members], ri[members], dist[members], speed, offset, q_step, r_step,
                         q_duration, r_duration, bits)
            # the span's region is used up, whether it qualifies or not
            q_lo, q_hi = tq[qi[members]].min(), tq[qi[members]].max()
            r_lo, r_hi = tr[ri[members]].min(), tr[ri[members]].max()
            active &= ~((tq[qi] >= q_lo - tol) & (tq[qi] <= q_hi + tol)
                        & (tr[ri] >= r_lo - tol) & (tr[ri] <= r_hi + tol))
            if (span.matched >= params.min_frames and span.coverage >= params.min_coverage
                    and span.q_end - span.q_start >= min(params.min_seconds, max(q_duration, 0.0) - 1e-6)):
                spans.append(span)
                found = True
        if not found:
            active[inliers] = False
            if not active.any():
                break
    spans.sort(key=lambda s: -(s.score * (s.q_end - s.q_start)))
    return spans


def _vote(tq, tr, qi, ri, weight, active, speeds, bin_width) -> tuple[float, float, float] | None:
    """The (speed, offset) bin with the most weight, summed with its two neighbouring offsets (and
    discounted by 2 % per 0.01 of speed away from 1 for clips up to 10 s, less for longer ones)."""
    idx = np.flatnonzero(active)
    if not len(idx):
        return None
    q, r, w = qi[idx], ri[idx], weight[idx]
    # a few seconds of a slow shot fit many speeds: there a speed away from 1 must earn it; a longer
    # clip shows the drift itself, so the discount shrinks with its length
    discount = 2.0 * min(1.0, 10.0 / max(float(np.ptp(tq[q])), 1e-6))
    best: tuple[float, float, float] | None = None
    for speed in speeds:
        off = tr[r] - speed * tq[q]
        k = np.floor(off / bin_width).astype(np.int64)
        k_min = k.min()
        kk = k - k_min
        # one vote per clip frame and bin: its best match
        key = kk * (q.max() + 1) + q
        order = np.lexsort((-w, key))
        first = np.ones(len(order), bool)
        first[1:] = key[order][1:] != key[order][:-1]
        chosen = order[first]
        votes = np.bincount(kk[chosen], weights=w[chosen], minlength=kk.max() + 3)
        smooth = votes.copy()
        smooth[1:] += votes[:-1]
        smooth[:-1] += votes[1:]
        top = int(np.argmax(smooth))
        votes_here = float(smooth[top]) * (1.0 - discount * abs(speed - 1.0))
        if best is None or votes_here > best[2]:
            near = chosen[np.abs(kk[chosen] - top) <= 1]
            centre = float(np.average(off[near], weights=w[near]))
            best = (float(speed), centre, votes_here)
    return best


def _inliers(tq, tr, qi, ri, active, speed, offset, tol, weight) -> np.ndarray:
    """Matches near the line, at most one per clip frame and one per medium frame (the nearest)."""
    resid = np.abs(tr[ri] - (speed * tq[qi] + offset))
    idx = np.flatnonzero(active & (resid <= tol))
    if not len(idx):
        return idx
    for side in (qi, ri):
        order = idx[np.lexsort((-weight[idx], resid[idx], side[idx]))]
        first = np.ones(len(order), bool)
        first[1:] = side[order][1:] != side[order][:-1]
        idx = order[first]
    return np.sort(idx)


def _fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, speed: float, offset: float,
         params: AlignParams) -> tuple[float, float]:
    """Weighted least squares ``y = speed * x + offset``. The speed stays within the searched range, and
    a fitted speed replaces the voted one only when it brings the matches clearly nearer the line (a few
    seconds of matches cannot tell 1.00 from 1.04)."""
    offset = float(np.average(y - speed * x, weights=w))
    if np.ptp(x) < 5.0:
        return speed, offset
    xm, ym = np.average(x, weights=w), np.average(y, weights=w)
    var = np.average((x - xm) ** 2, weights=w)
    if var <= 0:
        return speed, offset
    fitted = float(np.clip(np.average((x - xm) * (y - ym), weights=w) / var, params.min_speed, params.max_speed))
    fitted_offset = float(ym - fitted * xm)
    before = np.average(np.abs(y - speed * x - offset), weights=w)
    after = np.average(np.abs(y - fitted * x - fitted_offset), weights=w)
    return (fitted, fitted_offset) if after < 0.8 * before else (speed, offset)


def _runs(x: np.ndarray, y: np.ndarray, max_gap: float, step: float) -> list[np.ndarray]:
    """Index groups of matches, in clip-time order, split where both sides jump more than ``max_gap``."""
    if not len(x):
        return []
    order = np.argsort(x, kind="stable")
    gap = max(max_gap, 3 * step)
    cuts = np.flatnonzero((np.diff(x[order]) > gap) | (np.abs(np.diff(y[order])) > gap)) + 1
    return np.split(order, cuts)


def _span(tq, tr, q, r, d, speed, offset, q_step, r_step, q_duration, r_duration, bits) -> Span:
    # each matched frame covers its sampling step, on both sides
    q_start = max(0.0, min(float(tq[q].min()), (float(tr[r].min()) - offset) / speed))
    q_end = max(float(tq[q].max()) + q_step, (float(tr[r].max()) + r_step - offset) / speed)
    if q_duration > 0:
        q_end = min(q_end, q_duration)
    start, end = speed * q_start + offset, speed * q_end + offset
    if r_duration > 0:  # keep both sides inside their media
        if start < 0:
            q_start, start = -offset / speed, 0.0
        if end > r_duration:
            q_end, end = (r_duration - offset) / speed, r_duration
    # coverage on the more sparsely sampled side: its coded frames inside the span that matched
    if r_step >= q_step:
        times, matched = tr, len(np.unique(r))
        inside = int(np.count_nonzero((times >= start - 1e-6) & (times < end - 1e-6)))
    else:
        times, matched = tq, len(np.unique(q))
        inside = int(np.count_nonzero((times >= q_start - 1e-6) & (times < q_end - 1e-6)))
    coverage = min(1.0, matched / max(inside, 1))
    agreement = float(np.mean(1.0 - d / bits))
    return Span(round(q_start, 3), round(q_end, 3), round(start, 3), round(end, 3), round(speed, 4),
                round(offset, 3), round(coverage * agreement, 4), round(coverage, 4), matched)
