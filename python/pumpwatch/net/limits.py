"""Named request budgets: at most `count` requests in any window of `period_s` seconds, shared by
everything that draws on the same allowance, and holds after a venue said stop.

A venue's limits are per IP (VENUES §12): OKX counts the connection requests of spot and swap
together, Bybit's 403 "access too frequent" bars the whole host for 10 minutes, KuCoin spot and
futures REST draw on one `Public` pool. So a budget is known by its name, and every caller that
names it shares one `RateLimiter` (`Budgets.limiter`).

"At most N in any window" is the strictest reading of "N per W": it also satisfies a venue that
counts with a token bucket or fixed windows, so whichever the venue uses, we are never refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("pumpwatch.net")


@dataclass(frozen=True)
class RateBudget:
    """One allowance of a venue: at most `count` requests per `period_s` seconds, shared by
    every spec that names it. `slack_s` widens our window beyond the venue's, where the venue
    counts on arrival at its server and our clock and the network's delays differ from its own
    (connection requests: a handshake leaves here a little before the venue counts it).
    `source`: where the number comes from (a docs/VENUES.md section, a doc page)."""

    name: str
    count: int
    period_s: float
    slack_s: float = 0.0
    source: str = ""

    def __post_init__(self) -> None:
        if self.count < 1 or self.period_s <= 0 or self.slack_s < 0:
            raise ValueError(f"budget {self.name!r}: need count >= 1, period_s > 0, slack_s >= 0")


class RateLimiter:
    """At most `count` acquisitions in any window of `period_s` seconds, and none before a hold
    ends. `clock` and `sleep` are injectable so that tests run minutes of pacing on a fake clock."""

    def __init__(
        self,
        count: int,
        period_s: float,
        *,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if count < 1 or period_s <= 0:
            raise ValueError(f"a rate limiter needs count >= 1 and period_s > 0, got {count}, {period_s}")
        self.name = name
        self.count = count
        self.period_s = period_s
        self.clock = clock
        self.sleep = sleep
        self._times: deque[float] = deque()  # when each acquisition in the current window was granted
        self.hold_until = 0.0
        self.hold_reason = ""
        self.granted = 0
        self.waited_s = 0.0

    def delay(self) -> float:
        """Seconds until one more request may go (0 = now)."""
        now = self.clock()
        window_start = now - self.period_s
        while self._times and self._times[0] <= window_start:
            self._times.popleft()
        wait = max(0.0, self.hold_until - now)
        if len(self._times) >= self.count:
            wait = max(wait, self._times[len(self._times) - self.count] + self.period_s - now)
        return wait

    def try_acquire(self) -> bool:
        if self.delay() > 0:
            return False
        self._times.append(self.clock())
        self.granted += 1
        return True

    async def acquire(self) -> float:
        """Waits for the next free slot and takes it; returns how long it waited."""
        waited = 0.0
        while True:
            wait = self.delay()
            if wait <= 0:
                self._times.append(self.clock())
                self.granted += 1
                self.waited_s += waited
                return waited
            await self.sleep(wait)
            waited += wait

    def hold(self, seconds: float, reason: str = "") -> None:
        """Nothing is granted for `seconds` from now (a hold is only ever lengthened)."""
        until = self.clock() + max(0.0, seconds)
        if until > self.hold_until:
            self.hold_until = until
            self.hold_reason = reason
            log.warning("%s: no request for %.0f s: %s", self.name or "budget", seconds, reason)

    def status(self) -> dict:
        now = self.clock()
        return {
            "count": self.count,
            "period_s": self.period_s,
            "in_window": sum(t > now - self.period_s for t in self._times),
            "granted": self.granted,
            "waited_s": round(self.waited_s, 3),
            "hold_remaining_s": round(max(0.0, self.hold_until - now), 3),
            "hold_reason": self.hold_reason if self.hold_until > now else "",
        }


class Budgets:
    """The named budgets of one process: `limiter(budget)` gives every caller naming the same
    budget the same `RateLimiter`."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> None:
        self.clock = clock
        self.sleep = sleep
        self._limiters: dict[str, RateLimiter] = {}
        self._budgets: dict[str, RateBudget] = {}

    def limiter(self, budget: RateBudget) -> RateLimiter:
        known = self._budgets.get(budget.name)
        if known is None:
            self._budgets[budget.name] = budget
            self._limiters[budget.name] = RateLimiter(
                budget.count, budget.period_s + budget.slack_s, name=budget.name, clock=self.clock, sleep=self.sleep
            )
        elif (known.count, known.period_s, known.slack_s) != (budget.count, budget.period_s, budget.slack_s):
            raise ValueError(f"budget {budget.name!r} is defined twice, differently: {known} and {budget}")
        return self._limiters[budget.name]

    def status(self) -> dict[str, dict]:
        return {name: lim.status() for name, lim in sorted(self._limiters.items())}


_budgets: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Budgets] = weakref.WeakKeyDictionary()


def default_budgets() -> Budgets:
    """The running event loop's budgets: what a process draws from the venues' per-IP
    allowances, when its owner passed no `Budgets` of its own."""
    loop = asyncio.get_running_loop()
    budgets = _budgets.get(loop)
    if budgets is None:
        budgets = _budgets[loop] = Budgets()
    return budgets
