"""The product's operations in one place, used by the CLI and the HTTP API.

It wires settings -> catalog -> libraries (modules, stores) -> ingestion and search.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
import threading
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image
from pydantic import BaseModel, Field

from zhaopian.indexer.decode import open_image
from zhaopian.indexer.ingest import (
    Ingestor,
    IngestResult,
    ProgressFn,
    check_path,
    expand,
    printable,
    sha256_file,
)
from zhaopian.indexer.jobs import Job, JobError, JobQueue
from zhaopian.indexer.worker import Worker
from zhaopian.modules.manager import ModuleManager
from zhaopian.modules.visual.encoders.base import EncoderConfig
from zhaopian.search.catalog import Catalog, LibraryRecord, MediaRecord
from zhaopian.search.engine import SearchReport, search, validate
from zhaopian.search.errors import MediaError, NotFound
from zhaopian.search.library import Library, LibraryConfig
from zhaopian.search.rerank import RerankConfig
from zhaopian.search.rewrite import RewriteConfig, create_rewriter
from zhaopian.search.stores.text import TextIndexLocation, create_text_index
from zhaopian.search.stores.vectors import drop_vector_store
from zhaopian.search.types import CopySpan, Match, ParsedQuery, Query

from .settings import Settings

DEFAULT_LIBRARY = "default"
#: modules of a new library unless chosen otherwise (all that work offline)
DEFAULT_MODULES = ("visual", "labels", "ocr", "asr", "meta")


class Result(BaseModel):
    """One search result as users see it, with why it was found."""

    video: str
    media_id: int
    kind: str
    title: str
    library: str = ""
    start: float
    end: float
    score: float
    thumbnail_time: float
    #: each route's own score for this segment
    routes: dict[str, float]
    #: the matched text (on-screen, spoken, label, metadata) with <em>highlights</em>, best first
    matches: list[Match] = Field(default_factory=list)


class SearchResponse(BaseModel):
    """Results plus how the query was understood and how long each step took."""

    results: list[Result]
    query: ParsedQuery | None = None
    routes: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    timings_ms: dict[str, float] = Field(default_factory=dict)


class Service:
    def __init__(self, settings: Settings | None = None, manager: ModuleManager | None = None) -> None:
        self.settings = settings or Settings()
        self.manager = manager or ModuleManager()
        self.catalog = Catalog(self.settings.data_dir)
        #: ingestion jobs, shared with the worker processes
        self.jobs = JobQueue(self.settings.data_dir)
        self._libraries: dict[tuple[str, str], Library] = {}
        self._lock = threading.Lock()
        #: text query -> ParsedQuery (rules by default; an LLM when ZHAOPIAN_LLM_URL is set)
        self._rewriter = create_rewriter(RewriteConfig(
            llm_url=self.settings.llm_url, llm_model=self.settings.llm_model,
            llm_api_key=self.settings.llm_api_key, timeout=self.settings.llm_timeout))
        self.rewriter: Callable[[str], ParsedQuery] = self._rewriter.rewrite
        if self.settings.threads:
            _limit_threads(self.settings.threads)

    def close(self) -> None:
        self._rewriter.close()
        for library in self._libraries.values():
            library.close()
        self._libraries.clear()
        self.jobs.close()
        self.catalog.close()

    # libraries -------------------------------------------------------------------------------
    def default_config(self, encoder: str | None = None, modules: Iterable[str] = DEFAULT_MODULES,
                       sample_fps: float = 1.0, index: str = "auto", text_index: str = "tantivy",
                       es_url: str | None = None, rerank: str | RerankConfig | None = None) -> LibraryConfig:
        """A library config from the usual choices; the encoder spec defaults to ZHAOPIAN_ENCODER.
        ``rerank``: a reranker spec (``builtin``, ``vlm:<model>``, ...) or config (search/rerank.py).

        ``text_index="elasticsearch"`` keeps the text units in Elasticsearch at ``es_url``
        (default: ZHAOPIAN_ES_URL, read when the library opens).
        """
        spec = encoder or self.settings.encoder
        options = {name: {} for name in modules}
        if "visual" in options:
            options["visual"] = {"encoder": EncoderConfig.parse_spec(spec).model_dump(mode="json")}
        text = {"backend": text_index, "url": [es_url] if es_url else []}
        config = {"modules": options, "sample_fps": sample_fps, "vector_store": {"index": index}, "text_index": text}
        if rerank is not None:
            config["rerank"] = (RerankConfig.parse_spec(rerank) if isinstance(rerank, str) else rerank).model_dump(mode="json")
        return LibraryConfig.parse(config)

    def create_library(self, name: str, config: LibraryConfig | dict[str, Any] | None = None,
                       tenant: str | None = None) -> LibraryRecord:
        config = config if config is not None else self.default_config()
        if isinstance(config, dict):
            config = LibraryConfig.parse(config)
        for module_name, options in config.modules.items():
            self.manager.validate(module_name, options)  # refuse a bad config before anything is stored
        return self.catalog.create_library(tenant or self.settings.tenant, name, config.model_dump(mode="json"))

    def libraries(self, tenant: str | None = None) -> list[LibraryRecord]:
        return self.catalog.libraries(tenant or self.settings.tenant)

    def delete_library(self, name: str, tenant: str | None = None) -> None:
        tenant = tenant or self.settings.tenant
        record = self.catalog.library(tenant, name)
        with self._lock:
            if (lib := self._libraries.pop((tenant, name), None)) is not None:
                lib.close()
        directory = self.catalog.library_dir(record)
        config = LibraryConfig.parse(record.config)
        create_text_index(config.text_index, TextIndexLocation(directory, record.tenant, record.name)).drop()
        for store in directory.glob("*.faiss"):  # server-side vector indexes go too
            drop_vector_store(store, config.vector_store)
        self.catalog.delete_library(tenant, name)
        self.jobs.cancel_library(tenant, name)
        shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(self.settings.upload_dir / "uploads" / tenant / name, ignore_errors=True)  # its uploads

    def library(self, name: str = DEFAULT_LIBRARY, tenant: str | None = None, create: bool = False) -> Library:
        tenant = tenant or self.settings.tenant
        with self._lock:
            key = (tenant, name)
            if key not in self._libraries:
                try:
                    record = self.catalog.library(tenant, name)
                except NotFound:
                    if not (create and name == DEFAULT_LIBRARY):
                        raise
                    record = self.create_library(name, tenant=tenant)
                self._libraries[key] = Library(record, self.catalog.library_dir(record), self.manager)
            return self._libraries[key]

    # media -----------------------------------------------------------------------------------
    def index(self, paths: Iterable[Path | str], library: str = DEFAULT_LIBRARY, tenant: str | None = None,
              progress: ProgressFn | None = None) -> list[IngestResult]:
        lib = self.library(library, tenant, create=True)
        ingestor = Ingestor(lib, self.settings.media_roots)
        return ingestor.add(list(expand((Path(p) for p in paths), self.settings.media_roots)), progress)

    # jobs ------------------------------------------------------------------------------------
    def submit(self, paths: Iterable[Path | str], library: str = DEFAULT_LIBRARY,
               tenant: str | None = None) -> list[Job]:
        """Queue files (folders are scanned) for the workers; a file already queued, or indexed with the
        same content, gives its existing job."""
        lib = self.library(library, tenant, create=True)
        jobs = []
        for file in expand((Path(p) for p in paths), self.settings.media_roots):
            try:
                check_path(file)
            except MediaError as exc:  # no job can hold its path: one that failed at once says why
                job, _ = self.jobs.submit(lib.record.tenant, lib.name, printable(file), fresh=True)
                jobs.append(self.jobs.finish(job.id, "failed", error=JobError(code=exc.code, message=exc.message)))
                continue
            path = Path(file).expanduser().absolute()
            job, _ = self.jobs.submit(lib.record.tenant, lib.name, path)
            if job.status == "done" and not lib.media.exists(job.media_id):  # deleted since: index it again
                job, _ = self.jobs.submit(lib.record.tenant, lib.name, path, fresh=True)
            jobs.append(job)
        return jobs

    def worker(self) -> Worker:
        """A worker over this service's queue and libraries (run it in a thread or a process)."""
        return Worker(self.jobs, lambda tenant, name: self.library(name, tenant), self.settings.media_roots,
                      uploads=self.settings.upload_dir / "uploads")

    def run_jobs(self, jobs: Iterable[Job], on_progress: Callable[[Job], None] | None = None) -> list[Job]:
        """Run these jobs in this process now (waiting for any a worker already runs); their final state."""
        return self.worker().run_these([j.id for j in jobs], on_progress)

    def add_upload(self, filename: str, data: bytes | BinaryIO, library: str = DEFAULT_LIBRARY,
                   tenant: str | None = None) -> Job:
        """Store uploaded bytes under the data directory (write then rename) and queue them for indexing."""
        lib = self.library(library, tenant, create=True)
        name = _upload_name(filename)
        if not name or name in {".", ".."}:
            raise MediaError(f"invalid upload file name {filename!r}")
        folder = self.settings.upload_dir / "uploads" / lib.record.tenant / lib.name
        folder.mkdir(parents=True, exist_ok=True)
        source = io.BytesIO(data) if isinstance(data, bytes) else data
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".upload-")
        with os.fdopen(fd, "wb") as fh:
            shutil.copyfileobj(source, fh)
        digest = sha256_file(Path(tmp))
        target = folder / digest[:16] / name  # the file keeps its name: it becomes the medium's title
        target.parent.mkdir(exist_ok=True)
        if target.is_file() and target.stat().st_size == os.stat(tmp).st_size:
            os.unlink(tmp)  # the same bytes under the same name: the same file, so the same job
        else:
            os.replace(tmp, target)
        [job] = self.submit([target], lib.name, lib.record.tenant)
        return job

    def media(self, library: str = DEFAULT_LIBRARY, tenant: str | None = None, offset: int = 0,
              limit: int = 100) -> list[MediaRecord]:
        return self.library(library, tenant).media.list(offset, limit)

    def medium(self, media_id: int, library: str = DEFAULT_LIBRARY, tenant: str | None = None) -> MediaRecord:
        return self.library(library, tenant).media.get(media_id)

    def copies(self, media_id: int, library: str = DEFAULT_LIBRARY, tenant: str | None = None) -> list[CopySpan]:
        """Spans a medium shares with other media of its library (near-duplicates, partial copies), as its
        modules found them (the dna module, when the library has it)."""
        lib = self.library(library, tenant)
        lib.refresh()  # what workers indexed meanwhile
        lib.media.get(media_id)  # NotFound for an unknown id
        return [span for module in lib.modules.values() for span in module.copies(media_id)]

    def update_medium(self, media_id: int, library: str = DEFAULT_LIBRARY, tenant: str | None = None,
                      **fields: Any) -> MediaRecord:
        return self.library(library, tenant).update_media(media_id, **fields)

    def delete_medium(self, media_id: int, library: str = DEFAULT_LIBRARY, tenant: str | None = None) -> None:
        lib = self.library(library, tenant)
        lib.media.get(media_id)  # NotFound for an unknown id
        lib.delete_media([media_id])

    # search ----------------------------------------------------------------------------------
    def search(self, text: str | None = None, image: Path | str | bytes | Image.Image | None = None,
               library: str = DEFAULT_LIBRARY, tenant: str | None = None, top_k: int = 10,
               routes: list[str] | None = None, rerank: bool = True) -> list[Result]:
        return self.search_report(text, image, library, tenant, top_k, routes, rerank).results

    def search_report(self, text: str | None = None, image: Path | str | bytes | Image.Image | None = None,
                      library: str = DEFAULT_LIBRARY, tenant: str | None = None,
                      top_k: int = 10, routes: list[str] | None = None, rerank: bool = True) -> SearchResponse:
        """Search a library (or the libraries a ``library:`` filter names); ``routes`` limits the modules
        used (default: all the library has); ``rerank=False`` skips the libraries' rerankers."""
        query = validate(Query(text=text, image=_load_query_image(image), top_k=top_k))
        parsed = self.rewriter(query.text) if query.text else None
        names = (parsed.filters.libraries if parsed else None) or [library]
        responses = []
        for name in dict.fromkeys(names):
            lib = self.library(name, tenant)
            lib.refresh()  # what workers indexed since the last search
            report = search(lib, Query(text=query.text, image=query.image, top_k=top_k, options={"rerank": rerank}),
                            lambda _text: parsed, routes)
            responses.append((lib, report))
        results = [result for lib, report in responses for result in self._results(lib, report)]
        results.sort(key=lambda r: -r.score)
        first = responses[0][1]
        notes = list(dict.fromkeys(n for _, report in responses for n in report.notes))
        return SearchResponse(results=results[:top_k], query=first.parsed, routes=first.routes, notes=notes,
                              timings_ms={k: round(v, 2) for k, v in first.timings_ms.items()})

    @staticmethod
    def _results(lib: Library, report: SearchReport) -> list[Result]:
        results = []
        for seg in report.segments:
            try:
                record = lib.media.get(seg.media_id)
            except NotFound:  # deleted between recall and now
                continue
            results.append(Result(video=record.path, media_id=record.id, kind=record.kind, title=record.title,
                                  library=lib.name, start=round(seg.start, 3), end=round(seg.end, 3),
                                  score=round(seg.score, 6), thumbnail_time=round(seg.thumbnail_time, 3),
                                  routes=seg.routes, matches=seg.matches))
        return results


#: an uploaded file keeps its name, cut to this many UTF-8 bytes (file systems allow 255)
UPLOAD_NAME_BYTES = 200


def _upload_name(filename: str) -> str:
    """An uploaded file's own name as one the file system takes: no folders, no control characters,
    at most UPLOAD_NAME_BYTES bytes (its suffix kept)."""
    name = "".join(ch for ch in Path(filename).name if unicodedata.category(ch) not in ("Cc", "Cs")).strip()
    stem, suffix = os.path.splitext(name)
    if len(suffix.encode()) > 16:
        stem, suffix = name, ""
    stem = stem.encode()[: UPLOAD_NAME_BYTES - len(suffix.encode())].decode("utf-8", "ignore")
    return stem + suffix


def _limit_threads(threads: int) -> None:
    """Model threads per process. PyTorch reads OMP_NUM_THREADS when it is imported, so a search
    that never needs it (text queries with the bundled encoder) does not pay for importing it."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if (torch := sys.modules.get("torch")) is not None:
        torch.set_num_threads(threads)


def _load_query_image(image: Path | str | bytes | Image.Image | None) -> Image.Image | None:
    if image is None or isinstance(image, Image.Image):
        return image
    if isinstance(image, bytes):
        if not image:
            raise MediaError("query image is empty (0 bytes)")
        return open_image(io.BytesIO(image), name="query image")
    return open_image(Path(image))
