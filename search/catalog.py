"""The catalog, in SQLite: tenants and their libraries (global), media and units (per library).

Layout under the data directory::

    catalog.sqlite                  tenants, libraries (+ each library's index config)
    libraries/<library id>/
        media.sqlite                media and units of this library only
        <module>.<space>.faiss      vector stores written by modules

Keeping each library's data in its own folder means libraries never mix and
deleting one is removing its folder. Every write is one SQLite transaction.

A *unit* is the smallest indexed span a module stores (a clip of similar
frames, later an OCR line or an ASR sentence): its integer id is the id the
module uses in its own store. A medium goes ``indexing`` -> ``ready`` ->
(``deleting`` -> gone); only ``ready`` media are ever returned by search.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import AlreadyExists, ConfigError, NotFound
from .types import QueryFilters

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(kind: str, name: str) -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise ConfigError(f"invalid {kind} name {name!r}: use 1-64 letters, digits, '_', '-' or '.'")
    return name


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


#: one lock per connection: threads (the HTTP server's pool) share a connection, and two BEGINs
#: on one connection would collide
_conn_locks: dict[int, threading.RLock] = {}
_conn_locks_guard = threading.Lock()


@contextmanager
def transaction(conn: sqlite3.Connection):
    with _conn_locks_guard:
        lock = _conn_locks.setdefault(id(conn), threading.RLock())
    with lock:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


@dataclass(frozen=True)
class LibraryRecord:
    id: int
    tenant: str
    name: str
    config: dict[str, Any]
    created: float


@dataclass(frozen=True)
class ApiKeyRecord:
    id: int
    tenant: str
    #: the key's public start, shown to tell keys apart
    prefix: str
    #: sha256 of the whole key, hex
    hash: str
    admin: bool
    created: float


class Catalog:
    """Tenants and libraries."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS tenants (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        created REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS libraries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        config TEXT NOT NULL,
        created REAL NOT NULL,
        UNIQUE (tenant_id, name)
    );
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.conn = _connect(self.data_dir / "catalog.sqlite")
        self.conn.executescript(self.SCHEMA)

    def close(self) -> None:
        self.conn.close()

    # tenants
    def ensure_tenant(self, name: str) -> int:
        check_name("tenant", name)
        with transaction(self.conn):
            self.conn.execute("INSERT OR IGNORE INTO tenants(name, created) VALUES (?, ?)", (name, time.time()))
            return self.conn.execute("SELECT id FROM tenants WHERE name=?", (name,)).fetchone()["id"]

    def tenants(self) -> list[str]:
        return [r["name"] for r in self.conn.execute("SELECT name FROM tenants ORDER BY name")]

    # libraries
    def create_library(self, tenant: str, name: str, config: dict[str, Any]) -> LibraryRecord:
        check_name("library", name)
        tenant_id = self.ensure_tenant(tenant)
        try:
            with transaction(self.conn):
                self.conn.execute(
                    "INSERT INTO libraries(tenant_id, name, config, created) VALUES (?, ?, ?, ?)",
                    (tenant_id, name, json.dumps(config, ensure_ascii=False), time.time()),
                )
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(f"library {name!r} already exists") from exc
        return self.library(tenant, name)

    def library(self, tenant: str, name: str) -> LibraryRecord:
        row = self.conn.execute(
            "SELECT l.*, t.name AS tenant FROM libraries l JOIN tenants t ON t.id = l.tenant_id "
            "WHERE t.name=? AND l.name=?",
            (tenant, name),
        ).fetchone()
        if row is None:
            raise NotFound(f"unknown library {name!r}; create it with: zhaopian library create {name}")
        return self._record(row)

    def libraries(self, tenant: str) -> list[LibraryRecord]:
        rows = self.conn.execute(
            "SELECT l.*, t.name AS tenant FROM libraries l JOIN tenants t ON t.id = l.tenant_id "
            "WHERE t.name=? ORDER BY l.name",
            (tenant,),
        )
        return [self._record(r) for r in rows]

    def delete_library(self, tenant: str, name: str) -> LibraryRecord:
        record = self.library(tenant, name)
        with transaction(self.conn):
            self.conn.execute("DELETE FROM libraries WHERE id=?", (record.id,))
        return record

    def library_dir(self, record: LibraryRecord) -> Path:
        return self.data_dir / "libraries" / str(record.id)

    @staticmethod
    def _record(row: sqlite3.Row) -> LibraryRecord:
        return LibraryRecord(row["id"], row["tenant"], row["name"], json.loads(row["config"]), row["created"])

    # API keys (only their hash is stored; the table is created on first use)
    API_KEYS_SCHEMA = """
    CREATE TABLE IF NOT EXISTS api_keys (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        prefix TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        admin INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS api_keys_prefix ON api_keys(prefix);
    """
    _api_keys_ready = False

    def _api_keys_table(self) -> None:
        if not self._api_keys_ready:
            self.conn.executescript(self.API_KEYS_SCHEMA)
            self._api_keys_ready = True

    def add_api_key(self, tenant: str, prefix: str, key_hash: str, admin: bool = False) -> ApiKeyRecord:
        """Store a key's hash for an existing tenant (``NotFound`` otherwise)."""
        self._api_keys_table()
        row = self.conn.execute("SELECT id FROM tenants WHERE name=?", (tenant,)).fetchone()
        if row is None:
            raise NotFound(f"unknown tenant {tenant!r}")
        with transaction(self.conn):
            cur = self.conn.execute(
                "INSERT INTO api_keys(tenant_id, prefix, hash, admin, created) VALUES (?, ?, ?, ?, ?)",
                (row["id"], prefix, key_hash, int(admin), time.time()),
            )
        return self._api_key(self.conn.execute(
            "SELECT k.*, t.name AS tenant FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.id=?",
            (cur.lastrowid,)).fetchone())

    def api_keys_with_prefix(self, prefix: str) -> list[ApiKeyRecord]:
        """Keys whose public prefix is ``prefix`` (the caller compares hashes)."""
        self._api_keys_table()
        rows = self.conn.execute(
            "SELECT k.*, t.name AS tenant FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.prefix=?",
            (prefix,))
        return [self._api_key(r) for r in rows]

    def api_keys(self, tenant: str) -> list[ApiKeyRecord]:
        self._api_keys_table()
        rows = self.conn.execute(
            "SELECT k.*, t.name AS tenant FROM api_keys k JOIN tenants t ON t.id = k.tenant_id "
            "WHERE t.name=? ORDER BY k.id", (tenant,))
        return [self._api_key(r) for r in rows]

    @staticmethod
    def _api_key(row: sqlite3.Row) -> ApiKeyRecord:
        return ApiKeyRecord(row["id"], row["tenant"], row["prefix"], row["hash"], bool(row["admin"]), row["created"])


@dataclass(frozen=True)
class MediaRecord:
    id: int
    path: str
    kind: str
    sha256: str
    size: int
    duration: float
    width: int
    height: int
    title: str
    description: str
    tags: list[str]
    status: str
    created: float
    updated: float
    #: when the medium was recorded (container/EXIF date, else the file's modification time), epoch seconds
    recorded: float = 0.0
    #: custom metadata fields (name -> text), searchable through the meta module
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def filename(self) -> str:
        return Path(self.path).name

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Unit:
    id: int
    media_id: int
    module: str
    start: float
    end: float
    thumb: float


class MediaCatalog:
    """Media and units of one library."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS media (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        path TEXT NOT NULL,
        kind TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        duration REAL NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        title TEXT NOT NULL DEFAULT '',
        description TEXT NOT NULL DEFAULT '',
        tags TEXT NOT NULL DEFAULT '[]',
        status TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS media_sha ON media(sha256);
    CREATE INDEX IF NOT EXISTS media_path ON media(path);
    CREATE TABLE IF NOT EXISTS units (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        media_id INTEGER NOT NULL REFERENCES media(id) ON DELETE CASCADE,
        module TEXT NOT NULL,
        start REAL NOT NULL,
        end REAL NOT NULL,
        thumb REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS units_media ON units(media_id, module);
    -- media whose metadata edit is committed here but not yet re-indexed by their modules
    CREATE TABLE IF NOT EXISTS edits (
        media_id INTEGER PRIMARY KEY REFERENCES media(id) ON DELETE CASCADE
    );
    """
    #: columns added after the first schema: (name, definition); added to older files on open
    MIGRATIONS = [
        ("recorded", "REAL NOT NULL DEFAULT 0"),
        ("fields", "TEXT NOT NULL DEFAULT '{}'"),
    ]

    def __init__(self, path: Path) -> None:
        self.conn = _connect(Path(path))
        self.conn.executescript(self.SCHEMA)
        have = {r["name"] for r in self.conn.execute("PRAGMA table_info(media)")}
        with transaction(self.conn):
            for name, definition in self.MIGRATIONS:
                if name not in have:
                    self.conn.execute(f"ALTER TABLE media ADD COLUMN {name} {definition}")

    def close(self) -> None:
        self.conn.close()

    # media
    def add_media(self, *, path: str, kind: str, sha256: str, size: int, duration: float, width: int, height: int,
                  title: str = "", recorded: float = 0.0, description: str = "", tags: list[str] | None = None,
                  fields: dict[str, str] | None = None) -> int:
        now = time.time()
        with transaction(self.conn):
            cur = self.conn.execute(
                "INSERT INTO media(path, kind, sha256, size, duration, width, height, title, description, tags, "
                "fields, recorded, status, created, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'indexing', ?, ?)",
                (path, kind, sha256, size, duration, width, height, title, description,
                 json.dumps(tags or [], ensure_ascii=False), json.dumps(fields or {}, ensure_ascii=False),
                 recorded, now, now),
            )
            return int(cur.lastrowid)

    def record(self, media_id: int) -> MediaRecord:
        """A medium in any state (modules read it while it is still being indexed)."""
        row = self.conn.execute("SELECT * FROM media WHERE id=?", (media_id,)).fetchone()
        if row is None:
            raise NotFound(f"unknown medium {media_id}")
        return self._media(row)

    def get(self, media_id: int) -> MediaRecord:
        row = self.conn.execute("SELECT * FROM media WHERE id=?", (media_id,)).fetchone()
        if row is None or row["status"] != "ready":
            raise NotFound(f"unknown medium {media_id}")
        return self._media(row)

    def exists(self, media_id: int | None) -> bool:
        """A medium with this id is in the catalog (ready or being indexed)."""
        return media_id is not None and self.conn.execute(
            "SELECT 1 FROM media WHERE id=? AND status IN ('ready', 'indexing')", (media_id,)).fetchone() is not None

    def find(self, *, sha256: str | None = None, path: str | None = None) -> MediaRecord | None:
        col, value = ("sha256", sha256) if sha256 is not None else ("path", path)
        row = self.conn.execute(f"SELECT * FROM media WHERE {col}=? AND status='ready' ORDER BY id LIMIT 1",
                                (value,)).fetchone()
        return self._media(row) if row else None

    def list(self, offset: int = 0, limit: int = 100) -> list[MediaRecord]:
        rows = self.conn.execute("SELECT * FROM media WHERE status='ready' ORDER BY id LIMIT ? OFFSET ?",
                                 (limit, offset))
        return [self._media(r) for r in rows]

    def count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM media WHERE status='ready'").fetchone()[0]

    def update(self, media_id: int, *, title: str | None = None, description: str | None = None,
               tags: list[str] | None = None, fields: dict[str, str] | None = None) -> MediaRecord:
        self.get(media_id)
        values = {"title": title, "description": description,
                  "tags": None if tags is None else json.dumps(tags, ensure_ascii=False),
                  "fields": None if fields is None else json.dumps(fields, ensure_ascii=False)}
        sets = {k: v for k, v in values.items() if v is not None}
        if sets:
            with transaction(self.conn):  # the edit and the note that its modules must re-index it
                self.conn.execute(
                    f"UPDATE media SET {', '.join(f'{k}=?' for k in sets)}, updated=? WHERE id=?",
                    (*sets.values(), time.time(), media_id),
                )
                self.conn.execute("INSERT OR IGNORE INTO edits(media_id) VALUES (?)", (media_id,))
        return self.get(media_id)

    def edited(self) -> list[int]:
        """Media whose edit the modules have not re-indexed yet (an edit interrupted by a crash)."""
        return [r["media_id"] for r in self.conn.execute("SELECT media_id FROM edits ORDER BY media_id")]

    def edits_indexed(self, media_ids: list[int]) -> None:
        with transaction(self.conn):
            self.conn.executemany("DELETE FROM edits WHERE media_id=?", [(i,) for i in media_ids])

    def matching(self, filters: QueryFilters) -> list[int]:
        """Ids of ready media that pass ``filters`` (kinds, duration, recording date, tags)."""
        where, args = ["status='ready'"], []
        if filters.kinds:
            where.append(f"kind IN ({','.join('?' * len(filters.kinds))})")
            args += filters.kinds
        if filters.min_duration is not None:
            where.append("kind='video' AND duration >= ?")
            args.append(filters.min_duration)
        if filters.max_duration is not None:
            where.append("(kind='image' OR duration <= ?)")
            args.append(filters.max_duration)
        if filters.recorded_after is not None:
            where.append("recorded >= ?")
            args.append(filters.recorded_after.timestamp())
        if filters.recorded_before is not None:
            where.append("recorded < ?")
            args.append(filters.recorded_before.timestamp())
        for tag in filters.tags:
            where.append("EXISTS (SELECT 1 FROM json_each(media.tags) WHERE lower(value) = lower(?))")
            args.append(tag)
        rows = self.conn.execute(f"SELECT id FROM media WHERE {' AND '.join(where)}", args)
        return [r["id"] for r in rows]

    def set_status(self, media_ids: list[int], status: str) -> None:
        with transaction(self.conn):
            self.conn.executemany("UPDATE media SET status=?, updated=? WHERE id=?",
                                  [(status, time.time(), i) for i in media_ids])

    def unfinished(self) -> list[int]:
        """Media an interrupted ingest or delete left behind."""
        return [r["id"] for r in self.conn.execute("SELECT id FROM media WHERE status IN ('indexing', 'deleting')")]

    def purge(self, media_ids: list[int]) -> None:
        """Remove media rows and (by cascade) their units."""
        with transaction(self.conn):
            self.conn.executemany("DELETE FROM media WHERE id=?", [(i,) for i in media_ids])

    def vacuum(self) -> None:
        """Reclaim the space of deleted rows (SQLite rewrites the file in a transaction)."""
        self.conn.execute("VACUUM")

    # units
    def data_version(self) -> int:
        """Changes whenever another connection (another process) commits to this catalog."""
        return self.conn.execute("PRAGMA data_version").fetchone()[0]

    def add_units(self, media_id: int, module: str, spans: list[tuple[float, float, float]]) -> list[int]:
        with transaction(self.conn):
            ids = []
            for start, end, thumb in spans:
                cur = self.conn.execute("INSERT INTO units(media_id, module, start, end, thumb) VALUES (?, ?, ?, ?, ?)",
                                        (media_id, module, start, end, thumb))
                ids.append(int(cur.lastrowid))
            return ids

    def delete_units(self, media_ids: list[int], module: str) -> None:
        with transaction(self.conn):
            self.conn.executemany("DELETE FROM units WHERE media_id=? AND module=?", [(m, module) for m in media_ids])

    def unit_ids(self, media_ids: list[int], module: str) -> list[int]:
        if not media_ids:
            return []
        marks = ",".join("?" * len(media_ids))
        rows = self.conn.execute(f"SELECT id FROM units WHERE module=? AND media_id IN ({marks})", (module, *media_ids))
        return [r["id"] for r in rows]

    def ready_units(self, unit_ids: list[int]) -> dict[int, Unit]:
        """Units of ready media among these ids (unknown ids and unfinished media are dropped)."""
        if not unit_ids:
            return {}
        out: dict[int, Unit] = {}
        for i in range(0, len(unit_ids), 900):
            chunk = [int(u) for u in unit_ids[i : i + 900]]
            rows = self.conn.execute(
                f"SELECT u.* FROM units u JOIN media m ON m.id = u.media_id "
                f"WHERE m.status='ready' AND u.id IN ({','.join('?' * len(chunk))})", chunk)
            out.update({r["id"]: Unit(r["id"], r["media_id"], r["module"], r["start"], r["end"], r["thumb"]) for r in rows})
        return out

    @staticmethod
    def _media(row: sqlite3.Row) -> MediaRecord:
        data = dict(row)
        data["tags"] = json.loads(data["tags"])
        data["fields"] = json.loads(data["fields"])
        return MediaRecord(**data)
