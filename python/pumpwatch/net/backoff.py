"""The one back-off policy: reconnects, venue REST, the Upbit watcher and the sink all wait by it."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """The wait before retry `attempt` (0 = the first after a failure) is
    `initial_s * factor**attempt`, capped at `max_s`, with a random part of up to `jitter` (a
    fraction) taken off, and never shorter than the server's `Retry-After`.

    Jitter is taken off rather than added, so the waits stay spread at the cap too and never
    exceed it: the many connections or pollers one outage stops do not all come back in the same
    instant (and trip the venue's rate limit together). A `Retry-After` is the server's word and
    is never shortened (Binance: ignoring a 429's Retry-After earns a 418 ban, VENUES §12).
    """

    initial_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not 0 <= self.initial_s <= self.max_s:
            raise ValueError(f"need 0 <= initial delay <= max delay, got {self.initial_s}, {self.max_s}")
        if self.factor < 1:
            raise ValueError(f"factor must be at least 1 (a backoff that shrinks hammers the venue), got {self.factor}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter is a fraction in [0, 1), got {self.jitter}")

    def delay(self, attempt: int, rng: random.Random | None = None, retry_after_s: float | None = None) -> float:
        """Seconds to wait before retry `attempt` (0-based)."""
        try:
            base = min(self.max_s, self.initial_s * self.factor ** max(0, attempt))
        except OverflowError:  # factor**attempt past the float range: long since at the cap
            base = self.max_s
        if self.jitter:
            base *= 1.0 - self.jitter * (rng or random).random()
        if retry_after_s is not None:
            base = max(base, retry_after_s)
        return base
