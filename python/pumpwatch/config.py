"""`pumpwatch.toml`: every key optional, with defaults that work. Unknown keys and wrong types are
errors that name the key and say what is expected, never silently ignored."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field
from typing import Any

from ._core import VENUES
from .errors import ConfigError
from .redact import redact, register, register_dsn, register_environment

VENUE_IDS = tuple(VENUES)
#: Ingest paths the recorder can run ([log] engine).
ENGINES = ("rust", "purepy")


@dataclass(frozen=True)
class LogSettings:
    fsync_interval: float = 1.0
    segment_span_s: float = 3600.0
    segment_max_bytes: int = 1 << 30
    ring_bytes: int = 128 << 20
    #: Sealed segments older than this many days are deleted (0 = keep forever).
    retention_days: float = 30.0
    #: The log is kept under this many bytes by deleting its oldest sealed segments (0 = no budget).
    disk_budget_bytes: int = 0
    #: Below this much free disk the recorder warns (it keeps recording).
    low_disk_bytes: int = 2 << 30
    #: The ingest path and log writer: "rust" (pumpwatch._core) or "purepy" (pumpwatch.purepy,
    #: the plain-Python reference path, same log format; for comparison, many times slower).
    engine: str = "rust"
    #: zstd level sealed segments are compressed with, in the background (1..22; 0 = keep plain).
    zstd_level: int = 3


@dataclass(frozen=True)
class ConnectionSettings:
    """Named reconnect settings (nautilus_trader style) shared by every connection."""

    initial_delay_s: float = 0.5
    max_delay_s: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2
    #: No message for this long on a connection that should have data: reconnect. 0 = derive
    #: from the venue's heartbeat rule.
    idle_timeout_s: float = 0.0
    #: Connections per shard of symbols: 2 runs a twin of each, so losing one loses nothing (the
    #: store drops the duplicates). 1 or 2.
    redundancy: int = 1
    #: A venue that cuts connections at a known age (Binance 24 h, KuCoin's token) gets a
    #: replacement at this share of it, made before the old one closes. In (0, 1).
    rotate_at_fraction: float = 0.9
    #: Seconds old and new connection both deliver during a rotation.
    rotation_overlap_s: float = 2.0
    #: A symbol that trades steadily but got nothing for this many times its usual interval (and
    #: at least silent_min_s) while its connection delivers other symbols is silent: it is
    #: resubscribed and listed in /status until it trades again. 0 = no alarm.
    silent_factor: float = 20.0
    silent_min_s: float = 60.0


@dataclass(frozen=True)
class UpbitSettings:
    """The watcher of Upbit's announcement board (pumpwatch.upbit.WatcherSettings has the rest)."""

    enabled: bool = True
    url: str = "https://api-manager.upbit.com"
    market_url: str = "https://api.upbit.com/v1/market/all"
    #: Seconds between polls, all egresses together; 0 = 3 s divided by the number of egresses.
    interval_s: float = 0.0
    per_page: int = 20
    category: str = "trade"
    #: HTTP CONNECT proxies (`http://[user:pass@]host:port`), each its own egress and ETag.
    proxies: tuple[str, ...] = ()

    def watcher_settings(self) -> dict:
        kw: dict = {
            "base_url": self.url,
            "market_url": self.market_url,
            "per_page": self.per_page,
            "category": self.category,
            "proxies": self.proxies,
        }
        if self.interval_s:
            kw["interval_s"] = self.interval_s
        return kw


@dataclass(frozen=True)
class CaptureSettings:
    """Listing capture: the window around t0 (exchange time), the wait for late frames and
    backfills after it, and the analysis thresholds (pumpwatch.analysis)."""

    enabled: bool = True
    before_s: float = 20.0
    after_s: float = 20.0
    #: After `t0 + after_s`, wait this long for late frames and backfills before cutting.
    grace_s: float = 10.0
    #: A move of this many percent from the reference price counts as a move (first mover, lead-lag).
    move_pct: float = 2.0
    #: A rise of at least this many percent, moving up first, is a pump.
    pump_pct: float = 5.0
    chart: bool = True
    #: The chart's zoom panel shows t0 .. t0 + this many seconds (the lead-lag, in milliseconds).
    chart_zoom_s: float = 3.0

    def thresholds(self) -> dict:
        return {"move_pct": self.move_pct, "pump_pct": self.pump_pct}


@dataclass(frozen=True)
class VenueSettings:
    enabled: bool = True
    #: An explicit list skips discovery.
    symbols: tuple[str, ...] = ()
    ws_url: str = ""
    rest_url: str = ""
    #: At most this many symbols (0 = all the venue lists).
    max_symbols: int = 0
    #: Connections per shard on this venue (0 = [connection] redundancy).
    redundancy: int = 0
    #: The venue's API key, for REST calls it refuses without one (Binance USDⓈ-M
    #: historicalTrades); "" = the environment variable PUMPWATCH_<VENUE>_API_KEY
    #: (PUMPWATCH_BINANCE_USDM_API_KEY), else none. A secret: never shown.
    api_key: str = field(default="", repr=False)

    def resolved_api_key(self, venue: str) -> str:
        """The key from the file, else from the venue's environment variable, else ""."""
        return self.api_key or os.environ.get(api_key_env(venue), "")


def api_key_env(venue: str) -> str:
    """`binance-usdm` -> `PUMPWATCH_BINANCE_USDM_API_KEY`."""
    return "PUMPWATCH_" + venue.upper().replace("-", "_") + "_API_KEY"


@dataclass(frozen=True)
class PostgresSinkSettings:
    """`[sink.postgres]`: replicate the recording into PostgreSQL / TimescaleDB (pumpwatch.sink.postgres)."""

    #: `postgresql://user@host:5432/db`; when the key is absent, the environment variable
    #: PUMPWATCH_PG_DSN (keeps the password out of the file).
    dsn: str = field(default="", repr=False)  # holds a password: never in a repr, a log or /status
    #: Who this recorder is in the database (rows say which collectors saw them); "" = host name.
    collector_id: str = ""
    #: The PostgreSQL schema the tables live in.
    schema: str = "pumpwatch"
    #: Records per transaction (one COPY each).
    batch_rows: int = 50_000
    #: How often the sink looks for new records once it has caught up.
    poll_interval_s: float = 0.2
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    #: Use a TimescaleDB hypertable when the server has the extension (else a table partitioned by day).
    use_timescaledb: bool = True


@dataclass(frozen=True)
class SinkSettings:
    """`[sink]`: where the recording is replicated to besides the local log (nowhere by default)."""

    postgres: PostgresSinkSettings | None = None


ENV_PG_DSN = "PUMPWATCH_PG_DSN"


def _sink(v: Any) -> SinkSettings:
    if not isinstance(v, dict):
        raise ConfigError("[sink] must hold one table per sink, e.g. [sink.postgres]")
    known = [f.name for f in dataclasses.fields(SinkSettings)]
    for name in v:
        if name not in known:
            raise ConfigError(f"unknown sink [sink.{name}]; the sinks are: {', '.join(known)}")
    if "postgres" not in v:
        return SinkSettings()
    pg = _section("sink.postgres", PostgresSinkSettings, v["postgres"])
    dsn = pg.dsn or os.environ.get(ENV_PG_DSN, "")
    register_dsn(dsn)
    if not dsn:
        raise ConfigError(
            f"sink.postgres.dsn is not set and neither is the environment variable {ENV_PG_DSN}: set "
            f"one to the database to write to, e.g. postgresql://pumpwatch@db.example:5432/pumpwatch"
        )
    if not (dsn.startswith(("postgresql://", "postgres://")) or "=" in dsn):
        raise ConfigError(
            f"sink.postgres.dsn {redact(dsn)!r} is not a PostgreSQL connection string; write "
            f"postgresql://user@host:5432/database (or key=value pairs)"
        )
    collector_id = pg.collector_id or socket.gethostname()
    if len(collector_id) > 200 or not collector_id.isprintable():
        raise ConfigError(
            f"sink.postgres.collector_id {collector_id!r} must be printable text of at most 200 characters"
        )
    if not re.match(r"^[a-z_][a-z0-9_]{0,62}$", pg.schema):
        raise ConfigError(
            f"sink.postgres.schema {pg.schema!r} must be a plain PostgreSQL name (lower-case letters, digits, _)"
        )
    if pg.batch_rows < 1:
        raise ConfigError(f"sink.postgres.batch_rows must be at least 1, not {pg.batch_rows}")
    if pg.reconnect_max_s < pg.reconnect_initial_s:
        raise ConfigError("sink.postgres.reconnect_max_s must be at least sink.postgres.reconnect_initial_s")
    return SinkSettings(postgres=dataclasses.replace(pg, dsn=dsn, collector_id=collector_id))


@dataclass(frozen=True)
class TlsSettings:
    """`[tls]`: how venues' certificates are verified. Always verified (system CAs); there is no
    setting that turns verification off."""

    #: A PEM file of extra CA certificates to trust besides the system's (a TLS-inspecting proxy's
    #: CA, the simulator's test CA). "" = the system's CAs only.
    ca_file: str = ""


@dataclass(frozen=True)
class Config:
    data_dir: str = "./pumpwatch-data"
    #: The quote asset of the instruments recorded.
    quote: str = "USDT"
    #: How often instrument lists are fetched again (new instruments subscribed, delisted dropped).
    #: Minutes, not an hour: a coin a venue opens between two refreshes is not recorded before.
    discovery_refresh_s: float = 300.0
    #: After a KRW listing trigger every venue's list is fetched at once; venues that do not list
    #: the coin yet are asked again every `listing_relist_fast_s` for `listing_relist_fast_for_s`,
    #: then every `listing_relist_slow_s` until `listing_relist_for_s` after the trigger.
    listing_relist_fast_s: float = 5.0
    listing_relist_fast_for_s: float = 600.0
    listing_relist_slow_s: float = 60.0
    listing_relist_for_s: float = 3600.0
    #: Venues whose ids cannot show a hole (Bybit, KuCoin, Phemex): every this many seconds each
    #: symbol's recent-trades window is merged over REST, so a trade message lost mid-stream (no
    #: disconnect, no silence) is still recorded if the window reaches back to it. Paced with the
    #: backfills at the venue's REST rate, after them. 0 = only after disconnects and silences.
    window_merge_s: float = 60.0
    #: Where /status and /metrics are served (127.0.0.1 only; port 0 picks a free one).
    metrics_address: str = "127.0.0.1:9464"
    upbit: UpbitSettings = field(default_factory=lambda: UpbitSettings())
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    log: LogSettings = field(default_factory=LogSettings)
    connection: ConnectionSettings = field(default_factory=ConnectionSettings)
    venues: dict[str, VenueSettings] = field(default_factory=lambda: {v: VenueSettings() for v in VENUE_IDS})
    sink: SinkSettings = field(default_factory=SinkSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)


def _typed(where: str, value: Any, typ: Any) -> Any:
    """`value` checked against the dataclass field type `typ`, with an error naming `where`."""
    if typ in (float, "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, not {value!r}")
        if value != value or value < 0:
            raise ConfigError(f"{where} must be a number >= 0, not {value!r}")
        return float(value)
    if typ in (int, "int"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{where} must be a whole number >= 0, not {value!r}")
        return value
    if typ in (bool, "bool"):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, not {value!r}")
        return value
    if typ in (str, "str"):
        if not isinstance(value, str):
            shown = "something else" if where.endswith("api_key") else repr(value)  # a secret is never shown
            raise ConfigError(f"{where} must be a string, not {shown}")
        return value
    if typ in (tuple[str, ...], "tuple[str, ...]"):
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f'{where} must be a list of strings like ["BTCUSDT"], not {value!r}')
        return tuple(value)
    raise ConfigError(f"{where}: unsupported setting type {typ}")


def _section(where: str, cls: type, table: Any) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"[{where}] must be a table of settings, not {table!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(f"unknown setting {where}.{unknown[0]}; the settings of [{where}] are: {', '.join(fields)}")
    return cls(**{k: _typed(f"{where}.{k}", v, fields[k].type) for k, v in table.items()})


def register_secrets(cfg: Config) -> None:
    """Every secret the configuration holds, so `pumpwatch.redact` masks it in logs, errors, /status
    and event files: venue API keys (a setting named api_key, api_secret or passphrase, or
    PUMPWATCH_<VENUE>_API_KEY), proxy passwords, the sink's DSN password."""
    register_environment()
    for venue in cfg.venues.values():
        for name in ("api_key", "api_secret", "passphrase"):
            value = getattr(venue, name, "")
            if isinstance(value, str):
                register(value)
    for proxy in cfg.upbit.proxies:
        register_dsn(proxy if "@" in proxy else "")
    if cfg.sink.postgres is not None:
        register_dsn(cfg.sink.postgres.dsn)


def from_dict(raw: dict[str, Any]) -> Config:
    top = {f.name: f for f in dataclasses.fields(Config)}
    unknown = sorted(set(raw) - set(top))
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r}; the top-level settings are: {', '.join(top)}")
    kw: dict[str, Any] = {}
    for k, v in raw.items():
        if k == "log":
            kw[k] = _section("log", LogSettings, v)
        elif k == "connection":
            kw[k] = _section("connection", ConnectionSettings, v)
        elif k == "upbit":
            kw[k] = _section("upbit", UpbitSettings, v)
        elif k == "capture":
            kw[k] = _section("capture", CaptureSettings, v)
        elif k == "sink":
            kw[k] = _sink(v)
        elif k == "tls":
            kw[k] = _section("tls", TlsSettings, v)
        elif k == "venues":
            if not isinstance(v, dict):
                raise ConfigError("[venues] must hold one table per venue, e.g. [venues.binance-spot]")
            venues = {name: VenueSettings() for name in VENUE_IDS}
            for name, table in v.items():
                if name not in VENUE_IDS:
                    raise ConfigError(f"unknown venue [venues.{name}]; the venues are: {', '.join(VENUE_IDS)}")
                venues[name] = _section(f"venues.{name}", VenueSettings, table)
            kw[k] = venues
        else:
            kw[k] = _typed(k, v, top[k].type)
    cfg = Config(**kw)
    register_secrets(cfg)
    c = cfg.capture
    if c.before_s < 0 or c.after_s <= 0 or c.grace_s < 0 or c.before_s + c.after_s > 86_400:
        raise ConfigError("[capture] needs before_s >= 0, after_s > 0, grace_s >= 0 and a window of at most a day")
    if c.move_pct <= 0 or c.pump_pct <= 0:
        raise ConfigError("[capture] move_pct and pump_pct are percentages above 0")
    if not 0 < c.chart_zoom_s <= c.after_s:
        raise ConfigError(
            f"[capture] chart_zoom_s must be above 0 and at most after_s ({c.after_s}), not {c.chart_zoom_s}"
        )
    if cfg.connection.redundancy not in (1, 2):
        raise ConfigError(
            f"connection.redundancy must be 1 or 2 (connections per shard), not {cfg.connection.redundancy}"
        )
    for name, venue in cfg.venues.items():
        if venue.redundancy not in (0, 1, 2):
            raise ConfigError(
                f"venues.{name}.redundancy must be 1 or 2 (or 0 for [connection] redundancy), not {venue.redundancy}"
            )
    if not 0 < cfg.connection.rotate_at_fraction < 1:
        raise ConfigError(
            f"connection.rotate_at_fraction must be between 0 and 1, not {cfg.connection.rotate_at_fraction}"
        )
    if cfg.log.engine not in ENGINES:
        raise ConfigError(f"log.engine must be one of {', '.join(repr(e) for e in ENGINES)}, not {cfg.log.engine!r}")
    if not 0 <= cfg.log.zstd_level <= 22:
        raise ConfigError(
            f"log.zstd_level {cfg.log.zstd_level} is out of range; use 1 (fastest) to 22 (smallest), "
            f"3 by default, or 0 to keep sealed segments uncompressed"
        )
    if cfg.tls.ca_file:
        from .tls import TlsConfigError, client_context

        try:  # refused at start, not at the first connection
            client_context(cfg.tls.ca_file)
        except TlsConfigError as e:
            raise ConfigError(str(e)) from None
    host, _, port = cfg.metrics_address.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1") or not port.isdigit():
        raise ConfigError(f"metrics_address {cfg.metrics_address!r} must be 127.0.0.1:PORT (served on loopback only)")
    return cfg


def load(path: str | os.PathLike[str] | None) -> Config:
    """The configuration in `path` (defaults for everything when `path` is None)."""
    if path is None:
        return Config()
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file {os.fspath(path)} does not exist; pass an existing --config or none"
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{os.fspath(path)} is not valid TOML: {e}") from None
    return from_dict(raw)
