"""A library: its index configuration, its media catalog and its modules, opened together."""

from __future__ import annotations

import fcntl
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .catalog import LibraryRecord, MediaCatalog
from .errors import ConfigError
from .rerank import RerankConfig
from .stores.files import remove_leftovers
from .stores.text import TextIndexConfig, TextIndexLocation, create_text_index
from .stores.vectors import VectorStoreConfig


class FusionConfig(BaseModel):
    """How segments of several routes combine (see search/fusion.py)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["rrf", "blend"] = "rrf"
    weights: dict[str, float] = Field(default_factory=dict)  # route -> weight, default 1.0
    rrf_k: int = Field(default=60, ge=1)


class LibraryConfig(BaseModel):
    """Everything that decides how one library is indexed and searched; stored with the library."""

    model_config = ConfigDict(extra="forbid")

    #: module name -> that module's options (validated by the module's own Config)
    modules: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"visual": {}})
    vector_store: VectorStoreConfig = Field(default_factory=VectorStoreConfig)
    #: where the text modules' units live: embedded tantivy (default) or Elasticsearch
    text_index: TextIndexConfig = Field(default_factory=TextIndexConfig)
    #: frames sampled per second of video
    sample_fps: float = Field(default=1.0, gt=0, le=30)
    #: units each route recalls before aggregation
    recall_k: int = Field(default=200, ge=1, le=10_000)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    #: the reranker after fusion (search/rerank.py): none, builtin, vlm or endpoint
    rerank: RerankConfig = Field(default_factory=RerankConfig)

    @classmethod
    def parse(cls, data: dict[str, Any]) -> LibraryConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(f"library config: {'.'.join(map(str, first['loc']))}: {first['msg']}") from exc


class Library:
    """An open library. Writers hold ``write_lock()``: one writer per library across processes."""

    def __init__(self, record: LibraryRecord, directory: Path, manager) -> None:
        from zhaopian.modules.base import (
            ModuleContext,  # modules depend on search, not the reverse at import
        )

        self.record = record
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config = LibraryConfig.parse(record.config)
        self.media = MediaCatalog(self.directory / "media.sqlite")
        self.text = create_text_index(self.config.text_index,
                                      TextIndexLocation(self.directory, record.tenant, record.name))
        context = ModuleContext(self.directory, self.media, self.config.vector_store, self.text,
                                record.tenant, record.name)
        self.modules = {name: manager.create(name, opts, context) for name, opts in self.config.modules.items()}
        self._thread_lock = threading.RLock()
        self._lock_depth = 0
        self._version = self.media.data_version()
        self._recover_if_idle()

    @property
    def name(self) -> str:
        return self.record.name

    @contextmanager
    def write_lock(self):
        """Exclusive across threads (re-entrant) and across processes (flock on a lock file)."""
        with self._thread_lock:
            if self._lock_depth:
                self._lock_depth += 1
                try:
                    yield
                finally:
                    self._lock_depth -= 1
                return
            with open(self.directory / ".write.lock", "w") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                self._lock_depth = 1
                try:
                    self.refresh()  # write on top of what other processes wrote, not an old copy
                    self.recover()  # no live writer holds the library now: what is unfinished is a dead one's
                    yield
                finally:
                    self._lock_depth = 0
                    fcntl.flock(fh, fcntl.LOCK_UN)

    def _recover_if_idle(self) -> None:
        """On open, finish what a crashed writer left, unless a live writer holds the library (a worker
        mid-ingest): then its unfinished media are its own, and the next write lock recovers."""
        with self._thread_lock, open(self.directory / ".write.lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            try:
                self.recover()
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def refresh(self) -> bool:
        """See what other processes (workers, the CLI) committed since this process last looked.
        Cheap when nothing changed: one SQLite pragma."""
        version = self.media.data_version()
        if version == self._version:
            return False
        self._version = version
        for module in self.modules.values():
            module.reload()
        return True

    def recover(self) -> list[int]:
        """Finish what an interrupted ingest or delete left: those media are removed everywhere; what an
        interrupted metadata edit left: its modules index the edited fields again; and what an interrupted
        save left: its temporary file is deleted (the store itself is the old version or the new one)."""
        remove_leftovers(self.directory)
        unfinished = self.media.unfinished()
        if unfinished:
            self._remove_everywhere(unfinished)
        if edited := self.media.edited():
            self._index_edits(edited)
        return unfinished

    def delete_media(self, media_ids: list[int]) -> None:
        with self.write_lock():
            self.media.set_status(media_ids, "deleting")
            self._remove_everywhere(media_ids)

    def update_media(self, media_id: int, **fields: Any):
        """Edit a medium's title, description, tags or custom fields; modules that index them re-index."""
        with self.write_lock():
            record = self.media.update(media_id, **fields)  # noted as edited until the modules are done
            self._index_edits([media_id])
            return record

    def _index_edits(self, media_ids: list[int]) -> None:
        for module in self.modules.values():
            for media_id in media_ids:
                module.metadata_changed(media_id)
            module.flush()
        self.media.edits_indexed(media_ids)

    def compact(self) -> None:
        """Rebuild stores from what they hold and reclaim the space of removed media: each module's own
        stores, the text index (segments merged) and the catalog (VACUUM). Crash-safe: every store is
        rewritten beside the old one and swapped in."""
        with self.write_lock():
            for module in self.modules.values():
                module.compact()
            self.text.compact()
            self.media.vacuum()

    def _remove_everywhere(self, media_ids: list[int]) -> None:
        for module in self.modules.values():
            module.remove(media_ids)
            module.flush()
        self.media.purge(media_ids)

    def close(self) -> None:
        self.text.close()
        self.media.close()

    def drop(self) -> None:
        """Delete the stores that live outside the library's folder (a server's indexes)."""
        self.text.drop()
        self.close()
