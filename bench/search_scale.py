"""Search at scale over HTTP: a library of N frame vectors plus a text index of N lines, served by
``zhaopian serve``, queried at a fixed rate from a bounded load generator on loopback.

For each size (default 100,000 and 1,000,000):

* **build** a library with the ``visual`` (bundled encoder) and ``ocr`` modules: N/100 synthetic
  videos of 100 three-second clips each; every clip gets a vector in the text-query space
  (384-d, clustered like real embeddings, see ``bench/vector_store.py``; the ``auto`` store
  makes it IVF-SQ8) and an on-screen text line of zh and en words (tantivy; drawn from 50,000
  distinct lines, as on-screen text repeats in real footage). The library is
  cached under ``--cache-dir`` and reused by later runs;
* **cold start**: spawn ``zhaopian serve`` and time until the first search answers;
* **load**: ``--qps`` requests per second for ``--seconds`` seconds (open loop: each request
  starts at its scheduled time whatever the others do, at most ``--max-inflight`` at once),
  zh and en text queries of 1-3 words, a new combination each time (``--repeat-queries``: 20 fixed
  ones, as in an editor's session), through every route (visual + ocr, fused); latency counted
  from the scheduled start, so a stalled server cannot hide queueing (no coordinated omission);
* **memory**: the server's RSS every second.

Prints a table, writes ``bench/results/search_scale.json`` and plots
(``docs/benchmarks/search_latency.png``, ``docs/benchmarks/search_rss.png``).

    python bench/search_scale.py                       # ~8 min on 2 cores the first time, ~3 min cached
    python bench/search_scale.py --sizes 100000 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from machine import machine_info  # bench/machine.py
from vector_store import clustered_vectors  # bench/vector_store.py

from zhaopian.api.auth import create_key
from zhaopian.api.service import Service
from zhaopian.api.settings import Settings
from zhaopian.modules.text_module import TextSpan

ROOT = Path(__file__).resolve().parents[1]
PER_MEDIUM = 100
#: distinct on-screen lines the synthetic clips draw from
LINE_POOL = 50_000
#: latency percentiles are also reported without the first seconds (pages of the indexes read on first use)
WARM_SECONDS = 10.0
CLIP_SECONDS = 3.0
ZH = ["城市", "夜景", "海边", "日落", "咖啡", "早餐", "旅行", "火车", "飞机", "会议", "新闻", "天气", "足球", "比赛", "音乐", "演唱会", "学校", "医院", "超市", "限时", "优惠", "欢迎", "光临", "星际", "旅行", "第三集", "公园", "桥梁", "港口", "大学", "图书馆", "博物馆", "动物园", "熊猫", "猫", "狗", "汽车", "自行车", "雪山", "森林"]
EN = ["city", "night", "beach", "sunset", "coffee", "breakfast", "travel", "train", "plane", "meeting", "news", "weather", "football", "match", "music", "concert", "school", "hospital", "market", "sale", "welcome", "harbour", "bridge", "park", "library", "museum", "zoo", "panda", "cat", "dog", "car", "bike", "snow", "mountain", "forest", "fresh", "espresso", "morning", "episode"]
QUERIES = ["一只猫", "海边的日落", "城市夜景", "限时优惠", "欢迎光临", "熊猫", "雪山和森林", "足球比赛", "咖啡",
           "a cat on a sofa", "sunset at the beach", "harbour bridge", "fresh espresso", "a red car",
           "snow mountain", "football match", "concert", "a panda", "train station", "museum"]


def query_text(rng: random.Random, repeat: bool) -> str:
    """A search's text: one of the 20 QUERIES (``repeat``: an editor's session, whose repeated texts hit the
    query-embedding cache) or a new combination of 1-3 words every time (each query is embedded anew)."""
    if repeat:
        return rng.choice(QUERIES)
    words = rng.sample(ZH, rng.randint(1, 3)) if rng.random() < 0.5 else rng.sample(EN, rng.randint(1, 3))
    return ("" if words[0] in ZH else " ").join(words)


def text_line(rng: random.Random) -> str:
    words = rng.sample(ZH, rng.randint(2, 4)) if rng.random() < 0.6 else rng.sample(EN, rng.randint(3, 6))
    return ("" if words[0] in ZH else " ").join(words).strip()


# -- building ----------------------------------------------------------------------------------
def build(directory: Path, n: int) -> Path:
    """The library's data directory, built once (a ``.built`` marker says it is complete)."""
    marker = directory / ".built"
    if marker.exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    svc = Service(Settings(data_dir=directory, media_root=directory, threads=1))
    svc.create_library("scale", svc.default_config(modules=("visual", "ocr")))
    lib = svc.library("scale")
    lib.media.conn.execute("PRAGMA synchronous=OFF")  # a bulk load: no fsync per medium (the marker says done)
    visual, ocr = lib.modules["visual"], lib.modules["ocr"]
    space = visual.encoder.text_space
    vectors, _ = clustered_vectors(n, visual.encoder.spaces[space], clusters=max(64, n // 500), n_queries=1)
    rng = random.Random(0)
    # lines come from a pool, as on-screen text repeats in real footage (logos, lower thirds, titles)
    pool = [text_line(rng) for _ in range(LINE_POOL)]
    spans = [(i * CLIP_SECONDS, (i + 1) * CLIP_SECONDS, i * CLIP_SECONDS + 1) for i in range(PER_MEDIUM)]
    ready = []
    with lib.write_lock():
        store = visual._store(space)
        for m in range(n // PER_MEDIUM):
            media_id = lib.media.add_media(path=f"/synthetic/{m:07d}.mp4", kind="video", sha256=f"{m:064x}",
                                           size=1, duration=PER_MEDIUM * CLIP_SECONDS, width=640, height=360,
                                           title=f"clip {m}", recorded=1.7e9 + m)
            ids = lib.media.add_units(media_id, "visual", spans)
            store.add(np.asarray(ids, np.int64), vectors[m * PER_MEDIUM:(m + 1) * PER_MEDIUM])
            ocr.store(media_id, [TextSpan(a, b, rng.choice(pool)) for a, b, _ in spans])
            ready.append(media_id)
            if m % 1000 == 999:
                print(f"  {(m + 1) * PER_MEDIUM:,} units ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        visual._dirty.add(space)
        visual.flush()
        ocr.flush()
        lib.media.set_status(ready, "ready")
    kind = store.kind
    svc.close()
    marker.write_text(json.dumps({"n": n, "index": kind, "build_s": round(time.perf_counter() - t0, 1)}))
    return directory


# -- serving -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Server:
    def __init__(self, data_dir: Path, threads: int, workers: int = 0, media_root: Path | None = None) -> None:
        media_root = media_root or data_dir
        svc = Service(Settings(data_dir=data_dir, media_root=media_root))
        svc.catalog.ensure_tenant("default")
        self.key = create_key(svc.catalog, "default").key
        svc.close()
        self.port = free_port()
        env = {**os.environ, "ZHAOPIAN_DATA_DIR": str(data_dir), "ZHAOPIAN_MEDIA_ROOT": str(media_root),
               "ZHAOPIAN_THREADS": str(threads), "ZHAOPIAN_RATE_LIMIT": "0"}  # one key sends all the load
        exe = Path(sys.executable).with_name("zhaopian")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([str(exe), "serve", "--port", str(self.port), "--workers", str(workers),
                                      "--no-ui-key"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}/v1/libraries/scale/search"
        self.headers = {"Authorization": f"Bearer {self.key}"}

    def first_answer(self, timeout: float = 120) -> float:
        """Seconds from spawning the server to its first search answer."""
        with httpx.Client(timeout=30) as client:
            while time.perf_counter() - self.started < timeout:
                try:
                    r = client.post(self.url, json={"text": QUERIES[0], "top_k": 10}, headers=self.headers)
                    if r.status_code == 200:
                        return time.perf_counter() - self.started
                except httpx.TransportError:
                    pass
                time.sleep(0.02)
        raise RuntimeError("server did not answer")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


Request = tuple[str, str, dict]  # (kind, url, JSON body)


async def load(server: Server, qps: float, seconds: float, max_inflight: int, rss: list,
               request: Callable[[int], Request] | None = None, repeat: bool = False) -> dict:
    """``qps`` requests a second for ``seconds`` (by default searches; ``request(i)`` picks others)."""
    total = int(qps * seconds)
    gate = asyncio.Semaphore(max_inflight)
    latencies: list[tuple[float, float]] = []  # (scheduled offset, latency ms) of searches
    other_ms: dict[str, list[float]] = {}
    server_ms: list[float] = []
    errors: dict[str, int] = {}
    rng = random.Random(1)
    limits = httpx.Limits(max_connections=max_inflight, max_keepalive_connections=max_inflight)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        start = time.perf_counter()

        async def one(i: int) -> None:
            scheduled = start + i / qps
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            kind, url, body = request(i) if request else ("search", server.url,
                                                          {"text": query_text(rng, repeat), "top_k": 10})
            async with gate:
                try:
                    r = await client.post(url, json=body, headers=server.headers)
                    if r.status_code >= 300:
                        errors[f"{kind} {r.status_code}"] = errors.get(f"{kind} {r.status_code}", 0) + 1
                        return
                    if kind == "search":
                        server_ms.append(sum(r.json()["timings_ms"].values()))
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    return
            latency = (time.perf_counter() - scheduled) * 1000
            if kind == "search":
                latencies.append((scheduled - start, latency))
            else:
                other_ms.setdefault(kind, []).append(latency)

        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(1.0):
                rss.append((round(time.perf_counter() - start, 1), rss_mib(server.proc.pid)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        await asyncio.gather(*(one(i) for i in range(total)))
        stop.set()
        elapsed = time.perf_counter() - start
    ms = sorted(latency for _, latency in latencies)

    def pct(p: float) -> float:
        return round(ms[min(len(ms) - 1, int(p / 100 * len(ms)))], 1) if ms else float("nan")

    others = {kind: {"n": len(v), "p50_ms": round(statistics.median(v), 1)} for kind, v in other_ms.items()}
    warm = sorted(latency for t, latency in latencies if t >= WARM_SECONDS)

    def warm_pct(p: float) -> float:
        return round(warm[min(len(warm) - 1, int(p / 100 * len(warm)))], 1) if warm else float("nan")

    return {"requests": total, "ok": len(ms) + sum(len(v) for v in other_ms.values()), "others": others,
            "warm": {"p50_ms": warm_pct(50), "p95_ms": warm_pct(95), "p99_ms": warm_pct(99)},
            "errors": errors, "achieved_qps": round((len(ms) + sum(len(v) for v in other_ms.values())) / elapsed, 2),
            "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99), "max_ms": round(ms[-1], 1) if ms else None,
            "route_ms_sum_p50": round(statistics.median(server_ms), 1) if server_ms else None,
            "timeline": [(round(t, 2), round(v, 1)) for t, v in latencies]}


def run_size(n: int, args) -> dict:
    print(f"size {n:,}: building (cached after the first run)", file=sys.stderr)
    directory = build(args.cache_dir / f"scale-{n}", n)
    built = json.loads((directory / ".built").read_text())
    server = Server(directory, args.threads)
    try:
        cold = server.first_answer()
        rss: list = [(0.0, rss_mib(server.proc.pid))]
        result = asyncio.run(load(server, args.qps, args.seconds, args.max_inflight, rss,
                                  repeat=args.repeat_queries))
    finally:
        server.stop()
    result.update(size=n, repeat_queries=args.repeat_queries, index=built["index"], build_s=built["build_s"],
                  cold_start_s=round(cold, 2), rss_mib=rss, rss_mib_max=max((v for _, v in rss if v), default=None))
    return result


def plot(results: list[dict], qps: float, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 4))
    for r in results:
        t, v = zip(*r["timeline"], strict=True) if r["timeline"] else ((), ())
        ax.plot(t, v, ".", ms=3, label=f"{r['size']:,} vectors: p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms")
    ax.set(xlabel="seconds into the run", ylabel="latency (ms, from scheduled start)", yscale="log",
           title=f"HTTP search latency at {qps:g} requests/s (dashed: 100 ms)")
    ax.axhline(100, color="grey", lw=0.8, ls="--")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "search_latency.png", dpi=110)
    fig, ax = plt.subplots(figsize=(8, 3))
    for r in results:
        pts = [(t, v) for t, v in r["rss_mib"] if v]
        if pts:
            ax.plot(*zip(*pts, strict=True), label=f"{r['size']:,} vectors")
    ax.set(xlabel="seconds into the run", ylabel="server RSS (MiB)", title="server memory under load")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "search_rss.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--qps", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-inflight", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="ZHAOPIAN_THREADS of the server")
    parser.add_argument("--repeat-queries", action="store_true",
                        help="draw the texts from 20 fixed queries (cached embeddings) instead of new ones")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "zhaopian-bench")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "search_scale.json")
    parser.add_argument("--plots", type=Path, default=ROOT / "docs" / "benchmarks")
    args = parser.parse_args()
    results = [run_size(n, args) for n in args.sizes]
    print("| vectors + text lines | index | cold start | p50 | p95 | p99 | p50 / p95 / p99 after 10 s "
          "| achieved QPS | errors | RSS max |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        w = r["warm"]
        print(f"| {r['size']:,} | {r['index']} | {r['cold_start_s']} s | {r['p50_ms']} ms | {r['p95_ms']} ms | "
              f"{r['p99_ms']} ms | {w['p50_ms']} / {w['p95_ms']} / {w['p99_ms']} ms | {r['achieved_qps']} | "
              f"{sum(r['errors'].values())} | {r['rss_mib_max']:.0f} MiB |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine_info(), "qps": args.qps, "seconds": args.seconds,
                                     "results": results}, indent=1))
    plot(results, args.qps, args.plots)


if __name__ == "__main__":
    main()
