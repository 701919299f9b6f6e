"""The faces module on real photos: Eileen Collins (scikit-image's ``astronaut``, NASA, public domain)
and Grace Hopper (matplotlib's ``grace_hopper.jpg``, U.S. Navy, public domain); scikit-image's
``chelsea`` (a cat) and ``rocket`` show no human face.

The test video (640x360 at 2 fps, 1 frame sampled per second) is

    0-3 s  Eileen Collins, the picture panned by 24 px each second
    3-6 s  the rocket (no face)
    6-9 s  Grace Hopper, still
    9-11 s both, side by side

The tracker's logic (which frames are examined, when a descriptor is computed, how faces join
tracks) is tested first with a stand-in analyzer, without dlib.
"""

from __future__ import annotations

import io
import json
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from media import write_video
from PIL import Image, ImageOps
from typer.testing import CliRunner

from zhaopian.api.service import Service
from zhaopian.api.settings import Settings
from zhaopian.modules.faces.analyzer import Detection, distance_from_cosine, iou
from zhaopian.modules.faces.store import clean_name
from zhaopian.modules.faces.tracking import FaceScanner, FrameFaces, ScanConfig, Sighting, build_tracks
from zhaopian.search.errors import ConfigError, MediaError, NotFound

W, H = 640, 360

# -- without dlib: distances, boxes, the tracker ------------------------------------------------------


def test_distance_from_cosine_is_dlibs_euclidean_distance():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 0.12, (2, 50, 128)).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cosine = np.sum((a / na[:, None]) * (b / nb[:, None]), axis=1)
    assert np.allclose(distance_from_cosine(cosine, na, nb), np.linalg.norm(a - b, axis=1), atol=1e-9)
    assert float(distance_from_cosine(1.0, 1.4, 1.4)) == 0.0


def test_iou():
    assert iou((0, 0, 0.5, 0.5), (0, 0, 0.5, 0.5)) == 1.0
    assert iou((0, 0, 0.5, 0.5), (0.5, 0.5, 1, 1)) == 0.0
    assert iou((0, 0, 0.4, 0.4), (0.2, 0, 0.6, 0.4)) == pytest.approx(1 / 3)


class StandIn:
    """An analyzer that 'finds' the faces the test says are in each frame: ``faces[t]`` lists
    (box, identity); an identity's descriptor is a fixed random vector of dlib's scale."""

    def __init__(self, faces: dict[float, list[tuple[tuple[float, float, float, float], int]]]) -> None:
        self.faces = faces
        self.detected: list[float] = []
        self.described: list[tuple[float, int]] = []
        self._t = 0.0
        rng = np.random.default_rng(7)
        self.identity = {i: rng.normal(0, 0.125, 128).astype(np.float32) for i in range(10)}

    def detect(self, image, **_):
        self.detected.append(self._t)
        return [Detection(box, 1.0) for box, _ in self.faces.get(self._t, [])]

    def describe(self, image, detections):
        who = dict(self.faces[self._t])
        out = []
        for d in detections:
            self.described.append((self._t, who[d.box]))
            out.append(type("F", (), {"descriptor": self.identity[who[d.box]]})())
        return out


def _picture(faces, seed: int = 0) -> np.ndarray:
    """A grey frame with each face's box filled with its identity's own texture."""
    img = np.full((H, W, 3), 90, np.uint8)
    for box, who in faces:
        rng = np.random.default_rng(100 + who)
        x0, y0, x1, y1 = int(box[0] * W), int(box[1] * H), int(box[2] * W), int(box[3] * H)
        img[y0:y1, x0:x1] = rng.integers(0, 255, (y1 - y0, x1 - x0, 1), dtype=np.uint8)
    return img


def _scan(faces, times, config: ScanConfig | None = None, pictures=None):
    analyzer = StandIn(faces)
    scanner = FaceScanner(analyzer, config or ScanConfig())  # type: ignore[arg-type]
    out = []
    for t in times:
        analyzer._t = t
        picture = pictures[t] if pictures else _picture(faces.get(t, []))
        out.append(scanner.scan_frame(t, picture))
    return analyzer, out


LEFT, LEFT_MOVED, RIGHT = (0.1, 0.1, 0.35, 0.55), (0.13, 0.1, 0.38, 0.55), (0.6, 0.2, 0.85, 0.65)


def test_a_followed_face_is_described_once_then_every_few_seconds():
    faces = {float(t): [(LEFT if t % 2 else LEFT_MOVED, 1)] for t in range(12)}
    analyzer, frames = _scan(faces, [float(t) for t in range(12)], ScanConfig(describe_every=5))
    assert [t for t, _ in analyzer.described] == [0.0, 5.0, 10.0]  # not at every frame
    assert {s.track for f in frames for s in f.sightings} == {0}
    [track] = build_tracks(frames, 1.0, 12.0)
    assert (track.start, track.end, track.sightings, track.described) == (0.0, 12.0, 12, 3)


def test_unchanged_frames_are_not_examined():
    still = _picture([(LEFT, 1)])
    pictures = {float(t): still for t in range(5)}
    analyzer, frames = _scan({float(t): [(LEFT, 1)] for t in range(5)}, list(pictures), pictures=pictures)
    assert analyzer.detected == [0.0]
    assert [f.examined for f in frames] == [True, False, False, False, False]
    assert all(len(f.sightings) == 1 and f.sightings[0].track == 0 for f in frames)


def test_another_person_in_the_same_place_after_a_cut_starts_a_new_track():
    faces = {0.0: [(LEFT, 1)], 1.0: [(LEFT, 1)], 2.0: [(LEFT, 2)], 3.0: [(LEFT, 2)]}
    analyzer, frames = _scan(faces, [0.0, 1.0, 2.0, 3.0])
    assert [s.track for f in frames for s in f.sightings] == [0, 0, 1, 1]
    assert analyzer.described == [(0.0, 1), (2.0, 2)]  # the patch changed at 2 s: described again


def test_a_face_that_comes_back_joins_its_track_within_the_gap_only():
    faces = {0.0: [(LEFT, 1)], 1.0: [], 2.0: [(RIGHT, 1)], 6.0: [(LEFT, 1)]}
    _, frames = _scan(faces, [0.0, 1.0, 2.0, 6.0], ScanConfig(track_gap=2.0))
    assert [s.track for f in frames for s in f.sightings] == [0, 0, 1]
    tracks = build_tracks(frames, 1.0, 7.0)
    assert [(t.start, t.end) for t in tracks] == [(0.0, 3.0), (6.0, 7.0)]


def test_two_people_in_one_frame_keep_their_own_tracks():
    faces = {t: [(LEFT, 1), (RIGHT, 2)] if t < 3 else [(RIGHT, 1), (LEFT, 2)] for t in (0.0, 1.0, 2.0, 3.0, 4.0)}
    _, frames = _scan(faces, sorted(faces))
    by_track: dict[int, set[float]] = {}
    for f in frames:
        for s in f.sightings:
            by_track.setdefault(s.track, set()).add(s.t)
    assert len(by_track) == 2  # swapping places at 3 s does not swap identities
    assert all(times == {0.0, 1.0, 2.0, 3.0, 4.0} for times in by_track.values())


def test_long_tracks_are_cut():
    faces = {float(t): [(LEFT, 1)] for t in range(10)}
    _, frames = _scan(faces, [float(t) for t in range(10)], ScanConfig(max_track_seconds=4, describe_every=100))
    tracks = build_tracks(frames, 1.0, 10.0)
    assert [(t.start, t.end) for t in tracks] == [(0.0, 4.0), (4.0, 8.0), (8.0, 10.0)]


def test_track_span_thumbnail_and_mean_descriptor():
    d1, d2 = np.full(128, 0.1, np.float32), np.full(128, 0.2, np.float32)
    frames = [FrameFaces(0.0, (Sighting(0.0, 0, (0, 0, 0.2, 0.2), 0.5, d1),), True, 1),
              FrameFaces(1.0, (Sighting(1.0, 0, (0, 0, 0.4, 0.4), 0.9),), True, 0),
              FrameFaces(2.0, (Sighting(2.0, 0, (0, 0, 0.3, 0.3), 1.2, d2),), True, 1)]
    [track] = build_tracks(frames, 1.0, 2.5)
    assert (track.start, track.end, track.thumb, track.box, track.score) == (0.0, 2.5, 1.0, (0, 0, 0.4, 0.4), 1.2)
    assert np.allclose(track.descriptor, 0.15) and track.described == 2


@pytest.mark.parametrize("name,clean", [("张三", "张三"), ("  Eileen   Collins ", "Eileen Collins"), ("ＡＢ", "AB")])
def test_person_names_are_cleaned(name, clean):
    assert clean_name(name) == clean


@pytest.mark.parametrize("name", ["", "   ", "a,b", "x:y", "a" * 65, "a\x07b"])
def test_bad_person_names_are_refused(name):
    with pytest.raises(ConfigError):
        clean_name(name)


# -- real photos, real dlib -------------------------------------------------------------------------

#: dlib and its models (pip install 'zhaopian[faces]'), scikit-image and matplotlib (the photos)
REAL = all(find_spec(m) for m in ("dlib", "face_recognition_models", "skimage", "matplotlib"))
real = pytest.mark.skipif(not REAL, reason="needs pip install 'zhaopian[faces,demo,test]'")


def skphoto(name: str) -> Image.Image:
    from skimage import data

    return Image.fromarray(getattr(data, name)()).convert("RGB")


def collins() -> Image.Image:
    return skphoto("astronaut")


def hopper() -> Image.Image:
    from matplotlib import cbook

    return Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")


def _fitted(image: Image.Image, size=(W, H), dx: int = 0) -> np.ndarray:
    """The photo letterboxed on a dark frame, shifted by dx pixels."""
    canvas = Image.new("RGB", size, (25, 25, 30))
    im = image.copy()
    im.thumbnail(size)
    canvas.paste(im, ((size[0] - im.width) // 2 + dx, (size[1] - im.height) // 2))
    return np.asarray(canvas)


def _side_by_side() -> np.ndarray:
    left, right = collins().crop((100, 20, 360, 280)), hopper().crop((100, 60, 440, 400))
    canvas = Image.new("RGB", (W, H), (25, 25, 30))
    canvas.paste(Image.fromarray(_fitted(left, (W // 2, H))), (0, 0))
    canvas.paste(Image.fromarray(_fitted(right, (W // 2, H))), (W // 2, 0))
    return np.asarray(canvas)


def _jpeg(image: Image.Image, quality: int = 35) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


#: another photo of each person, as a user would upload it: a crop, mirrored or grey, recompressed
def collins_query() -> bytes:
    return _jpeg(ImageOps.mirror(collins().crop((120, 30, 330, 240))).resize((180, 180)))


def hopper_query() -> bytes:
    return _jpeg(hopper().crop((130, 100, 420, 390)).convert("L"))


COLLINS_SPANS = [(0.0, 3.0), (9.0, 11.0)]
HOPPER_SPAN = (6.0, 11.0)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faces-media")
    shots = [(_fitted(collins(), dx=24 * i), 1) for i in range(3)]
    shots += [(_fitted(skphoto("rocket")), 3), (_fitted(hopper()), 3), (_side_by_side(), 2)]
    write_video(root / "people.mp4", shots, fps=2, size=(W, H))
    skphoto("chelsea").save(root / "cat.jpg")
    return root


@pytest.fixture(scope="module")
def svc(media: Path, tmp_path_factory):
    service = Service(Settings(data_dir=tmp_path_factory.mktemp("faces-data"), media_root=media))
    service.create_library("people", {"modules": {"faces": {}}})
    results = service.index([media / "people.mp4", media / "cat.jpg"], library="people")
    assert [r.status for r in results] == ["indexed", "indexed"], results
    yield service
    service.close()


def spans(response) -> list[tuple[float, float]]:
    return sorted((r.start, r.end) for r in response.results)


@real
@pytest.mark.slow
def test_tracks_are_units_with_time_spans(svc: Service):
    lib = svc.library("people")
    rows = lib.media.conn.execute(
        "SELECT u.start, u.end, f.sightings, f.described FROM units u JOIN face_tracks f ON f.unit_id = u.id "
        "ORDER BY u.start, u.end").fetchall()
    assert [(r["start"], r["end"]) for r in rows] == [(0.0, 3.0), (6.0, 11.0), (9.0, 11.0)]
    # a descriptor per new face, none for frames that only continue a face
    assert sum(r["described"] for r in rows) <= 5 and sum(r["sightings"] for r in rows) == 3 + 5 + 2
    assert len(lib.modules["faces"]._store()) == 3  # the cat photo has no human face


@real
@pytest.mark.slow
def test_scanning_skips_unchanged_frames_and_reuses_descriptors(media: Path):
    from zhaopian.indexer.decode import iter_frames
    from zhaopian.modules.faces.analyzer import shared_analyzer

    scanner = FaceScanner(shared_analyzer(), ScanConfig())
    frames = scanner.scan(list(iter_frames(media / "people.mp4")))
    examined = [f.t for f in frames if f.examined]
    # every shot's first frame and the panned ones are examined; the still rocket and Hopper frames are not
    assert {0.0, 1.0, 2.0, 3.0, 6.0, 9.0} <= set(examined) and not {4.0, 5.0, 7.0, 8.0} & set(examined)
    assert [len(f.sightings) for f in frames] == [1, 1, 1, 0, 0, 0, 1, 1, 1, 2, 2]
    assert sum(f.described for f in frames) <= 5


@real
@pytest.mark.slow
def test_another_photo_of_a_person_finds_their_segments_only(svc: Service):
    found = svc.search_report(image=collins_query(), library="people")
    assert spans(found) == COLLINS_SPANS and found.routes == ["faces"] and not found.notes
    assert all(0.45 <= r.score <= 1 for r in found.results)
    assert found.results[0].matches[0].field == "face"
    hopper_found = svc.search_report(image=hopper_query(), library="people")
    assert spans(hopper_found) == [HOPPER_SPAN]


@real
@pytest.mark.slow
def test_a_photo_without_a_face_gives_a_note_not_an_error(svc: Service):
    found = svc.search_report(image=skphoto("chelsea"), library="people")
    assert found.results == [] and found.notes == ["no face found in the query image; the faces route was skipped"]
    tiny = svc.search_report(image=Image.new("RGB", (8, 8), (200, 150, 120)), library="people")
    assert tiny.results == [] and "too small" in tiny.notes[0]


@real
def test_a_garbage_query_image_is_media_invalid(svc: Service):
    with pytest.raises(MediaError) as caught:
        svc.search_report(image=b"GIF89a not really", library="people")
    assert caught.value.code == "media_invalid"


@real
@pytest.mark.slow
def test_registered_people_are_found_by_name(svc: Service):
    from zhaopian.modules.faces.people import add_person, list_people, remove_person

    lib = svc.library("people")
    person = add_person(lib, "Eileen Collins", [("collins.jpg", _jpeg(collins().rotate(6).resize((300, 300))))])
    assert (person.name, person.photos) == ("Eileen Collins", 1)
    add_person(lib, "格蕾丝", [("hopper.jpg", _jpeg(hopper()))])
    assert [p.name for p in list_people(lib)] == ["Eileen Collins", "格蕾丝"]

    assert spans(svc.search_report(text='person:"eileen collins"', library="people")) == COLLINS_SPANS
    assert spans(svc.search_report(text="人物:格蕾丝", library="people")) == [HOPPER_SPAN]
    # a registered name written in the text searches their faces too
    named = svc.search_report(text="格蕾丝在讲台上", library="people")
    assert named.routes == ["faces"] and spans(named) == [HOPPER_SPAN]
    assert named.results[0].matches[0].text == "格蕾丝"

    unknown = svc.search_report(text="person:张三", library="people")
    assert unknown.results == [] and "no person named '张三'" in unknown.notes[0]

    remove_person(lib, "格蕾丝")
    with pytest.raises(NotFound):
        remove_person(lib, "格蕾丝")
    assert [p.name for p in list_people(lib)] == ["Eileen Collins"]


@real
@pytest.mark.slow
def test_bad_photos_of_a_person_are_refused(svc: Service, media: Path):
    from zhaopian.modules.faces.people import add_person, list_people

    lib = svc.library("people")
    with pytest.raises(MediaError, match="cat.jpg: no face found"):
        add_person(lib, "猫", [("cat.jpg", media / "cat.jpg")])
    with pytest.raises(MediaError, match="does not look like the other photos"):
        add_person(lib, "mixed", [("a.jpg", collins_query()), ("b.jpg", hopper_query())])
    with pytest.raises(MediaError, match="too small"):
        add_person(lib, "tiny", [("t.png", _png(Image.new("RGB", (20, 20))))])
    with pytest.raises(MediaError, match="g.jpg"):
        add_person(lib, "garbage", [("g.jpg", b"\xff\xd8 not a jpeg")])
    assert not {"猫", "mixed", "tiny", "garbage"} & {p.name for p in list_people(lib)}


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_person_queries_on_a_library_without_faces_say_so(service: Service):
    service.create_library("plain", {"modules": {"meta": {}}})
    found = service.search_report(text="person:张三", library="plain")
    assert found.results == [] and "faces module" in found.notes[0]
    from zhaopian.modules.faces.people import add_person

    with pytest.raises(ConfigError, match="no faces module"):
        add_person(service.library("plain"), "张三", [])


@real
@pytest.mark.slow
def test_deleting_a_medium_removes_its_faces(media: Path, tmp_path: Path):
    service = Service(Settings(data_dir=tmp_path / "data", media_root=media))
    try:
        service.create_library("del", {"modules": {"faces": {}}})
        [result] = service.index([media / "people.mp4"], library="del")
        lib = service.library("del")
        assert len(lib.modules["faces"]._store()) == 3
        faces = lib.modules["faces"]
        assert faces.stored_units() == set(lib.media.unit_ids([result.media_id], "faces"))
        faces.compact()  # rebuilt from what it holds: the same units
        assert faces.stored_units() == set(lib.media.unit_ids([result.media_id], "faces"))
        service.delete_medium(result.media_id, library="del")
        assert len(lib.modules["faces"]._store()) == 0
        assert lib.media.conn.execute("SELECT COUNT(*) FROM face_tracks").fetchone()[0] == 0
        # another process opening the library reads the saved (empty) store
        other = Service(Settings(data_dir=tmp_path / "data", media_root=media))
        assert svc_len(other, "del") == 0
        other.close()
    finally:
        service.close()


@real
@pytest.mark.slow
def test_small_faces_in_photos_are_found(media: Path, tmp_path: Path):
    """A photo (an image medium) is upsampled before detection, like a query image: a face of
    about 50 px, which the video frames' detector would miss, is indexed (with, here, one false
    detection on the suit's patch at score 0.01: raise ``min_score`` to drop such)."""
    (media / "photos").mkdir(exist_ok=True)
    collins().resize((300, 300)).save(media / "photos" / "small.jpg")
    service = Service(Settings(data_dir=tmp_path / "data", media_root=media))
    try:
        service.create_library("photos", {"modules": {"faces": {}}})
        [result] = service.index([media / "photos" / "small.jpg"], library="photos")
        assert result.status == "indexed" and result.units >= 1
        found = service.search_report(image=collins_query(), library="photos")
        assert [(Path(r.video).name, r.start, r.end) for r in found.results] == [("small.jpg", 0.0, 0.0)]
        service.create_library("strict", {"modules": {"faces": {"min_score": 0.3}}})
        [strict] = service.index([media / "photos" / "small.jpg"], library="strict")
        assert strict.units == 1
    finally:
        service.close()


def svc_len(service: Service, library: str) -> int:
    return len(service.library(library).modules["faces"]._store())


@real
@pytest.mark.slow
def test_people_over_http(svc: Service):
    from fastapi.testclient import TestClient

    from zhaopian.api.auth import create_key
    from zhaopian.api.http import create_app

    svc.catalog.ensure_tenant(svc.settings.tenant)
    key = {"Authorization": f"Bearer {create_key(svc.catalog, svc.settings.tenant).key}"}
    with TestClient(create_app(svc)) as client:
        made = client.post("/v1/libraries/people/people", headers=key, data={"name": "Grace Hopper"},
                           files=[("photos", ("hopper.jpg", _jpeg(hopper()), "image/jpeg"))])
        assert made.status_code == 201, made.text
        assert made.json()["name"] == "Grace Hopper" and made.json()["photos"] == 1
        listed = client.get("/v1/libraries/people/people", headers=key).json()
        assert "Grace Hopper" in [p["name"] for p in listed]
        found = client.post("/v1/libraries/people/search", headers=key, json={"text": "person:\"Grace Hopper\""})
        assert [(r["start"], r["end"]) for r in found.json()["results"]] == [HOPPER_SPAN]
        by_photo = client.post("/v1/libraries/people/search/image", headers=key,
                               files={"image": ("q.jpg", collins_query(), "image/jpeg")})
        assert sorted((r["start"], r["end"]) for r in by_photo.json()["results"]) == COLLINS_SPANS
        no_face = client.post("/v1/libraries/people/people", headers=key, data={"name": "cat"},
                              files=[("photos", ("cat.jpg", _jpeg(skphoto("chelsea")), "image/jpeg"))])
        assert no_face.status_code == 422 and no_face.json()["error"]["code"] == "media_invalid"
        assert client.delete("/v1/libraries/people/people/Grace Hopper", headers=key).status_code == 204
        gone = client.delete("/v1/libraries/people/people/Grace Hopper", headers=key)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"


@real
@pytest.mark.slow
def test_people_from_the_command_line(svc: Service, media: Path, monkeypatch: pytest.MonkeyPatch):
    from zhaopian.api.cli import app

    monkeypatch.setenv("ZHAOPIAN_DATA_DIR", str(svc.settings.data_dir))
    monkeypatch.setenv("ZHAOPIAN_MEDIA_ROOT", str(media))
    photo = media / "collins.jpg"
    photo.write_bytes(_jpeg(collins()))
    runner = CliRunner()
    added = runner.invoke(app, ["faces", "add-person", "宇航员", str(photo), "--library", "people"])
    assert added.exit_code == 0, added.output
    listed = runner.invoke(app, ["faces", "people", "--library", "people", "--json"])
    assert "宇航员" in [p["name"] for p in json.loads(listed.output)]
    found = runner.invoke(app, ["search", "person:宇航员", "--library", "people"])
    assert found.exit_code == 0 and "00:00.00-00:03.00" in found.output
    refused = runner.invoke(app, ["faces", "add-person", "猫", str(media / "cat.jpg"), "--library", "people"])
    assert refused.exit_code == 1 and "error[media_invalid]" in refused.output
