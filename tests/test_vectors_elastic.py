"""The Elasticsearch vector store: the FAISS store's behaviour (shapes, ids, removal) on a server."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from zhaopian.search.errors import ConfigError, StoreUnavailable
from zhaopian.search.stores.vectors import (
    FaissVectorStore,
    VectorStoreConfig,
    drop_vector_store,
    open_vector_store,
    read_pointer,
)
from zhaopian.search.stores.vectors_elastic import ElasticsearchVectorStore

pytest_plugins = ["elastic"]

DIM = 32


def unit(rng: np.random.Generator, n: int, d: int = DIM) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def config(es_url: str) -> VectorStoreConfig:
    # a prefix of its own keeps this test's indexes apart from the others' on the shared server
    return VectorStoreConfig(backend="elasticsearch", url=[es_url], index_prefix=f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def path(tmp_path: Path):
    return tmp_path / "visual.image.faiss"


@pytest.fixture
def store(config: VectorStoreConfig, path: Path):
    store = open_vector_store(path, DIM, config, "lib-visual-image")
    assert isinstance(store, ElasticsearchVectorStore)
    yield store
    store.drop()
    store.close()


def test_faiss_stays_the_default(tmp_path: Path):
    store = open_vector_store(tmp_path / "v.faiss", DIM, VectorStoreConfig(), "unused")
    assert isinstance(store, FaissVectorStore)
    store.add(np.arange(3), unit(np.random.default_rng(0), 3))
    store.save(tmp_path / "v.faiss")
    again = open_vector_store(tmp_path / "v.faiss", None, VectorStoreConfig(), "unused")
    assert isinstance(again, FaissVectorStore) and len(again) == 3


def test_top_k_matches_exact_search(store: ElasticsearchVectorStore, path: Path):
    rng = np.random.default_rng(0)
    x = unit(rng, 2000)
    ids = np.arange(100, 2100)
    store.add(ids, x)
    store.save(path)
    assert len(store) == 2000
    exact = FaissVectorStore(DIM, VectorStoreConfig(index="flat"))
    exact.add(ids, x)

    queries = unit(rng, 20)
    scores, got = store.search(queries, 10)
    want_scores, want = exact.search(queries, 10)
    assert got.shape == scores.shape == (20, 10) and got.dtype == np.int64 and scores.dtype == np.float32
    recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want)])
    assert recall >= 0.9  # int8 HNSW: approximate
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    assert np.allclose(scores[:, 0], want_scores[:, 0], atol=0.03)  # scores are cosine similarities, as in FAISS

    self_scores, self_ids = store.search(x[:5], 1)
    assert list(self_ids[:, 0]) == list(ids[:5])
    assert np.allclose(self_scores[:, 0], 1.0, atol=0.02)


def test_vectors_are_normalised_on_the_way_in(store: ElasticsearchVectorStore, path: Path):
    x = unit(np.random.default_rng(1), 4)
    store.add(np.array([1, 2, 3, 4]), x * np.array([[3.0], [0.5], [1.0], [10.0]], dtype=np.float32))
    store.save(path)
    scores, ids = store.search(x[3], 1)
    assert ids[0, 0] == 4 and abs(scores[0, 0] - 1.0) < 0.02
    scores, ids = store.search(-5 * x[3], 1)  # queries are not normalised: inner products, as in FAISS
    assert abs(scores[0, 0] - float(np.max(-5 * x @ x[3]))) < 0.02
    with pytest.raises(ValueError, match="zero query"):
        store.search(np.zeros(DIM, np.float32), 1)


def test_fewer_vectors_than_k(store: ElasticsearchVectorStore, path: Path):
    x = unit(np.random.default_rng(2), 3)
    store.add(np.array([7, 8, 9]), x)
    store.save(path)
    scores, ids = store.search(np.stack([x[0], x[1]]), 10)
    assert ids.shape == scores.shape == (2, 3)  # as FAISS: min(k, len) columns
    assert ids[0, 0] == 7 and ids[1, 0] == 8 and set(ids[0]) == {7, 8, 9}
    assert store.search(x[0], 0)[1].shape == (1, 0)


def test_empty_store(store: ElasticsearchVectorStore, path: Path):
    scores, ids = store.search(unit(np.random.default_rng(3), 2), 5)
    assert ids.shape == scores.shape == (2, 0) and ids.dtype == np.int64 and scores.dtype == np.float32
    assert len(store) == 0
    assert store.remove([1, 2]) == 0
    store.save(path)  # nothing to send: no index is created, the pointer is left
    assert json.loads(path.read_text())["backend"] == "elasticsearch"
    assert len(store) == 0


def test_remove(store: ElasticsearchVectorStore, path: Path):
    rng = np.random.default_rng(4)
    x = unit(rng, 50)
    store.add(np.arange(50), x)
    store.save(path)
    assert store.remove([0, 1, 999]) == 2
    assert store.remove([]) == 0
    store.save(path)
    assert len(store) == 48
    _, ids = store.search(x[:2], 5)
    assert not {0, 1} & set(ids.ravel())
    _, ids = store.search(x[2:4], 1)
    assert list(ids[:, 0]) == [2, 3]


def test_writes_are_visible_after_save_and_queued_ones_can_be_removed(store: ElasticsearchVectorStore, path: Path):
    x = unit(np.random.default_rng(5), 3)
    store.add(np.array([1, 2, 3]), x)
    assert len(store) == 0 and store.search(x, 1)[1].shape == (3, 0)
    assert store.remove([3]) == 1  # still queued: it is never sent
    store.save(path)
    assert len(store) == 2
    store.add(np.array([1]), x[2:3])  # re-adding an id replaces its vector
    store.save(path)
    assert len(store) == 2
    assert store.search(x[2], 1)[1][0, 0] == 1


def test_reopening_finds_the_index_through_its_pointer(config: VectorStoreConfig, store, path: Path):
    x = unit(np.random.default_rng(6), 10)
    store.add(np.arange(10), x)
    store.save(path)
    pointer = json.loads(path.read_text())
    assert pointer == {"backend": "elasticsearch", "index": store.index_name, "dim": DIM}
    assert store.index_name.startswith(config.index_prefix + "-lib-visual-image")

    for_removal = open_vector_store(path, None, config, "lib-visual-image")  # dimension from the pointer
    assert for_removal.dim == DIM and len(for_removal) == 10
    assert for_removal.remove([0, 1]) == 2
    with pytest.raises(ValueError, match="dimension 32, expected 8"):
        open_vector_store(path, 8, config, "lib-visual-image")


def test_pointer_is_left_before_the_first_vector_is_sent(config: VectorStoreConfig, path: Path, monkeypatch):
    import zhaopian.search.stores.vectors_elastic as vectors_elastic

    monkeypatch.setattr(vectors_elastic, "SEND_BATCH", 5)
    store = open_vector_store(path, DIM, config, "lib-visual-image")
    try:
        store.add(np.arange(5), unit(np.random.default_rng(7), 5))  # a full batch is sent at once
        assert path.exists()  # a crash now still lets recovery find (and clean) the index
        store.save(path)
        assert len(store) == 5
    finally:
        store.drop()
        store.close()


def test_an_index_of_another_dimension_is_refused(config: VectorStoreConfig, store, path: Path, tmp_path: Path):
    store.add(np.arange(3), unit(np.random.default_rng(8), 3))
    store.save(path)
    other = open_vector_store(tmp_path / "other.faiss", 8, config, "lib-visual-image")  # same index, no pointer
    with pytest.raises(ValueError, match="dimension 32, expected 8"):
        other.add(np.arange(2), unit(np.random.default_rng(9), 2, 8))


def test_bad_vectors_are_refused(store: ElasticsearchVectorStore):
    with pytest.raises(ValueError, match="expected"):
        store.add(np.arange(2), np.ones((2, DIM + 1), np.float32))
    with pytest.raises(ValueError, match="zero vectors"):
        store.add(np.arange(1), np.zeros((1, DIM), np.float32))


def test_backend_and_files_must_agree(config: VectorStoreConfig, store, path: Path, tmp_path: Path):
    store.add(np.arange(3), unit(np.random.default_rng(10), 3))
    store.save(path)
    with pytest.raises(ConfigError, match="Elasticsearch index"):
        open_vector_store(path, DIM, VectorStoreConfig(), "lib-visual-image")
    faiss_file = tmp_path / "faiss.faiss"
    faiss_store = FaissVectorStore(DIM)
    faiss_store.add(np.arange(2), unit(np.random.default_rng(11), 2))
    faiss_store.save(faiss_file)
    with pytest.raises(ConfigError, match="FAISS file"):
        open_vector_store(faiss_file, DIM, config, "lib-visual-image")


def test_drop_vector_store_deletes_index_and_pointer(config: VectorStoreConfig, path: Path):
    store = open_vector_store(path, DIM, config, "lib-visual-image")
    store.add(np.arange(3), unit(np.random.default_rng(12), 3))
    store.save(path)
    name = store.index_name
    drop_vector_store(path, config)
    assert not path.exists()
    assert not store.client.indices.exists(index=name)
    store.close()


def test_unreachable_server_is_a_clear_error(path: Path):
    from elastic import _free_port

    url = f"http://127.0.0.1:{_free_port()}"
    store = open_vector_store(path, DIM, VectorStoreConfig(backend="elasticsearch", url=[url], timeout=1), "lib")
    with pytest.raises(StoreUnavailable, match=url):
        store.add(np.arange(2), unit(np.random.default_rng(13), 2))  # the first write checks the index
    with pytest.raises(StoreUnavailable, match=url):
        store.search(unit(np.random.default_rng(14), 1), 5)


def test_missing_slots_are_padded_like_faiss(store: ElasticsearchVectorStore, path: Path, monkeypatch):
    x = unit(np.random.default_rng(15), 3)
    store.add(np.array([1, 2, 3]), x)
    store.save(path)
    # the count can run ahead of what searches see (another writer's unrefreshed vectors)
    monkeypatch.setattr(ElasticsearchVectorStore, "__len__", lambda self: 10)
    scores, ids = store.search(x[0], 5)
    assert ids.shape == (1, 5) and set(ids[0, :3]) == {1, 2, 3} and list(ids[0, 3:]) == [-1, -1]
    assert np.all(scores[0, 3:] == np.finfo(np.float32).min)


def test_a_library_can_keep_its_vectors_in_elasticsearch(service, colour_videos, es_url: str):
    from conftest import COLOR_ENCODER

    prefix = f"test-{uuid.uuid4().hex[:12]}"
    config = {"modules": {"visual": {"encoder": COLOR_ENCODER}},
              "vector_store": {"backend": "elasticsearch", "url": [es_url], "index_prefix": prefix}}
    service.create_library("colours", config)
    results = service.index(list(colour_videos.values()), library="colours")
    assert [r.status for r in results] == ["indexed"] * 3
    top = service.search("red", library="colours", top_k=2)
    assert [(r.video.rsplit("/", 1)[-1], r.start, r.end) for r in top] == [("b.mp4", 2.0, 4.0), ("a.mp4", 0.0, 3.0)]

    record = service.catalog.library(service.settings.tenant, "colours")
    files = sorted(service.catalog.library_dir(record).glob("visual.*.faiss"))
    pointers = [read_pointer(f) for f in files]
    assert files and all(p is not None and p["index"].startswith(prefix) for p in pointers)
    stored = {p["index"]: len(ElasticsearchVectorStore(None, VectorStoreConfig(url=[es_url]), p["index"]))
              for p in pointers}
    assert all(n > 0 for n in stored.values())

    b = next(m for m in service.media(library="colours") if m.path.endswith("b.mp4"))
    service.delete_medium(b.id, library="colours")
    assert all(not r.video.endswith("b.mp4") for r in service.search("red", library="colours", top_k=10))
    for name, before in stored.items():
        assert 0 < len(ElasticsearchVectorStore(None, VectorStoreConfig(url=[es_url]), name)) < before
    for f in files:
        drop_vector_store(f, VectorStoreConfig(url=[es_url]))
