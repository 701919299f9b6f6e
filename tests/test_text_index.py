"""Conformance tests of the text index: every backend must find, filter, remove and highlight alike."""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from zhaopian.search.errors import ConfigError, StoreUnavailable
from zhaopian.search.stores.text import (
    TextDoc,
    TextIndex,
    TextIndexConfig,
    TextIndexLocation,
    TextQuery,
    create_text_index,
)

pytest_plugins = ["elastic"]

BACKENDS = ["tantivy", "elasticsearch"]

OpenIndex = Callable[..., TextIndex]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "tantivy" and importlib.util.find_spec("zhaopian.search.stores.text_tantivy") is None:
        pytest.skip("the tantivy text index is not available")
    return request.param


@pytest.fixture
def open_index(backend: str, request: pytest.FixtureRequest, tmp_path: Path):
    """Opens the text index of (tenant, library) for this backend; every index is dropped at the end."""
    config = TextIndexConfig(backend=backend)
    if backend == "elasticsearch":
        # a prefix of its own keeps this test's indexes apart from the others' on the shared server
        config = TextIndexConfig(backend=backend, url=[request.getfixturevalue("es_url")],
                                 index_prefix=f"test-{uuid.uuid4().hex[:12]}")
    opened: list[TextIndex] = []

    def open_(tenant: str = "default", library: str = "lib") -> TextIndex:
        directory = tmp_path / tenant / library
        directory.mkdir(parents=True, exist_ok=True)
        index = create_text_index(config, TextIndexLocation(directory, tenant, library))
        opened.append(index)
        return index

    yield open_
    for index in opened:
        index.drop()
        index.close()


@pytest.fixture
def index(open_index: OpenIndex) -> TextIndex:
    return open_index()


def doc(unit_id: int, text: str, media_id: int = 1, module: str = "ocr", field: str = "text", **extra) -> TextDoc:
    return TextDoc(unit_id=unit_id, media_id=media_id, module=module, start=float(unit_id), end=unit_id + 1.5,
                   text=text, field=field, **extra)


def ids(index: TextIndex, text: str = "", k: int = 10, **query) -> list[int]:
    return [h.unit_id for h in index.search(TextQuery(text=text, **query), k)]


CORPUS = [
    doc(1, "我的猫在键盘上睡觉", media_id=1, module="ocr"),
    doc(2, "南京市长江大桥", media_id=1, module="asr", lang="zh"),
    doc(3, "The speaker mentions the budget twice", media_id=2, module="asr", lang="en"),
    doc(4, "Cat on keyboard", media_id=2, module="ocr"),
    doc(5, "keyboard on cat", media_id=3, module="ocr"),
    doc(6, "结婚的和尚未结婚的", media_id=3, module="asr"),
    doc(7, "Holiday in Beijing", media_id=3, module="meta", field="title"),
    doc(8, "beijing, travel, 北京", media_id=3, module="meta", field="tags"),
]


@pytest.fixture
def filled(index: TextIndex) -> TextIndex:
    index.add(CORPUS)
    index.flush()
    return index


def test_finds_chinese_words_and_stemmed_english_words(filled: TextIndex):
    assert ids(filled, "键盘") == [1]
    assert ids(filled, "mentioned") == [3]  # mentions ~ mentioned
    assert ids(filled, "budgets") == [3]
    assert ids(filled, "北京") == [8]  # not 南京 of unit 2: a shared character is not a match
    assert ids(filled, "giraffe") == []


def test_every_backend_stems_english_alike(index: TextIndex):
    # Porter2 stems: died ~ dying, and generously is not generalization (Porter1 makes both "gener")
    index.add([doc(1, "the plant died"), doc(2, "he gave generously"), doc(3, "skies over the city")])
    index.flush()
    assert ids(index, "dying") == [1]
    assert ids(index, "generalization") == []
    assert ids(index, "sky") == [3]
    assert index.search(TextQuery(text="sky"), 1)[0].highlight == "<em>skies</em> over the city"


def test_chinese_segmented_differently_in_query_and_text_still_matches(filled: TextIndex):
    # jieba splits 南京市/长江大桥 and 和/尚未: only the character bigrams find 市长 and 和尚
    assert ids(filled, "市长") == [2]
    assert ids(filled, "和尚") == [6]


def test_hits_carry_the_unit_and_best_first(filled: TextIndex):
    hits = filled.search(TextQuery(text="cat keyboard"), 10)
    assert {h.unit_id for h in hits} == {4, 5}
    hit = next(h for h in hits if h.unit_id == 4)
    assert (hit.media_id, hit.module, hit.field, hit.start, hit.end, hit.text) == (
        2, "ocr", "text", 4.0, 5.5, "Cat on keyboard")
    assert all(h.score > 0 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    zh = filled.search(TextQuery(text="长江"), 1)[0]
    assert zh.lang == "zh"
    assert len(filled.search(TextQuery(text="cat keyboard"), 1)) == 1


def test_more_query_words_matched_rank_higher(index: TextIndex):
    index.add([doc(1, "red car"), doc(2, "red car parked by a red house"), doc(3, "a blue car")])
    index.flush()
    assert ids(index, "red house car")[0] == 2


def test_data_round_trips(index: TextIndex):
    box = {"box": [[1, 2], [30, 2], [30, 14], [1, 14]], "score": 0.97, "lines": ["a", "b"]}
    index.add([doc(1, "text in a box", data=box)])
    index.flush()
    assert index.search(TextQuery(text="box"), 1)[0].data == box


def test_phrases_are_exact(filled: TextIndex):
    assert ids(filled, phrases=("cat on keyboard",)) == [4]
    assert ids(filled, phrases=("CAT ON KEYBOARD",)) == [4]  # case-insensitive
    assert ids(filled, phrases=("猫在键盘",)) == [1]
    assert ids(filled, phrases=("键盘在猫",)) == []
    assert ids(filled, phrases=("on keyboard", "cat")) == [4]  # every phrase is required
    assert ids(filled, phrases=("keyboard", "giraffe")) == []


def test_phrases_filter_and_words_rank(filled: TextIndex):
    hits = filled.search(TextQuery(text="mentions", phrases=("keyboard",)), 10)
    assert {h.unit_id for h in hits} == {4, 5}  # the phrase is required; "mentions" matches neither
    assert ids(filled, "keyboard", phrases=("on cat",)) == [5]


def test_phrase_candidates_are_checked_beyond_the_first_page(index: TextIndex):
    # short decoys hold every bigram of the phrase (and rank first), not the phrase;
    # the one long unit that has it is found anyway
    index.add([doc(i, "猫在，在键，键盘", media_id=i) for i in range(1, 301)])
    index.add([doc(1000, "那天下午有一只很胖很胖的猫在键盘上面睡了很久很久", media_id=1000)])
    index.flush()
    assert ids(index, phrases=("猫在键盘",), k=5) == [1000]


def test_filters_by_module_field_and_media(filled: TextIndex):
    assert ids(filled, "keyboard cat", modules=("ocr",)) and set(ids(filled, "keyboard cat", modules=("ocr",))) == {4, 5}
    assert ids(filled, "keyboard cat", modules=("asr",)) == []
    assert set(ids(filled, "beijing")) == {7, 8}
    assert ids(filled, "beijing", fields=("title",)) == [7]
    assert ids(filled, "beijing", fields=("tags", "title"), media_ids=(3,), modules=("meta",)) in ([7, 8], [8, 7])
    assert ids(filled, "keyboard", media_ids=(3,)) == [5]
    assert ids(filled, "keyboard", media_ids=(1, 2)) == [4]
    assert ids(filled, "keyboard", media_ids=()) == []


def test_not_visible_before_flush(index: TextIndex):
    index.add([doc(1, "pending words")])
    assert ids(index, "pending") == []
    assert index.count() == 0
    index.flush()
    assert ids(index, "pending") == [1]
    assert index.count() == 1


def test_count_and_media_ids(filled: TextIndex):
    assert filled.count() == len(CORPUS)
    assert filled.count("ocr") == 3
    assert filled.count("meta") == 2
    assert filled.count("labels") == 0
    assert filled.media_ids() == {1, 2, 3}


def test_remove_by_media_and_by_module(filled: TextIndex):
    filled.remove([3], module="meta")
    filled.flush()
    assert ids(filled, "beijing") == []
    assert ids(filled, "keyboard", media_ids=(3,)) == [5]  # media 3's other modules stay
    filled.remove([1, 3])
    filled.remove([99])  # unknown media: nothing to do
    assert filled.count() == 6  # not before flush
    filled.flush()
    assert filled.media_ids() == {2}
    assert filled.count() == 2
    assert ids(filled, "键盘") == [] and ids(filled, "keyboard") == [4]


def test_remove_then_add_in_one_flush_applies_in_order(filled: TextIndex):
    filled.remove([2])
    filled.add([doc(40, "re-indexed keyboard", media_id=2)])
    filled.flush()
    assert sorted(ids(filled, "keyboard")) == [5, 40]
    assert filled.count() == len(CORPUS) - 2 + 1


def test_re_adding_a_unit_replaces_it(filled: TextIndex):
    filled.add([doc(4, "Cat on keyboard"), doc(4, "Cat on keyboard again")])
    filled.flush()
    filled.add([doc(4, "Cat on keyboard, third time")])
    filled.flush()
    assert filled.count() == len(CORPUS)
    hits = filled.search(TextQuery(text="keyboard"), 10)
    assert sorted(h.unit_id for h in hits) == [4, 5]
    assert next(h.text for h in hits if h.unit_id == 4) == "Cat on keyboard, third time"


def test_highlights_wrap_matches_in_em(filled: TextIndex):
    [hit] = filled.search(TextQuery(text="mentioned budget"), 1)
    assert hit.highlight == "The speaker <em>mentions</em> the <em>budget</em> twice"
    [hit] = filled.search(TextQuery(text="键盘"), 1)
    assert hit.highlight == "我的猫在<em>键盘</em>上睡觉"
    [hit] = filled.search(TextQuery(phrases=("on keyboard",)), 1)
    assert hit.highlight == "Cat <em>on keyboard</em>"


def test_highlight_escapes_html(index: TextIndex):
    index.add([doc(1, "<b>bold</b> & keyboard")])
    index.flush()
    assert index.search(TextQuery(text="keyboard"), 1)[0].highlight == "&lt;b&gt;bold&lt;/b&gt; &amp; <em>keyboard</em>"


@pytest.mark.parametrize("query", [TextQuery(), TextQuery(text="   "), TextQuery(phrases=("", " ")),
                                   TextQuery(text="!!! ,,,")])
def test_empty_queries_find_nothing(filled: TextIndex, query: TextQuery):
    assert filled.search(query, 10) == []


def test_searching_an_index_never_written_finds_nothing(index: TextIndex):
    assert index.search(TextQuery(text="anything"), 10) == []
    assert index.count() == 0
    assert index.media_ids() == set()


def test_writes_persist_across_reopening(open_index: OpenIndex):
    first = open_index("acme", "films")
    first.add(CORPUS[:3])
    first.flush()
    first.close()
    again = open_index("acme", "films")
    assert again.count() == 3
    assert ids(again, "键盘") == [1]


def test_tenants_and_libraries_never_share_an_index(open_index: OpenIndex):
    acme, other_tenant, other_library = open_index("acme", "films"), open_index("zeta", "films"), open_index("acme", "clips")
    acme.add([doc(1, "acme keyboard")])
    other_tenant.add([doc(1, "zeta keyboard"), doc(2, "zeta cat")])
    acme.flush()
    other_tenant.flush()
    assert [h.text for h in acme.search(TextQuery(text="keyboard"), 10)] == ["acme keyboard"]
    assert [h.text for h in other_tenant.search(TextQuery(text="keyboard"), 10)] == ["zeta keyboard"]
    assert other_library.count() == 0 and acme.count() == 1 and other_tenant.count() == 2
    other_tenant.remove([1])
    other_tenant.flush()
    assert acme.count() == 1


def test_drop_removes_everything(open_index: OpenIndex):
    index = open_index("acme", "films")
    index.add(CORPUS)
    index.flush()
    index.drop()
    assert index.count() == 0 and index.media_ids() == set()
    assert ids(index, "keyboard") == []
    index.close()
    assert open_index("acme", "films").count() == 0


def test_media_ids_page_through_many_media(index: TextIndex, monkeypatch: pytest.MonkeyPatch):
    import zhaopian.search.stores.text_elastic as text_elastic

    monkeypatch.setattr(text_elastic, "MEDIA_PAGE", 7)  # only the elasticsearch backend pages
    index.add([doc(i, f"unit {i}", media_id=1000 + i % 50) for i in range(200)])
    index.flush()
    assert index.media_ids() == set(range(1000, 1050))


# elasticsearch only ------------------------------------------------------------------------------

def test_index_names_are_scoped_by_tenant_and_library(tmp_path: Path):
    names = {TextIndexLocation(tmp_path, t, lib).index_name("zhaopian") for t in ("a", "b") for lib in ("x", "y")}
    assert len(names) == 4
    assert TextIndexLocation(tmp_path, "Acme Corp", "Films/2024").index_name("zp") == "zp-acme_corp-films_2024-text"


def test_elasticsearch_needs_a_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv("ZHAOPIAN_ES_URL", raising=False)
    location = TextIndexLocation(tmp_path, "acme", "films")
    with pytest.raises(ConfigError, match="ZHAOPIAN_ES_URL"):
        create_text_index(TextIndexConfig(backend="elasticsearch"), location)
    monkeypatch.setenv("ZHAOPIAN_ES_URL", "http://127.0.0.1:1, http://127.0.0.1:2")
    index = create_text_index(TextIndexConfig(backend="elasticsearch"), location)
    assert index.urls == ["http://127.0.0.1:1", "http://127.0.0.1:2"]  # type: ignore[attr-defined]


def test_elasticsearch_unreachable_is_a_clear_error(tmp_path: Path):
    from elastic import _free_port

    url = f"http://127.0.0.1:{_free_port()}"
    config = TextIndexConfig(backend="elasticsearch", url=[url], timeout=1)
    index = create_text_index(config, TextIndexLocation(tmp_path, "acme", "films"))  # connects lazily: no error yet
    index.add([doc(1, "keyboard")])
    with pytest.raises(StoreUnavailable, match=url):
        index.flush()
    with pytest.raises(StoreUnavailable) as err:
        index.search(TextQuery(text="keyboard"), 10)
    assert err.value.code == "store_unavailable"


def test_elasticsearch_flush_lists_refused_units(es_url: str, tmp_path: Path):
    config = TextIndexConfig(backend="elasticsearch", url=[es_url], index_prefix=f"test-{uuid.uuid4().hex[:12]}")
    index = create_text_index(config, TextIndexLocation(tmp_path, "acme", "films"))
    try:
        index.add([doc(1, "good keyboard"), TextDoc(7, 1, "ocr", "not a time", 2.0, "bad keyboard")])  # type: ignore[arg-type]
        with pytest.raises(StoreUnavailable, match=r"refused 1 of 2 units: index 7: "):
            index.flush()
        index.add([doc(2, "another keyboard")])
        index.flush()  # the failed batch is not sent again
        # no multi-document transactions: the accepted unit was written (recovery removes its media)
        assert sorted(ids(index, "keyboard")) == [1, 2]
    finally:
        index.drop()
        index.close()
