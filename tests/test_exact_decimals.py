"""Exact decimals round-trip through the log on both paths: property-based, many shapes."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pumpwatch

digits = st.text(alphabet="0123456789", min_size=1, max_size=40)
plain_decimal = st.builds(
    lambda sign, whole, frac: f"{sign}{whole}{'.' + frac if frac else ''}",
    st.sampled_from(["", "-"]),
    digits,
    st.one_of(st.just(""), digits),
).filter(lambda s: len(s) <= 255)
trade_id = st.one_of(
    st.integers(min_value=0, max_value=2**64 - 1).map(str),
    st.integers(min_value=2**64, max_value=2**80).map(str),
    st.text(alphabet="0123456789abcdef-", min_size=1, max_size=64),
    st.text(min_size=1, max_size=40).filter(lambda s: len(s.encode()) <= 255),
)

row = st.fixed_dictionaries(
    {
        "venue": st.sampled_from(pumpwatch.VENUES),
        "symbol": st.text(min_size=1, max_size=30).filter(lambda s: len(s.encode()) <= 255),
        "trade_id": trade_id,
        "price": plain_decimal,
        "qty": plain_decimal,
        "side": st.sampled_from(["buy", "sell"]),
        "ts_ns": st.integers(min_value=-(2**63), max_value=2**63 - 2),
        "recv_ns": st.integers(min_value=-(2**63), max_value=2**63 - 1),
        "flags": st.integers(min_value=0, max_value=255),
    }
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(row, min_size=1, max_size=40))
def test_any_plain_decimal_and_id_round_trip_exactly(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("dec") / "data"
    with pumpwatch.Store(path) as store:
        store.append_trades([pumpwatch.Trade(**r) for r in rows])
        store.append_trades(pa.Table.from_pylist(rows, schema=pumpwatch.TRADE_SCHEMA))
        got = store.query(include_non_trades=True).to_pylist()
    # Query order is exchange time, equal times in log order: the list batch, then the table.
    assert got == sorted([*rows, *rows], key=lambda r: r["ts_ns"])
