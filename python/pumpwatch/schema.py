"""The Arrow schemas of query results, shared by the Rust-backed and the pure-Python stores."""

import pyarrow as pa

#: Columns of a trade table, in order. Prices and quantities are the venue's exact decimal text.
TRADE_SCHEMA = pa.schema(
    [
        pa.field("venue", pa.string(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("trade_id", pa.string(), nullable=False),
        pa.field("price", pa.string(), nullable=False),
        pa.field("qty", pa.string(), nullable=False),
        pa.field("side", pa.string(), nullable=False),
        pa.field("ts_ns", pa.int64(), nullable=False),
        pa.field("recv_ns", pa.int64(), nullable=False),
        pa.field("flags", pa.uint16(), nullable=False),
    ]
)

#: Columns of a marker table (coverage facts: connections, gaps found, filled, unfillable).
MARKER_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string()),
        pa.field("venue", pa.string()),
        pa.field("symbol", pa.string()),
        pa.field("ts_ns", pa.int64()),
        pa.field("from_ts_ns", pa.int64()),
        pa.field("to_ts_ns", pa.int64()),
        pa.field("from_id", pa.string()),
        pa.field("to_id", pa.string()),
        pa.field("detail", pa.string()),
    ]
)
