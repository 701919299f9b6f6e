"""Persistent ingestion jobs: one job per file, in a SQLite queue that the API, the CLI and the
worker processes share (``<data dir>/jobs.sqlite``).

A job is ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled``. Submitting a file
that already has a queued, running or finished job for the same content (size and mtime) returns
that job instead of a new one. A worker claims one job at a time, and only from a library no other
worker is writing to. A job whose worker died (its process is gone, or its heartbeat stopped) goes
back to the queue; the library removes the half-indexed medium when it reopens, so the job starts
that file again and nothing is indexed twice.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from zhaopian.search.catalog import _connect, transaction
from zhaopian.search.errors import NotFound, ZhaopianError

JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]
ACTIVE = ("queued", "running")
FINISHED = ("done", "failed", "cancelled")
#: a running job whose heartbeat is older than this (and whose worker is not a live local process) is requeued
STALE_SECONDS = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    library TEXT NOT NULL,
    path TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'queued',
    progress REAL NOT NULL DEFAULT 0,
    modules TEXT NOT NULL DEFAULT '{}',
    media_id INTEGER,
    outcome TEXT,
    error_code TEXT,
    error_message TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    heartbeat REAL,
    created REAL NOT NULL,
    started REAL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, id);
CREATE INDEX IF NOT EXISTS jobs_file ON jobs (tenant, library, path, id);
"""


class JobConflict(ZhaopianError):
    code = "job_conflict"


class JobError(BaseModel):
    code: str
    message: str


class Job(BaseModel):
    """An ingestion job as the API and the CLI show it."""

    id: int
    tenant: str
    library: str
    path: str
    status: JobStatus
    #: overall progress, 0..1 (the mean of the modules' progress)
    progress: float = 0.0
    #: progress per step: decode and each module, 0..1
    modules: dict[str, float] = Field(default_factory=dict)
    media_id: int | None = None
    #: what ingest did with the file: indexed, duplicate (same content already there) or replaced
    outcome: Literal["indexed", "duplicate", "replaced"] | None = None
    error: JobError | None = None
    attempts: int = 0
    cancel_requested: bool = False
    worker: str | None = None
    created: float
    started: float | None = None
    finished: float | None = None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


def fingerprint(path: Path) -> str:
    """What makes a re-submission of the same file a no-op: its size and modification time."""
    try:
        st = Path(path).stat()
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(worker: str | None) -> bool | None:
    """Whether a worker of this host is alive; None for another host's worker (only its heartbeat tells)."""
    if not worker:
        return False
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(int(pid))


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


class JobQueue:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "jobs.sqlite"
        self.conn = _connect(self.path)
        self.conn.executescript(_SCHEMA)

    def close(self) -> None:
        self.conn.close()

    # -- submitting ----------------------------------------------------------------------------
    def submit(self, tenant: str, library: str, path: Path | str, fresh: bool = False) -> tuple[Job, bool]:
        """Queue a file; returns (job, created). An active job for the file, or a done one for the same
        content, is returned as it is (idempotent re-submission); ``fresh`` skips the done one."""
        path = str(path)
        stamp = fingerprint(Path(path))
        with transaction(self.conn) as conn:
            row = conn.execute("SELECT * FROM jobs WHERE tenant=? AND library=? AND path=? ORDER BY id DESC LIMIT 1",
                               (tenant, library, path)).fetchone()
            if row is not None and (row["status"] in ACTIVE or (row["status"] == "done" and not fresh
                                                                 and row["fingerprint"] == stamp)):
                return _job(row), False
            cur = conn.execute("INSERT INTO jobs (tenant, library, path, fingerprint, created) VALUES (?, ?, ?, ?, ?)",
                               (tenant, library, path, stamp, time.time()))
            return _job(conn.execute("SELECT * FROM jobs WHERE id=?", (cur.lastrowid,)).fetchone()), True

    # -- reading -------------------------------------------------------------------------------
    def get(self, job_id: int, tenant: str | None = None) -> Job:
        row = self.conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None or (tenant is not None and row["tenant"] != tenant):
            raise NotFound(f"no job {job_id}")
        return _job(row)

    def list(self, tenant: str, library: str | None = None, status: str | None = None, offset: int = 0,
             limit: int = 100) -> tuple[list[Job], int]:
        """A page of a tenant's jobs, newest first, and how many there are in all."""
        where, args = ["tenant=?"], [tenant]
        if library:
            where.append("library=?")
            args.append(library)
        if status:
            where.append("status=?")
            args.append(status)
        clause = " AND ".join(where)
        total = self.conn.execute(f"SELECT COUNT(*) FROM jobs WHERE {clause}", args).fetchone()[0]
        rows = self.conn.execute(f"SELECT * FROM jobs WHERE {clause} ORDER BY id DESC LIMIT ? OFFSET ?",
                                 [*args, limit, offset]).fetchall()
        return [_job(r) for r in rows], total

    def counts(self, tenant: str | None = None) -> dict[str, int]:
        sql = "SELECT status, COUNT(*) FROM jobs" + (" WHERE tenant=?" if tenant else "") + " GROUP BY status"
        return {status: n for status, n in self.conn.execute(sql, (tenant,) if tenant else ())}

    # -- controlling ---------------------------------------------------------------------------
    def cancel(self, job_id: int, tenant: str | None = None) -> Job:
        """A queued job is cancelled at once; a running one when its worker next reports progress."""
        with transaction(self.conn) as conn:
            job = self.get(job_id, tenant)
            if job.status == "queued":
                conn.execute("UPDATE jobs SET status='cancelled', finished=? WHERE id=?", (time.time(), job_id))
            elif job.status == "running":
                conn.execute("UPDATE jobs SET cancel=1 WHERE id=?", (job_id,))
            else:
                raise JobConflict(f"job {job_id} is already {job.status}")
        return self.get(job_id)

    def retry(self, job_id: int, tenant: str | None = None) -> Job:
        """Queue a failed or cancelled job again."""
        with transaction(self.conn) as conn:
            job = self.get(job_id, tenant)
            if job.status not in ("failed", "cancelled"):
                raise JobConflict(f"job {job_id} is {job.status}; only failed or cancelled jobs can be retried")
            conn.execute("UPDATE jobs SET status='queued', cancel=0, progress=0, modules='{}', error_code=NULL, "
                         "error_message=NULL, outcome=NULL, media_id=NULL, worker=NULL, started=NULL, "
                         "finished=NULL, fingerprint=? WHERE id=?", (fingerprint(Path(job.path)), job_id))
        return self.get(job_id)

    def cancel_library(self, tenant: str, library: str) -> None:
        """The library is gone: its queued jobs are cancelled and its running ones asked to stop."""
        with transaction(self.conn) as conn:
            conn.execute("UPDATE jobs SET status='cancelled', finished=? WHERE tenant=? AND library=? "
                         "AND status='queued'", (time.time(), tenant, library))
            conn.execute("UPDATE jobs SET cancel=1 WHERE tenant=? AND library=? AND status='running'",
                         (tenant, library))

    # -- workers -------------------------------------------------------------------------------
    def claim(self, worker: str, job_ids: list[int] | None = None) -> Job | None:
        """Take the oldest queued job (of ``job_ids`` if given) of a library no other job is running in."""
        self.requeue_stale()
        only = f" AND id IN ({','.join('?' * len(job_ids))})" if job_ids else ""
        with transaction(self.conn) as conn:
            row = conn.execute(
                "SELECT * FROM jobs AS j WHERE status='queued'" + only + " AND NOT EXISTS (SELECT 1 FROM jobs AS r "
                "WHERE r.status='running' AND r.tenant=j.tenant AND r.library=j.library) ORDER BY id LIMIT 1",
                job_ids or ()).fetchone()
            if row is None:
                return None
            now = time.time()
            conn.execute("UPDATE jobs SET status='running', worker=?, attempts=attempts+1, started=?, heartbeat=?, "
                         "progress=0, modules='{}' WHERE id=?", (worker, now, now, row["id"]))
            return _job(conn.execute("SELECT * FROM jobs WHERE id=?", (row["id"],)).fetchone())

    def report(self, job_id: int, modules: dict[str, float]) -> bool:
        """Record a running job's progress (and that its worker lives); True when it should stop."""
        progress = sum(modules.values()) / len(modules) if modules else 0.0
        with transaction(self.conn) as conn:
            conn.execute("UPDATE jobs SET progress=?, modules=?, heartbeat=? WHERE id=? AND status='running'",
                         (round(progress, 4), json.dumps(modules), time.time(), job_id))
            row = conn.execute("SELECT cancel FROM jobs WHERE id=?", (job_id,)).fetchone()
        return bool(row and row["cancel"])

    def finish(self, job_id: int, status: JobStatus, *, media_id: int | None = None, outcome: str | None = None,
               error: JobError | None = None, modules: dict[str, float] | None = None) -> Job:
        with transaction(self.conn) as conn:
            conn.execute("UPDATE jobs SET status=?, media_id=?, outcome=?, error_code=?, error_message=?, finished=?, "
                         "progress=CASE WHEN ?='done' THEN 1 ELSE progress END, "
                         "modules=COALESCE(?, modules) WHERE id=?",
                         (status, media_id, outcome, error.code if error else None, error.message if error else None,
                          time.time(), status, json.dumps(modules) if modules is not None else None, job_id))
        return self.get(job_id)

    def requeue_stale(self, stale_seconds: float = STALE_SECONDS) -> list[int]:
        """Running jobs whose worker died go back to the queue (a cancelled one is marked cancelled)."""
        now = time.time()
        rows = self.conn.execute("SELECT id, worker, heartbeat, cancel FROM jobs WHERE status='running'").fetchall()
        dead = []
        for row in rows:
            # a live local worker still counts as dead when its heartbeat stopped (hung, or its pid reused)
            if _alive(row["worker"]) is False or now - (row["heartbeat"] or 0) > stale_seconds:
                dead.append(row)
        with transaction(self.conn) as conn:
            for row in dead:
                conn.execute("UPDATE jobs SET status=CASE WHEN cancel THEN 'cancelled' ELSE 'queued' END, worker=NULL, "
                             "finished=CASE WHEN cancel THEN ? ELSE NULL END WHERE id=? AND status='running' "
                             "AND worker IS ?", (now, row["id"], row["worker"]))
        return [row["id"] for row in dead]


def _job(row: sqlite3.Row) -> Job:
    error = JobError(code=row["error_code"], message=row["error_message"] or "") if row["error_code"] else None
    return Job(id=row["id"], tenant=row["tenant"], library=row["library"], path=row["path"], status=row["status"],
               progress=row["progress"], modules=json.loads(row["modules"] or "{}"), media_id=row["media_id"],
               outcome=row["outcome"], error=error, attempts=row["attempts"], cancel_requested=bool(row["cancel"]),
               worker=row["worker"], created=row["created"], started=row["started"], finished=row["finished"])
