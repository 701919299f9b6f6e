"""Ingestion jobs: the queue's rules, workers, cancel and retry, watch folders, and a worker killed
with SIGKILL mid-ingest whose job the next worker completes with nothing lost or duplicated."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import COLOR_LIBRARY
from media import BLUE, GREEN, RED, write_image, write_video

from zhaopian.api.service import Service
from zhaopian.api.settings import Settings
from zhaopian.indexer.jobs import JobConflict, JobQueue
from zhaopian.indexer.watch import FolderWatcher
from zhaopian.search.errors import NotFound

NARRATED = Path(__file__).parent / "data" / "narrated.mp4"


@pytest.fixture
def queue(tmp_path: Path):
    q = JobQueue(tmp_path / "data")
    yield q
    q.close()


def wait_for(predicate, timeout: float = 60.0, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(step)
    raise AssertionError("timed out waiting")


# -- the queue -------------------------------------------------------------------------------------
def test_submission_is_idempotent_until_the_file_changes(queue, media_root):
    clip = write_image(media_root / "a.png", RED)
    first, created = queue.submit("t", "lib", clip)
    assert created and first.status == "queued"
    again, created = queue.submit("t", "lib", clip)
    assert (again.id, created) == (first.id, False)
    claimed = queue.claim("w:1")
    queue.finish(claimed.id, "done", media_id=7, outcome="indexed")
    assert queue.submit("t", "lib", clip)[0].id == first.id  # done, same content
    assert queue.submit("t", "other", clip)[1]  # another library is another job
    os.utime(clip, ns=(1, 1))
    changed, created = queue.submit("t", "lib", clip)
    assert created and changed.id != first.id  # the file changed: index it again


def test_claim_takes_oldest_and_never_two_jobs_of_one_library(queue, media_root):
    a, b, c = (write_image(media_root / f"{n}.png", RED) for n in "abc")
    ja = queue.submit("t", "one", a)[0]
    jb = queue.submit("t", "one", b)[0]
    jc = queue.submit("t", "two", c)[0]
    assert queue.claim("w:1").id == ja.id
    assert queue.claim("w:2").id == jc.id  # library "one" is busy, so the next free one
    assert queue.claim("w:3") is None
    queue.finish(ja.id, "done")
    assert queue.claim("w:1").id == jb.id
    assert queue.claim("w:4", job_ids=[ja.id]) is None  # only queued jobs of the given ids


def test_cancel_and_retry_rules(queue, media_root):
    clip = write_image(media_root / "a.png", RED)
    job = queue.submit("t", "lib", clip)[0]
    assert queue.cancel(job.id, "t").status == "cancelled"
    with pytest.raises(JobConflict):
        queue.cancel(job.id, "t")
    assert queue.retry(job.id, "t").status == "queued"
    running = queue.claim("w:1")
    assert queue.cancel(running.id, "t").cancel_requested  # a running job is asked to stop
    assert queue.report(running.id, {"decode": 0.5}) is True
    with pytest.raises(JobConflict):
        queue.retry(running.id, "t")
    with pytest.raises(NotFound):
        queue.get(job.id, "another-tenant")
    with pytest.raises(NotFound):
        queue.cancel(job.id, "another-tenant")


def test_jobs_of_dead_workers_go_back_to_the_queue(queue, media_root):
    a, b = (write_image(media_root / f"{n}.png", RED) for n in "ab")
    ja = queue.submit("t", "one", a)[0]
    jb = queue.submit("t", "two", b)[0]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = f"{socket.gethostname()}:{os.getpid()}"  # this process
    assert [queue.claim(alive).id, queue.claim(alive).id] == [ja.id, jb.id]
    assert queue.requeue_stale() == []
    queue.conn.execute("UPDATE jobs SET worker=? WHERE id=?", (f"{socket.gethostname()}:{dead.pid}", ja.id))
    assert queue.requeue_stale() == [ja.id]  # its process is gone
    assert queue.get(ja.id).status == "queued" and queue.get(jb.id).status == "running"
    queue.conn.execute("UPDATE jobs SET heartbeat=0 WHERE id=?", (jb.id,))
    assert queue.requeue_stale() == [jb.id]  # a live pid whose heartbeat stopped counts as dead too


# -- workers, through the service ------------------------------------------------------------------
@pytest.fixture
def clips(service, media_root):
    service.create_library("clips", COLOR_LIBRARY)
    return {
        "a": write_video(media_root / "a.mp4", [(RED, 2), (GREEN, 2)]),
        "b": write_video(media_root / "b.mp4", [(BLUE, 3)]),
        "bad": (media_root / "bad.mp4", (media_root / "bad.mp4").write_bytes(b"\0" * 64))[0],
    }


def test_worker_runs_queued_jobs_with_progress_and_outcomes(service, clips):
    jobs = service.submit(clips.values(), "clips")
    assert [j.status for j in jobs] == ["queued"] * 3
    seen = []
    ran = service.worker().run(drain=True, on_job=seen.append)
    assert ran == 3
    by_name = {Path(j.path).name: j for j in seen}
    assert by_name["a.mp4"].status == "done" and by_name["a.mp4"].outcome == "indexed"
    assert by_name["a.mp4"].progress == 1.0 and set(by_name["a.mp4"].modules) == {"decode", "visual"}
    assert by_name["bad.mp4"].status == "failed" and by_name["bad.mp4"].error.code == "media_invalid"
    found = service.search("blue", library="clips", top_k=1)
    assert found[0].video.endswith("b.mp4")
    # nothing to do a second time
    assert [j.id for j in service.submit(clips.values(), "clips")][:2] == [j.id for j in jobs][:2]
    assert service.worker().run(drain=True) == 1  # only the failed file is submitted anew


def test_a_search_process_sees_what_a_worker_process_indexed(service, clips, env):
    """The API process keeps its library open; a worker in another process adds media."""
    service.submit([clips["a"]], "clips")
    service.worker().run(drain=True)
    assert service.search("red", library="clips")[0].video.endswith("a.mp4")
    other = Service(Settings())  # another process's view, with its own open library
    other.submit([clips["b"]], "clips")
    other.worker().run(drain=True)
    other.close()
    assert service.search("blue", library="clips", top_k=1)[0].video.endswith("b.mp4")


def test_cancel_a_running_job_keeps_nothing_of_it(service, media_root):
    service.create_library("slow", {**COLOR_LIBRARY, "sample_fps": 5})
    long = write_video(media_root / "long.mp4", [(RED, 30), (BLUE, 30)])
    [job] = service.submit([long], "slow")
    worker = service.worker()
    worker.report_seconds = 0.05
    progress = []
    thread = threading.Thread(target=lambda: worker.run_these([job.id], progress.append))
    thread.start()
    wait_for(lambda: any(p.status == "running" and p.progress > 0 for p in progress))
    service.jobs.cancel(job.id)
    thread.join(60)
    final = service.jobs.get(job.id)
    assert final.status == "cancelled" and final.error.code == "cancelled"
    lib = service.library("slow")
    assert lib.media.count() == 0 and lib.media.unfinished() == []
    assert service.jobs.retry(job.id).status == "queued"
    [again] = service.run_jobs([final])
    assert again.status == "done" and lib.media.count() == 1


def test_watch_folder_queues_files_once_they_stop_changing(service, media_root):
    service.create_library("inbox", COLOR_LIBRARY)
    inbox = media_root / "inbox"
    inbox.mkdir()
    watcher = FolderWatcher(service.jobs, "default", "inbox", inbox)
    assert watcher.scan() == []
    clip = write_video(inbox / "new.mp4", [(RED, 2)])
    (inbox / ".partial.mp4").write_bytes(b"...")  # hidden: a download in progress
    (inbox / "notes.txt").write_text("not media")
    assert watcher.scan() == []  # seen once: it may still be growing
    [job] = watcher.scan()  # unchanged since: queued
    assert Path(job.path) == clip and job.library == "inbox"
    assert watcher.scan() == []
    with open(clip, "ab") as fh:  # still being written to
        fh.write(b"\0")
    assert watcher.scan() == []


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's new parent may never reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_workers_of_a_server_killed_outright_stop(env):
    """``kill -9`` of the process that runs a WorkerPool (``zhaopian serve``): its workers do not live on."""
    script = ("import time\n"
              "from zhaopian.api.workers import WorkerPool\n"
              "pool = WorkerPool(1).start()\n"
              "print(pool._procs[0].pid, flush=True)\n"
              "time.sleep(600)\n")
    server = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        worker = int(server.stdout.readline())
        wait_for(lambda: (env / "jobs.sqlite").exists())  # the worker has opened its service
        time.sleep(0.5)
        server.send_signal(signal.SIGKILL)
        server.wait()
        wait_for(lambda: not _running(worker), timeout=30)
    finally:
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        server.stdout.close()


# -- SIGKILL mid-ingest ----------------------------------------------------------------------------
def _worker_process(env_vars: dict[str, str]) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("zhaopian")
    return subprocess.Popen([str(exe), "worker", "--drain"], env=env_vars, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _units(service: Service, library: str) -> dict[str, list[tuple[float, float]]]:
    lib = service.library(library)
    rows = lib.media.conn.execute("SELECT module, start, end FROM units ORDER BY module, start, end").fetchall()
    spans: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        spans.setdefault(row["module"], []).append((round(row["start"], 2), round(row["end"], 2)))
    return spans


@pytest.mark.slow
def test_sigkill_mid_ingest_then_restart_completes_without_duplicates_or_losses(tmp_path, media_root):
    config = {"modules": {"visual": {"encoder": {"backend": "color_encoder:ColorEncoder"}}, "ocr": {}},
              "sample_fps": 2}
    first = write_video(media_root / "first.mp4", [(RED, 2), (GREEN, 2)])
    narrated = media_root / "narrated.mp4"
    shutil.copy(NARRATED, narrated)
    last = write_video(media_root / "last.mp4", [(BLUE, 2)])
    env_vars = {**os.environ, "ZHAOPIAN_DATA_DIR": str(tmp_path / "data"), "ZHAOPIAN_MEDIA_ROOT": str(media_root),
                "ZHAOPIAN_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    settings = Settings(data_dir=tmp_path / "data", media_root=media_root)
    service = Service(settings)
    service.create_library("news", config)
    jobs = service.submit([first, narrated, last], "news")

    worker = _worker_process(env_vars)
    try:
        # kill it once the first file is done and the long one is well under way
        wait_for(lambda: service.jobs.get(jobs[0].id).status == "done", timeout=120)
        wait_for(lambda: service.jobs.get(jobs[1].id).progress > 0.3, timeout=120)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    done_first = service.jobs.get(jobs[0].id)
    killed = service.jobs.get(jobs[1].id)
    assert killed.status == "running" and killed.progress < 1.0  # it died mid-file
    assert service.library("news").media.unfinished()  # and left a half-indexed medium

    restarted = _worker_process(env_vars)
    assert restarted.wait(timeout=300) == 0, restarted.stderr.read()
    final = [service.jobs.get(j.id) for j in jobs]
    assert [j.status for j in final] == ["done"] * 3
    assert final[0].attempts == 1 and final[0].finished == done_first.finished  # finished work not redone
    assert final[1].attempts == 2 and final[2].attempts == 1

    lib = service.library("news")
    lib.refresh()
    assert lib.media.unfinished() == []
    paths = sorted(Path(m.path).name for m in lib.media.list())
    assert paths == ["first.mp4", "last.mp4", "narrated.mp4"]  # each once
    # nothing lost: the same units as one uninterrupted ingest of the same files
    reference = Service(Settings(data_dir=tmp_path / "reference", media_root=media_root))
    reference.create_library("news", config)
    reference.index([first, narrated, last], "news")
    assert _units(service, "news") == _units(reference, "news")
    # and every unit of the visual route is in its vector store exactly once
    store_ids = np.sort(lib.modules["visual"]._store("joint").ids())
    unit_ids = lib.media.unit_ids([m.id for m in lib.media.list()], "visual")
    assert store_ids.tolist() == sorted(unit_ids)
    hits = service.search('"harbour"', library="news", top_k=1)
    assert hits and hits[0].video.endswith("narrated.mp4")
    reference.close()
    service.close()
