"""The Upbit watcher: finds every new KRW listing on Upbit's announcement board, as early as the public
endpoint allows, and never a false one.

Three layers, each usable on its own:

- `parse_title(title)`: a listing title (Korean or English, legacy or current shape) into a `Listing`
  (tickers in order, markets, whether it opens KRW), `None` for everything else. The grammar is
  strict on purpose: a title is a listing only if it is *entirely* one of the known shapes, so a
  caution, delisting, deposit notice, swap, event or airdrop that names a ticker and the word
  거래지원 never matches, and a listing title with anything added (a start-time change, a price
  guide, an event) is a follow-up, not a listing.
- `parse_announcements(body)`: a list response (current `data.notices`, legacy `data.list`) into
  `Announcement`s; a malformed body raises `AnnouncementFormatError`.
- `UpbitWatcher`: polls the list on a fixed schedule (each poll its own task with a short timeout,
  so a hung request never delays the next), with one ETag per egress, a cache-busting parameter,
  browser headers, back-off on 429/418/403 and on repeated errors; decides which notices are new
  listings (`WatcherState`, persisted atomically in the data directory), hands `ListingTrigger`s to
  an `asyncio.Queue` and/or a callback, and checks `/v1/market/all` to mark tickers that are
  already on KRW and to record when a new KRW market opens.

t0 is always `first_listed_at` (the original publication time); `listed_at` moves when a notice
is edited and is never used as t0. UPBIT.md (../shared) has the facts this is built from.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
import ssl
import statistics
import time
import unicodedata
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlencode, urlsplit

from . import faults
from .errors import InvalidInputError

# The one network layer; its names stay importable from here for the watcher's callers.
from .net import (
    Backoff,
    HttpClient,
    HttpError,
    HttpResponse,
    check_proxy,
    retry_after_s,
    write_atomic,
)
from .tls import context_for

#: A Retry-After from Upbit's CDN is followed up to this long per egress: the other egresses go
#: on polling, and a listing must not go unseen for a day because one proxy's answer said so.
MAX_RETRY_AFTER_S = 3600.0

log = logging.getLogger("pumpwatch.upbit")

KST = timezone(timedelta(hours=9), "KST")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

ANNOUNCEMENTS_URL = "https://api-manager.upbit.com/api/v1/announcements"
MARKET_ALL_URL = "https://api.upbit.com/v1/market/all"
STATE_FILE = "upbit_state.json"
STATE_VERSION = 1


class AnnouncementFormatError(InvalidInputError):
    """An announcement list response is not in a shape PumpWatch knows (not JSON, no `data.notices`
    or `data.list`, a row without an id, title or time)."""


class MarketListFormatError(InvalidInputError):
    """A `/v1/market/all` response is not a JSON list of markets."""


# =============================================================================================
# Titles


@dataclass(frozen=True, slots=True)
class Listing:
    """What a listing title announces.

    `tickers` are every ticker in title order; `markets` the union of the markets opened (in the
    order KRW, BTC, USDT); `krw` whether a KRW market opens; `krw_tickers` the tickers that get one
    (a notice such as `A(A)(BTC, USDT 마켓), B(B)(KRW 마켓) 디지털 자산 추가` lists both, only B is a
    KRW listing). Built by hand, `krw_tickers` defaults to all tickers when `krw` is true.
    """

    tickers: tuple[str, ...]
    markets: tuple[str, ...]
    krw: bool
    krw_tickers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.krw_tickers is None:
            object.__setattr__(self, "krw_tickers", self.tickers if self.krw else ())


_MARKET_NAMES = {"KRW": "KRW", "원화": "KRW", "BTC": "BTC", "USDT": "USDT"}
_MARKET_ORDER = {"KRW": 0, "BTC": 1, "USDT": 2}
_MKT = r"(?:KRW|BTC|USDT|원화)"
_MKT_WORD = r"(?:마켓|[Mm]arkets?)"
# "KRW, BTC, USDT" / "KRW·USDT" / "KRW 마켓, BTC 마켓" / "KRW and USDT"
_MKT_LIST = rf"{_MKT}(?:\s*{_MKT_WORD})?(?:\s*(?:,|/|·|및|and|&)\s*{_MKT}(?:\s*{_MKT_WORD})?)*"
# A ticker is upper-case letters and digits with at least one letter: F, 0G, 2Z, 1INCH, 1000SATS.
_TICKER = r"[0-9]{0,12}[A-Z][A-Z0-9]{0,14}"

_PREFIX = re.compile(r"^\[\s*(?:거래|Trade|Trading)\s*\]\s*")
_MARKETS_IN = re.compile(_MKT)
# An asset as a title names it: `딥북(DEEP)`, `Maple Finance(SYRUP)`, `비트코인 (BTC)`. The name
# may not hold brackets, commas or punctuation that only free text has.
_ASSET = re.compile(rf"\s*(?P<name>[^()\[\]{{}}<>,:;!?~\"]*?)\s*\(\s*(?P<ticker>{_TICKER})\s*\)")
# Markets for the assets just named: `(KRW, USDT 마켓)` / ` (KRW Market)` or bare ` KRW, BTC 마켓`.
_MARKETS_PAREN = re.compile(rf"\s*\(\s*(?P<m>{_MKT_LIST})\s*{_MKT_WORD}\s*\)")
_MARKETS_BARE = re.compile(rf"\s+(?P<m>{_MKT_LIST})\s*{_MKT_WORD}(?=\s|,|$)")
_SEPARATOR = re.compile(r"\s*(?:,|및|&|\band\b)\s*")
_ONLY_MARKETS = re.compile(rf"(?P<m>{_MKT_LIST})\s*{_MKT_WORD}?")
_TICKER_LIST = re.compile(rf"(?P<list>{_TICKER}(?:\s*,\s*{_TICKER})*)")

# Shapes. Each captures the part that names assets (`head`/`body`) and what follows the shape's
# keywords (`tail`), which must be empty or a markets parenthesis for a listing.
_ANY_SHAPE = re.compile(r"추가|거래\s*지원|[Ss]upport|오픈")
_SHAPE_NEW = re.compile(r"(?P<head>.*?)\s*신규\s*거래\s*지원(?:\s*안내)?(?P<tail>.*)")
_SHAPE_ADD = re.compile(r"(?P<head>.*?)\s*디지털\s*자산\s*추가(?:\s*안내)?(?P<tail>.*)")
_SHAPE_LEGACY_HEAD = re.compile(rf"(?P<m>{_MKT_LIST})\s*마켓")
_SHAPE_SUPPORT = re.compile(r"(?:New\s+)?[Mm]arket\s+[Ss]upport\s+for\s+(?P<body>.+)")
_SHAPE_OPEN = re.compile(
    rf"(?P<name>[^()\[\]]+?)\s*원화\s*마켓\s*\(\s*(?P<ticker>{_TICKER})\s*/\s*KRW\s*\)\s*오픈(?:\s*안내)?(?P<tail>.*)"
)

# Words no asset name holds but notices that must never trigger do (events, cautions, delistings,
# deposit/withdrawal, distributions, follow-ups). Swap (스왑) is not here: 유니스왑, SushiSwap.
_NOT_A_NAME = re.compile(
    r"이벤트|에어드[랍롭]|유의|종료|입출금|입금|출금|중단|지급|기념|당첨|스냅샷|변경|연기|점검|보유|해제|촉구|"
    r"안내|공지|취소|지연|재개|폐지|거래\s*지원|신규|마켓|상금|선물|"
    r"(?i:\bevents?\b|airdrop|terminat|caution|warning|delist|suspen|deposit|withdraw|maintenance|notice|\bsupport\b)"
)


@lru_cache(maxsize=256)
def _markets(text: str) -> tuple[str, ...]:
    found = {_MARKET_NAMES[m] for m in _MARKETS_IN.findall(text)}
    return tuple(sorted(found, key=_MARKET_ORDER.__getitem__))


def _scan_assets(text: str) -> tuple[list[list[Any]], int] | None:
    """Reads `Name(T)[ markets][, Name(T)[ markets]]...` from the start of `text`.

    Returns `[[ticker, markets | None], ...]` and where reading stopped (after the last complete
    asset or markets spec), or None if `text` does not start with an asset. A markets spec applies
    to every asset since the previous one (`A(A), B(B) (KRW Market)`: both; `A(A)(BTC 마켓),
    B(B)(KRW 마켓)`: one each)."""
    items: list[list[Any]] = []
    pos, pending, n = 0, 0, len(text)
    while True:
        m = _ASSET.match(text, pos)
        if m is None or _NOT_A_NAME.search(m["name"]):
            return (items, pos) if items else None
        items.append([m["ticker"], None])
        pos = m.end()
        spec = _MARKETS_PAREN.match(text, pos) or _MARKETS_BARE.match(text, pos)
        if spec is not None:
            mk = _markets(spec["m"])
            for item in items[pending:]:
                item[1] = mk
            pending = len(items)
            pos = spec.end()
        if pos >= n:
            return items, pos
        sep = _SEPARATOR.match(text, pos)
        if sep is None or sep.end() >= n:
            return items, pos
        # A separator must be followed by another asset; otherwise the text after the last
        # complete asset is the caller's tail.
        if _ASSET.match(text, sep.end()) is None:
            return items, pos
        pos = sep.end()


def _tail_parens(tail: str) -> list[str] | None:
    """The parenthesised groups that make up `tail`, or None if it holds anything else."""
    groups, rest = _leading_parens(tail)
    return None if rest else groups


def _leading_parens(tail: str) -> tuple[list[str], bool]:
    """The parenthesised groups at the start of `tail` and whether anything else follows them. A
    group may hold parentheses of its own (`(거래지원 개시 시점 변경 (10/1 14:00))`)."""
    out: list[str] = []
    pos, n = 0, len(tail)
    while pos < n:
        while pos < n and tail[pos].isspace():
            pos += 1
        if pos >= n:
            break
        if tail[pos] != "(":
            return out, True
        depth, start = 0, pos
        while pos < n:
            depth += {"(": 1, ")": -1}.get(tail[pos], 0)
            pos += 1
            if depth == 0:
                break
        if depth != 0:
            return out, True
        out.append(tail[start + 1 : pos - 1].strip())
    return out, False


# A note appended to a listing title when Upbit edits the notice (a price guide, a changed start
# time) leaves it the listing it announces (UPBIT.md); a note that withdraws the listing does not.
_WITHDRAWN = re.compile(r"취소|철회|(?i:cancel|withdrawn|revoked)")


def _notes_kind(notes: list[str] | None) -> str:
    """`listing` for no trailing text or only parenthesised notes, `amended` for anything else."""
    if notes is None or any(_WITHDRAWN.search(n) for n in notes):
        return "amended"
    return "listing"


def _is_markets(text: str) -> bool:
    return _ONLY_MARKETS.fullmatch(text) is not None


def _build(items: list[list[Any]]) -> Listing | None:
    tickers: list[str] = []
    krw: list[str] = []
    markets: set[str] = set()
    for ticker, mk in items:
        if ticker in tickers:
            continue
        tickers.append(ticker)
        mk = mk or ()
        markets.update(mk)
        if "KRW" in mk:
            krw.append(ticker)
    if not tickers:
        return None
    ordered = tuple(sorted(markets, key=_MARKET_ORDER.__getitem__))
    return Listing(tuple(tickers), ordered, bool(krw), tuple(krw))


def _with_tail(items: list[list[Any]], tail: str, *, markets_paren: bool) -> tuple[Listing | None, str]:
    """Applies a trailing markets parenthesis (if the shape has one) to assets that have none; any
    other trailing text makes the title a follow-up (`amended`, with the listing it amends)."""
    parens, rest = _leading_parens(tail)
    if markets_paren and parens and _is_markets(parens[0]):
        mk = _markets(parens.pop(0))
        for item in items:
            if item[1] is None:
                item[1] = mk
    listing = _build(items)
    if listing is None:
        return None, "none"
    return listing, _notes_kind(None if rest else parens)


def _classify(title: str) -> tuple[Listing | None, str]:
    """`(listing, kind)`: kind is `listing` (also with parenthesised notes appended by an edit);
    `amended`, a listing title with free text or a withdrawal appended, with the listing it amends;
    or `none`, with None."""
    if not isinstance(title, str) or ("(" not in title and "（" not in title):
        return None, "none"
    if not unicodedata.is_normalized("NFKC", title):  # full-width parentheses, compatibility forms
        title = unicodedata.normalize("NFKC", title)
    t = " ".join(title.split())
    if _ANY_SHAPE.search(t) is None:  # most notices: no listing keyword at all
        return None, "none"
    t = _PREFIX.sub("", t, count=1)

    m = _SHAPE_ADD.fullmatch(t)
    if m is not None:
        head, tail = m["head"], m["tail"]
        legacy = _SHAPE_LEGACY_HEAD.fullmatch(head)
        if legacy is not None:  # `[거래] KRW, BTC 마켓 디지털 자산 추가 (SXL, MTTIC)`
            parens = _tail_parens(tail)
            if not parens:
                return None, "none"
            tl = _TICKER_LIST.fullmatch(parens[0])
            if tl is None:
                return None, "none"
            mk = _markets(legacy["m"])
            listing = _build([[tk.strip(), mk] for tk in tl["list"].split(",")])
            return listing, _notes_kind(parens[1:])
        scanned = _scan_assets(head)
        if scanned is None or scanned[1] != len(head):
            return None, "none"
        items = scanned[0]
        if any(mk is None for _, mk in items):
            return None, "none"
        return _with_tail(items, tail, markets_paren=False)

    m = _SHAPE_NEW.fullmatch(t)
    if m is not None:
        head, tail = m["head"], m["tail"]
        if not head:  # `신규 거래지원 안내 (ABC, XYZ) (KRW, BTC 마켓)`
            parens = _tail_parens(tail)
            if not parens or (tl := _TICKER_LIST.fullmatch(parens[0])) is None:
                return None, "none"
            items = [[tk.strip(), None] for tk in tl["list"].split(",")]
            return _with_tail(items, tail[tail.index(")") + 1 :], markets_paren=True)
        scanned = _scan_assets(head)
        if scanned is None or scanned[1] != len(head):
            return None, "none"
        return _with_tail(scanned[0], tail, markets_paren=True)

    m = _SHAPE_SUPPORT.fullmatch(t)
    if m is not None:
        body = m["body"]
        scanned = _scan_assets(body)
        if scanned is None:
            return None, "none"
        items, stop = scanned
        return _with_tail(items, body[stop:], markets_paren=False)

    m = _SHAPE_OPEN.fullmatch(t)
    if m is not None and not _NOT_A_NAME.search(m["name"]):
        return _with_tail([[m["ticker"], ("KRW",)]], m["tail"], markets_paren=False)
    return None, "none"


@lru_cache(maxsize=4096)
def _classify_cached(title: str) -> tuple[Listing | None, str]:
    return _classify(title)


def parse_title(title: str) -> Listing | None:
    """The listing a notice title announces, or None if it is not a listing.

    A listing for BTC or USDT markets only comes back with `krw=False`; a listing title without
    markets comes back with `markets=()` and `krw=False` (it cannot be told to open KRW). A listing
    title with parenthesised notes appended (Upbit edits the notice: a price guide, a changed start
    time; same id and `first_listed_at`) is still that listing. Cautions, delistings,
    deposit/withdrawal notices, swaps, events and airdrops, listing titles with free text or a
    withdrawal appended and service notices are None."""
    listing, kind = _classify_cached(title)
    return listing if kind == "listing" else None


def follow_up_of(title: str) -> Listing | None:
    """For a listing title with free text or a withdrawal note appended (`... - 입금 일정 안내`,
    `(추가 취소)`): the listing it amends. Never a trigger; worth a warning if that listing was never
    seen. (Parenthesised notes of an edit are `parse_title`'s: the listing itself.)"""
    listing, kind = _classify_cached(title)
    return listing if kind == "amended" else None


# =============================================================================================
# Announcements


@dataclass(frozen=True, slots=True)
class Announcement:
    """One row of the announcement list. `first_listed_at` is the original publication (t0);
    `listed_at` the last (re)publication, later for an edited notice."""

    id: int
    title: str
    category: str
    first_listed_at: datetime
    listed_at: datetime
    need_new_badge: bool
    need_update_badge: bool
    listing: Listing | None

    @property
    def t0_ns(self) -> int:
        return to_ns(self.first_listed_at)

    @property
    def edited(self) -> bool:
        return self.listed_at > self.first_listed_at or self.need_update_badge


@dataclass(frozen=True, slots=True)
class AnnouncementPage:
    announcements: list[Announcement]
    total_count: int | None
    bad_rows: list[str]  # why each bad row was left out (lenient parsing only)
    skipped: int = 0  # rows left out because their id was in `skip_ids`


def to_ns(dt: datetime) -> int:
    """An aware datetime as integer nanoseconds since the epoch, exactly (no float)."""
    return (dt - _EPOCH) // timedelta(microseconds=1) * 1000


def _time(row: Mapping[str, Any], key: str, where: str) -> datetime:
    v = row.get(key)
    try:
        dt = datetime.fromisoformat(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise AnnouncementFormatError(f"{where}: `{key}` must be an ISO-8601 time string, not {v!r}") from None
    # Upbit's times are KST; a time without an offset is read as KST, not as local time.
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=KST)


def _row_id(row: Any, where: str) -> int:
    if not isinstance(row, dict):
        raise AnnouncementFormatError(f"{where} is not an object: {str(row)[:80]!r}")
    rid = row.get("id")
    if type(rid) is int:
        return rid
    if isinstance(rid, str) and rid.isdigit():
        return int(rid)
    raise AnnouncementFormatError(f"{where}: `id` must be an integer, not {rid!r}")


def _row(row: dict[str, Any], rid: int, where: str, legacy: bool) -> Announcement:
    title = row.get("title")
    if not isinstance(title, str):
        raise AnnouncementFormatError(f"{where} (id {rid}): `title` must be a string, not {title!r}")
    where = f"{where} (id {rid})"
    if legacy or "first_listed_at" not in row:
        # Legacy rows (`data.list`) have created_at / updated_at.
        first_key, last_key = ("created_at", "updated_at") if "created_at" in row else ("first_listed_at", "")
    else:
        first_key, last_key = "first_listed_at", "listed_at"
    first = _time(row, first_key, where)
    last = _time(row, last_key, where) if last_key and row.get(last_key) is not None else first
    category = row.get("category") or row.get("thread_name") or ""
    return Announcement(
        rid,
        title,
        category if isinstance(category, str) else str(category),
        first,
        last,
        row.get("need_new_badge") is True,
        row.get("need_update_badge") is True,
        parse_title(title),
    )


def parse_page(
    body: bytes | str | Mapping[str, Any], *, strict: bool = True, skip_ids: Container[int] | None = None
) -> AnnouncementPage:
    """Like `parse_announcements`, also returning `total_count`. With `strict=False` a bad row is
    skipped and its reason kept in `bad_rows` (one odd row must not blind the watcher); a bad
    envelope always raises. Rows whose id is in `skip_ids` (notices already judged) are checked for
    an id only and left out: the watcher's hot path builds only what it has not seen."""
    if isinstance(body, Mapping):
        doc: Any = body
    else:
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            head = body[:120] if isinstance(body, (bytes, str)) else type(body).__name__
            raise AnnouncementFormatError(f"announcement list is not JSON ({e}); it begins {head!r}") from None
    if not isinstance(doc, dict):
        raise AnnouncementFormatError(f"announcement list must be a JSON object, not {type(doc).__name__}")
    if doc.get("success") is False:
        err = doc.get("error") or doc.get("message") or doc.get("data")
        raise AnnouncementFormatError(f"announcement list answered success=false: {str(err)[:200]}")
    data = doc.get("data")
    if not isinstance(data, dict):
        raise AnnouncementFormatError(f"announcement list has no `data` object (keys: {sorted(doc)})")
    rows = data.get("notices")
    legacy = False
    if not isinstance(rows, list):
        rows, legacy = data.get("list"), True
        if not isinstance(rows, list):
            raise AnnouncementFormatError(
                f"announcement list has neither `data.notices` (current) nor `data.list` (legacy) as a list "
                f"(data keys: {sorted(data)})"
            )
    key = "data.list" if legacy else "data.notices"
    out: list[Announcement] = []
    bad: list[str] = []
    skipped = 0
    for i, row in enumerate(rows):
        try:
            rid = _row_id(row, f"{key}[{i}]")
            if skip_ids is not None and rid in skip_ids:
                skipped += 1
                continue
            out.append(_row(row, rid, f"{key}[{i}]", legacy))
        except AnnouncementFormatError as e:
            if strict:
                raise
            bad.append(str(e))
    total = data.get("total_count")
    return AnnouncementPage(out, total if type(total) is int else None, bad, skipped)


def parse_announcements(body: bytes | str | Mapping[str, Any]) -> list[Announcement]:
    """The announcements of a list response, in the order given (current shape `data.notices`,
    legacy `data.list` with `created_at`). Pinned `fixed_notices` are not listings and are left
    out. Raises `AnnouncementFormatError` for a body in no known shape."""
    return parse_page(body).announcements


def parse_market_list(body: bytes | str) -> frozenset[str]:
    """The base assets that have a KRW market in a `/v1/market/all` response (`KRW-BTC` -> `BTC`)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise MarketListFormatError(f"market list is not JSON ({e}); it begins {body[:120]!r}") from None
    if not isinstance(doc, list):
        raise MarketListFormatError(f"market list must be a JSON array, not {type(doc).__name__}: {str(doc)[:120]}")
    out = set()
    for i, m in enumerate(doc):
        code = m.get("market") if isinstance(m, dict) else None
        if not isinstance(code, str) or "-" not in code:
            raise MarketListFormatError(f"market list row {i} has no `market` code like KRW-BTC: {str(m)[:120]}")
        quote, _, base = code.partition("-")
        if quote == "KRW":
            out.add(base)
    return frozenset(out)


# =============================================================================================
# Triggers and the decisions that survive restarts


@dataclass(frozen=True, slots=True)
class ListingTrigger:
    """A new KRW listing, handed to capture. `tickers` are the KRW tickers not triggered recently;
    `already_listed_tickers` those of them that `/v1/market/all` already lists on KRW (reported,
    not captured). `market_checked` is false when the market list could not be had in time."""

    notice_id: int
    title: str
    tickers: tuple[str, ...]
    markets: tuple[str, ...]
    t0: datetime
    t0_ns: int
    detected_ns: int
    delay_ns: int
    already_listed: bool = False
    already_listed_tickers: tuple[str, ...] = ()
    market_checked: bool = False
    catch_up: bool = False  # found by the first poll after start-up, not as it appeared
    egress: str = ""

    @property
    def capture(self) -> bool:
        return not self.already_listed

    @property
    def capture_tickers(self) -> tuple[str, ...]:
        return tuple(t for t in self.tickers if t not in self.already_listed_tickers)

    @property
    def delay_s(self) -> float:
        return self.delay_ns / 1e9

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (lists, the t0 as ISO-8601 with its offset)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["t0"] = self.t0.isoformat()
        d["tickers"] = list(self.tickers)
        d["markets"] = list(self.markets)
        d["already_listed_tickers"] = list(self.already_listed_tickers)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ListingTrigger:
        kw = dict(d)
        kw["t0"] = datetime.fromisoformat(kw["t0"])
        for k in ("tickers", "markets", "already_listed_tickers"):
            kw[k] = tuple(kw.get(k) or ())
        return cls(**{k: v for k, v in kw.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class MarketOpened:
    """A KRW market that `/v1/market/all` lists for the first time after its listing triggered."""

    ticker: str
    notice_id: int
    t0_ns: int
    seen_ns: int  # when the market list first showed it (within `market_poll_s`)


#: After a failed write of the watcher state, the next try comes after this many seconds, doubling
#: up to the maximum: a disk that gets space back is noticed within half a minute.
STATE_RETRY_INITIAL_S = 1.0
STATE_RETRY_MAX_S = 30.0
MAX_SEEN = 5000  # notice ids kept; older ids that resurface are old notices (the age rule holds them)
MAX_HISTORY = 500


class WatcherState:
    """What the watcher has decided, persisted in `<data_dir>/upbit_state.json` after each change
    (temp file + fsync + rename + directory fsync: a crash leaves the old or the new file, never a
    torn one).

    - `seen`: notice ids already judged. A notice is judged once: an edit (same id, new listed_at,
      maybe a follow-up title) never triggers again.
    - `tickers`: ticker -> t0 and notice of its last trigger; a second listing notice for a ticker
      within `ticker_period_s` is a duplicate (a re-post, a correction).
    - `pending`: triggered KRW tickers whose KRW market has not appeared yet in /v1/market/all.
    - `opened`: when the KRW market of a triggered ticker appeared.
    - `history`: the last triggers; `missed`: listings seen too late to trigger.
    """

    def __init__(self, path: Path):
        self.path = path
        self.seen: set[int] = set()
        self.tickers: dict[str, dict[str, int]] = {}
        self.pending: dict[str, dict[str, int]] = {}
        self.opened: dict[str, dict[str, int]] = {}
        self.history: list[dict[str, Any]] = []
        self.missed: list[dict[str, Any]] = []
        self.existed = False

    @classmethod
    def load(cls, path: Path) -> WatcherState:
        st = cls(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return st
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("version") != STATE_VERSION:
                raise ValueError(f"unknown state version {doc.get('version') if isinstance(doc, dict) else doc!r}")
            st.seen = {int(i) for i in doc.get("seen", [])}
            st.tickers = {str(k): dict(v) for k, v in doc.get("tickers", {}).items()}
            st.pending = {str(k): dict(v) for k, v in doc.get("pending", {}).items()}
            st.opened = {str(k): dict(v) for k, v in doc.get("opened", {}).items()}
            st.history = list(doc.get("history", []))
            st.missed = list(doc.get("missed", []))
            st.existed = True
        except (ValueError, TypeError, AttributeError) as e:
            # Writes are atomic, so this is a hand edit or a foreign file: keep it for inspection and
            # start over. Starting over is safe: the board counts as seen, recent listings trigger.
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            os.replace(path, aside)
            log.error("Upbit watcher state %s is unreadable (%s); moved to %s, starting fresh", path, e, aside)
            return cls(path)
        return st

    def snapshot(self) -> bytes:
        seen = sorted(self.seen)[-MAX_SEEN:]
        doc = {
            "version": STATE_VERSION,
            "saved_ns": time.time_ns(),
            "seen": seen,
            "tickers": self.tickers,
            "pending": self.pending,
            "opened": self.opened,
            "history": self.history[-MAX_HISTORY:],
            "missed": self.missed[-100:],
        }
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()

    def save(self) -> None:
        self.write(self.snapshot())

    def write(self, data: bytes) -> None:
        faults.check("upbit.state", self.path)
        write_atomic(self.path, data)

    def decide(
        self,
        announcements: Iterable[Announcement],
        detected_ns: int,
        *,
        max_age_s: float,
        ticker_period_s: float,
        krw_markets: frozenset[str] | None = None,
        catch_up: bool = False,
        egress: str = "",
    ) -> tuple[list[ListingTrigger], bool]:
        """The triggers among `announcements` and whether the state changed. Pure and synchronous:
        concurrent polls cannot interleave inside it."""
        triggers: list[ListingTrigger] = []
        changed = False
        fresh = [a for a in announcements if a.id not in self.seen]
        if not fresh:
            return triggers, False
        fresh.sort(key=lambda a: (a.first_listed_at, a.id))
        period_ns = int(ticker_period_s * 1e9)
        max_age_ns = int(max_age_s * 1e9)
        for a in fresh:
            self.seen.add(a.id)
            changed = True
            listing = a.listing
            t0_ns = a.t0_ns
            age_ns = detected_ns - t0_ns
            if listing is None:
                amended = follow_up_of(a.title) if age_ns <= max_age_ns else None
                if amended is not None and amended.krw:
                    if all(t in self.tickers for t in amended.krw_tickers):
                        log.info(
                            "Upbit notice %d is a follow-up of the listing of %s; not a trigger",
                            a.id,
                            ",".join(amended.krw_tickers),
                        )
                    else:
                        # The listing itself was never seen with its plain title (edited before the first
                        # poll that could see it?): say so loudly, a human decides.
                        log.warning(
                            "Upbit notice %d is a follow-up of a KRW listing never seen (%r); not triggered",
                            a.id,
                            a.title,
                        )
                        self.missed.append(
                            {
                                "notice_id": a.id,
                                "title": a.title,
                                "tickers": list(amended.krw_tickers),
                                "t0_ns": t0_ns,
                                "seen_ns": detected_ns,
                                "why": "follow-up only",
                            }
                        )
                continue
            if not listing.krw:
                log.info(
                    "Upbit notice %d lists %s on %s only; not a KRW listing",
                    a.id,
                    ",".join(listing.tickers),
                    "/".join(listing.markets) or "no named market",
                )
                continue
            if a.category in _NOT_LISTING_CATEGORIES:
                log.warning(
                    "Upbit notice %d looks like a listing but is filed under %r; not triggered: %r",
                    a.id,
                    a.category,
                    a.title,
                )
                continue
            if age_ns > max_age_ns:
                # Either an old notice that resurfaced (edited, it jumps to the top) or a listing
                # first seen long after it appeared (start-up after downtime, an outage).
                if age_ns < 86_400 * 10**9:
                    self.missed.append(
                        {
                            "notice_id": a.id,
                            "title": a.title,
                            "tickers": list(listing.krw_tickers),
                            "t0_ns": t0_ns,
                            "seen_ns": detected_ns,
                            "why": "too old",
                        }
                    )
                    log.warning(
                        "Upbit listing %d (%s) first seen %.0f s after t0 (> max_age_s=%.0f); not triggered",
                        a.id,
                        ",".join(listing.krw_tickers),
                        age_ns / 1e9,
                        max_age_s,
                    )
                continue
            tickers = []
            for t in listing.krw_tickers:
                prev = self.tickers.get(t)
                if prev is not None and abs(t0_ns - prev["t0_ns"]) < period_ns:
                    log.info(
                        "Upbit notice %d: %s already triggered by notice %d; not again", a.id, t, prev["notice_id"]
                    )
                    continue
                tickers.append(t)
            if not tickers:
                continue
            already = tuple(t for t in tickers if krw_markets is not None and t in krw_markets)
            trig = ListingTrigger(
                notice_id=a.id,
                title=a.title,
                tickers=tuple(tickers),
                markets=listing.markets,
                t0=a.first_listed_at,
                t0_ns=t0_ns,
                detected_ns=detected_ns,
                delay_ns=detected_ns - t0_ns,
                already_listed=bool(already) and len(already) == len(tickers),
                already_listed_tickers=already,
                market_checked=krw_markets is not None,
                catch_up=catch_up,
                egress=egress,
            )
            for t in tickers:
                self.tickers[t] = {"t0_ns": t0_ns, "notice_id": a.id, "detected_ns": detected_ns}
                if t not in already:
                    self.pending[t] = {"t0_ns": t0_ns, "notice_id": a.id}
            self.history.append(trig.to_dict())
            triggers.append(trig)
        cutoff = detected_ns - period_ns
        for t in [t for t, v in self.tickers.items() if v["t0_ns"] < cutoff]:
            del self.tickers[t]
        return triggers, changed

    def note_markets(self, krw: frozenset[str], seen_ns: int, pending_max_s: float) -> list[MarketOpened]:
        """Pending tickers that now have a KRW market; pending tickers given up after `pending_max_s`."""
        out = []
        for t, v in list(self.pending.items()):
            if t in krw:
                del self.pending[t]
                self.opened[t] = {"notice_id": v["notice_id"], "t0_ns": v["t0_ns"], "seen_ns": seen_ns}
                out.append(MarketOpened(t, v["notice_id"], v["t0_ns"], seen_ns))
            elif seen_ns - v["t0_ns"] > pending_max_s * 1e9:
                del self.pending[t]
                log.warning(
                    "KRW-%s did not appear in /v1/market/all within %.0f h of notice %d; no longer watched",
                    t,
                    pending_max_s / 3600,
                    v["notice_id"],
                )
        return out


_NOT_LISTING_CATEGORIES = frozenset({"이벤트", "Event", "점검", "Maintenance"})


# =============================================================================================
# The watcher


@dataclass(frozen=True)
class Egress:
    """One way out to Upbit: direct (`proxy=None`), through an HTTP CONNECT proxy, and/or from a
    given local address. Each has its own ETag, back-off and metrics (Upbit limits per IP)."""

    label: str
    proxy: str | None = None
    local_addr: str | None = None


BROWSER_HEADERS = {
    "User-Agent": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/138.0.0.0 Safari/537.36"
    ),
    "Accept": "application/json, text/plain, */*",
    "Accept-Language": "ko-KR,ko;q=0.9,en-US;q=0.8,en;q=0.7",
    "Accept-Encoding": "gzip, deflate",
    "Referer": "https://upbit.com/",
    "Sec-Fetch-Dest": "empty",
    "Sec-Fetch-Mode": "cors",
    "Sec-Fetch-Site": "same-site",
}


@dataclass(frozen=True)
class WatcherSettings:
    #: The announcement list (`base_url` + `path`); the market list for the second signal
    #: (empty: no second signal).
    base_url: str = "https://api-manager.upbit.com"
    path: str = "/api/v1/announcements"
    market_url: str = MARKET_ALL_URL
    #: Time between polls, all egresses together (round-robin). None: 3 s / number of egresses,
    #: since reports put Upbit's tolerance near one request per 2-5 s per IP.
    interval_s: float | None = None
    #: A poll that has not got its whole response by then is abandoned (its socket closed). Polls
    #: overlap, so this bounds wasted sockets, not the schedule.
    request_timeout_s: float = 2.0
    max_in_flight: int = 8
    per_page: int = 20
    category: str = "trade"
    os: str = "web"
    #: The extra query parameter whose value changes on every poll, so no cache answers from an
    #: old copy of the list.
    cache_bust_param: str = "_"
    #: HTTP CONNECT proxies (`http://[user:pass@]host:port`) or `Egress`es; each is an egress.
    proxies: tuple[str | Egress, ...] = ()
    #: Also poll directly when proxies are given.
    include_direct: bool = True
    #: A listing is triggered only if it is first seen within this long of its first_listed_at.
    #: Covers a restart (crash, supervisor back-off, first poll) or an outage with a wide margin
    #: while the window [t0-20 s, t0+20 s] is certainly in the recording and the ring, and keeps
    #: an old notice that resurfaces (an edit moves it to the top) from triggering. Later ones are
    #: logged and kept in the state's `missed` list for a manual capture.
    max_age_s: float = 600.0
    #: A ticker triggers at most once in this period (re-posts, corrections, follow-ups).
    ticker_period_s: float = 7 * 86_400.0
    #: 429 (rate limited) / 418 (banned) / 403 (refused): this policy, per egress.
    rate_backoff: Backoff = field(default_factory=lambda: Backoff(initial_s=5.0, max_s=120.0, jitter=0.1))
    #: Errors (timeouts, connection failures, 5xx, malformed bodies): after `error_threshold` in a
    #: row on one egress, this policy. A single hung request costs nothing but its own poll.
    error_backoff: Backoff = field(default_factory=lambda: Backoff(initial_s=1.0, max_s=30.0, jitter=0.1))
    error_threshold: int = 3
    #: A PEM file of extra CAs to trust besides the system's ([tls] ca_file); "" = system CAs only.
    ca_file: str = ""
    #: /v1/market/all: every `market_poll_s` while triggered tickers wait for their KRW market,
    #: else every `market_refresh_s`; a pending ticker is given up after `pending_max_s`.
    market_poll_s: float = 10.0
    market_refresh_s: float = 300.0
    market_timeout_s: float = 3.0
    pending_max_s: float = 3 * 86_400.0
    headers: Mapping[str, str] = field(default_factory=lambda: dict(BROWSER_HEADERS))
    state_file: str = STATE_FILE

    def validated(self) -> WatcherSettings:
        def bad(name: str, want: str) -> InvalidInputError:
            return InvalidInputError(f"Upbit watcher setting `{name}` must be {want}, not {getattr(self, name)!r}")

        if self.interval_s is not None and not self.interval_s > 0:
            raise bad("interval_s", "a number of seconds > 0")
        if not self.request_timeout_s > 0:
            raise bad("request_timeout_s", "a number of seconds > 0")
        if not 1 <= self.per_page <= 50:
            raise bad("per_page", "between 1 and 50 (the endpoint's range)")
        if self.category not in ("trade", "all"):
            raise bad("category", "'trade' or 'all'")
        if self.max_in_flight < 1:
            raise bad("max_in_flight", ">= 1")
        if self.market_poll_s < 1.0:
            raise bad("market_poll_s", ">= 1 s (/v1/market/all is rate limited)")
        if self.max_age_s <= 0:
            raise bad("max_age_s", "a number of seconds > 0")
        if self.error_threshold < 1:
            raise bad("error_threshold", ">= 1")
        return self


@dataclass(slots=True)
class PollRecord:
    """One poll, kept for metrics and tests: when it started and how it ended."""

    seq: int
    egress: str
    started: float  # monotonic
    ended: float | None = None
    outcome: str = "pending"  # 200, 304, 429, ..., timeout, error
    response_ms: float | None = None
    cf_cache_status: str | None = None
    age_s: float | None = None


class _EgressState:
    def __init__(self, egress: Egress, ssl_context: ssl.SSLContext | None = None):
        self.egress = egress
        self.client = HttpClient(egress.proxy, local_addr=egress.local_addr, ssl_context=ssl_context)
        self.etag: str | None = None
        self.etag_seq = -1
        self.blocked_until = 0.0  # monotonic
        self.backoff_began = -1.0  # monotonic; a response to a request sent before it is old news
        self.rate_strikes = 0
        self.errors_in_row = 0
        self.counters: Counter[str] = Counter()


Callback = Callable[[Any], Awaitable[None] | None]


class UpbitWatcher:
    """Polls Upbit's announcement list and hands new KRW listings to capture.

        watcher = UpbitWatcher("./pumpwatch-data", interval_s=1.0, proxies=["http://p1:3128"])
        await watcher.start()
        trigger = await watcher.triggers.get()   # ListingTrigger; or pass on_trigger=async_fn
        ...
        await watcher.stop()

    Every keyword of `WatcherSettings` may be passed directly. Triggers go to `queue` (default:
    a new unbounded `asyncio.Queue`, `watcher.triggers`) and to `on_trigger` (called in its own
    task, so a slow consumer never holds up polling); KRW markets that open later go to
    `on_market_open` as `MarketOpened`.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        settings: WatcherSettings | None = None,
        on_trigger: Callback | None = None,
        on_market_open: Callback | None = None,
        queue: asyncio.Queue[ListingTrigger] | None = None,
        seed: int | None = None,
        **overrides: Any,
    ):
        s = settings or WatcherSettings()
        unknown = set(overrides) - set(WatcherSettings.__dataclass_fields__)
        if unknown:
            known = sorted(WatcherSettings.__dataclass_fields__)
            raise InvalidInputError(f"unknown Upbit watcher setting(s) {sorted(unknown)}; known: {known}")
        if "proxies" in overrides:
            overrides["proxies"] = tuple(overrides["proxies"])
        self.settings = replace(s, **overrides).validated()
        self.data_dir = Path(data_dir)
        self.on_trigger = on_trigger
        self.on_market_open = on_market_open
        self.triggers: asyncio.Queue[ListingTrigger] = queue if queue is not None else asyncio.Queue()
        self._rng = random.Random(seed)
        egresses: list[Egress] = []
        if self.settings.include_direct or not self.settings.proxies:
            egresses.append(Egress("direct"))
        for i, p in enumerate(self.settings.proxies):
            egresses.append(p if isinstance(p, Egress) else Egress(f"proxy{i + 1}:{urlsplit(p).hostname}", proxy=p))
        for e in egresses:
            if e.proxy:
                check_proxy(e.proxy)
        labels = [e.label for e in egresses]
        if len(set(labels)) != len(labels):
            raise InvalidInputError(f"egress labels must be unique: {labels}")
        self.egresses = egresses
        self.interval_s = self.settings.interval_s or max(0.25, 3.0 / len(egresses))
        self.state = WatcherState(self.data_dir / self.settings.state_file)
        self.krw_markets: frozenset[str] | None = None
        self.krw_markets_ns = 0
        self.poll_log: deque[PollRecord] = deque(maxlen=2000)
        self.counters: Counter[str] = Counter()
        self.cf_cache_status: Counter[str] = Counter()
        self._response_ms: deque[float] = deque(maxlen=1000)
        self._delays_ms: deque[float] = deque(maxlen=1000)
        self._last: dict[str, Any] = {}
        self._eg: list[_EgressState] = []
        self._rr = 0
        self._seq = 0
        self._in_flight: set[asyncio.Task[None]] = set()
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._had_success = False
        self._save_task: asyncio.Task[None] | None = None
        self._save_again = False
        #: the state on disk is behind memory since (ns), with this error; None = saved
        self.state_unsaved_since_ns: int | None = None
        self.state_unsaved_error = ""
        #: first retry after a failed state write; doubles up to `state_retry_max_s`
        self.state_retry_initial_s = STATE_RETRY_INITIAL_S
        self.state_retry_max_s = STATE_RETRY_MAX_S
        self._market_wake = asyncio.Event()
        self._market_client: HttpClient | None = None
        self.running = False

    # -- lifecycle

    async def start(self) -> None:
        if self.running:
            return
        self.state = await asyncio.to_thread(WatcherState.load, self.data_dir / self.settings.state_file)
        log.info(
            "Upbit watcher: %s, %d notices remembered, %d tickers pending a KRW market, polling every %.2f s via %s",
            self.state.path,
            len(self.state.seen),
            len(self.state.pending),
            self.interval_s,
            ", ".join(e.label for e in self.egresses),
        )
        tls = context_for(self.settings.ca_file)  # verified as every venue is: system CAs + [tls] ca_file
        self._eg = [_EgressState(e, tls) for e in self.egresses]
        self._had_success = False
        self.running = True
        if self.settings.market_url:
            self._market_client = HttpClient(ssl_context=tls)
            # The first trigger should already know which tickers are on KRW; bounded, never fatal.
            await self._refresh_markets()
            self._tasks.append(asyncio.create_task(self._track_markets(), name="upbit-markets"))
        self._tasks.append(asyncio.create_task(self._schedule(), name="upbit-schedule"))

    async def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        await _cancel_all([*self._tasks, *self._in_flight])
        self._tasks.clear()
        self._in_flight.clear()
        if self._save_task is not None:
            if self.state_unsaved_since_ns is not None:
                self._save_task.cancel()  # waiting to retry: the last try is below
            await asyncio.gather(self._save_task, return_exceptions=True)
        try:
            await asyncio.to_thread(self.state.save)
            self.state_unsaved_since_ns, self.state_unsaved_error = None, ""
        except OSError as err:
            # Not fatal: the seen notices are judged again at the next start (a listing among them
            # triggers again if still within max_age_s), and captures have their own pending.json.
            self.state_unsaved_error = f"{type(err).__name__}: {err}"
            log.error(
                "Upbit watcher state not saved to %s at stop (%s); notices seen since the last save are "
                "judged again at the next start",
                self.state.path,
                err,
            )
        for e in self._eg:
            await e.client.close()
        if self._market_client is not None:
            await self._market_client.close()
        if self._side_tasks:
            await asyncio.wait(self._side_tasks, timeout=1.0)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self) -> None:
        """Runs until cancelled."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    # -- schedule

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.interval_s
        next_at = loop.time()
        while self.running:
            self._tick(loop.time())
            next_at += interval
            now = loop.time()
            if next_at < now:  # the loop was blocked: skip the ticks that passed, keep the phase
                missed = int((now - next_at) // interval) + 1
                self.counters["ticks_missed"] += missed
                next_at += missed * interval
            await asyncio.sleep(next_at - now)

    def _tick(self, now: float) -> None:
        if len(self._in_flight) >= self.settings.max_in_flight:
            self.counters["skipped_in_flight"] += 1
            return
        n = len(self._eg)
        for i in range(n):
            e = self._eg[(self._rr + i) % n]
            if e.blocked_until <= now:
                self._rr = (self._rr + i + 1) % n
                break
        else:
            self.counters["skipped_backoff"] += 1
            return
        self._seq += 1
        rec = PollRecord(self._seq, e.egress.label, now)
        self.poll_log.append(rec)
        task = asyncio.create_task(self._poll(e, rec), name=f"upbit-poll-{self._seq}")
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    def _url(self, seq: int) -> str:
        s = self.settings
        q = {"os": s.os, "page": 1, "per_page": s.per_page, "category": s.category}
        if s.cache_bust_param:
            q[s.cache_bust_param] = f"{time.time_ns() // 1_000_000}{seq % 1000:03d}"
        return f"{s.base_url.rstrip('/')}{s.path}?{urlencode(q)}"

    async def _poll(self, e: _EgressState, rec: PollRecord) -> None:
        headers = dict(self.settings.headers)
        if e.etag:
            headers["If-None-Match"] = e.etag
        self.counters["polls"] += 1
        e.counters["polls"] += 1
        try:
            resp = await asyncio.wait_for(e.client.get(self._url(rec.seq), headers), self.settings.request_timeout_s)
        except TimeoutError:
            self._finish(rec, "timeout")
            self._on_error(e, rec, f"no complete response within {self.settings.request_timeout_s:.1f} s")
            return
        except Exception as err:
            self._finish(rec, "error")
            self._on_error(e, rec, f"{type(err).__name__}: {err}")
            return
        self._on_response(e, rec, resp)

    def _finish(self, rec: PollRecord, outcome: str, resp: HttpResponse | None = None) -> None:
        rec.ended = time.monotonic()
        rec.outcome = outcome
        if resp is not None:
            rec.response_ms = resp.elapsed_s * 1000
            rec.cf_cache_status = resp.headers.get("cf-cache-status")
            try:
                rec.age_s = float(resp.headers["age"]) if "age" in resp.headers else None
            except ValueError:
                rec.age_s = None

    def _on_response(self, e: _EgressState, rec: PollRecord, resp: HttpResponse) -> None:
        status = resp.status
        self._finish(rec, str(status), resp)
        self.counters[f"status_{status}"] += 1
        e.counters[f"status_{status}"] += 1
        self._response_ms.append(rec.response_ms or 0.0)
        self.cf_cache_status[rec.cf_cache_status or "none"] += 1
        self._last.update(response_ms=rec.response_ms, cf_cache_status=rec.cf_cache_status, age_s=rec.age_s)
        log.debug(
            "poll %d via %s: %d in %.0f ms (cf-cache-status %s, age %s)",
            rec.seq,
            e.egress.label,
            status,
            rec.response_ms or 0.0,
            rec.cf_cache_status,
            rec.age_s,
        )
        if status in (429, 418, 403):
            retry = retry_after_s(resp.headers.get("retry-after"))
            if retry is not None:
                retry = min(retry, MAX_RETRY_AFTER_S)
            what = {429: "rate limited (429)", 418: "banned (418)", 403: "refused (403, Cloudflare?)"}[status]
            self._back_off(e, rec, self.settings.rate_backoff, what, retry, rate=True)
            return
        if status not in (200, 304):
            self._on_error(e, rec, f"HTTP {status}: {resp.body[:120]!r}")
            return
        if status == 200:
            try:
                page = parse_page(resp.body, strict=False, skip_ids=self.state.seen)
            except AnnouncementFormatError as err:
                self._on_error(e, rec, str(err))
                return
            if page.bad_rows:
                self.counters["bad_rows"] += len(page.bad_rows)
                log.warning("Upbit list: %d row(s) skipped: %s", len(page.bad_rows), "; ".join(page.bad_rows[:3]))
            etag = resp.headers.get("etag")
            if etag and rec.seq > e.etag_seq:  # polls overlap: never go back to an older ETag
                e.etag, e.etag_seq = etag, rec.seq
            if page.total_count is not None:
                self._last["total_count"] = page.total_count
            self._judge(page.announcements, resp.done_ns, e.egress.label)
        if rec.started >= e.backoff_began:
            e.rate_strikes = 0
            e.errors_in_row = 0
        self._had_success = True

    def _judge(self, announcements: list[Announcement], detected_ns: int, egress: str) -> None:
        triggers, changed = self.state.decide(
            announcements,
            detected_ns,
            max_age_s=self.settings.max_age_s,
            ticker_period_s=self.settings.ticker_period_s,
            krw_markets=self.krw_markets,
            catch_up=not self._had_success,
            egress=egress,
        )
        for trig in triggers:
            self._deliver(trig)
        if changed:
            self._save_soon()

    def _deliver(self, trig: ListingTrigger) -> None:
        self.counters["triggers"] += 1
        self._delays_ms.append(trig.delay_ns / 1e6)
        self.triggers.put_nowait(trig)
        if self.on_trigger is not None:
            self._spawn(self.on_trigger, trig)
        if trig.already_listed:
            self.counters["already_listed"] += 1
            log.warning(
                "Upbit listing notice %d for %s, already on KRW: reported, not captured (%r)",
                trig.notice_id,
                ",".join(trig.tickers),
                trig.title,
            )
        else:
            log.warning(
                "UPBIT KRW LISTING %s: notice %d at %s, seen %.2f s later via %s (%r)",
                ",".join(trig.capture_tickers),
                trig.notice_id,
                trig.t0.isoformat(),
                trig.delay_s,
                trig.egress,
                trig.title,
            )
            self._market_wake.set()

    def _spawn(self, fn: Callback, arg: Any) -> None:
        async def call() -> None:
            try:
                r = fn(arg)
                if asyncio.iscoroutine(r) or isinstance(r, asyncio.Future):
                    await r
            except Exception:
                log.exception("Upbit watcher callback %r failed on %r", fn, arg)

        t = asyncio.create_task(call())
        self._side_tasks.add(t)
        t.add_done_callback(self._side_tasks.discard)

    def _on_error(self, e: _EgressState, rec: PollRecord, reason: str) -> None:
        self.counters["errors"] += 1
        if rec.outcome == "timeout":
            self.counters["timeouts"] += 1
        e.counters["errors"] += 1
        if rec.started < e.backoff_began:
            return
        e.errors_in_row += 1
        log.info("Upbit poll %d via %s failed: %s", rec.seq, e.egress.label, reason)
        if e.errors_in_row >= self.settings.error_threshold:
            self._back_off(
                e,
                rec,
                self.settings.error_backoff,
                f"{e.errors_in_row} errors in a row, last: {reason}",
                None,
                rate=False,
            )

    def _back_off(
        self, e: _EgressState, rec: PollRecord, policy: Backoff, why: str, retry_after: float | None, *, rate: bool
    ) -> None:
        if rec.started < e.backoff_began:
            return  # sent before the last back-off began: that back-off already covers it
        if rate:
            e.rate_strikes += 1
            strike = e.rate_strikes
        else:
            strike = e.errors_in_row - self.settings.error_threshold + 1
        now = time.monotonic()
        d = policy.delay(strike - 1, self._rng, retry_after)  # strikes count from 1, attempts from 0
        e.blocked_until = now + d
        e.backoff_began = now
        self.counters["backoffs"] += 1
        e.counters["backoffs"] += 1
        self._last["backoff_reason"] = f"{e.egress.label}: {why}"
        log.warning(
            "Upbit via %s: %s; backing off %.1f s%s",
            e.egress.label,
            why,
            d,
            f" (Retry-After {retry_after:g} s)" if retry_after is not None else "",
        )

    # -- state persistence

    def _save_soon(self) -> None:
        """Saves after delivery, in a thread: a crash between delivery and save repeats a trigger on
        restart (at least once) instead of losing it."""
        if self._save_task is not None and not self._save_task.done():
            self._save_again = True
            return

        async def save() -> None:
            delay = self.state_retry_initial_s
            while True:
                self._save_again = False
                data = self.state.snapshot()  # here, not in the thread: decide() may change the state meanwhile
                try:
                    await asyncio.to_thread(self.state.write, data)
                except OSError as err:
                    # Memory keeps the state; it is written as soon as a write succeeds.
                    self.state_unsaved_error = f"{type(err).__name__}: {err}"
                    if self.state_unsaved_since_ns is None:
                        self.state_unsaved_since_ns = time.time_ns()
                        log.error(
                            "Upbit watcher state not saved to %s: %s; kept in memory, retried until the disk "
                            "takes it (free space on it)",
                            self.state.path,
                            err,
                        )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.state_retry_max_s)
                    continue
                if self.state_unsaved_since_ns is not None:
                    log.warning(
                        "Upbit watcher state saved to %s after %.1f s of failed writes",
                        self.state.path,
                        (time.time_ns() - self.state_unsaved_since_ns) / 1e9,
                    )
                    self.state_unsaved_since_ns, self.state_unsaved_error = None, ""
                if not self._save_again:
                    return

        self._save_task = asyncio.create_task(save())

    # -- second signal: /v1/market/all

    async def _refresh_markets(self) -> frozenset[str] | None:
        assert self._market_client is not None
        # No Origin header, ever: a request with one is limited to 1 per 10 s.
        headers = {
            "User-Agent": self.settings.headers.get("User-Agent", BROWSER_HEADERS["User-Agent"]),
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
        }
        self.counters["market_fetches"] += 1
        try:
            resp = await asyncio.wait_for(
                self._market_client.get(self.settings.market_url, headers), self.settings.market_timeout_s
            )
            if resp.status != 200:
                raise HttpError(f"HTTP {resp.status}: {resp.body[:120]!r}")
            krw = parse_market_list(resp.body)
        except (TimeoutError, OSError, HttpError, ssl.SSLError, ValueError) as err:
            self.counters["market_errors"] += 1
            log.warning("/v1/market/all failed: %s", err if str(err) else type(err).__name__)
            return None
        self.krw_markets = krw
        self.krw_markets_ns = resp.done_ns
        opened = self.state.note_markets(krw, resp.done_ns, self.settings.pending_max_s)
        for m in opened:
            self.counters["markets_opened"] += 1
            log.warning(
                "KRW-%s is now listed in /v1/market/all (%.0f s after notice %d)",
                m.ticker,
                (m.seen_ns - m.t0_ns) / 1e9,
                m.notice_id,
            )
            if self.on_market_open is not None:
                self._spawn(self.on_market_open, m)
        if opened:
            self._save_soon()
        return krw

    async def _track_markets(self) -> None:
        while self.running:
            wait = self.settings.market_poll_s if self.state.pending else self.settings.market_refresh_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._market_wake.wait(), wait)
            if self._market_wake.is_set():
                self._market_wake.clear()
                # A fresh list right after a trigger; the rate floor still holds.
                await asyncio.sleep(max(0.0, self.krw_markets_ns / 1e9 + 1.0 - time.time()))
            await self._refresh_markets()

    # -- metrics

    def metrics(self) -> dict[str, Any]:
        """Counters and gauges, flat names (for /metrics and /status)."""
        rt = sorted(self._response_ms)
        dl = sorted(self._delays_ms)
        out: dict[str, Any] = dict(self.counters)
        out.update(
            interval_s=self.interval_s,
            in_flight=len(self._in_flight),
            notices_seen=len(self.state.seen),
            pending_krw_markets=len(self.state.pending),
            state_unsaved_since_ns=self.state_unsaved_since_ns,
            state_unsaved_error=self.state_unsaved_error,
            krw_markets=len(self.krw_markets) if self.krw_markets is not None else None,
            response_ms_last=self._last.get("response_ms"),
            response_ms_p50=statistics.median(rt) if rt else None,
            response_ms_p99=rt[min(len(rt) - 1, int(len(rt) * 0.99))] if rt else None,
            response_ms_max=rt[-1] if rt else None,
            detection_delay_ms_last=self._delays_ms[-1] if self._delays_ms else None,
            detection_delay_ms_max=dl[-1] if dl else None,
            cf_cache_status=dict(self.cf_cache_status),
            cf_cache_status_last=self._last.get("cf_cache_status"),
            age_s_last=self._last.get("age_s"),
            total_count=self._last.get("total_count"),
            last_backoff_reason=self._last.get("backoff_reason"),
            egress={
                e.egress.label: dict(
                    e.counters, etag=e.etag, backoff_remaining_s=max(0.0, e.blocked_until - time.monotonic())
                )
                for e in self._eg
            },
        )
        return out


async def _cancel_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancels until done: on Python 3.11 `asyncio.wait_for` can swallow a cancellation that
    arrives as its inner await completes, and a loop would then run on."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
