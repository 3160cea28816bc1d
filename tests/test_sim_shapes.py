"""Real frames as the reference shape: every message type the simulator sends has the shape of a
real message of that type in tests/samples (key paths, key order, JSON types, number formats, how
several trades share a frame).

A shape is the JSON tree with every value replaced by its kind: objects keep their keys in order,
arrays of objects become the set of their element shapes (so a frame of one trade and a frame of
five have one shape), arrays of scalars (Phemex rows) keep each position's kind, and scalars are
`int`, `float`, `bool`, `null`, a numeric string (`str:num`, plain decimal notation; `str:exp`
with an exponent) or other text (`str`). A simulator message passes when its shape equals the
shape of at least one real message of its type (several eras of a venue's format are kept).

The simulator renders its trade messages from templates (pumpwatch/sim/wire/<venue>.json: one real
frame per message type, values as placeholders). Each template is held here against the same real
messages, and every frame the simulator sends has exactly its template's shape. Its control messages
(acks, errors, welcomes, pongs, notices: the files' `control` section) are templates too, each held
to a real control frame in tests/samples/*.control.jsonl or a documented one, or named unheld.

Frames published outside tests/samples (docs examples quoted byte for byte, third-party captures)
live in tests/data/documented/, one file each, with a header of `//` lines naming the source, the
place (URL or repo@commit:path) and the date; DOCUMENTED_FRAMES and REST hold templates to them, and
CONTRADICTED names those a published frame contradicts that another part of the work must fix.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from websockets.asyncio.client import connect

from pumpwatch import venues as pumpwatch_venues
from pumpwatch.connection import http_fetch
from pumpwatch.sim import VENUE_IDS, SimVenue
from pumpwatch.sim.wire import Template, TemplateError, templates

pytestmark = pytest.mark.timeout(60)

SAMPLES = Path(__file__).parent / "samples"
DOCUMENTS = Path(__file__).parent / "data" / "documented"
_NUM = re.compile(r"^-?\d+(\.\d+)?$")
_EXP = re.compile(r"^-?\d+(\.\d+)?[eE][-+]?\d+$")


#: Keys whose text is an opaque identifier: numeric or not, it is text (KuCoin's spot `tradeId` is a
#: 24-hex ObjectId on older symbols and a number on newer ones; Bybit's trade id, `i` on the stream and
#: `execId` in REST, is a number on spot and a UUID on linear; a request id echoes the client's).
OPAQUE = {"tradeId", "makerOrderId", "takerOrderId", "i", "execId", "conn_id", "connId", "req_id", "id"}


def shape(v: Any, key: str = "") -> Any:
    if isinstance(v, dict):
        return ("object", tuple((k, shape(x, k)) for k, x in v.items()))
    if isinstance(v, list):
        if v and all(isinstance(x, (dict, list)) for x in v):
            return ("array", frozenset(shape(x) for x in v))
        return ("row", tuple(shape(x) for x in v))
    if isinstance(v, str) and key in OPAQUE:
        return "str"
    if isinstance(v, bool):
        return "bool"
    if v is None:
        return "null"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if _NUM.match(v):
        return "str:num"
    if _EXP.match(v):
        return "str:exp"
    return "str"


def _lines(name: str) -> list[dict]:
    return [json.loads(line) for line in (SAMPLES / name).read_text().splitlines() if line.strip()]


def _real(name: str, keep) -> list[dict]:
    found = [m for m in _lines(name) if keep(m)]
    assert found, f"no reference message in {name}"
    return found


#: A `//` comment outside a JSON string (documented examples annotate their keys so).
_COMMENT = re.compile(r'("(?:[^"\\]|\\.)*")|//[^\n]*')


def _document(name: str) -> tuple[dict[str, str], str]:
    """(the header, the published text) of tests/data/documented/<name>: leading `// key: value`
    lines name the source; the rest is the frame as published, byte for byte."""
    lines = (DOCUMENTS / name).read_text(encoding="utf-8").splitlines(keepends=True)
    n = next((i for i, line in enumerate(lines) if not line.startswith("//")), len(lines))
    header = dict(line[2:].strip().split(": ", 1) for line in lines[:n] if ": " in line)
    return header, "".join(lines[n:])


def documented(name: str) -> list[Any]:
    """The published frames of tests/data/documented/<name>: one a line in a `.jsonl` file, else
    one JSON document (its `//` comments dropped) or, with `format: python` / `javascript` / `c++`
    in the header, one literal as a client's test wrote it."""
    header, text = _document(name)
    if header.get("format") == "python":
        return [ast.literal_eval(text)]
    if header.get("format") == "c++":  # adjacent raw string literals R"(...)": their contents joined
        return [json.loads("".join(re.findall(r'R"\((.*?)\)"', text)))]
    if header.get("format") == "javascript":  # an object literal: bare keys, single-quoted strings
        text = re.sub(r"'([^'\\]*)'", r'"\1"', text)
        return [json.loads(re.sub(r"([{,]\s*)([A-Za-z_][A-Za-z0-9_]*):", r'\1"\2":', text))]
    if name.endswith(".jsonl"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return [json.loads(_COMMENT.sub(lambda m: m.group(1) or "", text))]


def _bn_combined(m):
    return "stream" in m and m["stream"].endswith("@trade")


def _bn_raw(m):
    return m.get("e") == "trade"


#: venue -> [(message type, the sim's frames of that type (a predicate on the parsed frame),
#: the real references (file, predicate))]. Trade messages; control messages are below. The
#: message type is also the name of the venue's template of it (pumpwatch/sim/wire/<venue>.json).
TRADE_TYPES: dict[str, list[tuple[str, Any, str, Any]]] = {
    "binance-spot": [
        ("@trade combined", _bn_combined, "binance_spot.jsonl", _bn_combined),
        ("@trade raw", _bn_raw, "binance_spot.jsonl", _bn_raw),
    ],
    "binance-usdm": [
        ("@trade combined", _bn_combined, "binance_usdm.jsonl", _bn_combined),
        ("@trade raw", _bn_raw, "binance_usdm.jsonl", _bn_raw),
    ],
    "bybit-spot": [("publicTrade", lambda m: True, "bybit_spot.jsonl", lambda m: True)],
    "bybit-linear": [("publicTrade", lambda m: True, "bybit_linear.jsonl", lambda m: True)],
    "okx-spot": [
        ("trades", lambda m: m["arg"]["channel"] == "trades", "okx_spot.jsonl", lambda m: True),
        (
            "trades-all",
            lambda m: m["arg"]["channel"] == "trades-all",
            "okx.tardis.jsonl",
            lambda m: m["arg"]["channel"] == "trades-all",
            "okx trades-all",
        ),
    ],
    "okx-swap": [
        ("trades", lambda m: m["arg"]["channel"] == "trades", "okx_spot.jsonl", lambda m: True),
        (
            "trades-all",
            lambda m: m["arg"]["channel"] == "trades-all",
            "okx.tardis.jsonl",
            lambda m: m["arg"]["channel"] == "trades-all",
            "okx trades-all",
        ),
    ],
    "kucoin-spot": [("/market/match", lambda m: True, "kucoin_spot.jsonl", lambda m: True)],
    "kucoin-futures": [("/contractMarket/execution", lambda m: True, "kucoin_futures.jsonl", lambda m: True)],
    "gate-spot": [("spot.trades", lambda m: True, "gateio_spot.jsonl", lambda m: True)],
    "gate-futures": [("futures.trades", lambda m: True, "gateio_futures.jsonl", lambda m: True)],
    "phemex-spot": [
        (
            "trades",
            lambda m: m["type"] == "incremental",
            "phemex_spot.jsonl",
            lambda m: m["type"] == "incremental",
        )
    ],
    "phemex-perp": [
        (
            "trades_p",
            lambda m: m["type"] == "incremental",
            "phemex.tardis.jsonl",
            lambda m: "trades_p" in m and m["type"] == "incremental",
        )
    ],
}


#: Renderings the simulator offers that no real frame shows yet: not held to a sample, named here.
UNHELD_DIALECTS = {
    # `X-Gate-Size-Decimal: 1` makes futures `size` a string (Gate's docs); no captured frame has it.
    ("gate-futures", "size-decimal"),
}
#: Their templates, likewise named, and the control messages and REST bodies no capture, no whole
#: documented frame and no published frame in tests/data/documented/ shows: (venue, template) -> the
#: docs/VENUES.md section the template follows (and, for those a published frame contradicts, see
#: CONTRADICTED below). What was searched for each is in the s5 templates note.
UNHELD_TEMPLATES: dict[tuple[str, str], str] = {
    ("gate-futures", "futures.trades size-decimal"): "§8 (the published frame is tardis-node's test: see SIZE_DECIMAL)",
    ("gate-futures", "REST trades size-decimal"): "§8",
    ("gate-futures", "REST trades"): "§8",
    ("bybit-spot", "reply with req_id"): "§3.1 (linear's req_id position)",
    **{(v, "error"): "§5.1" for v in ("kucoin-spot", "kucoin-futures")},
    **{
        (v, name): "§7.1"
        for v in ("gate-spot", "gate-futures")
        for name in ("pong", "pong with id", "error", "subscribe ack with id")
        if (v, name) != ("gate-futures", "pong")
    },
    # Phemex's rate limit and handshake refusal: no capture, no published body (PHX-DOCS gives the
    # `code`/`msg` envelope of the non-/md endpoints and HTTP 429 only), and docs/VENUES.md quotes none.
    **{
        (v, name): "§9.1, §9.3"
        for v in ("phemex-spot", "phemex-perp")
        for name in ("REST rate limited", "handshake refused")
    },
}

#: Templates held by frames published outside tests/samples (tests/data/documented/<file>, each
#: naming its source in its header): (venue, template) -> (the files, the values its `json`
#: placeholders stand for in the comparison). REST trade answers are held in REST below instead,
#: where the simulator's live answer is held too.
DOCUMENTED_FRAMES: dict[tuple[str, str], tuple[tuple[str, ...], dict[str, Any]]] = {
    # Binance spot's docs; USDⓈ-M's stream docs do not mention serverShutdown: its shape is spot's.
    **{
        (v, f"serverShutdown {stream}"): ((f"binance.serverShutdown-{stream}.json",), {})
        for v in ("binance-spot", "binance-usdm")
        for stream in ("raw", "combined")
    },
    ("gate-futures", "pong"): (("gate-futures.pong.jsonl",), {}),
    ("gate-futures", "futures.system"): (("gate-futures.system.txt",), {}),
    **{(v, "pong"): (("kucoin.pong.json",), {}) for v in ("kucoin-spot", "kucoin-futures")},
    **{(v, "REST error"): (("okx.rest-error.jsonl",), {}) for v in ("okx-spot", "okx-swap")},
    **{(v, "notice"): (("okx.notice.json",), {}) for v in ("okx-spot", "okx-swap")},
    **{(v, "error"): (("okx.error.jsonl",), {}) for v in ("okx-spot", "okx-swap")},
    **{(v, "error"): (("phemex.error.jsonl",), {"id": 106}) for v in ("phemex-spot", "phemex-perp")},
    **{(v, "REST error"): (("phemex.rest-error.jsonl",), {}) for v in ("phemex-spot", "phemex-perp")},
    **{(v, "REST error"): (("gate.rest-error.json",), {}) for v in ("gate-spot", "gate-futures")},
    **{(v, "error"): (("binance.error.jsonl",), {"id": 2}) for v in ("binance-spot", "binance-usdm")},
    **{
        (v, "error with id"): ((f"{v}.subscribe-failed.json",), {"id": 1, "payload": ["ob.BTC_USDT.400"]})
        for v in ("gate-spot", "gate-futures")
    },
    **{
        (v, name): (("bybit.rest-error.jsonl",), {})
        for v in ("bybit-spot", "bybit-linear")
        for name in ("REST error", "REST params error")
    },
}

#: Templates a published frame contradicts whose fix is still to come: (venue, template) -> (the
#: file, what differs). They stay in UNHELD_TEMPLATES; the test checks they still differ, so the fix
#: that makes one hold is told to move it to DOCUMENTED_FRAMES. (Binance's nested `error` and Gate's
#: refusal with `trace_id` and `payload` were here until their templates were fixed.)
CONTRADICTED: dict[tuple[str, str], tuple[str, str]] = {}


def _sim_trade_frames(venue: str, n: int = 400) -> list[dict]:
    """Trade frames of every channel and dialect the venue sends, as it would send them."""
    sim = SimVenue(venue, seed=5, symbols=["BTC", "ETH", "SOL", "DOGE"])
    frames: list[dict] = []
    for inst in sim.instruments.values():
        tape = sim._tapes[inst.symbol]  # the tape and its orders are the server's; no clock needed
        ts = 1_790_000_000_000_000_000
        for _ in range(n // len(sim.instruments)):
            for pub in sim.protocol.publications(inst, sim._order(tape, ts)):
                frames += [json.loads(f) for d, f in pub.frames.items() if (venue, d) not in UNHELD_DIALECTS]
            ts += 7_000_000
    return frames


#: Documented examples, for shapes the venue changed after the last real capture we hold. Each is
#: quoted from docs/VENUES.md, which cites the venue's docs.
DOCUMENTED = {
    # OKX-DOCS (VENUES §4.1): acks carry `connId` (and `id` when the request had one) since 2023.
    "okx ack": [{"event": "subscribe", "arg": {"channel": "trades", "instId": "BTC-USDT"}, "connId": "a4d3ae55"}],
    # OKX-DOCS (VENUES §4.2): `trades-all` rows carry `source` (Enhanced Liquidity Program).
    "okx trades-all": [
        {
            "arg": {"channel": "trades-all", "instId": "BTC-USDT"},
            "data": [
                {
                    "instId": "BTC-USDT",
                    "tradeId": "130639474",
                    "px": "42219.9",
                    "sz": "0.12060306",
                    "side": "buy",
                    "source": "0",
                    "ts": "1630048897897",
                }
            ],
        }
    ],
    # OKX-DOCS (VENUES §4.1): an ack and an error answering a request with an `id`.
    "okx ack with id": [
        {"id": "1512", "event": "subscribe", "arg": {"channel": "trades", "instId": "BTC-USDT"}, "connId": "a4d3ae55"}
    ],
    "okx error with id": [
        {"id": "1512", "event": "error", "code": "60012", "msg": "Invalid request: …", "connId": "a4d3ae55"}
    ],
    # (3P) OKX's WS error as received, key order kept: ccxt 4.5.90 pro/okx.py handle_error_message
    # quotes a real one with `connId`; a 2023 capture of 60011 "Please log in" (crypto-ws-api#2) has
    # the same keys before `connId`. The shape of OKX's refusal for want of a login (VENUES §4.1).
    "okx error as received": [{"event": "error", "msg": "Illegal request: …", "code": "60012", "connId": "0808af6c"}],
    # Binance's docs, "Live Subscribing/Unsubscribing to streams" (USDⓈ-M page; spot's is the same;
    # VENUES §1.1 names these methods without quoting the answers).
    "binance LIST_SUBSCRIPTIONS": [{"result": ["btcusdt@aggTrade"], "id": 3}],
    "binance GET_PROPERTY": [{"result": True, "id": 2}],
    # Binance's errors doc (errors.md, "a full error example"; VENUES §1.1 gives the same form).
    "binance REST error": [{"code": -1121, "msg": "Invalid symbol."}],
    # (3P) KuCoin's REST error as ccxt's kucoin.js handleErrors quotes it.
    "kucoin REST error": [{"code": "400100", "msg": "validation.createOrder.clientOidIsRequired"}],
    # (3P) OKX's 429 body as ccxt's ExchangeError reports it (key order as sent).
    "okx REST rate limited": [{"msg": "Too Many Requests", "code": "50011"}],
    # PHX-DOCS (VENUES §9.1): the answer to `server.ping`.
    "phemex pong": [{"error": None, "id": 0, "result": "pong"}],
    # GATE-DOCS (VENUES §7.1): an ack with `time_ms` and `error: null`.
    "gate ack": [
        {
            "time": 1611541000,
            "time_ms": 1611541000001,
            "channel": "spot.trades",
            "event": "subscribe",
            "error": None,
            "result": {"status": "success"},
        }
    ],
}


def _match(venue: str, kind: str, sims: list[dict], reals: list[dict]) -> None:
    assert sims, f"{venue}: the simulator sent no {kind} message"
    real_shapes = {shape(m) for m in reals}
    for m in sims:
        assert shape(m) in real_shapes, (
            f"{venue}: simulated {kind} message has no real counterpart in shape:\n  sim:  {json.dumps(m)[:400]}\n"
            + "\n".join(f"  real: {json.dumps(r)[:400]}" for r in reals)
        )


@pytest.mark.parametrize("venue", VENUE_IDS)
def test_trade_messages_have_a_real_shape(venue):
    frames = _sim_trade_frames(venue)
    for kind, is_sim, sample, is_real, *documented in TRADE_TYPES[venue]:
        reals = _real(sample, is_real) + [m for d in documented for m in DOCUMENTED[d]]
        sims = [m for m in frames if is_sim(m)]
        _match(venue, kind, sims, reals)
        # ... and they are what the template says: its shape exactly, not just some real frame's.
        _match(venue, kind, sims, [templates(venue)[kind].specimen()])


@pytest.mark.parametrize("venue", VENUE_IDS)
def test_wire_templates_have_a_real_shape(venue):
    """Each template, its placeholders standing for values of their kind, has the shape of a real
    message of its type: the venue's trade shape is written once, in the template, and checked."""
    held = {kind: (sample, is_real, documented) for kind, _, sample, is_real, *documented in TRADE_TYPES[venue]}
    assert set(held) <= set(templates(venue)), f"{venue}: a message type the simulator sends has no template"
    for name, tpl in templates(venue).items():
        if (venue, name) in UNHELD_TEMPLATES or name.startswith("REST ") or tpl.section != "messages":  # held below
            continue
        assert name in held, f"{venue}: template {name!r} is held to no real message; add it to TRADE_TYPES"
        sample, is_real, documented = held[name]
        reals = _real(sample, is_real) + [m for d in documented for m in DOCUMENTED[d]]
        _match(venue, f"template {name!r}", [tpl.specimen()], reals)


def _ws_payloads(data: bytes) -> list[bytes]:
    """The payloads of unmasked server frames (the load feeder's chunks)."""
    out, pos = [], 0
    while pos < len(data):
        n, pos = data[pos + 1] & 0x7F, pos + 2
        if n == 126:
            n, pos = int.from_bytes(data[pos : pos + 2], "big"), pos + 2
        elif n == 127:
            n, pos = int.from_bytes(data[pos : pos + 8], "big"), pos + 8
        out.append(data[pos : pos + n])
        pos += n
    return out


def test_the_load_feeder_sends_the_binance_usdm_template():
    from pumpwatch.sim import feeder

    ids = (feeder.FIRST_ID, feeder.FIRST_ID + 1, feeder.FIRST_ID + 2)  # the frame's length holds ten digits
    frames = [
        json.loads(p)
        for variant in range(4)
        for p in _ws_payloads(feeder.chunk_template(1_790_000_000_123, 3, variant) % ids)
    ]
    assert [m["data"]["t"] for m in frames] == list(ids) * 4
    _match("binance-usdm", "feeder @trade", frames, [templates("binance-usdm")["@trade combined"].specimen()])
    _match("binance-usdm", "feeder @trade", frames, _real("binance_usdm.jsonl", _bn_combined))


def test_the_load_feeder_acks_a_subscription_as_binance_does():
    # The real ack is compact (samples/binance_usdm.control.jsonl line 1); the feeder's was
    # `json.dumps`'s default, with spaces after `:` and `,`. It is now the venue's `ack` template.
    from pumpwatch.sim import feeder

    class Transport:
        written = b""

        def write(self, data):
            self.written += data

    subscribed = []
    proto = feeder.FeedProtocol(cast(Any, SimpleNamespace(subscribed=subscribed.append)))
    proto.connection_made(cast(Any, Transport()))
    proto.upgraded = True
    payload, mask = b'{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}', b"\x01\x02\x03\x04"
    proto.data_received(
        bytes((0x81, 0x80 | len(payload))) + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
    )
    assert subscribed == [proto]
    real = (SAMPLES / "binance_usdm.control.jsonl").read_text().splitlines()[0].encode()
    assert _ws_payloads(cast(Any, proto.transport).written) == [real] == [b'{"result":null,"id":1}']


def test_a_template_renders_its_values_into_the_real_frame():
    tpl = Template(
        "test",
        "trades",
        {"e": "50%", "ts": "{ts:int}", "rows": [["{p:num}", "{side}", "{m:bool}"]], "last": "{last:bool}"},
    )
    assert tpl.fields == {"ts": "int", "p": "num", "side": "text", "m": "bool", "last": "bool"}
    text = tpl.render(
        [{"p": "1.50", "side": "Buy", "m": True}, {"p": "2", "side": "Sell", "m": False}], ts=7, last=False
    )
    assert text == '{"e":"50%","ts":7,"rows":[["1.50","Buy",true],["2","Sell",false]],"last":false}'
    assert json.loads(text)["rows"][1] == ["2", "Sell", False]
    assert tpl.specimen() == {"e": "50%", "ts": 0, "rows": [["0", "x", False]], "last": False}


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"a": "{x:float}"}, "kind 'float'"),
        ({"a": "{x}", "b": {"c": "{x:int}"}}, "appears twice"),
        ({"a": [{"x": "{x}"}], "b": [{"y": "{y}"}]}, "2 arrays of rows"),
        ({"a": [{"x": [["{x}"]]}]}, "rows inside a row"),
        ({"a": [{"x": "{x:str}"}]}, "not trade rows"),
    ],
)
def test_a_template_that_breaks_the_rules_is_refused_with_a_reason(body, complaint):
    with pytest.raises(TemplateError, match=complaint):
        Template("test", "bad", body)


def test_a_dec_value_is_a_json_number_kept_exactly():
    # Gate futures REST writes its trade times as JSON numbers with three decimals (`dec`).
    tpl = Template("test", "rest", [{"t": "{t:dec}"}])
    assert tpl.render([{"t": "1787319911.612"}]) == '[{"t":1787319911.612}]'
    assert json.dumps(tpl.fill([{"t": "1787319911.612"}]), separators=(",", ":")) == '[{"t":1787319911.612}]'
    with pytest.raises(TemplateError, match="not kept exactly"):
        tpl.fill([{"t": "1787319911.61200000001"}])
    assert tpl.specimen() == [{"t": 0.5}] and shape(tpl.specimen()) == ("array", frozenset({shape({"t": 1.5})}))


def test_control_kinds_encode_what_a_client_sent():
    """`str` and `json` go through the JSON encoder: a client's quote or backslash comes back as
    the same text, a request id as the JSON value it sent."""
    tpl = Template("test", "error", {"code": "{code:int}", "msg": "{msg:str}", "id": "{id:json}"})
    assert tpl.fields == {"code": "int", "msg": "str", "id": "json"}
    for req_id in (None, 7, "a1", ["x"]):
        text = tpl.render(code=2, msg="unknown variant 'FO\"O\\'", id=req_id)
        assert json.loads(text) == {"code": 2, "msg": "unknown variant 'FO\"O\\'", "id": req_id}
    assert tpl.render(code=1, msg=5, id="1") == '{"code":1,"msg":"5","id":"1"}'  # str: always a string
    assert tpl.specimen() == {"code": 0, "msg": "x", "id": None}
    assert tpl.specimen(id=1) == {"code": 0, "msg": "x", "id": 1}


def _trades_in(m: dict) -> int:
    for key in ("data", "result", "trades", "trades_p"):
        v = m.get(key)
        if isinstance(v, list):
            return len(v)
    return 1


@pytest.mark.parametrize("venue", ["bybit-spot", "bybit-linear"])
def test_several_fills_share_a_frame_where_the_venue_batches_them(venue):
    # Bybit's 2026 recording has frames of several fills of one taker order (same T and seq).
    assert max(_trades_in(m) for m in _real(f"{venue.replace('-', '_')}.jsonl", lambda m: True)) > 1
    assert max(_trades_in(m) for m in _sim_trade_frames(venue)) > 1


@pytest.mark.parametrize("venue", ["binance-spot", "binance-usdm", "okx-spot", "kucoin-spot", "gate-spot"])
def test_one_trade_per_frame_where_the_venue_sends_one(venue):
    assert {_trades_in(m) for m in _sim_trade_frames(venue)} == {1}


# -- control messages: what the venue answers a subscription (acks, welcomes)

#: venue -> (the client's frame, as in the real exchange the sample records (the symbol made the
#: simulator's), the WebSocket path when not PumpWatch's, the real answers (file, predicate),
#: documented answers).
CONTROL: dict[str, tuple[Any, str | None, str, Any, tuple[str, ...]]] = {
    # Binance spot subscribes and acks as USDⓈ-M does (VENUES §2.1: "Subscribe frame identical to spot").
    "binance-spot": (
        lambda s: {"method": "SUBSCRIBE", "params": [f"{s.lower()}@trade"], "id": 1},
        None,
        "binance_usdm.control.jsonl",
        lambda m: "result" in m,
        (),
    ),
    "binance-usdm": (
        lambda s: {"method": "SUBSCRIBE", "params": [f"{s.lower()}@trade"], "id": 1},
        None,
        "binance_usdm.control.jsonl",
        lambda m: "result" in m,
        (),
    ),
    "bybit-spot": (
        lambda s: {"op": "subscribe", "args": [f"publicTrade.{s}"]},
        None,
        "bybit_spot.control.jsonl",
        lambda m: "success" in m,
        (),
    ),
    "bybit-linear": (
        lambda s: {"op": "subscribe", "args": [f"publicTrade.{s}"]},
        None,
        "bybit_linear.control.jsonl",
        lambda m: "success" in m,
        (),
    ),
    "okx-spot": (
        lambda s: {"op": "subscribe", "args": [{"channel": "trades", "instId": s}]},
        "/ws/v5/public",
        "okx.control.jsonl",
        lambda m: "event" in m,
        ("okx ack",),
    ),
    "okx-swap": (
        lambda s: {"op": "subscribe", "args": [{"channel": "trades", "instId": s}]},
        "/ws/v5/public",
        "okx.control.jsonl",
        lambda m: "event" in m,
        ("okx ack",),
    ),
    "kucoin-spot": (
        lambda s: {
            "id": 1,
            "type": "subscribe",
            "topic": f"/market/match:{s}",
            "privateChannel": False,
            "response": True,
        },
        None,
        "kucoin_spot.control.jsonl",
        lambda m: m.get("type") in ("welcome", "ack"),
        (),
    ),
    "kucoin-futures": (
        lambda s: {
            "id": 1,
            "type": "subscribe",
            "topic": f"/contractMarket/execution:{s}",
            "privateChannel": False,
            "response": True,
        },
        None,
        "kucoin_spot.control.jsonl",
        lambda m: m.get("type") in ("welcome", "ack"),
        (),
    ),
    "gate-spot": (
        lambda s: {"time": 1619093532, "channel": "spot.trades", "event": "subscribe", "payload": [s]},
        None,
        "gateio_spot.control.jsonl",
        lambda m: "result" in m,
        ("gate ack",),
    ),
    "gate-futures": (
        lambda s: {"time": 1684930165, "channel": "futures.trades", "event": "subscribe", "payload": [s]},
        None,
        "gateio_futures.control.jsonl",
        lambda m: "result" in m,
        ("gate ack",),
    ),
    "phemex-spot": (
        lambda s: {"id": 1, "method": "trade.subscribe", "params": [s]},
        None,
        "phemex.control.jsonl",
        lambda m: "result" in m,
        (),
    ),
    "phemex-perp": (
        lambda s: {"id": 1, "method": "trade_p.subscribe", "params": [s]},
        None,
        "phemex.control.jsonl",
        lambda m: "result" in m,
        (),
    ),
}


async def _control_frames(venue: str) -> list[dict]:
    """What the simulated venue answers the sample's client frame, in the order sent; trade
    messages (a Phemex snapshot) left out."""
    client_frame, path, _, _, _ = CONTROL[venue]
    async with SimVenue(venue, seed=5, trades_per_s=0, backlog=20, symbols=["BTC"]) as sim:
        spec = pumpwatch_venues.get(venue).with_urls(ws_url=sim.ws_origin, rest_url=sim.rest_url)
        symbol = next(iter(sim.instruments))
        url, _ = await spec.resolve(http_fetch, [symbol])
        if path is not None:
            url = sim.ws_origin + path
        got: list[dict] = []
        async with connect(url, proxy=None) as ws:
            if spec.subscribe_after_welcome:
                got.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
            await ws.send(json.dumps(client_frame(symbol)))
            try:
                while True:
                    got.append(json.loads(await asyncio.wait_for(ws.recv(), 0.5)))
            except TimeoutError:
                pass
        return got


@pytest.mark.parametrize("venue", VENUE_IDS)
def test_control_messages_have_a_real_shape(venue):
    frames = asyncio.run(_control_frames(venue))
    # Phemex answers a subscription with a snapshot of recent trades: a trade message, whose
    # shape is its incremental's (the `type` value aside), as in the real snapshot we hold.
    snapshots = [m for m in frames if isinstance(m, dict) and m.get("type") == "snapshot"]
    frames = [m for m in frames if m not in snapshots]
    if venue.startswith("phemex"):
        assert snapshots, f"{venue}: no snapshot after subscribing"
        _, _, sample, is_real = TRADE_TYPES[venue][0]
        _match(
            venue,
            "snapshot",
            snapshots,
            _real(sample, is_real) + _real("phemex.tardis.jsonl", lambda m: m["type"] == "snapshot"),
        )
    _, _, sample, keep, documented = CONTROL[venue]
    reals = _real(sample, keep) + [m for d in documented for m in DOCUMENTED[d]]
    _match(venue, "control", frames, reals)
    assert len(frames) >= 1 + pumpwatch_venues.get(venue).subscribe_after_welcome


# -- control templates (the files' `control` section): each held to a real control frame, a
# documented one, or named in UNHELD_TEMPLATES with the docs/VENUES.md section it follows.


def _bn_ack(m):
    return "result" in m


#: venue -> {control template: ((the real frames: (file, predicate), ...), DOCUMENTED keys, the values
#: its placeholders stand for in the comparison: a `json` one has no kind of its own, so the real
#: frame's value is given)}.
CONTROL_TEMPLATES: dict[str, dict[str, tuple[tuple[tuple[str, Any], ...], tuple[str, ...], dict[str, Any]]]] = {
    **{
        v: {
            "ack": ((("binance_usdm.control.jsonl", _bn_ack),), (), {"id": 1}),
            "LIST_SUBSCRIPTIONS": ((), ("binance LIST_SUBSCRIPTIONS",), {"streams": ["btcusdt@trade"], "id": 3}),
            "GET_PROPERTY": ((), ("binance GET_PROPERTY",), {"id": 2}),
        }
        for v in ("binance-spot", "binance-usdm")
    },
    "bybit-spot": {"reply": ((("bybit_spot.control.jsonl", lambda m: "success" in m),), (), {})},
    "bybit-linear": {"reply": ((("bybit_linear.control.jsonl", lambda m: "success" in m),), (), {"req_id": ""})},
    **{
        v: {
            "ack": ((("okx.control.jsonl", lambda m: m.get("event") == "subscribe"),), ("okx ack",), {}),
            "ack with id": ((), ("okx ack with id",), {"id": "1512"}),
            "error with id": ((), ("okx error with id",), {"id": "1512"}),
            "login required": ((), ("okx error as received",), {}),
            "login required with id": ((), ("okx error with id",), {"id": "1512"}),
        }
        for v in ("okx-spot", "okx-swap")
    },
    **{
        v: {
            "welcome": ((("kucoin_spot.control.jsonl", lambda m: m.get("type") == "welcome"),), (), {}),
            "ack": ((("kucoin_spot.control.jsonl", lambda m: m.get("type") == "ack"),), (), {}),
        }
        for v in ("kucoin-spot", "kucoin-futures")
    },
    "gate-spot": {
        "subscribe ack": ((("gateio_spot.control.jsonl", lambda m: "conn_id" in m),), (), {"payload": ["BTC_USDT"]})
    },
    "gate-futures": {"subscribe ack": ((), ("gate ack",), {})},
    **{
        v: {
            "ack": ((("phemex.control.jsonl", lambda m: "result" in m),), (), {"id": 1}),
            "pong": ((), ("phemex pong",), {"id": 0}),
        }
        for v in ("phemex-spot", "phemex-perp")
    },
}


def _hold_section(venue: str, section: str, held: dict[str, Any]) -> None:
    """Every template of `section` is held to a real or documented message, or named unheld."""
    in_section = {name: tpl for name, tpl in templates(venue).items() if tpl.section == section}
    assert set(held) <= set(in_section), f"{venue}: {sorted(set(held) - set(in_section))} are not {section} templates"
    for name, tpl in in_section.items():
        assert tpl.source, f"{venue}: {section} template {name!r} names no source"
        if (venue, name) in DOCUMENTED_FRAMES:  # held by test_templates_held_by_published_frames
            assert name not in held, f"{venue}: {name!r} is held twice"
            continue
        if (venue, name) in UNHELD_TEMPLATES:
            assert name not in held, f"{venue}: {name!r} is both held and named unheld"
            continue
        assert name in held, (
            f"{venue}: {section} template {name!r} is held to no real message; hold it in the test's table "
            "or name it in UNHELD_TEMPLATES with the docs/VENUES.md section it follows"
        )
        samples, documented, examples = held[name]
        reals = [m for file, keep in samples for m in _real(file, keep)] + [
            m for d in documented for m in DOCUMENTED[d]
        ]
        _match(venue, f"{section} template {name!r}", [tpl.specimen(**examples)], reals)


@pytest.mark.parametrize("venue", VENUE_IDS)
def test_control_templates_have_a_real_shape(venue):
    """Each control template has the shape of a real control frame of its type: the venue's acks,
    errors and notices are written once, in the templates, and checked."""
    _hold_section(venue, "control", CONTROL_TEMPLATES[venue])


#: venue -> {REST error template: (as CONTROL_TEMPLATES)}. No REST error body is captured in
#: tests/samples; these are held to ones the venue's docs or ccxt quote (DOCUMENTED), the others to
#: the published frames of DOCUMENTED_FRAMES (Bybit, OKX and Gate `REST error`).
ERROR_TEMPLATES: dict[str, dict[str, tuple[tuple[tuple[str, Any], ...], tuple[str, ...], dict[str, Any]]]] = {
    "binance-spot": {"REST error": ((), ("binance REST error",), {})},
    "binance-usdm": {"REST error": ((), ("binance REST error",), {})},
    "bybit-spot": {},
    "bybit-linear": {},
    "okx-spot": {"REST rate limited": ((), ("okx REST rate limited",), {})},
    "okx-swap": {"REST rate limited": ((), ("okx REST rate limited",), {})},
    "kucoin-spot": {"REST error": ((), ("kucoin REST error",), {})},
    "kucoin-futures": {"REST error": ((), ("kucoin REST error",), {})},
    "gate-spot": {},
    "gate-futures": {},
    "phemex-spot": {},
    "phemex-perp": {},
}


@pytest.mark.parametrize("venue", VENUE_IDS)
def test_rest_error_templates_have_a_real_shape(venue):
    """The bodies of REST refusals (a bad parameter, a rate limit) come from templates too, each
    held to a documented body or named unheld."""
    _hold_section(venue, "errors", ERROR_TEMPLATES[venue])


class _Socket:
    """A venue class's view of one client socket, without a server: what it was sent."""

    def __init__(self, role: str = "public", query: dict[str, str] | None = None):
        self.role, self.dialect, self.conn_id, self.path = role, "", "c0ffee", "/"
        self.query = query or {}
        self.topics: set[str] = set()
        self.state: dict[str, Any] = {}
        self.closed = False
        self.sent: list[Any] = []

    def send(self, frame, *, data=False):
        self.sent.append(json.loads(frame))

    def close(self, code=1000, reason=""):
        self.closed = True

    def heartbeat(self):
        pass

    def answer_ping(self):
        pass


@pytest.mark.parametrize(
    ("venue", "role", "asked"),
    [
        ("okx-spot", "public", {"op": "subscribe", "args": [{"channel": "trades", "instId": "BTC-USDT"}]}),
        ("okx-swap", "business", {"op": "subscribe", "args": [{"channel": "trades-all", "instId": "BTC-USDT-SWAP"}]}),
        ("okx-spot", "public", {"op": "subscribe", "args": ["BTC-USDT"]}),
        ("gate-spot", "public", {"channel": "spot.trades", "event": "subscribe", "payload": ["BTC_USDT"]}),
        ("gate-futures", "public", {"channel": "futures.ping"}),
        ("gate-futures", "public", {"channel": "futures.trades", "event": "subscribe", "payload": ["NOPE_USDT"]}),
        ("bybit-spot", "public", {"op": "subscribe", "args": ["publicTrade.BTCUSDT"]}),
    ],
)
def test_a_control_answer_echoes_the_request_id_only_when_there_was_one(venue, role, asked):
    # The venue's `<name> with id` template is chosen by the request, not by the answer's kind.
    key = "req_id" if venue.startswith("bybit") else "id"
    sim = SimVenue(venue, seed=5, trades_per_s=0, symbols=["BTC"])
    for req_id in (None, "77"):
        socket = _Socket(role)
        sim.protocol.on_text(socket, json.dumps(asked if req_id is None else asked | {key: req_id}))
        assert socket.sent, f"{venue}: no answer to {asked}"
        for answer in socket.sent:
            assert (key in answer) == (req_id is not None), f"{venue}: {answer}"
            assert answer.get(key) == req_id


# -- REST: the trade endpoints PumpWatch backfills from. No real REST capture is in tests/samples
# yet, so these are held to the venues' documented responses as docs/VENUES.md quotes them (section
# named) or as tests/data/documented/ holds them (OKX, Gate spot); a captured response, once added
# to tests/samples, should replace each. Not held yet: Gate futures (no whole published answer with
# its `create_time_ms`) and the instrument lists (ccxt's load_markets reads them in test_ccxt_witness).

REST: dict[str, tuple[str, dict[str, str], Any]] = {
    # §1.3 (BN-SPOT-DOCS rest-api.md), `GET /api/v3/historicalTrades`.
    "binance-spot": (
        "/api/v3/historicalTrades",
        {"symbol": "{symbol}", "limit": "5"},
        [
            {
                "id": 28457,
                "price": "4.00000100",
                "qty": "12.00000000",
                "quoteQty": "48.000012",
                "time": 1499865549590,
                "isBuyerMaker": True,
                "isBestMatch": True,
            }
        ],
    ),
    # §2.3 (BN-FUT-DOCS), `GET /fapi/v1/trades` (historicalTrades has the same rows).
    "binance-usdm": (
        "/fapi/v1/trades",
        {"symbol": "{symbol}", "limit": "5"},
        [
            {
                "id": 28457,
                "price": "4.00000100",
                "qty": "12.00000000",
                "quoteQty": "8000.00",
                "time": 1499865549590,
                "isBuyerMaker": True,
                "isRPITrade": True,
            }
        ],
    ),
    # §3.3 (BYBIT-DOCS recent-trade.mdx).
    "bybit-spot": (
        "/v5/market/recent-trade",
        {"category": "spot", "symbol": "{symbol}", "limit": "5"},
        {
            "retCode": 0,
            "retMsg": "OK",
            "result": {
                "category": "spot",
                "list": [
                    {
                        "execId": "2100000000007764263",
                        "symbol": "BTCUSDT",
                        "price": "16618.49",
                        "size": "0.00012",
                        "side": "Buy",
                        "time": "1672052955758",
                        "isBlockTrade": False,
                        "isRPITrade": True,
                        "seq": "123456",
                    }
                ],
            },
            "retExtInfo": {},
            "time": 1672053054358,
        },
    ),
    # §5.3 (KuCoin SDK example), `GET /api/v1/market/histories`.
    "kucoin-spot": (
        "/api/v1/market/histories",
        {"symbol": "{symbol}"},
        {
            "code": "200000",
            "data": [
                {
                    "sequence": "10976028003549185",
                    "price": "67122",
                    "size": "0.000025",
                    "side": "buy",
                    "time": 1729177117877000000,
                }
            ],
        },
    ),
    # §6 (KC-DOCS), `GET /api/v1/trade/history` (the `code`/`data` envelope of every KuCoin answer).
    "kucoin-futures": (
        "/api/v1/trade/history",
        {"symbol": "{symbol}"},
        {
            "code": "200000",
            "data": [
                {
                    "sequence": 1697915257909,
                    "contractId": 1,
                    "tradeId": "1697915257909",
                    "makerOrderId": "236679665752801280",
                    "takerOrderId": "236679667975745536",
                    "ts": 1729242032152000000,
                    "size": 1,
                    "price": "67878",
                    "side": "sell",
                }
            ],
        },
    ),
    # OKX-DOCS "GET / Trades history" (§4.3), its example as published: `source` comes before `px`.
    **{
        v: (
            "/api/v5/market/history-trades",
            {"instId": "{symbol}", "limit": "5"},
            documented("okx.rest-history-trades.json")[0],
        )
        for v in ("okx-spot", "okx-swap")
    },
    # §7.3: a public answer of 2026 (3P): `currency_pair` after the times, `sequence_id` last.
    "gate-spot": (
        "/api/v4/spot/trades",
        {"currency_pair": "{symbol}", "limit": "5"},
        documented("gate-spot.rest-trades.txt")[0],
    ),
    # §9.3 (PHX-DOCS), `GET /md/trade` and `GET /md/v2/trade`.
    "phemex-spot": (
        "/md/trade",
        {"symbol": "{symbol}"},
        {
            "error": None,
            "id": 0,
            "result": {
                "sequence": 15934323,
                "symbol": "sBTCUSDT",
                "trades": [[1579164056368538508, "Sell", 869600000000, 1210000]],
                "type": "snapshot",
            },
        },
    ),
    "phemex-perp": (
        "/md/v2/trade",
        {"symbol": "{symbol}"},
        {
            "error": None,
            "id": 0,
            "result": {
                "sequence": 77766796,
                "symbol": "BTCUSDT",
                "trades_p": [[1666860389799499000, "Buy", "20702.1", "0.949"]],
                "type": "snapshot",
            },
        },
    ),
}


#: More REST answers held to documented ones: venue -> [(path, query, the documented answer, the
#: simulator's template of it)]. REST's answers are held as "REST trades".
REST_MORE: dict[str, list[tuple[str, dict[str, str], Any, str]]] = {
    # §1.3 (BN-SPOT-DOCS rest-api.md): spot aggTrades rows carry "M" (isBestMatch), as its trades do.
    "binance-spot": [
        (
            "/api/v3/aggTrades",
            {"symbol": "{symbol}", "limit": "5"},
            [
                {
                    "a": 26129,
                    "p": "0.01633102",
                    "q": "4.70443515",
                    "f": 27781,
                    "l": 27781,
                    "T": 1498793709153,
                    "m": True,
                    "M": True,
                }
            ],
            "REST aggTrades",
        )
    ],
    # §2.3 (BN-FUT-DOCS): USDⓈ-M aggTrades rows have no "M".
    "binance-usdm": [
        (
            "/fapi/v1/aggTrades",
            {"symbol": "{symbol}", "limit": "5"},
            [{"a": 26129, "p": "0.01633102", "q": "4.70443515", "f": 27781, "l": 27781, "T": 1498793709153, "m": True}],
            "REST aggTrades",
        )
    ],
    # OKX-DOCS "GET / Trades" (§4.3): the same rows as history-trades.
    **{
        v: [
            (
                "/api/v5/market/trades",
                {"instId": "{symbol}", "limit": "5"},
                documented("okx.rest-trades.json")[0],
                "REST trades",
            )
        ]
        for v in ("okx-spot", "okx-swap")
    },
    # §3.3: one recent-trade answer for every category; linear's rows are spot's.
    "bybit-linear": [
        (
            "/v5/market/recent-trade",
            {"category": "linear", "symbol": "{symbol}", "limit": "5"},
            REST["bybit-spot"][2],
            "REST trades",
        )
    ],
}


def _rest_references(venue: str) -> list[tuple[str, dict[str, str], Any, str]]:
    main = [(*REST[venue], "REST trades")] if venue in REST else []
    return main + REST_MORE.get(venue, [])


@pytest.mark.parametrize("venue", VENUE_IDS)
def test_rest_trades_have_the_documented_shape(venue):
    references = _rest_references(venue)
    if not references:
        pytest.skip(f"{venue}: no documented REST trade answer to hold it to (UNHELD_TEMPLATES)")

    async def fetch() -> list[Any]:
        async with SimVenue(venue, seed=5, trades_per_s=0, backlog=30, symbols=["BTC"]) as sim:
            symbol = next(iter(sim.instruments))
            from pumpwatch.venues import HttpRequest

            out = []
            for path, query, _, _ in references:
                request = HttpRequest("GET", path, {k: v.format(symbol=symbol) for k, v in query.items()})
                out.append(json.loads(await http_fetch(sim.rest_url, request)))
            return out

    for (path, _, documented, name), answer in zip(references, asyncio.run(fetch()), strict=True):
        _match(venue, f"REST {path}", [answer], [documented])
        _match(venue, f"REST {path}", [answer], [templates(venue)[name].specimen()])  # and it is the template


@pytest.mark.parametrize("venue", VENUE_IDS)
def test_rest_templates_have_the_documented_shape(venue):
    held = {name: documented for _, _, documented, name in _rest_references(venue)}
    for name, tpl in templates(venue).items():
        if not name.startswith("REST ") or (venue, name) in UNHELD_TEMPLATES or tpl.section != "messages":
            continue
        assert name in held, f"{venue}: template {name!r} is held to no documented answer; add it to REST_MORE"
        _match(venue, f"template {name!r}", [tpl.specimen()], [held[name]])


# -- frames published outside tests/samples (tests/data/documented/): docs examples quoted byte for
# byte from the venue's doc repositories or mirrors, and third-party captures (logs, frames quoted in
# clients' code), each file naming its source, place and date in its header.


def test_published_frames_name_their_source_and_are_used():
    used = {f for files, _ in DOCUMENTED_FRAMES.values() for f in files} | {f for f, _ in CONTRADICTED.values()}
    used |= {"okx.rest-history-trades.json", "okx.rest-trades.json", "gate-spot.rest-trades.txt", SIZE_DECIMAL[0]}
    files = sorted(p.name for p in DOCUMENTS.iterdir())
    assert files == sorted(used), "a file in tests/data/documented/ is held to no template, or one is missing"
    for name in files:
        header, _ = _document(name)
        assert {"source", "kind"} <= set(header), f"{name}: its header names no source or kind"
        assert header.keys() & {"where", "line 1"}, f"{name}: its header says not where the frame was published"
        assert documented(name), f"{name}: no frame"


def test_the_tables_name_real_templates_once():
    for venue, name in [*DOCUMENTED_FRAMES, *CONTRADICTED, *UNHELD_TEMPLATES]:
        assert name in templates(venue), f"{venue} has no template {name!r}"
    assert not DOCUMENTED_FRAMES.keys() & UNHELD_TEMPLATES.keys(), "held and named unheld"
    assert CONTRADICTED.keys() <= UNHELD_TEMPLATES.keys(), "a contradicted template is unheld until it is fixed"


@pytest.mark.parametrize(("venue", "name"), sorted(DOCUMENTED_FRAMES))
def test_templates_held_by_published_frames(venue, name):
    files, examples = DOCUMENTED_FRAMES[(venue, name)]
    tpl = templates(venue)[name]
    _match(
        venue, f"{tpl.section} template {name!r}", [tpl.specimen(**examples)], [m for f in files for m in documented(f)]
    )


@pytest.mark.parametrize(("venue", "name"), sorted(CONTRADICTED))
def test_contradicted_templates_still_differ_from_the_published_frame(venue, name):
    file, difference = CONTRADICTED[(venue, name)]
    tpl = templates(venue)[name]
    published = {shape(m) for m in documented(file)}
    assert shape(tpl.specimen()) not in published, (
        f"{venue} {name!r} now has the shape of {file}: hold it (DOCUMENTED_FRAMES) and take it out of "
        "CONTRADICTED and UNHELD_TEMPLATES"
    )
    assert difference


#: Gate futures with `X-Gate-Size-Decimal: 1`: tardis-node's test of that header (a JS literal, its
#: `id` 1 made up and its envelope without `time_ms`) is the one published frame. The fact the
#: template takes from it: `size` is a JSON string holding a signed decimal.
SIZE_DECIMAL = ("gate-futures.trades-size-decimal.json", "futures.trades size-decimal")


def test_size_decimal_sizes_are_decimal_strings_as_published():
    (frame,) = documented(SIZE_DECIMAL[0])
    published = frame["result"][0]["size"]
    assert isinstance(published, str) and shape(published) == "str:num" and "." in published
    row = templates("gate-futures")[SIZE_DECIMAL[1]].template["result"][0]
    assert row["size"] == "{size:num}", "the template's size is not a decimal string"
    sim = SimVenue("gate-futures", seed=5, symbols=["ETH"])
    inst = next(iter(sim.instruments.values()))
    tape = sim._tapes[inst.symbol]
    sizes = [
        json.loads(pub.frames["size-decimal"])["result"][0]["size"]
        for ts in range(1_790_000_000_000_000_000, 1_790_000_000_700_000_000, 7_000_000)
        for pub in sim.protocol.publications(inst, sim._order(tape, ts))
    ]
    assert sizes and all(isinstance(x, str) and shape(x) == "str:num" for x in sizes)
