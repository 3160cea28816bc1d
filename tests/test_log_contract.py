"""The log as a public contract (issue 18): sealed segments are tamper-evident, `verify` names
every damage class with the rule it breaks and the right span, queries return exactly what
docs/FORMAT.md says they return, and the Rust and pure-Python readers agree on all of it.

Each damage is made by the test on a copy of a log recorded by the Rust writer (one sealed plain
segment with trades, a marker and a quarantined frame; one compressed; one active). Frames are
located with the layout of docs/FORMAT.md written out here with `struct`, and a damaged frame
gets a correct CRC again where the class is "CRC fine, rule broken".
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import crc32c
import pytest

import pumpwatch
from conftest import T0, make_trades
from pumpwatch.purepy import store as purepy
from pumpwatch.purepy.log import compress as purepy_compress

DATA = Path(__file__).parent / "data"
SEG_ZST = "00000000000000000001.pwzst"
SEG_PLAIN = "00000000000000000002.pwlog"
SEG_ACTIVE = "00000000000000000003.pwlog"


# --- the recorded log ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A log as the recorder leaves it, and what every reader returns from it undamaged."""
    d = tmp_path_factory.mktemp("recorded") / "data"
    trades = make_trades(600, seed=18)
    with pumpwatch.Store(d, zstd_level=3) as s:
        s.append_trades(trades[:200])
        s.roll()
        assert s.wait_compressed(30)
    with pumpwatch.Store(d, zstd_level=0, segment_max_bytes=1 << 20) as s:
        s.append_trades(trades[200:300])
        s.append_marker(
            "gap_unfillable",
            venue="okx-swap",
            symbol="BTC-USDT-SWAP",
            ts_ns=T0 + 5,
            from_ts_ns=T0,
            to_ts_ns=T0 + 3,
            from_id="10",
            to_id="20",
            detail="REST reach exceeded",
        )
        s.append_quarantined("gate-spot", T0 + 7, "bad json", b'{"x":')
        s.append_trades(trades[300:400])
        s.roll()
        s.append_trades(trades[400:])
        s.flush()
        s.close(seal=False)
    (d / "LOCK").unlink(missing_ok=True)
    base = read_all(d)
    assert base["verify_rust"]["ok"] and base["verify_rust"]["records"] == 602, base["verify_rust"]
    assert len(base["rust"]["trades"]) == 600
    return d, base


def read_all(d: Path) -> dict:
    """What both readers return from `d`: trades, markers, quarantined frames and verify."""
    out = {"verify_rust": pumpwatch.verify(d), "verify_py": purepy.verify(d)}
    r = pumpwatch.ReadOnlyStore(d)
    out["rust"] = {
        "trades": r.query().to_pylist(),  # raises on invalid UTF-8 in a string column
        "markers": r.markers().to_pylist(),
        "quarantined": [list(q) for q in r.quarantined()],
    }
    p = purepy.Store.open_readonly(d)
    try:
        out["py"] = {
            "trades": p.query().to_pylist(),
            "markers": p.markers().to_pylist(),
            "quarantined": [list(q) for q in p.quarantined()],
        }
    finally:
        p.close()
    return out


def findings(report: dict) -> list[tuple]:
    """Where and why, per list, without the wording after the rule's tag."""
    return sorted(
        (kind, d["segment"], d["offset"], d["length"], d["reason"].split("]")[0] + "]")
        for kind in ("damaged", "torn_tail", "headers")
        for d in report[kind]
    )


def frames(seg: Path) -> list[tuple[int, bytes]]:
    """(offset, payload) of every frame of a clean plain segment, walked by the length fields."""
    b = seg.read_bytes()
    end = struct.unpack_from("<Q", b, 40)[0]
    out, off = [], 64
    while off + 8 <= end:
        n = struct.unpack_from("<I", b, off)[0]
        if n == 0:
            break
        out.append((off, b[off + 8 : off + 8 + n]))
        off += 8 + n
    return out


def rewrite(seg: Path, off: int, payload: bytes, crc: bool = True) -> None:
    """Puts `payload` (same length) in the frame at `off`, with its CRC fixed unless `crc` is False."""
    b = bytearray(seg.read_bytes())
    assert struct.unpack_from("<I", b, off)[0] == len(payload)
    b[off + 8 : off + 8 + len(payload)] = payload
    if crc:
        struct.pack_into("<I", b, off + 4, crc32c.crc32c(payload))
    seg.write_bytes(bytes(b))


def trade_fields(p: bytes) -> dict:
    _, venue, side, ls, flags, lp, lq, _ts, _recv, _num, li = struct.unpack_from("<BBBBHBBqqQB", p)
    return dict(venue=venue, side=side, ls=ls, flags=flags, lp=lp, lq=lq, li=li)


def nth_trade(seg: Path, n: int, text_id: bool = False) -> tuple[int, bytes]:
    found = [(o, p) for o, p in frames(seg) if p[0] == 1 and (p[32] > 0) == text_id]
    return found[n]


def trade_id_of(p: bytes) -> str:
    f = trade_fields(p)
    if f["li"]:
        return p[33 + f["ls"] + f["lp"] + f["lq"] :].decode()
    return str(struct.unpack_from("<Q", p, 24)[0])


def without(rows: list[dict], *trade_ids: str) -> list[dict]:
    gone = [r for r in rows if r["trade_id"] in trade_ids]
    assert len(gone) == len(trade_ids)
    return [r for r in rows if r["trade_id"] not in trade_ids]


# --- one damage per rule ------------------------------------------------------------------------
# Each returns (the findings verify must report, the trades queries must return); `seg` is the
# sealed plain segment of the copy, `base` what the undamaged log reads as.


def payload_rule(patch, tag, text_id=False):
    """A trade whose CRC is fine but whose payload breaks the rule `tag`: skipped, named, lost alone."""

    def damage(d: Path, base: dict):
        seg = d / "log" / SEG_PLAIN
        off, p = nth_trade(seg, 7, text_id)
        rewrite(seg, off, patch(bytearray(p)))
        nxt = off + 8 + len(p)
        return [("damaged", SEG_PLAIN, off, nxt - off, tag)], without(base["rust"]["trades"], trade_id_of(p))

    return damage


def set_byte(at, value):
    def patch(p):
        p[at] = value
        return bytes(p)

    return patch


def set_flags(p):
    struct.pack_into("<H", p, 4, 0x400)  # past the last flag (UNKNOWN_TYPE, 0x200)
    return bytes(p)


def empty_symbol(p):
    # The symbol's bytes become the start of a text id: same length, symbol length 0.
    f = trade_fields(bytes(p))
    ls, rest = f["ls"], bytes(p[33 + f["ls"] :])
    body = rest[: f["lp"] + f["lq"]]
    old_id = trade_id_of(bytes(p)) if f["li"] else ""
    ident = bytes(p[33 : 33 + ls]) + old_id.encode() if f["li"] else bytes(p[33 : 33 + ls])
    p[3], p[32] = 0, len(ident)
    return bytes(p[:33]) + body + ident


def in_field(field, value):
    """Puts byte `value` first in the trade's `field` (symbol, price, qty, id text)."""

    def patch(p):
        f = trade_fields(bytes(p))
        at = {
            "symbol": 33,
            "price": 33 + f["ls"],
            "qty": 33 + f["ls"] + f["lp"],
            "id": 33 + f["ls"] + f["lp"] + f["lq"],
        }[field]
        p[at] = value
        return bytes(p)

    return patch


def exponent_price(p):
    f = trade_fields(bytes(p))
    at = 33 + f["ls"]
    assert f["lp"] >= 3
    p[at : at + 3] = b"1e5"
    return bytes(p)


def crc_damage(d, base):
    seg = d / "log" / SEG_PLAIN
    off, p = nth_trade(seg, 3)
    q = bytearray(p)
    q[20] ^= 0x40
    rewrite(seg, off, bytes(q), crc=False)
    return [("damaged", SEG_PLAIN, off, 8 + len(p), "[crc]")], without(base["rust"]["trades"], trade_id_of(p))


def length_damage(value):
    def damage(d, base):
        seg = d / "log" / SEG_PLAIN
        off, p = nth_trade(seg, 5)
        b = bytearray(seg.read_bytes())
        struct.pack_into("<I", b, off, value)
        seg.write_bytes(bytes(b))
        return [("damaged", SEG_PLAIN, off, 8 + len(p), "[length]")], without(base["rust"]["trades"], trade_id_of(p))

    return damage


def other_record(kind_code, patch, tag, lost_key):
    """A marker or quarantined frame, CRC fine, breaking rule `tag`."""

    def damage(d, base):
        seg = d / "log" / SEG_PLAIN
        off, p = next((o, p) for o, p in frames(seg) if p[0] == kind_code)
        rewrite(seg, off, patch(bytearray(p)))
        return [("damaged", SEG_PLAIN, off, 8 + len(p), tag)], base["rust"]["trades"]

    damage.lost = (lost_key,)
    return damage


def lowered_end(d, base):
    """The silent truncation of the issue: the published end lowered in a sealed file."""
    seg = d / "log" / SEG_PLAIN
    b = bytearray(seg.read_bytes())
    struct.pack_into("<Q", b, 40, frames(seg)[40][0])
    seg.write_bytes(bytes(b))
    # The seal fails: its end is not trusted, the whole file is read, nothing is hidden.
    return [("headers", SEG_PLAIN, 36, 28, "[seal]")], base["rust"]["trades"]


def lowered_end_and_cut(d, base):
    """Lowered end and the file cut to it: the seal still names it; the cut records are gone."""
    seg = d / "log" / SEG_PLAIN
    fr = frames(seg)
    cut = fr[40][0]
    b = bytearray(seg.read_bytes()[:cut])
    struct.pack_into("<Q", b, 40, cut)
    seg.write_bytes(bytes(b))
    lost = [trade_id_of(p) for _, p in fr[40:] if p[0] == 1]
    return [("headers", SEG_PLAIN, 36, 28, "[seal]")], without(base["rust"]["trades"], *lost)


lowered_end_and_cut.lost = ("markers", "quarantined")  # they were after the cut


def extended(d, base):
    seg = d / "log" / SEG_PLAIN
    size = seg.stat().st_size
    with open(seg, "ab") as f:
        f.write(b"\x01" * 100)
    return [("damaged", SEG_PLAIN, size, 100, "[extended]")], base["rust"]["trades"]


def truncated(d, base):
    seg = d / "log" / SEG_PLAIN
    fr = frames(seg)
    size = seg.stat().st_size
    cut = fr[-1][0]  # the last record (a trade) cut off whole
    seg.write_bytes(seg.read_bytes()[:cut])
    return (
        [("damaged", SEG_PLAIN, cut, size - cut, "[truncated]")],
        without(base["rust"]["trades"], trade_id_of(fr[-1][1])),
    )


def replaced(d, base):
    """A record replaced by another valid one after sealing: only the seal's checksum sees it."""
    seg = d / "log" / SEG_PLAIN
    off, p = nth_trade(seg, 9)
    f = trade_fields(p)
    q = bytearray(p)
    at = 33 + f["ls"]
    q[at] = ord("1") if q[at] != ord("1") else ord("2")  # another plain decimal, same length
    rewrite(seg, off, bytes(q))
    rows = [dict(r) for r in base["rust"]["trades"]]
    for r in rows:
        if r["trade_id"] == trade_id_of(p):
            r["price"] = q[at : at + f["lp"]].decode()
    end = seg.stat().st_size
    return [("damaged", SEG_PLAIN, 64, end - 64, "[seal-totals]")], rows


def zeroed_last(d, base):
    """The last record zeroed inside a sealed segment: zeros before the published end."""
    seg = d / "log" / SEG_PLAIN
    fr = frames(seg)
    off, p = fr[-1]
    b = bytearray(seg.read_bytes())
    b[off : off + 8 + len(p)] = bytes(8 + len(p))
    seg.write_bytes(bytes(b))
    return [("damaged", SEG_PLAIN, off, 8 + len(p), "[length]")], without(base["rust"]["trades"], trade_id_of(p))


def index_lie(d, base):
    """An index entry with a good CRC that leaves a trade's time out (a query would skip it)."""
    idx = d / "log" / SEG_PLAIN.replace(".pwlog", ".pwidx")
    b = bytearray(idx.read_bytes())
    at = 16  # the first entry
    start, end, lo, _hi = struct.unpack_from("<QQqq", b, at)
    struct.pack_into("<q", b, at + 24, lo)  # max = min
    struct.pack_into("<I", b, at + 40, crc32c.crc32c(bytes(b[at : at + 40])))
    idx.write_bytes(bytes(b))
    return [("damaged", SEG_PLAIN, start, end - start, "[index]")], None


def torn_active(d, base):
    seg = d / "log" / SEG_ACTIVE
    end = struct.unpack_from("<Q", seg.read_bytes(), 40)[0]
    b = bytearray(seg.read_bytes())
    b[end : end + 20] = b"\x07" * 20
    seg.write_bytes(bytes(b))
    return [("torn_tail", SEG_ACTIVE, end, 20, "[length]")], base["rust"]["trades"]


def zst_layout(path: Path):
    b = path.read_bytes()
    frames_n = struct.unpack_from("<I", b, 12)[0]
    entries = [struct.unpack_from("<QQqqIIQII", b, 128 + 64 * k) for k in range(frames_n)]
    return b, entries


def zst_frame_crc(d, base):
    path = d / "log" / SEG_ZST
    b, entries = zst_layout(path)
    start, end, *_, offset, length, _crc = entries[0]
    b = bytearray(b)
    b[offset + length // 2] ^= 0xFF
    path.write_bytes(bytes(b))
    # Every trade of the first block is lost, the others read.
    lost = [t["trade_id"] for t in base["rust"]["trades"] if t["trade_id"] in ZST_BLOCK0[0]]
    return [("damaged", SEG_ZST, start, end - start, "[frame]")], without(base["rust"]["trades"], *lost)


def zst_extended(d, base):
    path = d / "log" / SEG_ZST
    size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b"\x28\xb5\x2f\xfd" + b"\x00" * 60)
    return [("damaged", SEG_ZST, size, 64, "[extended]")], base["rust"]["trades"]


def zst_table_lie(d, base):
    path = d / "log" / SEG_ZST
    b, entries = zst_layout(path)
    b = bytearray(b)
    at = 128
    trades = struct.unpack_from("<I", b, at + 32)[0]
    struct.pack_into("<I", b, at + 32, trades + 1)
    struct.pack_into("<I", b, at + 56, crc32c.crc32c(bytes(b[at : at + 56])))
    path.write_bytes(bytes(b))
    start, end = entries[0][:2]
    return [("damaged", SEG_ZST, start, end - start, "[index]")], base["rust"]["trades"]


def zst_seal(d, base):
    path = d / "log" / SEG_ZST
    b = bytearray(path.read_bytes())
    b[64 + 48] ^= 1  # the seal's record count in the copied plain header
    path.write_bytes(bytes(b))
    return [("headers", SEG_ZST, 36, 28, "[seal]")], base["rust"]["trades"]


def zst_header(d, base):
    """The compressed file's own header damaged: named, read around, nothing lost."""
    path = d / "log" / SEG_ZST
    b = bytearray(path.read_bytes())
    b[20] ^= 0x10  # inside the sequence number: the header CRC fails
    path.write_bytes(bytes(b))
    return [("headers", SEG_ZST, 0, 64, "[header]")], base["rust"]["trades"]


def zst_table_entry(d, base):
    """A frame table entry failing its CRC: named; its frame decoded in a run, nothing lost."""
    path = d / "log" / SEG_ZST
    b, entries = zst_layout(path)
    plain_len = struct.unpack_from("<Q", b, 24)[0]
    b = bytearray(b)
    b[128 + 16] ^= 0x01  # the first entry's smallest time
    path.write_bytes(bytes(b))
    nxt = entries[1][0] if len(entries) > 1 else plain_len
    return [("headers", SEG_ZST, 64, nxt - 64, "[frame-table]")], base["rust"]["trades"]


def plain_header(d, base):
    """A sealed segment's header damaged: named; with no trusted end it is read to the end of the
    file, which for a sealed segment is where its records end: nothing lost."""
    seg = d / "log" / SEG_PLAIN
    b = bytearray(seg.read_bytes())
    b[26] ^= 0x01  # the creation time: the header CRC fails
    seg.write_bytes(bytes(b))
    return [("headers", SEG_PLAIN, 0, 64, "[header]")], base["rust"]["trades"]


ZST_BLOCK0: list = []

DAMAGE = {
    "crc": crc_damage,
    "zero-length": length_damage(0),
    "length-over-16MiB": length_damage((16 << 20) + 1),
    "unknown-kind": payload_rule(set_byte(0, 9), "[kind]"),
    "field-lengths": payload_rule(set_byte(6, 60), "[size]"),
    "unknown-venue": payload_rule(set_byte(1, 13), "[venue]"),
    "unknown-side": payload_rule(set_byte(2, 3), "[side]"),
    "unknown-flag-bits": payload_rule(set_flags, "[flags]"),
    "empty-symbol": payload_rule(empty_symbol, "[symbol]"),
    "symbol-not-utf8": payload_rule(in_field("symbol", 0xFF), "[symbol]"),
    "price-exponent": payload_rule(exponent_price, "[price]"),
    "qty-not-decimal": payload_rule(in_field("qty", ord("x")), "[qty]"),
    "id-not-utf8": payload_rule(in_field("id", 0xC3), "[trade-id]", text_id=True),
    "marker-kind": other_record(2, set_byte(2, 99), "[marker-kind]", "markers"),
    "marker-text-not-utf8": other_record(2, lambda p: bytes(p[:-1]) + b"\xff", "[text]", "markers"),
    "quarantine-reason-not-utf8": other_record(3, set_byte(16, 0xFF), "[text]", "quarantined"),
    "lowered-end": lowered_end,
    "lowered-end-and-cut": lowered_end_and_cut,
    "extended": extended,
    "truncated": truncated,
    "replaced-record": replaced,
    "zeros-before-end": zeroed_last,
    "index-lie": index_lie,
    "torn-active-tail": torn_active,
    "zst-frame-crc": zst_frame_crc,
    "zst-extended": zst_extended,
    "zst-frame-table-lie": zst_table_lie,
    "zst-seal": zst_seal,
    "plain-header": plain_header,
    "zst-header": zst_header,
    "zst-frame-table-entry": zst_table_entry,
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_damage_is_named_and_both_readers_return_what_the_spec_says(recorded, tmp_path, name):
    src, base = recorded
    if not ZST_BLOCK0:
        # Trade ids of the first compressed block, from the undamaged copy.
        _, entries = zst_layout(src / "log" / SEG_ZST)
        ZST_BLOCK0.append(block0_ids(src, entries[0][4]))
    d = tmp_path / "data"
    shutil.copytree(src, d)
    expected_findings, expected_trades = DAMAGE[name](d, base)
    got = read_all(d)  # no reader raises

    assert findings(got["verify_rust"]) == sorted(expected_findings), got["verify_rust"]
    assert not got["verify_rust"]["ok"]
    # The pure-Python reader follows the document: same findings, counts and rows.
    assert findings(got["verify_py"]) == findings(got["verify_rust"])
    for key in ("segments", "records", "trades", "markers", "quarantined", "bytes", "ok"):
        assert got["verify_py"][key] == got["verify_rust"][key], key
    assert got["py"] == got["rust"]
    if expected_trades is not None:
        assert got["rust"]["trades"] == expected_trades
    lost = getattr(DAMAGE[name], "lost", ())
    for key in ("markers", "quarantined"):
        assert got["rust"][key] == ([] if key in lost else base["rust"][key]), key


def block0_ids(src: Path, n: int) -> set:
    """Trade ids in the first block of the compressed segment (the first n trades in log order)."""
    import os

    fd = os.open(src / "log" / SEG_ZST, os.O_RDONLY)
    try:
        seg = purepy_compress.CompressedSegment(fd, src / "log" / SEG_ZST, 1)
        data, err = seg.read_block(0)
        assert err is None
        start = seg.blocks[0].entry.start
        ids = {r.trade_id for _, _, r in purepy.FrameWalk(data, start, start + len(data), base=start)}
    finally:
        os.close(fd)
    assert len(ids) == n
    return ids


def test_every_rule_has_a_damage_case_and_the_spec_lists_every_rule():
    """The rules of docs/FORMAT.md's checklist, the tags readers report and the corpus agree."""
    spec = (Path(__file__).parents[1] / "docs" / "FORMAT.md").read_text()
    tags = {
        "[crc]",
        "[length]",
        "[bounds]",
        "[kind]",
        "[size]",
        "[venue]",
        "[side]",
        "[flags]",
        "[symbol]",
        "[price]",
        "[qty]",
        "[trade-id]",
        "[marker-kind]",
        "[text]",
        "[seal]",
        "[seal-totals]",
        "[truncated]",
        "[extended]",
        "[index]",
        "[frame]",
        "[header]",
        "[frame-table]",
    }
    for tag in tags:
        assert f"`{tag}`" in spec, tag


# --- a log written before the seal ----------------------------------------------------------------


def test_a_log_written_before_the_seal_verifies_and_reads_as_before(tmp_path):
    """tests/data/v1log was written by PumpWatch at commit bbbd38c (format 1, no seal): a sealed
    plain segment, a compressed one and an active one. It verifies and reads exactly as then."""
    expected = json.loads((DATA / "v1log.expected.json").read_text())
    d = tmp_path / "v1log"
    shutil.copytree(DATA / "v1log", d)
    assert (d / "log" / SEG_PLAIN).read_bytes()[8] == 1  # format version 1
    got = read_all(d)
    assert got["verify_rust"] == expected["verify"]
    py = dict(got["verify_py"])
    assert py == {**expected["verify"], "ok": True}
    for side in ("rust", "py"):
        assert got[side]["trades"] == expected["trades"]
        assert got[side]["markers"] == expected["markers"]
        assert [[v, t, r, raw.hex()] for v, t, r, raw in got[side]["quarantined"]] == expected["quarantined"]

    # A writer of today continues it: the old active segment is sealed with a seal, all reads on.
    more = make_trades(30, seed=99)
    with pumpwatch.Store(d, zstd_level=0) as s:
        s.append_trades(more)
        s.roll()
    v = pumpwatch.verify(d)
    assert v["ok"] and v["trades"] == 150, v
    assert purepy.verify(d)["ok"]
    head = (d / "log" / SEG_ACTIVE).read_bytes()[:64]
    assert head[8] == 2 and struct.unpack_from("<I", head, 36)[0] == 1  # sealed, with a seal
    assert len(pumpwatch.ReadOnlyStore(d).query().to_pylist()) == 150

    # The pure-Python writer continues one the same way.
    p = tmp_path / "v1log-py"
    shutil.copytree(DATA / "v1log", p)
    with purepy.Store(p) as s:
        s.append_trades(more)
        s.roll()
    assert (p / "log" / SEG_ACTIVE).read_bytes()[:64] == head[:24] + (p / "log" / SEG_ACTIVE).read_bytes()[24:64]
    for report in (pumpwatch.verify(p), purepy.verify(p)):
        assert report["ok"] and report["trades"] == 150, report


def test_both_writers_seal_the_same_way(tmp_path):
    """A segment sealed by the Rust writer and one sealed by the pure-Python writer, from the same
    trades, carry the same seal (records, CRC chain) and both verify."""
    trades = make_trades(300, seed=5)
    with pumpwatch.Store(tmp_path / "rs", zstd_level=0) as s:
        s.append_trades(trades)
        s.roll()
    with purepy.Store(tmp_path / "py") as s:
        s.append_trades(trades)
        s.roll()
    seals = []
    for side in ("rs", "py"):
        head = (tmp_path / side / "log" / "00000000000000000001.pwlog").read_bytes()[:64]
        seals.append(struct.unpack_from("<QQI", head, 40))
        assert crc32c.crc32c(head[:60]) == struct.unpack_from("<I", head, 60)[0]
        assert pumpwatch.verify(tmp_path / side)["ok"] and purepy.verify(tmp_path / side)["ok"]
    assert seals[0] == seals[1]
    assert seals[0][1] == 300
    # Compressed by either path, the seal travels in the embedded header and still checks out.
    assert purepy.compress_segment(tmp_path / "py" / "log", 1)
    with pumpwatch.Store(tmp_path / "rs", zstd_level=3) as s:
        assert s.wait_compressed(30)
    for side in ("rs", "py"):
        zst = (tmp_path / side / "log" / "00000000000000000001.pwzst").read_bytes()
        assert struct.unpack_from("<QQI", zst, 64 + 40) == seals[0]
        for report in (pumpwatch.verify(tmp_path / side), purepy.verify(tmp_path / side)):
            assert report["ok"] and report["trades"] == 300, report


def test_the_worked_example_of_the_spec_is_a_segment_both_readers_read(tmp_path):
    """The annotated bytes of docs/FORMAT.md are a real sealed segment: it verifies, seal and all,
    and both readers return the two trades the text describes."""
    spec = (Path(__file__).parents[1] / "docs" / "FORMAT.md").read_text()
    block = spec.split("```hex worked-example\n", 1)[1].split("```", 1)[0]
    data = bytes.fromhex("".join(line[6:] for line in block.splitlines()))
    assert len(data) == 184
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "00000000000000000001.pwlog").write_bytes(data)
    got = read_all(tmp_path)
    assert got["verify_rust"]["ok"] and got["verify_rust"]["trades"] == 2, got["verify_rust"]
    assert got["verify_py"]["ok"]
    want = [
        dict(
            venue="binance-usdm",
            symbol="BTCUSDT",
            trade_id="8121136411",
            price="83680.00",
            qty="0.001",
            side="sell",
            ts_ns=1790370834848000000,
            recv_ns=1790370834900000000,
            flags=1,
        ),
        dict(
            venue="okx-swap",
            symbol="BTC-USDT-SWAP",
            trade_id="007",
            price="1",
            qty="2",
            side="buy",
            ts_ns=1790370834849000000,
            recv_ns=1790370834901000000,
            flags=0,
        ),
    ]
    assert got["rust"]["trades"] == want and got["py"]["trades"] == want


def test_ingest_writes_only_what_a_reader_accepts(tmp_path):
    """The writing side of the rules: a symbol that is not UTF-8 (possible in an Arrow buffer) is
    refused with the row named, a venue frame with an exponent price is quarantined with the
    reason, and nothing of either reaches the log as a trade."""
    import numpy as np
    import pyarrow as pa

    from conftest import trades_table

    table = trades_table(make_trades(3))
    symbols = [b"\xffTCUSDT"] + [s.encode() for s in table.column("symbol").to_pylist()[1:]]
    offsets = np.cumsum([0] + [len(s) for s in symbols], dtype=np.int32)
    bad = pa.Array.from_buffers(
        pa.string(), 3, [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(symbols))]
    )
    table = table.set_column(table.schema.get_field_index("symbol"), "symbol", bad)
    frame = json.dumps(
        {
            "e": "trade",
            "E": 1790370834848,
            "s": "BTCUSDT",
            "t": 5,
            "p": "1e5",
            "q": "0.001",
            "T": 1790370834848,
            "m": True,
        }
    )
    with pumpwatch.Store(tmp_path / "d") as s:
        with pytest.raises(pumpwatch.errors.InvalidTradeError, match=r"row 0 .*symbol is not valid UTF-8"):
            s.append_trades(table)
        stored, quarantined = s.ingest("binance-spot", frame, 1790370834900000000)
        assert stored == 0 and "1e5" in quarantined[0][2]
    v = pumpwatch.verify(tmp_path / "d")
    assert v["ok"] and (v["trades"], v["quarantined"]) == (0, 1)


@pytest.mark.parametrize("target", [SEG_PLAIN, SEG_ZST, SEG_ACTIVE])
def test_random_byte_damage_reads_the_same_in_both_readers(recorded, tmp_path, target):
    """Beyond one case per rule: bytes flipped at random (fixed seed) anywhere in a segment, headers
    and tables included. Neither reader raises, and they agree on every finding and every row."""
    import random

    src, base = recorded
    rng = random.Random(18)
    size = (src / "log" / target).stat().st_size
    for k in range(12):
        d = tmp_path / f"c{k}"
        shutil.copytree(src, d)
        path = d / "log" / target
        b = bytearray(path.read_bytes())
        for _ in range(rng.choice([1, 1, 2, 5])):
            at = rng.randrange(min(size, 4096) if rng.random() < 0.5 else size)
            b[at] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(b))
        got = read_all(d)
        assert findings(got["verify_py"]) == findings(got["verify_rust"]), (k, got["verify_rust"])
        for key in ("records", "trades", "markers", "quarantined", "bytes", "ok"):
            assert got["verify_py"][key] == got["verify_rust"][key], (k, key)
        assert got["py"] == got["rust"], k
        # What a reader returns is a subset of what was recorded: damage never invents a trade.
        recorded_rows = {tuple(sorted(r.items())) for r in base["rust"]["trades"]}
        invented = [r for r in got["rust"]["trades"] if tuple(sorted(r.items())) not in recorded_rows]
        assert not invented, (k, invented[:3])
