"""Announcement lists: `parse_page` / `parse_announcements` read a list response (current
`data.notices`, legacy `data.list`) into `Announcement`s, each with the `Listing` its title
announces; a malformed body raises `AnnouncementFormatError`. `parse_market_list` reads
`/v1/market/all` into the set of KRW base assets. `to_ns` turns Upbit's KST times into integer ns.

t0 is always `first_listed_at` (the original publication time); `listed_at` moves when a notice
is edited and is never used as t0.
"""

from __future__ import annotations

import json
from collections.abc import Container, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from ..errors import InvalidInputError
from .titles import Listing, parse_title

KST = timezone(timedelta(hours=9), "KST")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

ANNOUNCEMENTS_URL = "https://api-manager.upbit.com/api/v1/announcements"
MARKET_ALL_URL = "https://api.upbit.com/v1/market/all"


class AnnouncementFormatError(InvalidInputError):
    """An announcement list response is not in a shape PumpWatch knows (not JSON, no `data.notices`
    or `data.list`, a row without an id, title or time)."""


class MarketListFormatError(InvalidInputError):
    """A `/v1/market/all` response is not a JSON list of markets."""


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
        if not isinstance(v, str):
            raise TypeError(v)  # None, a number, ...: not a time string either
        dt = datetime.fromisoformat(v)
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
