"""Ingestion and search through the service, with an exactly-predictable colour encoder."""

import os
import sqlite3
import time

import pytest
from crash import die_at
from media import BLUE, RED, write_video

from zhaopian.api.doctor import Doctor
from zhaopian.api.service import Service
from zhaopian.api.settings import Settings
from zhaopian.search.errors import AlreadyExists, InvalidQuery, MediaError, NotFound


def spans(results):
    return [(r.video.rsplit("/", 1)[-1], r.start, r.end) for r in results]


def test_text_query_finds_the_right_span(service, colour_library):
    assert spans(service.search("red", library=colour_library, top_k=2)) == [("b.mp4", 2.0, 4.0), ("a.mp4", 0.0, 3.0)]
    assert spans(service.search("蓝色", library=colour_library, top_k=1)) == [("a.mp4", 6.0, 10.0)]
    green = service.search("green", library=colour_library, top_k=2)
    assert {s[0] for s in spans(green)} == {"a.mp4", "still.png"}
    image_result = next(r for r in green if r.kind == "image")
    assert (image_result.start, image_result.end) == (0.0, 0.0)


def test_image_query(service, colour_library, media_root):
    from media import write_image

    query = write_image(media_root / "q.jpg", (25, 35, 225), size=(120, 90))
    top = service.search(image=query, library=colour_library, top_k=1)[0]
    assert (top.video.endswith("a.mp4"), top.start, top.end) == (True, 6.0, 10.0)
    assert top.routes.keys() == {"visual"}


def test_reindexing_identical_content_is_a_noop(service, colour_library, colour_videos, media_root):
    before = len(service.media(library=colour_library))
    copy = media_root / "copy-of-a.mp4"
    copy.write_bytes(colour_videos["a"].read_bytes())
    results = service.index([colour_videos["a"], copy], library=colour_library)
    assert [r.status for r in results] == ["duplicate", "duplicate"]
    assert len(service.media(library=colour_library)) == before


def test_changed_file_at_same_path_is_replaced(service, colour_library, colour_videos):
    write_video(colour_videos["b"], [(BLUE, 3)])
    [result] = service.index([colour_videos["b"]], library=colour_library)
    assert result.status == "replaced"
    assert ("b.mp4", 2.0, 4.0) not in spans(service.search("red", library=colour_library))
    assert spans(service.search("blue", library=colour_library, top_k=1))[0][0] in {"a.mp4", "b.mp4"}
    assert len(service.media(library=colour_library)) == 3


def test_delete_removes_medium_from_results(service, colour_library):
    b = next(m for m in service.media(library=colour_library) if m.path.endswith("b.mp4"))
    service.delete_medium(b.id, library=colour_library)
    assert all(not r.video.endswith("b.mp4") for r in service.search("red", library=colour_library, top_k=10))
    with pytest.raises(NotFound):
        service.medium(b.id, library=colour_library)
    with pytest.raises(NotFound):
        service.delete_medium(b.id, library=colour_library)


def test_metadata_update(service, colour_library):
    m = service.media(library=colour_library)[0]
    updated = service.update_medium(m.id, library=colour_library, title="开场", tags=["intro", "红色"])
    assert (updated.title, updated.tags) == ("开场", ["intro", "红色"])


def test_bad_inputs_fail_clearly_and_the_rest_of_the_batch_indexes(service, colour_library, media_root, tmp_path):
    good = write_video(media_root / "good.mp4", [(RED, 2)])
    truncated = media_root / "truncated.mp4"
    truncated.write_bytes(write_video(media_root / "full.mp4", [(BLUE, 3)]).read_bytes()[:1500])
    (media_root / "full.mp4").unlink()
    empty = media_root / "empty.mp4"
    empty.touch()
    text = media_root / "notes.mp4"
    text.write_text("this is not a video")
    bad_image = media_root / "broken.jpg"
    bad_image.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(good.read_bytes())
    escape = media_root / "link.mp4"
    escape.symlink_to(outside)
    missing = media_root / "missing.mp4"

    before = {r.video for r in service.search("blue", library=colour_library, top_k=10)}
    results = service.index([truncated, empty, text, bad_image, outside, escape, missing, good], library=colour_library)
    status = {r.path.rsplit("/", 1)[-1]: (r.status, r.code) for r in results}
    assert status == {
        "truncated.mp4": ("failed", "media_invalid"),
        "empty.mp4": ("failed", "media_invalid"),
        "notes.mp4": ("failed", "media_invalid"),
        "broken.jpg": ("failed", "media_invalid"),
        "outside.mp4": ("failed", "path_outside_media_root"),
        "link.mp4": ("failed", "path_outside_media_root"),
        "missing.mp4": ("failed", "media_invalid"),
        "good.mp4": ("indexed", ""),
    }
    assert all("\n" not in r.message and r.message for r in results if r.status == "failed")
    assert "0 bytes" in dict((r.path.rsplit("/", 1)[-1], r.message) for r in results)["empty.mp4"]
    # nothing already indexed was damaged, and no half-indexed medium is left behind
    assert {r.video for r in service.search("blue", library=colour_library, top_k=10)} >= before
    assert len(service.media(library=colour_library)) == 4


def test_bad_queries(service, colour_library, media_root):
    for text in ["", "   ", "\x00\x01"]:
        with pytest.raises(InvalidQuery, match="empty query"):
            service.search(text, library=colour_library)
    with pytest.raises(InvalidQuery, match="too long"):
        service.search("猫" * 1001, library=colour_library)
    with pytest.raises(InvalidQuery, match="top-k"):
        service.search("red", library=colour_library, top_k=0)
    (media_root / "q.png").write_bytes(b"garbage")
    with pytest.raises(MediaError, match="unreadable image"):
        service.search(image=media_root / "q.png", library=colour_library)
    with pytest.raises(MediaError, match="empty"):
        service.search(image=b"", library=colour_library)
    with pytest.raises(NotFound, match="unknown library 'nope'"):
        service.search("red", library="nope")


def test_huge_image_is_refused_before_decoding(service, colour_library, media_root):
    from PIL import Image

    bomb = media_root / "bomb.png"
    Image.new("1", (12000, 12000)).save(bomb)  # 144 Mpx, tiny file
    with pytest.raises(MediaError, match="too large"):
        service.search(image=bomb, library=colour_library)
    [result] = service.index([bomb], library=colour_library)
    assert (result.status, result.code) == ("failed", "media_invalid")


def test_libraries_are_isolated(service, colour_library, colour_videos):
    service.create_library("other", {"modules": {"visual": {"encoder": {"backend": "color_encoder:ColorEncoder"}}}})
    assert service.search("red", library="other") == []
    service.index([colour_videos["b"]], library="other")
    assert spans(service.search("red", library="other", top_k=1)) == [("b.mp4", 2.0, 4.0)]
    # another tenant sees neither library
    with pytest.raises(NotFound):
        service.search("red", library=colour_library, tenant="acme")
    with pytest.raises(AlreadyExists):
        service.create_library("other")
    service.delete_library("other")
    with pytest.raises(NotFound):
        service.search("red", library="other")
    assert len(service.media(library=colour_library)) == 3


def test_interrupted_ingest_is_rolled_back_on_next_open(service, colour_library, env):
    """A crash after units were written but before the medium was marked ready."""
    lib = service.library(colour_library)
    media_id = lib.media.add_media(path="/x.mp4", kind="video", sha256="0" * 64, size=1, duration=1, width=2, height=2)
    lib.media.add_units(media_id, "visual", [(0.0, 1.0, 0.0)])
    service.close()

    svc = Service(Settings())
    assert svc.library(colour_library).media.unfinished() == []
    conn = sqlite3.connect(env / "libraries" / str(svc.library(colour_library).record.id) / "media.sqlite")
    assert conn.execute("SELECT COUNT(*) FROM media WHERE id=?", (media_id,)).fetchone()[0] == 0
    assert spans(svc.search("red", library=colour_library, top_k=1)) == [("b.mp4", 2.0, 4.0)]
    svc.close()


def test_a_delete_killed_inside_its_index_save_leaves_nothing_once_the_library_opens(service, colour_library, env):
    """A process dies between writing a store's new version and renaming it over the old one: the old version
    stays, and the next process to open the library removes the half-deleted medium and the temporary file."""
    b = next(m for m in service.media(library=colour_library) if m.path.endswith("b.mp4"))
    folder = env / "libraries" / str(service.library(colour_library).record.id)
    service.close()
    die_at("import zhaopian.search.stores.files as files\nfrom zhaopian.api.service import Service",
           "files.os.replace = lambda *_: os._exit(9)  # dies where the rename would be",
           f"Service().delete_medium({b.id}, {colour_library!r})")
    [leftover] = folder.glob(".*.tmp")
    os.utime(leftover, (time.time() - 3600,) * 2)  # old enough for doctor to call it a leftover

    svc = Service(Settings())
    try:
        assert not svc.library(colour_library).media.exists(b.id)
        assert not list(folder.glob(".*.tmp"))
        assert Doctor(svc).run() == []
        assert all(not r.video.endswith("b.mp4") for r in svc.search("red", library=colour_library, top_k=10))
        assert spans(svc.search("red", library=colour_library, top_k=1)) == [("a.mp4", 0.0, 3.0)]
    finally:
        svc.close()


def test_changing_the_encoder_of_an_indexed_library_is_refused(service, colour_library, env):
    import json

    from zhaopian.search.errors import ConfigError

    lib = service.library(colour_library)
    info = lib.directory / "visual.json"
    data = json.loads(info.read_text())
    info.write_text(json.dumps(data | {"encoder": "bundled"}))
    service.close()
    svc = Service(Settings())
    with pytest.raises(ConfigError, match="indexed with encoder 'bundled'"):
        svc.search("red", library=colour_library)
    svc.close()


def test_upload_is_stored_and_indexed_and_bad_upload_leaves_nothing(service, colour_library, colour_videos):
    data = colour_videos["b"].read_bytes()
    colour_videos["b"].unlink()
    service.delete_medium(next(m.id for m in service.media(library=colour_library) if m.path.endswith("b.mp4")),
                          library=colour_library)
    def upload(name: str, content: bytes):
        [job] = service.run_jobs([service.add_upload(name, content, library=colour_library)])
        return job

    result = upload("../../evil/b.mp4", data)
    assert (result.status, result.outcome) == ("done", "indexed")
    assert "/uploads/default/colours/" in result.path and result.path.endswith("/b.mp4")
    assert spans(service.search("red", library=colour_library, top_k=1))[0][1:] == (2.0, 4.0)
    again = upload("b.mp4", data)
    assert again.id == result.id  # the same file again is the same job
    bad = upload("x.mp4", b"garbage")
    assert bad.status == "failed" and bad.error.code == "media_invalid"
    upload_dir = service.settings.upload_dir / "uploads" / "default" / colour_library
    assert [p.name for p in upload_dir.rglob("*") if p.is_file()] == ["b.mp4"]  # no failed or temp files


def test_threads_sharing_the_catalog_write_without_colliding(service):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: service.create_library(f"lib{i}", {"modules": {}}), range(24)))
    assert len(service.libraries()) == 24
