"""`pumpwatch.parse`: the Rust venue parsers as a public function, storing nothing."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import _core


@dataclass(slots=True)
class ParseResult:
    """What one frame holds: trades (records that consume an id without being a trade, such as
    Binance USDⓈ-M `X=NA`, are included with the `NON_TRADE` flag), the id range each trade
    covers on venues whose ids form a per-symbol sequence (else None), or a control message
    `(kind, detail)` with kind one of `subscribe_ack`, `pong`, `welcome`, `shutdown_notice`,
    `error`, `other`. `rejected`: why each trade left out of a multi-trade frame did not parse
    (the frame's other trades are in `trades`)."""

    trades: list[_core.Trade] = field(default_factory=list)
    sequences: list[tuple[int, int] | None] = field(default_factory=list)
    control: tuple[str, str] | None = None
    rejected: list[str] = field(default_factory=list)


def parse(
    venue: str,
    frame: bytes | str,
    *,
    recv_ns: int = 0,
    phemex_spot_scales: dict[str, tuple[int, int]] | None = None,
) -> ParseResult:
    """Parses one WebSocket frame of `venue` with the hot-path parser. Raises
    `pumpwatch.FrameError` (a ValueError) when the frame is not a frame of that venue."""
    trades, sequences, control, rejected = _core.parse_frame(venue, frame, recv_ns, phemex_spot_scales)
    return ParseResult(trades, sequences, control, rejected)
