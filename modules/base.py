"""The contract between the core and a module.

A module is a plug-in that owns one kind of content signal (visual
embeddings, on-screen text, speech, ...). It has three hooks the core calls:

* ``extract``   — media → features (called once per chunk of decoded frames, or
  once per medium with no frames for a module that ``reads = "file"``: speech
  from the audio track, metadata from the catalog);
* ``rewrite``   — the user's query → this module's query, or ``None`` when the
  module has nothing to contribute (an image query for a speech module);
* ``aggregate`` — this module's recalled hits → scored, time-stamped segments.

Between them sit the storage operations (``write``, ``remove``, ``flush``) and
``recall``, which the module implements over the store it owns. A module
registers itself under the entry-point group ``zhaopian.modules``::

    [project.entry-points."zhaopian.modules"]
    visual = "zhaopian.modules.visual:VisualModule"

and declares its options as a pydantic model in ``Config`` so a library's
configuration is validated when the library is created, not at first use.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from zhaopian.search.catalog import MediaCatalog
from zhaopian.search.stores.text import TextIndex
from zhaopian.search.stores.vectors import VectorStoreConfig
from zhaopian.search.types import CopySpan, Frame, Hit, MediaInfo, Query, Segment

__all__ = ["Module", "ModuleConfig", "ModuleContext", "Query"]


class ModuleConfig(BaseModel):
    """Base of every module's options; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class ModuleContext:
    """What the core gives a module: where to keep its files, the library's catalog and shared stores."""

    library_dir: Path
    media: MediaCatalog
    vector_store: VectorStoreConfig
    #: the library's text index, shared by the text modules (each searches only its own units)
    text: TextIndex
    #: tenant and library names: server-side stores (Elasticsearch) name their indexes with them
    tenant: str = ""
    library: str = ""

    def store_name(self, *parts: str) -> str:
        """A tenant-scoped name for a server-side store of this library, e.g. ``acme-news-visual-semantic``."""
        raw = "-".join([self.tenant, self.library, *parts]).lower()
        return re.sub(r"[^a-z0-9_.-]", "_", raw)


class Module(ABC):
    name: ClassVar[str]
    Config: ClassVar[type[ModuleConfig]] = ModuleConfig
    #: "frames": ``extract`` gets each chunk of decoded frames in time order;
    #: "file": ``extract`` is called once per medium with no frames and reads ``media.path``
    #: itself (it runs in a thread beside the frame modules)
    reads: ClassVar[Literal["frames", "file"]] = "frames"

    def __init__(self, config: ModuleConfig, context: ModuleContext) -> None:
        self.config = config
        self.context = context

    # ingestion ------------------------------------------------------------------------------
    @abstractmethod
    def extract(self, media: MediaInfo, frames: Sequence[Frame]) -> Any:
        """Features of one chunk of frames (the chunks of a medium arrive in time order)."""

    @abstractmethod
    def write(self, media: MediaInfo, features: list[Any]) -> int:
        """Store a medium's features (all its chunks); returns how many units were stored."""

    @abstractmethod
    def remove(self, media_ids: list[int]) -> None:
        """Forget everything stored for these media."""

    @abstractmethod
    def flush(self) -> None:
        """Persist the module's stores crash-safely."""

    def metadata_changed(self, media_id: int) -> None:
        """A medium's title, description, tags or fields were edited (re-index them if you store them)."""

    def stored_units(self) -> set[int] | None:
        """Unit ids in the module's own store, for ``zhaopian doctor`` to compare with the catalog
        (None: no store of its own; text modules share the library's text index, checked as a whole)."""
        return None

    def drop_units(self, unit_ids: set[int]) -> None:
        """Remove units the catalog does not know from the module's own store (then ``flush``)."""

    def compact(self) -> None:
        """Rebuild the module's own stores from what they hold (``zhaopian library compact``), then
        persist them crash-safely like ``flush``."""

    def copies(self, media_id: int) -> list[CopySpan]:
        """Spans this medium shares with other media of the library (near-duplicates, partial copies),
        as far as this module knows; most modules know none. The core reports them when it adds a medium."""
        return []

    def reload(self) -> None:
        """Another process (a worker) changed the library: drop stores cached in memory that are now stale.
        Called outside any write of this process, before a search and when the write lock is taken."""

    # search ---------------------------------------------------------------------------------
    @abstractmethod
    def rewrite(self, query: Query) -> Any | None:
        """This module's form of the query, or None when the module does not apply."""

    @abstractmethod
    def recall(self, module_query: Any, k: int) -> list[Hit]:
        """Up to k raw hits from this module's store."""

    @abstractmethod
    def aggregate(self, hits: list[Hit], module_query: Any) -> list[Segment]:
        """Turn hits into scored segments of media."""
