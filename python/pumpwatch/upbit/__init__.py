"""The Upbit watcher: finds every new KRW listing on Upbit's announcement board, as early as the public
endpoint allows, and never a false one.

One job per file; dependencies run one way, titles <- announcements <- state <- watcher:

- `titles.py`: `parse_title(title)`, a listing title (Korean or English, legacy or current shape)
  into a `Listing`, `None` for everything else; `follow_up_of(title)`, the listing a follow-up
  title amends. The grammar is strict: a title is a listing only if it is entirely a known shape.
- `announcements.py`: `parse_page` / `parse_announcements`, a list response (current
  `data.notices`, legacy `data.list`) into `Announcement`s (`AnnouncementFormatError` for a
  malformed body); `parse_market_list` for `/v1/market/all`; `to_ns` and `KST`.
- `state.py`: `ListingTrigger`, `MarketOpened` and `WatcherState`, the decisions (which notices
  are new KRW listings) and their persistence, atomically, in the data directory.
- `watcher.py`: `UpbitWatcher` with `WatcherSettings`, `Egress`, `PollRecord` and `Clock`: polls the list on
  a fixed schedule through pumpwatch.net (one ETag per egress, a cache-busting parameter, browser
  headers, back-off on 429/418/403 and on repeated errors), hands `ListingTrigger`s to an
  `asyncio.Queue` and/or a callback, and checks `/v1/market/all`.

t0 is always `first_listed_at` (the original publication time); `listed_at` moves when a notice
is edited and is never used as t0. UPBIT.md (../shared) has the facts this is built from.

Every name is re-exported here, as before the split. A test that patches a module constant patches
it where it is used (`pumpwatch.upbit.watcher.STATE_RETRY_INITIAL_S`), not on this package.
"""

# The one network layer; its names stay importable from here for the watcher's callers.
from ..net import Backoff, HttpClient, HttpError, HttpResponse, check_proxy, retry_after_s, write_atomic
from .announcements import (
    ANNOUNCEMENTS_URL,
    KST,
    MARKET_ALL_URL,
    Announcement,
    AnnouncementFormatError,
    AnnouncementPage,
    MarketListFormatError,
    parse_announcements,
    parse_market_list,
    parse_page,
    to_ns,
)
from .state import (
    MAX_HISTORY,
    MAX_SEEN,
    STATE_FILE,
    STATE_VERSION,
    ListingTrigger,
    MarketOpened,
    WatcherState,
)
from .titles import Listing, follow_up_of, parse_title
from .watcher import (
    BROWSER_HEADERS,
    MAX_RETRY_AFTER_S,
    STATE_RETRY_INITIAL_S,
    STATE_RETRY_MAX_S,
    SYSTEM_CLOCK,
    Callback,
    Clock,
    Egress,
    PollRecord,
    UpbitWatcher,
    WatcherSettings,
)

__all__ = [
    "ANNOUNCEMENTS_URL",
    "BROWSER_HEADERS",
    "KST",
    "MARKET_ALL_URL",
    "MAX_HISTORY",
    "MAX_RETRY_AFTER_S",
    "MAX_SEEN",
    "STATE_FILE",
    "STATE_RETRY_INITIAL_S",
    "STATE_RETRY_MAX_S",
    "STATE_VERSION",
    "SYSTEM_CLOCK",
    "Announcement",
    "AnnouncementFormatError",
    "AnnouncementPage",
    "Backoff",
    "Callback",
    "Clock",
    "Egress",
    "HttpClient",
    "HttpError",
    "HttpResponse",
    "Listing",
    "ListingTrigger",
    "MarketListFormatError",
    "MarketOpened",
    "PollRecord",
    "UpbitWatcher",
    "WatcherSettings",
    "WatcherState",
    "check_proxy",
    "follow_up_of",
    "parse_announcements",
    "parse_market_list",
    "parse_page",
    "parse_title",
    "retry_after_s",
    "to_ns",
    "write_atomic",
]
