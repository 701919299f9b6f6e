"""Query rewrite: what an editor types -> :class:`ParsedQuery` (text, phrases, routes, filters).

:func:`parse_query` is the rule-based rewriter for Chinese and English. It reads
the query after :func:`clean_text` (NFKC, so full-width
``：＃１`` arrive as ``:#1``; control characters and runs of spaces become one
space), takes out everything it understands and leaves the rest as ``text``.
Traditional characters are read as simplified ones (說過 is 说过, 時長超過5分鐘
is a duration) while phrases, tags and the text keep what the user typed. An LLM
can do the same job (``search/rewrite_llm.py``); :func:`create_rewriter` picks a
rewriter from a :class:`RewriteConfig`.

Phrases (``phrases``: exact text, quote marks removed)
------------------------------------------------------

==================================  ================================================
``"…"`` ``“…”`` ``‘…’`` ``「…」``     the text between the marks, trimmed
``『…』`` ``《…》`` ``«…»``            (``《…》`` is a title: a phrase too)
``'…'``                             only where it is a quote: an ``'`` (or ``’``)
                                    between two Latin letters or digits is an
                                    apostrophe (don't, rock'n'roll) and stays
``tag:"two words"``                 a quoted value after ``tag:``, ``library:`` or
                                    ``type:`` is that filter's value, not a phrase
==================================  ================================================

A quote mark without its partner becomes a space, so the text keeps no quote
marks except apostrophes. A phrase without a letter, digit or symbol (``"!!!"``,
``""``) is dropped. Quoted text is literal: no cue or filter inside quotes is read.

Routes (``routes``: only these modules run); a cue is removed from the text
----------------------------------------------------------------------------

=========  =========================================================================
route      cues
=========  =========================================================================
asr        说† 说了† 说过† 有人说† 念† 讲到 提到 提及 台词 对白 旁白 语音里 语音中;
           says said saying mentions mentioned mentioning, talks/talked/talking about,
           someone/somebody says/said, narration, voiceover, voice-over
ocr        字幕 文字 (文字幕 is …字幕) 写着 画面上写着 屏幕上写着 萤幕上写着;
           caption(s) subtitle(s), text on (the) screen, on-screen text,
           sign that says, sign saying
meta       文件名 文件名是/为/叫, 标题是/为/叫 (a statement about the medium's title);
           file name (is), filename (is), file named, titled
ocr, meta  标题 alone: a title may be the medium's or one shown on screen
=========  =========================================================================

English cues are whole words, any case ("captioning", "sayings" are no cues).
Chinese is written without spaces, so cues match inside the text, except those
marked † which count only where jieba's dictionary segmentation (no HMM) puts a
word boundary on both sides: 小说 听说 据说 说明 说话 传说 纪念 想念 概念 are
words of their own and steer nothing (nor does 小明说, which jieba reads as
小 明说: precision before recall). A query of a cue alone ("字幕") keeps the route
and leaves ``text`` empty.

Filters (``filters``), removed from the text
--------------------------------------------

Dates are half-open, ``recorded_after <= recorded < recorded_before``, at local
midnight; ``today`` (a parameter, for tests) anchors relative forms.

============================================  =============================================
form                                          filter
============================================  =============================================
2023年  2023年5月  2023年5月3日  2023年前后/左右  the whole year / month / day
in/during/from 2023, in May 2023, May 2023    the whole year / month
2023年以后/之后/以来/起/开始/后/至今, 从/自2023年   from the start of 2023 (Chinese counts 2023 in)
since 2021, since May 2021                    from the start of the period
after 2021                                    from the end of the period (2022-01-01)
2023年以前/之前/前, before 2020, before May 2020  before the start of the period
今年 去年 前年, this year, last year            the calendar year
本月 这个月 上个月 上月, this/last month         the calendar month
本周 这周 上周 上星期 上个星期, this/last week    the calendar week, Monday first
最近/过去/近 N 天/日/周/星期/个月/年;             from today minus N units, no end
past week/month/year, past/last N days/...      (最近一周, 最近7天, past 2 weeks)
============================================  =============================================

Years are 1900–2099; other numbers stay text (``2000年前`` reads "before 2000";
a bare "2023" in English is content, as in "2023 fireworks"). A rolling period
reaching before 1900 filters nothing.

==================================================  ====================================
form (N: digits, a/an/one…ten, 一 两 十五 半 …)          filter
==================================================  ====================================
shorter than, less than, under, at most,            ``max_duration`` in seconds
no more/longer than N s/sec/second(s)/min/          (bounds are inclusive)
minute(s)/h/hr/hour(s); N unit or less/shorter
longer than, more than, over, at least,             ``min_duration``
no less/shorter than N unit; N unit or more/longer
短于 少于 小于 低于 不超过 不到 不足 最多 至多            ``max_duration``
N秒/分钟/小时; N秒/分钟/小时 以内/之内/内/以下
长于 多于 大于 高于 超过 至少 最少 不少于               ``min_duration``
N秒/分钟/小时; N秒/分钟/小时 以上/之上
==================================================  ====================================

A leading 时长/长度 goes with the duration. A bare duration ("30秒的视频") is
content, not a filter.

=================================================  ====================================
form                                               filter
=================================================  ====================================
type:video, type:image (and videos clip(s) movie,  ``kinds``; several forms add up
photo(s) picture(s) pic(s) still(s), 视频 影片 录像,
图片 照片 图像 相片), kind:…, 类型:…;
只看/只要/只搜/只找/只显示/仅看/仅搜/仅限/仅 视频|图片|…;
only videos/images/photos/pictures/clips, videos only, …
#tag, #标签#, tag:x, tags:x,y, 标签:x                 ``tags`` (each must hold)
library:name, lib:name, 库:name                     ``libraries``
person:name, 人物:name (person:"two words", a,b)     ``people`` (searched by their faces)
=================================================  ====================================

A bare word is content, not a kind filter: in "一段猫的视频" or "a photo of a
dog" it describes what to find (and "only video" in "the only video of…" is no
filter: only the plural forms are). A key must start a word (``数据库:x`` and
``C#`` are no filters); ASCII and full-width colons both work. Filters of one
kind intersect: the latest start, the earliest end, the largest minimum, the
smallest maximum.

Text
----

What remains, where each removed part leaves a cut. At a cut, connectors (的 和
与 在 了 …, and or with of in the that who …) and punctuation are trimmed, so
"张三 说 '欢迎光临' 的视频" leaves "张三 视频", while "红色的车" keeps its 的.
Punctuation is trimmed at both ends of the text; a text without a letter,
digit or symbol is empty.

Errors
------

:func:`parse_query` takes any string and answers in time linear in its length
(the engine caps queries at 1000 characters; the parser does not rely on it).
It raises :class:`InvalidQuery` only for a filter the user clearly wrote that
cannot hold:

* contradictory filters: "longer than 10 min shorter than 1 min", "2023年以后 2020年以前";
* an impossible date: "2023年13月", "2023年2月30日";
* a ``type:`` value that is neither video nor image: "type:audio".

A key without a value ("tag:" alone) is dropped: nothing to filter by. Words
that do not parse as a filter ("shorter than abc s") are no filter and stay in
the text. An empty result (a cue alone, only punctuation) is returned as it is;
the caller decides whether filters alone make a query.
"""

from __future__ import annotations

import calendar
import re
import threading
import unicodedata
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

import jieba
import opencc
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from .errors import InvalidQuery
from .stores.text_analysis import jieba_lock
from .types import ParsedQuery, QueryFilters

__all__ = [
    "ROUTES",
    "RewriteConfig",
    "Rewriter",
    "RuleRewriter",
    "create_rewriter",
    "parse_query",
]

#: the search modules a query can be steered to
ROUTES = ("visual", "ocr", "asr", "labels", "meta")

CUT = "\x00"  # marks a removed part; clean_text turned every control character into a space

# --- quotes -------------------------------------------------------------------------------

QUOTE_PAIRS = {'"': '"', "'": "'", "“": "”", "‘": "’", "「": "」", "『": "』", "《": "》", "«": "»"}
QUOTE_CHARS = frozenset(QUOTE_PAIRS) | frozenset(QUOTE_PAIRS.values())
APOSTROPHES = frozenset("'’")



def clean_text(text: str | None) -> str | None:
    """Normalise a text query: NFKC, control characters dropped, whitespace collapsed."""
    if text is None:
        return None
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    text = re.sub(r"\s+", " ", text).strip()
    return text or None

def _latin(ch: str) -> bool:
    """A letter or digit of an alphabetic script (not CJK): what an apostrophe sits between."""
    return ch.isalnum() and ord(ch) < 0x2E80


def _is_apostrophe(text: str, i: int) -> bool:
    return (text[i] in APOSTROPHES and 0 < i < len(text) - 1
            and _latin(text[i - 1]) and _latin(text[i + 1]))


def _can_open(text: str, i: int) -> bool:
    if text[i] != "'":
        return text[i] in QUOTE_PAIRS
    before = text[i - 1] if i > 0 else " "
    after = text[i + 1] if i + 1 < len(text) else " "
    return not _latin(before) and not after.isspace()


def _can_close(text: str, i: int) -> bool:
    if _is_apostrophe(text, i):
        return False
    if text[i] != "'":
        return True
    before = text[i - 1] if i > 0 else " "
    after = text[i + 1] if i + 1 < len(text) else " "
    return not before.isspace() and not _latin(after)


KEYS = r"tags?|标签|library|lib|库|type|kind|类型|person|人物"
KEY_BEFORE_QUOTE = re.compile(rf"(?<![\w])(?P<key>{KEYS}) ?: ?$", re.IGNORECASE)


def _meaningful(text: str) -> bool:
    """Has a letter, a digit or a symbol such as an emoji (not only punctuation and spaces)."""
    return any(unicodedata.category(ch)[0] in "LN" or unicodedata.category(ch) == "So" for ch in text)


# --- filters --------------------------------------------------------------------------------

KIND_WORDS = {
    "video": "video", "videos": "video", "clip": "video", "clips": "video", "movie": "video",
    "视频": "video", "影片": "video", "录像": "video",
    "image": "image", "images": "image", "photo": "image", "photos": "image", "picture": "image",
    "pictures": "image", "pic": "image", "pics": "image", "still": "image", "stills": "image",
    "图片": "image", "照片": "image", "图像": "image", "相片": "image",
}
VALUE = r"\w[\w-]*(?:[.,、]\w[\w-]*)*"
KEY_VALUE = re.compile(rf"(?<![\w])(?P<key>{KEYS}) ?: ?(?P<value>{VALUE})?", re.IGNORECASE)
HASHTAG = re.compile(r"(?<![\w&#])#(?P<value>\w[\w-]*)(?:#(?!\w))?")

ZH_KIND = re.compile(r"(?:只看|只要|只搜|只找|只显示|仅看|仅搜|仅限|(?<!不)仅)\s?(?P<kind>视频|影片|图片|照片|图像|相片)")
EN_KIND = re.compile(
    r"(?<![A-Za-z0-9])(?:only (?P<a>videos|images|photos|pictures|clips)"
    r"|(?P<b>videos|images|photos|pictures|clips) only)(?![A-Za-z0-9])",
    re.IGNORECASE,
)

CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
CN_NUMBER = "[零〇一二两三四五六七八九十百半]{1,6}"
EN_NUMBER_WORDS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "fifteen": 15, "twenty": 20, "thirty": 30, "forty": 40,
    "fifty": 50, "sixty": 60, "ninety": 90,
}
NUMBER = r"(?<![\d.])\d{1,6}(?:\.\d{1,3})?"
EN_NUMBER = rf"{NUMBER}|" + "|".join(sorted(EN_NUMBER_WORDS, key=len, reverse=True))


def _cn_number(text: str) -> float | None:
    """一 -> 1, 十五 -> 15, 一百零五 -> 105, 两 -> 2, 半 -> 0.5; None for what is not a number."""
    if text == "半":
        return 0.5
    total, digit, last_unit = 0, None, 1000
    for ch in text:
        if ch in CN_DIGITS:
            if digit:  # two digits in a row ("二三")
                return None
            digit = CN_DIGITS[ch]
        elif ch in "十百":
            unit = 10 if ch == "十" else 100
            if unit >= last_unit or (digit is None and total):
                return None
            total += (1 if digit is None else digit) * unit
            digit, last_unit = None, unit
        else:
            return None
    return float(total + (digit or 0))


def _number(text: str) -> float | None:
    text = text.lower()
    if text in EN_NUMBER_WORDS:
        return float(EN_NUMBER_WORDS[text])
    if text[0].isdigit():
        return float(text)
    return _cn_number(text)


EN_UNITS = {"s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1, "min": 60, "mins": 60, "minute": 60,
            "minutes": 60, "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600}
EN_UNIT = "|".join(sorted(EN_UNITS, key=len, reverse=True))
EN_AT_MOST = {"shorter than", "less than", "under", "at most", "no more than", "no longer than",
              "less", "shorter", "fewer", "below"}
EN_DURATION = re.compile(
    r"(?<![A-Za-z0-9])(?:(?P<cmp>shorter than|longer than|less than|more than|no more than|no longer than"
    r"|no less than|no shorter than|at most|at least|under|over) "
    rf"(?P<n>{EN_NUMBER}) ?(?P<u>{EN_UNIT})"
    rf"|(?P<n2>{EN_NUMBER}) ?(?P<u2>{EN_UNIT}) or (?P<post>less|shorter|under|fewer|below|more|longer|over|above))"
    r"(?![A-Za-z0-9])",
    re.IGNORECASE,
)

ZH_UNITS = {"秒": 1, "秒钟": 1, "分钟": 60, "小时": 3600, "个小时": 3600, "钟头": 3600, "个钟头": 3600}
ZH_AT_MOST = {"不超过", "不多于", "不长于", "不到", "不足", "少于", "短于", "小于", "低于", "最多", "至多",
              "以内", "之内", "内", "以下", "之下"}
ZH_DURATION = re.compile(
    r"(?:时长|长度)?\s?(?P<pre>不超过|不多于|不长于|不到|不足|少于|短于|小于|低于|最多|至多"
    r"|超过|多于|长于|大于|高于|至少|最少|不少于|不短于|不低于)?\s?"
    rf"(?P<n>{NUMBER}|(?<![零〇一二两三四五六七八九十百半]){CN_NUMBER})\s?"
    r"(?P<u>秒钟|秒|分钟|个小时|小时|个钟头|钟头)\s?(?P<post>以内|之内|内(?!容)|以下|之下|以上|之上)?"
)

MONTHS = {"january": 1, "jan": 1, "february": 2, "feb": 2, "march": 3, "mar": 3, "april": 4, "apr": 4,
          "may": 5, "june": 6, "jun": 6, "july": 7, "jul": 7, "august": 8, "aug": 8, "september": 9,
          "sept": 9, "sep": 9, "october": 10, "oct": 10, "november": 11, "nov": 11, "december": 12, "dec": 12}
YEAR = r"(?<!\d)(?:19|20)\d\d(?!\d)"
ZH_DATE = re.compile(
    rf"(?P<from>从|自)?(?P<y>{YEAR})\s?年(?:\s?(?P<m>\d{{1,2}})\s?月(?:\s?(?P<d>\d{{1,2}})\s?[日号])?)?"
    r"\s?(?P<rel>以后|之后|以来|开始|至今|到现在|起|前后|左右|后|以前|之前|前)?"
)
EN_DATE = re.compile(
    r"(?<![A-Za-z0-9])(?:(?P<rel>in|during|from|since|after|before) )?"
    rf"(?:(?P<mon>{'|'.join(sorted(MONTHS, key=len, reverse=True))}) )?(?P<y>{YEAR})",
    re.IGNORECASE,
)
ZH_CALENDAR = re.compile(r"今年|去年|前年|本月|这个月|上个月|上月|本周|这周|这个星期|上个星期|上星期|上周")
ZH_ROLLING = re.compile(
    rf"(?:最近|过去|(?<![附接靠将亲贴])近)的?\s?(?P<n>{NUMBER}|{CN_NUMBER})\s?个?\s?(?P<u>天|日|周|星期|礼拜|月|年)"
)
EN_RELATIVE = re.compile(
    rf"(?<![A-Za-z0-9])(?P<which>this|last|past) (?:(?P<n>{EN_NUMBER}) )?(?P<u>days?|weeks?|months?|years?)"
    r"(?![A-Za-z0-9])",
    re.IGNORECASE,
)

# --- cues -----------------------------------------------------------------------------------

# (regex, routes, needs a word boundary by jieba on both sides); English ones are whole words
ZH_CUES: list[tuple[str, tuple[str, ...], bool]] = [
    ("有人说", ("asr",), True), ("说了", ("asr",), True), ("说过", ("asr",), True),
    ("说", ("asr",), True), ("念", ("asr",), True),
    ("讲到", ("asr",), False), ("提到", ("asr",), False), ("提及", ("asr",), False),
    ("台词", ("asr",), False), ("对白", ("asr",), False), ("旁白", ("asr",), False),
    ("语音里", ("asr",), False), ("语音中", ("asr",), False),
    ("(?:画面|屏幕|萤幕)上写[着著]", ("ocr",), False), ("写[着著]", ("ocr",), False),
    ("字幕", ("ocr",), False), ("文字(?!幕)", ("ocr",), False),
    ("文件名[是为叫]?", ("meta",), False), ("标题[是为叫]", ("meta",), False),
    ("标题", ("ocr", "meta"), False),
]
EN_CUES: list[tuple[str, tuple[str, ...], bool]] = [
    ("(?:someone|somebody) (?:says|said)", ("asr",), False),
    ("(?:talks|talked|talking) about", ("asr",), False),
    ("says|said|saying|mentions|mentioned|mentioning", ("asr",), False),
    ("narration|voice-?over|voice over", ("asr",), False),
    ("sign that says|sign saying", ("ocr",), False),
    ("text on (?:the )?screen|on-?screen text|on screen text", ("ocr",), False),
    ("captions?|subtitles?", ("ocr",), False),
    ("file ?name(?: is)?|file named|titled", ("meta",), False),
]
CUES = ZH_CUES + [(rf"(?<![A-Za-z0-9])(?:{p})(?![A-Za-z0-9])", r, b) for p, r, b in EN_CUES]
CUE_RE = re.compile("|".join(f"(?P<c{i}>{p})" for i, (p, _, _) in enumerate(CUES)), re.IGNORECASE)

# --- text -----------------------------------------------------------------------------------

SEPARATORS = frozenset(",.;:!?、，。；：！？…·-–—~～/|\\()（）[]【】{}<>〈〉'’")  # apostrophes too, at a cut
CONNECTORS = frozenset({
    "的", "地", "和", "与", "跟", "及", "以及", "或", "或者", "还有", "并且", "而且", "在", "于", "从", "自",
    "是", "了", "着", "过", "被", "把", "里", "中", "时", "时候", "的时候",
    "and", "or", "but", "with", "of", "in", "on", "at", "from", "by", "to", "that", "which", "where",
    "when", "while", "who", "whose", "whom", "the", "a", "an", "is", "are", "was", "were",
})
CJK_RE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
TOKEN_RE = re.compile(r"\w+|\s+|[^\w\s]")


def _segment(text: str) -> list[str]:
    """jieba's dictionary segmentation (no HMM guesses, so 张三说 is 张 三 说, not one name)."""
    with jieba_lock:
        return jieba.lcut(text, HMM=False)


def _tokens(text: str) -> list[str]:
    return _segment(text) if CJK_RE.search(text) else TOKEN_RE.findall(text)


def _droppable(token: str, at_cut: bool) -> bool:
    if token.isspace() or all(ch in SEPARATORS for ch in token):
        return True
    return at_cut and token.lower() in CONNECTORS


def _trim(piece: str, cut_before: bool, cut_after: bool) -> tuple[int, int]:
    """The span of ``piece`` left after stripping spaces and punctuation from its ends, and
    connectors from an end next to a cut."""
    tokens = _tokens(piece)
    start, end = 0, len(tokens)
    while start < end and _droppable(tokens[start], cut_before):
        start += 1
    while end > start and _droppable(tokens[end - 1], cut_after):
        end -= 1
    offset = sum(len(t) for t in tokens[:start])
    return offset, offset + sum(len(t) for t in tokens[start:end])


_opencc = None
_opencc_lock = threading.Lock()


def _simplified(text: str) -> str:
    """Traditional Chinese characters as simplified ones (說過 -> 说过), so the rules read both; the
    text itself when the conversion would change its length (the two must align character by character)."""
    global _opencc
    with _opencc_lock:
        if _opencc is None:
            _opencc = opencc.OpenCC("t2s")
        converted = _opencc.convert(text)
    return converted if len(converted) == len(text) else text


# --- the parser -----------------------------------------------------------------------------


@dataclass
class _Found:
    """What the passes took out of the query."""

    phrases: list[str] = field(default_factory=list)
    routes: set[str] = field(default_factory=set)
    kinds: set[str] = field(default_factory=set)
    tags: list[str] = field(default_factory=list)
    libraries: list[str] = field(default_factory=list)
    people: list[str] = field(default_factory=list)
    min_durations: list[float] = field(default_factory=list)
    max_durations: list[float] = field(default_factory=list)
    afters: list[datetime] = field(default_factory=list)
    befores: list[datetime] = field(default_factory=list)

    def add_unique(self, items: list[str], value: str) -> None:
        if value.lower() not in (v.lower() for v in items):
            items.append(value)

    def key_value(self, key: str, value: str) -> None:
        key = key.lower()
        if not value:
            return
        if key in ("tag", "tags", "标签"):
            for tag in re.split(r"[,、]", value):
                if tag.strip():
                    self.add_unique(self.tags, tag.strip())
        elif key in ("library", "lib", "库"):
            self.add_unique(self.libraries, value)
        elif key in ("person", "人物"):
            for name in re.split(r"[,、]", value):
                if name.strip():
                    self.add_unique(self.people, name.strip())
        else:
            kind = KIND_WORDS.get(value.lower())
            if kind is None:
                raise InvalidQuery(f"{key}:{value} — the {key} filter takes video or image")
            self.kinds.add(kind)

    def period(self, start: datetime, end: datetime, rel: str) -> None:
        """Record a date filter: ``rel`` is whole, since, after or before the period [start, end)."""
        if rel in ("whole", "since"):
            self.afters.append(start)
        if rel == "after":
            self.afters.append(end)
        if rel in ("whole", "before"):
            self.befores.append(end if rel == "whole" else start)

    def rolling(self, start: datetime | None) -> None:
        if start is not None:
            self.afters.append(start)

    def filters(self) -> QueryFilters:
        low = max(self.min_durations, default=None)
        high = min(self.max_durations, default=None)
        if low is not None and high is not None and low > high:
            raise InvalidQuery(f"the duration filters contradict each other: at least {low:g} s and "
                               f"at most {high:g} s")
        after = max(self.afters, default=None)
        before = min(self.befores, default=None)
        if after is not None and before is not None and after >= before:
            raise InvalidQuery(f"the date filters contradict each other: from {after:%Y-%m-%d} and "
                               f"before {before:%Y-%m-%d}")
        kinds = [k for k in ("video", "image") if k in self.kinds]
        return QueryFilters(kinds=kinds, min_duration=low, max_duration=high, recorded_after=after,
                            recorded_before=before, tags=self.tags, libraries=self.libraries)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time())


def _add_months(day: date, months: int) -> date:
    """``day`` moved by whole months, clamped to the month's last day (Mar 31 - 1 month = Feb 28)."""
    year, month = divmod(day.year * 12 + day.month - 1 + months, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def _calendar(unit: str, offset: int, today: date) -> tuple[datetime, datetime]:
    """The calendar year/month/week ``offset`` periods from the current one."""
    if unit == "year":
        return datetime(today.year + offset, 1, 1), datetime(today.year + offset + 1, 1, 1)
    if unit == "month":
        first = _add_months(today.replace(day=1), offset)
        return _midnight(first), _midnight(_add_months(first, 1))
    monday = today - timedelta(days=today.weekday()) + timedelta(weeks=offset)
    return _midnight(monday), _midnight(monday + timedelta(weeks=1))


EARLIEST = datetime(1900, 1, 1)


def _rolling(n: float, unit: str, today: date) -> datetime | None:
    """The start of the last ``n`` days/weeks/months/years up to today; None when that is before 1900
    (no medium is older: the period holds everything). Fractions of months count 30.44 days."""
    days = {"day": 1, "week": 7, "month": 31, "year": 366}[unit] * n
    if days > (today - EARLIEST.date()).days:
        return None
    months = n * 12 if unit == "year" else n
    if unit in ("month", "year") and months.is_integer():
        return _midnight(_add_months(today, -int(months)))
    if unit in ("month", "year"):
        days = months * 30.44
    return _midnight(today - timedelta(days=round(days)))


def _date_period(match: re.Match, year: int, month: int | None, day: int | None) -> tuple[datetime, datetime]:
    if month is not None and not 1 <= month <= 12:
        raise InvalidQuery(f"{match.group().strip()}: there is no month {month}")
    try:
        if month is None:
            return datetime(year, 1, 1), datetime(year + 1, 1, 1)
        if day is None:
            start = datetime(year, month, 1)
            return start, _midnight(_add_months(start.date(), 1))
        start = datetime(year, month, day)
    except ValueError:
        raise InvalidQuery(f"{match.group().strip()}: there is no such date") from None
    return start, start + timedelta(days=1)


ZH_REL = {"以后": "since", "之后": "since", "以来": "since", "开始": "since", "至今": "since", "到现在": "since",
          "起": "since", "后": "since", "以前": "before", "之前": "before", "前": "before",
          "前后": "whole", "左右": "whole"}
ZH_CALENDAR_UNITS = {"今年": ("year", 0), "去年": ("year", -1), "前年": ("year", -2), "本月": ("month", 0),
                     "这个月": ("month", 0), "上个月": ("month", -1), "上月": ("month", -1), "本周": ("week", 0),
                     "这周": ("week", 0), "这个星期": ("week", 0), "上个星期": ("week", -1),
                     "上星期": ("week", -1), "上周": ("week", -1)}
ZH_ROLLING_UNITS = {"天": "day", "日": "day", "周": "week", "星期": "week", "礼拜": "week", "月": "month", "年": "year"}


class _Parser:
    """One query's parse. Each pass replaces what it understood by a cut (CUT) and records it.

    ``work`` is the query as typed; ``match`` is the same text with traditional characters
    simplified, which the patterns read. Both change together, so they stay aligned; values
    (phrases, tags, libraries, the text) are taken from ``work``.
    """

    def __init__(self, text: str, today: date) -> None:
        self.work = text
        self.match = _simplified(text)
        self.today = today
        self.found = _Found()

    def run(self) -> ParsedQuery:
        self.quotes()
        self.sub(KEY_VALUE, lambda m: self.found.key_value(m["key"], self.original(m, "value")))
        self.sub(HASHTAG, lambda m: self.found.add_unique(self.found.tags, self.original(m, "value")))
        self.sub(ZH_KIND, lambda m: self.found.kinds.add(KIND_WORDS[m["kind"]]))
        self.sub(EN_KIND, lambda m: self.found.kinds.add(KIND_WORDS[(m["a"] or m["b"]).lower()]))
        self.sub(EN_DURATION, self.en_duration)
        self.sub(ZH_DURATION, self.zh_duration)
        self.sub(ZH_DATE, self.zh_date)
        self.sub(EN_DATE, self.en_date)
        self.sub(ZH_CALENDAR, lambda m: self.found.period(*_calendar(*ZH_CALENDAR_UNITS[m.group()], self.today),
                                                          "whole"))
        self.sub(ZH_ROLLING, self.zh_rolling)
        self.sub(EN_RELATIVE, self.en_relative)
        self.cues()
        filters = self.found.filters()
        routes = [r for r in ROUTES if r in self.found.routes]
        return ParsedQuery(text=self.text(), phrases=self.found.phrases, routes=routes, filters=filters,
                           people=self.found.people, source="rules")

    # passes -----------------------------------------------------------------------------------

    def original(self, m: re.Match, group: str) -> str:
        """A matched group as the user typed it (traditional characters kept)."""
        return self.work[m.start(group) : m.end(group)] if m[group] is not None else ""

    def edit(self, edits: list[tuple[int, int, str]]) -> None:
        """Replace the spans ``(start, end, by)`` (in order, not overlapping) in both texts."""
        work, match, pos = [], [], 0
        for start, end, by in edits:
            work += [self.work[pos:start], by]
            match += [self.match[pos:start], by]
            pos = end
        self.work = "".join(work) + self.work[pos:]
        self.match = "".join(match) + self.match[pos:]

    def sub(self, pattern: re.Pattern, record) -> None:
        """Cut out each match of ``pattern`` that ``record`` accepts (returns anything but False)."""
        self.edit([(m.start(), m.end(), CUT) for m in pattern.finditer(self.match) if record(m) is not False])

    def quotes(self) -> None:
        """Quoted phrases -> phrases (or a key's value); unmatched quote marks -> spaces. Linear:
        each closing mark's candidate positions are consumed left to right once."""
        text = self.work
        closers: dict[str, list[int]] = {c: [] for c in set(QUOTE_PAIRS.values())}
        for i, ch in enumerate(text):
            if ch in closers and _can_close(text, i):
                closers[ch].append(i)
        next_closer = dict.fromkeys(closers, 0)
        edits: list[tuple[int, int, str]] = []
        i = 0
        while i < len(text):
            ch = text[i]
            if ch not in QUOTE_CHARS or _is_apostrophe(text, i):
                i += 1
                continue
            end = None
            if _can_open(text, i):
                close, positions = QUOTE_PAIRS[ch], closers[QUOTE_PAIRS[ch]]
                k = next_closer[close]
                while k < len(positions) and positions[k] <= i:
                    k += 1
                next_closer[close] = k
                end = positions[k] if k < len(positions) else None
            if end is None:  # a mark without its partner
                edits.append((i, i + 1, " "))
                i += 1
                continue
            content = text[i + 1 : end].strip()
            window = max(i - 16, edits[-1][1] if edits else 0)
            key = KEY_BEFORE_QUOTE.search(self.match[window:i])
            if key:
                self.found.key_value(key["key"], content)
                edits.append((window + key.start(), end + 1, CUT))
            else:
                if _meaningful(content) and content not in self.found.phrases:
                    self.found.phrases.append(content)
                edits.append((i, end + 1, CUT))
            i = end + 1
        self.edit(edits)

    def en_duration(self, m: re.Match) -> None:
        number, unit = (m["n"], m["u"]) if m["cmp"] else (m["n2"], m["u2"])
        seconds = _number(number) * EN_UNITS[unit.lower()]
        at_most = (m["cmp"] or m["post"]).lower() in EN_AT_MOST
        (self.found.max_durations if at_most else self.found.min_durations).append(seconds)

    def zh_duration(self, m: re.Match) -> bool | None:
        comparator = m["pre"] or m["post"]
        number = _number(m["n"])
        if comparator is None or number is None:
            return False  # "30秒的视频": a duration, but no filter
        seconds = number * ZH_UNITS[m["u"]]
        (self.found.max_durations if comparator in ZH_AT_MOST else self.found.min_durations).append(seconds)
        return None

    def zh_date(self, m: re.Match) -> None:
        month = int(m["m"]) if m["m"] else None
        day = int(m["d"]) if m["d"] else None
        start, end = _date_period(m, int(m["y"]), month, day)
        rel = ZH_REL[m["rel"]] if m["rel"] else ("since" if m["from"] else "whole")
        self.found.period(start, end, rel)

    def en_date(self, m: re.Match) -> bool | None:
        if not m["rel"] and not m["mon"]:
            return False  # a bare number such as "2023" may be content ("2023 fireworks")
        month = MONTHS[m["mon"].lower()] if m["mon"] else None
        start, end = _date_period(m, int(m["y"]), month, None)
        rel = (m["rel"] or "in").lower()
        self.found.period(start, end, rel if rel in ("since", "after", "before") else "whole")
        return None

    def zh_rolling(self, m: re.Match) -> bool | None:
        n = _number(m["n"])
        if not n:
            return False
        self.found.rolling(_rolling(n, ZH_ROLLING_UNITS[m["u"]], self.today))
        return None

    def en_relative(self, m: re.Match) -> bool | None:
        which, unit = m["which"].lower(), m["u"].lower().rstrip("s")
        if m["n"] is None and which in ("this", "last") and unit != "day":
            self.found.period(*_calendar(unit, 0 if which == "this" else -1, self.today), "whole")
            return None
        n = 1.0 if m["n"] is None else _number(m["n"])
        if which == "this" or not n or (m["n"] is None and which == "last"):
            return False  # "this 3 days", "last 0 weeks", "the last day": not a period
        self.found.rolling(_rolling(n, unit, self.today))
        return None

    def cues(self) -> None:
        boundaries: set[int] | None = None

        def on_word_boundaries(m: re.Match) -> bool:
            nonlocal boundaries
            if boundaries is None:
                boundaries, offset = {0}, 0
                for token in _segment(self.match):
                    offset += len(token)
                    boundaries.add(offset)
            return m.start() in boundaries and m.end() in boundaries

        def record(m: re.Match) -> bool | None:
            _, routes, needs_boundary = CUES[int(m.lastgroup[1:])]
            if needs_boundary and not on_word_boundaries(m):
                return False
            self.found.routes.update(routes)
            return None

        self.sub(CUE_RE, record)

    def text(self) -> str:
        pieces, simple = self.work.split(CUT), self.match.split(CUT)
        kept = []
        for i, (piece, match) in enumerate(zip(pieces, simple, strict=True)):
            start, end = _trim(match, cut_before=i > 0, cut_after=i < len(pieces) - 1)
            kept.append(piece[start:end])
        text = re.sub(r"\s+", " ", " ".join(p for p in kept if p)).strip()
        return text if _meaningful(text) else ""


def parse_query(text: str, *, today: date | None = None) -> ParsedQuery:
    """The rule-based :class:`ParsedQuery` of a text query (see the module docstring for the rules).

    Raises :class:`InvalidQuery` only for filters that cannot hold (contradictory ranges,
    impossible dates, an unknown ``type:`` value); any other input gives a ParsedQuery.
    """

    cleaned = clean_text(text) or ""
    return _Parser(cleaned, today or date.today()).run()


# --- rewriters ------------------------------------------------------------------------------


class RewriteConfig(BaseModel):
    """Which rewriter turns a text query into a ParsedQuery: the rules, or an LLM when ``llm_url`` is set."""

    model_config = ConfigDict(extra="forbid")

    #: an OpenAI-compatible API base (``https://api.openai.com/v1``, ``http://localhost:11434/v1``); None: rules
    llm_url: str | None = None
    #: the model name sent with each request (required with ``llm_url``)
    llm_model: str | None = None
    #: sent as ``Authorization: Bearer …``; never logged
    llm_api_key: SecretStr | None = None
    #: seconds before a request is abandoned and the rules answer instead
    timeout: float = Field(default=5.0, gt=0, le=120)
    #: rewritten queries kept in memory (per query text and day)
    cache_size: int = Field(default=256, ge=0, le=100_000)

    @model_validator(mode="after")
    def _model_with_url(self) -> RewriteConfig:
        if self.llm_url and not self.llm_model:
            raise ValueError("llm_model is required when llm_url is set")
        return self


class Rewriter(ABC):
    """Turns a text query into a :class:`ParsedQuery`; ``today`` anchors relative dates (default: today)."""

    @abstractmethod
    def rewrite(self, text: str, *, today: date | None = None) -> ParsedQuery:
        """The parsed query; raises :class:`InvalidQuery` for filters that cannot hold."""

    def close(self) -> None:
        """Release connections, if any."""


class RuleRewriter(Rewriter):
    """The rules of this module: no network, no model."""

    def rewrite(self, text: str, *, today: date | None = None) -> ParsedQuery:
        return parse_query(text, today=today)


def create_rewriter(config: RewriteConfig | None = None) -> Rewriter:
    """The LLM rewriter when ``config.llm_url`` is set, else the rules."""
    config = config or RewriteConfig()
    if config.llm_url:
        from .rewrite_llm import LLMRewriter

        return LLMRewriter(config)
    return RuleRewriter()

