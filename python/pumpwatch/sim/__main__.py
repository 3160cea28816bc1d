"""`python -m pumpwatch.sim`: serve simulated venues on 127.0.0.1 until stopped.

Prints one JSON line, `{venue: {"ws_url":..., "rest_url":..., "ws_origin":...}}`, once every
venue listens; then serves until SIGINT/SIGTERM or `--duration` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys

from .server import Simulator
from .venues import VENUE_IDS


def _venues(values: list[str]) -> list[str]:
    names = [n for v in values for n in v.replace(",", " ").split()]
    unknown = [n for n in names if n not in VENUE_IDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown venue(s) {', '.join(unknown)}; the venues are: {', '.join(VENUE_IDS)}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pumpwatch.sim", description=__doc__.splitlines()[0])
    p.add_argument("--venues", nargs="+", default=list(VENUE_IDS), metavar="VENUE",
                   help="venue ids, space- or comma-separated (default: all twelve)")
    p.add_argument("--seed", type=int, default=0, help="seed of every venue's trades (default 0)")
    p.add_argument("--rate", type=float, default=20.0, help="trades per second per venue (default 20)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: run until signalled)")
    p.add_argument("--time-scale", type=float, default=1.0, help="multiplies heartbeat timeouts and lifetimes (default 1)")
    p.add_argument("--backlog", type=int, default=0, help="trades per symbol already on each tape at start")
    p.add_argument("--symbols", nargs="+", default=None, metavar="BASE", help="base assets (default BTC ETH SOL DOGE)")
    args = p.parse_args(argv)
    try:
        args.venues = _venues(args.venues)
    except argparse.ArgumentTypeError as e:
        p.error(str(e))
    return args


async def serve(args: argparse.Namespace) -> None:
    sim = Simulator(args.venues, seed=args.seed, trades_per_s=args.rate, time_scale=args.time_scale,
                    backlog=args.backlog, symbols=args.symbols)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await sim.start()
    try:
        print(json.dumps(sim.urls()), flush=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), args.duration)
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    asyncio.run(serve(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
