"""Crash loop: ``kill -9`` workers mid-ingest, deleters mid-delete, compactions and the API server, again and
again, and check after every kill that no store is corrupt, every committed medium and edit is searchable
and nothing is indexed twice; at the end, that the unfinished work resumed and completed.

Library: the visual route (the tests' colour encoder, so a worker starts fast) plus ``ocr`` and
``meta`` (the tantivy text index), sampling 2 frames/s. Media: copies of the narrated test clip
(on-screen text keeps OCR busy for seconds) and short colour videos. When fewer than three files are
left to index, the loop removes three media first, so every round has work. Each round, in turn:

* server: ``zhaopian serve --workers 1`` (its own session, so its worker process is in its process
  group); HTTP requests register the files not indexed yet, then retitle media (PATCH), delete up to
  two and register files again, one request at a time, until the kill;
* compactor: the files not indexed yet are queued, ``zhaopian worker --drain`` runs beside
  ``zhaopian library compact`` (rebuilding every index of the library);
* deleter: the same worker beside a process deleting two media.

The kill comes, in alternate rounds, at a random moment 0.1-12 s after the worker claimed a job (about
one narrated clip's ingest), or the moment a save begins: after a random 0-6 s (none beside a
compaction, which saves soon after it starts) the loop polls the library's folder as fast as it can
and, when a temporary file of a FAISS write-then-rename (``.<name>.*.tmp``) or of a tantivy commit
(``text.tantivy/.tmp*``, a new segment file) appears, stops the round's processes (SIGSTOP), notes
which one holds the library's write lock (the writer) and kills them. "Inside a save" means such a file was still there after the kill. At a random moment
the server alone is killed first and what of its process group outlives it is recorded; then the
whole group is killed.

After every kill: every SQLite file passes ``integrity_check``; ``zhaopian doctor`` (no repair) finds
nothing; no two ready media share a path or content; every medium whose job is done is ready (unless
it was deleted) and is found first by a search for its title; every PATCH answered 2xx left its new
title and every DELETE answered 204 left its medium gone and not found by its title. At the end one
worker drains the queue, the removed files are queued again and drained: every file must be indexed
exactly once, with no job left.

    python bench/kill_loop.py                   # 30 rounds, ~3 min on 2 idle cores (no new round after --minutes 8)
    python bench/kill_loop.py --rounds 60 --minutes 30 --json kills.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the colour encoder and the media helpers

from machine import machine_info  # bench/machine.py
from media import BLUE, GREEN, RED, YELLOW, write_video

from zhaopian.api.auth import create_key
from zhaopian.api.doctor import Doctor
from zhaopian.api.service import Service
from zhaopian.api.settings import Settings

CONFIG = {"modules": {"visual": {"encoder": {"backend": "color_encoder:ColorEncoder"}}, "ocr": {}, "meta": {}},
          "sample_fps": 2}
KINDS = ("server", "compactor", "deleter")
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group(pgid: int) -> dict[int, str]:
    """The live (not zombie) processes of a process group: pid -> its command line."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
            if state != "Z" and int(pgrp) == pgid:
                found[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            pass
    return found


def role(command: str) -> str:
    """What a process of the server's group is, from its command line."""
    if "spawn_main" in command:
        return "server's worker"
    if "resource_tracker" in command:
        return "server's resource tracker"
    return "server"


def running_job(jobs_db: Path, pids: set[int]) -> tuple[float] | None:
    """``(progress,)`` of the job one of these processes runs (a tuple: progress 0 is a job too), or None."""
    conn = sqlite3.connect(f"file:{jobs_db}?mode=ro", uri=True, timeout=5)
    try:
        for worker, progress in conn.execute("SELECT worker, progress FROM jobs WHERE status='running'"):
            if (worker or "").rpartition(":")[2] in {str(p) for p in pids}:
                return (progress,)
    finally:
        conn.close()
    return None


def wait_running(jobs_db: Path, pids: set[int], main: subprocess.Popen, timeout: float = 60.0) -> bool:
    """Wait until one of these processes has claimed a job (or ``main`` exited); whether it has. (A job
    the previous round's killed worker held still says running until the next claim puts it back.)"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and main.poll() is None:
        try:
            if running_job(jobs_db, pids):
                return True
        except sqlite3.OperationalError:
            pass
        time.sleep(0.05)
    return False


def ingest_state(data: Path, pids: set[int]) -> str:
    """What was under way at the moment of a kill: the running job's progress, media mid-index or mid-delete."""
    parts = []
    try:
        if job := running_job(data / "jobs.sqlite", pids):
            parts.append(f"job at {job[0]:.0%}")
        for db in data.glob("libraries/*/media.sqlite"):
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            for status, n in conn.execute("SELECT status, COUNT(*) FROM media WHERE status != 'ready' GROUP BY status"):
                parts.append(f"{n} {status}")
            conn.close()
    except sqlite3.Error as exc:
        parts.append(f"unreadable: {exc}")
    return ", ".join(parts) or "idle"


# -- kills inside a save ---------------------------------------------------------------------------------
def files_of(lib_dir: Path) -> set[str]:
    """The library folder's file names, and its text index's as ``text.tantivy/<name>``."""
    names = set(os.listdir(lib_dir))
    if (lib_dir / "text.tantivy").is_dir():
        names |= {f"text.tantivy/{n}" for n in os.listdir(lib_dir / "text.tantivy")}
    return names


SEGMENT_FILE = re.compile(r"text\.tantivy/[0-9a-f]{32}\.\w+")


def save_files(names: set[str]) -> set[str]:
    """Which of these new names a save in progress writes: the temporary file of a write-then-rename
    (search/stores/files.py), or a tantivy commit's temporary files (``.tmp*``) and new segment files."""
    return {n for n in names if (n.startswith(".") and n.endswith(".tmp")) or n.startswith("text.tantivy/.tmp")
            or SEGMENT_FILE.fullmatch(n)}


def wait_save(lib_dir: Path, main: subprocess.Popen, timeout: float) -> str | None:
    """Poll the library folder as fast as Python can until a save begins (or ``main`` exits); the first
    file of it, or None."""
    before = files_of(lib_dir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and main.poll() is None:
        if new := save_files(files_of(lib_dir) - before):
            return min(new)
    return None


def unfinished_saves(lib_dir: Path, before: set[str]) -> list[str]:
    """After a kill: the temporary files still there and the new segment files no tantivy commit lists."""
    meta = lib_dir / "text.tantivy" / "meta.json"
    committed = {s["segment_id"].replace("-", "") for s in json.loads(meta.read_text())["segments"]} \
        if meta.is_file() else set()
    left = []
    for name in sorted(save_files(files_of(lib_dir) - before)):
        base = name.rpartition("/")[2]
        if base.startswith(".") or base.partition(".")[0] not in committed:
            left.append(name)
    return left


def lock_holder(lock_file: Path) -> int | None:
    """The process holding a library's write lock (a ``flock``), from /proc/locks."""
    try:
        inode = lock_file.stat().st_ino
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()  # "1: FLOCK ADVISORY WRITE <pid> <major:minor:inode> 0 EOF"; waiters say "->"
            if fields[1] == "FLOCK" and int(fields[5].rsplit(":", 1)[1]) == inode:
                return int(fields[4])
    except (OSError, ValueError, IndexError):
        pass
    return None


# -- the API server --------------------------------------------------------------------------------------
class Requests(threading.Thread):
    """HTTP requests to the server, one at a time until it dies: register the files not indexed yet, then
    retitle media (PATCH), delete up to two and register files again. Records what each answer said."""

    def __init__(self, port: int, key: str, register: list[str], names: list[str], round_no: int,
                 titles: dict[int, set[str]], rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.base = f"http://127.0.0.1:{port}/v1/libraries/crash"
        self.headers = {"Authorization": f"Bearer {key}"}
        self.register, self.names, self.round, self.rng = register, names, round_no, rng
        self.titles = titles  # media id -> the titles it may have now (one until a PATCH is unanswered)
        self.deleted: dict[int, str] = {}  # answered 204: media id -> its title
        self.asked_delete: set[int] = set()  # answered or not
        self.answers: Counter[str] = Counter()
        self.stop = threading.Event()

    def answer(self, kind: str, response: httpx.Response) -> httpx.Response:
        self.answers[f"{kind} {response.status_code}"] += 1
        return response

    def run(self) -> None:
        with httpx.Client(base_url=self.base, headers=self.headers, timeout=60) as http:
            try:
                for name in self.register:
                    self.answer("register", http.post("/media", json={"path": name}))
                edits = 0
                while not self.stop.wait(self.rng.uniform(0.05, 0.3)):
                    items = http.get("/media", params={"limit": 1000}).json()["items"]
                    pick = self.rng.random()
                    if pick < 0.2 or not items:
                        self.answer("register", http.post("/media", json={"path": self.rng.choice(self.names)}))
                    elif pick < 0.8 or len(self.asked_delete) >= 2:
                        medium, edits = self.rng.choice(items), edits + 1
                        title = f"retitled{self.round}x{edits}"
                        self.titles[medium["id"]] = {medium["title"], title}  # either, until it answers
                        if self.answer("patch", http.patch(f"/media/{medium['id']}", json={"title": title})).is_success:
                            self.titles[medium["id"]] = {title}
                    else:
                        medium = self.rng.choice(items)
                        self.asked_delete.add(medium["id"])
                        if self.answer("delete", http.delete(f"/media/{medium['id']}")).status_code == 204:
                            self.deleted[medium["id"]] = medium["title"]
            except httpx.TransportError:
                self.answers["no answer (server killed)"] += 1


def send(kind: str, procs: dict[str, subprocess.Popen], sig: int) -> None:
    """Signal a round's processes: the server's whole process group (the processes it started too)."""
    for proc in procs.values():
        try:
            if kind == "server":
                os.killpg(proc.pid, sig)
            elif proc.poll() is None:
                proc.send_signal(sig)
        except ProcessLookupError:
            pass


def start_server(env: dict, data: Path, media_root: Path) -> tuple[subprocess.Popen, int, str]:
    svc = Service(Settings(data_dir=data, media_root=media_root))
    key = create_key(svc.catalog, "default").key
    svc.close()
    port = free_port()
    exe = Path(sys.executable).with_name("zhaopian")
    server = subprocess.Popen([str(exe), "serve", "--workers", "1", "--port", str(port), "--no-ui-key"],
                              env={**env, "ZHAOPIAN_RATE_LIMIT": "0"}, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    return server, port, key


# -- checks ------------------------------------------------------------------------------------------------
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


def check(data: Path, media_root: Path, deleted: set[int], titles: dict[int, set[str]],
          gone: dict[int, str]) -> list[str]:
    """Violations of what a crash may never break. ``deleted``: media a deleter or a DELETE may have
    removed; ``titles``: what a PATCH may have left; ``gone``: media a DELETE answered 204 for."""
    problems = integrity(data)
    svc = Service(Settings(data_dir=data, media_root=media_root, threads=1))
    try:
        problems += [f"doctor: {f.where} {f.check}: {f.problem}" for f in Doctor(svc).run()]
        lib = svc.library("crash")
        ready = lib.media.list(0, 10_000)
        if len({m.path for m in ready}) != len(ready) or len({m.sha256 for m in ready}) != len(ready):
            problems.append("a file is indexed twice")
        ready_ids = {m.id: m for m in ready}
        jobs, _ = svc.jobs.list("default", "crash", "done", 0, 10_000)
        for job in jobs:
            if job.media_id not in ready_ids and job.media_id not in deleted:
                problems.append(f"job {job.id} is done but medium {job.media_id} is not ready")
        for m in ready:
            found = svc.search(m.title, library="crash", top_k=1, routes=["meta"])
            if not found or found[0].media_id != m.id:
                problems.append(f"medium {m.id} ({m.title}) is not found by its title")
        for media_id, may_be in titles.items():
            if media_id not in deleted and (media_id not in ready_ids or ready_ids[media_id].title not in may_be):
                problems.append(f"medium {media_id}: its edit to {sorted(may_be)} is lost")
        for media_id, title in gone.items():
            if lib.media.exists(media_id):
                problems.append(f"medium {media_id} was deleted (204) but is still there")
            if any(r.media_id == media_id for r in svc.search(title, library="crash", top_k=10, routes=["meta"])):
                problems.append(f"medium {media_id} was deleted (204) but is still found")
    finally:
        svc.close()
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--minutes", type=float, default=8.0, help="start no round after this (then the final drain)")
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
        lib_dir = svc.catalog.library_dir(svc.create_library("crash", CONFIG))
        lib_dir.mkdir(parents=True, exist_ok=True)
        svc.close()
        deleted_log = Path(tmp) / "deleted.jsonl"
        deleted_log.touch()
        rounds, violations = [], []
        titles: dict[int, set[str]] = {}  # what the PATCHes may have left
        gone: dict[int, str] = {}  # media a DELETE answered 204 for
        removed: set[int] = set()  # media a DELETE was sent for, answered or not, and those the loop removed
        for i in range(args.rounds):
            if time.perf_counter() - t0 > args.minutes * 60:
                break
            kind, at_save = KINDS[i % 3], i % 2 == 1
            svc = Service(Settings(data_dir=data, media_root=media_root))
            ready = svc.media(library="crash", limit=10_000)
            if len(ready) > len(files) - 3:  # little left to index: the loop itself removes three media
                for medium in rng.sample(ready, 3):
                    svc.delete_medium(medium.id, library="crash")
                    removed.add(medium.id)
            indexed = {m.path for m in svc.media(library="crash", limit=10_000)}
            todo = [f for f in files if str(f) not in indexed]
            if kind != "server":
                svc.submit(todo, "crash")
            before = svc.jobs.counts("default")
            svc.close()
            procs, client = {}, None
            if kind == "server":
                server, port, key = start_server(env, data, media_root)
                procs["server"] = server
                client = Requests(port, key, [f.name for f in todo], [f.name for f in files], i + 1, titles,
                                  random.Random(rng.random()))
                client.start()
            else:
                procs["worker"] = subprocess.Popen([str(exe), "worker", "--drain"], env=env,
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if kind == "compactor":  # compaction rewrites every store of the library
                procs["compactor"] = subprocess.Popen([str(exe), "library", "compact", "crash"], env=env,
                                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if kind == "deleter":
                procs["deleter"] = subprocess.Popen([sys.executable, "-c", DELETER, str(i), str(deleted_log)],
                                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            main_proc = next(iter(procs.values()))  # the server or the worker
            # pid -> what it is; the server's group: the server, its worker and multiprocessing's resource tracker
            members = ({p: role(c) for p, c in group(main_proc.pid).items()} if kind == "server" else
                       {p.pid: name for name, p in procs.items()})
            files_before = files_of(lib_dir)
            detail: dict = {"round": i + 1, "kind": kind, "timing": "save" if at_save else "random",
                            "jobs_before": before, "load_avg": round(os.getloadavg()[0], 2)}
            if at_save:
                # no waiting for a job: a deleter's saves come before the worker's first, and a compaction's
                # (at once, if it takes the write lock before the worker) too
                detail["after_s"] = round(delay := 0.0 if kind == "compactor" else rng.uniform(0.0, 6.0), 2)
                time.sleep(delay)
                trigger = wait_save(lib_dir, main_proc, timeout=30.0)
            else:
                detail["job_running"] = wait_running(data / "jobs.sqlite", set(members), main_proc,
                                                     timeout=20.0 if kind == "server" else 60.0)
                detail["after_s"] = round(delay := rng.uniform(0.1, 12.0), 2)
                time.sleep(delay)
            if at_save:  # freeze them where they are (a save under way stays under way), then look
                send(kind, procs, signal.SIGSTOP)
                holder = lock_holder(lib_dir / ".write.lock")  # the only process that may save now
                detail.update(save_file=trigger, writer=members.get(holder, holder))
            killed = []
            if kind == "server" and not at_save and server.poll() is None:  # the server alone: what outlives it?
                server.send_signal(signal.SIGKILL)
                server.wait()
                killed.append("server")
                time.sleep(0.2)
                detail["outlived_the_server"] = sorted(role(c) for c in group(server.pid).values())
            if kind == "server":
                killed += [r for r in map(role, group(server.pid).values()) if "tracker" not in r]
            else:
                killed = [name for name, proc in procs.items() if proc.poll() is None]
            send(kind, procs, signal.SIGKILL)
            for proc in procs.values():
                proc.wait()
            if at_save:
                detail["inside_save"] = unfinished_saves(lib_dir, files_before)
            state = ingest_state(data, set(members))  # read after the kill, so as not to delay it
            if client is not None:
                client.stop.set()
                client.join(60)
                gone |= client.deleted
                removed |= client.asked_delete
                detail["requests"] = dict(client.answers)
            deleted = {json.loads(line) for line in deleted_log.read_text().splitlines() if line.strip()}
            found = check(data, media_root, deleted | removed, titles, gone)
            violations += [f"round {i + 1}: {p}" for p in found]
            detail.update(killed=killed, at_kill=state, violations=found)
            rounds.append(detail)
            when = (f"at a save ({detail['save_file']} by {detail['writer']}; "
                    f"{'inside' if detail['inside_save'] else 'already done'})" if at_save and trigger else
                    "with no save seen" if at_save else f"{delay:.1f} s into a job")
            extra = f"; requests {detail['requests']}" if client else ""
            extra += f"; outlived the server: {detail['outlived_the_server']}" if "outlived_the_server" in detail else ""
            print(f"round {i + 1:2d} ({kind}): killed {', '.join(killed) or 'nothing (done already)'} {when}; "
                  f"at the kill: {state}{extra}; {'OK' if not found else found}", flush=True)
        # the work left resumes and completes
        subprocess.run([str(exe), "worker", "--drain"], env=env, capture_output=True, check=False)
        svc = Service(Settings(data_dir=data, media_root=media_root))
        indexed = {m.path for m in svc.media(library="crash", limit=10_000)}
        svc.submit([f for f in files if str(f) not in indexed], "crash")  # media the deleters removed
        svc.close()
        final = subprocess.run([str(exe), "worker", "--drain"], env=env, capture_output=True, check=False)
        deleted = {json.loads(line) for line in deleted_log.read_text().splitlines() if line.strip()}
        end_problems = check(data, media_root, deleted | removed, titles, gone)
        svc = Service(Settings(data_dir=data, media_root=media_root))
        ready = svc.media(library="crash", limit=10_000)
        counts = svc.jobs.counts("default")
        svc.close()
        if sorted(Path(m.path).name for m in ready) != sorted(f.name for f in files):
            end_problems.append("after the last drain not every file is indexed exactly once")
        if counts.get("queued") or counts.get("running") or counts.get("failed"):
            end_problems.append(f"jobs left unfinished: {counts}")
        garbage = unfinished_saves(lib_dir, set())  # what killed saves left that nothing uses or removes
    kills = Counter(name for r in rounds for name in r["killed"])
    saves = [r for r in rounds if r["timing"] == "save"]
    inside = sum(bool(r["inside_save"]) for r in saves)
    requests = sum((Counter(r.get("requests", {})) for r in rounds), Counter())
    loads = [r["load_avg"] for r in rounds]
    report = {"machine": machine_info(), "rounds": len(rounds), "kills": dict(kills), "save_rounds": len(saves),
              "kills_inside_a_save": inside, "requests": dict(requests), "violations": violations,
              "final": end_problems, "final_exit": final.returncode, "left_by_killed_saves": garbage,
              "media": len(files),
              "load_avg": {"min": min(loads), "max": max(loads)}, "seconds": round(time.perf_counter() - t0, 1),
              "detail": rounds}
    print(f"{len(rounds)} rounds: killed with SIGKILL {', '.join(f'{n} {k}' for k, n in sorted(kills.items()))}; "
          f"{inside} of {len(saves)} save-timed kills inside a save; HTTP answers {dict(requests)}; "
          f"{len(violations)} violations after kills; final state: {'OK' if not end_problems else end_problems} "
          f"({len(garbage)} unused files left by killed saves); "
          f"load average {min(loads)}-{max(loads)}; {report['seconds']} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    if violations or end_problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
