"""`zhaopian doctor` finds what crashes and tampering leave, and repairs it."""

import json
import os

import numpy as np
from conftest import COLOR_LIBRARY
from typer.testing import CliRunner

from zhaopian.api.cli import app
from zhaopian.api.doctor import Doctor
from zhaopian.search.stores.text import TextDoc

runner = CliRunner()


def test_a_sound_data_directory_is_consistent(env, service, colour_library):
    assert Doctor(service).run() == []
    r = runner.invoke(app, ["doctor"])
    assert r.exit_code == 0 and "consistent" in r.stdout


def test_damage_is_found_then_repaired(env, service, colour_videos, media_root):
    service.create_library("mixed", {"modules": {**COLOR_LIBRARY["modules"], "meta": {}}})
    service.index(list(colour_videos.values()), "mixed")
    lib = service.library("mixed")
    visual = lib.modules["visual"]
    media = {m.path.rsplit("/", 1)[-1]: m.id for m in lib.media.list()}
    before = [(r.video, r.start, r.end) for r in service.search("red", library="mixed")]

    with lib.write_lock():
        # a stray vector (a unit the catalog never had), a vector lost from a ready medium,
        # text of a medium the catalog does not know, and a medium left half-indexed
        store = visual._store("joint")
        store.add(np.asarray([999_999]), np.ones((1, 4), np.float32))
        lost = lib.media.unit_ids([media["b.mp4"]], "visual")[:1]
        store.remove(lost)
        visual._dirty.add("joint")
        visual.flush()
        lib.text.add([TextDoc(unit_id=888_888, media_id=424_242, module="meta", start=0, end=0,
                              text="ghost title", field="title")])
        lib.text.flush()
        half = lib.media.add_media(path=str(media_root / "half.mp4"), kind="video", sha256="0" * 64, size=1,
                                   duration=1, width=2, height=2)
    data = service.settings.data_dir
    (data / "libraries" / "77").mkdir(parents=True)  # a folder of a library that is gone
    leftover = data / "libraries" / f"{lib.record.id}" / ".visual.joint.faiss.x.tmp"
    leftover.write_bytes(b"torn")  # a save killed before its rename
    upload = data / "media" / "uploads" / "default" / "mixed" / ".upload-x"
    upload.parent.mkdir(parents=True, exist_ok=True)
    upload.write_bytes(b"half")  # an upload cut off
    os.utime(upload, (1, 1))  # old: no write in progress
    colour_videos["img"].unlink()  # a file that went away

    found = Doctor(service).run()
    problems = {(f.check, f.problem) for f in found}
    assert ("visual", "1 stored entries belong to no unit") in problems
    assert ("visual", "1 units have no stored entry") in problems
    assert ("text index", "units of 1 unknown media") in problems
    assert any(c == "orphans" for c, _ in problems) and any(c == "leftovers" for c, _ in problems)
    assert any(c == "files" and "still.png" in p for c, p in problems)
    assert lib.media.unfinished() == [] and half not in {m.id for m in lib.media.list()}  # recovered on the lock
    assert not leftover.exists()  # also on the lock
    assert runner.invoke(app, ["doctor"]).exit_code == 1

    repaired = Doctor(service, repair=True).run()
    assert all(f.repaired for f in repaired if f.check != "files")
    assert [f.problem.split(":")[0].rsplit("/", 1)[-1] for f in repaired if f.check == "reindex"] == ["b.mp4"]
    service.worker().run(drain=True)  # the damaged medium is indexed again
    lib.refresh()
    assert 999_999 not in visual.stored_units()
    assert not (data / "libraries" / "77").exists() and not upload.exists()
    assert 424_242 not in lib.text.media_ids()
    again = {(f.check, f.problem) for f in Doctor(service).run()}
    assert {c for c, _ in again} == {"files"}  # only the missing file remains, reported not removed
    assert [(r.video, r.start, r.end) for r in service.search("red", library="mixed")] == before
    pruned = runner.invoke(app, ["doctor", "--repair", "--prune-missing"])
    assert pruned.exit_code == 0, pruned.output
    assert runner.invoke(app, ["doctor"]).exit_code == 0
    listing = json.loads(runner.invoke(app, ["media", "list", "--library", "mixed", "--json"]).stdout)
    assert sorted(m["path"].rsplit("/", 1)[-1] for m in listing) == ["a.mp4", "b.mp4"]


def test_a_corrupt_sqlite_file_is_reported(env, service, colour_library):
    lib_dir = next((service.settings.data_dir / "libraries").iterdir())
    service.close()
    db = lib_dir / "media.sqlite"
    raw = bytearray(db.read_bytes())
    raw[100:4096] = b"\xff" * (4096 - 100)  # trash the first page after the header
    db.write_bytes(bytes(raw))
    from zhaopian.api.doctor import _integrity

    assert _integrity(db) is not None


def test_compact_keeps_results_and_reclaims_space(env, service, colour_videos):
    service.create_library("c", {"modules": {**COLOR_LIBRARY["modules"], "meta": {}},
                                 "vector_store": {"sq8_min": 2}})
    service.index(list(colour_videos.values()), "c")
    lib = service.library("c")
    first = next(m.id for m in lib.media.list() if m.path.endswith("a.mp4"))
    lib.delete_media([first])
    before = [(r.video, r.start, r.end, sorted(r.routes)) for q in ("red", "still") for r in service.search(q, library="c")]
    kept = lib.modules["visual"].stored_units()
    r = runner.invoke(app, ["library", "compact", "c"])
    assert r.exit_code == 0, r.output
    lib.refresh()
    assert lib.modules["visual"].stored_units() == kept
    after = [(r.video, r.start, r.end, sorted(r.routes)) for q in ("red", "still") for r in service.search(q, library="c")]
    assert after == before
    assert Doctor(service).run() == []
