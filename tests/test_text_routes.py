"""The meta and labels routes, filters, cue steering and explanations, through the service."""

from __future__ import annotations

import os
import time

import pytest
from conftest import COLOR_ENCODER
from crash import die_at
from media import BLUE, GREEN, RED, write_image, write_video
from PIL import Image

from zhaopian.api.service import Service
from zhaopian.api.settings import Settings
from zhaopian.modules.labels.module import label_text, runs
from zhaopian.search.errors import InvalidQuery, NotFound
from zhaopian.search.fusion import fuse
from zhaopian.search.library import FusionConfig
from zhaopian.search.types import Match, Segment

pytest_plugins = ["elastic"]

META_LIBRARY = {"modules": {"visual": {"encoder": COLOR_ENCODER}, "meta": {}}}


@pytest.fixture
def meta_library(service, colour_videos) -> str:
    service.create_library("meta", META_LIBRARY)
    assert all(r.status == "indexed" for r in service.index(list(colour_videos.values()), library="meta"))
    return "meta"


def medium(service, library, name):
    return next(m for m in service.media(library=library) if m.path.endswith(name))


def test_an_edit_cut_off_before_the_text_index_commit_is_indexed_when_the_library_opens(service, meta_library):
    """A crash after the catalog took the new title and before the text index committed its units: the edit
    stays (it was committed) and the next process to open the library indexes it, so a search finds it."""
    b = medium(service, meta_library, "b.mp4")
    service.close()
    die_at("from zhaopian.api.service import Service\n"
           "from zhaopian.search.stores.text_tantivy import TantivyTextIndex",
           "TantivyTextIndex.flush = lambda self: os._exit(9)  # dies where the commit would be",
           f"Service().update_medium({b.id}, 'meta', title='港珠澳大桥航拍')")

    svc = Service(Settings())
    try:
        assert svc.medium(b.id, meta_library).title == "港珠澳大桥航拍"
        found = svc.search("港珠澳大桥", library=meta_library, top_k=1, routes=["meta"])
        assert found and found[0].media_id == b.id
        assert svc.library(meta_library).media.edited() == []
    finally:
        svc.close()


def test_file_name_title_and_custom_fields_are_searchable(service, meta_library):
    b = medium(service, meta_library, "b.mp4")
    service.update_medium(b.id, meta_library, title="港珠澳大桥航拍", description="Aerial footage of the bridge",
                          tags=["航拍", "bridge"], fields={"photographer": "李雷"})
    for query, field in [("大桥", "title"), ("aerial footage", "description"), ("李雷", "photographer")]:
        response = service.search_report(query, library=meta_library, top_k=3)
        top = response.results[0]
        assert top.video.endswith("b.mp4"), query
        assert "meta" in top.routes
        match = next(m for m in top.matches if m.route == "meta")
        assert match.field == field and "<em>" in match.highlight
    # the old title ("b", from the file name) is replaced; the file name itself still finds it
    found = next(r for r in service.search("b", library=meta_library) if r.video.endswith("b.mp4"))
    assert {m.field for m in found.matches if m.route == "meta"} == {"filename"}


def test_metadata_match_strengthens_a_moment_without_widening_it(service, meta_library):
    a = medium(service, meta_library, "a.mp4")
    service.update_medium(a.id, meta_library, title="blue sky")
    top = service.search("blue", library=meta_library, top_k=1)[0]
    assert top.video.endswith("a.mp4") and (top.start, top.end) == (6.0, 10.0)
    assert set(top.routes) == {"visual", "meta"}


def test_filters_restrict_every_route(service, meta_library):
    a = medium(service, meta_library, "a.mp4")
    service.update_medium(a.id, meta_library, tags=["travel"])
    assert {r.video[-5:] for r in service.search("red #travel", library=meta_library)} == {"a.mp4"}
    assert all(r.kind == "image" for r in service.search("green type:image", library=meta_library))
    longer = service.search("red longer than 5 seconds", library=meta_library)
    assert {r.video[-5:] for r in longer} == {"a.mp4"}  # a is 10 s, b is 4 s
    assert service.search("red before 2000", library=meta_library) == []
    # only filters: the media that pass them, newest first
    assert [r.video[-5:] for r in service.search("tag:travel", library=meta_library)] == ["a.mp4"]


def test_cue_for_a_route_the_library_lacks_searches_everything_with_a_note(service, meta_library):
    response = service.search_report("说了 red", library=meta_library)
    assert response.results and response.notes and "asr" in response.notes[0]


def test_malformed_queries_get_a_clear_error_or_a_sane_result(service, meta_library):
    for query in ["？？！！", "字幕", "\x00\x07\x1b", "   "]:
        with pytest.raises(InvalidQuery, match="nothing to search for|empty query"):
            service.search(query, library=meta_library)
    with pytest.raises(InvalidQuery, match="too long"):
        service.search("猫" * 10_000, library=meta_library)
    with pytest.raises(InvalidQuery, match="impossible|contradict|longer|shorter"):
        service.search("red longer than 10 min shorter than 1 min", library=meta_library)
    assert service.search("re\x00d\u200b \x1b蓝色", library=meta_library)  # control characters dropped
    assert service.search('"unbalanced quote red', library=meta_library)


def test_deleting_a_medium_removes_its_text(service, meta_library):
    b = medium(service, meta_library, "b.mp4")
    service.update_medium(b.id, meta_library, title="港珠澳大桥")
    service.delete_medium(b.id, library=meta_library)
    lib = service.library(meta_library)
    assert b.id not in lib.text.media_ids()
    assert not any(r.video.endswith("b.mp4") for r in service.search("大桥", library=meta_library))


def test_recorded_date_comes_from_the_file(service, media_root):
    old = write_video(media_root / "old.mp4", [(RED, 2)])
    stamp = time.mktime((2019, 6, 1, 12, 0, 0, 0, 0, -1))

    os.utime(old, (stamp, stamp))
    write_video(media_root / "new.mp4", [(RED, 2)] + [(BLUE, 1)])
    service.create_library("dates", META_LIBRARY)
    service.index([media_root / "old.mp4", media_root / "new.mp4"], library="dates")
    assert {r.video[-7:] for r in service.search("red 2020年以前", library="dates")} == {"old.mp4"}
    assert {r.video[-7:] for r in service.search("red since 2021", library="dates")} == {"new.mp4"}


# -- labels ---------------------------------------------------------------------------------------
def test_label_runs_track_classes_over_time():
    times = [0.0, 1.0, 2.0, 3.0, 6.0]
    labels = [[(281, 0.6)], [(281, 0.9), (508, 0.3)], [], [(281, 0.5)], [(281, 0.7)]]
    spans = runs(times, labels, 1.0, 7.0)
    cat = [s for s in spans if s.data["class"] == 281]
    # a one-sample gap (2 s) is bridged, a 3 s gap is not
    assert [(s.start, s.end, s.thumb, s.data["score"]) for s in cat] == [(0.0, 4.0, 1.0, 0.9), (6.0, 7.0, 6.0, 0.7)]
    assert "tabby" in cat[0].text and "猫" in cat[0].text
    assert [(s.start, s.end) for s in spans if s.data["class"] == 508] == [(1.0, 2.0)]
    assert label_text(281).endswith("tabby cat")


@pytest.fixture
def photo_library(service, media_root, one_torch_thread) -> str:
    from skimage import data

    Image.fromarray(data.chelsea()).save(media_root / "p1.jpg")  # a cat
    Image.fromarray(data.coffee()).save(media_root / "p2.jpg")  # a cup of coffee
    write_video(media_root / "v.mp4", [(data.rocket(), 3), (data.chelsea(), 3)], size=(320, 240))
    service.create_library("photos", {"modules": {"labels": {}, "meta": {}}})
    results = service.index([media_root / "p1.jpg", media_root / "p2.jpg", media_root / "v.mp4"], library="photos")
    assert all(r.status == "indexed" for r in results)
    return "photos"


@pytest.mark.slow
def test_labels_find_objects_by_name_in_both_languages_and_by_image(service, photo_library):
    for query, expected in [("猫", {"p1.jpg", "v.mp4"}), ("egyptian cat", {"p1.jpg", "v.mp4"}),
                            ("espresso", {"p2.jpg"}), ("咖啡", {"p2.jpg"})]:
        results = service.search(query, library=photo_library, top_k=3)
        assert {r.video.rsplit("/", 1)[-1] for r in results} == expected, query
        for r in results:
            assert r.routes.keys() == {"labels"}
            assert any(m.route == "labels" and "<em>" in m.highlight for m in r.matches)
    cat_in_video = next(r for r in service.search("猫", library=photo_library) if r.video.endswith("v.mp4"))
    assert (cat_in_video.start, cat_in_video.end) == (3.0, 6.0)
    # a photo of a cat finds the cats through its labels
    from skimage import data

    crop = Image.fromarray(data.chelsea()[30:280, 50:400])
    top = service.search(image=crop, library=photo_library, top_k=3)
    assert {r.video.rsplit("/", 1)[-1] for r in top} == {"p1.jpg", "v.mp4"}


# -- fusion ---------------------------------------------------------------------------------------
def seg(media_id, start, end, score, route, whole=False):
    return Segment(media_id=media_id, start=start, end=end, score=score, thumbnail_time=start, routes={route: score},
                   matches=[Match(route=route, start=start, end=end, score=score, text=route, highlight=route)],
                   whole_medium=whole)


def test_fusion_keeps_every_routes_explanation():
    routes = {"ocr": [seg(1, 3, 6, 9.0, "ocr")], "asr": [seg(1, 4, 8, 5.0, "asr"), seg(2, 0, 2, 4.0, "asr")],
              "meta": [seg(1, 0, 60, 2.0, "meta", whole=True)]}
    fused = fuse(routes, FusionConfig())
    assert (fused[0].media_id, fused[0].start, fused[0].end) == (1, 3, 8)
    assert set(fused[0].routes) == {"ocr", "asr", "meta"}
    assert {m.route for m in fused[0].matches} == {"ocr", "asr", "meta"}
    assert not fused[0].whole_medium
    alone = fuse({"meta": [seg(3, 0, 60, 1.0, "meta", whole=True)], "asr": [seg(2, 0, 2, 4.0, "asr")]},
                 FusionConfig())
    assert {(s.media_id, s.start, s.end) for s in alone} == {(3, 0, 60), (2, 0, 2)}


def test_query_image_and_green_still_via_visual(service, meta_library, media_root):
    query = write_image(media_root / "q.png", GREEN)
    top = service.search(image=query, library=meta_library, top_k=1)[0]
    assert top.routes.keys() == {"visual"}  # metadata does not answer image queries


# -- the same through Elasticsearch ------------------------------------------------------------------
def test_a_library_on_elasticsearch_searches_and_deletes_like_the_embedded_one(service, colour_videos, es_url):
    config = {**META_LIBRARY, "text_index": {"backend": "elasticsearch", "url": [es_url], "index_prefix": "zp-routes"}}
    service.create_library("es", config)
    assert all(r.status == "indexed" for r in service.index(list(colour_videos.values()), library="es"))
    b = medium(service, "es", "b.mp4")
    service.update_medium(b.id, "es", title="港珠澳大桥航拍")
    top = service.search_report("大桥", library="es").results[0]
    assert top.video.endswith("b.mp4") and top.matches[0].highlight == "港珠澳<em>大桥</em>航拍"
    lib = service.library("es")
    assert lib.text.media_ids() == {m.id for m in service.media(library="es")}
    service.delete_library("es")
    import httpx

    assert httpx.head(f"{es_url}/zp-routes-default-es-text").status_code == 404


def test_a_library_filter_searches_the_libraries_it_names(service, meta_library, colour_videos):
    service.create_library("other", META_LIBRARY)
    service.index([colour_videos["b"]], library="other")
    results = service.search("red library:other library:meta", library="meta")
    assert {r.library for r in results} == {"other", "meta"}
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
    with pytest.raises(NotFound):
        service.search("red library:nope", library="meta")
