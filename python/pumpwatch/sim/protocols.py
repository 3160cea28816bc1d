"""What a venue's protocol class (venues.py) needs of the server that runs it (server.py).

Two small `Protocol`s, so imports run one way, market <- protocols <- venues <- server: the server's
`Client` and `SimVenue` satisfy them by shape and venues.py never imports the server.
"""

from __future__ import annotations

import random
from typing import Any, Protocol

from .market import Fill, Instrument


class VenueClient(Protocol):
    """One connected socket as a venue class sees it: who it is, what it subscribed to, and how
    to answer it."""

    role: str  # the kind of socket its path opened (`ws_role`)
    dialect: str  # which rendering of a publication it receives ("" is the default)
    conn_id: str
    path: str
    query: dict[str, str]
    topics: set[str]
    state: dict[str, Any]  # the venue's own per-socket bookkeeping (Binance's streams)
    closed: bool

    def send(self, frame: str | bytes, *, data: bool = False) -> None: ...

    def close(self, code: int = 1000, reason: str = "") -> None: ...

    def heartbeat(self) -> None:
        """The client showed a sign of life the venue counts as its heartbeat."""

    def answer_ping(self) -> None:
        """The client answered the server's ping (a pong, or Gate's app-level ping)."""


class VenueHost(Protocol):
    """The simulated venue a protocol class serves: its clock, instruments, published fills and
    subscriptions."""

    @property
    def conn_rng(self) -> random.Random:
        """Connection ids, tokens and gateway sequences: apart from the trades' generator."""

    @property
    def instruments(self) -> dict[str, Instrument]: ...

    @property
    def time_scale(self) -> float: ...

    @property
    def ws_origin(self) -> str: ...

    def now_ns(self) -> int: ...

    def listed_instruments(self) -> list[Instrument]: ...

    def history(self, symbol: str) -> list[Fill]: ...

    def subscribe(self, client: VenueClient, topic: str) -> None: ...

    def unsubscribe(self, client: VenueClient, topic: str) -> None: ...
