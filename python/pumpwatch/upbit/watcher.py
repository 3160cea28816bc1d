"""The watcher: `UpbitWatcher` polls the announcement list on a fixed schedule (each poll its own
task with a short timeout, so a hung request never delays the next), with one ETag per egress, a
cache-busting parameter, browser headers, back-off on 429/418/403 and on repeated errors; hands
`ListingTrigger`s to an `asyncio.Queue` and/or a callback, and checks `/v1/market/all` to mark
tickers that are already on KRW and to record when a new KRW market opens. Its HTTP, back-off
policy, refusal statuses and Retry-After reading are pumpwatch.net's (`HttpClient`, `Backoff`,
`RATE_REFUSALS`, `HttpResponse.retry_after_s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import ssl
import statistics
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, Self
from urllib.parse import urlencode, urlsplit

from ..errors import InvalidInputError
from ..net import RATE_REFUSALS, Backoff, HttpClient, HttpError, HttpResponse, check_proxy
from ..tls import context_for
from .announcements import MARKET_ALL_URL, Announcement, AnnouncementFormatError, parse_market_list, parse_page
from .state import STATE_FILE, ListingTrigger, WatcherState

#: A Retry-After from Upbit's CDN is followed up to this long per egress: the other egresses go
#: on polling, and a listing must not go unseen for a day because one proxy's answer said so.
MAX_RETRY_AFTER_S = 3600.0

log = logging.getLogger("pumpwatch.upbit")

#: After a failed write of the watcher state, the next try comes after this many seconds, doubling
#: up to the maximum: a disk that gets space back is noticed within half a minute.
STATE_RETRY_INITIAL_S = 1.0
STATE_RETRY_MAX_S = 30.0


class Clock(Protocol):
    """Where the watcher reads the time: `monotonic()` in seconds (its schedule, back-offs and poll
    records; the event loop's clock, which its sleeps and timeouts run on) and `time_ns()`, the wall
    clock in ns. A test passes a fake one with an event loop that runs on the same fake time, so
    what the watcher does over seconds is checked in milliseconds, with no real sleep."""

    def monotonic(self) -> float: ...

    def time_ns(self) -> int: ...


class SystemClock:
    """The real clocks (`time.monotonic` is also what asyncio's event loop runs on)."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time_ns(self) -> int:
        return time.time_ns()


SYSTEM_CLOCK = SystemClock()


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


def settings_egresses(settings: WatcherSettings) -> list[Egress]:
    """The ways out to Upbit the settings name: direct (also when proxies are given, unless
    `include_direct` is off), then each proxy, checked. The watcher and `pumpwatch history` both
    reach Upbit through these (Upbit limits per IP)."""
    egresses: list[Egress] = []
    if settings.include_direct or not settings.proxies:
        egresses.append(Egress("direct"))
    for i, p in enumerate(settings.proxies):
        egresses.append(p if isinstance(p, Egress) else Egress(f"proxy{i + 1}:{urlsplit(p).hostname}", proxy=p))
    for e in egresses:
        if e.proxy:
            check_proxy(e.proxy)
    labels = [e.label for e in egresses]
    if len(set(labels)) != len(labels):
        raise InvalidInputError(f"egress labels must be unique: {labels}")
    return egresses


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
    `on_market_open` as `MarketOpened`. `clock` is where it reads the time (`SYSTEM_CLOCK`; a
    test's fake clock runs with an event loop on the same fake time).
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
        clock: Clock = SYSTEM_CLOCK,
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
        self.clock = clock
        self.on_trigger = on_trigger
        self.on_market_open = on_market_open
        self.triggers: asyncio.Queue[ListingTrigger] = queue if queue is not None else asyncio.Queue()
        self._rng = random.Random(seed)
        egresses = settings_egresses(self.settings)
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
        clock = self.clock
        interval = self.interval_s
        next_at = clock.monotonic()
        while self.running:
            self._tick(clock.monotonic())
            next_at += interval
            now = clock.monotonic()
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
            q[s.cache_bust_param] = f"{self.clock.time_ns() // 1_000_000}{seq % 1000:03d}"
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
        rec.ended = self.clock.monotonic()
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
        if status in RATE_REFUSALS:
            retry = resp.retry_after_s
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
        now = self.clock.monotonic()
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
                        self.state_unsaved_since_ns = self.clock.time_ns()
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
                        (self.clock.time_ns() - self.state_unsaved_since_ns) / 1e9,
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
                raise HttpError.refused(
                    "GET", self.settings.market_url, resp.status, resp.reason, resp.body, resp.retry_after_s
                )
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
                await asyncio.sleep(max(0.0, self.krw_markets_ns / 1e9 + 1.0 - self.clock.time_ns() / 1e9))
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
                    e.counters, etag=e.etag, backoff_remaining_s=max(0.0, e.blocked_until - self.clock.monotonic())
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
