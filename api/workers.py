"""Worker processes: ``zhaopian worker`` and the workers ``zhaopian serve`` starts beside the API.

Each process has its own service (catalog, libraries, models) and runs jobs from the shared queue.
SIGTERM or Ctrl-C stops a worker after its current job; a worker killed outright leaves its job to
the next one (see ``indexer/jobs.py``). The supervisor restarts a worker process that dies; a worker
whose supervisor died (``kill -9`` of ``zhaopian serve``) stops after its current job.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import signal
import threading
from multiprocessing.context import SpawnProcess
from pathlib import Path

from zhaopian.indexer.watch import FolderWatcher

from .service import Service
from .settings import Settings

log = logging.getLogger("zhaopian.workers")


def _stop_on_signals(stop: threading.Event) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())


def _stop_with_parent(stop: threading.Event) -> None:
    """A worker a pool started stops after its job once the pool's process is gone, even killed outright
    (its pipe to the worker then closes): no worker outlives its supervisor."""
    parent = multiprocessing.parent_process()
    if parent is None:  # `zhaopian worker` itself
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        if not stop.is_set():
            log.warning("the process that started this worker is gone; stopping after the current job")
            stop.set()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def worker_main(drain: bool = False) -> int:
    """One worker process: run jobs until stopped (or, with ``drain``, until the queue is empty)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s[%(process)d] %(message)s")
    stop = threading.Event()
    _stop_on_signals(stop)
    _stop_with_parent(stop)
    service = Service(Settings())
    try:
        return service.worker().run(stop, drain=drain)
    finally:
        service.close()


class WorkerPool:
    """N worker processes kept running, plus the watched folders' scanners, until ``stop()``."""

    def __init__(self, processes: int, watch: list[FolderWatcher] | None = None) -> None:
        self.size = processes
        self.watchers = watch or []
        self._context = multiprocessing.get_context("spawn")  # no inherited threads, locks or models
        self._procs: list[SpawnProcess] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _spawn(self) -> SpawnProcess:
        proc = self._context.Process(target=worker_main, name="zhaopian-worker", daemon=False)
        proc.start()
        log.info("worker process %s started", proc.pid)
        return proc

    def start(self) -> WorkerPool:
        self._procs = [self._spawn() for _ in range(self.size)]
        self._thread = threading.Thread(target=self._supervise, name="worker-pool", daemon=True)
        self._thread.start()
        return self

    def _supervise(self) -> None:
        while not self._stop.wait(1.0):
            for watcher in self.watchers:
                try:
                    watcher.scan()
                except OSError as exc:
                    log.warning("cannot scan %s: %s", watcher.folder, exc)
            for i, proc in enumerate(self._procs):
                if not proc.is_alive() and not self._stop.is_set():
                    log.warning("worker process %s exited (%s); starting another", proc.pid, proc.exitcode)
                    self._procs[i] = self._spawn()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask every worker to stop after its job; kill those still busy after ``timeout``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: stop after the current job
        for proc in self._procs:
            proc.join(timeout)
            if proc.is_alive():
                proc.kill()  # its job goes back to the queue
                proc.join()

    def wait(self) -> None:
        """Block until SIGTERM or Ctrl-C, then stop."""
        done = threading.Event()
        _stop_on_signals(done)
        done.wait()
        self.stop()


def watchers(service: Service, folders: list[Path], library: str, tenant: str | None,
             interval: float) -> list[FolderWatcher]:
    lib = service.library(library, tenant, create=True)
    return [FolderWatcher(service.jobs, lib.record.tenant, lib.name, folder, interval) for folder in folders]
