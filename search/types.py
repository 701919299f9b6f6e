"""Value types that flow between the core and the modules."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class Frame:
    """One decoded frame: ``t`` is its exact presentation time in seconds."""

    t: float
    image: np.ndarray  # HxWx3 uint8 RGB


@dataclass(frozen=True)
class MediaInfo:
    """What the core knows about a medium while it is being indexed."""

    media_id: int
    path: Path
    kind: str  # "video" | "image"
    duration: float  # seconds; 0.0 for images
    width: int
    height: int
    sample_step: float = 1.0  # seconds between sampled frames


@dataclass
class Hit:
    """One unit a module's recall returned: a time span of a medium and its raw score."""

    media_id: int
    start: float
    end: float
    score: float
    thumb: float  # time of the most representative frame
    detail: dict = field(default_factory=dict)


class Match(BaseModel):
    """Why a route found a segment: the unit of text it matched (an OCR line, a sentence, a label, a title)."""

    route: str
    start: float
    end: float
    score: float
    text: str
    highlight: str  # ``text`` HTML-escaped, matched words wrapped in <em>…</em>
    field: str = "text"  # for metadata: title, description, tags, filename or a custom field's name


class Segment(BaseModel):
    """A search result: a time span of one medium, scored, with the routes that found it and why."""

    media_id: int
    start: float
    end: float
    score: float
    thumbnail_time: float
    routes: dict[str, float] = Field(default_factory=dict)
    matches: list[Match] = Field(default_factory=list)
    #: the match is about the whole medium (its metadata), not a moment in it
    whole_medium: bool = False

    def overlaps(self, other: Segment, gap: float = 0.0) -> bool:
        return self.media_id == other.media_id and self.start <= other.end + gap and other.start <= self.end + gap


class CopySpan(BaseModel):
    """A span of a medium (or of a clip being checked) showing the same pictures as a span of another
    medium: a near-duplicate or a partial copy (found by the ``dna`` module)."""

    #: the other medium, and the span of it that matches
    media_id: int
    start: float
    end: float
    #: the span of this medium (or clip) that matches it
    query_start: float
    query_end: float
    #: 0..1: the share of the span's frames that match, times how closely
    score: float
    #: the other medium's time = speed × this one's + offset (speed ≠ 1: a sped-up or slowed-down copy)
    speed: float = 1.0
    offset: float = 0.0
    #: duplicate: both (nearly) whole; part_of: this one lies within the other; contains: the other lies
    #: within this one; overlap: they share a part
    relation: Literal["duplicate", "part_of", "contains", "overlap"] = "overlap"

    def describe(self) -> str:
        """``copy of medium 3 00:12-00:40 ↔ 00:00-00:28 (part of it, score 0.93)``."""
        how = {"duplicate": "duplicate", "part_of": "part of it", "contains": "contains all of it",
               "overlap": "shares a part"}[self.relation]
        speed = f", at ×{self.speed:.2f} its speed" if abs(self.speed - 1) >= 0.015 else ""
        return (f"copy of medium {self.media_id} {_clock(self.start)}-{_clock(self.end)} ↔ "
                f"{_clock(self.query_start)}-{_clock(self.query_end)} ({how}, score {self.score:.2f}{speed})")


def _clock(seconds: float) -> str:
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


class QueryFilters(BaseModel):
    """Restrictions on which media a query may return (all given ones must hold)."""

    model_config = ConfigDict(extra="forbid")

    kinds: list[Literal["video", "image"]] = Field(default_factory=list)  # empty: any kind
    min_duration: float | None = Field(default=None, ge=0)  # seconds
    max_duration: float | None = Field(default=None, ge=0)
    recorded_after: datetime | None = None  # when the medium was recorded (or its file last written)
    recorded_before: datetime | None = None
    tags: list[str] = Field(default_factory=list)  # every one of them
    libraries: list[str] = Field(default_factory=list)  # empty: the library searched

    @property
    def empty(self) -> bool:
        return self == QueryFilters()


class ParsedQuery(BaseModel):
    """A text query after rewrite (search/rewrite.py): what to look for, where, and among which media."""

    model_config = ConfigDict(extra="forbid")

    #: free text for semantic and keyword matching (cues, filters and quotes removed); may be empty
    text: str = ""
    #: quoted phrases that must appear verbatim (on screen, in speech or in metadata)
    phrases: list[str] = Field(default_factory=list)
    #: modules the query's cues steer to ("asr" for 说/says, "ocr" for 字幕/text on screen, ...); empty: all
    routes: list[str] = Field(default_factory=list)
    filters: QueryFilters = Field(default_factory=QueryFilters)
    #: people named with ``person:`` / ``人物:`` (searched by their registered faces, the ``faces`` module)
    people: list[str] = Field(default_factory=list)
    #: who produced it: the rule-based rewriter or an LLM
    source: Literal["rules", "llm"] = "rules"

    @property
    def search_text(self) -> str:
        """Everything the user wants to see matched: the free text and the phrases."""
        return " ".join([self.text, *self.phrases]).strip()


@dataclass
class Query:
    """A user's query as the core received it; ``parsed`` is filled by the engine's rewrite step."""

    text: str | None = None
    image: Image.Image | None = None
    top_k: int = 10
    options: dict[str, Any] = field(default_factory=dict)
    parsed: ParsedQuery | None = None
    #: the media the query's filters allow (None: all); set by the engine from ``parsed.filters``
    media_ids: frozenset[int] | None = None
    #: remarks a module's rewrite leaves for the user ("no face found in the query image"); the engine
    #: adds them to the report's notes
    notes: list[str] = field(default_factory=list)
