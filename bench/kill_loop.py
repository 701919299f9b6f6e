"""Crash loop: ``kill -9`` workers mid-ingest, deleters mid-delete and compactions, again and again, and check
after every kill that no store is corrupt, every committed medium is searchable and nothing is
indexed twice; at the end, that the unfinished work resumed and completed.

Library: the visual route (the tests' colour encoder, so a worker starts fast) plus ``ocr`` and
``meta`` (the tantivy text index), sampling 2 frames/s. Media: copies of the narrated test clip
(on-screen text keeps OCR busy for seconds) and short colour videos. Each round:

1. queue the files that are not indexed yet (idempotent: queued or done files give their job);
2. start ``zhaopian worker --drain`` and, in one round of three each, a process deleting two media
   or ``zhaopian library compact`` (rebuilding every index of the library);
3. once the worker runs a job, after a random 0.1-12 s (about one narrated clip's ingest), SIGKILL them (what was under way is recorded);
4. check: every SQLite file passes ``integrity_check``; ``zhaopian doctor`` (no repair) finds
   nothing; no two ready media share a path or content; every medium whose job is done is ready
   (unless a deleter was told to delete it) and is found first by a search for its title.

    python bench/kill_loop.py                   # 20 rounds, ~6 min on 2 cores
    python bench/kill_loop.py --rounds 50 --json kills.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the colour encoder and the media helpers

from machine import machine_info  # bench/machine.py
from media import BLUE, GREEN, RED, YELLOW, write_video

from zhaopian.api.doctor import Doctor
from zhaopian.api.service import Service
from zhaopian.api.settings import Settings

CONFIG = {"modules": {"visual": {"encoder": {"backend": "color_encoder:ColorEncoder"}}, "ocr": {}, "meta": {}},
          "sample_fps": 2}
DELETER = """
import json, random, sys
from zhaopian.api.service import Service
svc = Service()
ids = [m.id for m in svc.media(library="crash", limit=1000)]
random.seed(int(sys.argv[1]))
for media_id in random.sample(ids, min(2, len(ids))):
    with open(sys.argv[2], "a") as log:
        log.write(json.dumps(media_id) + "\\n")
        log.flush()
    svc.delete_medium(media_id, library="crash")
"""


def make_media(folder: Path, narrated: int, colours: int, seed: int) -> list[Path]:
    """Short colour clips first (quick jobs: kills land in writes and flushes too), then narrated copies."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    palette = [RED, GREEN, BLUE, YELLOW]
    for i in range(colours):
        shots = [(rng.choice(palette), rng.uniform(1, 4)) for _ in range(rng.randint(2, 4))]
        files.append(write_video(folder / f"colour{i}.mp4", shots))
    source = ROOT / "tests" / "data" / "narrated.mp4"
    for i in range(narrated):
        path = folder / f"narrated{i}.mp4"
        shutil.copy(source, path)
        with open(path, "ab") as fh:  # other bytes, same pictures: a different medium
            fh.write(os.urandom(16))
        files.append(path)
    return files


def wait_running(jobs_db: Path, worker: subprocess.Popen, timeout: float = 60.0) -> bool:
    """Wait until this worker process has claimed a job (or exited); whether it has. (A job the previous
    round's killed worker held still says running until the next claim puts it back in the queue.)"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and worker.poll() is None:
        try:
            conn = sqlite3.connect(f"file:{jobs_db}?mode=ro", uri=True, timeout=5)
            try:
                if conn.execute("SELECT 1 FROM jobs WHERE status='running' AND worker LIKE ?",
                                (f"%:{worker.pid}",)).fetchone():
                    return True
            finally:
                conn.close()
        except sqlite3.OperationalError:
            pass
        time.sleep(0.05)
    return False


def ingest_state(data: Path, worker: subprocess.Popen) -> str:
    """What was under way at the moment of a kill: the running job's progress, media mid-index or mid-delete."""
    parts = []
    try:
        conn = sqlite3.connect(f"file:{data / 'jobs.sqlite'}?mode=ro", uri=True, timeout=5)
        row = conn.execute("SELECT progress FROM jobs WHERE status='running' AND worker LIKE ?",
                           (f"%:{worker.pid}",)).fetchone()
        conn.close()
        if row:
            parts.append(f"job at {row[0]:.0%}")
        for db in data.glob("libraries/*/media.sqlite"):
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            for status, n in conn.execute("SELECT status, COUNT(*) FROM media WHERE status != 'ready' GROUP BY status"):
                parts.append(f"{n} {status}")
            conn.close()
    except sqlite3.Error as exc:
        parts.append(f"unreadable: {exc}")
    return ", ".join(parts) or "idle"


def integrity(data: Path) -> list[str]:
    bad = []
    for path in [data / "catalog.sqlite", data / "jobs.sqlite", *data.glob("libraries/*/media.sqlite")]:
        if path.is_file():
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                if (result := conn.execute("PRAGMA integrity_check").fetchone()[0]) != "ok":
                    bad.append(f"{path.name}: {result}")
            finally:
                conn.close()
    return bad


def check(data: Path, media_root: Path, deleted: set[int]) -> list[str]:
    """Violations of what a crash may never break."""
    problems = integrity(data)
    svc = Service(Settings(data_dir=data, media_root=media_root, threads=1))
    try:
        problems += [f"doctor: {f.where} {f.check}: {f.problem}" for f in Doctor(svc).run()]
        lib = svc.library("crash")
        ready = lib.media.list(0, 10_000)
        if len({m.path for m in ready}) != len(ready) or len({m.sha256 for m in ready}) != len(ready):
            problems.append("a file is indexed twice")
        ready_ids = {m.id for m in ready}
        jobs, _ = svc.jobs.list("default", "crash", "done", 0, 10_000)
        for job in jobs:
            if job.media_id not in ready_ids and job.media_id not in deleted:
                problems.append(f"job {job.id} is done but medium {job.media_id} is not ready")
        for m in ready:
            found = svc.search(m.title, library="crash", top_k=1, routes=["meta"])
            if not found or found[0].media_id != m.id:
                problems.append(f"medium {m.id} ({m.title}) is not found by its title")
    finally:
        svc.close()
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--narrated", type=int, default=2)
    parser.add_argument("--colours", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "kill_loop.json")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    exe = Path(sys.executable).with_name("zhaopian")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data, media_root = Path(tmp) / "data", Path(tmp) / "media"
        files = make_media(media_root, args.narrated, args.colours, args.seed)
        env = {**os.environ, "ZHAOPIAN_DATA_DIR": str(data), "ZHAOPIAN_MEDIA_ROOT": str(media_root),
               "ZHAOPIAN_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}
        svc = Service(Settings(data_dir=data, media_root=media_root))
        svc.create_library("crash", CONFIG)
        svc.close()
        deleted_log = Path(tmp) / "deleted.jsonl"
        deleted_log.touch()
        rounds, violations = [], []
        for i in range(args.rounds):
            svc = Service(Settings(data_dir=data, media_root=media_root))
            indexed = {m.path for m in svc.media(library="crash", limit=10_000)}
            svc.submit([f for f in files if str(f) not in indexed], "crash")
            before = svc.jobs.counts("default")
            svc.close()
            procs = {"worker": subprocess.Popen([str(exe), "worker", "--drain"], env=env,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)}
            if i % 3 == 1:  # compaction rewrites every store of the library
                procs["compactor"] = subprocess.Popen([str(exe), "library", "compact", "crash"], env=env,
                                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if i % 3 == 2:
                procs["deleter"] = subprocess.Popen([sys.executable, "-c", DELETER, str(i), str(deleted_log)],
                                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # kill while a job runs (not while the worker is still starting), after a random moment
            running = wait_running(data / "jobs.sqlite", procs["worker"])
            delay = rng.uniform(0.1, 12.0)
            time.sleep(delay)
            state = ingest_state(data, procs["worker"])
            killed = []
            for name, proc in procs.items():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    killed.append(name)
                proc.wait()
            deleted = {json.loads(line) for line in deleted_log.read_text().splitlines() if line.strip()}
            found = check(data, media_root, deleted)
            violations += [f"round {i + 1}: {p}" for p in found]
            rounds.append({"round": i + 1, "after_s": round(delay, 2), "killed": killed, "jobs_before": before,
                           "job_running": running, "at_kill": state, "violations": found})
            print(f"round {i + 1:2d}: killed {', '.join(killed) or 'nothing (done already)'} {delay:.1f} s into a "
                  f"job; at the kill: {state}; {'OK' if not found else found}", flush=True)
        # the work left resumes and completes
        subprocess.run([str(exe), "worker", "--drain"], env=env, capture_output=True, check=False)
        svc = Service(Settings(data_dir=data, media_root=media_root))
        indexed = {m.path for m in svc.media(library="crash", limit=10_000)}
        svc.submit([f for f in files if str(f) not in indexed], "crash")  # media the deleters removed
        svc.close()
        final = subprocess.run([str(exe), "worker", "--drain"], env=env, capture_output=True, check=False)
        deleted = {json.loads(line) for line in deleted_log.read_text().splitlines() if line.strip()}
        end_problems = check(data, media_root, deleted)
        svc = Service(Settings(data_dir=data, media_root=media_root))
        ready = svc.media(library="crash", limit=10_000)
        counts = svc.jobs.counts("default")
        svc.close()
        if sorted(Path(m.path).name for m in ready) != sorted(f.name for f in files):
            end_problems.append("after the last drain not every file is indexed exactly once")
        if counts.get("queued") or counts.get("running") or counts.get("failed"):
            end_problems.append(f"jobs left unfinished: {counts}")
    worker_kills = sum("worker" in r["killed"] for r in rounds)
    deleter_kills = sum("deleter" in r["killed"] for r in rounds)
    compactor_kills = sum("compactor" in r["killed"] for r in rounds)
    report = {"machine": machine_info(), "rounds": args.rounds, "worker_kills": worker_kills,
              "deleter_kills": deleter_kills, "compactor_kills": compactor_kills, "violations": violations, "final": end_problems,
              "final_exit": final.returncode, "media": len(files), "seconds": round(time.perf_counter() - t0, 1),
              "detail": rounds}
    print(f"{args.rounds} rounds: {worker_kills} workers, {deleter_kills} deleters and {compactor_kills} "
          f"compactions killed with SIGKILL; "
          f"{len(violations)} violations after kills; final state: {'OK' if not end_problems else end_problems} "
          f"({report['seconds']} s)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    if violations or end_problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
