"""The one network layer (pumpwatch.net): back-off, Retry-After, budgets, HTTP client, atomic write.

Moved here from the modules that had their own copies: the Upbit watcher's back-off test
(test_upbit.py, now in the one policy's terms) and the venue REST fetch test (test_venue_clients.py).
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import os
import random

import pytest

from pumpwatch.net import (
    Backoff,
    Budgets,
    HttpClient,
    HttpError,
    RateBudget,
    RateLimiter,
    http_fetch,
    retry_after_s,
    write_atomic,
)
from pumpwatch.sim import SimVenue
from pumpwatch.venues import HttpRequest


def run(coro, deadline: float = 10.0):
    return asyncio.run(asyncio.wait_for(coro, deadline))


class FakeClock:
    """Time that passes only when someone sleeps: minutes of pacing in no time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


# ---------------------------------------------------------------------------------------------
# Back-off and Retry-After


def test_backoff_policy():
    """Moved from test_upbit.py: one policy, attempts counted from 0, capped, jitter taken off
    (never above the cap), never shorter than the server's Retry-After."""
    b = Backoff(initial_s=1.0, max_s=10.0, factor=2.0, jitter=0.0)
    rng = random.Random(0)
    assert [b.delay(n, rng) for n in (0, 1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0, 10.0]
    assert b.delay(0, rng, retry_after_s=30) == 30.0
    assert b.delay(4, rng, retry_after_s=3) == 10.0  # a short Retry-After does not shorten the back-off
    j = Backoff(initial_s=1.0, jitter=0.2)
    delays = [j.delay(0, rng) for _ in range(200)]
    assert all(0.8 <= d <= 1.0 for d in delays) and len(set(delays)) > 100
    assert Backoff(jitter=0.5).delay(10_000, rng) <= 30.0  # no overflow far past the cap
    # A 418 ban's Retry-After is never cut short, however long.
    assert Backoff().delay(0, rng, retry_after_s=3 * 86_400) == 3 * 86_400
    for bad in ({"factor": 0.5}, {"jitter": 1.0}, {"initial_s": 60.0}):
        with pytest.raises(ValueError):
            Backoff(**bad)


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after_s("120") == 120.0
    assert retry_after_s(" 0 ") == 0.0
    assert retry_after_s("-5") == 0.0
    now = 1_790_000_000.0
    date = email.utils.formatdate(now + 90, usegmt=True)
    assert retry_after_s(date, now_s=now) == pytest.approx(90.0)
    assert retry_after_s(email.utils.formatdate(now - 90, usegmt=True), now_s=now) == 0.0
    for unreadable in (None, "", "soon", "Thu, 99 Foo 2026"):
        assert retry_after_s(unreadable) is None


# ---------------------------------------------------------------------------------------------
# Budgets


def test_rate_limiter_never_grants_more_than_count_in_any_window():
    clock = FakeClock()
    lim = RateLimiter(3, 1.0, clock=clock, sleep=clock.sleep)

    async def main():
        granted = []
        for _ in range(10):
            await lim.acquire()
            granted.append(clock.now)
        return granted

    granted = run(main())
    for i in range(len(granted) - 3):
        assert granted[i + 3] - granted[i] >= 1.0, granted  # 4 in a row span at least the window
    assert granted[:3] == [1000.0] * 3  # a burst up to the count goes at once
    assert granted[-1] - granted[0] == pytest.approx(3.0)  # and no slower than the budget allows


def test_a_hold_stops_every_user_of_the_budget_and_only_lengthens():
    clock = FakeClock()
    budgets = Budgets(clock=clock, sleep=clock.sleep)
    shared = RateBudget("x:rest", 1, 0.1)
    a, b = budgets.limiter(shared), budgets.limiter(RateBudget("x:rest", 1, 0.1))
    assert a is b
    a.hold(600, "HTTP 403")
    a.hold(5, "a shorter one")  # does not cut the first short
    assert a.status()["hold_reason"] == "HTTP 403"

    async def main():
        await b.acquire()
        return clock.now

    assert run(main()) - 1000.0 >= 600
    with pytest.raises(ValueError, match="defined twice"):
        budgets.limiter(RateBudget("x:rest", 2, 0.1))
    with pytest.raises(ValueError):
        RateBudget("bad", 0, 1.0)


def test_kucoin_spot_and_futures_share_one_rest_budget_and_one_connect_budget():
    """VENUES §12: spot and futures REST share the per-IP Public pool; connections per IP."""
    from pumpwatch.venues import get

    budgets = Budgets()
    spot, fut = get("kucoin-spot"), get("kucoin-futures")
    assert budgets.limiter(spot.rest_pacing()) is budgets.limiter(fut.rest_pacing())
    assert budgets.limiter(spot.connect_budget) is budgets.limiter(fut.connect_budget)
    # Other exchanges' budgets are their own.
    assert budgets.limiter(get("okx-spot").rest_pacing()) is not budgets.limiter(spot.rest_pacing())


# ---------------------------------------------------------------------------------------------
# HTTP


class Origin:
    """A tiny HTTP/1.1 server that counts the TCP connections it accepted and answers from
    `answers` in turn (status, headers, body)."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.connections = 0
        self.requests: list[bytes] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader, writer):
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head + body)
                status, headers, data = self.answers.pop(0)
                lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(data)}"]
                lines += [f"{k}: {v}" for k, v in headers.items()]
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def test_http_client_keeps_alive_decompresses_and_sends_bodies():
    async def main():
        origin = Origin(
            [
                (200, {"Content-Encoding": "gzip"}, gzip.compress(b'{"a":1}')),
                (200, {}, b"second"),
                (429, {"Retry-After": "7"}, b'{"msg":"slow down"}'),
            ]
        )
        base = await origin.start()
        client = HttpClient()
        r1 = await client.get(base + "/one", {"Accept-Encoding": "gzip"})
        r2 = await client.request("POST", base + "/two", {"X-Test": "yes"}, b"payload")
        with pytest.raises(HttpError) as refused:
            await http_fetch(
                base, HttpRequest("GET", "/three", {"q": "1"}, {"X-Gate-Size-Decimal": "1"}), client=client
            )
        # After a rate refusal the kept-alive sessions to that host are ended (Bybit asks for it).
        assert client._idle == {}
        await client.close()
        origin.server.close()
        return origin, r1, r2, refused.value

    origin, r1, r2, refused = run(main())
    assert r1.status == 200 and r1.body == b'{"a":1}'
    assert r2.body == b"second" and origin.requests[1].endswith(b"payload")
    assert b"X-Test: yes" in origin.requests[1] and b"Content-Length: 7" in origin.requests[1]
    assert b"X-Gate-Size-Decimal: 1" in origin.requests[2]  # per-request headers reach the venue
    assert origin.connections == 1  # all three on one kept-alive connection
    assert refused.status == 429 and refused.retry_after_s == 7.0 and "slow down" in str(refused)
    assert isinstance(refused, ConnectionError)  # network failures and refusals are caught alike


def test_http_fetch_returns_the_body_and_reports_a_refusal():
    """Moved from test_venue_clients.py: venue REST on the one client, against the simulator."""

    async def body():
        async with SimVenue("kucoin-spot", trades_per_s=0) as sim:
            ok = await http_fetch(sim.rest_url, HttpRequest("POST", "/api/v1/bullet-public"))
            assert b'"token"' in ok
            with pytest.raises(HttpError) as refused:
                await http_fetch(sim.rest_url, HttpRequest("GET", "/api/v1/market/histories", {"symbol": "NOPE"}))
            assert refused.value.status == 400
            assert "HTTP 400" in str(refused.value) and "symbol invalid" in str(refused.value)

    run(body(), 10)


def test_http_fetch_refuses_what_is_not_http():
    with pytest.raises(ValueError, match="not an http"):
        run(http_fetch("ftp://example", HttpRequest("GET", "/x")))


# ---------------------------------------------------------------------------------------------
# Atomic write


def test_write_atomic_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "state.json"
    write_atomic(target, b"old")
    write_atomic(target, "new ü")
    assert target.read_text(encoding="utf-8") == "new ü"

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_atomic(target, b"never seen")
    assert target.read_text(encoding="utf-8") == "new ü"
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]  # no temporary left behind


def test_a_stop_that_arrives_as_a_request_fails_is_a_stop_not_a_failure():
    """Python 3.11's wait_for hands back the inner error when the cancellation arrives just as the
    request ends, and the cancellation is lost: a recorder being stopped retried its refused
    instrument list for ever (CI timed out a TLS test on it). http_fetch raises CancelledError."""
    released = asyncio.Event()

    class RefusingClient:
        async def request(self, method, url, headers, body):
            await released.wait()
            raise HttpError("connecting failed: TLS certificate not trusted", url=url)

    async def go():
        task = asyncio.create_task(
            http_fetch("https://127.0.0.1:1", HttpRequest("GET", "/x"), client=RefusingClient())  # type: ignore[arg-type]
        )
        await asyncio.sleep(0.01)  # the request is under way
        released.set()
        await asyncio.sleep(0)  # the request ends with its error ...
        task.cancel()  # ... as the stop arrives
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
