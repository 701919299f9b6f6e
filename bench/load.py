"""Load test on loopback: mixed search and ingest at 10 QPS for 5 minutes, then 50 QPS for 60 s.

The server (``zhaopian serve`` with one ingestion worker) holds the 100,000-clip library of
``bench/search_scale.py`` (built and cached there). One request in ten registers a new video
(``POST /v1/libraries/scale/media``, a short clip written just before into the media root; the
worker indexes it while searches go on); the rest are zh and en text searches. Requests start
at their scheduled time whatever the others do (open loop, at most ``--max-inflight`` at once)
and latency counts from that time. Recorded: error rate, search latency percentiles per phase,
the server's RSS every second, and how many of the registered clips were indexed by the end.

    python bench/load.py                       # ~7 min (after search_scale.py built the library)
    python bench/load.py --minutes 1 --burst-seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx
from machine import machine_info  # bench/machine.py
from search_scale import QUERIES, Server, build, load, rss_mib  # bench/search_scale.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from media import BLUE, GREEN, RED, YELLOW, write_video  # tests/media.py


def phase(server: Server, qps: float, seconds: float, incoming: Path, ingest_share: float, max_inflight: int,
          seed: int) -> dict:
    rng = random.Random(seed)
    palette = [RED, GREEN, BLUE, YELLOW]
    media_url = server.url.rsplit("/", 1)[0] + "/media"

    def request(i: int):
        if rng.random() < ingest_share:
            clip = write_video(incoming / f"load-{seed}-{i}.mp4", [(rng.choice(palette), 2), (rng.choice(palette), 2)])
            return "ingest", media_url, {"path": str(clip.relative_to(incoming.parent))}
        return "search", server.url, {"text": rng.choice(QUERIES), "top_k": 10}

    rss: list = [(0.0, rss_mib(server.proc.pid))]
    result = asyncio.run(load(server, qps, seconds, max_inflight, rss, request))
    n = result["requests"]
    result.update(qps=qps, seconds=seconds, error_rate=round(sum(result["errors"].values()) / n, 4) if n else 0.0,
                  rss_mib=rss, rss_mib_max=max((v for _, v in rss if v), default=None))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--qps", type=float, default=10.0)
    parser.add_argument("--burst-qps", type=float, default=50.0)
    parser.add_argument("--burst-seconds", type=float, default=60.0)
    parser.add_argument("--ingest-share", type=float, default=0.1)
    parser.add_argument("--max-inflight", type=int, default=64)
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "zhaopian-bench")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "load.json")
    args = parser.parse_args()
    directory = build(args.cache_dir / f"scale-{args.size}", args.size)
    incoming = args.cache_dir / "load-media" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    server = Server(directory, threads=1, workers=1, media_root=incoming.parent)
    try:
        cold = server.first_answer()
        steady = phase(server, args.qps, args.minutes * 60, incoming, args.ingest_share, args.max_inflight, 1)
        burst = phase(server, args.burst_qps, args.burst_seconds, incoming, args.ingest_share, args.max_inflight, 2)
        time.sleep(5)
        with httpx.Client(timeout=30) as client:
            jobs = client.get(server.url.split("/libraries")[0] + "/jobs?limit=1000", headers=server.headers).json()
    finally:
        server.stop()
    done = sum(j["status"] == "done" for j in jobs["items"])
    report = {"machine": machine_info(), "size": args.size, "cold_start_s": round(cold, 2),
              "phases": {"steady": steady, "burst": burst},
              "ingest_jobs": {"submitted": jobs["total"], "done": done,
                              "failed": sum(j["status"] == "failed" for j in jobs["items"])}}
    for name, r in report["phases"].items():
        print(f"{name}: {r['qps']:g} QPS for {r['seconds']:g} s: {r['requests']} requests, error rate "
              f"{r['error_rate']:.2%} {r['errors'] or ''}; search p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms, "
              f"p99 {r['p99_ms']} ms; ingest requests {r['others']}; RSS max {r['rss_mib_max']:.0f} MiB")
    print(f"ingest jobs: {report['ingest_jobs']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
