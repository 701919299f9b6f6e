"""`zhaopian backup` / `restore` round-trip a library exactly; a damaged archive changes nothing."""

import hashlib
import io
import sqlite3
import tarfile
from pathlib import Path

import pytest
from conftest import COLOR_LIBRARY
from typer.testing import CliRunner

from zhaopian.api.backup import backup, restore
from zhaopian.api.cli import app
from zhaopian.search.errors import ConfigError, MediaError

runner = CliRunner()


def snapshot(service, library: str) -> dict:
    """Everything a library is: its media rows, units, index files and what searches return."""
    lib = service.library(library)
    rows = lib.media.conn.execute("SELECT * FROM media ORDER BY id").fetchall()
    media = [{k: v for k, v in dict(r).items() if k != "path"} | {"file": r["path"].rsplit("/", 1)[-1]} for r in rows]
    units = [tuple(r) for r in lib.media.conn.execute("SELECT * FROM units ORDER BY id")]
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in lib.directory.glob("visual.*")}
    found = [(r.video.rsplit("/", 1)[-1], r.start, r.end, r.score, sorted(r.routes))
             for q in ("red", "blue", "still") for r in service.search(q, library=library)]
    return {"media": media, "units": units, "files": files, "found": found, "config": lib.record.config}


@pytest.fixture
def library(service, colour_videos):
    service.create_library("clips", {"modules": {**COLOR_LIBRARY["modules"], "meta": {}}})
    service.index([colour_videos["a"], colour_videos["b"]], "clips")
    [job] = service.run_jobs([service.add_upload("still.png", colour_videos["img"].read_bytes(), "clips")])
    assert job.status == "done"
    service.update_medium(job.media_id, "clips", title="still frame", tags=["green"])
    return "clips"


def test_round_trip_is_exact(service, library, tmp_path):
    before = snapshot(service, library)
    archive = tmp_path / "clips.tar.gz"
    manifest = backup(service, library, archive)
    assert archive.is_file() and not list(tmp_path.glob(".*tmp")) and manifest.library == "clips"
    assert any(name.startswith("uploads/") for name in manifest.files)

    service.delete_library(library)
    assert not list((service.settings.upload_dir / "uploads" / "default" / "clips").glob("*"))
    record = restore(service, archive)
    assert (record.name, record.tenant) == ("clips", "default")
    assert snapshot(service, library) == before
    # the uploaded file is back and playable from its (rewritten) path
    still = next(m for m in service.media(library=library) if m.title == "still frame")
    assert still.path.startswith(str(service.settings.upload_dir)) and Path(still.path).stat().st_size > 0

    # under another name, beside the original, in another tenant
    copy = restore(service, archive, name="copy", tenant="studio")
    assert copy.tenant == "studio"
    assert service.search("red", library="copy", tenant="studio")[0].start == before["found"][0][1]
    with pytest.raises(ConfigError, match="already exists"):
        restore(service, archive)


def test_damaged_or_foreign_archives_change_nothing(service, library, tmp_path):
    archive = tmp_path / "clips.tar"
    backup(service, library, archive)
    libraries = sorted(p.name for p in (service.settings.data_dir / "libraries").iterdir())
    # one file's bytes changed inside the archive
    tampered = tmp_path / "tampered.tar"
    with tarfile.open(archive) as src, tarfile.open(tampered, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name.endswith("media.sqlite"):
                data = data[:-1] + bytes([data[-1] ^ 1])
            dst.addfile(member, io.BytesIO(data))
    with pytest.raises(MediaError, match="does not match its checksum"):
        restore(service, tampered, name="t1")
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar at all")
    with pytest.raises(MediaError, match="not a readable zhaopian backup"):
        restore(service, garbage, name="t2")
    with pytest.raises(MediaError, match="no such backup file"):
        restore(service, tmp_path / "missing.tar", name="t3")
    assert [r.name for r in service.libraries()] == ["clips"]
    assert sorted(p.name for p in (service.settings.data_dir / "libraries").iterdir()) == libraries  # no leftovers


def test_backup_is_consistent_while_the_library_changes(service, library, tmp_path, media_root):
    """The write lock makes a worker wait: the archive holds the library before or after a write, whole."""
    archive = tmp_path / "b.tar"
    backup(service, library, archive)
    with tarfile.open(archive) as tar:
        tar.extract("library/media.sqlite", tmp_path, filter="data")
    conn = sqlite3.connect(tmp_path / "library" / "media.sqlite")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT COUNT(*) FROM media WHERE status != 'ready'").fetchone()[0] == 0
    conn.close()


def test_cli_backup_and_restore(env, service, library, tmp_path):
    archive = tmp_path / "x.tar"
    r = runner.invoke(app, ["backup", library, str(archive)])
    assert r.exit_code == 0 and "backed up default/clips" in r.stdout
    r = runner.invoke(app, ["restore", str(archive), "--as", "clips2"])
    assert r.exit_code == 0, r.output
    listing = runner.invoke(app, ["media", "list", "--library", "clips2", "--json"])
    assert listing.exit_code == 0 and "still" in listing.stdout
    bad = runner.invoke(app, ["restore", str(tmp_path / "nope.tar")])
    assert bad.exit_code == 1 and bad.stderr.startswith("error[media_invalid]")
