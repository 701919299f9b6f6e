"""Vector store: FAISS, inner product on L2-normalised vectors, 64-bit ids, crash-safe files.

Index kinds:

* ``flat``    — exact float32 (4 bytes per dimension);
* ``sq8``     — uint8 scalar quantisation per dimension (1 byte per dimension),
  trained on the vectors present when it is built, with a safety margin on each
  dimension's range so later vectors are rarely clipped;
* ``ivf-sq8`` — an inverted file over SQ8 codes (``nlist`` ≈ 4·√n), searched
  with ``nprobe`` lists: sub-linear search for large libraries.

``auto`` (the default) starts exact while the store is tiny (below
``sq8_min`` vectors, where training SQ8 would be noise), becomes SQ8 once it
has ``sq8_min`` vectors and IVF-SQ8 above ``ivf_threshold``; each conversion
re-trains on the vectors already stored. Saving writes the whole index to a
temporary file and renames it over the old one, so a crash never leaves a torn
index. GPU FAISS is used for search when the installed FAISS has GPUs.

A library may keep its vectors on an Elasticsearch server instead
(``backend: elasticsearch``, ``vectors_elastic.py``); :func:`open_vector_store`
opens whichever the library's config names.
"""

from __future__ import annotations

import json
import math
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import faiss
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from zhaopian.search.errors import ConfigError

from .files import atomic_write

if TYPE_CHECKING:
    from .vectors_elastic import ElasticsearchVectorStore

IndexKind = Literal["auto", "flat", "sq8", "ivf-sq8"]


class VectorStoreConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["faiss", "elasticsearch"] = "faiss"
    # faiss options
    index: IndexKind = "auto"
    sq8_min: int = Field(default=1000, ge=1)
    ivf_threshold: int = Field(default=200_000, ge=1000)
    nprobe: int = Field(default=32, ge=1)
    #: widen each dimension's trained SQ8 range by this fraction on both sides
    sq8_margin: float = Field(default=0.2, ge=0.0, le=2.0)
    # elasticsearch options
    #: server URL(s); ``ZHAOPIAN_ES_URL`` is used when empty
    url: list[str] = Field(default_factory=list)
    #: index names are ``<prefix>-<name>`` (the name given by the module: library and space)
    index_prefix: str = Field(default="zhaopian", pattern=r"^[a-z0-9][a-z0-9_-]{0,40}$")
    #: kNN candidates examined per shard (at least twice the neighbours fetched); more is slower and more exact
    num_candidates: int = Field(default=500, ge=10, le=10_000)
    #: fetch oversample × k approximate (int8) neighbours and re-rank them with the float vectors
    oversample: float = Field(default=2.0, ge=1.0, le=10.0)
    shards: int = Field(default=1, ge=1, le=64)
    replicas: int = Field(default=0, ge=0, le=8)
    #: seconds before a request is abandoned
    timeout: float = Field(default=10.0, gt=0, le=300)


#: searches of fewer queries than this run on one thread
FEW_QUERIES = 16


def _gpu_count() -> int:
    get = getattr(faiss, "get_num_gpus", None)
    return get() if get else 0


class FaissVectorStore:
    """One embedding space of one library."""

    def __init__(self, dim: int, config: VectorStoreConfig | None = None) -> None:
        self.dim = dim
        self.config = config or VectorStoreConfig()
        self._lock = threading.RLock()
        self._index = self._new_index("flat", None)
        self._gpu_index = None

    # -- building ----------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        # downcast_index returns views that do not own the index; self._index keeps it alive
        if isinstance(faiss.downcast_index(self._index), faiss.IndexIVF):
            return "ivf-sq8"
        if isinstance(faiss.downcast_index(self._index.index), faiss.IndexScalarQuantizer):
            return "sq8"
        return "flat"

    def _new_index(self, kind: str, train: np.ndarray | None):
        """flat/sq8 sit in an IDMap2 (removal shifts codes); IVF keeps ids in its lists."""
        metric = faiss.METRIC_INNER_PRODUCT
        if kind == "flat":
            return faiss.index_factory(self.dim, "IDMap2,Flat", metric)
        if train is None or not len(train):
            raise ValueError(f"{kind} needs training vectors")
        train = np.ascontiguousarray(train, dtype=np.float32)
        if kind == "sq8":
            index = faiss.index_factory(self.dim, "IDMap2,SQ8", metric)
            sq_index = faiss.downcast_index(index.index)
        elif kind == "ivf-sq8":
            nlist = max(1, min(int(4 * math.sqrt(len(train))), len(train) // 39))
            index = faiss.index_factory(self.dim, f"IVF{nlist},SQ8", metric)
            sq_index = faiss.downcast_index(faiss.extract_index_ivf(index))
            sq_index.set_direct_map_type(faiss.DirectMap.Hashtable)
            sq_index.nprobe = min(self.config.nprobe, nlist)
        else:
            raise ValueError(f"unknown index kind {kind!r}")
        sq_index.sq.rangestat = faiss.ScalarQuantizer.RS_minmax
        sq_index.sq.rangestat_arg = self.config.sq8_margin
        index.train(train)
        return index

    def _all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        ids = self.ids()
        if not len(ids):
            return ids, np.zeros((0, self.dim), np.float32)
        if self.kind == "ivf-sq8":
            return ids, np.stack([self._index.reconstruct(int(i)) for i in ids])
        return ids, faiss.downcast_index(self._index.index).reconstruct_n(0, len(ids))

    def _target_kind(self, n: int) -> str:
        if self.config.index != "auto":
            return self.config.index
        if n >= self.config.ivf_threshold:
            return "ivf-sq8"
        if n >= self.config.sq8_min:
            return "sq8"
        return "flat"

    def _rebuild(self, kind: str, extra_ids: np.ndarray, extra_vecs: np.ndarray) -> None:
        ids, vecs = self._all_vectors()
        ids = np.concatenate([ids, extra_ids])
        vecs = np.concatenate([vecs, extra_vecs]).astype(np.float32)
        self._index = self._new_index(kind, vecs)
        self._index.add_with_ids(vecs, ids)

    def compact(self) -> str:
        """Rebuild the index from the vectors it holds: quantiser ranges and IVF lists trained on what the
        library holds now rather than on its first vectors, and no space left by removals. Returns the kind."""
        with self._lock:
            self._gpu_index = None
            ids, vecs = self._all_vectors()
            kind = self._target_kind(len(ids)) if self.config.index == "auto" else self.config.index
            self._index = self._new_index(kind if len(ids) else "flat", vecs if len(ids) else None)
            if len(ids):
                self._index.add_with_ids(np.ascontiguousarray(vecs, np.float32), ids)
            if self.kind == "ivf-sq8":
                ivf = faiss.extract_index_ivf(self._index)
                ivf.nprobe = min(self.config.nprobe, ivf.nlist)
            return self.kind

    # -- data --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(ids) != len(vectors):
            raise ValueError(f"expected ({len(ids)}, {self.dim}) vectors, got {vectors.shape}")
        if not len(ids):
            return
        with self._lock:
            self._gpu_index = None
            kind = self._target_kind(len(self) + len(ids))
            if kind != self.kind:
                self._rebuild(kind, ids, vectors)
            else:
                self._index.add_with_ids(vectors, ids)

    def remove(self, ids) -> int:
        ids = np.ascontiguousarray(list(ids), dtype=np.int64)
        if not len(ids):
            return 0
        with self._lock:
            self._gpu_index = None
            # IVF's hashtable direct map removes only through an IDSelectorArray
            return int(self._index.remove_ids(faiss.IDSelectorArray(len(ids), faiss.swig_ptr(ids))))

    def ids(self) -> np.ndarray:
        with self._lock:
            if self.kind != "ivf-sq8":
                return faiss.vector_to_array(self._index.id_map).astype(np.int64)
            lists = faiss.extract_index_ivf(self._index).invlists
            parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                     for i in range(lists.nlist) if lists.list_size(i)]
            return np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query; missing slots have id -1."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        with self._lock:
            if len(self) == 0 or k <= 0:
                return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
            if len(queries) < FEW_QUERIES:
                # OpenMP threads do not pay for one query, and under concurrent requests their spinning
                # made a search 10x slower (40 ms against 3 ms at 10k SQ8); the setting is per calling thread
                faiss.omp_set_num_threads(1)
            return self._searcher().search(queries, min(k, len(self)))

    def _searcher(self):
        if _gpu_count() > 0:  # pragma: no cover - no GPU in CI
            if self._gpu_index is None:
                self._gpu_index = faiss.index_cpu_to_all_gpus(self._index)
            return self._gpu_index
        return self._index

    def memory_bytes(self) -> int:
        """Size of the serialised index: what it costs on disk and, roughly, in RAM."""
        with self._lock:
            return int(faiss.serialize_index(self._index).nbytes)

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        with self._lock:
            atomic_write(Path(path), lambda tmp: faiss.write_index(self._index, str(tmp)))

    @classmethod
    def load(cls, path: Path, dim: int | None, config: VectorStoreConfig | None = None) -> FaissVectorStore:
        """Open a saved store; a missing file is an empty store. ``dim=None`` takes the file's."""
        path = Path(path)
        index = faiss.read_index(str(path)) if path.exists() else None
        store = cls(dim or (index.d if index is not None else 1), config)
        if index is not None:
            if dim is not None and index.d != dim:
                raise ValueError(f"{path}: index has dimension {index.d}, expected {dim}")
            store._index = index
            if store.kind == "ivf-sq8":
                ivf = faiss.extract_index_ivf(index)
                ivf.nprobe = min(store.config.nprobe, ivf.nlist)
        return store


#: what the pointer file of an Elasticsearch store says its backend is
POINTER_BACKEND = "elasticsearch"


#: what a module holds for one embedding space
VectorStore = Union["FaissVectorStore", "ElasticsearchVectorStore"]


def read_pointer(path: Path) -> dict[str, Any] | None:
    """The pointer an Elasticsearch store left at ``path`` (index name and dimension),
    or None: no file, or a FAISS file."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, "rb") as fh:
        if fh.read(1) != b"{":  # FAISS files start with a four-letter code
            return None
    data = json.loads(path.read_text())
    return data if data.get("backend") == POINTER_BACKEND else None


def open_vector_store(path: Path, dim: int | None, config: VectorStoreConfig,
                      index_name: str) -> FaissVectorStore | ElasticsearchVectorStore:
    """The store of one embedding space: the FAISS file at ``path``, or the Elasticsearch
    index ``<prefix>-<index_name>`` with its pointer file at ``path``. ``dim=None`` opens
    a store only to remove from it (the file or the index knows its dimension)."""
    pointer = read_pointer(path)
    if config.backend == "faiss":
        if pointer is not None:
            raise ConfigError(f"{path}: these vectors are in Elasticsearch index {pointer['index']!r}, "
                              f"but the library's vector_store.backend is faiss")
        return FaissVectorStore.load(path, dim, config)
    if Path(path).exists() and pointer is None:
        raise ConfigError(f"{path}: these vectors are in a FAISS file, "
                          f"but the library's vector_store.backend is elasticsearch")
    if pointer is not None and dim is not None and pointer.get("dim") not in (None, dim):
        raise ValueError(f"{path}: index has dimension {pointer['dim']}, expected {dim}")
    from .vectors_elastic import ElasticsearchVectorStore

    name = pointer["index"] if pointer is not None else re.sub(
        r"[^a-z0-9_.-]", "_", f"{config.index_prefix}-{index_name}".lower())
    return ElasticsearchVectorStore(dim if dim is not None else (pointer or {}).get("dim"), config, name, path)


def drop_vector_store(path: Path, config: VectorStoreConfig) -> None:
    """Delete one embedding space's store for good: its file and, if the file points to one,
    its Elasticsearch index (the library is being deleted)."""
    pointer = read_pointer(path)
    if pointer is not None:
        from .vectors_elastic import ElasticsearchVectorStore

        store = ElasticsearchVectorStore(pointer.get("dim"), config, pointer["index"], path)
        try:
            store.drop()
        finally:
            store.close()
    Path(path).unlink(missing_ok=True)
