"""``zhaopian doctor``: verify the catalog against the indexes, and repair what can be repaired.

Checks, per data directory:

* every SQLite file (catalog, job queue, each library's media catalog) passes ``integrity_check``;
* library folders without a library (a delete interrupted after the catalog row went) — removed;
* leftovers of interrupted writes (``.*.tmp`` beside index files, ``.upload-*``, ``.thumb-*``) — removed;
* jobs whose worker died — queued again.

Per library (holding its write lock, so no worker writes meanwhile):

* media left ``indexing`` or ``deleting`` — removed everywhere (``Library.recover``);
* each module's own store (the visual vectors) against the catalog's units: stray entries are
  removed; units without an entry mean a damaged medium — it is removed and queued again;
* the text index against the catalog: units of unknown media are removed; ready media whose text
  units are missing from the index are removed and queued again;
* media whose file is gone are reported (``--prune-missing`` removes them).

Nothing is repaired without ``--repair``.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from zhaopian.modules.text_module import TextModule
from zhaopian.search.library import Library

from .service import Service

TEMP_PATTERNS = (".*.tmp", ".upload-*", ".thumb-*", ".secret-*", ".ui.key.tmp")


@dataclass
class Finding:
    where: str  # "data dir" or "<tenant>/<library>"
    check: str
    problem: str
    repaired: bool = False


def _integrity(path: Path) -> str | None:
    """None when SQLite finds the file sound, else its complaint."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            result = conn.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return None if result == "ok" else result


class Doctor:
    def __init__(self, service: Service, repair: bool = False, prune_missing: bool = False) -> None:
        self.svc = service
        self.repair = repair
        self.prune_missing = prune_missing
        self.findings: list[Finding] = []

    def note(self, where: str, check: str, problem: str, fixed: bool = False) -> None:
        self.findings.append(Finding(where, check, problem, fixed and self.repair))

    # -- data directory ----------------------------------------------------------------------
    def run(self) -> list[Finding]:
        data = self.svc.settings.data_dir
        for path in [data / "catalog.sqlite", data / "jobs.sqlite", *sorted(data.glob("libraries/*/media.sqlite"))]:
            if path.is_file() and (problem := _integrity(path)):
                self.note("data dir", "sqlite", f"{path.relative_to(data)}: {problem}")
        known = set()
        for tenant in self.svc.catalog.tenants():
            for record in self.svc.catalog.libraries(tenant):
                known.add(self.svc.catalog.library_dir(record).name)
                self.check_library(self.svc.library(record.name, tenant))
        for folder in sorted((data / "libraries").glob("*")):
            if folder.is_dir() and folder.name not in known:
                if self.repair:
                    shutil.rmtree(folder, ignore_errors=True)
                self.note("data dir", "orphans", f"folder libraries/{folder.name} belongs to no library", fixed=True)
        for pattern in TEMP_PATTERNS:
            for leftover in sorted(data.rglob(pattern)):
                if leftover.is_file() and not self._in_use(leftover):
                    if self.repair:
                        leftover.unlink(missing_ok=True)
                    self.note("data dir", "leftovers", f"{leftover.relative_to(data)}: an interrupted write",
                              fixed=True)
        stale = self.svc.jobs.requeue_stale() if self.repair else []
        for job_id in stale:
            self.note("data dir", "jobs", f"job {job_id}: its worker died", fixed=True)
        return self.findings

    @staticmethod
    def _in_use(path: Path) -> bool:
        """A temporary file younger than a minute may belong to a write in progress."""
        try:
            return time.time() - path.stat().st_mtime < 60
        except OSError:
            return False

    # -- one library ---------------------------------------------------------------------------
    def check_library(self, lib: Library) -> None:
        where = f"{lib.record.tenant}/{lib.name}"
        with lib.write_lock():  # taking it already recovers unfinished media and reloads stores
            media = lib.media
            units: dict[str, dict[int, int]] = {}
            for row in media.conn.execute("SELECT u.id, u.media_id, u.module FROM units u JOIN media m "
                                          "ON m.id = u.media_id WHERE m.status='ready'"):
                units.setdefault(row["module"], {})[row["id"]] = row["media_id"]
            damaged: set[int] = set()
            for name, module in lib.modules.items():
                stored = module.stored_units()
                if stored is None:
                    continue
                known = units.get(name, {})
                if stray := stored - set(known):
                    if self.repair:
                        module.drop_units(stray)
                        module.flush()
                    self.note(where, name, f"{len(stray)} stored entries belong to no unit", fixed=True)
                if missing := set(known) - stored:
                    damaged |= {known[u] for u in missing}
                    self.note(where, name, f"{len(missing)} units have no stored entry", fixed=True)
            text_modules = [n for n, m in lib.modules.items() if isinstance(m, TextModule)]
            if text_modules:
                in_index = lib.text.media_ids()
                if stray_media := in_index - {r["id"] for r in media.conn.execute("SELECT id FROM media")}:
                    if self.repair:
                        lib.text.remove(sorted(stray_media))
                        lib.text.flush()
                    self.note(where, "text index", f"units of {len(stray_media)} unknown media", fixed=True)
                with_text = {m for n in text_modules for m in units.get(n, {}).values()}
                if missing_media := with_text - in_index:
                    damaged |= missing_media
                    self.note(where, "text index", f"{len(missing_media)} media have no units in the text index",
                              fixed=True)
            if damaged:
                self._reindex(lib, where, sorted(damaged))
            for row in media.conn.execute("SELECT id, path FROM media WHERE status='ready' ORDER BY id"):
                if not Path(row["path"]).is_file():
                    if self.repair and self.prune_missing:
                        lib.delete_media([row["id"]])
                    self.note(where, "files", f"medium {row['id']}: file {row['path']} is gone",
                              fixed=self.prune_missing)

    def _reindex(self, lib: Library, where: str, media_ids: list[int]) -> None:
        """Damaged media are removed everywhere and queued again from their files."""
        paths = [r.path for r in (lib.media.record(i) for i in media_ids)]
        if not self.repair:
            return
        lib.delete_media(media_ids)
        existing = [p for p in paths if Path(p).is_file()]
        for job in self.svc.submit(existing, lib.name, lib.record.tenant):
            self.note(where, "reindex", f"{job.path}: queued again as job {job.id}", fixed=True)
