"""TLS for the recorder and the simulator: one way to make each side's `ssl.SSLContext`.

The recorder verifies every venue's certificate and host name as Python's default context does
(the system's CA store). `[tls] ca_file` adds one more CA bundle to trust (a corporate proxy's CA,
the simulator's test CA); there is deliberately no setting that turns verification off.

The simulator serves `wss://` and `https://` on 127.0.0.1 with a certificate issued at start by a
throw-away test CA (`trustme`, a test dependency): `TestCA` holds it and writes the CA's PEM to a
file, which is what a recorder's `ca_file` names.
"""

from __future__ import annotations

import functools
import os
import ssl
import tempfile
from typing import Self

from .errors import InvalidInputError

SIM_HOST = "127.0.0.1"


class TlsConfigError(InvalidInputError):
    """A CA file that cannot be used to verify venues."""


def client_context(ca_file: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """The context the recorder connects with: the system's CAs, plus `ca_file` when given.
    Certificates and host names are always verified."""
    ctx = ssl.create_default_context()
    if ca_file:
        path = os.fspath(ca_file)
        try:
            ctx.load_verify_locations(cafile=path)
        except FileNotFoundError:
            raise TlsConfigError(
                f"tls.ca_file {path} does not exist; name a PEM file of CA certificates "
                f"or remove the setting to trust the system's CAs only"
            ) from None
        except (ssl.SSLError, OSError, ValueError) as e:
            raise TlsConfigError(
                f"tls.ca_file {path} is not a readable PEM file of CA certificates ({e}); "
                f"fix the file or remove the setting"
            ) from None
    return ctx


@functools.lru_cache(maxsize=8)
def context_for(ca_file: str = "") -> ssl.SSLContext:
    """`client_context(ca_file)`, made once per file and shared by every connection."""
    return client_context(ca_file or None)


def describe_tls_error(e: BaseException, url: str) -> str | None:
    """A sentence naming the host and why its certificate was refused, when `e` is a TLS
    verification failure; None otherwise (the caller words other failures itself)."""
    cause: BaseException | None = e
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = f"{parts.hostname}:{parts.port}" if parts.port else (parts.hostname or url)
    reason = getattr(cause, "verify_message", None) or getattr(cause, "reason", None) or str(cause)
    if isinstance(cause, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate of {host} not trusted ({reason}); refusing to connect. If this host is meant to "
            f"be trusted, add its CA to [tls] ca_file"
        )
    return f"TLS handshake with {host} failed ({reason})"


class TestCA:
    """A test certificate authority made now, and a server certificate for 127.0.0.1 (and
    `localhost`) it issued. `ca_file` is the CA's PEM on disk (removed by `cleanup`)."""

    __test__ = False  # not a pytest test class

    def __init__(self, hosts: tuple[str, ...] = (SIM_HOST, "localhost")) -> None:
        try:
            import trustme
        except ImportError:
            raise RuntimeError("the simulator's TLS needs the test dependency trustme: pip install trustme") from None
        self._ca = trustme.CA(organization_name="PumpWatch simulator test CA")
        self._cert = self._ca.issue_cert(*hosts)
        fd, path = tempfile.mkstemp(prefix="pumpwatch-sim-ca-", suffix=".pem")
        with os.fdopen(fd, "wb") as f:
            f.write(self._ca.cert_pem.bytes())
        self.ca_file = path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._cert.configure_cert(ctx)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A context that trusts this CA (what a recorder with `ca_file` set gets)."""
        return client_context(self.ca_file)

    def cleanup(self) -> None:
        try:
            os.unlink(self.ca_file)
        except FileNotFoundError:
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


__all__ = ["TestCA", "TlsConfigError", "client_context", "context_for", "describe_tls_error"]
