"""The reranker stage: after fusion, a slower judge re-scores the top N segments within a time budget.

A library chooses its reranker in ``LibraryConfig.rerank`` (:class:`RerankConfig`):

==========  ===========================================================================
backend     what judges a segment
==========  ===========================================================================
none        nothing (the default): results keep the fused order
builtin     the library's own visual encoder, looking again at 4 frames/s with a second
            of margin, plus agreement between routes (search/rerank_builtin.py)
vlm         a local Qwen-VL model through transformers: P(yes) to "Does this clip
            show: …?" over the clip's frames (search/rerank_vlm.py)
endpoint    the same question to an OpenAI-compatible server (vLLM, Ollama, a cloud
            API) with the frames as JPEG images (search/rerank_endpoint.py)
==========  ===========================================================================

A dotted path ``package.module:Class`` names a :class:`Reranker` of one's own.

How the stage runs (:func:`rerank`, called by search/engine.py after fusion):

1. The first ``top_n`` fused segments are the candidates; the rest keep their place after them.
2. Judgements already made for the same (medium content, start, end, query) come from an
   in-memory LRU cache; the backend judges the others in a worker thread.
3. The stage waits at most ``budget_ms`` (from its start, the backend's model loading
   included). When the backend does not finish in time, raises an error, or cannot judge the
   query (a text-only VLM and an image query), the results keep the fused order and the
   search report gets a note saying why. Judgements finished before a timeout are still cached,
   and a model still loading keeps loading, so the next query gains from the work.
4. Otherwise the candidates are ordered by the backend's :meth:`Reranker.order` (ties: fused
   order). Each keeps its routes' scores and gains ``routes["rerank"]``, the key it was
   ordered by (P(yes) for the VLM and endpoint backends); a backend that localises (builtin) may also tighten its start and end. The
   candidates take the fused scores in their new order, so scores stay comparable with
   segments that were not reranked (and across libraries).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError, NotFound, ZhaopianError
from .types import Query, Segment

if TYPE_CHECKING:
    from PIL import Image

    from .library import Library

__all__ = ["BACKENDS", "Candidate", "Deadline", "Judgement", "RerankConfig", "RerankQuery", "RerankStage",
           "Reranker", "create_reranker", "rerank", "reranker_class"]

log = logging.getLogger(__name__)

#: backend name -> "module:Class"; modules are imported only when a library uses them
BACKENDS = {
    "builtin": "zhaopian.search.rerank_builtin:BuiltinReranker",
    "vlm": "zhaopian.search.rerank_vlm:VLMReranker",
    "endpoint": "zhaopian.search.rerank_endpoint:EndpointReranker",
}


def reranker_class(backend: str) -> type[Reranker]:
    target = BACKENDS.get(backend, backend)
    module_name, sep, attr = target.partition(":")
    if not sep:
        raise ConfigError(f"unknown reranker {backend!r}; choose none, {', '.join(BACKENDS)} "
                          f"or give 'package.module:Class'")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise ConfigError(f"reranker {backend!r} needs a package that is not installed ({exc.name})") from exc
    except AttributeError as exc:
        raise ConfigError(f"reranker {backend!r}: {module_name} has no {attr}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Reranker)):
        raise ConfigError(f"reranker {backend!r} is not a Reranker subclass")
    return cls


class RerankConfig(BaseModel):
    """A library's reranker (see the module docstring); ``options`` are the backend's own."""

    model_config = ConfigDict(extra="forbid")

    backend: str = "none"
    #: how many of the fused segments are judged again
    top_n: int = Field(default=20, ge=1, le=500)
    #: wall-clock milliseconds the stage may take; None: the backend's default
    budget_ms: float | None = Field(default=None, gt=0, le=600_000)
    #: judgements kept in memory (per medium content, span and query)
    cache_size: int = Field(default=4096, ge=0, le=1_000_000)
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _valid_backend(self) -> RerankConfig:
        if self.backend != "none":
            cls = reranker_class(self.backend)  # ConfigError with a clear message if not
            try:
                cls.Config.model_validate(self.options)
            except ValidationError as exc:
                first = exc.errors()[0]
                raise ConfigError(f"library config: rerank.options.{'.'.join(map(str, first['loc']))}: "
                                  f"{first['msg']}") from None
        return self

    @classmethod
    def parse_spec(cls, spec: str) -> RerankConfig:
        """``none``, ``builtin``, ``vlm:<model hub id or directory>``, ``endpoint[:<model>[@<url>]]`` or
        ``package.module:Class``; other settings keep their defaults."""
        backend, _, rest = spec.strip().partition(":")
        options: dict[str, Any] = {}
        if backend == "vlm" and rest:
            options["model"] = rest
        elif backend == "endpoint" and rest:
            model, _, url = rest.partition("@")
            options.update({"model": model} if model else {}, **({"url": url} if url else {}))
        elif backend not in BACKENDS and backend != "none" and rest:  # a dotted path: the class is part of it
            backend = f"{backend}:{rest}"
        elif rest:
            raise ConfigError(f"reranker {backend!r} takes no ':{rest}'")
        return cls(backend=backend, options=options)

    @property
    def enabled(self) -> bool:
        return self.backend != "none"

    def budget_seconds(self) -> float:
        budget = self.budget_ms if self.budget_ms is not None else reranker_class(self.backend).default_budget_ms
        return budget / 1000.0


# -- what a backend sees and answers ----------------------------------------------------------------


@dataclass(frozen=True)
class RerankQuery:
    """The query as the reranker sees it: what the user wants to see, and the engine's query."""

    #: the text to judge segments against (the parsed query's free text and phrases), or None
    text: str | None
    image: Image.Image | None
    #: the engine's query (the built-in reranker lets the visual module rewrite it)
    query: Query
    #: identifies the query in the judgement cache
    key: str

    @classmethod
    def of(cls, query: Query) -> RerankQuery:
        text = (query.parsed.search_text if query.parsed is not None else "") or (query.text or "")
        routes = ",".join(query.parsed.routes) if query.parsed is not None else ""
        if query.image is not None:
            digest = hashlib.sha256(query.image.tobytes()).hexdigest()[:24]
            key = f"image:{query.image.size}:{digest}|{text}"
        else:
            key = f"text:{text}|{routes}"
        return cls(text=text or None, image=query.image, query=query, key=key)


@dataclass(frozen=True)
class Candidate:
    """One fused segment to judge, with the medium it belongs to."""

    #: its place in the fused order (0 = first)
    rank: int
    segment: Segment
    path: Path
    kind: str  # "video" | "image"
    duration: float
    width: int
    height: int
    sha256: str


@dataclass(frozen=True)
class Judgement:
    """A backend's verdict on one candidate."""

    #: relevance: P(yes) in [0, 1] for the VLM and endpoint backends; the builtin's best-frame similarity
    score: float
    #: a tighter span and thumbnail, when the backend localises the match (else None: unchanged)
    start: float | None = None
    end: float | None = None
    thumbnail_time: float | None = None
    #: anything the backend's ``order`` needs besides the score
    detail: tuple[tuple[str, float], ...] = ()


#: the stage stops waiting this long before its budget ends (waking up and ordering take a few ms;
#: 1-14 ms past the budget were measured on a loaded 2-core machine without it)
WAKE_MARGIN_S = 0.03


class Deadline:
    """A point in time (``time.monotonic``) the work must end by."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.at


class RerankTimeout(Exception):
    """A backend noticed its deadline passed (the stage then keeps the fused order)."""


class Reranker(ABC):
    """Base of every reranker. A backend fills in :meth:`judge`; it may override :meth:`order`.

    One instance per library (created and loaded lazily, in the stage's worker thread). ``judge``
    may be called from several threads at once (concurrent searches): a backend guards its model.
    """

    name: ClassVar[str]

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

    #: budget when the library's RerankConfig sets none
    default_budget_ms: ClassVar[float] = 5000.0
    #: whether image queries can be judged (a VLM asked "does this clip show …?" needs text)
    image_queries: ClassVar[bool] = False

    def __init__(self, options: BaseModel, library: Library) -> None:
        self.options = options
        self.library = library

    def fingerprint(self) -> str:
        """Identity of the judge: judgements of different fingerprints are never mixed in the cache."""
        return f"{type(self).__name__}:{self.options.model_dump_json()}"

    def load(self) -> None:
        """Load models or open clients; called once, in the worker thread, before the first judgement."""

    def declines(self, query: RerankQuery) -> str | None:
        """Why this query cannot be judged (a note for the user), or None."""
        if query.text is None and not self.image_queries:
            return "it judges text queries only"
        return None

    @abstractmethod
    def judge(self, query: RerankQuery, candidates: list[Candidate], deadline: Deadline) -> Iterator[tuple[int, Judgement]]:
        """Yield ``(index into candidates, judgement)`` as judgements are made, in any order.

        Check ``deadline`` between units of work and stop (return, or raise :class:`RerankTimeout`)
        when it has passed; raise any other exception for a failure (it is reported, not raised).
        """

    def order(self, query: RerankQuery, candidates: list[Candidate], judgements: list[Judgement]) -> list[float]:
        """A sort key per candidate, higher first (ties keep the fused order). Default: the judgement's score."""
        return [j.score for j in judgements]

    def close(self) -> None:
        """Release clients or models."""


def create_reranker(config: RerankConfig, library: Library) -> Reranker:
    cls = reranker_class(config.backend)
    return cls(cls.Config.model_validate(config.options), library)


# -- the stage --------------------------------------------------------------------------------------


class _LRU:
    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Any, Judgement] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Judgement | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Any, value: Judgement) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def _reason(exc: BaseException) -> str:
    """A short account of a failure for notes and logs (never a request's headers or key)."""
    if isinstance(exc, ZhaopianError):
        return exc.message
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


class RerankStage:
    """A library's reranker with its cache, budget and fallback (see the module docstring)."""

    def __init__(self, config: RerankConfig, library: Library) -> None:
        self.config = config
        self.library = library
        self.cache = _LRU(config.cache_size)
        self._reranker: Reranker | None = None
        self._lock = threading.Lock()
        #: the last run's counts, for tests and benchmarks
        self.last: dict[str, Any] = {}

    def reranker(self) -> Reranker:
        """The backend, created and loaded on first use (a failed load is tried again next time)."""
        with self._lock:
            if self._reranker is None:
                reranker = create_reranker(self.config, self.library)
                reranker.load()
                self._reranker = reranker
            return self._reranker

    def _candidates(self, fused: list[Segment]) -> list[Candidate]:
        out = []
        for rank, seg in enumerate(fused[: self.config.top_n]):
            record = self.library.media.record(seg.media_id)
            out.append(Candidate(rank=rank, segment=seg, path=Path(record.path), kind=record.kind,
                                 duration=record.duration, width=record.width, height=record.height,
                                 sha256=record.sha256))
        return out

    def run(self, query: Query, fused: list[Segment], notes: list[str]) -> list[Segment]:
        """``fused`` with its first ``top_n`` reranked, or unchanged (and a note) when the reranker cannot."""
        deadline = Deadline(self.config.budget_seconds())
        last = self.last = {"candidates": 0, "cached": 0, "judged": 0, "outcome": "none"}
        if not fused:
            return fused
        name = self.config.backend
        try:
            candidates = self._candidates(fused)
        except NotFound:  # a medium deleted since recall: nothing to judge it by
            notes.append(f"reranker {name} skipped: a result's medium was deleted meanwhile; results are in fused order")
            return fused
        rq = RerankQuery.of(query)
        last["candidates"] = len(candidates)
        judgements: dict[int, Judgement] = {}
        keys = {}
        for i, c in enumerate(candidates):
            keys[i] = (c.sha256, round(c.segment.start, 3), round(c.segment.end, 3), c.segment.whole_medium, rq.key)
        done = threading.Event()
        state: dict[str, Any] = {"error": None, "reranker": None}

        def work() -> None:
            try:
                reranker = self.reranker()
                state["reranker"] = reranker
                if (why := reranker.declines(rq)) is not None:
                    state["declined"] = why
                    return
                fp = reranker.fingerprint()
                missing = []
                for i, key in keys.items():
                    cached = self.cache.get((fp, *key))
                    if cached is None:
                        missing.append(i)
                    else:
                        judgements[i] = cached
                last["cached"] = len(judgements)
                if not missing:
                    return
                todo = [candidates[i] for i in missing]
                results = reranker.judge(rq, todo, deadline)
                try:
                    for j, judgement in results:
                        i = missing[j]
                        judgements[i] = judgement
                        self.cache.put((fp, *keys[i]), judgement)
                        last["judged"] = last.get("judged", 0) + 1
                        if deadline.expired:
                            break
                finally:
                    close = getattr(results, "close", None)
                    if close is not None:
                        close()
            except RerankTimeout:
                pass
            except Exception as exc:  # noqa: BLE001 - reported as a note; the search itself goes on
                state["error"] = exc
            finally:
                done.set()

        threading.Thread(target=work, name=f"zhaopian-rerank-{name}", daemon=True).start()
        # stop waiting a little early: waking up and putting the results in order must fit the budget too
        finished = done.wait(max(0.0, deadline.remaining() - WAKE_MARGIN_S))
        if state["error"] is not None:
            log.warning("reranker %s failed (%s); keeping the fused order", name, _reason(state["error"]))
            notes.append(f"reranker {name} failed ({_reason(state['error'])}); results are in fused order")
            last["outcome"] = "error"
            return fused
        if "declined" in state:
            notes.append(f"reranker {name} skipped: {state['declined']}; results are in fused order")
            last["outcome"] = "declined"
            return fused
        if not finished or len(judgements) < len(candidates):
            budget = self.config.budget_seconds() * 1000
            log.info("reranker %s: %d of %d segments judged within %.0f ms; keeping the fused order",
                     name, len(judgements), len(candidates), budget)
            notes.append(f"reranker {name} did not finish within its {budget:.0f} ms budget "
                         f"({len(judgements)} of {len(candidates)} segments judged); results are in fused order")
            last["outcome"] = "timeout"
            return fused
        reranker = state["reranker"]
        ordered = [judgements[i] for i in range(len(candidates))]
        try:
            keys_ = reranker.order(rq, candidates, ordered)
        except Exception as exc:  # noqa: BLE001 - a plug-in's bug must not fail the search
            notes.append(f"reranker {name} failed ({_reason(exc)}); results are in fused order")
            last["outcome"] = "error"
            return fused
        last["outcome"] = "reranked"
        return _reordered(fused, candidates, ordered, keys_)


def _reordered(fused: list[Segment], candidates: list[Candidate], judgements: list[Judgement],
               keys: list[float]) -> list[Segment]:
    n = len(candidates)
    order = sorted(range(n), key=lambda i: (-keys[i], i))
    scores = [s.score for s in fused[:n]]  # already best first
    out = []
    for position, i in enumerate(order):
        seg, j = candidates[i].segment, judgements[i]
        update: dict[str, Any] = {"score": scores[position], "routes": {**seg.routes, "rerank": round(keys[i], 4)},
                                  "matches": list(seg.matches)}
        if j.start is not None and j.end is not None:
            update.update(start=j.start, end=j.end)
        if j.thumbnail_time is not None:
            update["thumbnail_time"] = j.thumbnail_time
        out.append(seg.model_copy(update=update))
    return out + fused[n:]


_stages: weakref.WeakKeyDictionary[Any, RerankStage] = weakref.WeakKeyDictionary()
_stages_lock = threading.Lock()


def stage_for(library: Library) -> RerankStage:
    """The library's stage (one per open library, so its cache and loaded model are kept)."""
    with _stages_lock:
        stage = _stages.get(library)
        if stage is None or stage.config is not library.config.rerank:  # first use, or the config was replaced
            stage = _stages[library] = RerankStage(library.config.rerank, library)
        return stage


def rerank(library: Library, query: Query, fused: list[Segment], notes: list[str]) -> list[Segment]:
    """The engine's entry: ``fused`` reranked by the library's reranker (see the module docstring)."""
    return stage_for(library).run(query, fused, notes)
