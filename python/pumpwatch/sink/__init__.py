"""Replicas of the recording outside the local log: a sink tails the log from a cursor and ships
what it reads elsewhere (`pumpwatch.sink.postgres`: PostgreSQL / TimescaleDB). The local log stays
the source of truth; a sink may lag, never slows ingestion, and reports what it could not read.

`LogTail` is the reading half every sink shares: records in log order from a cursor, as Arrow
columns, with the position of each record in the log.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from .. import _core
from ..store import Store, _table_from_columns

#: A position in the log: (segment sequence number, byte offset of the next record).
#: `START` = the oldest record the log still holds.
Cursor = tuple[int, int]
START: Cursor = (0, 0)

#: The trade columns of a tail batch: `pumpwatch.TRADE_SCHEMA` plus each record's log position.
POSITION_FIELDS = [pa.field("log_seq", pa.int64(), nullable=False), pa.field("log_offset", pa.int64(), nullable=False)]


@dataclass
class TailBatch:
    """What one `LogTail.read` found, in log order."""

    #: Trades (non-trades too: they keep id sequences whole), `TRADE_SCHEMA` + `log_seq`, `log_offset`.
    trades: pa.Table
    #: Markers as dicts (`MARKER_SCHEMA` fields plus `seq`, `offset`).
    markers: list[dict[str, Any]]
    #: Quarantined raw frames passed over (counted only).
    quarantined: int
    #: Records read: trades + markers + quarantined.
    records: int
    #: Where the next read goes on.
    next: Cursor
    #: The published end of the log when it was read.
    end: Cursor
    caught_up: bool
    #: Segments deleted before they were read: `{"from": cursor, "resumed_at": cursor, "segments": n}`.
    skipped: list[dict[str, Any]] = field(default_factory=list)
    #: Damaged spans passed over: `{"segment", "offset", "length", "reason"}`.
    damaged: list[dict[str, Any]] = field(default_factory=list)
    #: What is left after `next`: bytes (exact) and records (estimated from the time index).
    bytes_behind: int = 0
    records_behind: int = 0


class LogTail:
    """Reads a data directory in log order from a cursor, while the recorder appends to it.

    `source` is the data directory (read through its own read-only maps: it never takes the
    writer's lock, so tailing costs the recorder nothing) or an open `Store` (its own views).
    """

    def __init__(self, source: str | os.PathLike[str] | Store) -> None:
        if isinstance(source, Store):
            self.path = source.path
            self._log = source._log
        else:
            self.path = os.fspath(source)
            self._log = _core.LogReader(self.path)

    def read(self, cursor: Cursor = START, max_records: int = 65_536) -> TailBatch:
        """About `max_records` records from `cursor` (whole records; at least one when there is
        one). Raises `InvalidInputError` when the cursor lies past the end of the log (the data
        directory was replaced since the cursor was saved)."""
        seq, offset = cursor
        raw = self._log.tail(int(seq), int(offset), int(max_records))
        trades = _table_from_columns(raw["trades"])
        n = trades.num_rows
        for f, key in zip(POSITION_FIELDS, ("trade_seq", "trade_offset"), strict=False):
            trades = trades.append_column(f, pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(raw[key])]))
        return TailBatch(
            trades=trades,
            markers=raw["markers"],
            quarantined=raw["quarantined"],
            records=raw["records"],
            next=tuple(raw["next"]),
            end=tuple(raw["end"]),
            caught_up=raw["caught_up"],
            skipped=raw["skipped"],
            damaged=raw["damaged"],
            bytes_behind=raw["bytes_behind"],
            records_behind=raw["records_behind"],
        )


__all__ = ["POSITION_FIELDS", "START", "Cursor", "LogTail", "TailBatch"]
