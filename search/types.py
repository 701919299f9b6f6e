"""Value types that flow between the core and the modules."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field


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


class Segment(BaseModel):
    """A search result: a time span of one medium, scored, with the routes that found it."""

    media_id: int
    start: float
    end: float
    score: float
    thumbnail_time: float
    routes: dict[str, float] = Field(default_factory=dict)

    def overlaps(self, other: "Segment", gap: float = 0.0) -> bool:
        return self.media_id == other.media_id and self.start <= other.end + gap and other.start <= self.end + gap


@dataclass
class Query:
    """A user's query as the core received it (before any module rewrites it)."""

    text: str | None = None
    image: Image.Image | None = None
    top_k: int = 10
    options: dict[str, Any] = field(default_factory=dict)
