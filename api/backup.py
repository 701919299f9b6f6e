"""``zhaopian backup`` / ``restore``: one library (catalog, indexes, uploaded files) as one archive.

The backup holds the library's write lock while it copies, so no worker writes meanwhile: the
media catalog is copied with SQLite's online backup, the index files as they are. The archive
(tar, gzip-compressed when the name ends in ``.gz``) is written beside its destination and renamed
into place, and its ``manifest.json`` records the library's config and the SHA-256 of every file.

A restore checks every file against the manifest while unpacking into a staging folder, then
creates the library and moves the folder into place; uploaded files go back to this data
directory's upload folder and the catalog's paths to them are rewritten. Libraries whose indexes
live in Elasticsearch are not covered: use Elasticsearch's snapshots for those.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, ValidationError

from zhaopian.indexer.ingest import sha256_file
from zhaopian.search.catalog import LibraryRecord
from zhaopian.search.errors import ConfigError, MediaError

from .service import Service

FORMAT = 1
MANIFEST = "manifest.json"
#: files of a library folder that are not part of a backup: locks and leftovers of interrupted writes
SKIP_SUFFIXES = (".lock", ".tmp")


class Manifest(BaseModel):
    format: int
    created: float
    tenant: str
    library: str
    config: dict
    #: the upload folder the catalog's paths of uploaded media start with
    uploads_prefix: str
    #: archive member -> sha256
    files: dict[str, str]


def _uploads(svc: Service, tenant: str, library: str) -> Path:
    return svc.settings.upload_dir / "uploads" / tenant / library


def backup(svc: Service, library: str, dest: Path, tenant: str | None = None, uploads: bool = True) -> Manifest:
    lib = svc.library(library, tenant)
    if lib.config.text_index.backend != "tantivy" or lib.config.vector_store.backend != "faiss":
        raise ConfigError(f"library {library!r} keeps its indexes in Elasticsearch: back it up with "
                          f"Elasticsearch snapshots (zhaopian backup covers libraries in the data directory)")
    dest = Path(dest).expanduser().resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    upload_dir = _uploads(svc, lib.record.tenant, lib.name)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".backup-") as staging_name:
        staging = Path(staging_name)
        with lib.write_lock():
            _copy_sqlite(lib.directory / "media.sqlite", staging / "library" / "media.sqlite")
            for path in sorted(lib.directory.rglob("*")):
                rel = path.relative_to(lib.directory)
                if (path.is_dir() or rel.parts[0].startswith("media.sqlite") or path.name.endswith(SKIP_SUFFIXES)
                        or path.name.startswith(".")):
                    continue
                target = staging / "library" / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
            if uploads and upload_dir.is_dir():
                for path in sorted(upload_dir.rglob("*")):
                    if path.is_file() and not path.name.startswith("."):
                        target = staging / "uploads" / path.relative_to(upload_dir)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(path, target)
        files = {str(p.relative_to(staging)): sha256_file(p) for p in sorted(staging.rglob("*")) if p.is_file()}
        manifest = Manifest(format=FORMAT, created=time.time(), tenant=lib.record.tenant, library=lib.name,
                            config=lib.record.config, uploads_prefix=str(upload_dir), files=files)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
        os.close(fd)
        try:
            with tarfile.open(tmp, "w:gz" if dest.name.endswith(".gz") else "w") as tar:
                data = manifest.model_dump_json(indent=1).encode()
                info = tarfile.TarInfo(MANIFEST)
                info.size, info.mtime = len(data), int(manifest.created)
                tar.addfile(info, io.BytesIO(data))
                for member in files:
                    tar.add(staging / member, arcname=member)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return manifest


def _copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite file (WAL included)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file in the archive
    finally:
        dst.close()
        src.close()


def restore(svc: Service, archive: Path, name: str | None = None, tenant: str | None = None) -> LibraryRecord:
    archive = Path(archive).expanduser()
    if not archive.is_file():
        raise MediaError(f"{archive}: no such backup file")
    tenant = tenant or svc.settings.tenant
    libraries = svc.settings.data_dir / "libraries"
    libraries.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=libraries, prefix=".restore-"))
    try:
        manifest = _unpack(archive, staging)
        name = name or manifest.library
        if name in {r.name for r in svc.libraries(tenant)}:
            raise ConfigError(f"library {name!r} already exists in tenant {tenant!r}; restore with --as NEW_NAME")
        upload_dir = _uploads(svc, tenant, name)
        _rewrite_upload_paths(staging / "library" / "media.sqlite", manifest.uploads_prefix, str(upload_dir))
        if (staging / "uploads").is_dir():
            for path in sorted((staging / "uploads").rglob("*")):
                if path.is_file():
                    target = upload_dir / path.relative_to(staging / "uploads")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(path, target)
        for module_name, options in manifest.config.get("modules", {}).items():
            svc.manager.validate(module_name, options)  # a module this install lacks fails before anything moves
        record = svc.catalog.create_library(tenant, name, manifest.config)
        target = svc.catalog.library_dir(record)
        if target.exists():  # an orphan folder with the new id (doctor removes those): not ours to keep
            shutil.rmtree(target)
        os.replace(staging / "library", target)
        return record
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _unpack(archive: Path, staging: Path) -> Manifest:
    try:
        with tarfile.open(archive) as tar:
            member = tar.getmember(MANIFEST)
            manifest = Manifest.model_validate_json(tar.extractfile(member).read())
            if manifest.format != FORMAT:
                raise ConfigError(f"{archive.name}: backup format {manifest.format}, this zhaopian reads {FORMAT}")
            names = set(tar.getnames()) - {MANIFEST}
            if names != set(manifest.files):
                raise MediaError(f"{archive.name}: the archive's files do not match its manifest")
            tar.extractall(staging, members=[tar.getmember(n) for n in sorted(names)], filter="data")
    except (tarfile.TarError, KeyError, ValidationError, EOFError, OSError) as exc:
        raise MediaError(f"{archive.name}: not a readable zhaopian backup ({exc.__class__.__name__}: {exc})") from None
    for member, digest in manifest.files.items():
        if hashlib.sha256((staging / member).read_bytes()).hexdigest() != digest:
            raise MediaError(f"{archive.name}: {member} does not match its checksum; the backup is damaged")
    return manifest


def _rewrite_upload_paths(db: Path, old: str, new: str) -> None:
    conn = sqlite3.connect(db)
    try:
        with conn:
            conn.execute("UPDATE media SET path = ? || substr(path, ?) WHERE substr(path, 1, ?) = ?",
                         (new, len(old) + 1, len(old), old))
    finally:
        conn.close()
