"""The rule-based query rewrite (search/rewrite.py): cues, filters, phrases, malformed input."""

from __future__ import annotations

import time
from datetime import date, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError

from zhaopian.search.errors import InvalidQuery
from zhaopian.search.rewrite import (
    QUOTE_CHARS,
    ROUTES,
    RewriteConfig,
    RuleRewriter,
    _is_apostrophe,
    clean_text,
    create_rewriter,
    parse_query,
)
from zhaopian.search.rewrite_llm import LLMRewriter
from zhaopian.search.types import ParsedQuery

TODAY = date(2026, 3, 15)  # a Sunday


def parse(text: str) -> ParsedQuery:
    return parse_query(text, today=TODAY)


@pytest.fixture(scope="module", autouse=True)
def warm_up():
    """Load jieba's dictionary once, outside the timed tests."""
    parse("说")


# --- routes -----------------------------------------------------------------------------------

ROUTE_CASES = [
    # Chinese speech
    ("张三说'欢迎光临'的视频", "张三 视频", ["asr"]),
    ("他说了再见", "他 再见", ["asr"]),
    ("她说过爱我", "她 爱我", ["asr"]),
    ("有人说你好", "你好", ["asr"]),
    ("老师念课文", "老师 课文", ["asr"]),
    ("会上提到预算", "会上 预算", ["asr"]),
    ("电影台词 我爱你", "电影 我爱你", ["asr"]),
    ("对白 再见", "再见", ["asr"]),
    ("旁白：欢迎来到北京", "欢迎来到北京", ["asr"]),
    ("语音里 生日快乐", "生日快乐", ["asr"]),
    ("張三說過謝謝", "張三 謝謝", ["asr"]),  # traditional characters, kept in the text
    # Chinese on-screen text
    ("字幕 你好", "你好", ["ocr"]),
    ("中文字幕 谢谢", "中文 谢谢", ["ocr"]),
    ("画面上写着禁止吸烟", "禁止吸烟", ["ocr"]),
    ("墙上写着出口", "墙上 出口", ["ocr"]),
    ("文字 新年快乐", "新年快乐", ["ocr"]),
    ("螢幕上寫著禁止吸煙", "禁止吸煙", ["ocr"]),
    # metadata, and 标题 alone
    ("文件名 IMG_1234", "IMG_1234", ["meta"]),
    ("标题是年会", "年会", ["meta"]),
    ("标题 新年快乐", "新年快乐", ["ocr", "meta"]),
    # English
    ("the chef says delicious", "the chef delicious", ["asr"]),
    ("someone said goodbye", "goodbye", ["asr"]),
    ("a man saying thank you", "a man thank you", ["asr"]),
    ("budget mentioned in the meeting", "budget meeting", ["asr"]),
    ("she talks about climate", "she climate", ["asr"]),
    ("narration about whales", "about whales", ["asr"]),
    ("SUBTITLES goodbye", "goodbye", ["ocr"]),
    ("text on screen: sale", "sale", ["ocr"]),
    ("on-screen text exit", "exit", ["ocr"]),
    ("a sign that says exit", "exit", ["ocr"]),
    ("caption happy birthday", "happy birthday", ["ocr"]),
    ("file name report", "report", ["meta"]),
    ("a video titled summer", "a video summer", ["meta"]),
    # several cues add up
    ("字幕 and says hello", "hello", ["ocr", "asr"]),
    # a cue alone leaves no text
    ("字幕", "", ["ocr"]),
    ("says", "", ["asr"]),
]


@pytest.mark.parametrize("query,text,routes", ROUTE_CASES)
def test_cues_steer_routes_and_leave_the_text(query, text, routes):
    parsed = parse(query)
    assert parsed.routes == routes
    assert parsed.text == text
    assert parsed.source == "rules"


NON_CUES = [
    "看小说的女孩",  # 小说: novel
    "听说他来了",  # 听说: heard that
    "说明书",  # 说明: instructions
    "传说中的龙",  # 传说: legend
    "说话的人",  # 说话: talking (a scene, not what is said)
    "纪念碑",  # 纪念: commemorate
    "想念你",  # 想念: miss
    "概念车",  # 概念: concept
    "captioning workshop",
    "subtitled film",
    "sayings of confucius",
    "unsaid words",
    "essays on film",
    "textbook on the desk",
]


@pytest.mark.parametrize("query", NON_CUES)
def test_words_containing_a_cue_steer_nothing(query):
    parsed = parse(query)
    assert parsed.routes == []
    assert parsed.text == query


def test_a_cue_inside_quotes_is_literal():
    parsed = parse('"说" cat')
    assert parsed.phrases == ["说"]
    assert parsed.routes == []
    assert parsed.text == "cat"


# --- filters ----------------------------------------------------------------------------------


def d(*args: int) -> datetime:
    return datetime(*args)


DATE_CASES = [
    ("2023年以后 海边", "海边", d(2023, 1, 1), None),
    ("2023年之后", "", d(2023, 1, 1), None),
    ("2021年以来", "", d(2021, 1, 1), None),
    ("2021年起", "", d(2021, 1, 1), None),
    ("从2021年开始", "", d(2021, 1, 1), None),
    ("2023年以前", "", None, d(2023, 1, 1)),
    ("2023年之前 雪", "雪", None, d(2023, 1, 1)),
    ("2023年 婚礼", "婚礼", d(2023, 1, 1), d(2024, 1, 1)),
    ("在2023年的婚礼", "婚礼", d(2023, 1, 1), d(2024, 1, 1)),
    ("2023年5月", "", d(2023, 5, 1), d(2023, 6, 1)),
    ("2023年12月", "", d(2023, 12, 1), d(2024, 1, 1)),
    ("2023年5月3日", "", d(2023, 5, 3), d(2023, 5, 4)),
    ("2024年5月以前", "", None, d(2024, 5, 1)),
    ("2023年前后", "", d(2023, 1, 1), d(2024, 1, 1)),
    ("去年", "", d(2025, 1, 1), d(2026, 1, 1)),
    ("今年", "", d(2026, 1, 1), d(2027, 1, 1)),
    ("前年", "", d(2024, 1, 1), d(2025, 1, 1)),
    ("上个月 开会", "开会", d(2026, 2, 1), d(2026, 3, 1)),
    ("本月", "", d(2026, 3, 1), d(2026, 4, 1)),
    ("上周", "", d(2026, 3, 2), d(2026, 3, 9)),
    ("最近一周", "", d(2026, 3, 8), None),
    ("最近7天 猫", "猫", d(2026, 3, 8), None),
    ("最近三个月", "", d(2025, 12, 15), None),
    ("近5年", "", d(2021, 3, 15), None),
    ("最近半个月", "", d(2026, 2, 28), None),
    ("in 2023 wedding", "wedding", d(2023, 1, 1), d(2024, 1, 1)),
    ("during 2023", "", d(2023, 1, 1), d(2024, 1, 1)),
    ("in May 2023 party", "party", d(2023, 5, 1), d(2023, 6, 1)),
    ("since 2021", "", d(2021, 1, 1), None),
    ("since May 2021", "", d(2021, 5, 1), None),
    ("after 2021", "", d(2022, 1, 1), None),
    ("before 2020 snow", "snow", None, d(2020, 1, 1)),
    ("last year", "", d(2025, 1, 1), d(2026, 1, 1)),
    ("this year", "", d(2026, 1, 1), d(2027, 1, 1)),
    ("last month", "", d(2026, 2, 1), d(2026, 3, 1)),
    ("last week", "", d(2026, 3, 2), d(2026, 3, 9)),
    ("past week dog", "dog", d(2026, 3, 8), None),
    ("in the past 2 weeks", "", d(2026, 3, 1), None),
    ("last 3 days", "", d(2026, 3, 12), None),
    ("時長 去年", "時長", d(2025, 1, 1), d(2026, 1, 1)),
]


@pytest.mark.parametrize("query,text,after,before", DATE_CASES)
def test_date_filters(query, text, after, before):
    parsed = parse(query)
    assert (parsed.filters.recorded_after, parsed.filters.recorded_before) == (after, before)
    assert parsed.text == text


def test_relative_dates_cross_the_year():
    parsed = parse_query("上个月", today=date(2026, 1, 10))
    assert (parsed.filters.recorded_after, parsed.filters.recorded_before) == (d(2025, 12, 1), d(2026, 1, 1))
    parsed = parse_query("最近一个月", today=date(2026, 3, 31))
    assert parsed.filters.recorded_after == d(2026, 2, 28)


NOT_DATES = [
    "2023 fireworks",  # a bare number is content
    "the last day of school",
    "最近的视频",  # 最近 without a number
    "附近一周",  # 附近: nearby
    "1850年的照片",  # outside 1900-2099
]


@pytest.mark.parametrize("query", NOT_DATES)
def test_not_dates(query):
    parsed = parse(query)
    assert parsed.filters.recorded_after is None and parsed.filters.recorded_before is None
    assert parsed.text == query


DURATION_CASES = [
    ("shorter than 30 s", None, 30),
    ("shorter than 30 seconds", None, 30),
    ("shorter than 1 minute", None, 60),
    ("shorter than 2 min", None, 120),
    ("longer than 5 minutes", 300, None),
    ("under 10s", None, 10),
    ("over 5 minutes", 300, None),
    ("less than a minute", None, 60),
    ("more than an hour", 3600, None),
    ("at least 1.5 hours", 5400, None),
    ("no more than 2 mins", None, 120),
    ("30 seconds or less", None, 30),
    ("2 min or longer", 120, None),
    ("under 90 s and over 30 s", 30, 90),
    ("短于30秒", None, 30),
    ("30秒以内", None, 30),
    ("30秒内", None, 30),
    ("不超过1分钟", None, 60),
    ("不超过一分钟", None, 60),
    ("超过5分钟", 300, None),
    ("长于两分钟", 120, None),
    ("1分钟以上", 60, None),
    ("半小时以上", 1800, None),
    ("时长不到十五秒", None, 15),
    ("一百二十秒以下", None, 120),
    ("時長超過5分鐘", 300, None),
]


@pytest.mark.parametrize("query,low,high", DURATION_CASES)
def test_duration_filters(query, low, high):
    parsed = parse(query)
    assert (parsed.filters.min_duration, parsed.filters.max_duration) == (low, high)
    assert parsed.text == ""


@pytest.mark.parametrize("query", ["30秒的视频", "jumping over 2 hurdles", "shorter than abc s", "over 3 seasons"])
def test_not_durations(query):
    parsed = parse(query)
    assert parsed.filters.min_duration is None and parsed.filters.max_duration is None
    assert parsed.text == query


KIND_CASES = [
    ("type:video cat", "cat", ["video"]),
    ("type:image", "", ["image"]),
    ("type：photos 海滩", "海滩", ["image"]),  # full-width colon
    ("TYPE: Videos", "", ["video"]),
    ("类型:视频", "", ["video"]),
    ("只看视频 猫", "猫", ["video"]),
    ("只要图片", "", ["image"]),
    ("仅图片", "", ["image"]),
    ("只看視頻", "", ["video"]),
    ("images only sunset", "sunset", ["image"]),
    ("videos only", "", ["video"]),
    ("only photos of cats", "cats", ["image"]),
    ("type:video type:image", "", ["video", "image"]),
    # a bare word is content
    ("一段猫的视频", "一段猫的视频", []),
    ("a photo of a dog", "a photo of a dog", []),
    ("the only video of grandma", "the only video of grandma", []),
    ("不仅视频", "不仅视频", []),
]


@pytest.mark.parametrize("query,text,kinds", KIND_CASES)
def test_kind_filters(query, text, kinds):
    parsed = parse(query)
    assert parsed.filters.kinds == kinds
    assert parsed.text == text


TAG_CASES = [
    ("#travel 海边", "海边", ["travel"], []),
    ("#旅行# 海边", "海边", ["旅行"], []),
    ("＃travel", "", ["travel"], []),
    ("tag:beach sunset", "sunset", ["beach"], []),
    ("tags:a,b", "", ["a", "b"], []),
    ("标签:猫咪", "", ["猫咪"], []),
    ("标签：猫咪", "", ["猫咪"], []),
    ('tag:"summer trip" beach', "beach", ["summer trip"], []),
    ("#Travel #travel", "", ["Travel"], []),
    ("library:news", "", [], ["news"]),
    ("lib:archive 会议", "会议", [], ["archive"]),
    ("库:新闻 会议", "会议", [], ["新闻"]),
    ("库：新闻", "", [], ["新闻"]),
    ("C# tutorial", "C# tutorial", [], []),
    ("数据库:mysql", "数据库:mysql", [], []),
]


@pytest.mark.parametrize("query,text,tags,libraries", TAG_CASES)
def test_tag_and_library_filters(query, text, tags, libraries):
    parsed = parse(query)
    assert parsed.filters.tags == tags
    assert parsed.filters.libraries == libraries
    assert parsed.text == text


PERSON_CASES = [
    ("person:张三", "", ["张三"]),
    ("person:张三 在海边", "海边", ["张三"]),
    ("人物:张三 海边", "海边", ["张三"]),
    ("人物：张三", "", ["张三"]),
    ('person:"Eileen Collins" rocket', "rocket", ["Eileen Collins"]),
    ("Person:张三,李四 开会", "开会", ["张三", "李四"]),
    ("person:张三 person:张三", "", ["张三"]),
    ("person:", "", []),
    ("salesperson:bob", "salesperson:bob", []),
    ("a person walking", "a person walking", []),
]


@pytest.mark.parametrize("query,text,people", PERSON_CASES)
def test_person_names(query, text, people):
    """``person:`` names whom to find by face; the name leaves the text and is no phrase."""
    parsed = parse(query)
    assert (parsed.text, parsed.people, parsed.phrases) == (text, people, [])


# --- phrases ----------------------------------------------------------------------------------

PHRASE_CASES = [
    ('"hello world" sign', "sign", ["hello world"]),
    ("'欢迎光临'", "", ["欢迎光临"]),
    ("“你好” 门口", "门口", ["你好"]),
    ("‘hi there’", "", ["hi there"]),
    ("「再见」", "", ["再见"]),
    ("『晚安』", "", ["晚安"]),
    ("《流浪地球》 片段", "片段", ["流浪地球"]),
    ("«bonjour»", "", ["bonjour"]),
    ("＂full width＂", "", ["full width"]),
    ("don't stop 'believing'", "don't stop", ["believing"]),
    ("it's a dog's life", "it's a dog's life", []),
    ("‘don’t go’", "", ["don’t go"]),
    ("“他说「你好」”", "", ["他说「你好」"]),
    ('"a" and "b"', "", ["a", "b"]),
    ('"a" "a"', "", ["a"]),
    ('"" cat', "cat", []),
    ('"!!!" cat', "cat", []),
]


@pytest.mark.parametrize("query,text,phrases", PHRASE_CASES)
def test_quoted_phrases(query, text, phrases):
    parsed = parse(query)
    assert parsed.phrases == phrases
    assert parsed.text == text


# --- combinations -------------------------------------------------------------------------------


def test_chinese_and_english_combined():
    parsed = parse("去年 张三 说 '欢迎光临' 的视频 shorter than 1 min")
    assert parsed.text == "张三 视频"
    assert parsed.phrases == ["欢迎光临"]
    assert parsed.routes == ["asr"]
    assert parsed.filters.recorded_after == d(2025, 1, 1)
    assert parsed.filters.recorded_before == d(2026, 1, 1)
    assert parsed.filters.max_duration == 60
    assert parsed.filters.kinds == []  # 视频 describes the content


def test_everything_at_once():
    parsed = parse("#travel 2023年以后 只看视频 字幕 '新年快乐' 超过30秒")
    assert parsed.model_dump(exclude={"filters"}) == {
        "text": "", "phrases": ["新年快乐"], "routes": ["ocr"], "people": [], "source": "rules"}
    f = parsed.filters
    assert (f.tags, f.recorded_after, f.kinds, f.min_duration) == (["travel"], d(2023, 1, 1), ["video"], 30)


def test_english_sentence():
    parsed = parse('videos only, in 2023, someone says "happy new year" at the party, longer than 10 seconds')
    assert parsed.text == "party"
    assert parsed.phrases == ["happy new year"]
    assert parsed.routes == ["asr"]
    assert parsed.filters.kinds == ["video"]
    assert parsed.filters.min_duration == 10
    assert parsed.filters.recorded_after == d(2023, 1, 1)


def test_filters_of_one_kind_intersect():
    parsed = parse("2020年以后 2023年以后 before 2025")
    assert (parsed.filters.recorded_after, parsed.filters.recorded_before) == (d(2023, 1, 1), d(2025, 1, 1))
    parsed = parse("longer than 10 s over 30 s under 2 min shorter than 5 min")
    assert (parsed.filters.min_duration, parsed.filters.max_duration) == (30, 120)


# --- malformed input ----------------------------------------------------------------------------

MALFORMED = [
    ("!!!", "", []),
    ("，。、", "", []),
    ("", "", []),
    ("   ", "", []),
    ("\x00\x01猫\x7f", "猫", []),
    ("“unbalanced", "unbalanced", []),
    ('"a" "b', "b", ["a"]),
    ("'", "", []),
    ("「开头", "开头", []),
    ("结尾」", "结尾", []),
    ("🐱🐶", "🐱🐶", []),
    ("Café 猫 кошка 🐱", "Café 猫 кошка 🐱", []),
    ("tag:", "", []),
    ("library:", "", []),
    ("type:", "", []),
    ("#", "", []),
    ("last 99999 years", "", []),  # reaches before 1900: no filter
    ("最近0天", "最近0天", []),
]


@pytest.mark.parametrize("query,text,phrases", MALFORMED)
def test_malformed_queries_parse(query, text, phrases):
    parsed = parse(query)
    assert parsed.text == text
    assert parsed.phrases == phrases
    assert parsed.filters.empty
    assert parsed.routes == []


def test_ten_thousand_characters():
    query = "猫在键盘上 cat on keyboard " * 400
    start = time.perf_counter()
    parsed = parse(query)
    assert time.perf_counter() - start < 3
    assert parsed.text == clean_text(query)


INVALID = [
    ("type:audio", "video or image"),
    ("longer than 10 min shorter than 1 min", "contradict"),
    ("超过5分钟 30秒以内", "contradict"),
    ("2023年以后 2020年以前", "contradict"),
    ("2023年 2024年", "contradict"),
    ("2023年13月", "no month 13"),
    ("2023年2月30日", "no such date"),
    ('type:"sound"', "video or image"),
]


@pytest.mark.parametrize("query,message", INVALID)
def test_filters_that_cannot_hold_are_invalid(query, message):
    with pytest.raises(InvalidQuery, match=message) as caught:
        parse(query)
    assert caught.value.code == "query_invalid"


# --- properties ---------------------------------------------------------------------------------

TOKENS = [
    "说", "念", "小说", "字幕", "标题", "是", "写着", "says", "caption", "'", '"', "“", "”", "‘", "’", "「", "」",
    "《", "》", "«", "»", "tag:", "#", "library:", "type:", "库:", "标签：", "video", "视频", "只看", "only", "images",
    "2023年", "以后", "以前", "5月", "31日", "in", "since", "after", "before", "2021", " ", "，", "的", "and",
    "shorter than", "over", "1", "30", "0.5", "秒", "分钟", "超过", "以内", "a", "min", "s", "最近", "一", "十", "半",
    "周", "个月", "last", "past", "year", "month", "week", "don", "t", "x", "猫", "🐱", "\x00", "\u200b", "：",
    "＂", "99999999", "2099年", "12月", "上个月", "去年", "\n", "-", ".",
]
tricky = st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)


def check(query: str) -> ParsedQuery | None:
    """parse_query's contract on any input; returns the parse, or None for InvalidQuery."""
    try:
        parsed = parse(query)
    except InvalidQuery as exc:
        assert exc.message
        return None
    assert isinstance(parsed, ParsedQuery)
    cleaned = clean_text(query) or ""
    for i, ch in enumerate(parsed.text):  # no quote mark is left, only apostrophes inside words
        assert ch not in QUOTE_CHARS or _is_apostrophe(parsed.text, i), (query, parsed.text)
    assert parsed.text == parsed.text.strip() and "\x00" not in parsed.text
    for phrase in parsed.phrases:
        assert phrase and phrase == phrase.strip() and phrase in cleaned
    assert set(parsed.routes) <= set(ROUTES)
    f = parsed.filters
    if f.min_duration is not None and f.max_duration is not None:
        assert f.min_duration <= f.max_duration
    if f.recorded_after is not None and f.recorded_before is not None:
        assert f.recorded_after < f.recorded_before
    return parsed


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=80))
def test_any_text_parses_or_is_invalid(query):
    check(query)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tricky)
def test_tricky_mixtures_parse_or_are_invalid(query):
    check(query)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=4).map("".join), st.integers(1000, 5000))
def test_long_adversarial_inputs_are_fast(unit, repeat):
    query = (unit * repeat)[:10_000]
    start = time.perf_counter()
    check(query)
    assert time.perf_counter() - start < 3.0, (unit, repeat)


@pytest.mark.parametrize("query", [
    "1" * 10_000, "说" * 10_000, "'" * 10_000, "“" * 10_000, "in " * 3_000, "#" * 10_000, "tag:" * 2_500,
    "a'" * 5_000, "'a " * 3_000, "2023年" * 1_600, "shorter than 1" * 700, "一" * 10_000, "最近一" * 3_000,
    "说'" * 5_000, "'" + "a" * 9_998 + "'", "30 seconds or" * 700, "1." * 5_000, "type:" * 2_000,
])
def test_pathological_inputs_are_fast(query):
    start = time.perf_counter()
    check(query)
    assert time.perf_counter() - start < 3.0


# --- rewriters ----------------------------------------------------------------------------------


def test_rule_rewriter_is_the_default():
    rewriter = create_rewriter()
    assert isinstance(rewriter, RuleRewriter)
    assert rewriter.rewrite("字幕 你好", today=TODAY) == parse("字幕 你好")
    assert isinstance(create_rewriter(RewriteConfig()), RuleRewriter)


def test_llm_url_selects_the_llm_rewriter():
    config = RewriteConfig(llm_url="http://127.0.0.1:9/v1", llm_model="m", llm_api_key=SecretStr("sk-secret"))
    rewriter = create_rewriter(config)
    try:
        assert isinstance(rewriter, LLMRewriter)
        assert "sk-secret" not in repr(rewriter) and "sk-secret" not in repr(config)
    finally:
        rewriter.close()


def test_llm_url_needs_a_model():
    with pytest.raises(ValidationError, match="llm_model"):
        RewriteConfig(llm_url="http://127.0.0.1:9/v1")
    with pytest.raises(ValidationError):
        RewriteConfig(timeout=0)
