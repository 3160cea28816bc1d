//! The simulator's wire templates (`python/pumpwatch/sim/wire/<venue>.json`) rendered in Rust, so
//! that the Rust tests send the same frames as the simulator from the same one description of each
//! venue. Rendering follows `sim/wire/__init__.py` exactly: the template's text without whitespace
//! outside strings, key order as written (no `serde_json::Value`, which would sort the keys),
//! `"{x:int}"`/`"{x:bool}"` put in bare, `"{x}"`/`"{x:num}"` as `"value"`, and an array whose one
//! element is an object or array holding the rows, repeated comma-separated. Constants are kept as
//! written, where `json.dumps` would re-write an escape such as `\u00e9` or a number such as `1e5`:
//! the trade templates have neither, and `every_template_renders_the_json_it_describes` would show
//! one. The template rules themselves (one rows array, names used once) are checked on the Python
//! side (tests/test_sim_shapes.py), which loads every template.
use std::fmt::Display;

use crate::venue::Venue;

/// The wire file of `venue`, read at compile time: a template change reaches these tests too.
fn wire_file(venue: Venue) -> &'static str {
    match venue {
        Venue::BinanceSpot => include_str!("../../../../../python/pumpwatch/sim/wire/binance-spot.json"),
        Venue::BinanceUsdm => include_str!("../../../../../python/pumpwatch/sim/wire/binance-usdm.json"),
        Venue::BybitSpot => include_str!("../../../../../python/pumpwatch/sim/wire/bybit-spot.json"),
        Venue::BybitLinear => include_str!("../../../../../python/pumpwatch/sim/wire/bybit-linear.json"),
        Venue::OkxSpot => include_str!("../../../../../python/pumpwatch/sim/wire/okx-spot.json"),
        Venue::OkxSwap => include_str!("../../../../../python/pumpwatch/sim/wire/okx-swap.json"),
        Venue::KucoinSpot => include_str!("../../../../../python/pumpwatch/sim/wire/kucoin-spot.json"),
        Venue::KucoinFutures => include_str!("../../../../../python/pumpwatch/sim/wire/kucoin-futures.json"),
        Venue::GateSpot => include_str!("../../../../../python/pumpwatch/sim/wire/gate-spot.json"),
        Venue::GateFutures => include_str!("../../../../../python/pumpwatch/sim/wire/gate-futures.json"),
        Venue::PhemexSpot => include_str!("../../../../../python/pumpwatch/sim/wire/phemex-spot.json"),
        Venue::PhemexPerp => include_str!("../../../../../python/pumpwatch/sim/wire/phemex-perp.json"),
    }
}

/// What a placeholder may say a value is: a JSON string (`text`, `num`), an integer, a JSON number
/// written as given (`dec`: Gate futures REST times in seconds), a boolean.
const KINDS: [&str; 5] = ["text", "num", "int", "dec", "bool"];

/// A piece of a compiled template: constant text, a value, or where the rows go.
#[derive(Clone)]
enum Piece {
    Text(String),
    Value { name: String, kind: String },
    Rows,
}

/// One message type of one venue, compiled once: `render` gives a frame's text.
pub struct Template {
    what: String,
    envelope: Vec<Piece>,
    row: Vec<Piece>,
}

/// Values by placeholder name.
pub type Fields<'a> = [(&'a str, &'a dyn Display)];

impl Template {
    /// The template `message` of `venue`'s wire file (e.g. `"@trade combined"`).
    pub fn new(venue: Venue, message: &str) -> Template {
        let what = format!("{} {message:?}", venue.id());
        let text = minify(wire_file(venue));
        let messages = member(&text, 0, "messages").unwrap_or_else(|| panic!("{what}: no \"messages\""));
        let spec = member(&text, messages, message).unwrap_or_else(|| panic!("{what}: no such message"));
        let at = member(&text, spec, "template").unwrap_or_else(|| panic!("{what}: no \"template\""));
        Template::compiled(what, &text[at..value_end(&text, at)])
    }

    /// `tree` (minified template text) compiled; `what` names it in messages.
    fn compiled(what: String, tree: &str) -> Template {
        // The rows: the first array whose one element is an object or array (outermost first).
        let rows = tree.match_indices('[').map(|(i, _)| i).find_map(|i| {
            tree[i + 1..].starts_with(['{', '[']).then_some(())?;
            let end = value_end(tree, i + 1);
            tree[end..].starts_with(']').then_some((i, end))
        });
        let (envelope, row) = match rows {
            Some((i, end)) => (
                [compile(&tree[..=i], &what), vec![Piece::Rows], compile(&tree[end..], &what)].concat(),
                compile(&tree[i + 1..end], &what),
            ),
            None => (compile(tree, &what), Vec::new()),
        };
        Template { what, envelope, row }
    }

    /// The frame with `fields` in the envelope and one row per element of `rows`.
    pub fn render(&self, fields: &Fields<'_>, rows: &[&Fields<'_>]) -> String {
        let mut out = String::new();
        for piece in &self.envelope {
            match piece {
                Piece::Rows => {
                    for (n, r) in rows.iter().enumerate() {
                        out.push_str(if n == 0 { "" } else { "," });
                        self.put(&self.row, r, &mut out);
                    }
                }
                p => self.put(std::slice::from_ref(p), fields, &mut out),
            }
        }
        out
    }

    /// Every placeholder as (name, kind), envelope first, then the row.
    pub fn fields(&self) -> Vec<(&str, &str)> {
        let pieces = self.envelope.iter().chain(&self.row);
        pieces
            .filter_map(|p| match p {
                Piece::Value { name, kind } => Some((name.as_str(), kind.as_str())),
                _ => None,
            })
            .collect()
    }

    /// Whether the message has an array of rows.
    pub fn has_rows(&self) -> bool {
        !self.row.is_empty()
    }

    fn put(&self, pieces: &[Piece], fields: &Fields<'_>, out: &mut String) {
        for piece in pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Value { name, kind } => {
                    let (_, v) = fields
                        .iter()
                        .find(|(n, _)| n == name)
                        .unwrap_or_else(|| panic!("{}: no value given for placeholder {name:?}", self.what));
                    let v = v.to_string();
                    let quoted = matches!(kind.as_str(), "text" | "num");
                    out.push_str(&if quoted { format!("\"{v}\"") } else { v });
                }
                Piece::Rows => panic!("{}: rows inside a row are not supported", self.what),
            }
        }
    }
}

/// `text` without the whitespace outside strings (the compact form `json.dumps` writes).
fn minify(text: &str) -> String {
    let (mut out, mut in_str, mut escaped) = (String::with_capacity(text.len()), false, false);
    for c in text.chars() {
        if in_str {
            (in_str, escaped) = (escaped || c != '"', !escaped && c == '\\');
        } else if c.is_ascii_whitespace() {
            continue;
        } else {
            in_str = c == '"';
        }
        out.push(c);
    }
    out
}

/// Where the JSON value starting at `at` of minified `text` ends.
fn value_end(text: &str, at: usize) -> usize {
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for (i, c) in text[at..].char_indices() {
        if in_str {
            (in_str, escaped) = (escaped || c != '"', !escaped && c == '\\');
            if !in_str && depth == 0 {
                return at + i + 1;
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '{' | '[' => depth += 1,
            '}' | ']' | ',' if depth == 0 => return at + i,
            '}' | ']' => {
                depth -= 1;
                if depth == 0 {
                    return at + i + 1;
                }
            }
            _ => {}
        }
    }
    text.len()
}

/// (key with its quotes, where its value begins) of each member of the object starting at `obj`.
fn members(text: &str, obj: usize) -> Vec<(&str, usize)> {
    let (mut found, mut at) = (Vec::new(), obj + 1);
    while text[at..].starts_with('"') {
        let colon = value_end(text, at);
        found.push((&text[at..colon], colon + 1));
        at = value_end(text, colon + 1) + 1; // past the value and its comma (or the closing brace)
    }
    found
}

/// Where the value of member `key` of the object starting at `obj` begins.
fn member(text: &str, obj: usize, key: &str) -> Option<usize> {
    let quoted = format!("\"{key}\"");
    members(text, obj).into_iter().find(|(k, _)| *k == quoted).map(|(_, at)| at)
}

/// The message types of `venue`'s wire file, in file order.
pub fn messages(venue: Venue) -> Vec<String> {
    let text = minify(wire_file(venue));
    let at = member(&text, 0, "messages").unwrap_or_else(|| panic!("{}: no \"messages\"", venue.id()));
    members(&text, at).into_iter().map(|(k, _)| k[1..k.len() - 1].to_owned()).collect()
}

/// Constant text and placeholders of a (minified) piece of template.
fn compile(tree: &str, what: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let (mut text, mut at) = (String::new(), 0);
    while let Some(i) = tree[at..].find('"').map(|i| at + i) {
        let end = value_end(tree, i);
        text.push_str(&tree[at..i]);
        match placeholder(&tree[i + 1..end - 1]) {
            Some((name, kind)) => {
                if !KINDS.contains(&kind) {
                    panic!("{what}: placeholder {name:?} has kind {kind:?}; kinds are {}", KINDS.join(", "));
                }
                pieces.push(Piece::Text(std::mem::take(&mut text)));
                pieces.push(Piece::Value { name: name.to_owned(), kind: kind.to_owned() });
            }
            None => text.push_str(&tree[i..end]),
        }
        at = end;
    }
    text.push_str(&tree[at..]);
    pieces.push(Piece::Text(text));
    pieces
}

/// (name, kind) of a string's content that is all `{name}` or `{name:kind}`.
fn placeholder(s: &str) -> Option<(&str, &str)> {
    let inner = s.strip_prefix('{')?.strip_suffix('}')?;
    let (name, kind) = inner.split_once(':').unwrap_or((inner, "text"));
    let ident = |x: &str| x.chars().all(|c| c == '_' || c.is_ascii_alphanumeric());
    let first = name.chars().next()?;
    (!first.is_ascii_digit() && ident(name) && !kind.is_empty() && kind.chars().all(|c| c.is_ascii_lowercase()))
        .then_some((name, kind))
}

/// Every message of every wire file renders to the JSON its template describes: each placeholder
/// replaced by a value of its kind, the rows array holding one rendered row per row given.
#[test]
fn every_template_renders_the_json_it_describes() {
    use serde_json::{json, Value};
    fn stand_in(name: &str, kind: &str) -> Value {
        match kind {
            "num" => json!(format!("{}.5", name.len())),
            "int" => json!(name.len()),
            "dec" => json!(name.len() as f64 + 0.5),
            "bool" => json!(true),
            _ => json!(format!("v_{name}")),
        }
    }
    fn expected(tree: &Value, rows: usize) -> Value {
        match tree {
            Value::Array(a) if a.len() == 1 && (a[0].is_object() || a[0].is_array()) => {
                Value::Array(vec![expected(&a[0], rows); rows])
            }
            Value::Array(a) => Value::Array(a.iter().map(|v| expected(v, rows)).collect()),
            Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), expected(v, rows))).collect()),
            Value::String(s) => placeholder(s).map_or_else(|| tree.clone(), |(n, k)| stand_in(n, k)),
            v => v.clone(),
        }
    }
    let mut rendered = 0;
    for venue in crate::venue::ALL {
        let file: Value = serde_json::from_str(wire_file(venue)).expect("a wire file is JSON");
        for message in messages(venue) {
            let template = Template::new(venue, &message);
            let values: Vec<(&str, String)> = template
                .fields()
                .into_iter()
                .map(|(n, k)| (n, stand_in(n, k).to_string().trim_matches('"').to_owned()))
                .collect();
            let fields: Vec<(&str, &dyn Display)> = values.iter().map(|(n, v)| (*n, v as &dyn Display)).collect();
            let rows = if template.has_rows() { 2 } else { 0 };
            let text = template.render(&fields, &vec![fields.as_slice(); rows]);
            let got: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} {message:?}: {e}: {text}", venue.id()));
            let want = expected(&file["messages"][&message]["template"], rows);
            assert_eq!(got, want, "{} {message:?}: {text}", venue.id());
            rendered += 1;
        }
    }
    assert!(rendered >= 2 * crate::venue::ALL.len(), "every venue has its trade and REST templates");
}

/// Key order, spaces and escapes inside strings are kept; a row of an array is found as the rows.
#[test]
fn a_template_keeps_its_text() {
    let tree = minify(r#"{ "b key": "a \"quoted\" } ]", "a": "{a:int}", "rows": [ [ "{t:num}", 1 ] ], "c": "{c}" }"#);
    let t = Template::compiled("test".to_owned(), &tree);
    let (a, t1, t2, c): (u8, &str, &str, bool) = (7, "1.5", "2", false);
    let row1: &Fields<'_> = &[("t", &t1)];
    let row2: &Fields<'_> = &[("t", &t2)];
    assert_eq!(
        t.render(&[("a", &a), ("c", &c)], &[row1, row2]),
        r#"{"b key":"a \"quoted\" } ]","a":7,"rows":[["1.5",1],["2",1]],"c":"false"}"#
    );
    assert_eq!(t.fields(), [("a", "int"), ("c", "text"), ("t", "num")]);
}

#[test]
#[should_panic(expected = "bybit-spot \"publicTrade\": no value given for placeholder \"topic\"")]
fn a_missing_value_is_named() {
    Template::new(Venue::BybitSpot, "publicTrade").render(&[], &[]);
}
