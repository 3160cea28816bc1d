"""Tests of the Upbit watcher (pumpwatch.upbit) and its stand-in (pumpwatch.sim.upbit).

Titles: every row of tests/data/upbit_titles.tsv (real titles, copied from ../shared), then titles
built from the shapes ../shared/UPBIT.md lists, positive and negative. Then the list parser, the
decisions (pure, no network), and the watcher against the stand-in on 127.0.0.1: every scheduled
listing triggers exactly once with its tickers and t0, nothing else does, a restart neither loses
nor repeats, a hung request does not delay the polls after it, 429/418 slow the poller and it
recovers, proxies keep their own ETags. Every wait has a deadline.

Where the subject is timing, a test runs on `VirtualTime`: one fake timeline for the watcher, the
stand-in and the HTTP client, on an event loop whose time jumps ahead whenever every task waits,
so seconds of polling take milliseconds and the bounds hold exactly under any machine load.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import json
import selectors
import socket
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from pumpwatch.errors import InvalidInputError
from pumpwatch.net import http as net_http
from pumpwatch.sim import upbit as sim_upbit
from pumpwatch.sim.upbit import SimNotice, SimUpbit
from pumpwatch.upbit import (
    KST,
    Announcement,
    AnnouncementFormatError,
    Backoff,
    Egress,
    HttpClient,
    Listing,
    ListingTrigger,
    MarketListFormatError,
    UpbitWatcher,
    WatcherState,
    follow_up_of,
    parse_announcements,
    parse_market_list,
    parse_page,
    parse_title,
    to_ns,
)

pytestmark = pytest.mark.timeout(60)

TSV = Path(__file__).parent / "data" / "upbit_titles.tsv"


def run(coro, timeout: float = 30.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


# =============================================================================================
# Titles


def tsv_rows() -> list[tuple[str, str, str, str]]:
    rows = []
    for line in TSV.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        title, tickers, krw, provenance = (line.split("\t") + ["", "", ""])[:4]
        rows.append((title, tickers, krw, provenance))
    return rows


@pytest.mark.parametrize("title,tickers,krw,provenance", tsv_rows(), ids=lambda v: v[:40] if isinstance(v, str) else v)
def test_tsv_titles(title, tickers, krw, provenance):
    listing = parse_title(title)
    if not tickers:
        assert listing is None, f"{provenance}: a non-listing must parse to None"
        return
    assert listing is not None, provenance
    assert listing.tickers == tuple(tickers.split(",")), provenance
    assert listing.krw is (krw == "1"), provenance


def test_tsv_is_the_shared_sample():
    shared = Path(__file__).parents[2] / "shared" / "upbit_titles.tsv"
    if not shared.exists():
        pytest.skip("../shared is not next to this checkout (CI)")
    assert shared.read_bytes() == TSV.read_bytes(), "tests/data/upbit_titles.tsv drifted from ../shared"


# (title, tickers, markets, krw tickers); composed titles follow the real shapes of UPBIT.md.
POSITIVE = [
    ("[거래] 바빌론(BABY) KRW 마켓 디지털 자산 추가", "BABY", "KRW", "BABY"),
    ("바이프로스트(BFC) KRW, USDT 마켓 디지털 자산 추가", "BFC", "KRW,USDT", "BFC"),
    ("제로지(0G) KRW, USDT 마켓 디지털 자산 추가", "0G", "KRW,USDT", "0G"),
    ("에프(F) KRW 마켓 디지털 자산 추가", "F", "KRW", "F"),
    ("더블제로(2Z) 신규 거래지원 안내 (KRW, BTC, USDT 마켓)", "2Z", "KRW,BTC,USDT", "2Z"),
    ("밈코어(1000SATS) KRW 마켓 디지털 자산 추가", "1000SATS", "KRW", "1000SATS"),
    ("원인치(1INCH) 및 더블제로(2Z) KRW 마켓 디지털 자산 추가", "1INCH,2Z", "KRW", "1INCH,2Z"),
    (
        "라이브피어(LPT)(KRW, USDT 마켓), 포켓네트워크(POKT)(KRW 마켓) 디지털 자산 추가",
        "LPT,POKT",
        "KRW,USDT",
        "LPT,POKT",
    ),
    (
        "플록(FLOCK)(BTC, USDT 마켓), 포켓네트워크(POKT)(KRW 마켓) 디지털 자산 추가",
        "FLOCK,POKT",
        "KRW,BTC,USDT",
        "POKT",
    ),
    ("카바(KAVA) KRW 마켓, 밀크(MLK) BTC 마켓 디지털 자산 추가", "KAVA,MLK", "KRW,BTC", "KAVA"),
    (
        "페이팔유에스디(PYUSD), 제이피와이코인(JPYC) 신규 거래지원 안내 (KRW, BTC, USDT 마켓)",
        "PYUSD,JPYC",
        "KRW,BTC,USDT",
        "PYUSD,JPYC",
    ),
    ("[거래] 비트코인 (BTC), 이더리움 (ETH) 신규 거래지원 안내 (KRW, BTC, USDT)", "BTC,ETH", "KRW,BTC,USDT", "BTC,ETH"),
    ("클러스터프로토콜(CP) 신규 거래 지원 안내 (KRW, BTC, USDT 마켓)", "CP", "KRW,BTC,USDT", "CP"),
    ("신규 거래지원 안내 (ABC, XYZ) (KRW, BTC 마켓)", "ABC,XYZ", "KRW,BTC", "ABC,XYZ"),
    ("[거래] KRW, BTC, USDT 마켓 디지털 자산 추가 (A1, B, C)", "A1,B,C", "KRW,BTC,USDT", "A1,B,C"),
    ("[거래] 원화 마켓 디지털 자산 추가 (MSK)", "MSK", "KRW", "MSK"),
    ("딥북（DEEP） KRW 마켓 디지털 자산 추가", "DEEP", "KRW", "DEEP"),  # full-width parentheses
    ("딥북 (DEEP)  KRW 마켓   디지털 자산 추가", "DEEP", "KRW", "DEEP"),  # odd spacing
    ("유니스왑(UNI) KRW 마켓 디지털 자산 추가", "UNI", "KRW", "UNI"),  # a name holding 스왑 (swap)
    ("이더리움클래식 원화 마켓(ETC/KRW) 오픈 안내", "ETC", "KRW", "ETC"),  # 2017-era shape
    ("Market Support for 0G(0G) (KRW, USDT Market)", "0G", "KRW,USDT", "0G"),
    ("Market Support for Optimism(OP), Arbitrum(ARB) (KRW, BTC, USDT Market)", "OP,ARB", "KRW,BTC,USDT", "OP,ARB"),
    (
        "Market Support for Maple Finance(SYRUP) and Pundi AI(PUNDIAI) (KRW Market)",
        "SYRUP,PUNDIAI",
        "KRW",
        "SYRUP,PUNDIAI",
    ),
    ("Market Support for Uniswap(UNI) (KRW Market)", "UNI", "KRW", "UNI"),
    ("Market Support for SushiSwap(SUSHI) (KRW, BTC Market)", "SUSHI", "KRW,BTC", "SUSHI"),
    ("[Trade] Market Support for Sui(SUI) (KRW Market)", "SUI", "KRW", "SUI"),
    ("New Market Support for Sui(SUI) (KRW Markets)", "SUI", "KRW", "SUI"),
    ("Market Support for A(A) (KRW Market), B(B) (BTC Market)", "A,B", "KRW,BTC", "A"),
    # listings without a KRW market: listings, but krw is false
    ("플레어(FLR) BTC, USDT 마켓 디지털 자산 추가", "FLR", "BTC,USDT", ""),
    ("두들즈(DOOD) 신규 거래지원 안내 (BTC, USDT 마켓)", "DOOD", "BTC,USDT", ""),
    ("Market Support for Walrus(WAL) (BTC, USDT Market)", "WAL", "BTC,USDT", ""),
    ("두들즈(DOOD) 신규 거래지원 안내", "DOOD", "", ""),  # no market named: cannot be told to open KRW
]


@pytest.mark.parametrize("title,tickers,markets,krw_tickers", POSITIVE, ids=[p[0][:40] for p in POSITIVE])
def test_listing_titles(title, tickers, markets, krw_tickers):
    listing = parse_title(title)
    assert listing is not None

    def split(s: str) -> tuple[str, ...]:
        return tuple(s.split(",")) if s else ()

    assert listing.tickers == split(tickers)
    assert listing.markets == split(markets)
    assert listing.krw_tickers == split(krw_tickers)
    assert listing.krw is bool(krw_tickers)


NEGATIVE = [
    # cautions, their release, warnings
    "딥북(DEEP) 거래 유의 종목 지정 해제 안내",
    "[거래] 거래 유의 종목 지정 안내 (DEEP)",
    "에이브(AAVE), 딥북(DEEP) 거래 유의 종목 지정 안내",
    "웨이브(WAVES) 유의촉구 안내",
    "Notice on Designation of Investment Warning for Sui(SUI)",
    # delistings
    "디지털 자산 거래지원 종료 안내 (ABC)",
    "딥북(DEEP) KRW 마켓 거래지원 종료 안내",
    "[거래] BTC 마켓 거래지원 종료 안내 (AXL, DEEP)",
    "Termination of Market Support for Sui(SUI) (KRW Market)",
    "테더(USDT) 지원 종료 안내",
    # deposits and withdrawals, network events, swaps
    "Notice on Deposit and Withdrawal Suspension for Sui(SUI)",
    "제로지(0G) 입출금 일시 중단 안내",
    "에이브(AAVE) 네트워크 업그레이드에 따른 입출금 일시 중단 안내",
    "스와이프(SXP) 토큰 스왑 지원 안내",
    "스택스(STX) 네트워크 업그레이드 지원 안내",
    "에이다(ADA) KRW 마켓 일시 거래 중단 안내",
    # events, airdrops, distributions naming a ticker (and 거래지원)
    "제로지(0G) 신규 거래지원 기념 이벤트",
    "[이벤트] 딥북(DEEP) KRW 마켓 디지털 자산 추가 기념 이벤트",
    "딥북(DEEP) KRW 마켓 디지털 자산 추가 기념 에어드랍 이벤트",
    "이벤트 딥북(DEEP) KRW 마켓 디지털 자산 추가",
    "딥북(DEEP) 에어드랍 이벤트 KRW 마켓 디지털 자산 추가",
    "KRW 마켓 디지털 자산 추가 (IMX) 기념 이벤트",
    "[Event] Market Support for Sui(SUI) (KRW Market)",
    "Market Support for Maple Finance(SYRUP) (KRW, BTC, USDT Market) Event",
    "디지털 자산 4월 4주차 GAS, VTHO 지급 안내",
    "KRW 마켓 거래 수수료 이벤트",
    # follow-ups: a listing title with free text or a withdrawal appended, or a notice of its own
    "딥북(DEEP) 신규 거래지원 안내 (KRW 마켓) - 입금 일정 안내",
    "딥북(DEEP) KRW 마켓 디지털 자산 추가 (추가 취소)",
    "Market Support for Sui(SUI) (KRW Market) (Cancelled)",
    "[거래] KRW 마켓 디지털 자산 추가 (IMX) (거래지원 철회)",
    "딥북(DEEP) KRW 마켓 디지털 자산 추가 취소 안내",
    "딥북(DEEP) KRW 마켓 디지털 자산 추가 안내 연기",
    "두들즈(DOOD) 매도 최저가 기준 가격 안내",
    "Notice on Market Support for Sui(SUI) (KRW Market) Delay",
    # policy and service notices, other exchanges' shapes, junk
    "업비트 KRW 마켓 신규 거래지원 정책 안내",
    "신규 거래지원 심사 기준 안내",
    "[안내] 딥북(DEEP) KRW 마켓 디지털 자산 추가",
    "[마켓 추가] 밈코어(M) 원화 마켓 추가",
    "Market Support for the KRW Market",
    "Market Support for (KRW Market)",
    "(KRW 마켓) 디지털 자산 추가",
    "시스템 점검 안내 (07/30 02:00 ~ 04:00)",
    "",
    "()",
    "딥북(deep) KRW 마켓 디지털 자산 추가",  # tickers are upper case
    "딥북(12345) KRW 마켓 디지털 자산 추가",  # a number is not a ticker
]


@pytest.mark.parametrize("title", NEGATIVE, ids=[t[:40] or "empty" for t in NEGATIVE])
def test_not_listings(title):
    assert parse_title(title) is None


def test_not_a_string():
    assert parse_title(None) is None  # type: ignore[arg-type]
    assert parse_title(5371) is None  # type: ignore[arg-type]


# Real edited titles (UPBIT.md): Upbit edits a listing notice (same id, same first_listed_at) and its
# title gains a parenthesised note. Such a title is still the listing (issue 13).
EDITED = [
    ("두들즈(DOOD) 신규 거래지원 안내 (KRW, USDT 마켓) (매도 최저가 기준 가격 안내)", "DOOD", "KRW,USDT", "DOOD"),
    ("두들즈(DOOD) 신규 거래지원 안내 (KRW, USDT 마켓) (거래지원 개시 시점 변경 안내)", "DOOD", "KRW,USDT", "DOOD"),
    (
        "너보스(CKB) 신규 거래지원 안내 (KRW, BTC, USDT 마켓) (거래지원 개시 시점 연기 안내)",
        "CKB",
        "KRW,BTC,USDT",
        "CKB",
    ),
    (
        (
            "페이팔유에스디(PYUSD), 제이피와이코인(JPYC) 신규 거래지원 안내 (KRW, BTC, USDT 마켓) "
            "(JPYC 거래지원 개시 시점 추가 변경 안내)"
        ),
        "PYUSD,JPYC",
        "KRW,BTC,USDT",
        "PYUSD,JPYC",
    ),
    ("[거래] KRW 마켓 디지털 자산 추가 (IMX) (거래 개시 시점 변경)", "IMX", "KRW", "IMX"),
    ("Market Support for Sui(SUI) (KRW Market) (Trading Start Time Changed)", "SUI", "KRW", "SUI"),
    ("딥북(DEEP) KRW 마켓 디지털 자산 추가 (거래지원 개시 시점 변경 (10/1 14:00))", "DEEP", "KRW", "DEEP"),
    ("Market Support for Walrus(WAL) (BTC, USDT Market) (Price Guide)", "WAL", "BTC,USDT", ""),
]

# Notes an edit may append, in both languages, one or several, nested parentheses included.
NOTES = [
    " (매도 최저가 기준 가격 안내)",
    " (거래지원 개시 시점 변경 안내)",
    "(거래지원 개시 시점 변경 (10/1 14:00))",
    " (Trading Start Time Changed)",
    " (Price Guide) (Updated)",
    " (이벤트 당첨 안내)",
]


@pytest.mark.parametrize("title,tickers,markets,krw_tickers", EDITED, ids=[p[0][:40] for p in EDITED])
def test_edited_listing_titles_are_the_listing(title, tickers, markets, krw_tickers):
    test_listing_titles(title, tickers, markets, krw_tickers)
    assert follow_up_of(title) is None


def test_every_listing_shape_with_appended_notes_is_the_same_listing():
    """Every positive title of the shared sample and of each known shape, with each note appended,
    parses to exactly the listing of the plain title; negatives stay negatives."""
    plain = [t for t, tk, _, _ in tsv_rows() if tk] + [p[0] for p in POSITIVE]
    assert len(plain) > 40
    for title in plain:
        want = parse_title(title)
        assert want is not None, title
        for note in NOTES:
            assert parse_title(title + note) == want, title + note
    for title in [t for t, tk, _, _ in tsv_rows() if not tk] + NEGATIVE:
        for note in NOTES:
            assert parse_title(title + note) is None, title + note


def test_follow_up_names_the_listing_it_amends():
    amended = follow_up_of("두들즈(DOOD) 신규 거래지원 안내 (KRW, USDT 마켓) - 입금 일정 안내")
    assert amended == Listing(("DOOD",), ("KRW", "USDT"), True)
    assert follow_up_of("딥북(DEEP) KRW 마켓 디지털 자산 추가 (추가 취소)") == Listing(("DEEP",), ("KRW",), True)
    assert follow_up_of("두들즈(DOOD) 신규 거래지원 안내 (KRW, USDT 마켓)") is None  # the listing itself
    assert follow_up_of("바운드리스(ZKC) 거래 유의 종목 지정 안내") is None


def test_listing_defaults():
    assert Listing(("A", "B"), ("KRW",), True).krw_tickers == ("A", "B")
    assert Listing(("A",), ("BTC",), False).krw_tickers == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        Listing(("A",), ("KRW",), True).krw = False  # type: ignore[misc]


# =============================================================================================
# Announcement lists

CURRENT = {
    "success": True,
    "data": {
        "total_pages": 238,
        "total_count": 4743,
        "notices": [
            {
                "listed_at": "2025-07-28T18:00:00+09:00",
                "first_listed_at": "2025-07-28T18:00:00+09:00",
                "id": 5371,
                "title": "Notice on Termination of Trading Support for Pundi AI(PUNDIAI) (8/28 15:00)",
                "category": "Trade",
                "need_new_badge": True,
                "need_update_badge": False,
            },
            {
                "listed_at": "2025-07-28T14:10:00+09:00",
                "first_listed_at": "2025-07-28T13:24:25+09:00",
                "id": 5368,
                "title": "Market Support for Optimism(OP) (KRW, BTC, USDT Market)",
                "category": "Trade",
                "need_new_badge": True,
                "need_update_badge": True,
            },
        ],
        "fixed_notices": [
            {
                "id": 1,
                "title": "[공지] 업비트 이용 안내",
                "listed_at": "2024-01-01T00:00:00+09:00",
                "first_listed_at": "2024-01-01T00:00:00+09:00",
            }
        ],
    },
}

LEGACY = {
    "success": True,
    "data": {
        "total_pages": 90,
        "total_count": 1790,
        "list": [
            {
                "id": 1523,
                "title": "[거래] KRW, BTC 마켓 디지털 자산 추가 (SXL, MTTIC)",
                "view_count": 55000,
                "thread_name": "general",
                "created_at": "2021-03-31T15:06:01+09:00",
                "updated_at": "2021-03-31T16:30:00+09:00",
            },
            {"id": 1522, "title": "[입출금] 이더리움 네트워크 점검 안내", "created_at": "2021-03-31 10:00:00"},
        ],
    },
}


def test_parse_current_shape():
    a, b = parse_announcements(json.dumps(CURRENT).encode())
    assert (a.id, a.category, a.listing, a.need_new_badge, a.need_update_badge) == (5371, "Trade", None, True, False)
    assert b.listing == Listing(("OP",), ("KRW", "BTC", "USDT"), True)
    assert b.first_listed_at == datetime(2025, 7, 28, 13, 24, 25, tzinfo=KST)
    assert b.first_listed_at.utcoffset() == timedelta(hours=9)
    assert b.listed_at > b.first_listed_at and b.edited and b.need_update_badge
    assert b.t0_ns == 1753676665 * 10**9  # 2025-07-28T04:24:25Z, exact
    assert not a.edited
    page = parse_page(json.dumps(CURRENT))
    assert page.total_count == 4743 and page.bad_rows == [] and len(page.announcements) == 2  # no fixed notices


def test_parse_legacy_shape():
    a, b = parse_announcements(json.dumps(LEGACY))
    assert a.id == 1523 and a.listing == Listing(("SXL", "MTTIC"), ("KRW", "BTC"), True)
    assert a.first_listed_at == datetime(2021, 3, 31, 15, 6, 1, tzinfo=KST)
    assert a.listed_at == datetime(2021, 3, 31, 16, 30, tzinfo=KST)
    assert a.category == "general"
    # A time without an offset is Upbit's, KST, whatever the local zone.
    assert b.first_listed_at == datetime(2021, 3, 31, 10, tzinfo=KST) and b.listed_at == b.first_listed_at
    assert b.listing is None


def test_parse_accepts_str_bytes_and_dict_and_string_ids():
    doc = json.loads(json.dumps(CURRENT))
    doc["data"]["notices"][0]["id"] = "5371"
    assert [a.id for a in parse_announcements(doc)] == [5371, 5368]
    assert parse_announcements(json.dumps(CURRENT)) == parse_announcements(json.dumps(CURRENT).encode())


def test_first_listed_at_with_utc_offset():
    doc = json.loads(json.dumps(CURRENT))
    doc["data"]["notices"][1]["first_listed_at"] = "2025-07-28T04:24:25Z"
    (_, b) = parse_announcements(doc)
    assert b.t0_ns == 1753676665 * 10**9 and b.first_listed_at.tzinfo is not None


def _with(path: str, value):
    doc = json.loads(json.dumps(CURRENT))
    *parents, last = path.split(".")
    node = doc
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    if value is _DELETE:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return json.dumps(doc)


_DELETE = object()
MALFORMED = [
    ("not json", b"<html>Attention Required! | Cloudflare</html>", "not JSON"),
    ("empty", b"", "not JSON"),
    ("a list", b"[]", "JSON object"),
    ("success false", b'{"success":false,"error":{"message":"not found"}}', "success=false"),
    ("no data", b'{"success":true}', "`data`"),
    ("data not object", b'{"success":true,"data":[]}', "`data`"),
    ("no notices", b'{"success":true,"data":{"total_count":1}}', "neither `data.notices`"),
    ("notices not a list", _with("data.notices", {"a": 1}), "neither `data.notices`"),
    ("row not object", _with("data.notices.0", "x"), "not an object"),
    ("no id", _with("data.notices.0.id", _DELETE), "`id`"),
    ("float id", _with("data.notices.0.id", 5371.5), "`id`"),
    ("bool id", _with("data.notices.0.id", True), "`id`"),
    ("no title", _with("data.notices.1.title", None), "`title`"),
    ("bad time", _with("data.notices.1.first_listed_at", "yesterday"), "first_listed_at"),
    ("numeric time", _with("data.notices.1.first_listed_at", 1753676665), "first_listed_at"),
    ("no time", _with("data.notices.1.first_listed_at", _DELETE), "created_at"),
]


@pytest.mark.parametrize("name,body,message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_bodies_raise_a_clear_error(name, body, message):
    with pytest.raises(AnnouncementFormatError) as e:
        parse_announcements(body)
    assert isinstance(e.value, InvalidInputError)
    assert message in str(e.value) or (message == "created_at" and "first_listed_at" in str(e.value))


def test_lenient_parse_skips_bad_rows_only():
    body = _with("data.notices.0.first_listed_at", "soon")
    page = parse_page(body, strict=False)
    assert [a.id for a in page.announcements] == [5368]
    assert len(page.bad_rows) == 1 and "data.notices[0] (id 5371)" in page.bad_rows[0]
    with pytest.raises(AnnouncementFormatError):
        parse_page(b'{"success":true,"data":{}}', strict=False)  # the envelope is never lenient
    page = parse_page(json.dumps(CURRENT), skip_ids={5371})
    assert [a.id for a in page.announcements] == [5368] and page.skipped == 1


def test_market_list():
    body = json.dumps(
        [
            {"market": "KRW-BTC", "market_warning": "NONE"},
            {"market": "BTC-AXL"},
            {"market": "KRW-0G", "market_event": {"warning": False}},
            {"market": "USDT-ETH"},
        ]
    )
    assert parse_market_list(body) == {"BTC", "0G"}
    for bad in (b"{}", b"nope", b'[{"name": "x"}]'):
        with pytest.raises(MarketListFormatError):
            parse_market_list(bad)


# =============================================================================================
# Decisions (pure, no network)

NOW = 1_790_000_000 * 10**9


def ann(nid: int, title: str, age_s: float = 1.0, edited_s: float = 0.0, category: str = "거래") -> Announcement:
    first = datetime.fromtimestamp((NOW - int(age_s * 1e9)) / 1e9, KST)
    return Announcement(
        nid, title, category, first, first + timedelta(seconds=edited_s), True, edited_s > 0, parse_title(title)
    )


def decide(st: WatcherState, anns, now=NOW, krw=None, **kw):
    kw.setdefault("max_age_s", 600.0)
    kw.setdefault("ticker_period_s", 7 * 86400.0)
    return st.decide(anns, now, krw_markets=krw, **kw)[0]


def test_decisions_once_per_notice_and_per_ticker(tmp_path):
    st = WatcherState(tmp_path / "s.json")
    deep = ann(10, "딥북(DEEP) KRW 마켓 디지털 자산 추가", age_s=2.0)
    (t,) = decide(st, [deep, ann(9, "바운드리스(ZKC) 거래 유의 종목 지정 안내")])
    assert (t.notice_id, t.tickers, t.t0_ns, t.delay_ns) == (10, ("DEEP",), NOW - 2 * 10**9, 2 * 10**9)
    assert t.t0 == deep.first_listed_at and t.capture and not t.market_checked
    assert decide(st, [deep]) == []  # same notice again
    edited = ann(10, "딥북(DEEP) KRW 마켓 디지털 자산 추가 (매도 최저가 기준 가격 안내)", age_s=2.0, edited_s=60)
    assert decide(st, [edited], now=NOW + 60 * 10**9) == []  # its edit
    assert decide(st, [ann(11, "딥북(DEEP) KRW 마켓 디지털 자산 추가", age_s=0.5)]) == []  # a re-post: same ticker
    # a multi-ticker notice where one ticker already triggered: the others still do
    (t2,) = decide(st, [ann(12, "딥북(DEEP), 제로지(0G) KRW 마켓 디지털 자산 추가", age_s=0.5)])
    assert t2.tickers == ("0G",)


def test_decisions_a_listing_first_seen_edited_triggers_once(tmp_path):
    """Issue 13: a listing whose title gained a note before the watcher first saw it triggers, with
    t0 = first_listed_at; a separate follow-up notice (new id) with the same note does not."""
    st = WatcherState(tmp_path / "s.json")
    edited = ann(
        20, "두들즈(DOOD) 신규 거래지원 안내 (KRW, USDT 마켓) (매도 최저가 기준 가격 안내)", age_s=5.0, edited_s=3
    )
    (t,) = decide(st, [edited])
    assert (t.notice_id, t.tickers, t.t0_ns) == (20, ("DOOD",), NOW - 5 * 10**9) and st.missed == []
    follow = ann(21, "두들즈(DOOD) 신규 거래지원 안내 (KRW, USDT 마켓) (거래지원 개시 시점 변경 안내)", age_s=1.0)
    assert decide(st, [follow]) == []  # deduplicated by ticker
    # free text appended: still a follow-up only, reported as missed when never seen plainly
    assert decide(st, [ann(22, "에프(F) 신규 거래지원 안내 (KRW 마켓) - 입금 일정 안내")]) == []
    assert [m["why"] for m in st.missed] == ["follow-up only"]


def test_decisions_ticker_period(tmp_path):
    st = WatcherState(tmp_path / "s.json")
    assert len(decide(st, [ann(1, "딥북(DEEP) KRW 마켓 디지털 자산 추가")])) == 1
    assert decide(st, [ann(2, "딥북(DEEP) KRW 마켓 디지털 자산 추가")], ticker_period_s=3600) == []
    later = NOW + 2 * 3600 * 10**9
    first = datetime.fromtimestamp((later - 10**9) / 1e9, KST)
    relist = Announcement(
        3,
        "딥북(DEEP) KRW 마켓 디지털 자산 추가",
        "거래",
        first,
        first,
        True,
        False,
        parse_title("딥북(DEEP) KRW 마켓 디지털 자산 추가"),
    )
    (t,) = decide(st, [relist], now=later, ticker_period_s=3600)
    assert t.tickers == ("DEEP",)


def test_decisions_age_categories_and_markets(tmp_path):
    st = WatcherState(tmp_path / "s.json")
    old = ann(1, "오덜리(ORDER) KRW 마켓 디지털 자산 추가", age_s=3 * 86400, edited_s=3 * 86400 - 5)
    hour = ann(2, "캐시캣(CASHCAT) 신규 거래지원 안내 (KRW, BTC, USDT 마켓)", age_s=3600)
    btc = ann(3, "[거래] BTC 마켓 디지털 자산 추가 (AXL)")
    event = ann(4, "딥북(DEEP) KRW 마켓 디지털 자산 추가", category="이벤트")
    op = ann(5, "Market Support for Optimism(OP), Arbitrum(ARB) (KRW, BTC, USDT Market)")
    sui = ann(6, "Market Support for Sui(SUI) (KRW Market)")
    out = decide(st, [old, hour, btc, event, op, sui], krw=frozenset({"OP", "ARB", "BTC"}))
    assert [(t.notice_id, t.already_listed, t.already_listed_tickers, t.market_checked) for t in out] == [
        (5, True, ("OP", "ARB"), True),
        (6, False, (), True),
    ]
    assert not out[0].capture and out[0].capture_tickers == ()
    assert [m["notice_id"] for m in st.missed] == [2]  # an hour late: kept for a manual capture
    assert st.seen == {1, 2, 3, 4, 5, 6}
    assert set(st.pending) == {"SUI"}  # already-listed tickers wait for nothing


def test_decisions_partly_listed_and_market_open(tmp_path):
    st = WatcherState(tmp_path / "s.json")
    (t,) = decide(st, [ann(1, "Market Support for Optimism(OP), Arbitrum(ARB) (KRW Market)")], krw=frozenset({"OP"}))
    assert (t.already_listed, t.already_listed_tickers, t.capture_tickers) == (False, ("OP",), ("ARB",))
    opened = st.note_markets(frozenset({"OP", "ARB"}), NOW + 3600 * 10**9, pending_max_s=86400)
    assert [(m.ticker, m.notice_id) for m in opened] == [("ARB", 1)] and st.pending == {}
    assert st.opened["ARB"]["seen_ns"] == NOW + 3600 * 10**9


def test_state_survives_a_restart_and_is_written_atomically(tmp_path):
    path = tmp_path / "upbit_state.json"
    st = WatcherState(path)
    (t,) = decide(st, [ann(7, "제로지(0G) KRW, USDT 마켓 디지털 자산 추가")])
    st.save()
    assert [p.name for p in tmp_path.iterdir()] == ["upbit_state.json"]  # no temp file left behind
    again = WatcherState.load(path)
    assert again.existed and again.seen == {7} and "0G" in again.tickers and "0G" in again.pending
    assert ListingTrigger.from_dict(again.history[0]) == t
    assert decide(again, [ann(7, "제로지(0G) KRW, USDT 마켓 디지털 자산 추가")]) == []


def test_unreadable_state_is_set_aside(tmp_path):
    path = tmp_path / "upbit_state.json"
    path.write_text("{not json")
    st = WatcherState.load(path)
    assert not st.existed and st.seen == set()
    assert [p.name.startswith("upbit_state.json.corrupt-") for p in tmp_path.iterdir()] == [True]


def test_settings_are_checked():
    with pytest.raises(InvalidInputError, match="per_page"):
        UpbitWatcher("/tmp/x", per_page=80)
    with pytest.raises(InvalidInputError, match="intervall_s"):
        UpbitWatcher("/tmp/x", intervall_s=1)
    with pytest.raises(InvalidInputError, match="proxy"):
        UpbitWatcher("/tmp/x", proxies=["socks5://p:1080"])
    w = UpbitWatcher("/tmp/x", proxies=["http://a:3128", "http://b:3128"])
    assert [e.label for e in w.egresses] == ["direct", "proxy1:a", "proxy2:b"] and w.interval_s == 1.0


# =============================================================================================
# Against the stand-in


class VirtualTime:
    """One fake timeline for the watcher (its `clock`), the stand-in and the HTTP client, and the
    event loop they run on (`run_virtual`): where the subject is timing (the poll cadence, a hung
    request, back-off after 429/418/errors, a restart), seconds of the watcher's life pass in
    milliseconds and the same assertions hold exactly, whatever the load on the machine.

    Time moves only when every task waits: then it jumps to the next timer. Requests go over a
    Unix socket pair (`serve_in_process`) to the stand-in's own connection handler, which delivers
    in the send call, so nothing is in flight when time jumps. While a thread works (the state
    file is written with `asyncio.to_thread`) time stands still and the loop waits for it."""

    START = 1000.0

    def __init__(self) -> None:
        self.mono = self.START
        self.wall0 = time.time_ns()

    def monotonic(self) -> float:
        return self.mono

    def time_ns(self) -> int:
        return self.wall0 + round((self.mono - self.START) * 1e9)

    def time(self) -> float:
        return self.time_ns() / 1e9


class _JumpingSelector:
    """The loop's selector: ready I/O as usual; when nothing is ready, time jumps by the timeout."""

    def __init__(self, clock: VirtualTime) -> None:
        self._inner = selectors.DefaultSelector()
        self._clock = clock
        self.threads = 0

    def select(self, timeout=None):
        ready = self._inner.select(0)
        if ready or timeout == 0:
            return ready
        if self.threads or timeout is None:
            # A thread's result (or a loop shutting down) comes through the loop's self-pipe.
            return self._inner.select(0.01 if timeout is None else min(timeout, 0.01))
        self._clock.mono += timeout
        return []

    def __getattr__(self, name):
        return getattr(self._inner, name)


class _VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: VirtualTime) -> None:
        self._jumping = _JumpingSelector(clock)
        super().__init__(self._jumping)  # a selector in all but name: it wraps one
        self._virtual = clock

    def time(self) -> float:
        return self._virtual.mono

    def run_in_executor(self, executor, func, *args):
        fut = super().run_in_executor(executor, func, *args)
        self._jumping.threads += 1

        def done(_):
            self._jumping.threads -= 1

        fut.add_done_callback(done)
        return fut


@pytest.fixture
def vt(monkeypatch) -> VirtualTime:
    """The fake timeline, with the stand-in and the HTTP client reading their time from it."""
    clock = VirtualTime()
    monkeypatch.setattr(sim_upbit, "time", clock)
    monkeypatch.setattr(net_http, "time", clock)
    return clock


def run_virtual(clock: VirtualTime, coro, timeout: float = 60.0):
    """`run` on the fake timeline (the timeout is fake seconds too; pytest's own is real)."""
    with asyncio.Runner(loop_factory=lambda: _VirtualLoop(clock)) as runner:
        return runner.run(asyncio.wait_for(coro, timeout))


def serve_in_process(monkeypatch, sim: SimUpbit) -> None:
    """Every connection the watcher opens goes to `sim`'s connection handler over a Unix socket
    pair instead of TCP (the client and the stand-in are otherwise what they are on the network)."""

    async def open_pair(_client, _scheme: str, _host: str, _port: int):
        ours, theirs = socket.socketpair()
        server_reader, server_writer = await asyncio.open_connection(sock=theirs)
        task = asyncio.create_task(sim._serve_connection(server_reader, server_writer))
        sim._conns.add(task)
        task.add_done_callback(sim._conns.discard)
        return await asyncio.open_connection(sock=ours)

    monkeypatch.setattr(HttpClient, "_open", open_pair)


def drain(q: asyncio.Queue) -> list[ListingTrigger]:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


async def wait_for(cond, timeout: float, step: float = 0.02) -> bool:
    loop = asyncio.get_running_loop()  # on the fake timeline, fake seconds
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if cond():
            return True
        await asyncio.sleep(step)
    return cond()


def fast_watcher(data_dir, sim: SimUpbit, **kw) -> UpbitWatcher:
    kw.setdefault("interval_s", 0.1)
    kw.setdefault("request_timeout_s", 1.0)
    kw.setdefault("market_poll_s", 1.0)
    kw.setdefault("rate_backoff", Backoff(initial_s=0.3, max_s=2.0, jitter=0.0))
    kw.setdefault("error_backoff", Backoff(initial_s=0.3, max_s=2.0, jitter=0.0))
    return UpbitWatcher(data_dir, base_url=sim.base_url, market_url=sim.market_url, seed=1, **kw)


def check_triggers(triggers: list[ListingTrigger], sim: SimUpbit) -> None:
    expected = sim.expected_triggers()
    counts = Counter(t.notice_id for t in triggers)
    assert [i for i, c in counts.items() if c > 1] == [], "a notice triggered twice"
    got = {t.notice_id: (t.tickers, t.t0_ns) for t in triggers}
    assert got == expected
    for t in triggers:
        assert t.t0_ns == to_ns(t.t0) and t.delay_ns == t.detected_ns - t.t0_ns
        assert t.already_listed is any(n.already_listed for n in sim.scheduled if n.id == t.notice_id)


def script_served(sim: SimUpbit, script: list[SimNotice]) -> bool:
    """Every notice (and edit) of `script` is published and an announcement list was served since
    the last of them became visible. A publication waits for the next whole wall-clock second
    (`first_listed_at` resolution), so when that is depends on the wall clock, not on `at_s` alone."""
    if not all(n.visible_ns for n in script):
        return False
    last_visible = max(n.visible_ns for n in script)
    return any(s.path == "/api/v1/announcements" and s.wall_ns >= last_visible for s in sim.served)


# None: the wall clock as it comes; 0.53: the script's last notice (at_s 4.5) is published almost a
# second late, at the next whole second, and visible after the nominal end of the script.
@pytest.mark.parametrize("wall_fraction", [None, 0.53])
def test_every_listing_triggers_once_and_nothing_else(data_dir, vt, monkeypatch, wall_fraction):
    if wall_fraction is not None:
        vt.wall0 = vt.wall0 // 1_000_000_000 * 1_000_000_000 + round(wall_fraction * 1e9)

    async def main():
        opened = []
        called = []
        async with SimUpbit(seed=1, cdn_delay_s=0.15, min_interval_s=0.05) as sim:
            serve_in_process(monkeypatch, sim)
            script = sim.play_scenario(start_s=0.3, spacing_s=0.2)
            w = fast_watcher(data_dir, sim, clock=vt, on_trigger=called.append, on_market_open=opened.append)
            async with w:
                end = 0.3 + 0.2 * len(script) + 1.0
                await asyncio.sleep(end - sim.now_s())
                await wait_for(
                    lambda: (
                        len(sim.expected_triggers()) == w.triggers.qsize() and opened and script_served(sim, script)
                    ),
                    3.0,
                )
                metrics = w.metrics()
            triggers = drain(w.triggers)
            check_triggers(triggers, sim)
            assert len(sim.expected_triggers()) == 10
            assert sorted(t.notice_id for t in called) == sorted(t.notice_id for t in triggers)
            # the board's old listings and all edits never triggered (check_triggers), and edits happened
            assert len(sim.edit_visible_at) == 4
            # detection delay from first_listed_at: the CDN delay plus at most one interval (+ slack)
            for t in triggers:
                assert 0.15 <= t.delay_s <= 0.15 + 0.1 + 0.1, t
            # the second signal: OP was on KRW already, DEEP's market opened and was recorded
            (op,) = [t for t in triggers if t.tickers == ("OP",)]
            assert op.already_listed and not op.capture and op.market_checked
            assert [m.ticker for m in opened] == ["DEEP"]
            assert opened[0].seen_ns >= sim.market_opened_at["DEEP"]
            assert all(s.origin is None for s in sim.market_served), "/v1/market/all never with Origin"
            assert all(s.status == 200 for s in sim.market_served)
            # what was sent: ko-KR, a browser User-Agent, a new cache-busting value each time, ETags
            polls = [s for s in sim.served if s.path == "/api/v1/announcements"]
            assert all(s.accept_language.startswith("ko-KR") and "Mozilla" in s.user_agent for s in polls)
            busts = [s.query["_"] for s in polls]
            assert len(set(busts)) == len(busts)
            assert all(s.query["per_page"] == "20" and s.query["category"] == "trade" for s in polls)
            assert Counter(s.status for s in polls)[304] > len(polls) / 2
            assert metrics["status_304"] > 0 and metrics["triggers"] == 10 and metrics["cf_cache_status"]
            assert metrics["response_ms_p50"] is not None and metrics["egress"]["direct"]["etag"]
            state = json.loads((data_dir / "upbit_state.json").read_text())
            served_ids = {i for s in sim.served for i in s.top_ids}
            assert served_ids <= set(state["seen"])
            assert {n.id for n in script if sim.notices[n.id].category == "거래"} <= served_ids  # the trade tab
            assert state["opened"]["DEEP"]["notice_id"] == script[0].id

    run_virtual(vt, main(), 40)


def test_restart_neither_loses_nor_repeats(data_dir, vt, monkeypatch):
    async def main():
        async with SimUpbit(seed=2, cdn_delay_s=0.0, min_interval_s=0.05) as sim:
            serve_in_process(monkeypatch, sim)
            script = sim.play_scenario(start_s=0.3, spacing_s=0.2)
            end = 0.3 + 0.2 * len(script)
            first = fast_watcher(data_dir, sim, clock=vt)
            await first.start()
            await asyncio.sleep(0.3 + 0.2 * 8 - sim.now_s())
            await first.stop()
            got_first = drain(first.triggers)
            down_from = vt.time_ns()
            await asyncio.sleep(1.5)  # notices published while nothing watches
            down_until = vt.time_ns()
            second = fast_watcher(data_dir, sim, clock=vt)
            async with second:
                await asyncio.sleep(max(0.0, end + 0.8 - sim.now_s()))
                await wait_for(lambda: second.triggers.qsize() + len(got_first) >= len(sim.expected_triggers()), 2.0)
            got_second = drain(second.triggers)
            assert got_first and got_second
            check_triggers(got_first + got_second, sim)

            def published(lo: int, hi: int) -> set[int]:
                return {n.id for n in script if n.edit_of is None and n.expect and lo <= n.first_listed_ns <= hi}

            caught_up = {t.notice_id for t in got_second if t.catch_up}
            assert published(down_from, down_until), "the scenario publishes listings during the downtime"
            assert published(down_from, down_until) <= caught_up, "what appeared while down is caught up at start-up"
            # (give or take a poll interval at either end)
            assert caught_up <= published(down_from - 300_000_000, down_until + 300_000_000)

    run_virtual(vt, main(), 40)


def test_startup_catches_up_recent_listings_only(data_dir, tmp_path, vt, monkeypatch):
    async def main():
        async with SimUpbit(seed=3, min_interval_s=0.0) as sim:
            serve_in_process(monkeypatch, sim)
            recent = sim.schedule(SimNotice("제로지(0G) KRW, USDT 마켓 디지털 자산 추가", expect=("0G",)), 0.0)
            sim.schedule(SimNotice("", edit_of=sim.board_listing_ids[0]), 0.0)  # old listing edited: to the top
            await asyncio.sleep(1.3)
            async with fast_watcher(data_dir, sim, clock=vt) as w:
                assert await wait_for(lambda: w.triggers.qsize() >= 1, 2.0)
                await asyncio.sleep(0.3)
            (t,) = drain(w.triggers)
            assert (t.notice_id, t.tickers, t.t0_ns, t.catch_up) == (recent.id, ("0G",), recent.first_listed_ns, True)
            # the same board with a max age below the listing's age: not triggered, kept as missed
            async with fast_watcher(tmp_path / "other", sim, clock=vt, max_age_s=0.5) as w2:
                await wait_for(lambda: w2.metrics().get("status_200", 0) >= 1, 2.0)
            assert drain(w2.triggers) == []
            assert [m["notice_id"] for m in w2.state.missed] == [recent.id]

    run_virtual(vt, main(), 20)


def test_a_listing_edited_before_the_first_poll_triggers(data_dir, vt, monkeypatch):
    """Issue 13 scenario: the notice is published and edited (title with a note) before the watcher
    polls for the first time; it triggers once, with the t0 of its first publication."""

    async def main():
        async with SimUpbit(seed=4, min_interval_s=0.0, align_to_second=False) as sim:
            serve_in_process(monkeypatch, sim)
            n = sim.schedule(SimNotice("딥북(DEEP) KRW 마켓 디지털 자산 추가", expect=("DEEP",)), 0.0)
            sim.schedule(SimNotice(n.title + " (거래지원 개시 시점 변경 안내)", edit_of=n.id), 0.2)
            await asyncio.sleep(0.6)
            async with fast_watcher(data_dir, sim, clock=vt) as w:
                assert await wait_for(lambda: w.triggers.qsize() >= 1, 2.0)
                await asyncio.sleep(0.3)
            (t,) = drain(w.triggers)
            assert sim.notices[n.id].title.endswith("(거래지원 개시 시점 변경 안내)")  # the edit was served
            assert (t.notice_id, t.tickers) == (n.id, ("DEEP",)) and t.t0_ns == n.first_listed_ns // 10**9 * 10**9

    run_virtual(vt, main(), 20)


def test_a_hung_request_does_not_delay_the_next_polls(data_dir, vt, monkeypatch):
    async def main():
        async with SimUpbit(seed=4, min_interval_s=0.0, align_to_second=False) as sim:
            serve_in_process(monkeypatch, sim)
            async with fast_watcher(data_dir, sim, interval_s=0.1, request_timeout_s=0.6, clock=vt) as w:
                await asyncio.sleep(0.5)
                sim.hang_next(2.0)
                hang_at = vt.monotonic()
                listing = sim.schedule(
                    SimNotice("더블제로(2Z) 신규 거래지원 안내 (KRW, BTC, USDT 마켓)", expect=("2Z",)),
                    sim.now_s() + 0.3,
                )
                assert await wait_for(lambda: w.triggers.qsize() >= 1, 3.0)
                await asyncio.sleep(max(0.0, hang_at + 1.2 - vt.monotonic()))
                starts = [r.started for r in w.poll_log if r.started >= hang_at - 0.2]
                hung = [r for r in w.poll_log if r.outcome == "timeout"]
                metrics = w.metrics()
            (t,) = drain(w.triggers)
            assert t.notice_id == listing.id and t.tickers == ("2Z",)
            # Measured from when the stand-in made the notice visible, not from t0: first_listed_at
            # has whole-second resolution, so t0 is up to a second before the publication itself.
            assert (t.detected_ns - listing.visible_ns) / 1e9 <= 0.1 + 0.1, (
                "the listing during the hang was seen on schedule"
            )
            assert len(hung) == 1 and hung[0].ended - hung[0].started >= 0.55
            gaps = [b - a for a, b in itertools.pairwise(starts)]
            assert len(starts) >= 12 and max(gaps) < 0.1 + 0.06, gaps
            assert metrics["timeouts"] == 1 and metrics.get("backoffs", 0) == 0  # one timeout is no reason to slow
            served_during = [s for s in sim.served if hang_at < s.mono < hang_at + 1.0 and not s.hung_s]
            assert len(served_during) >= 8

    run_virtual(vt, main(), 20)


@pytest.mark.parametrize("status", [429, 418])
def test_rate_limit_slows_the_poller_and_it_recovers(data_dir, status, vt, monkeypatch):
    async def main():
        async with SimUpbit(seed=5, min_interval_s=0.0) as sim:
            serve_in_process(monkeypatch, sim)
            async with fast_watcher(data_dir, sim, clock=vt, interval_s=0.1) as w:
                await asyncio.sleep(0.5)
                t_throttle = vt.monotonic()
                sim.throttle(1.5, status=status, retry_after=1)
                listing = sim.schedule(
                    SimNotice("에프(F) 신규 거래지원 안내 (KRW, BTC, USDT 마켓)", expect=("F",)), sim.now_s() + 0.2
                )
                assert await wait_for(lambda: w.triggers.qsize() >= 1, 4.0)
                t_trigger = vt.monotonic()
                await asyncio.sleep(1.0)
                metrics = w.metrics()
            during = [s for s in sim.served if t_throttle <= s.mono < t_throttle + 1.5]
            after = [s.mono for s in sim.served if s.mono >= t_throttle + 2.2]
            assert all(s.status == status for s in during)
            assert len(during) <= 4, f"{len(during)} requests in 1.5 s of {status}s: not slowed down"
            assert metrics["backoffs"] >= 1 and str(status) in metrics["last_backoff_reason"]
            # recovered: the listing made during the throttle triggered, and the cadence is back
            (t,) = drain(w.triggers)
            assert t.notice_id == listing.id and t_trigger - t_throttle < 1.5 + 1.0
            gaps = [b - a for a, b in itertools.pairwise(after)]
            assert len(after) >= 5 and max(gaps) < 0.1 + 0.06, gaps

    run_virtual(vt, main(), 20)


def test_polling_too_fast_gets_429s_and_the_poller_backs_off(data_dir, vt, monkeypatch):
    async def main():
        async with SimUpbit(seed=6, min_interval_s=0.35) as sim:
            serve_in_process(monkeypatch, sim)
            async with fast_watcher(data_dir, sim, clock=vt, interval_s=0.1) as w:
                await asyncio.sleep(2.0)
                metrics = w.metrics()
            statuses = Counter(s.status for s in sim.served)
            assert statuses[429] >= 1 and metrics["backoffs"] >= 1
            # without back-off 20 requests would have gone out, nearly all of them refused
            assert sum(statuses.values()) <= 12 and statuses[429] < sum(statuses.values())

    run_virtual(vt, main(), 20)


def test_the_stand_in_counts_requests_per_second_not_their_spacing(vt):
    """Upbit counts requests per second from the first (docs.upbit.com, 요청 수 제한), so two polls
    sent at the allowed rate that arrive 0.1 s apart (a busy machine) are both answered; a third in
    the same second is refused, a refused request does not count, and the next second starts afresh."""
    sim = SimUpbit(seed=6, min_interval_s=0.5)  # 2 requests a second

    def poll_at(t: float, peer: str = "10.0.0.1") -> tuple[int, str | None]:
        vt.mono = VirtualTime.START + t
        status, _body, extra = sim._list(peer, "/api/v1/announcements", {}, {}, "")
        return status, extra.get("Retry-After")

    assert poll_at(0.0)[0] == 200
    assert poll_at(0.1)[0] == 200  # the old arrival-spacing rule refused this one
    assert poll_at(0.2) == (429, "1")
    assert poll_at(0.95) == (429, "1")
    assert poll_at(0.96, peer="10.0.0.2")[0] == 200  # per IP
    assert [poll_at(t)[0] for t in (1.0, 1.05, 1.1)] == [200, 200, 429]


def test_errors_back_off_after_a_few_and_a_bad_body_does_not_stop_it(data_dir, vt, monkeypatch):
    async def main():
        async with SimUpbit(seed=7, min_interval_s=0.0) as sim:
            serve_in_process(monkeypatch, sim)
            async with fast_watcher(data_dir, sim, clock=vt, interval_s=0.1, error_threshold=3) as w:
                await asyncio.sleep(0.3)
                sim.fail_next(3, 503)
                assert await wait_for(lambda: w.metrics().get("backoffs", 0) >= 1, 2.0)
                ok = w.metrics()["status_304"]
                assert await wait_for(lambda: w.metrics()["status_304"] > ok, 2.0)  # back after the back-off
                sim.malformed_next(1)  # one bad body: an error, not yet a reason to back off
                listing = sim.schedule(SimNotice("딥북(DEEP) KRW 마켓 디지털 자산 추가", expect=("DEEP",)), sim.now_s())
                assert await wait_for(lambda: w.triggers.qsize() >= 1, 3.0)
                metrics = w.metrics()
            assert metrics["status_503"] == 3 and metrics["backoffs"] == 1 and metrics["errors"] >= 4
            assert "503" in metrics["last_backoff_reason"]
            (t,) = drain(w.triggers)
            assert t.notice_id == listing.id

    run_virtual(vt, main(), 20)


class ConnectProxy:
    """A minimal HTTP CONNECT proxy on 127.0.0.1 whose upstream connections come from `source`
    (another loopback address), so the stand-in sees each egress as its own IP."""

    def __init__(self, source: str, credentials: str | None = None):
        self.source = source
        self.credentials = credentials
        self.tunnels = 0
        self.refused = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        auth = f"{self.credentials}@" if self.credentials else ""
        return f"http://{auth}127.0.0.1:{port}"

    async def stop(self) -> None:
        self.server.close()
        for w in self.writers:
            w.close()

    async def _handle(self, reader, writer):
        self.writers.append(writer)
        try:
            line = await reader.readline()
            headers = {}
            while (h := await reader.readline()) not in (b"\r\n", b""):
                k, _, v = h.decode().partition(":")
                headers[k.strip().lower()] = v.strip()
            _, target, _ = line.decode().split()
            want = "Basic " + base64.b64encode(self.credentials.encode()).decode() if self.credentials else None
            if want and headers.get("proxy-authorization") != want:
                self.refused += 1
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
                await writer.drain()
                return
            host, port = target.rsplit(":", 1)
            up_r, up_w = await asyncio.open_connection(host, int(port), local_addr=(self.source, 0))
            self.writers.append(up_w)
            self.tunnels += 1
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()

            async def pipe(r, w):
                try:
                    while data := await r.read(65536):
                        w.write(data)
                        await w.drain()
                except (ConnectionError, asyncio.CancelledError):
                    pass
                finally:
                    w.close()

            await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        except (ConnectionError, ValueError, asyncio.CancelledError):
            writer.close()


def test_proxies_each_keep_their_own_etag(data_dir):
    async def main():
        p1, p2 = ConnectProxy("127.0.0.2"), ConnectProxy("127.0.0.3", credentials="user:s3cret")
        url1, url2 = await p1.start(), await p2.start()
        try:
            async with SimUpbit(seed=8, min_interval_s=0.0) as sim:
                egresses = [Egress("tokyo", proxy=url1), Egress("seoul", proxy=url2)]
                async with fast_watcher(data_dir, sim, interval_s=0.05, proxies=egresses) as w:
                    await asyncio.sleep(0.4)
                    sim.schedule(
                        SimNotice("바이프로스트(BFC) KRW, USDT 마켓 디지털 자산 추가", expect=("BFC",)), sim.now_s()
                    )
                    assert await wait_for(lambda: w.triggers.qsize() >= 1, 3.0)
                    await asyncio.sleep(0.4)
                    metrics = w.metrics()
                (t,) = drain(w.triggers)
                assert t.tickers == ("BFC",)
        finally:
            await p1.stop()
            await p2.stop()
        assert p1.tunnels >= 1 and p2.tunnels >= 1 and p2.refused == 0
        by_peer: dict[str, list] = {}
        for s in sim.served:
            by_peer.setdefault(s.peer, []).append(s)
        assert set(by_peer) == {"127.0.0.1", "127.0.0.2", "127.0.0.3"}
        assert set(metrics["egress"]) == {"direct", "tokyo", "seoul"}
        for peer, served in by_peer.items():
            assert len(served) >= 5
            etag = None
            for s in served:  # each request carries the ETag its own egress last received
                assert s.if_none_match == etag, peer
                if s.status == 200:
                    etag = s.etag
            assert Counter(s.status for s in served)[200] == 2, peer  # the board, then the board with BFC

    run(main(), 20)


def test_stand_in_endpoints(data_dir, vt, monkeypatch):
    """The stand-in itself, spoken to with the watcher's HTTP client: shapes, 304, detail, legacy."""

    async def main():
        async with SimUpbit(seed=9, min_interval_s=0.0, cdn_delay_s=0.3, align_to_second=False) as sim:
            serve_in_process(monkeypatch, sim)
            c = HttpClient()
            n = sim.schedule(SimNotice("딥북(DEEP) KRW 마켓 디지털 자산 추가", expect=("DEEP",)), 0.5)
            url = sim.announcements_url + "?os=web&page=1&per_page=5&category=trade"
            r = await c.get(url, {"Accept-Encoding": "gzip"})
            assert r.status == 200 and r.headers["content-encoding"] == "gzip" and r.headers["etag"].startswith('W/"')
            page = parse_page(r.body)
            assert len(page.announcements) == 5 and n.id not in [a.id for a in page.announcements]
            assert all(a.category == "거래" for a in page.announcements)
            r2 = await c.get(sim.announcements_url + "?per_page=5&category=trade", {"If-None-Match": r.headers["etag"]})
            assert r2.status == 304 and r2.body == b""
            await asyncio.sleep(0.6 - sim.now_s())
            r3 = await c.get(sim.announcements_url + "?per_page=5&category=trade", {"If-None-Match": r.headers["etag"]})
            assert r3.status == 304  # published at 0.5 s, but not through the CDN yet
            await asyncio.sleep(0.9 - sim.now_s())
            r3 = await c.get(
                sim.announcements_url + "?per_page=5&category=trade",
                {"If-None-Match": r.headers["etag"], "Accept-Language": "en-US"},
            )
            assert n.visible_ns - n.first_listed_ns == pytest.approx(0.3e9, abs=2e6)  # the CDN delay
            top = parse_page(r3.body).announcements[0]
            assert r3.status == 200 and top.id == n.id and top.category == "Trade"
            assert top.t0_ns == n.first_listed_ns // 10**9 * 10**9  # first_listed_at has whole seconds
            d = await c.get(f"{sim.base_url}/api/v1/announcements/{n.id}", {})
            assert json.loads(d.body)["data"]["title"] == n.title
            d = await c.get(f"{sim.base_url}/api/v1/announcements/99999", {})
            assert json.loads(d.body)["success"] is False
            legacy = parse_page((await c.get(f"{sim.base_url}/api/v1/notices?page=1&per_page=3", {})).body)
            assert legacy.announcements[0].id == n.id
            m = await c.get(sim.market_url, {"Origin": "https://upbit.com"})
            m2 = await c.get(sim.market_url, {"Origin": "https://upbit.com"})
            assert m.status == 200 and m2.status == 429  # an Origin header: 1 request per 10 s
            assert "BTC" in parse_market_list(m.body)
            await c.close()

    run_virtual(vt, main(), 20)
