"""Watch-folder mode: files that appear in a folder become ingestion jobs once they stop growing.

Polling, not file-system events: it works the same on network shares and container volumes, and a
file still being copied (its size or time still changing) waits for the next look.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from .ingest import MEDIA_SUFFIXES
from .jobs import Job, JobQueue

log = logging.getLogger("zhaopian.watch")


class FolderWatcher:
    def __init__(self, queue: JobQueue, tenant: str, library: str, folder: Path, interval: float = 2.0) -> None:
        self.queue = queue
        self.tenant = tenant
        self.library = library
        self.folder = Path(folder).expanduser().resolve()
        self.interval = interval
        self._last: dict[Path, tuple[int, int]] = {}  # what each file looked like at the previous scan
        self._submitted: dict[Path, tuple[int, int]] = {}

    def _files(self) -> dict[Path, tuple[int, int]]:
        found = {}
        for path in self.folder.rglob("*"):
            if path.name.startswith(".") or path.suffix.lower() not in MEDIA_SUFFIXES:
                continue
            try:
                st = path.stat()
            except OSError:  # gone between listing and looking
                continue
            if path.is_file():
                found[path] = (st.st_size, st.st_mtime_ns)
        return found

    def scan(self) -> list[Job]:
        """Queue the files that look the same as at the previous scan and were not queued in that state."""
        now = self._files()
        created = []
        for path, stamp in sorted(now.items()):
            if self._last.get(path) == stamp and self._submitted.get(path) != stamp and stamp[0] > 0:
                job, new = self.queue.submit(self.tenant, self.library, path)
                self._submitted[path] = stamp
                if new:
                    log.info("queued %s (job %s)", path, job.id)
                    created.append(job)
        self._last = now
        return created

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.scan()
            except OSError as exc:  # the folder went away for a moment (an unmounted share)
                log.warning("cannot scan %s: %s", self.folder, exc)
            stop.wait(self.interval)
