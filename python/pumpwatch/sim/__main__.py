"""`python -m pumpwatch.sim`: serve simulated venues on 127.0.0.1 until stopped.

Prints one JSON line, `{venue: {"ws_url":..., "rest_url":..., "ws_origin":...}}` (with `--tls`,
`wss://`/`https://` URLs and `"ca_file"`: the test CA's PEM, for the recorder's `[tls] ca_file`), once every
venue listens (and writes it to `--urls-out`); then serves until SIGINT/SIGTERM or `--duration`
seconds, injecting the faults of `--scenario` on schedule. On the way out `--truth-out` gets
what every venue sent: the truth a recorder in another process is checked against.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time

from ..net import write_atomic
from .server import Simulator
from .venues import VENUE_IDS

log = logging.getLogger("pumpwatch.sim")

#: The faults a scenario may name: `SimVenue` methods, each taking the listed arguments.
FAULTS = {
    "disconnect_all": 0,
    "stall": 1,
    "drop_frames": 1,
    "duplicate_frames": 1,
    "malformed_frames": 1,
    "burst": 2,
    "announce_shutdown": 1,
    "require_login": 1,
}


def _venues(values: list[str]) -> list[str]:
    names = [n for v in values for n in v.replace(",", " ").split()]
    unknown = [n for n in names if n not in VENUE_IDS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown venue(s) {', '.join(unknown)}; the venues are: {', '.join(VENUE_IDS)}"
        )
    return names


def load_scenario(path: str, venues: list[str]) -> list[tuple[float, str, str, tuple]]:
    """A scenario file: a JSON list of `[seconds after start, venue or "*", fault, [args]]`."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"cannot read the scenario {path}: {e}") from None
    steps = []
    for i, step in enumerate(raw if isinstance(raw, list) else [None]):
        if not (
            isinstance(step, list)
            and len(step) in (3, 4)
            and isinstance(step[0], (int, float))
            and isinstance(step[1], str)
            and step[2] in FAULTS
        ):
            raise argparse.ArgumentTypeError(
                f'scenario {path} step {i}: {step!r} is not [seconds, venue or "*", fault, [args]] '
                f"with a fault among {', '.join(FAULTS)}"
            )
        args = tuple(step[3]) if len(step) == 4 else ()
        if len(args) != FAULTS[step[2]]:
            raise argparse.ArgumentTypeError(f"scenario {path} step {i}: {step[2]} takes {FAULTS[step[2]]} argument(s)")
        if step[1] != "*" and step[1] not in venues:
            raise argparse.ArgumentTypeError(f"scenario {path} step {i}: venue {step[1]!r} is not simulated")
        if step[2] == "require_login" and (not step[1].startswith("okx-") or args != ("trades-all",)):
            # Only OKX has a channel a login could gate (docs/VENUES.md §4.1): `"*"` would stop the scenario.
            raise argparse.ArgumentTypeError(
                f'scenario {path} step {i}: require_login takes an OKX venue and ["trades-all"], not {step[1]!r} {list(args)}'
            )
        steps.append((float(step[0]), step[1], step[2], args))
    return sorted(steps, key=lambda s: s[0])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pumpwatch.sim", description=__doc__.splitlines()[0])
    p.add_argument(
        "--venues",
        nargs="+",
        default=list(VENUE_IDS),
        metavar="VENUE",
        help="venue ids, space- or comma-separated (default: all twelve)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of every venue's trades (default 0)")
    p.add_argument("--rate", type=float, default=20.0, help="trades per second per venue (default 20)")
    p.add_argument(
        "--duration", type=float, default=None, help="stop after this many seconds (default: run until signalled)"
    )
    p.add_argument(
        "--time-scale", type=float, default=1.0, help="multiplies heartbeat timeouts and lifetimes (default 1)"
    )
    p.add_argument("--backlog", type=int, default=0, help="trades per symbol already on each tape at start")
    p.add_argument("--symbols", nargs="+", default=None, metavar="BASE", help="base assets (default BTC ETH SOL DOGE)")
    p.add_argument(
        "--scenario",
        default=None,
        metavar="FILE",
        help='faults on schedule: a JSON list of [seconds, venue or "*", fault, [args]]',
    )
    p.add_argument(
        "--tls",
        action="store_true",
        help="serve wss:// and https:// with a test CA made at start (its PEM is named in the URL line)",
    )
    p.add_argument("--urls-out", default=None, metavar="FILE", help="also write the URL line to FILE once listening")
    p.add_argument(
        "--truth-out",
        default=None,
        metavar="FILE",
        help="on stop, write every trade each venue sent (and withheld) to FILE as JSON",
    )
    args = p.parse_args(argv)
    try:
        args.venues = _venues(args.venues)
        args.scenario = load_scenario(args.scenario, args.venues) if args.scenario else []
    except argparse.ArgumentTypeError as e:
        p.error(str(e))
    return args


def _write_atomically(path: str, text: str) -> None:
    # Read by tests and scripts while it runs; nothing depends on it after a crash.
    write_atomic(path, text, durable=False)


def truth(sim: Simulator) -> dict:
    """What each venue sent on its live stream (every channel), withheld from subscribers (dropped
    frames, stalls) and sent broken, as plain JSON."""
    out = {}
    for vid, v in sim.venues.items():
        channels = v.protocol.channels
        out[vid] = {
            "channel": channels[0],
            "sent": {c: v.sent_trades(channel=c) for c in channels},
            "withheld": {c: v.withheld_trades(channel=c) for c in channels},
            "malformed": len(v.malformed_sent),
        }
    return out


async def _run_scenario(sim: Simulator, steps: list[tuple[float, str, str, tuple]], t0: float) -> None:
    for at, venue, fault, args in steps:
        await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
        for vid in sim.venues if venue == "*" else [venue]:
            log.warning("scenario t=%.1f: %s %s%s", at, vid, fault, args)
            getattr(sim.venues[vid], fault)(*args)


async def serve(args: argparse.Namespace) -> None:
    sim = Simulator(
        args.venues,
        seed=args.seed,
        trades_per_s=args.rate,
        time_scale=args.time_scale,
        backlog=args.backlog,
        symbols=args.symbols,
        tls=args.tls,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await sim.start()
    scenario = None
    try:
        urls = json.dumps(sim.urls())
        if args.urls_out:
            _write_atomically(args.urls_out, urls)
        print(urls, flush=True)
        scenario = asyncio.create_task(_run_scenario(sim, args.scenario, time.monotonic()))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), args.duration)
    finally:
        if scenario is not None:
            scenario.cancel()
        await sim.stop()
        if args.truth_out:
            _write_atomically(args.truth_out, json.dumps(truth(sim), separators=(",", ":")))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )
    asyncio.run(serve(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
