"""`python -m pumpwatch.sim.feeder`: a load feeder that plays Binance USDⓈ-M at a fixed rate.

One WebSocket endpoint on 127.0.0.1 that takes the recorder's SUBSCRIBE and then sends single-trade
`@trade` frames of one symbol at `--rate` frames per second for `--seconds`, with consecutive ids
(so a loss is countable) and the send time as the exchange time (so a recorder's lag is
measurable: its receive time minus the trade's). It answers pings; it needs no `websockets`
on its hot path: server frames are unmasked, so a chunk of thousands of frames is made by one
`%` format of a pre-encoded template (rendered from the simulator's own template of the frame,
sim/wire/binance-usdm.json) and written in one call. When the reader falls behind, TCP
pushes back and the feeder stops producing until its write buffer drains (it never drops and
never buffers without bound); what it could not send on time is reported as `behind`.

It prints one JSON line with its URL when listening, and on exit one JSON line of what it sent:
`{"first_id", "last_id", "sent", "seconds", "behind_max"}`. With `--tls` it serves `wss://` with a
certificate from a test CA made at start (trustme) whose PEM the first line names (`ca_file`), so
the recorder's production path, TLS verified, is what gets measured.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import struct
import sys
import time
from typing import cast

from .wire import template

SYMBOL = "BTCUSDT"
FIRST_ID = 5_000_000_000  # ten digits for the whole run: every frame has the same length
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TICK_S = 0.005
#: Bytes waiting in the feeder's write buffer past which it stops producing (the reader is behind).
HIGH_WATER = 4 << 20
#: A Binance USDⓈ-M @trade frame on the combined stream, as the venue sends it (§2.2).
WIRE = template("binance-usdm", "@trade combined")
PRICES = ("64998.4", "64998.3", "65002.7", "65003.1")
QTYS = ("0.00377", "0.01311", "0.00600", "0.03976")


def _ws_header(n: int) -> bytes:
    if n < 126:
        return bytes((0x81, n))
    if n < 1 << 16:
        return bytes((0x81, 126)) + struct.pack("!H", n)
    return bytes((0x81, 127)) + struct.pack("!Q", n)


def frame_text(ts_ms: int, variant: int) -> str:
    """One @trade frame's text with a `%d` where the trade id goes (the other values have no `%`)."""
    return WIRE.render(
        stream=SYMBOL.lower() + "@trade",
        E=ts_ms,
        T=ts_ms,
        s=SYMBOL,
        t="%d",
        p=PRICES[variant % 4],
        q=QTYS[variant % 4],
        X="MARKET",
        m=bool(variant % 2),
    )


def chunk_template(ts_ms: int, k: int, variant: int) -> bytes:
    """`k` whole WebSocket frames with one `%d` each for the trade id."""
    text = frame_text(ts_ms, variant)
    frame_len = len(text % FIRST_ID)
    one = _ws_header(frame_len) + text.encode()
    return one * k


class FeedProtocol(asyncio.Protocol):
    transport: asyncio.Transport  # set by connection_made, before anything else is called

    def __init__(self, feeder: Feeder) -> None:
        self.feeder = feeder
        self.buf = b""
        self.upgraded = False
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # create_server gives stream transports

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded:
            head, sep, rest = self.buf.partition(b"\r\n\r\n")
            if not sep:
                return
            key = b""
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"sec-websocket-key":
                    key = value.strip()
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            self.upgraded = True
            self.buf = rest
        while len(self.buf) >= 2:  # client frames: always masked
            b0, b1 = self.buf[0], self.buf[1]
            n, pos = b1 & 0x7F, 2
            if n == 126:
                if len(self.buf) < 4:
                    return
                n, pos = struct.unpack("!H", self.buf[2:4])[0], 4
            elif n == 127:
                if len(self.buf) < 10:
                    return
                n, pos = struct.unpack("!Q", self.buf[2:10])[0], 10
            if len(self.buf) < pos + 4 + n:
                return
            mask = self.buf[pos : pos + 4]
            payload = bytes(c ^ mask[i % 4] for i, c in enumerate(self.buf[pos + 4 : pos + 4 + n]))
            self.buf = self.buf[pos + 4 + n :]
            opcode = b0 & 0x0F
            if opcode == 0x9:  # ping: pong with the same payload
                self.transport.write(bytes((0x8A, len(payload))) + payload)
            elif opcode == 0x8:
                self.transport.write(bytes((0x88, 0)))
                self.transport.close()
                return
            elif opcode == 0x1:
                try:
                    msg = json.loads(payload)
                except ValueError:
                    continue
                if isinstance(msg, dict) and msg.get("method") == "SUBSCRIBE":
                    ack = template("binance-usdm", "ack").render(id=msg.get("id")).encode()
                    self.transport.write(_ws_header(len(ack)) + ack)
                    self.feeder.subscribed(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.feeder.lost(self)


def _unsent(transport: asyncio.Transport) -> int:
    """Bytes written and not yet handed to the kernel. Over TLS the transport reports only what
    waits to be encrypted; the encrypted bytes wait in the TCP transport below it (asyncio keeps it
    private), and a feeder that exited with them there would look like a recorder's loss."""
    raw = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None)
    return transport.get_write_buffer_size() + (raw.get_write_buffer_size() if raw is not None else 0)


class Feeder:
    def __init__(self, rate: float, seconds: float, chunk: int) -> None:
        self.rate = rate
        self.seconds = seconds
        self.chunk = chunk
        self.next_id = FIRST_ID
        self.behind_max = 0
        self.started: float | None = None
        self.done = asyncio.Event()
        self.client: FeedProtocol | None = None

    def subscribed(self, proto: FeedProtocol) -> None:
        if self.client is None:
            self.client = proto
            asyncio.get_running_loop().create_task(self.pump())

    def lost(self, proto: FeedProtocol) -> None:
        if proto is self.client:
            self.done.set()

    async def pump(self) -> None:
        proto = self.client
        assert proto is not None, "pump starts when a client subscribed"
        t0 = self.started = time.monotonic()
        total = int(self.rate * self.seconds)
        templates: dict[tuple[int, int, int], bytes] = {}
        variant = 0
        while self.next_id - FIRST_ID < total and not self.done.is_set():
            now = time.monotonic()
            due = min(total, int((now - t0) * self.rate)) - (self.next_id - FIRST_ID)
            self.behind_max = max(self.behind_max, due)
            if proto.paused or _unsent(proto.transport) > HIGH_WATER:
                await asyncio.sleep(TICK_S)  # the reader is behind: TCP pushes back, we wait
                continue
            ts_ms = time.time_ns() // 1_000_000
            while due > 0:
                k = min(due, self.chunk)
                variant += 1
                key = (ts_ms, k, variant % 4)
                tpl = templates.get(key)
                if tpl is None:
                    if len(templates) > 64:
                        templates.clear()
                    tpl = templates[key] = chunk_template(ts_ms, k, variant % 4)
                proto.transport.write(tpl % tuple(range(self.next_id, self.next_id + k)))
                self.next_id += k
                due -= k
            await asyncio.sleep(TICK_S)
        self.done.set()


async def serve(args: argparse.Namespace) -> dict:
    feeder = Feeder(args.rate, args.seconds, args.chunk)
    loop = asyncio.get_running_loop()
    ca = None
    if args.tls:
        from ..tls import TestCA

        ca = TestCA()
    server = await loop.create_server(
        lambda: FeedProtocol(feeder), "127.0.0.1", args.port, ssl=ca.server_context() if ca else None
    )
    port = server.sockets[0].getsockname()[1]
    hello = {"ws_origin": f"ws{'s' if ca else ''}://127.0.0.1:{port}", "symbol": SYMBOL}
    if ca:
        hello["ca_file"] = ca.ca_file
    print(json.dumps(hello), flush=True)
    try:
        await asyncio.wait_for(feeder.done.wait(), args.wait_s + args.seconds)
    except TimeoutError:
        pass
    # Let what is buffered reach the reader before saying what was sent.
    while feeder.client is not None and _unsent(feeder.client.transport) and not feeder.client.transport.is_closing():
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - feeder.started if feeder.started else 0.0
    await asyncio.sleep(args.linger_s)
    server.close()
    if ca:
        ca.cleanup()
    return {
        "first_id": FIRST_ID,
        "last_id": feeder.next_id - 1,
        "sent": feeder.next_id - FIRST_ID,
        "seconds": round(elapsed, 3),
        "behind_max": feeder.behind_max,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pumpwatch.sim.feeder", description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, required=True, help="frames per second")
    p.add_argument("--seconds", type=float, default=5.0, help="how long to send (default 5)")
    p.add_argument("--chunk", type=int, default=4096, help="most frames per write (default 4096)")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--tls", action="store_true", help="serve wss:// with a test CA made at start (its PEM: ca_file)")
    p.add_argument("--wait-s", type=float, default=60.0, help="how long to wait for a subscriber")
    p.add_argument(
        "--linger-s", type=float, default=1.0, help="keep the connection open this long after the last frame"
    )
    args = p.parse_args(argv)
    print(json.dumps(asyncio.run(serve(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
