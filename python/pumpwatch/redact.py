"""Secrets never shown: the one place that takes DSN passwords and API keys out of text before it
reaches a log line, an error message, /status or an event file.

Two rules, both applied by `redact`:
- any URL's password (`postgresql://user:PASSWORD@host/db`, a proxy's `http://u:PASSWORD@p:3128`)
  and any `password=...` of a key/value DSN becomes `***`, whether or not it was registered;
- every value registered with `register` (the DSN's password, venue API keys and secrets, read
  from pumpwatch.toml or the environment by `pumpwatch.config`) becomes `***` wherever it appears.

`install_log_filter()` puts `redact` in front of every handler of the root logger (message,
arguments and traceback), so no log line can carry one.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import Any
from urllib.parse import unquote, urlsplit

MASK = "***"
#: Registered values shorter than this are not masked (masking "1" would mangle every number);
#: real passwords and API keys are longer.
MIN_SECRET_LEN = 4
#: Environment variables whose values are secrets wherever they show up.
SECRET_ENV = re.compile(r"^PUMPWATCH_(?:.+_API_(?:KEY|SECRET|PASSPHRASE)|PG_DSN|TEST_PG_DSN)$")

_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@'\"]*:)(?P<pw>[^\s@/'\"]+)(?=@)")
_KV_PASSWORD = re.compile(
    r"(?P<head>\b(?:password|passwd|pwd|api_?key|api_?secret|secret|passphrase)\s*[=:]\s*['\"]?)"
    r"(?P<pw>[^\s'\",;&]+)",
    re.IGNORECASE,
)

_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None
_lock = threading.Lock()


def register(value: str | None) -> None:
    """Masks `value` (and its URL-decoded form) in everything `redact` sees from now on."""
    global _pattern
    if not value or len(value) < MIN_SECRET_LEN:
        return
    with _lock:
        new = {value, unquote(value)} - _secrets
        if not new:
            return
        _secrets.update(v for v in new if len(v) >= MIN_SECRET_LEN)
        _pattern = re.compile("|".join(re.escape(s) for s in sorted(_secrets, key=len, reverse=True)))


def register_dsn(dsn: str | None) -> None:
    """The password of a DSN, as a URL (`postgresql://u:pw@h/db`) or key/value (`password=pw`)."""
    if not dsn:
        return
    try:
        pw = urlsplit(dsn).password if "://" in dsn else None
    except ValueError:
        pw = None
    register(pw)
    for m in _KV_PASSWORD.finditer(dsn):
        register(m.group("pw"))
    if pw is None and "://" not in dsn and "=" not in dsn:
        register(dsn)  # not a DSN we can read: the whole of it is the secret


def register_environment(environ: Any = None) -> None:
    """The values of PUMPWATCH_<VENUE>_API_KEY/_SECRET/_PASSPHRASE and the DSN variables."""
    for k, v in (os.environ if environ is None else environ).items():
        if SECRET_ENV.match(k):
            (register_dsn if k.endswith("DSN") else register)(v)


def redact(text: Any) -> Any:
    """`text` with every secret masked; non-strings are returned as they are (see `redact_tree`)."""
    if not isinstance(text, str) or not text:
        return text
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    text = _KV_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    p = _pattern
    return p.sub(MASK, text) if p is not None else text


def redact_tree(obj: Any) -> Any:
    """A JSON-like value (dicts, lists, strings) with every string redacted: for /status and
    event.json."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {redact(k) if isinstance(k, str) else k: redact_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_tree(v) for v in obj]
    return obj


class RedactingFilter(logging.Filter):
    """Formats the message (and the traceback) once and masks it, before any handler writes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER = RedactingFilter()


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """On every handler of `logger` (default: the root logger) and on the logger itself."""
    target = logger or logging.getLogger()
    if _FILTER not in target.filters:
        target.addFilter(_FILTER)
    for h in target.handlers:
        if _FILTER not in h.filters:
            h.addFilter(_FILTER)
