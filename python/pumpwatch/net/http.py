"""The one HTTP client: HTTP/1.1 over asyncio streams (keep-alive, gzip, CONNECT proxies,
per-request headers, a caller's TLS context), cancellable at any await, and the one error type.

No proxy is taken from the environment and no redirect is followed: a request goes exactly where
the caller's URL (the venue spec, the config) says.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import functools
import gzip
import ssl
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from ..errors import InvalidInputError
from ..tls import context_for, describe_tls_error

#: A venue REST request that takes longer than this has failed (and is retried by its caller).
HTTP_TIMEOUT_S = 10.0
#: How much of an error body goes into the message of an `HttpError`.
HTTP_ERROR_BODY_CHARS = 200
#: The largest body read; past it the answer is refused rather than held in memory.
MAX_BODY = 8 << 20
#: Answers that refuse our IP for asking too much (403 "access too frequent" at Bybit, 418 a ban,
#: 429): the caller holds its budget; the client ends its kept-alive sessions to that host.
RATE_REFUSALS = frozenset({403, 418, 429})
#: Headers every venue REST request carries unless the request sets its own.
VENUE_HEADERS = {"User-Agent": "pumpwatch", "Accept": "application/json", "Accept-Encoding": "gzip, deflate"}


class HttpError(ConnectionError):
    """A request that did not give a usable answer.

    `status` is None when no HTTP answer came (connection, protocol or proxy failure), else the
    answer's status (a refusal: 4xx/5xx), with its `body` and `retry_after_s` (its `Retry-After`
    in seconds, where it sent one). A ConnectionError, so callers that treat network failures
    alike (`except OSError`) keep doing so.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: bytes = b"",
        retry_after_s: float | None = None,
        url: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.retry_after_s = retry_after_s
        self.url = url

    @classmethod
    def refused(
        cls, method: str, url: str, status: int, reason: str, body: bytes, retry_after_s: float | None = None
    ) -> HttpError:
        """A non-2xx answer: the message names the request (its query left out: KuCoin's connect
        URL carries a token) and the start of the body."""
        start = body[:HTTP_ERROR_BODY_CHARS].decode("utf-8", "replace")
        more = "…" if len(body) > HTTP_ERROR_BODY_CHARS else ""
        return cls(
            f"{method} {redact(url)} answered HTTP {status} {reason}: {start}{more}",
            status=status,
            body=body,
            retry_after_s=retry_after_s,
            url=redact(url),
        )


class _StaleConnection(HttpError):
    """A kept-alive connection the server had closed: retried once on a fresh one."""


def redact(url: str) -> str:
    """The URL without its query: logs and errors need no tokens."""
    return url.partition("?")[0]


def retry_after_s(value: str | None, *, now_s: float | None = None) -> float | None:
    """A `Retry-After` header in seconds from now: delta-seconds (`"120"`) or an HTTP date
    (RFC 9110 §10.2.3); None when absent or unreadable (the caller's own back-off applies)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now_s is None else now_s))


@dataclass(slots=True)
class HttpResponse:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    started_ns: int  # wall clock, request about to be sent
    done_ns: int  # wall clock, body fully read: the moment the response "arrived"
    elapsed_s: float  # monotonic, from start (including any connect) to body read

    @property
    def retry_after_s(self) -> float | None:
        return retry_after_s(self.headers.get("retry-after"))


def check_proxy(proxy: str) -> Any:
    """An HTTP CONNECT proxy URL, split; a clear error for anything else (SOCKS is not supported)."""
    u = urlsplit(proxy)
    try:
        _ = u.port  # a port that is not a number raises here
    except ValueError:
        u = None  # type: ignore[assignment]
    if u is None or u.scheme != "http" or not u.hostname:
        raise InvalidInputError(f"proxy must be an HTTP CONNECT proxy like http://[user:pass@]host:port, not {proxy!r}")
    return u


class HttpClient:
    """One egress: direct, bound to a local address, or through an HTTP CONNECT proxy
    (`http://user:pass@host:port`). Keeps idle connections for reuse (a TLS handshake per request
    would cost more than the request). `ssl_context`: how https is verified (default: the
    system's CAs); pass one with an extra CA to reach a TLS stand-in."""

    def __init__(
        self,
        proxy: str | None = None,
        *,
        local_addr: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_idle: int = 4,
        idle_timeout_s: float = 30.0,
    ):
        self.proxy = check_proxy(proxy) if proxy else None
        self.local_addr = (local_addr, 0) if local_addr else None
        self._ssl_context = ssl_context
        self.max_idle = max_idle
        self.idle_timeout_s = idle_timeout_s
        self._idle: dict[tuple[str, str, int], list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]]] = {}

    @property
    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:  # made when first needed: most runs here are plain http
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    async def get(self, url: str, headers: Mapping[str, str]) -> HttpResponse:
        return await self.request("GET", url, headers)

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> HttpResponse:
        """Sends one request and reads its whole answer, whatever its status (the caller judges it).
        Raises HttpError when no complete answer came."""
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise InvalidInputError(f"not an http(s) URL: {redact(url)!r}")
        port = u.port or (443 if u.scheme == "https" else 80)
        key = (u.scheme, u.hostname, port)
        target = (u.path or "/") + (f"?{u.query}" if u.query else "")
        host = u.hostname if port in (80, 443) else f"{u.hostname}:{port}"
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
        started, started_ns = time.monotonic(), time.time_ns()
        for attempt in range(2):
            conn, reused = self._take_idle(key)
            if conn is None:
                try:
                    conn = await self._open(*key)
                except HttpError:
                    raise
                except OSError as e:  # say which host, and how (refused, unreachable, TLS...)
                    why = describe_tls_error(e, url) if isinstance(e, ssl.SSLError) else f"{type(e).__name__}: {e}"
                    raise HttpError(f"connecting to {host} failed: {why}", url=redact(url)) from e
            reader, writer = conn
            try:
                writer.write(request)
                await writer.drain()
                status, reason, hdrs, data, keep = await _read_response(reader, head=method == "HEAD")
            except _StaleConnection:
                writer.close()
                if reused and attempt == 0:
                    continue
                raise HttpError("connection closed before a response", url=redact(url)) from None
            except (ConnectionError, asyncio.IncompleteReadError) as e:
                writer.close()
                if isinstance(e, HttpError):
                    raise
                if reused and attempt == 0:
                    continue
                raise HttpError(f"connection failed mid-response: {e!r}", url=redact(url)) from None
            except BaseException:  # a timeout (cancellation) or a protocol error: this socket is done
                writer.close()
                raise
            done_ns = time.time_ns()
            if keep:
                self._give_back(key, conn)
            else:
                writer.close()
            return HttpResponse(status, reason, hdrs, data, started_ns, done_ns, time.monotonic() - started)
        raise HttpError("unreachable")  # pragma: no cover

    def _take_idle(
        self, key: tuple[str, str, int]
    ) -> tuple[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None, bool]:
        pool = self._idle.get(key)
        now = time.monotonic()
        while pool:
            reader, writer, since = pool.pop()
            if now - since < self.idle_timeout_s and not reader.at_eof() and not writer.is_closing():
                return (reader, writer), True
            writer.close()
        return None, False

    def _give_back(self, key: tuple[str, str, int], conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        pool = self._idle.setdefault(key, [])
        if len(pool) >= self.max_idle:
            conn[1].close()
            return
        pool.append((conn[0], conn[1], time.monotonic()))

    async def _open(self, scheme: str, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        tls = self.ssl_context if scheme == "https" else None
        if self.proxy is None:
            return await asyncio.open_connection(
                host, port, ssl=tls, server_hostname=host if tls else None, local_addr=self.local_addr
            )
        p = self.proxy
        reader, writer = await asyncio.open_connection(p.hostname, p.port or 8080, local_addr=self.local_addr)
        try:
            auth = ""
            if p.username:
                cred = f"{unquote(p.username)}:{unquote(p.password or '')}".encode()
                auth = f"Proxy-Authorization: Basic {base64.b64encode(cred).decode()}\r\n"
            writer.write(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}\r\n".encode("latin-1"))
            await writer.drain()
            line = await reader.readline()
            parts = line.decode("latin-1").split(None, 2)
            if len(parts) < 2 or parts[1] != "200":
                raise HttpError(f"proxy {p.hostname}:{p.port} refused CONNECT {host}:{port}: {line[:80]!r}")
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            if tls is not None:
                await writer.start_tls(tls, server_hostname=host)
        except BaseException:
            writer.close()
            raise
        return reader, writer

    def drop_idle(self, url: str) -> None:
        """Closes the kept-alive connections to `url`'s host: after a rate refusal the venue wants
        every session ended (Bybit: "terminate all HTTP sessions and wait at least 10 minutes")."""
        u = urlsplit(url)
        port = u.port or (443 if u.scheme == "https" else 80)
        for _, writer, _ in self._idle.pop((u.scheme, u.hostname or "", port), []):
            writer.close()

    async def close(self) -> None:
        for pool in self._idle.values():
            for _, writer, _ in pool:
                writer.close()
        self._idle.clear()


async def _read_response(
    reader: asyncio.StreamReader, *, head: bool = False
) -> tuple[int, str, dict[str, str], bytes, bool]:
    line = await reader.readline()
    if not line:
        raise _StaleConnection("connection closed before a response")
    parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise HttpError(f"not an HTTP status line: {line[:80]!r}")
    version, status = parts[0], int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers: dict[str, str] = {}
    for _ in range(200):
        h = await reader.readline()
        if h in (b"\r\n", b"\n"):
            break
        if not h:
            raise HttpError("connection closed inside the response headers")
        name, _, value = h.decode("latin-1").partition(":")
        name, value = name.strip().lower(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    else:
        raise HttpError("more than 200 response headers")
    keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    try:
        if head or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            chunks, size = [], 0
            while True:
                n = int((await reader.readline()).split(b";", 1)[0].strip() or b"0", 16)
                if n == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                size += n
                if size > MAX_BODY:
                    raise HttpError(f"response body over {MAX_BODY} bytes")
                chunks.append(await reader.readexactly(n))
                await reader.readexactly(2)
            body = b"".join(chunks)
        elif "content-length" in headers:
            n = int(headers["content-length"])
            if n > MAX_BODY:
                raise HttpError(f"response body of {n} bytes is over {MAX_BODY}")
            body = await reader.readexactly(n)
        else:
            body = await reader.read(MAX_BODY)
            keep = False
    except ValueError as e:  # a chunk size or Content-Length that is not a number
        raise HttpError(f"malformed response framing: {e}") from None
    enc = headers.get("content-encoding", "").lower()
    try:
        if enc == "gzip":
            body = gzip.decompress(body)
        elif enc == "deflate":
            try:
                body = zlib.decompress(body)
            except zlib.error:
                body = zlib.decompress(body, -zlib.MAX_WBITS)
    except (OSError, EOFError, zlib.error) as e:
        raise HttpError(f"bad {enc} body: {e}") from None
    return status, reason, headers, body, keep


# ---------------------------------------------------------------------------------------------
# Venue REST: the HttpFetch every venue module's requests run on

# Not weak: a client's idle sockets refer to their loop, so a weak key would never go; closed
# loops are dropped instead whenever a client is asked for.
_clients: dict[asyncio.AbstractEventLoop, HttpClient] = {}


def default_client() -> HttpClient:
    """The running event loop's shared client for venue REST (its kept-alive connections belong
    to that loop, so each loop has its own)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        for old in [lp for lp in _clients if lp.is_closed()]:
            del _clients[old]
        client = _clients[loop] = HttpClient(max_idle=8)
    return client


def raise_if_cancelling() -> None:
    """Raises CancelledError when the running task has been asked to stop. Python 3.11's
    `wait_for` hands back the inner result (or its error) when the cancellation arrives just as
    the inner call ends, and the cancellation is lost: a recorder being stopped took the refused
    request for one more failure and retried it for ever. Retry loops call this too."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def http_fetch(
    base_url: str, request: Any, *, timeout_s: float = HTTP_TIMEOUT_S, client: HttpClient | None = None
) -> bytes:
    """Runs a venue `HttpRequest` against `base_url` and returns the body; raises `HttpError`
    on a non-2xx answer (with its status and Retry-After) or when no answer came, and
    TimeoutError when none came within `timeout_s`."""
    url = request.url(base_url)
    headers = {**VENUE_HEADERS, **request.headers}
    body = request.body.encode() if request.body is not None else None
    c = client or default_client()
    try:
        response = await asyncio.wait_for(c.request(request.method, url, headers, body), timeout_s)
    except InvalidInputError as e:
        raise ValueError(str(e)) from None
    finally:
        raise_if_cancelling()
    if not 200 <= response.status < 300:
        if response.status in RATE_REFUSALS:
            c.drop_idle(url)
        raise HttpError.refused(
            request.method, url, response.status, response.reason, response.body, response.retry_after_s
        )
    return response.body


@functools.lru_cache(maxsize=8)
def venue_fetch(ca_file: str = "") -> Any:
    """The venues' REST `HttpFetch` (pumpwatch.net.http_fetch) verifying with the system's CAs
    plus `ca_file`: one kept-alive client per event loop, shared by every venue (as the net
    layer's default client is)."""
    if not ca_file:
        return http_fetch  # the default client verifies with the system's CAs
    clients: dict[asyncio.AbstractEventLoop, HttpClient] = {}

    async def fetch(base_url: str, request: Any, **kw: Any) -> bytes:
        loop = asyncio.get_running_loop()
        client = clients.get(loop)
        if client is None:
            for old in [lp for lp in clients if lp.is_closed()]:
                del clients[old]
            client = clients[loop] = HttpClient(max_idle=8, ssl_context=context_for(ca_file))
        return await http_fetch(base_url, request, client=client, **kw)

    return fetch
