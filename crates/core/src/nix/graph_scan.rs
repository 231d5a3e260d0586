//! A scanner for the closure graph JSON as Nix writes it — an array of path-info objects,
//! strings without escapes, sizes as plain integers — that feeds
//! [`graph_json`](super::graph_json)'s reader without a general JSON parser in between: on a
//! graph of thousands of paths, generic parsing is most of what is left of reading it.
//!
//! It reads a strict subset of JSON and gives up (`None`) on anything outside it: an escape
//! or control character in a string, a number that is not a plain integer, nesting deeper
//! than [`MAX_DEPTH`] in a field it skips, any syntax error. Giving up is never an answer:
//! the caller then reads the text with the general parsers, which take all of JSON and say
//! what is wrong. So whatever the scanner accepts is valid JSON that those parsers read the
//! same way.

use serde::de::value::Error as ValueError;

use super::content_address::ContentAddress;
use super::graph_json::{GraphReader, Record};
use super::path_info::NarHash;

/// How deeply a skipped field's value may nest.
pub(super) const MAX_DEPTH: u32 = 64;

/// Read `text` into `reader`: `None` if it is not a plain graph this scanner takes.
pub(super) fn scan_graph(text: &str, reader: &mut GraphReader) -> Option<()> {
    let mut scan = Scanner {
        text,
        bytes: text.as_bytes(),
        at: 0,
    };
    match scan.peek()? {
        b'[' => {
            scan.at += 1;
            scan.items(b']', |scan| scan.object(reader))?;
        }
        _ => scan.object(reader)?,
    }
    scan.skip_space();
    (scan.at == scan.bytes.len()).then_some(())
}

/// A position in the text.
struct Scanner<'t> {
    text: &'t str,
    bytes: &'t [u8],
    at: usize,
}

/// The fields of a path-info object, each taken once.
#[derive(Default)]
struct Fields {
    nar_hash: bool,
    nar_size: Option<u64>,
    closure_size: bool,
    ca: bool,
    path: Option<u32>,
    references: Option<(usize, usize)>,
}

impl<'t> Scanner<'t> {
    fn skip_space(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte after white space, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// `literal` (`null`, `true`, `false`) if it comes next.
    fn word(&mut self, literal: &str) -> Option<()> {
        self.skip_space();
        let rest = self.bytes.get(self.at..)?;
        rest.starts_with(literal.as_bytes())
            .then(|| self.at += literal.len())
    }

    /// A string without escapes or control characters, borrowed from the text.
    fn string(&mut self) -> Option<&'t str> {
        self.eat(b'"')?;
        let start = self.at;
        let length = string_end(&self.bytes[start..])?;
        if self.bytes[start + length] != b'"' {
            return None;
        }
        self.at = start + length + 1;
        // Both ends are at a '"', so at character boundaries.
        self.text.get(start..start + length)
    }

    /// A non-negative integer as JSON writes it (no leading zero, sign, fraction or
    /// exponent) that fits 64 bits.
    fn integer(&mut self) -> Option<u64> {
        self.skip_space();
        let start = self.at;
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        let digits = &self.text[start..self.at];
        let after = self.bytes.get(self.at).copied().unwrap_or(b' ');
        if digits.is_empty()
            || (digits.len() > 1 && digits.starts_with('0'))
            || matches!(after, b'.' | b'e' | b'E' | b'-' | b'+')
        {
            return None;
        }
        digits.parse().ok()
    }

    /// `item` for each element up to `close` (the opening bracket already read), separated
    /// by commas.
    fn items(&mut self, close: u8, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        if self.peek()? == close {
            self.at += 1;
            return Some(());
        }
        loop {
            item(self)?;
            match self.peek()? {
                b',' => self.at += 1,
                b if b == close => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Skip a value of the subset: strings, integers, literals, arrays and objects of them.
    fn skip_value(&mut self, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'[' => {
                self.at += 1;
                self.items(b']', |scan| scan.skip_value(depth + 1))
            }
            b'{' => {
                self.at += 1;
                self.items(b'}', |scan| {
                    scan.string()?;
                    scan.eat(b':')?;
                    scan.skip_value(depth + 1)
                })
            }
            b'n' => self.word("null"),
            b't' => self.word("true"),
            b'f' => self.word("false"),
            b'-' => {
                self.at += 1;
                // No space between the sign and the digits.
                self.bytes.get(self.at).filter(|b| b.is_ascii_digit())?;
                self.integer().map(drop)
            }
            _ => self.integer().map(drop),
        }
    }

    /// The number of the store path the next string spells: one already met is recognised
    /// in place (most references are), any other read and interned.
    fn path(&mut self, reader: &mut GraphReader) -> Option<u32> {
        self.skip_space();
        if let Some((number, length)) = reader.known_at(&self.bytes[self.at..]) {
            self.at += length;
            return Some(number);
        }
        reader.intern::<ValueError>(self.string()?).ok()
    }

    /// An object key: the fields of a path-info object compared in place, others read.
    fn key(&mut self) -> Option<&'t str> {
        const KEYS: [&str; 4] = ["\"path\"", "\"references\"", "\"narHash\"", "\"narSize\""];
        self.skip_space();
        let rest = &self.bytes[self.at..];
        match KEYS.iter().find(|key| rest.starts_with(key.as_bytes())) {
            Some(key) => {
                self.at += key.len();
                Some(&key[1..key.len() - 1])
            }
            None => self.string(),
        }
    }

    /// `null` if it comes next.
    fn null(&mut self) -> bool {
        self.word("null").is_some()
    }

    /// One path-info object, added to `reader`.
    fn object(&mut self, reader: &mut GraphReader) -> Option<()> {
        self.eat(b'{')?;
        let mut fields = Fields::default();
        self.items(b'}', |scan| {
            let key = scan.key()?;
            scan.eat(b':')?;
            scan.field(key, &mut fields, reader)
        })?;
        reader
            .add::<ValueError>(Record {
                path: fields.path?,
                nar_size: fields.nar_size?,
                references: fields.references?,
            })
            .ok()
            .filter(|()| fields.nar_hash)
    }

    /// The value of field `key`, checked as the general reader checks it.
    fn field(&mut self, key: &str, fields: &mut Fields, reader: &mut GraphReader) -> Option<()> {
        let first = |seen: bool| (!seen).then_some(());
        match key {
            "narHash" => {
                first(fields.nar_hash)?;
                NarHash::accepts(self.string()?).then_some(())?;
                fields.nar_hash = true;
            }
            "narSize" => {
                first(fields.nar_size.is_some())?;
                fields.nar_size = Some(self.integer()?);
            }
            "closureSize" => {
                first(fields.closure_size)?;
                if !self.null() {
                    self.integer()?;
                }
                fields.closure_size = true;
            }
            "ca" => {
                first(fields.ca)?;
                if !self.null() {
                    ContentAddress::parse(self.string()?).ok()?;
                }
                fields.ca = true;
            }
            "path" => {
                first(fields.path.is_some())?;
                fields.path = Some(self.path(reader)?);
            }
            "references" => {
                first(fields.references.is_some())?;
                self.eat(b'[')?;
                let start = reader.references.len();
                self.items(b']', |scan| {
                    let number = scan.path(reader)?;
                    reader.references.push(number);
                    Some(())
                })?;
                fields.references = Some((start, reader.references.len()));
            }
            _ => self.skip_value(0)?,
        }
        Some(())
    }
}

/// The position of the first `"`, `\\` or control character in `bytes`, looked for 8 bytes
/// at a time: strings are most of a graph's text.
fn string_end(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte of `word` that is zero, exact up to the first one (the lowest
    // set bit; a borrow only reaches the bytes above).
    let zeros = |word: u64| word.wrapping_sub(ONES) & !word & HIGH;
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().ok()?);
        let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
        let found = zeros(word ^ (ONES * u64::from(b'"')))
            | zeros(word ^ (ONES * u64::from(b'\\')))
            | control;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let rest = bytes[at..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    Some(at + rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_ends_are_found_at_every_position() {
        for length in 0..40 {
            for special in [b'"', b'\\', 0, 0x1f, b'\n'] {
                for filler in [b'a', 0x7f, 0x80, 0xa0, 0xff, b' ', b'!', b'#', b'[', b']'] {
                    let mut bytes = vec![filler; length];
                    assert_eq!(string_end(&bytes), None, "{length} {filler}");
                    bytes.push(special);
                    bytes.extend([b'"', 0, b'\\']);
                    assert_eq!(
                        string_end(&bytes),
                        Some(length),
                        "{length} {special} {filler}"
                    );
                }
            }
        }
    }
}
