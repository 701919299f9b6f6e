"""Ingest with 1 and 2 worker processes: the job queue's throughput on this machine.

The input is the bench's long video (``bench/ingest.py`` builds it once: real clips from packages,
letterboxed, looped to ``--long-minutes``) cut into ``--pieces`` files, split over two libraries
(a library has one writer at a time, so two workers help when two libraries have work). For
each worker count, a fresh data directory gets the jobs (``zhaopian index --queue``), then that
many ``zhaopian worker --drain`` processes run until the queue is empty. Reported: wall seconds,
real-time factor (video seconds / wall seconds), frames per second, and CPU cores busy. Wall time
includes starting each worker process and loading its models (a few seconds).

    python bench/workers.py                  # visual route (bundled encoder), ~4 min
    python bench/workers.py --modules visual,labels,ocr --pieces 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import av
from ingest import build_long_input  # bench/ingest.py
from machine import Clock, machine_info  # bench/machine.py

ROOT = Path(__file__).resolve().parents[1]


def cut(source: Path, pieces: int, folder: Path) -> list[Path]:
    """``source`` cut into ``pieces`` files of equal length (packets copied, no re-encoding)."""
    folder.mkdir(parents=True, exist_ok=True)
    if len(done := sorted(folder.glob("piece-*.mp4"))) == pieces:
        return done
    for old in done:
        old.unlink()
    with av.open(str(source)) as inp:
        stream = inp.streams.video[0]
        length = float(stream.duration * stream.time_base) if stream.duration else float(inp.duration / 1e6)
        bounds = [length * i / pieces for i in range(pieces + 1)]
        outs, files = [], []
        for i in range(pieces):
            path = folder / f"piece-{i}.mp4"
            out = av.open(str(path), "w")
            outs.append((out, out.add_stream_from_template(stream)))
            files.append(path)
        piece, first = 0, None
        for packet in inp.demux(stream):
            if packet.dts is None:
                continue
            t = float(packet.pts * stream.time_base) if packet.pts is not None else 0.0
            while piece < pieces - 1 and t >= bounds[piece + 1] and packet.is_keyframe:
                piece, first = piece + 1, None
            out, ostream = outs[piece]
            if first is None:
                first = packet.pts
            packet.pts -= first
            packet.dts -= first
            packet.stream = ostream
            out.mux(packet)
        for out, _ in outs:
            out.close()
    return files


def run(files: list[Path], workers: int, modules: str) -> dict:
    exe = Path(sys.executable).with_name("zhaopian")
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "ZHAOPIAN_DATA_DIR": data, "ZHAOPIAN_MEDIA_ROOT": str(files[0].parent),
               "ZHAOPIAN_THREADS": "1"}
        halves = [files[0::2], files[1::2]]
        for i, half in enumerate(halves):
            subprocess.run([exe, "library", "create", f"lib{i}", "--modules", modules], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            subprocess.run([exe, "index", *map(str, half), "--library", f"lib{i}", "--queue"], env=env,
                           check=True, stdout=subprocess.DEVNULL)
        with Clock() as clock:
            procs = [subprocess.Popen([exe, "worker", "--drain"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL) for _ in range(workers)]
            codes = [p.wait() for p in procs]
        jobs = json.loads(subprocess.run([exe, "jobs", "list", "--json"], env=env, check=True,
                                         capture_output=True, text=True).stdout)["items"]
    assert codes == [0] * workers and all(j["status"] == "done" for j in jobs), jobs
    return {"workers": workers, "wall_s": round(clock.wall, 1), "others_cores": clock.others_cores}


def seconds_of(path: Path) -> float:
    with av.open(str(path)) as c:
        return float(c.duration / 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", default="visual")
    parser.add_argument("--pieces", type=int, default=8)
    parser.add_argument("--long-minutes", type=float, default=4.0)
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "zhaopian-bench")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "workers.json")
    args = parser.parse_args()
    source = build_long_input(args.cache_dir, args.long_minutes, 1280, 720)
    files = cut(source, args.pieces, args.cache_dir / f"pieces-{args.pieces}")
    video_s = sum(seconds_of(f) for f in files)
    results = []
    for workers in (1, 2):
        r = run(files, workers, args.modules)
        r.update(rtf=round(video_s / r["wall_s"], 1), frames_per_s=round(video_s / r["wall_s"], 1))
        results.append(r)
        print(f"{workers} worker(s): {r['wall_s']} s for {video_s:.0f} s of video "
              f"= {r['rtf']}x real time (cores busy outside this script, the workers included: {r['others_cores']})")
    print(f"2 workers / 1 worker throughput: {results[0]['wall_s'] / results[1]['wall_s']:.2f}x")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine_info(), "modules": args.modules, "video_s": video_s,
                                     "results": results}, indent=1))


if __name__ == "__main__":
    main()
