"""The one network layer every part of PumpWatch goes through.

- `HttpClient`: HTTP/1.1 over asyncio streams with keep-alive, gzip/deflate, HTTP CONNECT proxies,
  per-request headers and a caller's `ssl.SSLContext`; `http_fetch` runs a venue's `HttpRequest`
  on it and raises `HttpError` for anything but a 2xx answer.
- `HttpError`: the one error type for a request that failed (no answer, a broken answer, or a
  refusal with its `status`, `body` and `Retry-After`).
- `retry_after_s`: the one `Retry-After` parser (seconds or an HTTP date).
- `Backoff`: the one back-off policy (capped, jittered, never shorter than the server's
  Retry-After), used by venue connections, venue REST, the Upbit watcher and the sink.
- `RateBudget` / `RateLimiter` / `Budgets`: named request budgets ("at most N in any window of
  W seconds"), shared by every venue that draws on the same per-IP allowance, and holds ("no
  request to this host before ...") after a venue said stop.
- `write_atomic`: the one crash-safe file replacement.

Nothing here knows a venue: the venue modules say which budget they draw on (docs/VENUES.md §12).
"""

from .backoff import Backoff
from .files import write_atomic
from .http import (
    RATE_REFUSALS,
    HttpClient,
    HttpError,
    HttpResponse,
    check_proxy,
    default_client,
    http_fetch,
    raise_if_cancelling,
    retry_after_s,
    venue_fetch,
)
from .limits import Budgets, RateBudget, RateLimiter, default_budgets

__all__ = [
    "RATE_REFUSALS",
    "Backoff",
    "Budgets",
    "HttpClient",
    "HttpError",
    "HttpResponse",
    "RateBudget",
    "RateLimiter",
    "check_proxy",
    "default_budgets",
    "default_client",
    "http_fetch",
    "raise_if_cancelling",
    "retry_after_s",
    "venue_fetch",
    "write_atomic",
]
