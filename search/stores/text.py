"""The text index: time-stamped text units (OCR lines, ASR sentences, labels, metadata) and their search.

One text index per library holds the units of every text module; each unit
says which module wrote it, so a module searches only its own units. Two
backends implement :class:`TextIndex`, chosen per library by
:class:`TextIndexConfig`:

* ``tantivy`` (default): embedded, files in the library's folder
  (``search/stores/text_tantivy.py``);
* ``elasticsearch``: a server, one index per library with tenant-scoped names
  (``search/stores/text_elastic.py``).

Both analyse text the same way (``search/stores/text_analysis.py``): a
jieba-segmented, English-stemmed *words* field plus a CJK character
*grams* field; exact phrases are checked against the stored text, and matches
are highlighted by the same code, so both backends explain a hit alike.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from zhaopian.search.errors import ConfigError


class TextIndexConfig(BaseModel):
    """Which text index a library uses (stored with the library's config)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["tantivy", "elasticsearch"] = "tantivy"
    #: elasticsearch: server URL(s); ``ZHAOPIAN_ES_URL`` is used when empty
    url: list[str] = Field(default_factory=list)
    #: elasticsearch: index names are ``<prefix>-<tenant>-<library>-text`` (lower-case)
    index_prefix: str = Field(default="zhaopian", pattern=r"^[a-z0-9][a-z0-9_-]{0,40}$")
    #: elasticsearch: shards and replicas of a new index
    shards: int = Field(default=1, ge=1, le=64)
    replicas: int = Field(default=0, ge=0, le=8)
    #: elasticsearch: seconds before a request is abandoned
    timeout: float = Field(default=10.0, gt=0, le=300)


@dataclass(frozen=True)
class TextDoc:
    """One time-stamped unit of text; ``unit_id`` is its id in the library's catalog."""

    unit_id: int
    media_id: int
    module: str  # the module that wrote it: "ocr", "asr", "labels", "meta", ...
    start: float
    end: float
    text: str
    field: str = "text"  # what the text is: "text", or for metadata "title", "tags", "filename", ...
    lang: str = ""
    data: dict[str, Any] = dc_field(default_factory=dict)  # module-specific, stored as JSON (an OCR box, ...)


@dataclass(frozen=True)
class TextQuery:
    """A search in the text index.

    A unit matches when it contains any word of ``text`` or every one of
    ``phrases`` (each an exact, case-insensitive substring); with both, the
    phrases are required and the words rank. ``modules``, ``fields`` and
    ``media_ids`` restrict the units searched (None: no restriction).
    """

    text: str = ""
    phrases: tuple[str, ...] = ()
    modules: tuple[str, ...] | None = None
    fields: tuple[str, ...] | None = None
    media_ids: tuple[int, ...] | None = None

    @property
    def empty(self) -> bool:
        return not self.text.strip() and not any(p.strip() for p in self.phrases)


@dataclass
class TextHit:
    unit_id: int
    media_id: int
    module: str
    start: float
    end: float
    score: float
    text: str
    field: str = "text"
    lang: str = ""
    data: dict[str, Any] = dc_field(default_factory=dict)
    highlight: str = ""  # ``text`` with matches wrapped in <em>…</em>


class TextIndex(ABC):
    """Stores and searches text units. Writes become visible (and durable) on ``flush``."""

    @abstractmethod
    def add(self, docs: Sequence[TextDoc]) -> None:
        """Queue units for writing."""

    @abstractmethod
    def remove(self, media_ids: Sequence[int], module: str | None = None) -> None:
        """Queue removal of these media's units (only ``module``'s when given)."""

    @abstractmethod
    def flush(self) -> None:
        """Commit queued writes and make them visible.

        The embedded backend commits atomically (all queued writes or none survive
        a crash); a server backend sends them in order without a multi-document
        transaction. Either way the core marks media ready only after a flush, and
        a library removes the units of media that never became ready when it opens.
        """

    @abstractmethod
    def search(self, query: TextQuery, k: int) -> list[TextHit]:
        """The best ``k`` matching units, best first, highlighted."""

    @abstractmethod
    def count(self, module: str | None = None) -> int:
        """Committed units (of ``module`` when given)."""

    @abstractmethod
    def media_ids(self) -> set[int]:
        """Media that have committed units (for consistency checks)."""

    def compact(self) -> None:
        """Merge what was written over time and reclaim the space of removed units (optional)."""

    def close(self) -> None:
        """Release files, writers and connections."""

    @abstractmethod
    def drop(self) -> None:
        """Delete the whole index (the library is being deleted)."""


@dataclass(frozen=True)
class TextIndexLocation:
    """Where a library's text index lives: its folder (embedded) and its tenant-scoped name (server)."""

    directory: Path
    tenant: str
    library: str

    def index_name(self, prefix: str) -> str:
        raw = f"{prefix}-{self.tenant}-{self.library}-text".lower()
        return re.sub(r"[^a-z0-9_.-]", "_", raw)


def create_text_index(config: TextIndexConfig, location: TextIndexLocation) -> TextIndex:
    """The backend ``config`` names; it connects or opens files lazily, on first use."""
    if config.backend == "tantivy":
        from .text_tantivy import TantivyTextIndex

        return TantivyTextIndex(location.directory / "text.tantivy")
    if config.backend == "elasticsearch":
        from .text_elastic import ElasticsearchTextIndex

        return ElasticsearchTextIndex(config, location.index_name(config.index_prefix))
    raise ConfigError(f"unknown text index backend {config.backend!r}; use tantivy or elasticsearch")
