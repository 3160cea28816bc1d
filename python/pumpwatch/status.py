"""`/status` (JSON) and `/metrics` (Prometheus text) of a running recorder, on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import json
import shutil
import urllib.request
from collections.abc import Callable

from .errors import InvalidInputError

#: The Upbit watcher's counters that are in /metrics from the start (they count up from 0).
UPBIT_COUNTERS = (
    "polls",
    "errors",
    "timeouts",
    "backoffs",
    "triggers",
    "already_listed",
    "market_fetches",
    "market_errors",
    "markets_opened",
    "skipped_in_flight",
    "skipped_backoff",
    "ticks_missed",
)


def metrics_text(status: dict) -> str:
    """Prometheus exposition of the status counters, one family per counter."""
    lines = []
    ingest = status.get("ingest", {})
    for k, v in ingest.items():
        lines.append(f"# TYPE pumpwatch_ingest_{k}_total counter")
        lines.append(f"pumpwatch_ingest_{k}_total {v}")
    per_venue: dict[str, list[str]] = {}
    for venue, st in status.get("venues", {}).items():
        for k, v in st.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            per_venue.setdefault(k, []).append(f'pumpwatch_venue_{k}{{venue="{venue}"}} {v}')
    for k, rows in per_venue.items():
        lines.append(f"# TYPE pumpwatch_venue_{k} gauge")
        lines.extend(rows)
    upbit = status.get("upbit", {}).get("metrics")
    if upbit is not None:
        # Counters exist from the first scrape at 0: alert rules (deploy/prometheus) and rate()
        # see the first error or listing, not only the ones after it.
        upbit = {**{k: 0 for k in UPBIT_COUNTERS}, **upbit}
    for k, v in (upbit or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            lines.append(f"# TYPE pumpwatch_upbit_{k} gauge")
            lines.append(f"pumpwatch_upbit_{k} {v}")
    disk = status.get("disk")
    if disk is not None:
        # 1 while records wait in memory for a full disk (alert on it); the others say how long
        # and how much.
        lines.append("# TYPE pumpwatch_disk_full gauge")
        lines.append(f"pumpwatch_disk_full {1 if disk.get('full_since_ns') else 0}")
        lines.append("# TYPE pumpwatch_disk_error gauge")
        lines.append(f"pumpwatch_disk_error {1 if disk.get('error_since_ns') else 0}")
        lines.append("# TYPE pumpwatch_disk_trouble_since_seconds gauge")
        lines.append(
            f"pumpwatch_disk_trouble_since_seconds {(disk.get('full_since_ns') or disk.get('error_since_ns') or 0) / 1e9}"
        )
        for k in ("held_records", "held_bytes", "unsynced_bytes", "lost_trades_pending"):
            lines.append(f"# TYPE pumpwatch_disk_{k} gauge")
            lines.append(f"pumpwatch_disk_{k} {disk.get(k, 0)}")
        for k in ("lost_trades", "commit_failures", "episodes"):
            lines.append(f"# TYPE pumpwatch_disk_{k}_total counter")
            lines.append(f"pumpwatch_disk_{k}_total {disk.get(k, 0)}")
    for k in ("uptime_s", "disk_free_bytes", "log_bytes"):
        if k in status:
            lines.append(f"# TYPE pumpwatch_{k} gauge")
            lines.append(f"pumpwatch_{k} {status[k]}")
    if "postgres" in status.get("sink", {}):
        from .sink.postgres import metrics_lines

        lines += metrics_lines(status["sink"]["postgres"])
    return "\n".join(lines) + "\n"


async def serve_status(address: str, status: Callable[[], dict]) -> asyncio.Server:
    """Serves GET /status and /metrics at `address` (127.0.0.1:PORT; port 0 picks one)."""
    host, _, port = address.rpartition(":")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else "/"
            if path.startswith("/status"):
                body, ctype, code = json.dumps(status(), indent=1).encode(), "application/json", "200 OK"
            elif path.startswith("/metrics"):
                body, ctype, code = metrics_text(status()).encode(), "text/plain; version=0.0.4", "200 OK"
            else:
                body, ctype, code = b"try /status or /metrics\n", "text/plain", "404 Not Found"
            writer.write(
                f"HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, OSError, ValueError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, int(port))


def fetch_status(address: str, timeout_s: float = 5.0) -> dict:
    """The `/status` of the recorder serving at `address`."""
    try:
        with urllib.request.urlopen(f"http://{address}/status", timeout=timeout_s) as r:
            return json.loads(r.read())
    except OSError as e:
        raise InvalidInputError(
            f"no PumpWatch recorder answers at {address} ({e}); start one with `pumpwatch run`, or pass "
            f"the address it serves (--address, metrics_address in pumpwatch.toml)"
        ) from None


def disk_free(path: str) -> int:
    return shutil.disk_usage(path).free
