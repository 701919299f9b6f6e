"""Vector store benchmark: float32 (flat) vs SQ8 vs IVF-SQ8 in ``FaissVectorStore``.

For each size (n vectors x d dimensions) it reports, per index kind:

* recall@10 against exact float32 search (the flat index, searched in one batch);
* memory: ``FaissVectorStore.memory_bytes()`` (the serialised index) and its ratio to flat;
* query latency: one query at a time through ``FaissVectorStore.search``, median and p95
  over ``--latency-queries`` queries (ms/query), with 1 and with 2 FAISS (OpenMP) threads;
* build time (training + adding).

Vectors are synthetic but clustered like real embeddings: a few thousand gaussian clusters
on the unit sphere, an anisotropic (power-law) spectrum in a random rotation, and a shared
offset so that unrelated vectors are not orthogonal (real text/image embeddings sit in a
narrow cone). Queries are data points moved a little (cosine ~0.9 to their origin).

``sq8 (auto)`` is what a library gets by default: the ``auto`` store turns SQ8 when it
reaches ``sq8_min`` (1000) vectors and trains its quantiser on those first vectors only;
later vectors are added without re-training. ``sq8`` trains on all vectors.

``--real`` adds a small check on real embeddings: the demo videos' frames encoded by the
bundled encoder (both spaces), with the demo's own text and image queries plus every frame
as a query (its own vector left out).

    python bench/vector_store.py                       # 100k x 384 and 100k x 768
    python bench/vector_store.py --real --json vs.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from machine import Clock, machine_info  # bench/machine.py
from zhaopian.search.stores.vectors import FaissVectorStore, VectorStoreConfig

K = 10


# -- data --------------------------------------------------------------------------------------
def normalize(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered_vectors(n: int, d: int, clusters: int, n_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors in ``clusters`` gaussian clusters, and ``n_queries`` queries near data points."""
    rng = np.random.default_rng(seed)
    spectrum = ((np.arange(d) + 1.0) ** -0.5).astype(np.float32)  # most variance in a few directions
    rotation = np.linalg.qr(rng.standard_normal((d, d)))[0].astype(np.float32)
    offset = normalize(rng.standard_normal((1, d), np.float32) * spectrum) @ rotation.T

    def shaped(m: int) -> np.ndarray:  # isotropic noise -> anisotropic, randomly oriented unit vectors
        return normalize((rng.standard_normal((m, d), np.float32) * spectrum) @ rotation.T)

    centres = normalize(shaped(clusters) + 0.6 * offset)  # a shared offset: a narrow cone, not the whole sphere
    members = rng.integers(0, clusters, n)
    data = np.empty((n, d), np.float32)
    for start in range(0, n, 20_000):  # in blocks to bound temporary memory
        part = slice(start, min(start + 20_000, n))
        data[part] = normalize(centres[members[part]] + 0.6 * shaped(part.stop - part.start))
    origins = rng.choice(n, n_queries, replace=False)
    queries = normalize(data[origins] + 0.35 * shaped(n_queries))
    return data, queries


def describe(data: np.ndarray, queries: np.ndarray, seed: int = 1) -> dict:
    """Cosine statistics that show how 'real-looking' the vectors are."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(data), (2, 2000))
    random_pairs = np.einsum("ij,ij->i", data[a], data[b])
    top1 = (queries[:200] @ data.T).max(axis=1)
    return {"cos_random_pair_mean": round(float(random_pairs.mean()), 3),
            "cos_query_top1_mean": round(float(top1.mean()), 3)}


# -- measurements --------------------------------------------------------------------------------
def build(kind: str, data: np.ndarray, nprobe: int) -> tuple[FaissVectorStore, float]:
    """A store of ``kind`` holding ``data`` (ids 0..n-1), and the seconds it took to build."""
    ids = np.arange(len(data), dtype=np.int64)
    t0 = time.perf_counter()
    if kind == "sq8 (auto)":
        config = VectorStoreConfig(index="auto", ivf_threshold=max(len(data) + 1, 1000), nprobe=nprobe)
        store = FaissVectorStore(data.shape[1], config)
        first = config.sq8_min
        store.add(ids[:first], data[:first])  # becomes SQ8 here, trained on these vectors
        store.add(ids[first:], data[first:])
        assert store.kind == "sq8", store.kind
    else:
        store = FaissVectorStore(data.shape[1], VectorStoreConfig(index=kind, nprobe=nprobe))
        store.add(ids, data)
    return store, time.perf_counter() - t0


def set_nprobe(store: FaissVectorStore, nprobe: int) -> None:
    ivf = faiss.extract_index_ivf(store._index)
    ivf.nprobe = min(nprobe, ivf.nlist)


def recall_at_k(found: np.ndarray, exact: np.ndarray, k: int = K) -> float:
    return float(np.mean([len(set(f[:k]) & set(e[:k])) / k for f, e in zip(found, exact)]))


def latency_ms(store: FaissVectorStore, queries: np.ndarray, threads: int, k: int = K) -> dict:
    """Median and 95th percentile of single-query search time with ``threads`` OpenMP threads, in ms."""
    default = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        store.search(queries[:5], k)  # warm-up
        times, clock = [], Clock()
        with clock:
            for q in queries:
                t0 = time.perf_counter()
                store.search(q[None, :], k)
                times.append((time.perf_counter() - t0) * 1e3)
    finally:
        faiss.omp_set_num_threads(default)
    times.sort()
    return {"median": round(statistics.median(times), 3), "p95": round(times[int(0.95 * (len(times) - 1))], 3),
            "others_cores": clock.others_cores}


def bench_size(n: int, d: int, clusters: int, n_queries: int, latency_queries: int, nprobes: list[int],
               kinds: list[str], threads: list[int]) -> dict:
    t0 = time.perf_counter()
    data, queries = clustered_vectors(n, d, clusters, n_queries)
    print(f"\n== {n:,} x {d}  ({clusters} clusters, {n_queries} queries; data made in "
          f"{time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    flat, flat_build = build("flat", data, nprobes[0])
    _, exact = flat.search(queries, K)  # one batch: exact float32 ground truth
    flat_bytes = flat.memory_bytes()
    rows = []
    for kind in kinds:
        store, seconds = (flat, flat_build) if kind == "flat" else build(kind, data, nprobes[0])
        for nprobe in (nprobes if kind == "ivf-sq8" else [None]):
            if nprobe is not None:
                set_nprobe(store, nprobe)
            _, found = store.search(queries, K)
            memory = store.memory_bytes()
            row = {"kind": kind, "nprobe": nprobe, "recall_at_10": round(recall_at_k(found, exact), 4),
                   "memory_mib": round(memory / 2**20, 1), "memory_vs_flat": round(memory / flat_bytes, 3),
                   "build_s": round(seconds, 1), "ms_per_query": {}}
            for t in threads:
                row["ms_per_query"][str(t)] = latency_ms(store, queries[:latency_queries], t)
            if kind == "ivf-sq8":
                row["nlist"] = int(faiss.extract_index_ivf(store._index).nlist)
            rows.append(row)
            latency = ", ".join(f"{lat['median']:.2f} ms/query with {t} thread(s)" for t, lat in row["ms_per_query"].items())
            print(f"  {kind:<11} nprobe={nprobe}: recall@10 {row['recall_at_10']:.3f}  {row['memory_mib']} MiB  {latency}",
                  file=sys.stderr)
        if store is not flat:
            del store
    return {"n": n, "dim": d, "clusters": clusters, "queries": n_queries, "latency_queries": latency_queries,
            "raw_float32_mib": round(n * d * 4 / 2**20, 1), **describe(data, queries), "rows": rows}


# -- real embeddings (optional) ---------------------------------------------------------------------
def real_embeddings(cache_dir: Path, sample_fps: float) -> dict:
    """Recall@10 of SQ8 on the bundled encoder's vectors of the demo frames (small, but real)."""
    from PIL import Image

    from zhaopian.indexer.decode import iter_frames
    from zhaopian.indexer.demo import build_demo, load_queries, query_image_path
    from zhaopian.modules.visual.encoders.base import EncoderConfig
    from zhaopian.modules.visual.encoders.registry import create_encoder

    demo = build_demo(cache_dir / "demo")
    encoder = create_encoder(EncoderConfig()).load()  # the default: bundled
    images = [f.image for video in sorted(demo.glob("*.mp4")) for f in iter_frames(video, sample_fps)]
    frames = encoder.encode_images(images)
    queries = load_queries(demo)
    text_q = encoder.encode_texts([q.query for q in queries if q.kind == "text"])
    image_q = encoder.encode_images([Image.open(query_image_path(demo, q)).convert("RGB")
                                     for q in queries if q.kind == "image"])
    query_sets = {encoder.text_space: text_q, encoder.image_query_space: image_q[encoder.image_query_space]}
    out = {"frames": len(images), "sample_fps": sample_fps, "spaces": []}
    for space, vectors in frames.items():
        ids = np.arange(len(vectors))
        flat = FaissVectorStore(vectors.shape[1], VectorStoreConfig(index="flat"))
        sq8 = FaissVectorStore(vectors.shape[1], VectorStoreConfig(index="sq8"))
        flat.add(ids, vectors)
        sq8.add(ids, vectors)
        # every frame as a query, its own vector dropped from both result lists
        _, exact = flat.search(vectors, K + 1)
        _, found = sq8.search(vectors, K + 1)
        drop = lambda rows: [[i for i in row if i != own][:K] for own, row in enumerate(rows)]  # noqa: E731
        entry = {"space": space, "dim": int(vectors.shape[1]),
                 "recall_at_10_frames_as_queries": round(recall_at_k(drop(found), drop(exact)), 4),
                 "memory_vs_flat": round(sq8.memory_bytes() / flat.memory_bytes(), 3)}
        if space in query_sets and len(query_sets[space]):
            _, exact = flat.search(query_sets[space], K)
            _, found = sq8.search(query_sets[space], K)
            entry["demo_queries"] = len(query_sets[space])
            entry["recall_at_10_demo_queries"] = round(recall_at_k(found, exact), 4)
        out["spaces"].append(entry)
    return out


# -- output -----------------------------------------------------------------------------------------
def print_tables(results: dict) -> None:
    for size in results["sizes"]:
        print(f"\n{size['n']:,} x {size['dim']} float32 ({size['raw_float32_mib']} MiB raw; "
              f"random-pair cosine {size['cos_random_pair_mean']}, query-to-nearest cosine {size['cos_query_top1_mean']})")
        threads = list(size["rows"][0]["ms_per_query"])
        print(f"| {'index':<11} | nprobe/nlist | recall@10 | memory MiB | vs flat | build s | "
              + " | ".join(f"ms/query {t} thr (p95)" for t in threads) + " |")
        print(f"|{'-' * 13}|--------------|-----------|------------|---------|---------|"
              + "|".join("-" * 23 for _ in threads) + "|")
        for r in size["rows"]:
            nprobe = "" if r["nprobe"] is None else f"{r['nprobe']} / {r['nlist']}"
            lat = " | ".join(f"{r['ms_per_query'][t]['median']:11.2f} ({r['ms_per_query'][t]['p95']:6.2f})"
                             for t in threads)
            print(f"| {r['kind']:<11} | {nprobe:<12} | {r['recall_at_10']:9.3f} | {r['memory_mib']:10.1f} | "
                  f"{r['memory_vs_flat']:7.3f} | {r['build_s']:7.1f} | {lat} |")
    if real := results.get("real"):
        print(f"\nReal embeddings: bundled encoder, {real['frames']} demo frames at {real['sample_fps']} fps; SQ8 vs flat")
        print("| space      | dim  | recall@10 frames as queries | recall@10 demo queries | memory vs flat |")
        print("|------------|------|-----------------------------|------------------------|----------------|")
        for s in real["spaces"]:
            demo = f"{s['recall_at_10_demo_queries']:.3f} ({s['demo_queries']} q)" if "demo_queries" in s else "-"
            print(f"| {s['space']:<10} | {s['dim']:<4} | {s['recall_at_10_frames_as_queries']:27.3f} | "
                  f"{demo:>22} | {s['memory_vs_flat']:14.3f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000x384,100000x768", help="comma-separated NxD (default: %(default)s)")
    parser.add_argument("--clusters", type=int, default=3000)
    parser.add_argument("--queries", type=int, default=1000, help="queries for recall (default: %(default)s)")
    parser.add_argument("--latency-queries", type=int, default=200,
                        help="single queries timed per index (default: %(default)s)")
    parser.add_argument("--nprobe", default="8,32,128", help="IVF nprobe values; the store's default is 32")
    parser.add_argument("--kinds", default="flat,sq8,sq8 (auto),ivf-sq8")
    parser.add_argument("--faiss-threads", default="1,2",
                        help="OpenMP thread counts for the latency test (default: %(default)s)")
    parser.add_argument("--real", action="store_true", help="also check SQ8 on real embeddings of the demo frames")
    parser.add_argument("--real-fps", type=float, default=4.0, help="frames per second sampled for --real")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "zhaopian-bench",
                        help="where the demo videos are built (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)

    t_start = time.perf_counter()
    results: dict = {"machine": {**machine_info(), "faiss": faiss.__version__,
                                 "faiss_omp_threads": faiss.omp_get_max_threads()}, "sizes": []}
    nprobes = [int(x) for x in args.nprobe.split(",")]
    kinds = [k.strip() for k in args.kinds.split(",")]
    for spec in args.sizes.split(","):
        n, d = (int(x) for x in spec.lower().split("x"))
        results["sizes"].append(bench_size(n, d, args.clusters, args.queries, args.latency_queries, nprobes, kinds,
                                           [int(t) for t in args.faiss_threads.split(",")]))
    if args.real:
        results["real"] = real_embeddings(args.cache_dir, args.real_fps)
    results["total_seconds"] = round(time.perf_counter() - t_start, 1)
    print_tables(results)
    others = [lat["others_cores"] for size in results["sizes"] for row in size["rows"]
              for lat in row["ms_per_query"].values() if lat["others_cores"] is not None]
    print(f"\nload average at start {results['machine']['load_avg_1min']}; other processes used up to "
          f"{max(others, default=0):.2f} cores during the latency tests (0 on an idle machine); "
          f"total {results['total_seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
