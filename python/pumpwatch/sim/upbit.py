"""A stand-in for Upbit's announcement board and `/v1/market/all`, on 127.0.0.1 only.

It speaks the endpoints as ../shared/UPBIT.md describes them: `GET /api/v1/announcements` (current
shape, `data.notices`, weak ETags answered with 304 on `If-None-Match`, `cf-cache-status` and `Age`
headers, gzip when asked), the legacy `GET /api/v1/notices` (`data.list` with `created_at`), the
detail `GET /api/v1/announcements/{id}`, and `GET /v1/market/all` (10 requests/s per IP; 1 per
10 s for requests that carry an `Origin` header).

What a watcher must cope with is scripted: notices published at chosen times (`schedule`), each
visible only `cdn_delay_s` after its publication, edits that move an old notice to the top with
`need_update_badge`, 429s to a client that polls faster than one request per `min_interval_s`
(counted per second, as Upbit counts: see `_within_rate`) or during a `throttle`, a request that hangs (`hang_next`), server errors and malformed bodies. It records
everything it served and when each notice became visible, and knows which notices a correct
watcher triggers (`expected_triggers`), so a test can compare.

    async with SimUpbit(seed=1, cdn_delay_s=0.2, min_interval_s=0.05) as sim:
        sim.play_scenario(start_s=0.5, spacing_s=0.3)     # every shape, negatives, edits
        ... run a watcher against sim.base_url / sim.market_url ...
        sim.expected_triggers()                           # {notice id: (tickers, t0_ns)}

Times: `at_s` is seconds after `start()`. A notice is published on a whole wall-clock second (the
first at or after `at_s`), as Upbit's `first_listed_at` has one-second resolution, so t0 is exact.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
import math
import random
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from ..tls import TestCA

log = logging.getLogger("pumpwatch.sim.upbit")

HOST = "127.0.0.1"  # the stand-in never listens anywhere else
KST = timezone(timedelta(hours=9), "KST")
ENGLISH_CATEGORY = {
    "거래": "Trade",
    "입출금": "D/W",
    "점검": "Notice",
    "이벤트": "Event",
    "안내": "Notice",
    "디지털 자산": "Digital Asset",
}
TRADE_CATEGORIES = {"거래", "Trade"}
MARKET_ALL_RATE = 10.0  # requests/s per IP
ORIGIN_INTERVAL_S = 10.0  # with an Origin header: one request per 10 s
BASE_KRW = ("BTC", "ETH", "XRP", "SOL", "DOGE", "ADA", "TRX", "LINK", "AVAX", "SUI", "OP", "ARB", "IMX", "SEI")
BASE_OTHER = ("BTC-ETH", "BTC-XRP", "USDT-BTC", "USDT-ETH", "BTC-AXL", "BTC-FLR", "USDT-FLR")


@dataclass
class SimNotice:
    """A notice to publish, or (with `edit_of`) an edit of one already on the board.

    `expect` is what a correct watcher triggers for it: its KRW tickers for a new KRW listing,
    `()` for anything that must not trigger. `already_listed` marks a listing whose tickers are
    already on KRW (it triggers, marked, not for capture). `krw_open_after_s` opens the KRW market
    of its `expect` tickers that long after publication."""

    title: str
    category: str = "거래"
    expect: tuple[str, ...] = ()
    already_listed: bool = False
    edit_of: int | None = None
    krw_open_after_s: float | None = None
    note: str = ""
    # filled in by the stand-in
    id: int = 0
    first_listed_ns: int = 0
    listed_ns: int = 0
    need_update_badge: bool = False
    visible_ns: int = 0  # when it (or its edit) became visible


@dataclass(frozen=True)
class Served:
    """One response: when, to whom, what."""

    mono: float
    wall_ns: int
    peer: str
    path: str
    query: dict[str, str]
    status: int
    etag: str | None
    if_none_match: str | None
    top_ids: tuple[int, ...]
    origin: str | None
    user_agent: str | None
    accept_language: str | None
    hung_s: float = 0.0


@dataclass(order=True)
class _Event:
    visible: float  # monotonic: when it takes effect for clients (due + the CDN delay for notices)
    seq: int
    due: float = field(compare=False)  # monotonic: publication (the notice's first_listed_at)
    kind: str = field(compare=False)  # publish | edit | open
    payload: Any = field(compare=False)


class SimUpbit:
    """Upbit's announcement list and market list on one port of 127.0.0.1."""

    def __init__(
        self,
        seed: int = 0,
        cdn_delay_s: float = 0.0,
        min_interval_s: float = 1.0,
        port: int = 0,
        *,
        board_size: int = 24,
        align_to_second: bool = True,
        gzip_responses: bool = True,
        tls: TestCA | None = None,
    ):
        self.seed = seed
        self.tls = tls  # a test CA whose certificate it serves https:// with; None: plain http
        self.rng = random.Random(seed)
        self.cdn_delay_s = cdn_delay_s
        self.min_interval_s = min_interval_s  # per-IP budget: 1/min_interval_s requests a second
        self.port = port
        self.align_to_second = align_to_second
        self.gzip_responses = gzip_responses
        self.served: list[Served] = []
        self.market_served: list[Served] = []
        self.visible_at: dict[int, int] = {}  # notice id -> wall ns it became visible (its edit: see edits)
        self.edit_visible_at: dict[int, list[int]] = {}
        self.first_served_at: dict[int, int] = {}  # notice id -> wall ns of the first 200 that held it
        self.notices: dict[int, SimNotice] = {}  # everything published, by id
        self.scheduled: list[SimNotice] = []  # everything scheduled, in order (publications and edits)
        self.krw: set[str] = set(BASE_KRW)
        self.other_markets: set[str] = set(BASE_OTHER)
        self.market_opened_at: dict[str, int] = {}
        self._events: list[_Event] = []
        self._pending: list[tuple[float, SimNotice | tuple[str, str]]] = []  # scheduled before start()
        self._evseq = 0
        self._next_id = 5400
        self._hangs: deque[float] = deque()
        self._fail: deque[int] = deque()
        self._malformed = 0
        self._throttle_until = 0.0
        self._throttle_status = 429
        self._throttle_retry = 1
        self._rate_window: dict[str, tuple[float, int]] = {}  # peer -> (window start, requests counted)
        self._market_tokens: dict[str, tuple[float, float]] = {}
        self._origin_last: dict[str, float] = {}
        self._first_query_seen: dict[str, float] = {}
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._mono0 = time.monotonic()
        self._wall0 = time.time_ns()
        self.started = False
        #: Every KRW listing on the board and in the past year (`add_year`): id -> (tickers, t0_ns).
        self.krw_listings: dict[int, tuple[tuple[str, ...], int]] = {}
        self.board_listing_ids: list[int] = []
        self.board_other_ids: list[int] = []
        self._make_board(board_size)

    # -- lifecycle

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve_connection, HOST, self.port, ssl=self.tls.server_context() if self.tls is not None else None
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._mono0, self._wall0 = time.monotonic(), time.time_ns()
        self.started = True
        for at_s, what in self._pending:
            self._enqueue(at_s, what)
        self._pending.clear()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._conns):
            t.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        self.started = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """What a watcher uses as its `base_url` (the list is at `/api/v1/announcements`)."""
        return f"http{'s' if self.tls is not None else ''}://{HOST}:{self.port}"

    @property
    def announcements_url(self) -> str:
        return f"{self.base_url}/api/v1/announcements"

    @property
    def market_url(self) -> str:
        return f"{self.base_url}/v1/market/all"

    def now_s(self) -> float:
        """Seconds since `start()` (the clock of `at_s`)."""
        return time.monotonic() - self._mono0

    # -- the script

    def schedule(self, notice: SimNotice | str, at_s: float) -> SimNotice:
        """Publishes `notice` (or applies its edit) `at_s` seconds after start; visible `cdn_delay_s`
        later. Returns the notice, whose `id` is set now (ids grow with creation, as Upbit's do)."""
        if isinstance(notice, str):
            notice = SimNotice(notice)
        if notice.edit_of is None:
            notice.id = self._next_id
            self._next_id += 1
        elif notice.edit_of not in self.notices and all(n.id != notice.edit_of for n in self.scheduled):
            raise ValueError(f"edit_of={notice.edit_of}: no such notice")
        self.scheduled.append(notice)
        if self.started:
            self._enqueue(at_s, notice)
        else:
            self._pending.append((at_s, notice))
        return notice

    def open_market(self, ticker: str, at_s: float) -> None:
        """KRW-`ticker` appears in /v1/market/all `at_s` seconds after start."""
        what = ("open", ticker)
        if self.started:
            self._enqueue(at_s, what)
        else:
            self._pending.append((at_s, what))

    def hang_next(self, seconds: float) -> None:
        """The next announcement request is answered only after `seconds` (a stalled origin)."""
        self._hangs.append(seconds)

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """The next `n` announcement requests get `status` with an HTML error page."""
        self._fail.extend([status] * n)

    def malformed_next(self, n: int = 1) -> None:
        """The next `n` announcement requests get a 200 whose body is not the list."""
        self._malformed += n

    def throttle(self, seconds: float, *, status: int = 429, retry_after: int = 1) -> None:
        """Every announcement request for the next `seconds` gets `status` (429, or 418 for a ban)."""
        self._throttle_until = time.monotonic() + seconds
        self._throttle_status = status
        self._throttle_retry = retry_after

    def play_scenario(self, start_s: float = 0.5, spacing_s: float = 0.3) -> list[SimNotice]:
        """Schedules one notice of every kind a watcher meets, `spacing_s` apart from `start_s`:
        listings of every title shape (Korean and English, legacy and current, multi-ticker,
        F / 0G / 2Z / 1INCH), one whose ticker is already on KRW, negatives that name tickers,
        non-KRW listings, a follow-up posted as a new notice, a re-post of a listing, and edits
        of old and of just-published notices."""
        old_listing, old_other = self.board_listing_ids, self.board_other_ids
        out: list[SimNotice] = []

        def add(title: str, expect: tuple[str, ...] = (), *, note: str, **kw: Any) -> SimNotice:
            n = self.schedule(SimNotice(title, expect=expect, note=note, **kw), start_s + len(out) * spacing_s)
            out.append(n)
            return n

        def edit(of: int, suffix: str, note: str) -> SimNotice:
            title = next(n.title for n in [*self.notices.values(), *self.scheduled] if n.id == of)
            return add(title + suffix, edit_of=of, note=note)

        add("딥북(DEEP) KRW 마켓 디지털 자산 추가", ("DEEP",), krw_open_after_s=1.0, note="market addition")
        add("바운드리스(ZKC) 거래 유의 종목 지정 안내", note="caution")
        dood = add("두들즈(DOOD) 신규 거래지원 안내 (KRW, USDT 마켓)", ("DOOD",), note="new asset")
        add("Market Support for Maple Finance(SYRUP) (KRW, BTC, USDT Market)", ("SYRUP",), note="English")
        edit(old_listing[0], "", note="edit of an old listing: jumps to the top")
        add("[거래] KRW, BTC 마켓 디지털 자산 추가 (SXL, MTTIC)", ("SXL", "MTTIC"), note="legacy, multi-ticker")
        add("제로지(0G) KRW, USDT 마켓 디지털 자산 추가", ("0G",), note="digit-first ticker")
        add("Notice on Termination of Trading Support for Pundi AI(PUNDIAI) (8/28 15:00)", note="delisting")
        add("에프(F) 신규 거래지원 안내 (KRW, BTC, USDT 마켓)", ("F",), note="one-letter ticker")
        add(
            "제로지(0G) 거래지원 기념, 총 상금 60,000 OG 상당 TOP 트레이딩 이벤트! (이벤트 당첨 안내)",
            category="이벤트",
            note="event naming a ticker and 거래지원",
        )
        add(
            "더블제로(2Z), 원인치(1INCH) 신규 거래지원 안내 (KRW, BTC, USDT 마켓)",
            ("2Z", "1INCH"),
            note="multi-ticker, digit-first",
        )
        add("[거래] BTC 마켓 디지털 자산 추가 (AXL2)", note="BTC market only")
        add(
            "Market Support for Optimism(OP) (KRW, BTC, USDT Market)",
            ("OP",),
            already_listed=True,
            note="ticker already on KRW: reported, not captured",
        )
        add(
            "옴니네트워크(OMNI) 리브랜딩 및 토큰 스왑에 따른 입출금 및 거래 지원 일시 중단 안내",
            category="입출금",
            note="swap and deposit suspension, with 거래 지원",
        )
        add(
            "라이브피어(LPT)(KRW, USDT 마켓), 플록(FLOCK)(BTC, USDT 마켓) 디지털 자산 추가",
            ("LPT",),
            note="per-asset markets, one of them KRW",
        )
        edit(dood.id, " (거래지원 개시 시점 변경 안내)", note="edit of a listing just published: follow-up title")
        add(
            "두들즈(DOOD) 신규 거래지원 안내 (KRW, USDT 마켓) (매도 최저가 기준 가격 안내)",
            note="follow-up posted as a new notice",
        )
        add("딥북(DEEP) KRW 마켓 디지털 자산 추가", note="re-post of a listing: same ticker, new id")
        edit(old_listing[1], " (매도 최저가 기준 가격 안내)", note="edit of an old listing: follow-up title")
        add(
            "Market Support for Pundi AI(PUNDIAI), Babylon(BABY) (KRW Market)",
            ("PUNDIAI", "BABY"),
            note="English, multi-ticker",
        )
        edit(old_other[0], "", note="edit of an old caution")
        add(
            "[솜니아(SOMI) 보유 회원 이벤트] SOMI 보유하고 총 300,000 SOMI 선물 받아가세요!",
            category="이벤트",
            note="airdrop event",
        )
        return out

    def expected_triggers(self, *, published_only: bool = True) -> dict[int, tuple[tuple[str, ...], int]]:
        """{notice id: (KRW tickers, t0_ns)} for every scheduled new listing a correct watcher
        triggers (published ones only, unless `published_only=False`)."""
        out = {}
        for n in self.scheduled:
            if n.edit_of is None and n.expect and (n.first_listed_ns or not published_only):
                out[n.id] = (n.expect, n.first_listed_ns)
        return out

    def request_times(self, path: str = "/api/v1/announcements") -> list[float]:
        """Monotonic arrival times of the requests to `path` (for cadence checks)."""
        return [s.mono for s in self.served if s.path == path]

    # -- time and events

    def _wall_ns(self, mono: float) -> int:
        return self._wall0 + round((mono - self._mono0) * 1e9)

    def _mono(self, wall_ns: int) -> float:
        return self._mono0 + (wall_ns - self._wall0) / 1e9

    def _enqueue(self, at_s: float, what: SimNotice | tuple[str, str]) -> None:
        due = self._mono0 + at_s
        if isinstance(what, SimNotice) and what.edit_of is None and self.align_to_second:
            wall = self._wall_ns(due)
            wall = -(-wall // 1_000_000_000) * 1_000_000_000
            due = self._mono(wall)
        self._evseq += 1
        kind = "open" if isinstance(what, tuple) else ("edit" if what.edit_of is not None else "publish")
        visible = due if kind == "open" else due + self.cdn_delay_s
        self._events.append(_Event(visible, self._evseq, due, kind, what))
        self._events.sort()

    def _advance(self) -> None:
        """Applies every event whose time has come. Done lazily at each request, so visibility is
        exact to the request, with no background task."""
        now = time.monotonic()
        while self._events and self._events[0].visible <= now:
            self._apply(self._events.pop(0))

    def _apply(self, ev: _Event) -> None:
        if ev.kind == "open":
            t = ev.payload[1]
            if t not in self.krw:
                self.krw.add(t)
                self.market_opened_at[t] = self._wall_ns(ev.due)
            return
        n: SimNotice = ev.payload
        pub_ns = self._wall_ns(ev.due)
        if self.align_to_second and ev.kind == "publish":
            pub_ns = round(pub_ns / 1e9) * 1_000_000_000
        if ev.kind == "publish":
            n.first_listed_ns = n.listed_ns = pub_ns
            n.visible_ns = self._wall_ns(ev.visible)
            self.notices[n.id] = n
            self.visible_at[n.id] = n.visible_ns
            if n.krw_open_after_s is not None:
                for t in n.expect:
                    self._enqueue(ev.due - self._mono0 + n.krw_open_after_s, ("open", t))
            log.debug("notice %d visible: %s", n.id, n.title)
        else:
            assert n.edit_of is not None  # kind "edit" is given only to a notice with edit_of (_enqueue)
            old = self.notices[n.edit_of]
            old.title = n.title or old.title
            old.listed_ns = max(pub_ns, old.first_listed_ns + 1_000_000_000)
            old.need_update_badge = True
            n.id = old.id
            n.first_listed_ns = old.first_listed_ns
            n.listed_ns = old.listed_ns
            n.visible_ns = self._wall_ns(ev.visible)
            self.edit_visible_at.setdefault(old.id, []).append(n.visible_ns)

    # -- the old board

    def _make_board(self, size: int) -> None:
        """Notices from the past days, most recent first: listings (their tickers on KRW already)
        and the usual others. All older than any watcher's max age."""
        listings = [
            ("오덜리(ORDER) KRW 마켓 디지털 자산 추가", "ORDER"),
            ("캐시캣(CASHCAT) 신규 거래지원 안내 (KRW, BTC, USDT 마켓)", "CASHCAT"),
            ("[거래] KRW 마켓 디지털 자산 추가 (IMX)", "IMX"),
            ("Market Support for Walrus(WAL) (KRW, BTC, USDT Market)", "WAL"),
            ("바이프로스트(BFC) KRW, USDT 마켓 디지털 자산 추가", "BFC"),
            ("클러스터프로토콜(CP) 신규 거래지원 안내 (KRW, BTC, USDT 마켓)", "CP"),
        ]
        others = [
            ("소폰(SOPH) 거래 유의 종목 지정 안내", "거래"),
            ("이더리움페어(ETHF) 출금 일시 중단 안내 (완료)", "입출금"),
            ("업비트 코인빌리기 - 테더(USDT) 지원 종료 안내", "안내"),
            ("디지털 자산 7월 4주차 GAS, VTHO 지급 안내", "입출금"),
            ("시스템 점검 안내 (07/30 02:00 ~ 04:00)", "점검"),
            ("플레어(FLR) BTC, USDT 마켓 디지털 자산 추가", "거래"),
            ("웨이브(WAVES) 유의 종목 지정 해제 안내", "거래"),
            ("Notice on Termination of Trading Support for Pundi AI(PUNDIAI) (8/28 15:00)", "거래"),
        ]
        now_ns = time.time_ns()
        t = now_ns - 2 * 86_400 * 10**9
        rid = 5400 - 1
        rows = []
        for i in range(size):
            if i % 3 == 0 and i // 3 < len(listings):
                title, ticker = listings[i // 3]
                self.krw.add(ticker)
                rows.append((rid, title, "거래", True))
            else:
                title, cat = others[self.rng.randrange(len(others))]
                rows.append((rid, title, cat, False))
            rid -= 1
        for rid, title, cat, is_listing in rows:
            first = (t // 1_000_000_000) * 1_000_000_000
            n = SimNotice(
                title, category=cat, note="board", id=rid, first_listed_ns=first, listed_ns=first, visible_ns=first
            )
            self.notices[rid] = n
            (self.board_listing_ids if is_listing else self.board_other_ids).append(rid)
            if is_listing:
                self.krw_listings[rid] = ((next(tk for ti, tk in listings if ti == title),), first)
            t -= self.rng.randrange(3_600, 8 * 3_600) * 10**9

    def add_year(
        self, days: float = 365.0, *, listings: int = 24, others_per_listing: int = 3
    ) -> list[tuple[int, tuple[str, ...], int]]:
        """Notices of the `days` before the board's oldest one, as the real list pages back through
        years: `listings` new KRW listings (each ticker new: a coin nobody else lists here) spread
        over the span, with `others_per_listing` non-trigger notices around each (BTC/USDT-only
        listings, cautions, deposits, maintenance). Deterministic from the seed. Returns the KRW
        listings added as (id, tickers, t0_ns), oldest first; `krw_listings` holds them too."""
        rng = random.Random(f"{self.seed}/year")
        oldest = min(n.first_listed_ns for n in self.notices.values())
        rid = min(self.notices) - 1
        shapes = (
            "{name}({t}) KRW 마켓 디지털 자산 추가",
            "{name}({t}) 신규 거래지원 안내 (KRW, BTC, USDT 마켓)",
            "Market Support for {name}({t}) (KRW, USDT Market)",
            "{name}({t}) KRW, USDT 마켓 디지털 자산 추가",
        )
        negatives = (
            "{name}({t}) BTC, USDT 마켓 디지털 자산 추가",
            "{name}({t}) 거래 유의 종목 지정 안내",
            "{name}({t}) 입출금 일시 중단 안내",
            "시스템 점검 안내 (02:00 ~ 04:00)",
        )
        taken = set(self.krw) | set(self.other_markets) | {t for v in self.krw_listings.values() for t in v[0]}

        def ticker() -> str:
            while True:
                t = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(rng.randrange(3, 6)))
                if t not in taken and t not in ("KRW", "BTC", "USDT"):
                    taken.add(t)
                    return t

        step_ns = int(days * 86_400 * 10**9) // max(1, listings)
        out = []
        rows: list[tuple[int, str, str, tuple[str, ...]]] = []
        for i in range(listings):
            center = oldest - (i + 1) * step_ns + rng.randrange(-step_ns // 4, step_ns // 4)
            t0 = (center // 10**9) * 10**9
            t = ticker()
            rows.append((t0, rng.choice(shapes).format(name=t.title() + " Protocol", t=t), "거래", (t,)))
            for k in range(others_per_listing):
                when = ((t0 + (k + 1) * rng.randrange(600, 3 * 86_400) * 10**9 * (1 if k % 2 else -1)) // 10**9) * 10**9
                rows.append((when, rng.choice(negatives).format(name="Coin", t=ticker()), "거래", ()))
        rows.sort(key=lambda r: r[0], reverse=True)  # newest first: the older, the lower the id
        for t0, title, cat, tickers in rows:
            n = SimNotice(
                title,
                category=cat,
                expect=tickers,
                note="year",
                id=rid,
                first_listed_ns=t0,
                listed_ns=t0,
                visible_ns=t0,
            )
            self.notices[rid] = n
            if tickers:
                self.krw_listings[rid] = (tickers, t0)
                self.krw.update(tickers)
                out.append((rid, tickers, t0))
            rid -= 1
        return sorted(out, key=lambda x: x[2])

    def announced_listings(
        self, since_ns: int = 0, until_ns: int | None = None
    ) -> dict[int, tuple[tuple[str, ...], int]]:
        """{notice id: (KRW tickers, t0_ns)} of every KRW listing on the board published in
        [since_ns, until_ns): what `pumpwatch history` must rebuild."""
        return {
            i: v for i, v in self.krw_listings.items() if v[1] >= since_ns and (until_ns is None or v[1] < until_ns)
        }

    # -- HTTP

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        peer = (writer.get_extra_info("peername") or ("?",))[0]
        try:
            while True:
                req = await _read_request(reader)
                if req is None:
                    break
                keep = await self._answer(peer, *req, writer)
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, asyncio.CancelledError):
            pass
        finally:
            self._conns.discard(task)
            writer.close()

    async def _answer(
        self, peer: str, method: str, target: str, headers: dict[str, str], writer: asyncio.StreamWriter
    ) -> bool:
        u = urlsplit(target)
        path = u.path
        query = {k: v[0] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
        hung = 0.0
        if method != "GET":
            status, body, extra = 405, {"error": {"name": "method_not_allowed"}}, {}
        elif path in ("/api/v1/announcements", "/api/v1/notices"):
            if self._hangs:
                hung = self._hangs.popleft()
                await asyncio.sleep(hung)
            status, body, extra = self._list(peer, path, query, headers, u.query)
        elif path.startswith("/api/v1/announcements/"):
            status, body, extra = self._detail(path.rsplit("/", 1)[1])
        elif path == "/v1/market/all":
            status, body, extra = self._market_all(peer, query, headers)
        else:
            status, body, extra = 404, {"error": {"name": "not_found", "message": f"no route {path}"}}, {}
        etag = extra.get("ETag")
        rec = Served(
            time.monotonic(),
            time.time_ns(),
            peer,
            path,
            query,
            status,
            etag,
            headers.get("if-none-match"),
            extra.pop("_top", ()),
            headers.get("origin"),
            headers.get("user-agent"),
            headers.get("accept-language"),
            hung,
        )
        (self.market_served if path == "/v1/market/all" else self.served).append(rec)
        data = (
            b""
            if status == 304
            else (
                body
                if isinstance(body, bytes)
                else json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
            )
        )
        h = {"Content-Type": "application/json; charset=utf-8" if not isinstance(body, bytes) else "text/html"}
        h.update({k: v for k, v in extra.items() if not k.startswith("_")})
        if data and self.gzip_responses and "gzip" in headers.get("accept-encoding", ""):
            data = gzip.compress(data, 1)
            h["Content-Encoding"] = "gzip"
        if status != 304:
            h["Content-Length"] = str(len(data))
        keep = headers.get("connection", "").lower() != "close"
        h["Connection"] = "keep-alive" if keep else "close"
        head = f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in h.items())
        writer.write(head.encode("latin-1") + b"\r\n" + data)
        await writer.drain()
        return keep

    def _list(self, peer: str, path: str, query: dict[str, str], headers: dict[str, str], raw_query: str):
        now = time.monotonic()
        if now < self._throttle_until:
            return self._throttled(self._throttle_status, self._throttle_retry)
        if self.min_interval_s > 0:
            retry_after = self._within_rate(peer, now)
            if retry_after is not None:
                return self._throttled(429, retry_after)
        if self._fail:
            status = self._fail.popleft()
            return status, b"<html><body>" + str(status).encode() + b" origin error</body></html>", {}
        if self._malformed:
            self._malformed -= 1
            return 200, {"success": True, "data": {"unexpected": []}}, {}
        self._advance()
        english = headers.get("accept-language", "").lower().startswith("en")
        legacy = path == "/api/v1/notices"
        try:
            page = max(1, int(query.get("page", "1")))
            per_page = min(50, max(1, int(query.get("per_page", "20"))))
        except ValueError:
            return 400, {"success": False, "error": {"message": "page and per_page must be integers"}}, {}
        category = query.get("category", "all")
        rows = [n for n in self.notices.values() if legacy or category != "trade" or n.category in TRADE_CATEGORIES]
        rows.sort(key=lambda n: (n.listed_ns, n.id), reverse=True)
        total = len(rows)
        chunk = rows[(page - 1) * per_page : page * per_page]
        if legacy:
            data = {
                "total_pages": -(-total // per_page),
                "total_count": total,
                "list": [_legacy_row(n) for n in chunk],
                "fixed_notices": [],
            }
        else:
            data = {
                "total_pages": -(-total // per_page),
                "total_count": total,
                "notices": [_row(n, english) for n in chunk],
                "fixed_notices": [],
            }
        body = {"success": True, "data": data}
        digest = hashlib.sha1(json.dumps(body, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:24]
        etag = f'W/"{digest}"'
        first_seen = self._first_query_seen.setdefault(raw_query, now)
        cache = {
            "cf-cache-status": "HIT" if first_seen < now else "MISS",
            "Age": str(int(now - first_seen)),
            "ETag": etag,
            "_top": tuple(n.id for n in chunk),
        }
        wall = time.time_ns()
        for n in chunk:
            self.first_served_at.setdefault(n.id, wall)
        if headers.get("if-none-match") == etag:
            return 304, b"", cache
        return 200, body, cache

    def _within_rate(self, peer: str, now: float) -> int | None:
        """Counts a request against `peer`'s budget of 1/`min_interval_s` requests per second; None if
        it is within, else the Retry-After (s). Upbit counts per second (docs.upbit.com "요청 수 제한":
        a window that starts at the first request and resets after its second; a refused request
        does not count), not the spacing of arrivals: polls sent at the allowed rate that arrive
        bunched (a busy network or event loop) are within it. A budget under one per second (an
        interval over 1 s) is one request per window of `min_interval_s`."""
        window_s = max(1.0, self.min_interval_s)
        limit = max(1, math.floor(window_s / self.min_interval_s + 1e-9))
        start, count = self._rate_window.get(peer, (now, 0))
        if now - start >= window_s:
            start, count = now, 0
        if count >= limit:
            return max(1, math.ceil(start + window_s - now))
        self._rate_window[peer] = (start, count + 1)
        return None

    @staticmethod
    def _throttled(status: int, retry_after: int):
        return (
            status,
            {"error": {"name": "too_many_requests", "message": "Too many requests"}},
            {"Retry-After": str(retry_after), "cf-cache-status": "DYNAMIC"},
        )

    def _detail(self, rid: str):
        self._advance()
        n = self.notices.get(int(rid)) if rid.isdigit() else None
        if n is None:
            return 200, {"success": False, "data": None, "error": {"code": "not_found"}}, {}
        row = _row(n, False)
        row.update(body=f"<p>{n.title}</p>", body_url=None, attachments=[])
        return 200, {"success": True, "data": row}, {}

    def _market_all(self, peer: str, query: dict[str, str], headers: dict[str, str]):
        now = time.monotonic()
        if headers.get("origin"):
            last = self._origin_last.get(peer)
            if last is not None and now - last < ORIGIN_INTERVAL_S:
                return (
                    429,
                    {"error": {"name": "too_many_requests", "message": "Too many API requests."}},
                    {"Retry-After": str(math.ceil(ORIGIN_INTERVAL_S - (now - last)))},
                )
            self._origin_last[peer] = now
        tokens, stamp = self._market_tokens.get(peer, (MARKET_ALL_RATE, now))
        tokens = min(MARKET_ALL_RATE, tokens + (now - stamp) * MARKET_ALL_RATE)
        if tokens < 1:
            self._market_tokens[peer] = (tokens, now)
            return 429, {"error": {"name": "too_many_requests", "message": "Too many API requests."}}, {}
        self._market_tokens[peer] = (tokens - 1, now)
        self._advance()
        details = query.get("is_details", "false") == "true"
        out = []
        for code in sorted([f"KRW-{t}" for t in self.krw] + list(self.other_markets)):
            base = code.split("-")[1]
            row: dict[str, Any] = {"market": code, "korean_name": base, "english_name": base}
            if details:
                row["market_event"] = {"warning": False, "caution": {"PRICE_FLUCTUATIONS": False}}
            out.append(row)
        return 200, out, {}


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, KST).replace(microsecond=0).isoformat()


def _row(n: SimNotice, english: bool) -> dict[str, Any]:
    return {
        "listed_at": _iso(n.listed_ns),
        "first_listed_at": _iso(n.first_listed_ns),
        "id": n.id,
        "title": n.title,
        "category": ENGLISH_CATEGORY.get(n.category, n.category) if english else n.category,
        "need_new_badge": time.time_ns() - n.first_listed_ns < 86_400 * 10**9,
        "need_update_badge": n.need_update_badge,
    }


def _legacy_row(n: SimNotice) -> dict[str, Any]:
    title = n.title if n.title.startswith("[") else f"[{n.category}] {n.title}"
    return {
        "id": n.id,
        "title": title,
        "view_count": 1000 + n.id % 977,
        "thread_name": "general",
        "created_at": _iso(n.first_listed_ns),
        "updated_at": _iso(n.listed_ns),
    }


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]] | None:
    line = await reader.readline()
    if not line:
        return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3:
        raise ValueError(f"bad request line {line[:80]!r}")
    method, target, _ = parts
    headers: dict[str, str] = {}
    for _ in range(100):
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0") or 0)
    if n:
        await reader.readexactly(n)
    return method, target, headers


_REASONS = {
    200: "OK",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    418: "I'm a teapot",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
