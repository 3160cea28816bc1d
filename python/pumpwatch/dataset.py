"""Listing events as a research dataset.

`load_events` turns the event folders under a data directory into one `pyarrow.Table` with a row per
(event, venue): what was covered and from where, and the pump measured. `load_event_trades` gives one
event's trades. Both are plain Arrow, so `to_pandas()` and `polars.from_arrow` take them as they are,
and DuckDB reads `events/*/trades.parquet` directly.

Amounts (prices, volumes) stay the exact decimal text the analysis wrote; percentages and times are
floats, as in analysis.json (they are measurements, not amounts).
"""

from __future__ import annotations

import os
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .capture import _load_json, list_events, load_event

#: One row per (event, venue). `source` says where a venue's trades came from: `recorded` (this
#: recorder's log) unless the event says otherwise for that venue.
EVENT_TABLE_SCHEMA = pa.schema(
    [
        pa.field("event", pa.string(), nullable=False),
        pa.field("ticker", pa.string(), nullable=False),
        pa.field("t0", pa.timestamp("ns", tz="UTC"), nullable=False),
        pa.field("t0_ns", pa.int64(), nullable=False),
        pa.field("detection_delay_ms", pa.float64()),
        pa.field("notice_id", pa.int64()),
        pa.field("title", pa.string()),
        pa.field("venue", pa.string(), nullable=False),
        pa.field("coverage", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("trades", pa.int64(), nullable=False),
        pa.field("lost_seconds", pa.float64(), nullable=False),
        pa.field("reference_price", pa.string()),
        pa.field("first_after_ms", pa.float64()),
        pa.field("peak_price", pa.string()),
        pa.field("max_rise_pct", pa.float64()),
        pa.field("max_fall_pct", pa.float64()),
        pa.field("time_to_peak_ms", pa.float64()),
        pa.field("trades_before", pa.int64()),
        pa.field("trades_after", pa.int64()),
        pa.field("base_volume_before", pa.string()),
        pa.field("base_volume_after", pa.string()),
        pa.field("quote_volume_before", pa.string()),
        pa.field("quote_volume_after", pa.string()),
        pa.field("buy_share_after", pa.float64()),
        pa.field("vwap_after", pa.string()),
        pa.field("lag_ms", pa.float64()),
        pa.field("first_mover", pa.bool_(), nullable=False),
        pa.field("verdict", pa.string()),
        pa.field("event_verdict", pa.string()),
    ]
)


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def event_rows(event: dict, analysis: dict) -> list[dict]:
    """The rows of one event, as `load_events` puts them in its table."""
    across = analysis.get("across") or {}
    lags = across.get("lead_lag_ms") or {}
    mover = _get(across, "first_mover", "venue")
    notice = event.get("notice") or {}
    notice_id = notice.get("notice_id")
    rows = []
    for venue, cov in sorted((event.get("venues") or {}).items()):
        a = _get(analysis, "venues", venue) or {}
        rows.append(
            {
                "event": os.path.basename(str(event.get("folder", "")).rstrip("/")),
                "ticker": event.get("ticker", ""),
                "t0": event["t0_ns"],
                "t0_ns": event["t0_ns"],
                "detection_delay_ms": event.get("detection_delay_ms"),
                "notice_id": notice_id if isinstance(notice_id, int) else None,
                "title": notice.get("title"),
                "venue": venue,
                "coverage": cov.get("coverage", "unknown"),
                "source": cov.get("source", "recorded"),
                "trades": int(cov.get("trades", 0)),
                "lost_seconds": float(sum(float(s.get("seconds") or 0) for s in cov.get("lost") or [])),
                "reference_price": _get(a, "reference", "price"),
                "first_after_ms": _get(a, "first_after", "ms_after_t0"),
                "peak_price": _get(a, "peak", "price"),
                "max_rise_pct": a.get("max_rise_pct"),
                "max_fall_pct": a.get("max_fall_pct"),
                "time_to_peak_ms": a.get("time_to_peak_ms"),
                "trades_before": _get(a, "before", "trades"),
                "trades_after": _get(a, "after", "trades"),
                "base_volume_before": _get(a, "before", "base_volume"),
                "base_volume_after": _get(a, "after", "base_volume"),
                "quote_volume_before": _get(a, "before", "quote_volume"),
                "quote_volume_after": _get(a, "after", "quote_volume"),
                "buy_share_after": _get(a, "after", "buy_share"),
                "vwap_after": _get(a, "after", "vwap"),
                "lag_ms": lags.get(venue),
                "first_mover": venue == mover,
                "verdict": a.get("verdict"),
                "event_verdict": across.get("verdict"),
            }
        )
    return rows


def load_events(
    data_dir: str | os.PathLike[str], *, since_ns: int | None = None, until_ns: int | None = None
) -> pa.Table:
    """Every event folder under `data_dir` as one table, a row per (event, venue), oldest t0 first.

    `since_ns`/`until_ns` keep events whose t0 is in `[since, until)`."""
    rows: list[dict] = []
    for event in list_events(data_dir):
        t0 = event.get("t0_ns")
        if not isinstance(t0, int):
            continue
        if (since_ns is not None and t0 < since_ns) or (until_ns is not None and t0 >= until_ns):
            continue
        analysis = _load_json(os.path.join(event["folder"], "analysis.json")) or {}
        rows.extend(event_rows(event, analysis))
    return pa.Table.from_pylist(rows, schema=EVENT_TABLE_SCHEMA)


def load_event_trades(data_dir: str | os.PathLike[str], event: str) -> pa.Table:
    """The trades of one event (its `trades.parquet`), given by folder name, path or ticker (the
    latest event of that ticker)."""
    ev, _ = load_event(data_dir, event)
    return pq.read_table(os.path.join(ev["folder"], "trades.parquet"))
