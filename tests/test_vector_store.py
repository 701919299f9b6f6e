import numpy as np
import pytest

from zhaopian.search.stores.vectors import FaissVectorStore, VectorStoreConfig


def unit(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recall_at_10(store, exact, queries):
    _, got = store.search(queries, 10)
    _, want = exact.search(queries, 10)
    return np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want)])


def test_auto_kind_grows_flat_to_sq8_to_ivf():
    rng = np.random.default_rng(0)
    x = unit(rng, 3000, 32)
    store = FaissVectorStore(32, VectorStoreConfig(sq8_min=1000, ivf_threshold=2500))
    store.add(np.arange(500), x[:500])
    assert store.kind == "flat"
    store.add(np.arange(500, 1500), x[500:1500])
    assert store.kind == "sq8"
    store.add(np.arange(1500, 3000), x[1500:])
    assert store.kind == "ivf-sq8"
    assert len(store) == 3000
    assert sorted(store.ids()) == list(range(3000))


@pytest.mark.parametrize("kind", ["flat", "sq8", "ivf-sq8"])
def test_round_trip_search_delete_and_persist(tmp_path, kind):
    rng = np.random.default_rng(1)
    x = unit(rng, 2000, 48)
    ids = np.arange(10, 2010)
    store = FaissVectorStore(48, VectorStoreConfig(index=kind))
    store.add(ids, x)
    _, top = store.search(x[:5], 1)
    assert list(top[:, 0]) == list(ids[:5])

    removed = store.remove(ids[:2])
    assert removed == 2 and len(store) == 1998
    _, top = store.search(x[:2], 5)
    assert not set(top.ravel()) & {10, 11}
    _, top = store.search(x[2:4], 1)  # ids stay correct after removal (no shifting)
    assert list(top[:, 0]) == [12, 13]

    path = tmp_path / "v.faiss"
    store.save(path)
    loaded = FaissVectorStore.load(path, 48)
    assert loaded.kind == kind and len(loaded) == 1998
    assert np.array_equal(loaded.search(x[2:50], 3)[1], store.search(x[2:50], 3)[1])


def test_sq8_recall_close_to_float32_and_four_times_smaller():
    rng = np.random.default_rng(2)
    centers = unit(rng, 50, 64)  # clustered like real embeddings
    x = centers[rng.integers(0, 50, 5000)] + 0.3 * unit(rng, 5000, 64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    flat = FaissVectorStore(64, VectorStoreConfig(index="flat"))
    sq8 = FaissVectorStore(64, VectorStoreConfig(index="sq8"))
    for s in (flat, sq8):
        s.add(np.arange(5000), x)
    queries = unit(rng, 100, 64)
    assert recall_at_10(sq8, flat, queries) >= 0.9
    assert sq8.memory_bytes() < flat.memory_bytes() / 3


def test_save_is_crash_safe(tmp_path, monkeypatch):
    """A crash while writing leaves the previous index intact and no temporary file behind."""
    import faiss

    rng = np.random.default_rng(3)
    path = tmp_path / "v.faiss"
    store = FaissVectorStore(16)
    store.add(np.arange(5), unit(rng, 5, 16))
    store.save(path)
    before = path.read_bytes()
    store.add(np.arange(5, 10), unit(rng, 5, 16))

    def torn_write(index, filename):
        with open(filename, "wb") as fh:
            fh.write(b"half an ind")
        raise OSError("disk full")

    monkeypatch.setattr(faiss, "write_index", torn_write)
    with pytest.raises(OSError):
        store.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["v.faiss"]
    monkeypatch.undo()
    assert len(FaissVectorStore.load(path, 16)) == 5


def test_load_refuses_wrong_dimension(tmp_path):
    store = FaissVectorStore(8)
    store.add(np.arange(1), np.ones((1, 8), np.float32))
    store.save(tmp_path / "v.faiss")
    with pytest.raises(ValueError, match="dimension"):
        FaissVectorStore.load(tmp_path / "v.faiss", 16)
