"""The `pumpwatch` command line."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import EXIT_DISK, EXIT_SIGNAL, EXIT_SOFTWARE, describe, exit_code_for
from .redact import install_log_filter

if TYPE_CHECKING:  # the commands import what they use when run: `pumpwatch --help` stays fast
    import pyarrow as pa
    from rich.console import Console
    from rich.table import Table

    from .config import Config


class _VerifyShown:
    """How far `verify` is, on stderr: a bar (bytes done of the total, percent, segments, time
    left) redrawn in place on a terminal, and gone when done; else a plain line at each tenth.
    `told` is the last `(bytes_done, bytes_total, segments_done, segments_total)`."""

    def __init__(self, data_dir: str) -> None:
        from rich.console import Console

        self.data_dir = data_dir
        self.console = Console(stderr=True)
        self.told = (0, 0, 0, 0)
        self.tenths_said = -1
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> _VerifyShown:
        if self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeRemainingColumn,
            )

            header, console = self.header, self.console

            class Bar(Progress):
                def get_renderables(self) -> Iterator[Any]:
                    yield header()  # above the bar: what is verified (the total is known from the first telling)
                    table = self.make_tasks_table(self.tasks)
                    # Room at the right for the "^C" the terminal echoes: a full line would wrap, and
                    # the line cleared when the bar goes would be the wrong one.
                    table.width = max(20, console.width - 3)
                    yield table

            self.bar = Bar(
                BarColumn(bar_width=None),
                TaskProgressColumn(),
                DownloadColumn(),
                TextColumn("{task.fields[segments]}"),
                TimeRemainingColumn(),
                TextColumn("left"),
                console=self.console,
                transient=True,
                expand=True,
            )
            self.bar.__enter__()
            self.task = self.bar.add_task("verify", total=None, segments="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def header(self) -> str:
        return f"verifying {self.told[1] / 1e9:,.2f} GB of log in {self.data_dir}"

    def fraction(self) -> str:
        done, total, segments_done, segments_total = self.told
        percent = 100 * done / total if total else 100
        return f"{percent:.0f}% ({done / 1e9:,.2f} of {total / 1e9:,.2f} GB, {segments_done:,} of {segments_total:,} segments)"

    def __call__(self, done: int, total: int, segments_done: int, segments_total: int) -> None:
        self.told = (done, total, segments_done, segments_total)
        if self.bar is not None:
            self.bar.update(
                self.task, completed=done, total=total, segments=f"{segments_done:,}/{segments_total:,} segments"
            )
            return
        tenths = 10 * done // total if total else 10
        if tenths > self.tenths_said:
            if self.tenths_said < 0:
                print(self.header(), file=sys.stderr, flush=True)
            self.tenths_said = tenths
            print(f"verify: {self.fraction()}", file=sys.stderr, flush=True)


def _cmd_verify(args: argparse.Namespace) -> int:
    from .store import verify

    # One walk of the whole log in Rust, telling how far it is (a bar on a terminal). It only reads:
    # stopped by Ctrl-C, nothing is left half done.
    shown = _VerifyShown(args.data_dir)
    try:
        with shown:
            report = verify(args.data_dir, progress=shown)
            gaps = _gap_summary(args.data_dir) if report["segments"] else {}
    except KeyboardInterrupt:
        print(
            f"pumpwatch verify: interrupted at {shown.fraction()}; nothing was changed (verify only reads "
            f"the log); run it again to check the whole log",
            file=sys.stderr,
        )
        return EXIT_SIGNAL + signal.SIGINT
    if args.json:
        print(json.dumps({**report, "gaps": gaps}, indent=2))
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
        if gaps:
            g = Table(title="gaps in the recording (from the recorder's markers)")
            for col in ("venue", "found", "filled", "unfillable", "unfillable seconds"):
                g.add_column(col, justify="left" if col == "venue" else "right")
            for venue, v in sorted(gaps.items()):
                g.add_row(
                    venue,
                    str(v["gap_found"]),
                    str(v["gap_filled"]),
                    str(v["gap_unfillable"]),
                    f"{sum(u['seconds'] for u in v['unfillable']):,.1f}",
                )
            console.print(g)
            for venue, v in sorted(gaps.items()):
                for u in v["unfillable"][:10]:
                    console.print(
                        f"  {venue} {u['symbol'] or '*'} {u['from']} .. {u['to']} ({u['seconds']} s): {u['why']}"
                    )
                if len(v["unfillable"]) > 10:
                    console.print(f"  {venue}: {len(v['unfillable']) - 10} more unfillable spans (--json lists all)")
        console.print("[green]log is intact[/green]" if report["ok"] else "[red]log has damage (see above)[/red]")
    return 0 if report["ok"] else 1


def _gap_summary(data_dir: str) -> dict:
    """Per venue: gaps found, filled and unfillable, and the unfillable spans, from the markers."""
    from .capture import iso
    from .store import ReadOnlyStore

    out: dict = {}
    with ReadOnlyStore(data_dir) as reader:
        for m in reader.markers().to_pylist():
            if m["kind"] not in ("gap_found", "gap_filled", "gap_unfillable"):
                continue
            v = out.setdefault(
                m["venue"] or "-", {"gap_found": 0, "gap_filled": 0, "gap_unfillable": 0, "unfillable": []}
            )
            v[m["kind"]] += 1
            if m["kind"] == "gap_unfillable":
                v["unfillable"].append(
                    {
                        "symbol": m["symbol"],
                        "from": iso(m["from_ts_ns"]),
                        "to": iso(m["to_ts_ns"]),
                        "seconds": round((m["to_ts_ns"] - m["from_ts_ns"]) / 1e9, 3),
                        "why": m["detail"],
                    }
                )
    return out


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
    install_log_filter()
    final = asyncio.run(run(cfg, simulate=args.simulate, duration=args.duration, seed=args.seed))
    ingest = final["ingest"]
    print(
        f"stopped after {final['uptime_s']:.0f} s: {ingest['frames']:,} frames, {ingest['trades']:,} trades stored, "
        f"{ingest['duplicates']:,} duplicates dropped, {ingest['gaps']:,} id gaps found ({ingest['gaps_filled']:,} "
        f"filled), {sum(v['gaps_unfillable'] for v in final['venues'].values()):,} unfillable, "
        f"{ingest['quarantined']:,} frames quarantined; log sealed in {cfg.data_dir}"
    )
    caps = final.get("captures") or {}
    for e in caps.get("events", []):
        print(f"event {e['event']}: {e['trades']:,} trades, {e['verdict']}; {e['summary']} -> {e['path']}")
    lost = final.get("listings_not_saved") or []
    for name in caps.get("pending", []):
        if name not in lost:
            print(
                f"event {name}: window not complete yet; captured when the recorder runs again (or `pumpwatch capture`)"
            )
    if lost:
        print(
            f"pumpwatch run: saving the captures waiting to {os.path.join(cfg.data_dir, 'events', 'pending.json')} "
            f"failed ({caps.get('pending_unsaved_error') or 'disk error'}); {', '.join(lost)} would not be captured "
            f"at the next start: free space, then `pumpwatch capture TICKER --at T0` for each (the log above names "
            f"the commands)",
            file=sys.stderr,
        )
        return EXIT_DISK
    if final.get("stopped_by"):
        return EXIT_SIGNAL + int(getattr(signal, final["stopped_by"]))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from .status import fetch_status

    st = fetch_status(args.address)
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    import shutil

    from .dashboard import render

    print("\n".join(render(st, shutil.get_terminal_size().columns)))
    return 0


def _cmd_capture(args: argparse.Namespace) -> int:
    from .capture import CaptureRequest, capture, open_source, parse_duration_ns, parse_time_ns
    from .config import CaptureSettings

    req = CaptureRequest(
        args.ticker,
        parse_time_ns(args.at),
        parse_duration_ns(args.before),
        parse_duration_ns(args.after),
        {"manual": True},
    )
    from rich.console import Console

    console = Console(stderr=True)
    with console.status(f"capturing {req.name} from {args.source or args.data_dir} ..."):
        source = open_source(args.source, args.data_dir)
        if args.from_history:
            import asyncio

            from .history import capture_from_history

            cfg = _history_config(args)
            ev = asyncio.run(
                capture_from_history(
                    source,
                    req,
                    args.data_dir,
                    venue_urls=_venue_urls(cfg),
                    venues=_enabled_venues(cfg),
                    ca_file=cfg.tls.ca_file,
                    thresholds=cfg.capture.thresholds(),
                    chart=not args.no_chart,
                    source_name=args.source or "log",
                    api_keys=_api_keys(cfg),
                )
            )
        else:
            ev = capture(
                source,
                req,
                args.data_dir,
                thresholds=CaptureSettings().thresholds(),
                chart=not args.no_chart,
                source_name=args.source or "log",
            )
    if args.json:
        print(json.dumps({"path": ev.path, "event": ev.event, "analysis": ev.analysis}, indent=1, ensure_ascii=False))
        return 0
    print(f"{ev.path}: {ev.event['trades']:,} trades; {ev.event['summary']}; {ev.analysis['across']['verdict']}")
    return 0


def _history_config(args: argparse.Namespace) -> Config:
    from . import config as config_mod

    return config_mod.load(getattr(args, "config", None))


def _venue_urls(cfg: Config) -> dict[str, str]:
    return {v: s.rest_url for v, s in cfg.venues.items() if s.rest_url}


def _api_keys(cfg: Config) -> dict[str, str]:
    return {v: key for v, s in cfg.venues.items() if (key := s.resolved_api_key(v))}


def _enabled_venues(cfg: Config) -> tuple[str, ...]:
    return tuple(v for v, s in cfg.venues.items() if s.enabled)


def _cmd_history(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from .capture import parse_time_ns
    from .history import HistoryRun
    from .upbit import WatcherSettings

    cfg = _history_config(args)
    data_dir = args.data_dir or cfg.data_dir
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )
    kw = cfg.upbit.watcher_settings()
    watcher = WatcherSettings(**kw, ca_file=cfg.tls.ca_file)
    run = HistoryRun(
        data_dir,
        watcher=watcher,
        venue_urls=_venue_urls(cfg),
        venues=_enabled_venues(cfg),
        before_s=cfg.capture.before_s,
        after_s=cfg.capture.after_s,
        replace=args.replace,
        chart=cfg.capture.chart and not args.no_chart,
        thresholds=cfg.capture.thresholds(),
        ca_file=cfg.tls.ca_file,
        progress=not args.json,
        api_keys=_api_keys(cfg),
    )

    def day_or_time(text: str) -> int:  # a bare date is its midnight UTC
        return parse_time_ns(f"{text}T00:00:00Z" if len(text) == 10 and text[4] == "-" else text)

    since = day_or_time(args.since)
    until = day_or_time(args.until) if args.until else None
    result = asyncio.run(run.run(since, until))
    summary = {
        "listings": len(result.listings),
        "built": result.built,
        "already_built": result.skipped_done,
        "kept_live": result.skipped_live,
        "failed": result.failed,
        "upbit_requests": result.upbit_requests,
        "requests": result.requests,
    }
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(
            f"{len(result.listings)} KRW listings since {args.since}: {len(result.built)} events rebuilt, "
            f"{len(result.skipped_done)} rebuilt before, {len(result.skipped_live)} captured live (kept"
            f"{'' if not result.skipped_live else '; --replace rebuilds them'}), {len(result.failed)} failed; "
            f"in {os.path.join(data_dir, 'events')}"
        )
        for f in result.failed:
            print(f"  {f['ticker']}: {f['error']}")
    return 1 if result.failed else 0


def _fits(console: Console, table: Table) -> bool:
    """Whether `table` shows every cell whole at the console's width."""
    return _natural_width(console, table) <= console.width


def _natural_width(console: Console, table: Table) -> int:
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update_width(10_000), table).maximum


def _print_table(console: Console, table: Table, wide: bool) -> None:
    """The table as wide as it needs: with --wide in a narrow terminal the terminal wraps the
    lines, but no cell is cut."""
    if wide and not _fits(console, table):
        console.width = _natural_width(console, table)
        console.print(table, crop=False)
    else:
        console.print(table)


def _figure(x: object, unit: str = "", sign: bool = False) -> str:
    """A figure of analysis.json as stored (exact decimal text, rounded floats), never re-rounded."""
    if x is None:
        return "-"
    text = str(x)
    if sign and isinstance(x, (int, float)) and x > 0:
        text = "+" + text
    return f"{text} {unit}" if unit else text


def _cmd_events(args: argparse.Namespace) -> int:
    from .capture import _load_json, list_events

    events = list_events(args.data_dir)
    rows = []
    for e in events:
        a = _load_json(f"{e['folder']}/analysis.json") or {}
        cov = [v["coverage"] for v in e["venues"].values()]
        rows.append(
            {
                "event": e["folder"].rsplit("/", 1)[-1],
                "t0": e["t0"],
                "delay_ms": e.get("detection_delay_ms"),
                "trades": e["trades"],
                "complete": cov.count("complete"),
                "incomplete": len([c for c in cov if c not in ("complete", "absent")]),
                "absent": cov.count("absent"),
                "verdict": a.get("across", {}).get("verdict", "?"),
                "max_rise": (a.get("across", {}).get("max_rise") or {}).get("pct"),
                "folder": e["folder"],
            }
        )
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not rows:
        console.print(f"no events in {args.data_dir} yet")
        return 0
    t = Table(title=f"events in {args.data_dir}")
    for col in (
        "event",
        "t0",
        "detected after",
        "trades",
        "venues complete",
        "incomplete",
        "absent",
        "verdict",
        "max rise",
    ):
        t.add_column(col, justify="right" if col not in ("event", "t0", "verdict") else "left", no_wrap=True)
    cells = []
    for r in rows:
        cells.append(
            (
                r["event"],
                r["t0"][:23] + "Z",
                "-" if r["delay_ms"] is None else f"{r['delay_ms'] / 1e3:.1f} s",
                f"{r['trades']:,}",
                str(r["complete"]),
                str(r["incomplete"]),
                str(r["absent"]),
                r["verdict"],
                _figure(r["max_rise"], "%", sign=True),
            )
        )
        t.add_row(*cells[-1])
    if args.wide or _fits(console, t):
        _print_table(console, t, args.wide)
        return 0
    # Narrow: one block of label/value lines per event, nothing cut.
    console.print(f"[bold]events in {args.data_dir}[/bold]", soft_wrap=True)
    for c in cells:
        console.print(f"[bold]{c[0]}[/bold]", soft_wrap=True)
        for label, value in (
            ("t0", c[1]),
            ("detected after", c[2]),
            ("trades", c[3]),
            ("venues", f"{c[4]} complete, {c[5]} incomplete, {c[6]} absent"),
            ("verdict", c[7]),
            ("max rise", c[8]),
        ):
            console.print(f"  {label:<15} {value}", soft_wrap=True, highlight=False)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .capture import load_event

    event, analysis = load_event(args.data_dir, args.event)
    if args.json:  # analysis.json as it is on disk, for scripts
        with open(os.path.join(event["folder"], "analysis.json"), encoding="utf-8") as f:
            sys.stdout.write(f.read())
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    across = analysis.get("across", {})
    notice = event.get("notice") or {}
    console.print(
        f"[bold]{event['ticker']}[/bold]  t0 {event['t0']}  "
        + (
            f"detected {event['detection_delay_ms'] / 1e3:.2f} s later  "
            if event.get("detection_delay_ms") is not None
            else ""
        )
        + (f"notice {notice.get('notice_id')}: {notice.get('title')}" if notice.get("title") else "")
    )
    console.print(f"window {event['window']['start']} .. {event['window']['end']}; {event['summary']}")
    verdict = f"verdict: {across.get('verdict')}" + (
        f"; first mover {across['first_mover']['venue']}" if across.get("first_mover") else ""
    )
    labels = (
        "coverage",
        "trades",
        "reference",
        "first after",
        "peak",
        "rise",
        "fall",
        "to peak",
        "quote vol after",
        "buy share",
        "lag",
        "verdict",
    )
    t = Table(title=verdict)
    for col in ("venue",) + labels:
        t.add_column(col, justify="left" if col in ("venue", "coverage", "verdict") else "right", no_wrap=True)
    lags = across.get("lead_lag_ms", {})
    rows = {}
    for venue, cov in event["venues"].items():
        a = analysis.get("venues", {}).get(venue)
        if a is None:
            rows[venue] = (cov["coverage"], f"{cov['trades']:,}", *["-"] * 9, "")
        else:
            rows[venue] = (
                cov["coverage"],
                f"{cov['trades']:,}",
                _figure((a["reference"] or {}).get("price")),
                _figure((a["first_after"] or {}).get("ms_after_t0"), "ms"),
                _figure((a["peak"] or {}).get("price")),
                _figure(a["max_rise_pct"], "%", sign=True),
                _figure(a["max_fall_pct"], "%"),
                _figure(a["time_to_peak_ms"], "ms"),
                _figure(a["after"]["quote_volume"]),
                _figure(a["after"]["buy_share"]),
                _figure(lags.get(venue), "ms", sign=True),
                a["verdict"],
            )
        t.add_row(venue, *rows[venue])
    if args.wide or _fits(console, t):
        _print_table(console, t, args.wide)
    else:  # narrow: one block of label/value lines per venue, nothing cut
        console.print(verdict, soft_wrap=True)
        for venue, cells in rows.items():
            console.print(
                f"[bold]{venue}[/bold]  {cells[0]}, {cells[1]} trades" + (f", {cells[-1]}" if cells[-1] else ""),
                soft_wrap=True,
                highlight=False,
            )
            if venue in analysis.get("venues", {}):
                for label, value in zip(labels[2:-1], cells[2:-1], strict=False):
                    console.print(f"  {label:<16} {value}", soft_wrap=True, highlight=False)
    for venue, cov in event["venues"].items():
        for span in cov.get("lost", []):
            console.print(
                f"  [yellow]{venue}[/yellow] {span['symbol']} lost {span['from']} .. {span['to']} ({span['seconds']} s): {span['reason']}"
            )
    chart = f"{event['folder']}/chart.png"
    console.print(f"chart: {chart}" if event.get("chart") else "no chart in this event")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    from rich.progress import Progress

    from . import faults
    from .capture import NS, CaptureError, _event_table, open_source, parse_time_ns

    start, end = parse_time_ns(args.start), parse_time_ns(args.end)
    if end <= start:
        raise CaptureError(f"--to ({args.end}) must be after --from ({args.start})")
    fmt = args.format or ("csv" if args.output.lower().endswith(".csv") else "parquet")
    source = open_source(args.source, args.data_dir)
    step = 600 * NS  # ten minutes a read: memory stays bounded whatever the span
    tmp = f"{args.output}.tmp-{os.getpid()}"
    writer = None
    rows = 0
    try:
        with Progress(transient=True) as progress:
            task = progress.add_task("exporting", total=end - start)
            t = start
            while t < end:
                chunk = source.query(t, min(t + step, end), venues=args.venue or None, symbols=args.symbol or None)
                table = _event_table(chunk)
                if writer is None:
                    faults.check("export", args.output)
                    writer = (
                        pq.ParquetWriter(tmp, table.schema, compression="zstd")
                        if fmt == "parquet"
                        else pacsv.CSVWriter(tmp, table.schema)
                    )
                writer.write_table(table)
                rows += table.num_rows
                progress.update(task, advance=min(step, end - t), description=f"exporting: {rows:,} trades")
                t += step
        assert writer is not None  # end > start: the loop ran at least once
        writer.close()
        os.replace(tmp, args.output)
    except BaseException:
        if writer is not None:
            writer.close()
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    print(f"{rows:,} trades written to {args.output} ({fmt})")
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    from .capture import parse_time_ns
    from .dataset import load_events
    from .study import summarise

    events = load_events(
        args.data_dir,
        since_ns=parse_time_ns(args.since) if args.since else None,
        until_ns=parse_time_ns(args.until) if args.until else None,
    )
    summary = summarise(events)
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not events.num_rows:
        console.print(
            f"no events in {args.data_dir}"
            + (" in that span" if args.since or args.until else "")
            + "; `pumpwatch events` lists them"
        )
        return 0

    def spread(x: Sequence[float] | None, scale: float = 1.0) -> str:
        return "-" if x is None else f"{x[0] / scale:.1f}..{x[2] / scale:.1f}"

    def mid(x: Sequence[float] | None, scale: float = 1.0) -> str:
        return "-" if x is None else f"{x[1] / scale:.1f}"

    if console.width < 100:  # narrow: a block of lines per venue, nothing cut
        console.print(f"{summary['events']} listing events in {args.data_dir}")
        for venue, v in summary["venues"].items():
            rise, ttp = v["rise_pct_quartiles"], v["time_to_peak_ms_quartiles"]
            lag = "-" if v["lag_ms_median"] is None else f"{v['lag_ms_median']:.0f} ms"
            console.print(
                f"[bold]{venue}[/bold]  listed {v['events']}, complete {v['complete']}, "
                f"pumped {v['pumps']} ({v['pump_share']:.0%})",
                soft_wrap=True,
            )
            console.print(
                f"  rise {mid(rise)} % ({spread(rise)}), to peak {mid(ttp, 1e3)} s ({spread(ttp, 1e3)}), "
                f"first {v['first_mover']}, lag {lag}",
                soft_wrap=True,
            )
        return _study_chart(console, args, events)
    t = Table(title=f"{summary['events']} listing events in {args.data_dir}", box=box.SIMPLE_HEAD)
    for col in ("venue", "listed", "complete", "pumped", "rise %", "rise IQR", "peak s", "peak IQR", "first", "lag ms"):
        t.add_column(col, justify="left" if col == "venue" else "right", no_wrap=True)
    for venue, v in summary["venues"].items():
        rise, ttp = v["rise_pct_quartiles"], v["time_to_peak_ms_quartiles"]
        t.add_row(
            venue,
            str(v["events"]),
            str(v["complete"]),
            f"{v['pumps']} ({v['pump_share']:.0%})",
            mid(rise),
            spread(rise),
            mid(ttp, 1e3),
            spread(ttp, 1e3),
            str(v["first_mover"]),
            "-" if v["lag_ms_median"] is None else f"{v['lag_ms_median']:.0f}",
        )
    console.print(t)
    return _study_chart(console, args, events)


def _study_chart(console: Console, args: argparse.Namespace, events: pa.Table) -> int:
    from .study import average_paths, draw_study

    out = args.output or os.path.join(args.data_dir, "study.png")
    draw_study(out, events, average_paths(args.data_dir, events))
    console.print(f"chart: {out}")
    return 0


def _data_dir_arg(p: argparse.ArgumentParser, *, source: bool = False) -> None:
    p.add_argument("--data-dir", default="./pumpwatch-data", help="data directory (default ./pumpwatch-data)")
    if source:
        p.add_argument("--source", help="read from this data directory or postgresql:// replica instead")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pumpwatch", description=__doc__)
    p.add_argument("--version", action="version", version=f"pumpwatch {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="record every venue's trades (the daemon)")
    r.add_argument("--config", help="pumpwatch.toml (every key optional)")
    r.add_argument("--data-dir", help="data directory (default ./pumpwatch-data, or data_dir in the config)")
    r.add_argument("--duration", type=float, help="stop cleanly after this many seconds")
    r.add_argument(
        "--simulate", action="store_true", help="record the local simulator of all twelve venues (127.0.0.1)"
    )
    r.add_argument("--seed", type=int, default=0, help="simulator seed (with --simulate)")
    r.set_defaults(func=_cmd_run)

    st = sub.add_parser("status", help="show the status of a running recorder")
    st.add_argument(
        "--address", default="127.0.0.1:9464", help="where the recorder serves /status (default 127.0.0.1:9464)"
    )
    st.add_argument("--json", action="store_true", help="print the raw JSON")
    st.set_defaults(func=_cmd_status)

    i = sub.add_parser("ingest", help="store a file of raw venue frames (one per line) through the ingest path")
    i.add_argument("venue", help="venue id, e.g. binance-usdm")
    i.add_argument("file", help="file with one raw WebSocket text frame per line")
    _data_dir_arg(i)
    i.set_defaults(func=_cmd_ingest)

    c = sub.add_parser("capture", help="cut a listing event out of the recording (like the daemon does)")
    c.add_argument("ticker", help="the coin, e.g. 0G")
    c.add_argument("--at", required=True, help="t0: ISO-8601 UTC (2025-09-22T05:00:00Z) or epoch s/ms/ns")
    c.add_argument("--before", default="20s", help="window before t0 (default 20s)")
    c.add_argument("--after", default="20s", help="window after t0 (default 20s)")
    _data_dir_arg(c, source=True)
    c.add_argument("--no-chart", action="store_true", help="skip chart.png")
    c.add_argument("--json", action="store_true", help="print event.json and analysis.json")
    c.add_argument(
        "--from-history",
        action="store_true",
        help="fill the venues the recording does not cover from their REST history",
    )
    c.add_argument("--config", help="pumpwatch.toml (venue URLs, [tls]) for --from-history")
    c.set_defaults(func=_cmd_capture)

    h = sub.add_parser("history", help="rebuild past KRW listings from Upbit's list and the venues' REST history")
    h.add_argument("--since", required=True, help="oldest notice to rebuild (ISO-8601 UTC date/time or epoch)")
    h.add_argument("--until", help="only notices before this")
    h.add_argument("--replace", action="store_true", help="also rebuild events captured live (kept by default)")
    h.add_argument("--config", help="pumpwatch.toml (Upbit and venue URLs, [capture], [tls])")
    h.add_argument("--data-dir", help="data directory (default ./pumpwatch-data, or data_dir in the config)")
    h.add_argument("--no-chart", action="store_true", help="skip chart.png")
    h.add_argument("--json", action="store_true", help="print what was done as JSON (no progress bar)")
    h.set_defaults(func=_cmd_history)

    e = sub.add_parser("events", help="list the captured events")
    _data_dir_arg(e)
    e.add_argument("--json", action="store_true", help="print as JSON")
    e.add_argument("--wide", action="store_true", help="the table even in a narrow terminal (default: by width)")
    e.set_defaults(func=_cmd_events)

    rp = sub.add_parser("report", help="show an event's analysis")
    rp.add_argument("event", help="event folder name (e.g. 0G_20250922T050000Z), its path, or a ticker (the latest)")
    _data_dir_arg(rp)
    rp.add_argument("--json", action="store_true", help="print analysis.json as it is (for scripts)")
    rp.add_argument("--wide", action="store_true", help="the table even in a narrow terminal (default: by width)")
    rp.set_defaults(func=_cmd_report)

    x = sub.add_parser("export", help="write the trades of a time span to Parquet or CSV")
    x.add_argument("--from", dest="start", required=True, help="start (ISO-8601 UTC or epoch), included")
    x.add_argument("--to", dest="end", required=True, help="end, excluded")
    x.add_argument("--venue", action="append", help="only this venue (repeatable)")
    x.add_argument("--symbol", action="append", help="only this symbol (repeatable)")
    x.add_argument("-o", "--output", required=True, help="output file (.parquet or .csv)")
    x.add_argument("--format", choices=("parquet", "csv"), help="default: from the file name")
    _data_dir_arg(x, source=True)
    x.set_defaults(func=_cmd_export)

    sy = sub.add_parser("study", help="what the listing events say together: pumps, rises, who moves first")
    sy.add_argument("--since", help="only events with t0 at or after this (ISO-8601 UTC or epoch)")
    sy.add_argument("--until", help="only events with t0 before this")
    sy.add_argument("-o", "--output", help="the chart (default DATA_DIR/study.png)")
    _data_dir_arg(sy)
    sy.add_argument("--json", action="store_true", help="print the figures as JSON")
    sy.set_defaults(func=_cmd_study)

    v = sub.add_parser("verify", help="check the integrity of a recording and report any damage")
    _data_dir_arg(v)
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(func=_cmd_verify)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    install_log_filter()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return EXIT_SIGNAL + signal.SIGINT
    except Exception as e:
        code = exit_code_for(e)
        if code == EXIT_SOFTWARE:  # a bug: the traceback (secrets taken out) helps whoever fixes it
            import traceback

            from .redact import redact

            print(redact("".join(traceback.format_exception(e))), file=sys.stderr, end="")
            print(
                f"pumpwatch {args.command}: unexpected error ({type(e).__name__}); this is a bug: report it with "
                f"the traceback above",
                file=sys.stderr,
            )
            return code
        print(describe(e, args.command or ""), file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
