"""Vector store on an Elasticsearch 8.x server: one index per library and embedding space.

The same interface as :class:`~zhaopian.search.stores.vectors.FaissVectorStore`
(``add``, ``remove``, ``search``, ``save``, ``len``), for libraries whose
``vector_store.backend`` is ``elasticsearch``. Each vector is a document whose
id is the unit id, with one ``dense_vector`` field indexed as ``int8_hnsw``
(1 byte per dimension in the HNSW graph, like FAISS SQ8) under ``dot_product``
similarity; vectors are L2-normalised on the way in, so scores are cosine
similarities as in FAISS. Search is approximate kNN for ``oversample·k``
neighbours over ``max(num_candidates, 2·oversample·k)`` candidates per shard,
re-ranked exactly with the stored float vectors (Elasticsearch's documented
oversample-and-rescore for quantised vectors), so the int8 approximation costs
little recall and the scores are exact.

Writes follow the FAISS store's rhythm: ``add`` queues vectors (sending a
batch whenever the queue grows large), ``remove`` deletes at once, ``save``
sends the rest and refreshes, after which searches see them. Elasticsearch
has no multi-document transactions; as for the text index, this is safe
because writes are idempotent by unit id and the library removes the units of
media that never became ready. So that removal finds the store after a crash,
``save(path)`` — and the first write, before anything is sent — leaves a small
JSON pointer at ``path`` (where a FAISS store would keep its file) naming the
index and its dimension.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
from elasticsearch import ApiError, Elasticsearch, NotFoundError, helpers

from zhaopian.search.errors import StoreUnavailable

from .files import atomic_write
from .text_elastic import connect, server_errors, server_urls
from .vectors import POINTER_BACKEND, VectorStoreConfig, read_pointer

#: queued vectors sent in one go
SEND_BATCH = 2_000
#: Elasticsearch's ceiling on k and num_candidates
MAX_K = 10_000
#: the score FAISS gives an empty slot (inner product)
EMPTY_SCORE = np.finfo(np.float32).min


class ElasticsearchVectorStore:
    """One embedding space of one library, in the Elasticsearch index ``index_name``."""

    def __init__(self, dim: int | None, config: VectorStoreConfig, index_name: str,
                 pointer: Path | None = None) -> None:
        self.dim = dim
        self.config = config
        self.index_name = index_name
        self.pointer = Path(pointer) if pointer is not None else None
        self.urls = server_urls(config.url)
        self._client: Elasticsearch | None = None
        self._created = False
        self._pending: dict[int, np.ndarray] = {}
        self._lock = threading.RLock()

    # connection and index -------------------------------------------------------------------
    @property
    def client(self) -> Elasticsearch:
        if self._client is None:
            self._client = connect(self.urls, self.config.timeout)
        return self._client

    def _exists(self) -> bool:
        """Whether the index exists; the first time, also checks (or learns) its dimension."""
        if not self._created:
            if not self.client.indices.exists(index=self.index_name):
                return False
            mapping = self.client.indices.get_mapping(index=self.index_name)[self.index_name]
            dims = int(mapping["mappings"]["properties"]["vector"]["dims"])
            if self.dim is not None and dims != self.dim:
                raise ValueError(f"{self.index_name}: index has dimension {dims}, expected {self.dim}")
            self.dim = dims
            self._created = True
        return True

    def _create(self) -> None:
        if self._exists():
            return
        if self.dim is None:
            raise ValueError(f"{self.index_name}: the dimension of a new vector store must be given")
        mappings = {"dynamic": "strict", "properties": {"vector": {
            "type": "dense_vector", "dims": self.dim, "index": True, "similarity": "dot_product",
            "index_options": {"type": "int8_hnsw"}}}}
        settings = {"number_of_shards": self.config.shards, "number_of_replicas": self.config.replicas}
        try:
            self.client.indices.create(index=self.index_name, settings=settings, mappings=mappings)
        except ApiError as exc:  # another writer created it first
            if exc.error != "resource_already_exists_exception":
                raise
        self._created = True

    def _write_pointer(self, path: Path | None) -> None:
        if path is None:
            return
        data = json.dumps({"backend": POINTER_BACKEND, "index": self.index_name, "dim": self.dim})
        if read_pointer(path) != json.loads(data):
            atomic_write(Path(path), lambda tmp: tmp.write_text(data))

    # data ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Vectors searches see (sent and refreshed: after ``save``)."""
        with server_errors(self.urls):
            try:
                return int(self.client.count(index=self.index_name)["count"])
            except NotFoundError:
                return 0

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.asarray(vectors, dtype=np.float64)
        if not self._created:
            with server_errors(self.urls):
                self._exists()  # an existing index must have this store's dimension (or tells it)
        if self.dim is None or vectors.ndim != 2 or vectors.shape[1] != self.dim or len(ids) != len(vectors):
            raise ValueError(f"expected ({len(ids)}, {self.dim}) vectors, got {vectors.shape}")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if len(vectors) and not np.all(norms > 0):
            raise ValueError("zero vectors cannot be stored (dot-product similarity needs unit vectors)")
        unit = (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)
        with self._lock:
            self._pending.update(zip(ids.tolist(), unit))
            if len(self._pending) >= SEND_BATCH:
                self._send()

    def _send(self) -> None:
        if not self._pending:
            return
        self._write_pointer(self.pointer)  # before anything reaches the server: recovery must find it
        pending, self._pending = self._pending, {}
        with server_errors(self.urls):
            self._create()
            actions = ({"_op_type": "index", "_index": self.index_name, "_id": str(i),
                        "_source": {"vector": v.tolist()}} for i, v in pending.items())
            _, errors = helpers.bulk(self.client, actions, raise_on_error=False, max_retries=3, chunk_size=500)
        if errors:
            refused = ", ".join(str(next(iter(e.values())).get("_id")) for e in errors[:5])
            raise StoreUnavailable(f"Elasticsearch index {self.index_name} refused {len(errors)} of "
                                   f"{len(pending)} vectors (ids {refused}): {errors[0]}")

    def ids(self) -> np.ndarray:
        """Every stored id (a scroll over the index: for consistency checks, not for searching)."""
        with server_errors(self.urls):
            if not self._exists():
                return np.zeros(0, np.int64)
            found = [int(hit["_id"]) for hit in helpers.scan(self.client, index=self.index_name,
                                                              query={"query": {"match_all": {}}}, _source=False)]
        return np.asarray(sorted(found), np.int64)

    def remove(self, ids) -> int:
        """Delete these ids now (queued ones too); returns how many were stored."""
        wanted = [int(i) for i in ids]
        if not wanted:
            return 0
        with self._lock:
            removed = {i for i in wanted if self._pending.pop(i, None) is not None}
            with server_errors(self.urls):
                if self._exists():
                    result = self.client.bulk(operations=[{"delete": {"_index": self.index_name, "_id": str(i)}}
                                                          for i in wanted])
                    removed |= {int(item["delete"]["_id"]) for item in result["items"]
                                if item["delete"].get("result") == "deleted"}
                    failed = [item["delete"] for item in result["items"]
                              if item["delete"].get("status", 200) >= 300 and item["delete"].get("status") != 404]
                    if failed:
                        raise StoreUnavailable(f"Elasticsearch index {self.index_name} could not delete "
                                               f"{len(failed)} vectors: {failed[0]}")
            return len(removed)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query, shaped (queries, min(k, len)); missing slots have id -1."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        n = len(self) if k > 0 else 0
        kk = min(k, n, MAX_K)
        scores = np.full((len(queries), max(kk, 0)), EMPTY_SCORE, np.float32)
        ids = np.full((len(queries), max(kk, 0)), -1, np.int64)
        if kk <= 0 or not len(queries):
            return scores, ids
        window = min(MAX_K, math.ceil(kk * self.config.oversample))
        candidates = min(MAX_K, max(self.config.num_candidates, 2 * window))
        norms = np.linalg.norm(queries.astype(np.float64), axis=1)
        if not np.all(norms > 0):
            raise ValueError("a zero query vector has no nearest neighbours")
        offsets = norms + 1.0  # script scores must not be negative: shift the dot product past -|q|
        searches: list[dict[str, Any]] = []
        for q, norm, offset in zip(queries, norms, offsets):
            vector = q.tolist()
            searches.append({"index": self.index_name})
            searches.append({
                # the kNN phase takes unit queries (dot_product); the rescore scores with the query as given
                "knn": {"field": "vector", "query_vector": (q / norm).tolist(), "k": window,
                        "num_candidates": candidates},
                # int8 scores are approximate: re-rank the window with the stored float vectors
                "rescore": {"window_size": window, "query": {
                    "rescore_query": {"script_score": {"query": {"match_all": {}}, "script": {
                        "source": "dotProduct(params.query_vector, 'vector') + params.offset",
                        "params": {"query_vector": vector, "offset": float(offset)}}}},
                    "query_weight": 0.0, "rescore_query_weight": 1.0}},
                "size": kk, "_source": False})
        with server_errors(self.urls):
            result = self.client.msearch(searches=searches)
        for row, response in enumerate(result["responses"]):
            if "error" in response:
                raise StoreUnavailable(f"Elasticsearch index {self.index_name}: kNN search failed: {response['error']}")
            for col, hit in enumerate(response["hits"]["hits"][:kk]):
                ids[row, col] = int(hit["_id"])
                scores[row, col] = float(hit["_score"]) - offsets[row]  # the rescore script's dot + offset
        return scores, ids

    # persistence ---------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Send queued vectors, make every write searchable, and leave the pointer at ``path``."""
        with self._lock:
            self._send()
            self._write_pointer(path)
            with server_errors(self.urls):
                if self._exists():
                    self.client.indices.refresh(index=self.index_name)

    def drop(self) -> None:
        """Delete the index and its pointer (the library is being deleted)."""
        with self._lock:
            self._pending.clear()
            with server_errors(self.urls):
                self.client.options(ignore_status=404).indices.delete(index=self.index_name)
            self._created = False
            if self.pointer is not None:
                self.pointer.unlink(missing_ok=True)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
