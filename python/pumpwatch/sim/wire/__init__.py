"""The venues' trade messages as templates: one real frame per message type, values as placeholders.

Each venue has one file here, `<venue>.json` (the venue ids of `pumpwatch.sim.VENUE_IDS`):

    {"venue": "binance-usdm",
     "messages": {"@trade raw": {"source": "...", "template": {"e": "trade", "E": "{E:int}", ...}}},
     "control": {"ack": {"source": "...", "template": {"result": null, "id": "{id:json}"}}},
     "errors": {"REST error": {"source": "...", "template": {"code": "{code:int}", "msg": "{msg:str}"}}}}

`messages` are the trade messages (WebSocket and REST); `control` the venue's other WebSocket
messages: acks, errors, welcomes, pongs, notices of a coming disconnect; `errors` the bodies of its
REST refusals (a bad parameter, a rate limit). A template's `section` says which.

Control messages (acks, errors, welcomes, pongs, notices) are templates too. Where a venue leaves a
key out in some answers (an `id` only when the request had one), each form is its own template
(`ack` and `ack with id`): every template is one real shape, no optional parts.

A template is a real frame of that type (from tests/samples, or the venue's documented example where
the venue changed after our last capture; `source` says which) with key order kept and each value
that varies replaced by a placeholder: a JSON string that is all `{name}` or `{name:kind}`, where
`kind` says what the venue writes there:

- `text` (the default): a JSON string (`"BTCUSDT"`, `"Buy"`, a hex order id);
- `num`: a JSON string holding a plain decimal (`"83680.00"`, a nanosecond time `"1729843222921000000"`);
- `int`: a JSON integer; `bool`: `true` or `false`;
- `dec`: a JSON number with a fraction, written as given (Gate futures REST times in seconds with
  three decimals, `1787319911.612`); `fill` refuses a value a float would not keep exactly;
- `str`: a JSON string, escaped (free text that may carry what a client sent: an error message);
- `json`: any JSON value, encoded (a request id echoed back as the client sent it: a number, a
  string or null; a list of streams).

`text` and `num` go in as given, unescaped (fast: trade values); `str` and `json` go through the
JSON encoder, for control messages, where a value can be anything a client wrote.

An array whose one element is an object or an array holds the message's trades: the element is
the template of one row, repeated (comma-separated) for every row rendered. Everything else is a
constant of the venue's format (`"e":"trade"`, `"st":1`) and is sent as written.

The simulator compiles each WebSocket template once into a `%`-format string (server frames are
rendered by one format per message, no JSON encoder on the hot path); REST answers, which the server
encodes itself, are `fill`ed into JSON values. tests/test_sim_shapes.py holds every template against
the real frames in tests/samples (REST ones against the documented responses docs/VENUES.md quotes),
so a venue's trade shape is written here once.
Values are put in as given, unescaped: they are the simulator's own symbols, ids and decimals
(ASCII, no quote or backslash), which the shape test parses back as JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
KINDS = ("text", "num", "int", "dec", "bool", "str", "json")
SECTIONS = ("messages", "control", "errors")
#: A placeholder as JSON text: the quoted `{name}` / `{name:kind}` of a template value.
_PLACEHOLDER = re.compile(r'"\{([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+))?\}"')
_PLACEHOLDER_VALUE = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+))?\}$")
_ROWS = "{__rows__:rows}"  # where the rows go, while the envelope is compiled


class TemplateError(ValueError):
    """A template file that does not follow the rules above; the message names file and place."""


def placeholder(value: Any) -> tuple[str, str] | None:
    """(name, kind) when `value` is a placeholder, else None."""
    if not isinstance(value, str):
        return None
    m = _PLACEHOLDER_VALUE.match(value)
    return (m.group(1), m.group(2) or "text") if m else None


def is_rows(value: Any) -> bool:
    """An array holding the message's trades: one element, itself an object or an array."""
    return isinstance(value, list) and len(value) == 1 and isinstance(value[0], (dict, list))


class Template:
    """One message type of one venue, compiled: `render(rows, **fields)` gives the frame's text."""

    def __init__(self, venue: str, name: str, template: Any, source: str = "", section: str = "messages"):
        self.venue, self.name, self.template, self.source = venue, name, template, source
        self.section = section  # the file's section: "messages" (trades), "control" or "errors"
        where = f"{venue} {name!r}"
        envelope, row = _split_rows(template, where)
        self._envelope, self._row = envelope, row
        self.fields: dict[str, str] = {}  # name -> kind, envelope and row together
        self._format, self._bools, self._encoded = self._compile(envelope, where)
        self._row_format: str | None = None
        self._row_bools: tuple[str, ...] = ()
        if row is not None:
            self._row_format, self._row_bools, row_encoded = self._compile(row, where)
            if row_encoded:
                raise TemplateError(f"{where}: kinds str and json are for control messages, not trade rows")

    def _compile(self, tree: Any, where: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
        """(the `%`-format, its `bool` placeholders, its `str`/`json` ones: the values `render`
        converts before formatting)."""
        text = json.dumps(tree, separators=(",", ":"), ensure_ascii=False).replace("%", "%%")
        bools: list[str] = []
        encoded: list[str] = []

        def put(m: re.Match[str]) -> str:
            name, kind = m.group(1), m.group(2) or "text"
            if name == "__rows__":
                return "[%(__rows__)s]"
            if kind not in KINDS:
                raise TemplateError(f"{where}: placeholder {name!r} has kind {kind!r}; kinds are {', '.join(KINDS)}")
            if name in self.fields:
                raise TemplateError(f"{where}: placeholder {name!r} appears twice; give each value its own name")
            self.fields[name] = kind
            if kind == "bool":
                bools.append(name)
            elif kind in ("str", "json"):
                encoded.append(name)
            return f'"%({name})s"' if kind in ("text", "num") else f"%({name})s"

        return _PLACEHOLDER.sub(put, text), tuple(bools), tuple(encoded)

    def render(self, rows: Iterable[Mapping[str, Any]] = (), /, **fields: Any) -> str:
        """The frame with `fields` (and each of `rows`, for a template with rows) put in. Booleans
        are written as JSON's `true`/`false`, `str` and `json` values by the JSON encoder;
        everything else as `str()` gives it."""
        for b in self._bools:
            fields[b] = "true" if fields[b] else "false"
        for e in self._encoded:
            value = fields[e]
            fields[e] = _dumps(str(value) if self.fields[e] == "str" else value)
        if self._row_format is not None:
            fields["__rows__"] = ",".join(self.row(r) for r in rows)
        return self._format % fields

    def row(self, values: Mapping[str, Any]) -> str:
        """One row's text."""
        if self._row_bools:
            values = dict(values)
            for b in self._row_bools:
                values[b] = "true" if values[b] else "false"
        assert self._row_format is not None, f"{self.venue} {self.name!r} has no rows"
        return self._row_format % values

    def fill(self, rows: Iterable[Mapping[str, Any]] = (), /, **fields: Any) -> Any:
        """The message as a JSON value (a REST answer the server encodes), each value made the
        type its placeholder's kind says."""
        row = self._row
        return _fill(self._envelope, fields, lambda: [_fill(row, r, None) for r in rows])

    def specimen(self, **examples: Any) -> Any:
        """The template as a JSON value with each placeholder replaced by a value of its kind: what
        a test compares with real frames in shape. A `json` placeholder, which has no one kind,
        stands for null unless `examples` gives it a value (as do any others it names)."""
        stand_in = {"text": "x", "num": "0", "int": 0, "dec": 0.5, "bool": False, "str": "x", "json": None}

        def fill(v: Any) -> Any:
            if isinstance(v, dict):
                return {k: fill(x) for k, x in v.items()}
            if isinstance(v, list):
                return [fill(x) for x in v]
            p = placeholder(v)
            if p is None:
                return v
            return examples[p[0]] if p[0] in examples else stand_in[p[1]]

        return fill(self.template)


def _json_decimal(value: Any) -> float:
    """A `dec` value as the JSON number the server's encoder writes (a float, by its shortest
    text): refused where that would not be the decimal given."""
    number = float(value)
    if Decimal(repr(number)) != Decimal(str(value)):
        raise TemplateError(f"{value!r} is not kept exactly by a JSON number; give fewer digits")
    return number


_COERCE: dict[str, Any] = {
    "text": str,
    "num": str,
    "int": int,
    "dec": _json_decimal,
    "bool": bool,
    "str": str,
    "json": lambda v: v,
}


def _dumps(value: Any) -> str:
    """JSON text as the venues write it: compact, UTF-8 kept."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _fill(tree: Any, values: Mapping[str, Any], rows: Any) -> Any:
    """`tree` with its placeholders replaced from `values` (and its rows array by `rows()`)."""
    if isinstance(tree, dict):
        return {k: _fill(v, values, rows) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_fill(v, values, rows) for v in tree]
    if tree == _ROWS:
        return rows()
    p = placeholder(tree)
    return _COERCE[p[1]](values[p[0]]) if p else tree


def _split_rows(tree: Any, where: str) -> tuple[Any, Any]:
    """(the envelope with its rows array marked, the row template or None)."""
    found: list[Any] = []

    def walk(v: Any) -> Any:
        if is_rows(v):
            found.append(v[0])
            return _ROWS
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    envelope = walk(tree)
    if len(found) > 1:
        raise TemplateError(f"{where}: {len(found)} arrays of rows; a message has at most one")
    if found and any(is_rows(x) for x in (found[0].values() if isinstance(found[0], dict) else found[0])):
        raise TemplateError(f"{where}: rows inside a row are not supported")
    return envelope, (found[0] if found else None)


@cache
def templates(venue: str) -> dict[str, Template]:
    """Every message template of `venue`, by message type, compiled (read once per process)."""
    path = HERE / f"{venue}.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TemplateError(f"no wire templates for {venue!r}: {path} is missing") from None
    except ValueError as e:
        raise TemplateError(f"{path}: not JSON ({e})") from None
    if doc.get("venue") != venue:
        raise TemplateError(f"{path}: names venue {doc.get('venue')!r}, not {venue!r}")
    out = {
        name: Template(venue, name, spec["template"], spec.get("source", "")) for name, spec in doc["messages"].items()
    }
    for section in SECTIONS[1:]:
        for name, spec in doc.get(section, {}).items():
            if name in out:
                raise TemplateError(
                    f"{path}: {name!r} is in two sections ({out[name].section}, {section}); name them apart"
                )
            out[name] = Template(venue, name, spec["template"], spec.get("source", ""), section)
    return out


def template(venue: str, name: str) -> Template:
    """One message template: `template("binance-usdm", "@trade combined")`."""
    try:
        return templates(venue)[name]
    except KeyError:
        raise TemplateError(f"{venue} has no template {name!r}; it has: {', '.join(templates(venue))}") from None
