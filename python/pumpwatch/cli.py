"""The `pumpwatch` command line."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__


def _cmd_verify(args: argparse.Namespace) -> int:
    from .store import verify

    report = verify(args.data_dir)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        console = Console()
        t = Table(title=f"pumpwatch verify {args.data_dir}")
        t.add_column("what")
        t.add_column("count", justify="right")
        for key in ("segments", "records", "trades", "markers", "quarantined", "bytes"):
            t.add_row(key, f"{report[key]:,}")
        console.print(t)
        for kind in ("headers", "damaged", "torn_tail"):
            for d in report[kind]:
                console.print(
                    f"[red]{kind}[/red] {d['segment']} at byte {d['offset']:,} ({d['length']:,} bytes): {d['reason']}"
                )
        console.print("[green]log is intact[/green]" if report["ok"] else "[red]log has damage (see above)[/red]")
    return 0 if report["ok"] else 1


def _cmd_ingest(args: argparse.Namespace) -> int:
    """Replays a file of raw frames (one WebSocket text frame per line, as recorded) through the
    same ingest path the daemon uses: parse, drop duplicates, check id sequences, store."""
    import time
    from collections import Counter

    from rich.console import Console

    from . import VENUES
    from .errors import InvalidInputError
    from .store import Store

    console = Console(stderr=True)
    venue = args.venue
    if venue not in VENUES:
        raise InvalidInputError(f"unknown venue {venue!r}; the venues are: {', '.join(VENUES)}")
    events: Counter[str] = Counter()
    stored = frames = 0
    with Store(args.data_dir) as store, open(args.file, "rb") as f:
        batch: list[bytes] = []

        def flush() -> None:
            nonlocal stored
            n, evs = store.ingest_many(venue, batch, time.time_ns())
            stored += n
            for e in evs or []:
                events[e[0] if e[0] != "control" else f"control:{e[2]}"] += 1
            batch.clear()

        for line in f:
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            batch.append(line)
            frames += 1
            if len(batch) >= 10_000:
                flush()
        if batch:
            flush()
        stats = store.ingest_stats()
    console.print(
        f"{args.file}: {frames:,} frames, {stored:,} trades stored, {stats['duplicates']:,} duplicates, "
        f"{stats['gaps']:,} id gaps, {stats['quarantined']:,} frames quarantined (kept raw) -> {args.data_dir}"
    )
    for name, n in sorted(events.items()):
        console.print(f"  {name}: {n:,}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import asyncio
    import dataclasses
    import logging

    from . import config as config_mod
    from .daemon import run

    cfg = config_mod.load(args.config)
    if args.data_dir:
        cfg = dataclasses.replace(cfg, data_dir=args.data_dir)
    if args.simulate and args.config is None:
        cfg = dataclasses.replace(cfg, metrics_address="127.0.0.1:0")
    if args.duration is not None and args.duration <= 0:
        raise config_mod.ConfigError(f"--duration must be a positive number of seconds, not {args.duration}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    final = asyncio.run(run(cfg, simulate=args.simulate, duration=args.duration, seed=args.seed))
    ingest = final["ingest"]
    print(
        f"stopped after {final['uptime_s']:.0f} s: {ingest['frames']:,} frames, {ingest['trades']:,} trades stored, "
        f"{ingest['duplicates']:,} duplicates dropped, {ingest['gaps']:,} id gaps found ({ingest['gaps_filled']:,} "
        f"filled), {sum(v['gaps_unfillable'] for v in final['venues'].values()):,} unfillable, "
        f"{ingest['quarantined']:,} frames quarantined; log sealed in {cfg.data_dir}"
    )
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from .status import fetch_status

    st = fetch_status(args.address)
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    from rich.console import Console

    from .daemon import _dashboard

    Console().print(_dashboard(st))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pumpwatch", description=__doc__)
    p.add_argument("--version", action="version", version=f"pumpwatch {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="record every venue's trades (the daemon)")
    r.add_argument("--config", help="pumpwatch.toml (every key optional)")
    r.add_argument("--data-dir", help="data directory (default ./pumpwatch-data, or data_dir in the config)")
    r.add_argument("--duration", type=float, help="stop cleanly after this many seconds")
    r.add_argument("--simulate", action="store_true", help="record the local simulator of all twelve venues (127.0.0.1)")
    r.add_argument("--seed", type=int, default=0, help="simulator seed (with --simulate)")
    r.set_defaults(func=_cmd_run)

    st = sub.add_parser("status", help="show the status of a running recorder")
    st.add_argument("--address", default="127.0.0.1:9464", help="where the recorder serves /status (default 127.0.0.1:9464)")
    st.add_argument("--json", action="store_true", help="print the raw JSON")
    st.set_defaults(func=_cmd_status)

    i = sub.add_parser("ingest", help="store a file of raw venue frames (one per line) through the ingest path")
    i.add_argument("venue", help="venue id, e.g. binance-usdm")
    i.add_argument("file", help="file with one raw WebSocket text frame per line")
    i.add_argument("--data-dir", default="./pumpwatch-data", help="data directory (default ./pumpwatch-data)")
    i.set_defaults(func=_cmd_ingest)

    v = sub.add_parser("verify", help="check the integrity of a recording and report any damage")
    v.add_argument("--data-dir", default="./pumpwatch-data", help="data directory (default ./pumpwatch-data)")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(func=_cmd_verify)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except Exception as e:  # noqa: BLE001 - a CLI reports what went wrong in one line
        from .errors import StoreError

        if isinstance(e, (StoreError, OSError, ValueError)):
            print(f"pumpwatch: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
