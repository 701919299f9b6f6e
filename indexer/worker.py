"""The ingestion worker: claims jobs from the queue and indexes their files, reporting progress.

One worker runs one job at a time. Several workers (processes, or the API answering ``?wait=true``)
share the queue; the queue never gives two of them jobs of the same library at once, because a
library has one writer at a time anyway. A job's medium becomes visible to search (``ready``) in the
same step that flushes its stores, and the job is marked done only after that: a worker killed at
any point leaves a job that the next worker runs again from the start of that file.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from zhaopian.search.errors import NotFound, ZhaopianError
from zhaopian.search.library import Library

from .ingest import Ingestor
from .jobs import Job, JobError, JobQueue, worker_id

log = logging.getLogger("zhaopian.worker")

#: seconds between progress reports (each one also tells the queue the worker lives)
REPORT_SECONDS = 1.0


class JobCancelled(ZhaopianError):
    code = "cancelled"


OpenLibrary = Callable[[str, str], Library]


class Worker:
    def __init__(self, queue: JobQueue, open_library: OpenLibrary, media_roots: list[Path], *,
                 name: str | None = None, poll_seconds: float = 1.0, report_seconds: float = REPORT_SECONDS,
                 uploads: Path | None = None) -> None:
        self.queue = queue
        #: uploaded files live here; one that cannot be indexed is deleted, not kept
        self.uploads = uploads
        self.open_library = open_library
        self.media_roots = media_roots
        self.name = name or worker_id()
        self.poll_seconds = poll_seconds
        self.report_seconds = report_seconds

    def run(self, stop: threading.Event | None = None, *, drain: bool = False,
            on_job: Callable[[Job], None] | None = None) -> int:
        """Run jobs until ``stop`` is set (or, with ``drain``, until the queue has nothing this worker
        can take). Returns how many jobs it ran."""
        stop = stop or threading.Event()
        done = 0
        while not stop.is_set():
            job = self.queue.claim(self.name)
            if job is None:
                if drain and not self.queue.counts().get("queued"):
                    return done
                stop.wait(self.poll_seconds)
                continue
            finished = self.run_job(job)
            done += 1
            if on_job:
                on_job(finished)
        return done

    def run_these(self, job_ids: Iterable[int], on_progress: Callable[[Job], None] | None = None) -> list[Job]:
        """Run the given jobs here and now (waiting for those another worker already runs); their final state.
        ``on_progress`` sees each running job about once a second and each job this worker finishes."""
        ids = list(job_ids)
        while True:
            job = self.queue.claim(self.name, ids) if ids else None
            if job is not None:
                finished = self.run_job(job, on_progress)
                if on_progress:
                    on_progress(finished)
                continue
            jobs = [self.queue.get(i) for i in ids]
            if not any(j.active for j in jobs):
                return jobs
            if on_progress:
                for j in jobs:
                    if j.status == "running":
                        on_progress(j)
            time.sleep(self.poll_seconds)  # another worker has one, or its library is busy

    def run_job(self, job: Job, on_progress: Callable[[Job], None] | None = None) -> Job:
        """Index a claimed job's file; the job ends done, failed or cancelled."""
        progress: dict[str, float] = {}
        guard = threading.Lock()
        cancelled = threading.Event()
        stop_reporting = threading.Event()

        def on_step(step: str, fraction: float) -> None:
            with guard:
                progress[step] = round(fraction, 3)
            if cancelled.is_set():
                raise JobCancelled(f"job {job.id} was cancelled")

        def report() -> None:
            while not stop_reporting.wait(self.report_seconds):
                with guard:
                    snapshot = dict(progress)
                try:
                    if self.queue.report(job.id, snapshot):
                        cancelled.set()
                    if on_progress:
                        on_progress(self.queue.get(job.id))
                except Exception:  # a report that fails must not end the job; the next one may work
                    log.warning("progress report of job %s failed", job.id, exc_info=True)

        reporter = threading.Thread(target=report, name=f"job-{job.id}-report", daemon=True)
        reporter.start()
        try:
            return self._ingest(job, on_step, progress)
        finally:
            stop_reporting.set()
            reporter.join()

    def _ingest(self, job: Job, on_step: Callable[[str, float], None], progress: dict[str, float]) -> Job:
        try:
            library = self.open_library(job.tenant, job.library)
        except NotFound as exc:
            return self.queue.finish(job.id, "failed", error=JobError(code=exc.code, message=exc.message))
        try:
            [result] = Ingestor(library, self.media_roots, on_step=on_step).add([Path(job.path)])
        except Exception as exc:  # a bug, not bad input: the job fails with a trace in the log
            log.exception("job %s failed", job.id)
            return self.queue.finish(job.id, "failed", error=JobError(code="internal", message=str(exc)))
        if result.code == JobCancelled.code:
            return self.queue.finish(job.id, "cancelled", error=JobError(code=result.code, message=result.message))
        if result.status == "failed":
            if self.uploads is not None and Path(os.path.realpath(job.path)).is_relative_to(self.uploads.resolve()):
                Path(job.path).unlink(missing_ok=True)
            return self.queue.finish(job.id, "failed", error=JobError(code=result.code or "media_invalid",
                                                                     message=result.message))
        return self.queue.finish(job.id, "done", media_id=result.media_id, outcome=result.status,
                                 modules={step: 1.0 for step in progress})
