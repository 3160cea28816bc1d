"""Listing titles: `parse_title(title)` reads a notice title (Korean or English, legacy or current
shape) into a `Listing` (tickers in order, markets, whether it opens KRW), `None` for everything
else; `follow_up_of(title)` finds the listing a follow-up title amends.

The grammar is strict on purpose: a title is a listing only if it is *entirely* one of the known
shapes, so a caution, delisting, deposit notice, swap, event or airdrop that names a ticker and the
word 거래지원 never matches, and a listing title with anything added (a start-time change, a price
guide, an event) is a follow-up, not a listing. UPBIT.md (../shared) has the shapes.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any


@dataclass(frozen=True, slots=True, init=False)
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
    krw_tickers: tuple[str, ...]

    # Written out (not generated) so that `krw_tickers` may be left out or None when built by hand
    # while the attribute is always a tuple.
    def __init__(
        self, tickers: tuple[str, ...], markets: tuple[str, ...], krw: bool, krw_tickers: tuple[str, ...] | None = None
    ) -> None:
        object.__setattr__(self, "tickers", tickers)
        object.__setattr__(self, "markets", markets)
        object.__setattr__(self, "krw", krw)
        object.__setattr__(self, "krw_tickers", (tickers if krw else ()) if krw_tickers is None else krw_tickers)


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
