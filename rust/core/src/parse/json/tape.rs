//! The strict tokenizer: a whole frame into a flat tape of tokens, each keeping its raw text span,
//! so that a venue parser can look members up in any order and take a number by its exact text.

use std::borrow::Cow;

use super::{digit_run, skip_ws, unescape_with};
use crate::parse::MAX_DEPTH;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Null,
    False,
    True,
    Num,
    Str,
    Obj,
    Arr,
}

/// One token. Strings: `start..end` is the content between the quotes and `esc` tells
/// whether it has backslash escapes. Numbers: the literal. Containers: the brackets.
/// `next` is the index of the node after this one's subtree (its next sibling).
#[derive(Clone, Copy, Debug)]
pub struct Node {
    pub kind: Kind,
    pub esc: bool,
    pub start: u32,
    pub end: u32,
    pub next: u32,
}

const NONE: Node = Node { kind: Kind::Null, esc: false, start: 0, end: 0, next: u32::MAX };

fn at(src: &[u8], pos: usize) -> String {
    match src.get(pos) {
        Some(&b) if (0x20..0x7f).contains(&b) => format!("'{}' at byte {pos}", b as char),
        Some(&b) => format!("byte 0x{b:02x} at offset {pos}"),
        None => format!("end of frame at byte {pos} (truncated JSON?)"),
    }
}

/// Tokenizes `src` (which the caller has checked is UTF-8) into `nodes`.
pub fn parse_into(src: &[u8], nodes: &mut Vec<Node>, stack: &mut Vec<u32>) -> Result<(), String> {
    nodes.clear();
    stack.clear();
    if src.len() >= u32::MAX as usize {
        return Err("frame is too large".to_owned());
    }
    let len = src.len();
    let mut pos = skip_ws(src, 0);
    if pos == len {
        return Err("frame is empty (no JSON value)".to_owned());
    }
    'value: loop {
        let c = match src.get(pos) {
            Some(&c) => c,
            None => return Err(format!("expected a value but found {}", at(src, pos))),
        };
        match c {
            b'{' | b'[' => {
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("JSON nested deeper than {} levels at byte {pos}", MAX_DEPTH));
                }
                let idx = nodes.len() as u32;
                let kind = if c == b'{' { Kind::Obj } else { Kind::Arr };
                nodes.push(Node { kind, esc: false, start: pos as u32, end: 0, next: 0 });
                stack.push(idx);
                pos = skip_ws(src, pos + 1);
                let close = if c == b'{' { b'}' } else { b']' };
                if src.get(pos) == Some(&close) {
                    pos += 1;
                    close_top(nodes, stack, pos);
                } else if c == b'{' {
                    pos = parse_key(src, pos, nodes)?;
                    continue 'value;
                } else {
                    continue 'value;
                }
            }
            b'"' => pos = parse_string(src, pos, nodes)?,
            b't' => pos = literal(src, pos, b"true", Kind::True, nodes)?,
            b'f' => pos = literal(src, pos, b"false", Kind::False, nodes)?,
            b'n' => pos = literal(src, pos, b"null", Kind::Null, nodes)?,
            b'-' | b'0'..=b'9' => pos = parse_number(src, pos, nodes)?,
            _ => return Err(format!("expected a JSON value but found {}", at(src, pos))),
        }
        // A value is complete: close containers or move to the next member.
        loop {
            pos = skip_ws(src, pos);
            let Some(&top) = stack.last() else {
                if pos != len {
                    return Err(format!("unexpected data after the JSON value: {}", at(src, pos)));
                }
                return Ok(());
            };
            let is_obj = nodes.get(top as usize).is_some_and(|n| n.kind == Kind::Obj);
            match src.get(pos) {
                Some(b',') => {
                    pos = skip_ws(src, pos + 1);
                    if is_obj {
                        pos = parse_key(src, pos, nodes)?;
                    }
                    continue 'value;
                }
                Some(b'}') if is_obj => {
                    pos += 1;
                    close_top(nodes, stack, pos);
                }
                Some(b']') if !is_obj => {
                    pos += 1;
                    close_top(nodes, stack, pos);
                }
                _ => {
                    let want = if is_obj { "',' or '}'" } else { "',' or ']'" };
                    return Err(format!("expected {want} but found {}", at(src, pos)));
                }
            }
        }
    }
}

fn close_top(nodes: &mut [Node], stack: &mut Vec<u32>, end: usize) {
    let next = nodes.len() as u32;
    if let Some(top) = stack.pop() {
        if let Some(n) = nodes.get_mut(top as usize) {
            n.end = end as u32;
            n.next = next;
        }
    }
}

fn parse_key(src: &[u8], pos: usize, nodes: &mut Vec<Node>) -> Result<usize, String> {
    if src.get(pos) != Some(&b'"') {
        return Err(format!("expected a string key but found {}", at(src, pos)));
    }
    let pos = skip_ws(src, parse_string(src, pos, nodes)?);
    if src.get(pos) != Some(&b':') {
        return Err(format!("expected ':' after an object key but found {}", at(src, pos)));
    }
    Ok(skip_ws(src, pos + 1))
}

fn parse_string(src: &[u8], pos: usize, nodes: &mut Vec<Node>) -> Result<usize, String> {
    let mut i = pos + 1;
    let mut esc = false;
    loop {
        match src.get(i) {
            None => return Err(format!("unterminated string starting at byte {pos} (truncated JSON?)")),
            Some(b'"') => break,
            Some(b'\\') => {
                esc = true;
                match src.get(i + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                    Some(b'u') => {
                        let hex = src.get(i + 2..i + 6);
                        if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                            return Err(format!("bad \\u escape in string at byte {i}"));
                        }
                        i += 6;
                    }
                    _ => return Err(format!("bad escape in string at byte {i}")),
                }
            }
            Some(&b) if b < 0x20 => {
                return Err(format!("unescaped control character 0x{b:02x} in string at byte {i}"));
            }
            Some(_) => i += 1,
        }
    }
    nodes.push(Node { kind: Kind::Str, esc, start: (pos + 1) as u32, end: i as u32, next: nodes.len() as u32 + 1 });
    Ok(i + 1)
}

fn literal(src: &[u8], pos: usize, word: &[u8], kind: Kind, nodes: &mut Vec<Node>) -> Result<usize, String> {
    if src.get(pos..pos + word.len()) != Some(word) {
        return Err(format!("invalid literal at byte {pos} (expected {})", String::from_utf8_lossy(word)));
    }
    let end = pos + word.len();
    nodes.push(Node { kind, esc: false, start: pos as u32, end: end as u32, next: nodes.len() as u32 + 1 });
    Ok(end)
}

fn digits(src: &[u8], i: usize) -> usize {
    i + digit_run(src.get(i..).unwrap_or(&[]))
}

fn parse_number(src: &[u8], pos: usize, nodes: &mut Vec<Node>) -> Result<usize, String> {
    let bad = || format!("invalid number at byte {pos}");
    let mut i = pos;
    if src.get(i) == Some(&b'-') {
        i += 1;
    }
    match src.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(src, i + 1),
        _ => return Err(bad()),
    }
    if src.get(i) == Some(&b'.') {
        let j = digits(src, i + 1);
        if j == i + 1 {
            return Err(bad());
        }
        i = j;
    }
    if matches!(src.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(src.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let j = digits(src, i);
        if j == i {
            return Err(bad());
        }
        i = j;
    }
    nodes.push(Node { kind: Kind::Num, esc: false, start: pos as u32, end: i as u32, next: nodes.len() as u32 + 1 });
    Ok(i)
}

/// A tokenized frame.
pub struct Doc<'a> {
    pub src: &'a [u8],
    pub nodes: &'a [Node],
}

/// Iterates an object's (key, value) node indices.
pub struct Members<'d> {
    nodes: &'d [Node],
    i: usize,
    end: usize,
}

impl Iterator for Members<'_> {
    type Item = (usize, usize);
    fn next(&mut self) -> Option<(usize, usize)> {
        if self.i >= self.end {
            return None;
        }
        let k = self.i;
        let v = k + 1;
        let next = self.nodes.get(v).map_or(usize::MAX, |n| n.next as usize);
        if v >= self.end || next <= v {
            self.i = self.end;
            return None;
        }
        self.i = next;
        Some((k, v))
    }
}

/// Iterates an array's element node indices.
pub struct Elements<'d> {
    nodes: &'d [Node],
    i: usize,
    end: usize,
}

impl Iterator for Elements<'_> {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        if self.i >= self.end {
            return None;
        }
        let v = self.i;
        let next = self.nodes.get(v).map_or(usize::MAX, |n| n.next as usize);
        self.i = if next <= v { self.end } else { next };
        Some(v)
    }
}

impl<'a> Doc<'a> {
    #[inline]
    pub fn node(&self, i: usize) -> Node {
        self.nodes.get(i).copied().unwrap_or(NONE)
    }

    #[inline]
    pub fn kind(&self, i: usize) -> Kind {
        self.node(i).kind
    }

    pub fn kind_name(&self, i: usize) -> &'static str {
        match self.kind(i) {
            Kind::Null => "null",
            Kind::False | Kind::True => "a boolean",
            Kind::Num => "a number",
            Kind::Str => "a string",
            Kind::Obj => "an object",
            Kind::Arr => "an array",
        }
    }

    #[inline]
    pub fn raw(&self, i: usize) -> &'a [u8] {
        let n = self.node(i);
        self.src.get(n.start as usize..n.end as usize).unwrap_or(&[])
    }

    pub fn members(&self, obj: usize) -> Members<'a> {
        let n = self.node(obj);
        let end = if n.kind == Kind::Obj { (n.next as usize).min(self.nodes.len()) } else { 0 };
        Members { nodes: self.nodes, i: obj + 1, end }
    }

    pub fn elements(&self, arr: usize) -> Elements<'a> {
        let n = self.node(arr);
        let end = if n.kind == Kind::Arr { (n.next as usize).min(self.nodes.len()) } else { 0 };
        Elements { nodes: self.nodes, i: arr + 1, end }
    }

    /// A key's unescaped bytes; an escaped key is decoded into `buf` (keys longer than the
    /// buffer cannot be any key we look for and come back empty).
    #[inline]
    pub fn key<'b>(&self, k: usize, buf: &'b mut [u8; 32]) -> &'b [u8]
    where
        'a: 'b,
    {
        let n = self.node(k);
        let raw = self.raw(k);
        if !n.esc {
            return raw;
        }
        let mut len = 0usize;
        let mut overflow = false;
        let ok = unescape_with(raw, false, |piece| {
            if let Some(dst) = buf.get_mut(len..len + piece.len()) {
                dst.copy_from_slice(piece);
                len += piece.len();
            } else {
                overflow = true;
            }
        });
        if ok.is_err() || overflow {
            return &[];
        }
        buf.get(..len).unwrap_or(&[])
    }

    /// The values of an object's members named in `names`, in the order of `names` (`None` for
    /// a member that is absent, or when `obj` is not an object). Members named otherwise are
    /// skipped; of a key given twice, the last one counts. This is the one key scan of every
    /// venue parser: a parser says which names it reads, then decides what each value must be.
    #[inline]
    pub fn pick<const N: usize>(&self, obj: usize, names: [&str; N]) -> [Option<usize>; N] {
        let mut kb = [0u8; 32];
        let mut found = [None; N];
        for (k, v) in self.members(obj) {
            let key = self.key(k, &mut kb);
            if let Some(slot) = names.iter().position(|n| n.as_bytes() == key).and_then(|i| found.get_mut(i)) {
                *slot = Some(v);
            }
        }
        found
    }

    pub fn scalar(&self, i: usize) -> Option<Scalar<'a>> {
        let n = self.node(i);
        match n.kind {
            Kind::Num => Some(Scalar::Num(self.raw(i))),
            Kind::Str => Some(Scalar::Str(self.raw(i), n.esc)),
            _ => None,
        }
    }

    /// A string's unescaped bytes, lone surrogates as U+FFFD (`None` if not a string). For
    /// matching envelope values only: the text that is stored goes through `Sink`.
    pub fn str_cow(&self, i: usize) -> Option<Cow<'a, [u8]>> {
        let n = self.node(i);
        if n.kind != Kind::Str {
            return None;
        }
        if !n.esc {
            return Some(Cow::Borrowed(self.raw(i)));
        }
        let mut v = Vec::new();
        unescape_with(self.raw(i), true, |p| v.extend_from_slice(p)).ok()?;
        Some(Cow::Owned(v))
    }

    /// A number's literal or a string's strictly unescaped bytes (`None` otherwise).
    pub fn scalar_text(&self, i: usize) -> Option<Cow<'a, [u8]>> {
        let n = self.node(i);
        match n.kind {
            Kind::Num => Some(Cow::Borrowed(self.raw(i))),
            Kind::Str if !n.esc => Some(Cow::Borrowed(self.raw(i))),
            Kind::Str => {
                let mut v = Vec::new();
                unescape_with(self.raw(i), false, |p| v.extend_from_slice(p)).ok()?;
                Some(Cow::Owned(v))
            }
            _ => None,
        }
    }

    pub fn is_null(&self, i: usize) -> bool {
        self.kind(i) == Kind::Null
    }
}

/// The unconverted text of a scalar: raw JSON number text, or a string's content (escaped flag).
pub enum Scalar<'a> {
    Num(&'a [u8]),
    Str(&'a [u8], bool),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_tape_accepts_and_rejects() {
        let mut nodes = Vec::new();
        let mut stack = Vec::new();
        for ok in [
            &br#"{"a":[1,2,{"b":null}],"c":"x\"y","d":-0.5e+3,"e":true}"#[..],
            b" [ ] ",
            b"0",
            b"\"\\ud83d\\ude00\"",
            b"{}",
        ] {
            parse_into(ok, &mut nodes, &mut stack).unwrap();
        }
        for bad in [
            &b""[..],
            b"{",
            b"{\"a\"}",
            b"{\"a\":}",
            b"[1,]",
            b"{\"a\":1,}",
            b"01",
            b"1.",
            b"-",
            b"NaN",
            b"\"\t\"",
            b"\"\\x\"",
            b"[1]x",
            b"{1:2}",
            b"tru",
            b"\"abc",
        ] {
            assert!(parse_into(bad, &mut nodes, &mut stack).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(parse_into(deep.as_bytes(), &mut nodes, &mut stack).is_err());
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse_into(ok.as_bytes(), &mut nodes, &mut stack).is_ok());
    }

    #[test]
    fn pick_takes_the_named_members_last_one_wins() {
        let src = br#"{"a":1,"b":[2],"\u0063":"x","a":3,"zz":{"a":9}}"#;
        let (mut nodes, mut stack) = (Vec::new(), Vec::new());
        parse_into(src, &mut nodes, &mut stack).unwrap();
        let doc = Doc { src, nodes: &nodes };
        let [a, c, b, missing] = doc.pick(0, ["a", "c", "b", "missing"]);
        assert_eq!(a.map(|v| doc.raw(v)), Some(&b"3"[..]), "the last of a repeated key");
        assert_eq!(c.map(|v| doc.raw(v)), Some(&b"x"[..]), "an escaped key is matched by its text");
        assert_eq!(b.map(|v| doc.kind(v)), Some(Kind::Arr));
        assert_eq!(missing, None);
        // Only the object's own members: the nested "a" is not one of them.
        let [zz] = doc.pick(0, ["zz"]);
        let [inner] = doc.pick(zz.unwrap(), ["a"]);
        assert_eq!(inner.map(|v| doc.raw(v)), Some(&b"9"[..]));
        // Not an object: nothing.
        assert_eq!(doc.pick(b.unwrap(), ["a"]), [None]);
    }
}
