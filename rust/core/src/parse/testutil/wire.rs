//! The simulator's wire templates (`python/pumpwatch/sim/wire/<venue>.json`) rendered in Rust, so
//! that the Rust tests send the same frames as the simulator from the same one description of each
//! venue. Rendering follows `sim/wire/__init__.py` exactly: the template's text without whitespace
//! outside strings, key order as written (no `serde_json::Value`, which would sort the keys),
//! `"{x:int}"`/`"{x:bool}"` put in bare, `"{x}"`/`"{x:num}"` as `"value"`, and an array whose one
//! element is an object or array holding the rows, repeated comma-separated.
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

/// A piece of a compiled template: constant text, a value, or where the rows go.
#[derive(Clone)]
enum Piece {
    Text(String),
    Value { name: String, quoted: bool },
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
        let tree = &text[at..value_end(&text, at)];
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

    fn put(&self, pieces: &[Piece], fields: &Fields<'_>, out: &mut String) {
        for piece in pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Value { name, quoted } => {
                    let (_, v) = fields
                        .iter()
                        .find(|(n, _)| n == name)
                        .unwrap_or_else(|| panic!("{}: no value given for placeholder {name:?}", self.what));
                    let v = v.to_string();
                    out.push_str(&if *quoted { format!("\"{v}\"") } else { v });
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

/// Where the value of member `key` of the object starting at `obj` begins.
fn member(text: &str, obj: usize, key: &str) -> Option<usize> {
    let quoted = format!("\"{key}\"");
    let mut at = obj + 1;
    while text[at..].starts_with('"') {
        let colon = value_end(text, at);
        if text[at..colon] == quoted {
            return Some(colon + 1);
        }
        at = value_end(text, colon + 1) + 1; // past the value and its comma
    }
    None
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
                let quoted = match kind {
                    "text" | "num" => true,
                    "int" | "bool" => false,
                    k => panic!("{what}: placeholder {name:?} has kind {k:?}; kinds are text, num, int, bool"),
                };
                pieces.push(Piece::Text(std::mem::take(&mut text)));
                pieces.push(Piece::Value { name: name.to_owned(), quoted });
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
