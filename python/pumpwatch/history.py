"""Past listings rebuilt from public sources (issue 17): `pumpwatch history --since DATE`.

Pages Upbit's announcement list back to `--since` with the watcher's client, headers and
politeness (one request per `interval_s`, its back-off on 429/418/403 and errors), finds every KRW
listing with the watcher's title parser, and for each ticker writes the same event folder a live
capture writes (pumpwatch.capture: same writer, same analysis, same chart), its trades fetched
from each venue's REST history where the venue keeps it (docs/VENUES.md §11 item 4):

    venue keeps the window   -> source `rest-history` (one record per trade) or
                                `rest-history-aggregated` (Binance USDⓈ-M aggTrades without a key),
                                coverage `complete`, or `partial` with the spans a failure left
    venue keeps recent only  -> source `none`, coverage `not available: the venue keeps only its
                                recent trades` (Bybit, KuCoin, Phemex)
    window beyond its reach  -> source `none`, coverage `not available: older than the venue's
                                N days of history` (Gate spot 30 d, OKX 90 d, USDⓈ-M 365 d)

Which venue lists the coin comes from each venue's instrument list today (a coin delisted since
is not found: named `absent` like any venue that does not list it). Every venue request goes
through the venue's named rate budget (pumpwatch.net, shared per IP as the recorder's are).

Resumable: the listings found are kept in `events/history-progress.json` once the list is paged,
and an event whose folder exists is not built again (folders are written atomically, so a run
killed halfway leaves whole events or none). A folder captured live (event.json `source` other
than `rest-history`) is never replaced unless `replace=True`: a recording is better than a rebuild.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import urlencode

import pyarrow as pa
import pyarrow.compute as pc

from ._core import FLAGS, VENUES
from .capture import (
    _SYMBOL_BASE,
    EVENTS_DIR,
    NS,
    CapturedEvent,
    CaptureError,
    CaptureRequest,
    LostSpan,
    MappedInstrument,
    TradeSource,
    _load_json,
    capture,
    iso,
    map_instruments,
)
from .errors import InvalidInputError
from .net import (
    RATE_REFUSALS,
    Backoff,
    Budgets,
    HttpClient,
    http_fetch,
    write_atomic,
)
from .schema import MARKER_SCHEMA, TRADE_SCHEMA
from .upbit import Egress, WatcherSettings, parse_page
from .upbit.watcher import settings_egresses
from .venues import (
    CLOSED,
    SPECS,
    BackfillRow,
    HistoryOutOfReach,
    HttpFetch,
    HttpRequest,
    Instrument,
    VenueSpec,
    split_multiplier,
)

log = logging.getLogger("pumpwatch.history")

PROGRESS_FILE = "history-progress.json"
SOURCE = "rest-history"  # event.json `source` of a rebuilt event
AGGREGATED = "rest-history-aggregated"  # a venue's trades from aggregate rows (Binance aggTrades)
NOT_AVAILABLE = "not available: the venue keeps only its recent trades"
#: Coverage of a venue that listed the coin (the recorder's catalogue kept it) but lists it no more
#: and whose REST history has nothing of the window.
DELISTED_NO_HISTORY = "not available: delisted since (history not available)"
#: How a span the venue holds but serves no page of is named (Gate spot's page cap, docs/VENUES.md §7.3).
OUT_OF_REACH = "venue could not page back that far"
#: Seconds between two requests for the announcement list when the watcher's interval is not set:
#: the watcher's own default (reports put Upbit's tolerance near one request per 2-5 s per IP).
UPBIT_INTERVAL_S = 3.0
#: A venue with no trade between the window's start and t0 has its reference price (its last trade
#: before t0) looked for this far before the window (a live capture looks 1 h back in the recording;
#: over REST a quiet coin's 10 minutes cost a page or two).
REFERENCE_LOOKBACK_NS = 600 * NS
REST_ATTEMPTS = 5
REST_BACKOFF = Backoff(initial_s=0.5, max_s=30.0, jitter=0.2)


class HistoryError(InvalidInputError):
    """The history rebuild cannot go on as asked."""


@dataclass(frozen=True)
class PastListing:
    notice_id: int
    title: str
    tickers: tuple[str, ...]
    markets: tuple[str, ...]
    t0_ns: int

    def to_dict(self) -> dict:
        return {
            "notice_id": self.notice_id,
            "title": self.title,
            "tickers": list(self.tickers),
            "markets": list(self.markets),
            "t0_ns": self.t0_ns,
            "t0": iso(self.t0_ns),
        }

    @classmethod
    def from_dict(cls, d: dict) -> PastListing:
        return cls(
            int(d["notice_id"]), str(d["title"]), tuple(d["tickers"]), tuple(d.get("markets") or ()), int(d["t0_ns"])
        )


@dataclass
class HistoryResult:
    listings: list[PastListing] = field(default_factory=list)
    built: list[str] = field(default_factory=list)  # event folders written by this run
    skipped_done: list[str] = field(default_factory=list)  # rebuilt by an earlier run
    skipped_live: list[str] = field(default_factory=list)  # captured live: kept
    failed: list[dict] = field(default_factory=list)
    upbit_requests: int = 0
    #: event name -> venue -> REST requests spent on it
    requests: dict[str, dict[str, int]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Upbit's announcement list, paged back


async def page_listings(
    settings: WatcherSettings,
    since_ns: int,
    until_ns: int | None = None,
    *,
    client: HttpClient | None = None,
    counter: Counter | None = None,
    on_page: Callable[[int, int], None] | None = None,
) -> list[PastListing]:
    """Every new KRW listing published in `[since_ns, until_ns)`, oldest first: pages 1, 2, ... of
    the list (the watcher's URL, headers and page size) until a page's oldest notice is older than
    `since_ns` or the list ends. The requests go out as the watcher's polls do: through its egresses
    (direct and/or each configured proxy, `settings_egresses`), round-robin, one request per
    `interval_s` all egresses together (default: the watcher's 3 s / number of egresses); a refusal
    (429/418/403) or failure holds back only the egress that got it, the page goes out through the
    next. `client`: one client for every request instead (direct; tests)."""
    from .tls import context_for

    settings = settings.validated()
    if client is not None:
        ways = [(Egress("direct"), client)]
    else:
        tls = context_for(settings.ca_file)
        ways = [(e, HttpClient(e.proxy, local_addr=e.local_addr, ssl_context=tls)) for e in settings_egresses(settings)]
    n = len(ways)
    interval = settings.interval_s if settings.interval_s is not None else max(0.25, UPBIT_INTERVAL_S / n)
    rng = random.Random()
    found: dict[int, PastListing] = {}
    held_until = [0.0] * n  # monotonic, per egress
    strikes = [0] * n  # failures in a row, per egress
    page, last_request, failures, turn = 1, 0.0, 0, 0
    while True:
        now = time.monotonic()
        order = [(turn + k) % n for k in range(n)]
        free = [i for i in order if held_until[i] <= now]
        i = free[0] if free else min(order, key=lambda j: held_until[j])
        wait = max(last_request + interval - now, held_until[i] - now)
        if wait > 0:
            await asyncio.sleep(wait)
        turn = i + 1
        egress, http = ways[i]
        q = {"os": settings.os, "page": page, "per_page": settings.per_page, "category": settings.category}
        url = f"{settings.base_url.rstrip('/')}{settings.path}?{urlencode(q)}"
        last_request = time.monotonic()
        if counter is not None:
            counter["upbit"] += 1
            counter[f"upbit:{egress.label}"] += 1
        try:
            resp = await asyncio.wait_for(http.get(url, dict(settings.headers)), max(settings.request_timeout_s, 5.0))
        except (OSError, TimeoutError) as e:
            failures, strikes[i] = failures + 1, strikes[i] + 1
            if failures > 8 * n:
                raise HistoryError(
                    f"Upbit's announcement list failed {failures} times in a row ({e}); run again later, "
                    f"it goes on where it stopped"
                ) from None
            held_until[i] = time.monotonic() + settings.error_backoff.delay(strikes[i] - 1, rng)
            continue
        if resp.status in RATE_REFUSALS or resp.status == 403 or resp.status >= 500:
            failures, strikes[i] = failures + 1, strikes[i] + 1
            if failures > 8 * n:
                raise HistoryError(f"Upbit answered {resp.status} {failures} times in a row; run again later")
            policy = settings.rate_backoff if resp.status < 500 else settings.error_backoff
            delay = policy.delay(strikes[i] - 1, rng, resp.retry_after_s)
            log.warning("Upbit list page %d via %s: %d, backing off %.1f s", page, egress.label, resp.status, delay)
            held_until[i] = time.monotonic() + delay
            continue
        if resp.status != 200:
            raise HistoryError(f"Upbit's announcement list answered {resp.status} for page {page}: {resp.body[:200]!r}")
        failures, strikes[i] = 0, 0
        parsed = parse_page(resp.body, strict=False)
        for a in parsed.announcements:
            listing = a.listing
            t0 = a.t0_ns
            if listing is None or not listing.krw or not listing.krw_tickers:
                continue
            if t0 >= since_ns and (until_ns is None or t0 < until_ns):
                found[a.id] = PastListing(a.id, a.title, tuple(listing.krw_tickers), tuple(listing.markets), t0)
        if on_page is not None:
            on_page(page, len(found))
        oldest = min((a.t0_ns for a in parsed.announcements), default=None)
        total = parsed.total_count
        if (
            not parsed.announcements
            or (oldest is not None and oldest < since_ns)
            or (total is not None and page * settings.per_page >= total)
        ):
            break
        page += 1
    return sorted(found.values(), key=lambda x: (x.t0_ns, x.notice_id))


# ---------------------------------------------------------------------------------------------
# A venue's REST history


class VenueHistory:
    """One venue's instrument list and past trades, every request within its rate budget."""

    def __init__(self, spec: VenueSpec, budgets: Budgets, fetch: HttpFetch = http_fetch):
        self.spec = spec
        self.venue = spec.id
        self.limiter = budgets.limiter(spec.rest_pacing())
        self.fetch = fetch
        self.requests = 0
        #: Spans lost to an answer refusing the request (4xx other than rate limits, an error body),
        #: not to a failure to get one: the venue said it has nothing to give.
        self.refused: list[LostSpan] = []
        self._instruments: list[Instrument] | None = None
        self._rng = random.Random()

    async def rest(self, request: HttpRequest) -> str | bytes:
        """One request within the budget; a rate refusal holds the whole budget (as the
        collector's backfill does), a 5xx or network failure delays only this request."""
        last: Exception | None = None
        for attempt in range(REST_ATTEMPTS):
            await self.limiter.acquire()
            self.requests += 1
            try:
                return await self.fetch(self.spec.rest_url, request)
            except (OSError, TimeoutError) as e:
                last = e
                status = getattr(e, "status", None)
                if status is not None and not (status in RATE_REFUSALS or status >= 500):
                    raise
                wait = REST_BACKOFF.delay(attempt, self._rng, getattr(e, "retry_after_s", None))
                wait = max(wait, dict(self.spec.rest_holds).get(status, 0.0) if status is not None else 0.0)
                if status in RATE_REFUSALS:
                    self.limiter.hold(wait, f"{self.venue}: REST {status}")
                else:
                    await asyncio.sleep(wait)
        raise ConnectionError(f"{self.venue}: REST {request.path} failed {REST_ATTEMPTS} times: {last}")

    async def instruments(self) -> list[Instrument]:
        if self._instruments is None:
            bodies = []
            for request in self.spec.instruments_request():
                page: HttpRequest | None = request
                while page is not None:
                    body = await self.rest(page)
                    bodies.append(body)
                    page = self.spec.next_instruments_request(page, body)
            self._instruments = self.spec.parse_instruments(bodies)
        return self._instruments

    async def mapped(self, ticker: str) -> list[MappedInstrument]:
        out = []
        for i in await self.instruments():
            if i.status == CLOSED:
                continue  # kept on the list after its delisting (Binance spot BREAK, Gate): not listed today
            asset = (i.asset or split_multiplier(i.base)[0]).upper()
            if asset == ticker.upper() and i.quote == "USDT":
                out.append(
                    MappedInstrument(
                        self.venue,
                        i.symbol,
                        str(getattr(i.kind, "value", i.kind)),
                        i.base,
                        int(i.base_multiplier),
                        str(i.contract_multiplier),
                    )
                )
        return sorted(out, key=lambda m: m.symbol)

    async def trades(
        self, symbol: str, start_ns: int, end_ns: int, source: str
    ) -> tuple[list[BackfillRow], LostSpan | None]:
        """The trades of `symbol` in `[start_ns, end_ns)` as the venue's history serves them
        (`source`: what `history_source_for` said of the window), and the span lost if the walk
        could not finish (from the last time it reached)."""
        spec = self.spec
        keep_aggregated = source == AGGREGATED
        if keep_aggregated and spec.api_key:
            spec = spec.with_api_key(None)  # beyond the keyed history's reach: the keyless aggregates
        rows: dict[str, BackfillRow] = {}
        try:
            for first in spec.history_requests(symbol, start_ns, end_ns):
                page: HttpRequest | None = first
                while page is not None:
                    got = spec.parse_backfill(await self.rest(page), symbol)
                    for r in got:
                        aggregated = bool(r["flags"] & FLAGS["AGGREGATED"])
                        if aggregated == keep_aggregated and start_ns <= r["ts_ns"] < end_ns:
                            rows[r["trade_id"]] = r
                    page = spec.next_history_request(page, got, start_ns, end_ns)
        except HistoryOutOfReach as e:  # the venue holds the rest but serves no deeper page
            return _ordered(rows), LostSpan(start_ns, min(e.reached_ns, end_ns), f"{OUT_OF_REACH}: {e}", symbol)
        except (OSError, TimeoutError, InvalidInputError, ValueError, KeyError) as e:
            why = f"REST history failed: {str(e)[:200]}"
            if spec.backfill.reach == "by_id":  # forwards from the window's first id: the rest is after
                reached = max((r["ts_ns"] for r in rows.values()), default=start_ns)
                span = LostSpan(reached, end_ns, why, symbol)
            else:  # newest first (OKX by tradeId backwards, Gate by pages): the rest is before the oldest reached
                span = LostSpan(start_ns, min((r["ts_ns"] for r in rows.values()), default=end_ns), why, symbol)
            status = getattr(e, "status", None)
            if not isinstance(e, OSError) or (status is not None and status < 500 and status not in RATE_REFUSALS):
                self.refused.append(span)  # the venue answered, with a refusal (an unknown symbol, say)
            return _ordered(rows), span
        return _ordered(rows), None


def _ordered(rows: dict[str, BackfillRow]) -> list[BackfillRow]:
    return sorted(rows.values(), key=lambda r: (r["ts_ns"], _id_key(r["trade_id"])))


def _id_key(trade_id: str) -> tuple[int, str]:
    head = trade_id.split("-")[0]
    return (int(head), trade_id) if head.isdigit() else (0, trade_id)


def _beyond_reach(spec: VenueSpec) -> str:
    days = round((spec.history_max_age_s or 0) / 86_400)
    return f"not available: older than the venue's {days} days of history"


def _refused(h: VenueHistory, span: LostSpan) -> bool:
    return any(span is r for r in h.refused)


def _catalogued(data_dir: str | None, venue: str, ticker: str) -> list[MappedInstrument]:
    """The venue's instruments of `ticker` the recorder's catalogue kept (`instruments/<venue>.json`,
    a union over time): it saw them listed, with their contract sizes."""
    if not data_dir:
        return []
    found = map_instruments(ticker, data_dir, {}, [venue]).get(venue, [])
    return [dataclasses.replace(i, source="recorder's catalogue") for i in found]


def _spelled(venue: str, ticker: str) -> list[MappedInstrument]:
    """The venue's spelling of TICKER/USDT by its naming rule (the one capture maps recorded
    symbols with); contract size unknown: 1, and said so in `source`."""
    rule = _SYMBOL_BASE.get(venue)
    if rule is None or not ticker.isalnum():
        return []
    pattern, kind = rule
    symbol = pattern.pattern.strip("^$").replace("([A-Z0-9]+)", ticker.upper())
    if not pattern.match(symbol):
        return []
    return [MappedInstrument(venue, symbol, kind, ticker.upper(), 1, "1", "symbol name (contract size unknown: 1)")]


def _spec(venue: str, urls: dict[str, str] | None, api_keys: dict[str, str] | None) -> VenueSpec:
    """The venue's spec pointed at `urls[venue]` (config, simulator) with its API key, if any."""
    spec = SPECS[venue]
    if urls and urls.get(venue):
        spec = spec.with_urls(rest_url=urls[venue])
    if api_keys and api_keys.get(venue):
        spec = spec.with_api_key(api_keys[venue])
    return spec


class MemorySource:
    """A trade table held in memory with the `query`/`markers` of a recording (no markers: REST
    history has no connections), so pumpwatch.capture reads it as it reads a log."""

    def __init__(self, table: pa.Table):
        self.table = table.sort_by([("ts_ns", "ascending")]) if table.num_rows else table

    def query(
        self,
        start_ns: int | None = None,
        end_ns: int | None = None,
        venues: Sequence[str] | None = None,
        symbols: Sequence[str] | None = None,
        *,
        include_non_trades: bool = False,
    ) -> pa.Table:
        t = self.table
        mask = pc.and_(
            pc.greater_equal(t.column("ts_ns"), start_ns if start_ns is not None else -(2**62)),
            pc.less(t.column("ts_ns"), end_ns if end_ns is not None else 2**62),
        )
        if venues is not None:
            mask = pc.and_(mask, pc.is_in(t.column("venue"), value_set=pa.array(list(venues), pa.string())))
        if symbols is not None:
            mask = pc.and_(mask, pc.is_in(t.column("symbol"), value_set=pa.array(list(symbols), pa.string())))
        return t.filter(mask)

    def markers(self, start_ns: int | None = None, end_ns: int | None = None) -> pa.Table:
        return pa.Table.from_pylist([], schema=MARKER_SCHEMA)


# ---------------------------------------------------------------------------------------------
# Building the events


def event_source(data_dir: str, name: str) -> str | None:
    """The `source` of an event folder already there (None: no folder)."""
    event = _load_json(os.path.join(data_dir, EVENTS_DIR, name, "event.json"))
    if not isinstance(event, dict):
        return None if not os.path.isdir(os.path.join(data_dir, EVENTS_DIR, name)) else "unknown"
    return str(event.get("source") or "log")


async def rest_window(
    histories: dict[str, VenueHistory],
    ticker: str,
    start_ns: int,
    end_ns: int,
    now_ns: int,
    only: Iterable[str] | None = None,
    t0_ns: int | None = None,
    data_dir: str | None = None,
) -> tuple[pa.Table, dict[str, list[MappedInstrument]], dict[str, dict], dict[str, int]]:
    """Trades of `ticker` in `[start_ns, end_ns)` from every venue's REST history (or those in
    `only`), with the instruments found, what event.json says of each venue, and the requests
    each venue cost. With `t0_ns`, a venue with no trade in `[start_ns, t0_ns)` also gets its last
    trade of the `REFERENCE_LOOKBACK_NS` before the window (its reference price; outside the
    window, so not among the event's trades).

    A venue whose instrument list today has no such coin is asked anyway where its history reaches
    the window, for the instruments the recorder's catalogue in `data_dir` kept (it saw them
    listed), else for the venue's spelling of TICKER/USDT. Trades served: `listing: delisted
    since`, coverage as any venue's. None, with the catalogue's word that it was listed: coverage
    `DELISTED_NO_HISTORY`. None, without it: `absent`, the note saying what the history answered
    (an unknown-symbol answer is the same for a coin never listed and one delisted whose history the
    venue dropped). Not askable (recent trades only, beyond reach): `absent`, or
    `DELISTED_NO_HISTORY` where the catalogue knew it."""
    mapping: dict[str, list[MappedInstrument]] = {}
    told: dict[str, dict] = {}
    rows: list[BackfillRow] = []
    before = {v: h.requests for v, h in histories.items()}
    wanted = set(only) if only is not None else set(histories)

    async def one(venue: str, h: VenueHistory) -> None:
        try:
            insts = await h.mapped(ticker)
        except (OSError, TimeoutError, InvalidInputError, ValueError, KeyError) as e:
            told[venue] = {
                "source": "none",
                "coverage": "unknown",
                "note": f"the instrument list could not be read: {str(e)[:200]}",
            }
            return
        spec = h.spec
        source = spec.history_source_for(start_ns, now_ns)
        if not insts:
            # Not on the venue's list today: delisted since, or never listed. The recorder's own
            # catalogue, or else the history itself, tells them apart where it can.
            return await unlisted(venue, h, source)
        mapping[venue] = insts
        if spec.history_source is None:
            told[venue] = {"source": "none", "coverage": NOT_AVAILABLE, "lost": []}
            return
        if source is None:
            told[venue] = {"source": "none", "coverage": _beyond_reach(spec), "lost": []}
            return
        mine, lost = await walk(h, insts, source)
        rows.extend(mine)
        told[venue] = {
            "source": source,
            "coverage": "partial" if lost else "complete",
            "lost": [s.to_dict() for s in lost],
        }
        if any(s.reason.startswith(OUT_OF_REACH) for s in lost):
            told[venue]["note"] = f"{OUT_OF_REACH}: the window's older trades are held but not served"

    async def walk(
        h: VenueHistory, insts: list[MappedInstrument], source: str
    ) -> tuple[list[BackfillRow], list[LostSpan]]:
        lost: list[LostSpan] = []
        mine: list[BackfillRow] = []
        for inst in insts:
            got, span = await h.trades(inst.symbol, start_ns, end_ns, source)
            mine.extend(got)
            if span is not None:
                lost.append(span)
        if t0_ns is not None and not any(r["ts_ns"] < t0_ns for r in mine) and not any(_refused(h, s) for s in lost):
            for inst in insts:
                earlier, _ = await h.trades(inst.symbol, start_ns - REFERENCE_LOOKBACK_NS, start_ns, source)
                mine.extend(earlier[-1:])
        return mine, lost

    async def unlisted(venue: str, h: VenueHistory, source: str | None) -> None:
        known = _catalogued(data_dir, venue, ticker)  # the recorder saw it listed: delisted since
        asked = known or _spelled(venue, ticker)
        if source is None or not asked:
            if not known:
                told[venue] = {"source": "none"}  # absent: nothing can say whether it was listed then
                return
            mapping[venue] = known
            why = NOT_AVAILABLE if h.spec.history_source is None else _beyond_reach(h.spec)
            told[venue] = {"source": "none", "coverage": DELISTED_NO_HISTORY, "lost": [], "note": why}
            return
        mine, lost = await walk(h, asked, source)
        symbols = ", ".join(i.symbol for i in asked)
        if mine:  # the venue's history still serves it: it was listed then
            rows.extend(mine)
            mapping[venue] = asked
            told[venue] = {
                "source": source,
                "coverage": "partial" if any(not _refused(h, s) for s in lost) else "complete",
                "lost": [s.to_dict() for s in lost if not _refused(h, s)],
                "listing": "delisted since",
                "note": f"not on the venue's instrument list today; its REST history still serves {symbols}",
            }
            return
        failed = [s for s in lost if not _refused(h, s)]
        if failed:  # no answer (outage, timeouts): nothing is known of it
            if known:
                mapping[venue] = known
            told[venue] = {
                "source": "none",
                "coverage": "unknown",
                "lost": [s.to_dict() for s in failed],
                "note": f"not on the venue's instrument list today, and its REST history of {symbols} failed",
            }
            return
        answered = "; ".join(s.reason for s in lost) or "no trade"
        if known:
            mapping[venue] = known
            told[venue] = {
                "source": "none",
                "coverage": DELISTED_NO_HISTORY,
                "lost": [],
                "note": f"the recorder listed {symbols} before; the venue's list no longer has it and its "
                f"REST history has nothing of the window ({answered[:200]})",
            }
            return
        told[venue] = {
            "source": "none",
            "note": f"not on the venue's instrument list today nor in the recorder's catalogue, and its REST "
            f"history, which reaches the window, has no trade of {symbols} ({answered[:200]}): never listed "
            f"there, or delisted with its history gone (the venue's answer does not tell them apart)",
        }

    await asyncio.gather(*(one(v, h) for v, h in histories.items() if v in wanted))
    # venues answer in any order: the table's order must not depend on it (ties in time across venues)
    rows.sort(key=lambda r: (r["ts_ns"], r["venue"], r["symbol"], _id_key(r["trade_id"])))
    table = pa.Table.from_pylist(rows, schema=TRADE_SCHEMA) if rows else TRADE_SCHEMA.empty_table()
    spent = {v: h.requests - before[v] for v, h in histories.items() if v in wanted}
    return table, mapping, told, spent


class HistoryRun:
    """One `pumpwatch history` run against `data_dir`."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        watcher: WatcherSettings,
        venue_urls: dict[str, str] | None = None,
        venues: Iterable[str] = VENUES,
        before_s: float = 20.0,
        after_s: float = 20.0,
        replace: bool = False,
        chart: bool = True,
        thresholds: dict | None = None,
        budgets: Budgets | None = None,
        fetch: HttpFetch | None = None,
        ca_file: str = "",
        progress: bool = False,
        api_keys: dict[str, str] | None = None,
    ) -> None:
        from .net import venue_fetch

        self.data_dir = os.fspath(data_dir)
        self.watcher = watcher
        self.replace = replace
        self.chart = chart
        self.thresholds = thresholds
        self.before_ns, self.after_ns = int(before_s * NS), int(after_s * NS)
        self.budgets = budgets or Budgets()
        fetch = fetch or venue_fetch(ca_file)
        urls = venue_urls or {}
        self.histories = {v: VenueHistory(_spec(v, urls, api_keys), self.budgets, fetch) for v in venues}
        self.progress = progress
        self.progress_path = os.path.join(self.data_dir, EVENTS_DIR, PROGRESS_FILE)
        #: Called after each event written (tests inject a failure here to stop a run halfway).
        self.after_event: Callable[[str], None] | None = None

    def _load_progress(self, since_ns: int, until_ns: int | None) -> list[PastListing] | None:
        p = _load_json(self.progress_path)
        if not isinstance(p, dict) or p.get("since_ns") != since_ns or p.get("until_ns") != until_ns:
            return None
        try:
            return [PastListing.from_dict(d) for d in p["listings"]]
        except (KeyError, TypeError, ValueError):
            return None

    def _save_progress(
        self, since_ns: int, until_ns: int | None, listings: list[PastListing], built: list[str]
    ) -> None:
        os.makedirs(os.path.dirname(self.progress_path), exist_ok=True)
        doc = {
            "since_ns": since_ns,
            "until_ns": until_ns,
            "since": iso(since_ns),
            "until": iso(until_ns) if until_ns is not None else None,
            "listings": [x.to_dict() for x in listings],
            "built": built,
        }
        write_atomic(self.progress_path, json.dumps(doc, indent=1, ensure_ascii=False).encode())

    async def run(self, since_ns: int, until_ns: int | None = None, *, now_ns: int | None = None) -> HistoryResult:
        if until_ns is not None and until_ns <= since_ns:
            raise HistoryError("--until must be after --since")
        result = HistoryResult()
        counter: Counter = Counter()
        self._clear_stale_progress()
        listings = self._load_progress(since_ns, until_ns)
        with _Progress(self.progress) as bar:
            if listings is None:
                task = bar.add("Upbit notices", None)
                listings = await page_listings(
                    self.watcher,
                    since_ns,
                    until_ns,
                    counter=counter,
                    on_page=lambda page, n: bar.update(task, f"page {page}: {n} KRW listings", page),
                )
                bar.finish(task)
                self._save_progress(since_ns, until_ns, listings, [])
            result.listings = listings
            result.upbit_requests = counter["upbit"]
            jobs = [(x, t) for x in listings for t in x.tickers]
            task = bar.add("events", len(jobs))
            for listing, ticker in jobs:
                try:
                    name = await self._build(listing, ticker, result, now_ns)
                except (CaptureError, OSError, ValueError) as e:
                    log.error("%s %s: not rebuilt: %s", ticker, iso(listing.t0_ns), e)
                    result.failed.append({"ticker": ticker, "t0_ns": listing.t0_ns, "error": str(e)[:300]})
                    bar.advance(task)
                    continue
                bar.advance(task, name)
                if name in result.built:
                    self._save_progress(since_ns, until_ns, listings, result.built)
                    if self.after_event is not None:
                        self.after_event(name)
        return result

    async def _build(self, listing: PastListing, ticker: str, result: HistoryResult, now_ns: int | None) -> str:
        notice = {"notice_id": listing.notice_id, "title": listing.title, "markets": list(listing.markets)}
        req = CaptureRequest(ticker, listing.t0_ns, self.before_ns, self.after_ns, notice)
        self._clear_partial(req.name)
        existing = event_source(self.data_dir, req.name)
        if existing == SOURCE:
            result.skipped_done.append(req.name)
            return req.name
        if existing is not None and not self.replace:
            log.info("%s was captured live (source %s): kept (--replace rebuilds it from REST)", req.name, existing)
            result.skipped_live.append(req.name)
            return req.name
        now = time.time_ns() if now_ns is None else now_ns
        table, mapping, told, spent = await rest_window(
            self.histories, ticker, req.start_ns, req.end_ns + 1, now, t0_ns=req.t0_ns, data_dir=self.data_dir
        )
        result.requests[req.name] = spent
        venues = tuple(self.histories)
        await asyncio.to_thread(
            capture,
            MemorySource(table),
            req,
            self.data_dir,
            venues=venues,
            thresholds=self.thresholds,
            chart=self.chart,
            now_ns=now,
            source_name=SOURCE,
            mapping=mapping,
            venue_sources=told,
        )
        result.built.append(req.name)
        return req.name

    def _clear_stale_progress(self) -> None:
        """A run killed while saving its progress leaves `.history-progress.json.<pid>.tmp`."""
        folder = os.path.dirname(self.progress_path)
        try:
            for entry in os.listdir(folder):
                if (
                    entry.startswith(f".{PROGRESS_FILE}.")
                    and entry.endswith(".tmp")
                    and entry != f".{PROGRESS_FILE}.{os.getpid()}.tmp"
                ):
                    os.unlink(os.path.join(folder, entry))
        except FileNotFoundError:
            pass

    def _clear_partial(self, name: str) -> None:
        """A run killed while writing `name` leaves its `.tmp-<name>-` folder: never an event."""
        folder = os.path.join(self.data_dir, EVENTS_DIR)
        try:
            for entry in os.listdir(folder):
                if entry.startswith(f".tmp-{name}-"):
                    shutil.rmtree(os.path.join(folder, entry), ignore_errors=True)
        except FileNotFoundError:
            pass


class _Progress:
    """A rich progress bar on stderr when asked (the CLI), nothing otherwise."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._p: Any = None

    def __enter__(self) -> Self:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._p = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[what]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self._p.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)

    def add(self, what: str, total: int | None) -> Any:
        return self._p.add_task(what, total=total, what="") if self._p is not None else None

    def update(self, task: Any, what: str, completed: int | None = None) -> None:
        if self._p is not None:
            self._p.update(task, what=what, completed=completed)

    def finish(self, task: Any) -> None:
        if self._p is not None:
            done = self._p.tasks[task].completed or 1
            self._p.update(task, total=done, completed=done)

    def advance(self, task: Any, what: str = "") -> None:
        if self._p is not None:
            self._p.update(task, advance=1, what=what)


# ---------------------------------------------------------------------------------------------
# One listing: `pumpwatch capture TICKER --at T --from-history`


class _WithHistory:
    """The recording, plus REST trades for the venues it does not cover (a trade already recorded
    is kept as recorded: same venue, symbol and id)."""

    def __init__(self, recording: TradeSource, rest: pa.Table):
        self.recording = recording
        self.rest = MemorySource(rest)

    def query(
        self,
        start_ns: int | None = None,
        end_ns: int | None = None,
        venues: Sequence[str] | None = None,
        symbols: Sequence[str] | None = None,
        *,
        include_non_trades: bool = False,
    ) -> pa.Table:
        rec = self.recording.query(start_ns, end_ns, venues, symbols, include_non_trades=include_non_trades)
        more = self.rest.query(start_ns, end_ns, venues, symbols)
        if not more.num_rows:
            return rec
        have = {
            (v, s, i)
            for v, s, i in zip(
                rec.column("venue").to_pylist(),
                rec.column("symbol").to_pylist(),
                rec.column("trade_id").to_pylist(),
                strict=False,
            )
        }
        keep = [
            (v, s, i) not in have
            for v, s, i in zip(
                more.column("venue").to_pylist(),
                more.column("symbol").to_pylist(),
                more.column("trade_id").to_pylist(),
                strict=False,
            )
        ]
        both = pa.concat_tables([rec, more.filter(pa.array(keep)).cast(rec.schema)])
        return both.sort_by([("ts_ns", "ascending")])

    def markers(self, start_ns: int | None = None, end_ns: int | None = None) -> pa.Table:
        return self.recording.markers(start_ns, end_ns)


#: Coverage of a recorded venue that REST history may fill: nothing recorded, or not known.
FILLABLE = ("not recorded", "unknown", "absent")


async def capture_from_history(
    source: TradeSource,
    req: CaptureRequest,
    data_dir: str | os.PathLike[str],
    *,
    venue_urls: dict[str, str] | None = None,
    venues: Iterable[str] = VENUES,
    fetch: Any = None,
    budgets: Budgets | None = None,
    ca_file: str = "",
    thresholds: dict | None = None,
    chart: bool = True,
    source_name: str = "log",
    now_ns: int | None = None,
    api_keys: dict[str, str] | None = None,
) -> Any:
    """The capture of the recording (pumpwatch.capture), with the venues it does not cover filled
    from their REST history: a venue with nothing recorded in the window (`not recorded`,
    `unknown`, or not in the recording at all), or `partial` where the history holds single trades
    (merged by id; aggregated rows never mix with single trades). Each filled venue's event.json
    entry names its source (`rest-history`, `rest-history-aggregated`, `recorded+rest-history`)
    and the coverage the history gave. Returns the CapturedEvent."""
    from .net import venue_fetch

    data_dir = os.fspath(data_dir)
    venues = tuple(venues)

    async def capture_recorded(with_chart: bool) -> CapturedEvent:
        """The event from what the recording holds (the chart only on the last pass)."""
        return await asyncio.to_thread(
            capture,
            source,
            req,
            data_dir,
            venues=venues,
            thresholds=thresholds,
            chart=with_chart,
            now_ns=now_ns,
            source_name=source_name,
        )

    first = await capture_recorded(False)
    per_venue = first.event["venues"]
    fetch = fetch or venue_fetch(ca_file)
    urls = venue_urls or {}
    budgets = budgets or Budgets()
    wanted = [
        v
        for v in venues
        if SPECS[v].history_source is not None
        and (
            per_venue[v]["coverage"] in FILLABLE
            or per_venue[v].get("trades", 0) == 0
            or (per_venue[v]["coverage"] == "partial" and SPECS[v].history_source == SOURCE)
        )
    ]
    if not wanted:
        # The first pass skipped the chart: write the event once more with it.
        return await capture_recorded(True) if chart else first
    histories = {v: VenueHistory(_spec(v, urls, api_keys), budgets, fetch) for v in wanted}
    now = time.time_ns() if now_ns is None else now_ns
    table, rest_mapping, told, _ = await rest_window(
        histories, req.ticker, req.start_ns, req.end_ns + 1, now, t0_ns=req.t0_ns, data_dir=data_dir
    )
    mapping = {
        v: [
            MappedInstrument(
                v,
                i["symbol"],
                i.get("kind", ""),
                i.get("base", req.ticker),
                int(i.get("base_multiplier", 1)),
                str(i.get("contract_multiplier", "1")),
                i.get("source", "instrument list"),
            )
            for i in insts
        ]
        for v, insts in first.event["instrument_mapping"].items()
    }
    sources: dict[str, dict] = {}
    for v in wanted:
        entry = told.get(v, {})
        if entry.get("source") in (None, "none"):
            continue  # the history has nothing for it: the recording's word stands
        mapping[v] = rest_mapping.get(v, mapping.get(v, []))
        recorded = per_venue[v].get("trades", 0) > 0
        sources[v] = {
            **entry,
            "source": ("recorded+" if recorded else "") + entry["source"],
            "recorded_coverage": per_venue[v]["coverage"],
        }
    if not sources:
        return await capture_recorded(True) if chart else first
    keep = pa.array([v in sources for v in table.column("venue").to_pylist()], pa.bool_())
    merged = _WithHistory(source, table.filter(keep))
    return await asyncio.to_thread(
        capture,
        merged,
        req,
        data_dir,
        venues=venues,
        thresholds=thresholds,
        chart=chart,
        now_ns=now_ns,
        source_name=source_name,
        mapping=mapping,
        venue_sources=sources,
    )
