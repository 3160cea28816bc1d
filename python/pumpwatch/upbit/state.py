"""The watcher's decisions and what survives a restart: `ListingTrigger` (a new KRW listing, handed
to capture), `MarketOpened` (its KRW market appeared in `/v1/market/all`) and `WatcherState`
(which notices were judged, which tickers triggered, which wait for their market), persisted
atomically in `<data_dir>/upbit_state.json`. `WatcherState.decide` is pure and synchronous.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import faults
from ..net import write_atomic
from .announcements import Announcement
from .titles import follow_up_of

log = logging.getLogger("pumpwatch.upbit")

STATE_FILE = "upbit_state.json"
STATE_VERSION = 1


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
