"""The real exchange frames in tests/samples/, indexed by venue: shared by the parser, ingest and
simulator tests."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


def _samples_dir() -> Path:
    """tests/samples/ (the repository's copy of shared/samples), or $PUMPWATCH_SAMPLES_DIR."""
    env = os.environ.get("PUMPWATCH_SAMPLES_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    for d in (here / "samples", here.parents[1] / "shared" / "samples"):
        if d.is_dir():
            return d
    return here / "samples"


SAMPLES_DIR = _samples_dir()

# venue id -> sample files holding its frames. Files ending in .control.jsonl hold subscribe
# requests as sent and the acks/welcome frames that came back; the others hold trade frames.
# Three files mix markets (see sample_lines): okx.tardis.jsonl (spot and swap),
# phemex.tardis.jsonl (spot, USDⓈ-M perpetual and COIN-M contracts, which are not a PumpWatch
# venue) and okx.control.jsonl (acks for both). phemex_contract.jsonl is COIN-M only: in no list.
SAMPLE_FILES: dict[str, list[str]] = {
    "binance-spot": ["binance_spot.jsonl", "binance_spot.tardis.jsonl"],
    "binance-usdm": ["binance_usdm.jsonl", "binance_usdm.tardis.jsonl", "binance_usdm.control.jsonl"],
    "bybit-spot": ["bybit_spot.jsonl", "bybit_spot.tardis.jsonl", "bybit_spot.control.jsonl"],
    "bybit-linear": ["bybit_linear.jsonl", "bybit_linear.tardis.jsonl", "bybit_linear.control.jsonl"],
    "okx-spot": ["okx_spot.jsonl", "okx.tardis.jsonl", "okx.control.jsonl"],
    "okx-swap": ["okx_swap.jsonl", "okx.tardis.jsonl", "okx.control.jsonl"],
    "kucoin-spot": ["kucoin_spot.jsonl", "kucoin_spot.tardis.jsonl", "kucoin_spot.control.jsonl"],
    "kucoin-futures": ["kucoin_futures.jsonl", "kucoin_futures.tardis.jsonl"],
    "gate-spot": ["gateio_spot.jsonl", "gateio_spot.tardis.jsonl", "gateio_spot.control.jsonl"],
    "gate-futures": ["gateio_futures.jsonl", "gateio_futures.tardis.jsonl", "gateio_futures.control.jsonl"],
    "phemex-spot": ["phemex_spot.jsonl", "phemex.tardis.jsonl", "phemex.control.jsonl"],
    "phemex-perp": ["phemex.tardis.jsonl", "phemex.control.jsonl"],
}

# Frames of markets PumpWatch does not record: every Phemex venue must refuse them.
FOREIGN_FILES: dict[str, list[str]] = {
    "phemex-spot": ["phemex_contract.jsonl"],
    "phemex-perp": ["phemex_contract.jsonl"],
}


@dataclass(frozen=True)
class SampleLine:
    file: str
    lineno: int  # 1-based line number in the file
    text: str
    kind: str  # "trade" or "control"


def _line_venues(file: str, text: str) -> tuple[str, ...]:
    """The venues a line of a mixed-market file belongs to (all venues listing the file otherwise)."""
    if file == "okx.tardis.jsonl":
        return ("okx-swap",) if '-SWAP"' in text else ("okx-spot",)
    if file == "phemex.tardis.jsonl":
        if '"trades_p"' in text:
            return ("phemex-perp",)
        if '"symbol":"s' in text:
            return ("phemex-spot",)
        return ()  # COIN-M contract
    return tuple(v for v, files in SAMPLE_FILES.items() if file in files)


def read_sample(file: str) -> list[str]:
    return [line for line in (SAMPLES_DIR / file).read_text(encoding="utf-8").splitlines()]


def sample_lines(venue: str) -> list[SampleLine]:
    """Every sample line that belongs to `venue`, in file order."""
    out = []
    for file in SAMPLE_FILES[venue]:
        kind = "control" if file.endswith(".control.jsonl") else "trade"
        for n, text in enumerate(read_sample(file), 1):
            if text.strip() and venue in _line_venues(file, text):
                out.append(SampleLine(file, n, text, kind))
    return out


def foreign_lines(venue: str) -> list[SampleLine]:
    """Sample lines of markets that are not `venue`'s although they look alike (COIN-M for Phemex)."""
    out = []
    for file in FOREIGN_FILES.get(venue, []):
        out += [SampleLine(file, n, t, "foreign") for n, t in enumerate(read_sample(file), 1) if t.strip()]
    for file in SAMPLE_FILES[venue]:
        if file == "phemex.tardis.jsonl":
            out += [
                SampleLine(file, n, t, "foreign")
                for n, t in enumerate(read_sample(file), 1)
                if t.strip() and not _line_venues(file, t)
            ]
    return out


def line_of(file: str, lineno: int) -> str:
    return read_sample(file)[lineno - 1]


# The table of real frames both parsers are held to (tests/data/real_frames.json; its "about" says
# what each field means). rust/core/tests/real_frames.rs reads the same file.
REAL_FRAMES_PATH = Path(__file__).resolve().parent / "data" / "real_frames.json"

# Trade flag names as the table spells them (docs/FORMAT.md "Codes").
FLAG_BITS = {
    "RPI": 1,
    "INSURANCE_FUND": 2,
    "ADL": 4,
    "INTERNAL": 8,
    "BLOCK_TRADE": 16,
    "NON_TRADE": 32,
    "BACKFILL": 64,
    "SNAPSHOT": 128,
    "AGGREGATED": 256,
    "UNKNOWN_TYPE": 512,
}


def real_frames() -> list[dict]:
    """The entries of the table: venue, file, line, optional phemex_spot_scales, trade_count, trades."""
    return json.loads(REAL_FRAMES_PATH.read_text(encoding="utf-8"))["frames"]


def flag_bits(names: str) -> int:
    """`"RPI|NON_TRADE"` -> 33; `""` -> 0."""
    return sum(FLAG_BITS[n] for n in names.split("|") if n)
