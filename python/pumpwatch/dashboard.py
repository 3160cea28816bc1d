"""The live dashboard of `pumpwatch run` in a terminal, and `pumpwatch status`.

One frame is a list of plain lines, each at most the terminal's width (nothing wraps) and, with
the log pane, exactly as many as fit the terminal's height: all twelve venues fit 80x24. A venue's
state is compact (`rec 5/1` = recording 5 symbols on 1 connection; a legend says so), counts are
abbreviated, the `why` column appears only while some venue is not recording, and wider terminals
get more columns. Log records go to a bounded pane beneath the table, never between redraws
(writes beside a live region are what stacked copies of the table on the screen)."""

from __future__ import annotations

import asyncio
import collections
import logging
import sys
from collections.abc import Callable, Iterable

from .redact import install_log_filter
from .store import disk_line

#: The first word of a venue's state (collector `_state`) and its short form on the dashboard.
SHORT_STATE = {
    "recording": "rec",
    "degraded": "deg",
    "down": "down",
    "error": "err",
    "idle": "idle",
    "starting": "start",
}
LEGEND = "rec S/C: S symbols on C connections  deg U/C: U of C up  k=10³ M=10⁶ G=10⁹"
#: Lines of log beneath the table when the terminal has room (the pane never pushes the table off).
LOG_PANE_MAX = 12
LOG_PANE_MIN = 2


def abbrev(n: float | None) -> str:
    """A count in at most 5 characters: 9,999 then 15.2k, 152k, 1.52M, ..."""
    if n is None:
        return "-"
    n = int(n)
    if abs(n) < 10_000:
        return f"{n:,}"
    for div, unit in ((1e3, "k"), (1e6, "M"), (1e9, "G"), (1e12, "T")):
        x = n / div
        if abs(x) < 10:
            return f"{x:.2f}{unit}"
        if abs(x) < 100:
            return f"{x:.1f}{unit}"
        if abs(x) < 1000:
            return f"{x:.0f}{unit}"
    return f"{n:.2e}"


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for div, unit in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if n >= div:
            return f"{n / div:,.1f} {unit}"
    return f"{n} B"


def _age(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 100:
        return f"{s:.1f}s"
    if s < 6000:
        return f"{s / 60:.0f}m"
    return f"{s / 3600:.0f}h"


def compact_state(v: dict, phase: str = "running") -> tuple[str, str]:
    """(short state, why) of a venue's /status entry; `why` is empty while it records."""
    if phase != "running":
        return ("stopped" if phase == "stopped" else "stopping"), ""
    state = v.get("state", "")
    head, _, detail = state.partition(": ")
    word = head.split(" ", 1)[0]
    short = SHORT_STATE.get(word, word[:7])
    conns = v.get("connections", 0)
    up = v.get("connections_up", conns)
    if word == "recording":
        symbols = sum(c.get("symbols", 0) for c in v.get("connection_states", []))
        return f"rec {symbols}/{conns}", ""
    if word == "degraded":
        return f"deg {up}/{conns}", state[len("degraded: ") :]
    return short, detail or ("" if word in ("starting", "idle") else state)


# (header, cell(venue status) -> str, right-aligned, priority: lower = shown first when narrow)
_COLUMNS: list[tuple[str, Callable[[dict], str], bool, int]] = [
    ("trades", lambda v: abbrev(v["trades"]), True, 0),
    ("last", lambda v: _age(v.get("last_message_age_s")), True, 0),
    ("gaps", lambda v: abbrev(v["gaps_found"]), True, 1),
    ("unfill", lambda v: abbrev(v["gaps_unfillable"]), True, 1),
    ("quar", lambda v: abbrev(v["quarantined"]), True, 2),
    ("reconn", lambda v: abbrev(v["reconnects"]), True, 2),
    ("frames", lambda v: abbrev(v["frames"]), True, 3),
    ("filled", lambda v: abbrev(v["gaps_filled"]), True, 4),
    ("backfill", lambda v: abbrev(v.get("backfilled")), True, 5),
    ("up/conn", lambda v: f"{v.get('connections_up', '-')}/{v.get('connections', '-')}", True, 6),
    ("rotat", lambda v: abbrev(v.get("rotations")), True, 7),
    ("rest err", lambda v: abbrev(v.get("rest_errors")), True, 8),
    ("silent", lambda v: abbrev(len(v.get("silent_symbols") or [])), True, 9),
]
GAP = 2
WHY_MIN = 24


def _fit(parts: list[str], width: int) -> str:
    """Parts joined by two spaces, or by one when that is what fits (figures stay whole)."""
    line = "  ".join(parts)
    return line if len(line) <= width else " ".join(parts)


def _crop(s: str, width: int) -> str:
    return s if len(s) <= width else (s[: max(width - 1, 0)] + "…" if width > 0 else "")


def _title(status: dict, phase: str) -> list[str]:
    what = {
        "running": f"up {status.get('uptime_s', 0):.0f} s",
        "stopping": "stopping…",
        "stopped": f"stopped after {status.get('uptime_s', 0):.0f} s",
    }[phase]
    parts = [
        f"PumpWatch  {what}",
        f"log {_bytes(status.get('log_bytes'))}",
        f"disk free {_bytes(status.get('disk_free_bytes'))}",
    ]
    if status.get("address"):
        parts.append(f"http://{status['address']}/status")
    return parts


def _extra_lines(status: dict) -> list[str | list[str]]:
    """Totals, sink, Upbit watcher and events: one line each (a list: parts to fit)."""
    ing = status.get("ingest", {})
    venues = status.get("venues", {})
    unfill = sum(v.get("gaps_unfillable", 0) for v in venues.values())
    out: list[str | list[str]] = [
        [
            "total",
            f"frames {abbrev(ing.get('frames'))}",
            f"trades {abbrev(ing.get('trades'))}",
            f"dups {abbrev(ing.get('duplicates'))}",
            f"gaps {abbrev(ing.get('gaps'))} ({abbrev(ing.get('gaps_filled'))} filled, {abbrev(unfill)} unfill)",
            f"quar {abbrev(ing.get('quarantined'))}",
        ]
    ]
    up = status.get("upbit", {}).get("metrics")
    if up:
        p99 = up.get("response_ms_p99")
        out.append(
            [
                "upbit",
                f"polls {abbrev(up.get('polls', 0))}",
                f"errors {abbrev(up.get('errors', 0))}",
                f"p99 {'-' if p99 is None else f'{p99:.0f} ms'}",
                f"listings {abbrev(up.get('triggers', 0))}",
            ]
            + ([f"backoff: {up['last_backoff_reason']}"] if up.get("last_backoff_reason") else [])
        )
    pg = status.get("sink", {}).get("postgres")
    if pg:
        out.append(
            f"sink  {pg['state']}  {abbrev(pg['records_behind'])} records / {pg['seconds_behind']:.1f} s behind  "
            f"{abbrev(pg['trades_written'])} written" + (f"  error: {pg['last_error']}" if pg.get("last_error") else "")
        )
    caps = status.get("captures")
    if caps:
        done = caps.get("events", [])
        out.append(
            f"events  {len(done)} written"
            + (
                f" (latest {done[-1]['event']}: {abbrev(done[-1]['trades'])} trades, {done[-1]['verdict']})"
                if done
                else ""
            )
            + (f"  waiting: {', '.join(caps['pending'])}" if caps.get("pending") else "")
        )
        # A listing the disk refused: named until it is written (issue 14).
        for u in caps.get("unwritten", []):
            out.insert(
                1, f"event {u['event']} NOT WRITTEN since {u['since'][11:19]} ({u['attempts']} tries): {u['error']}"
            )
        if caps.get("pending_unsaved_since"):
            out.insert(
                1,
                f"events  waiting captures not saved since {caps['pending_unsaved_since'][11:19]}: {caps['pending_unsaved_error']}",
            )
    for name, v in venues.items():  # symbols a connection budget leaves out (Phemex): named
        if v.get("not_recorded"):
            out.append(
                f"{name}  {v['not_recorded']} not recorded (connection budget): "
                + ", ".join(v.get("not_recorded_symbols") or [])
            )
        if v.get("channel_fallback"):  # recording another trade channel than the usual (OKX without login)
            out.append(f"{name}  {v['channel_fallback']}")
    trouble = disk_line(status.get("disk"))
    if trouble:  # disk full or failing: right under the totals, where it cannot be missed
        out.insert(1, f"disk  {trouble}")
    for w in status.get("warnings", []):
        out.append(f"warn  {w}")
    return out


def render(
    status: dict, width: int, height: int | None = None, *, logs: Iterable[str] = (), phase: str = "running"
) -> list[str]:
    """The dashboard's lines for a terminal of `width` x `height` (None: as tall as it needs)."""
    width = max(width, 20)
    venues = status.get("venues", {})
    states = {name: compact_state(v, phase) for name, v in venues.items()}
    name_w = max([len("venue")] + [len(n) for n in venues])
    state_w = max([len("state")] + [len(s) for s, _ in states.values()])
    cells = {h: [fn(v) for v in venues.values()] for h, fn, _, _ in _COLUMNS}
    widths = {h: max([len(h)] + [len(c) for c in cells[h]]) for h, _, _, _ in _COLUMNS}
    show_why = any(why for _, why in states.values())
    fixed = name_w + GAP + state_w
    budget = width - fixed - ((GAP + WHY_MIN) if show_why else 0)
    chosen: list[str] = []
    for h, _, _, _prio in sorted(_COLUMNS, key=lambda c: c[3]):
        if budget >= GAP + widths[h]:
            chosen.append(h)
            budget -= GAP + widths[h]
        else:
            break  # by priority: a wider terminal adds columns in the same order
    order = [h for h, _, _, _ in _COLUMNS if h in chosen]

    def row(name: str, state: str, cols: list[str], why: str) -> str:
        s = f"{name:<{name_w}}{' ' * GAP}{state:<{state_w}}" + "".join(
            f"{' ' * GAP}{c:>{widths[h]}}" for h, c in zip(order, cols, strict=False)
        )
        if show_why:
            s += " " * GAP + why
        return _crop(s.rstrip(), width)

    lines = [_crop(_fit(_title(status, phase), width), width), row("venue", "state", order, "why" if show_why else "")]
    for i, (name, _v) in enumerate(venues.items()):
        lines.append(row(name, states[name][0], [cells[h][i] for h in order], states[name][1]))
    extra = [_crop(x if isinstance(x, str) else _fit(x, width), width) for x in _extra_lines(status)]
    legend = _crop(LEGEND, width)
    if height is None:
        return lines + extra + [legend]
    room = height - 1  # the last line stays free: the cursor rests there and nothing scrolls
    lines += extra[: max(room - len(lines) - 1, 1)]
    if len(lines) < room:
        lines.append(legend)
    pane = room - len(lines) - 1  # one line for the pane's rule
    logs = list(logs)
    if phase != "stopped" and pane >= LOG_PANE_MIN and logs:
        lines.append(_crop("── log " + "─" * width, width))
        lines += [_crop(x, width) for x in logs[-min(pane, LOG_PANE_MAX) :]]
    return lines[:room]


#: Warnings and errors of the run repeated on the normal screen when the dashboard ends (the
#: pane lived on the alternate screen); the journal or a log file keeps them all.
WARNINGS_KEPT = 20


class _PaneHandler(logging.Handler):
    """Keeps the newest log lines for the pane under the table, and the last warnings."""

    def __init__(self, lines: collections.deque) -> None:
        super().__init__()
        self.lines = lines
        self.warnings: collections.deque[str] = collections.deque(maxlen=WARNINGS_KEPT)
        self.warning_count = 0
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            self.lines.extend(text.splitlines())
            if record.levelno >= logging.WARNING:
                self.warning_count += 1
                self.warnings.append(text)
        except Exception:
            self.handleError(record)


def _is_terminal_handler(h: logging.Handler) -> bool:
    stream = getattr(h, "stream", None)
    return (
        isinstance(h, logging.StreamHandler)
        and not isinstance(h, logging.FileHandler)
        and stream in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
    )


async def live(
    status_fn: Callable[[], dict], stop: asyncio.Event, done: asyncio.Event | None = None, refresh_s: float = 0.5
) -> None:
    """Redraws the dashboard in place until `done` (or `stop` when no `done` is given); while the
    recorder stops it says so, and the last frame says stopped."""
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    console = Console(stderr=True)  # the daemon chose the dashboard because stderr is a terminal
    pane: collections.deque[str] = collections.deque(maxlen=LOG_PANE_MAX)
    root = logging.getLogger()
    moved = [h for h in root.handlers if _is_terminal_handler(h)]
    handler = _PaneHandler(pane)
    for h in moved:
        root.removeHandler(h)
    root.addHandler(handler)
    install_log_filter()  # the pane shows log lines too: no secret in them (pumpwatch.redact)

    def frame(phase: str) -> Text:
        lines = render(status_fn(), console.size.width, console.size.height, logs=pane, phase=phase)
        text = Text("\n".join(lines), no_wrap=True, overflow="crop")
        text.highlight_regex(r"(?m)^\S+\s+(rec \d+/\d+)", "green")
        text.highlight_regex(r"(?m)^\S+\s+((deg|stopping) [\d/]*)", "yellow")
        text.highlight_regex(r"(?m)^\S+\s+(down|err)\b", "bold red")
        return text

    try:
        # The terminal's alternate screen, like top: a resize or a stray write cannot leave stale
        # copies of the frame in the scrollback. The last frame is printed on the normal screen.
        with Live(frame("running"), console=console, auto_refresh=False, vertical_overflow="crop", screen=True) as view:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), refresh_s)
                except TimeoutError:
                    pass
                view.update(frame("stopping" if stop.is_set() else "running"), refresh=True)
            while done is not None and not done.is_set():
                try:
                    await asyncio.wait_for(done.wait(), refresh_s)
                except TimeoutError:
                    pass
                view.update(frame("stopping"), refresh=True)
        if handler.warnings:
            older = handler.warning_count - len(handler.warnings)
            console.print(
                f"warnings during the run: {handler.warning_count}"
                + (f" (the last {len(handler.warnings)})" if older else ""),
                soft_wrap=True,
                highlight=False,
            )
            for text in handler.warnings:
                console.print(text, soft_wrap=True, highlight=False, markup=False)
        console.print(frame("stopped"))
    finally:
        root.removeHandler(handler)
        for h in moved:
            root.addHandler(h)
