//! Reference scanning and hash rewriting over byte streams: finding which candidate store
//! paths a NAR mentions (by their 32-character hash part, anywhere: contents, names, link
//! targets), replacing one hash part by another, and Nix's "hash modulo" of a self-reference.

use std::collections::BTreeSet;
use std::io::{self, Write};

use super::hash::{Hash, HashAlgo, Hasher};
use super::nix32::is_nix32_char;
use super::store_path::HASH_PART_LEN;

/// Finds which of a set of hash parts occur in a stream. Feed it with [`io::Write`].
#[derive(Debug)]
pub struct RefScanner {
    candidates: BTreeSet<[u8; HASH_PART_LEN]>,
    found: BTreeSet<[u8; HASH_PART_LEN]>,
    /// The last bytes of the previous chunk, so matches across chunk borders are seen.
    tail: Vec<u8>,
}

impl RefScanner {
    pub fn new<'a>(hash_parts: impl IntoIterator<Item = &'a str>) -> RefScanner {
        let candidates = hash_parts
            .into_iter()
            .filter_map(|h| <[u8; HASH_PART_LEN]>::try_from(h.as_bytes()).ok())
            .collect();
        RefScanner {
            candidates,
            found: BTreeSet::new(),
            tail: Vec::new(),
        }
    }

    fn scan(&mut self, data: &[u8]) {
        let n = data.len();
        let mut i = 0;
        while i + HASH_PART_LEN <= n {
            // Check the window from its end: a non-nix32 byte at offset j means no window
            // that contains it can match, so jump past it.
            let window = &data[i..i + HASH_PART_LEN];
            match window.iter().rposition(|&c| !is_nix32_char(c)) {
                Some(j) => i += j + 1,
                None => {
                    if let Ok(key) = <[u8; HASH_PART_LEN]>::try_from(window)
                        && self.candidates.contains(&key)
                    {
                        self.found.insert(key);
                    }
                    i += 1;
                }
            }
        }
    }

    /// The hash parts seen so far.
    pub fn found(&self) -> impl Iterator<Item = &str> {
        self.found
            .iter()
            .map(|h| std::str::from_utf8(h).unwrap_or_default())
    }

    pub fn into_found(self) -> BTreeSet<String> {
        self.found
            .iter()
            .map(|h| String::from_utf8_lossy(h).into_owned())
            .collect()
    }
}

impl Write for RefScanner {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.candidates.is_empty() {
            return Ok(data.len());
        }
        // Join the tail with the head of this chunk to catch matches across the border.
        let head = &data[..data.len().min(HASH_PART_LEN - 1)];
        let mut joined = std::mem::take(&mut self.tail);
        joined.extend_from_slice(head);
        self.scan(&joined);
        self.scan(data);
        // Keep the stream's last HASH_PART_LEN - 1 bytes for the next chunk.
        if data.len() >= HASH_PART_LEN - 1 {
            joined.clear();
            joined.extend_from_slice(&data[data.len() - (HASH_PART_LEN - 1)..]);
        } else {
            let excess = joined.len().saturating_sub(HASH_PART_LEN - 1);
            joined.drain(..excess);
        }
        self.tail = joined;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Replaces every occurrence of `from` by `to` (same length) in a stream, recording the
/// offsets of the replacements, and passes the result on.
#[derive(Debug)]
pub struct Rewriter<W: Write> {
    from: Vec<u8>,
    to: Vec<u8>,
    held: Vec<u8>,
    /// Bytes passed on so far.
    pos: u64,
    matches: Vec<u64>,
    next: W,
}

impl<W: Write> Rewriter<W> {
    pub fn new(from: &[u8], to: &[u8], next: W) -> Rewriter<W> {
        assert_eq!(from.len(), to.len(), "rewrites keep lengths");
        assert!(!from.is_empty());
        Rewriter {
            from: from.to_vec(),
            to: to.to_vec(),
            held: Vec::new(),
            pos: 0,
            matches: Vec::new(),
            next,
        }
    }

    /// Pass on what is held back and return the sink and the match offsets.
    pub fn finish(mut self) -> io::Result<(W, Vec<u64>)> {
        self.next.write_all(&self.held)?;
        Ok((self.next, self.matches))
    }
}

impl<W: Write> Write for Rewriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.held.extend_from_slice(data);
        let k = self.from.len();
        let mut j = 0;
        while j + k <= self.held.len() {
            if self.held[j..j + k] == self.from[..] {
                self.matches.push(self.pos + j as u64);
                self.held[j..j + k].copy_from_slice(&self.to);
                j += k;
            } else {
                j += 1;
            }
        }
        // Hold back what could still be the start of a match.
        let keep = (k - 1).min(self.held.len());
        let emit = self.held.len() - keep;
        self.next.write_all(&self.held[..emit])?;
        self.held.drain(..emit);
        self.pos += emit as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.next.flush()
    }
}

/// Nix's `HashModuloSink`: SHA-256 of the stream with every occurrence of `modulus` (the
/// path's own hash part) replaced by NUL bytes, followed by `|<offset>` for each occurrence.
/// This lets a path that mentions itself have a content address that does not depend on the
/// name it was built under.
#[derive(Debug)]
pub struct HashModulo {
    inner: Rewriter<Hasher>,
}

impl HashModulo {
    pub fn new(modulus: &str) -> HashModulo {
        let zeros = vec![0u8; modulus.len()];
        HashModulo {
            inner: Rewriter::new(modulus.as_bytes(), &zeros, Hasher::new(HashAlgo::Sha256)),
        }
    }

    /// The hash, and the number of occurrences of the modulus.
    pub fn finish(self) -> io::Result<(Hash, usize)> {
        let (mut hasher, matches) = self.inner.finish()?;
        for m in &matches {
            hasher.update(format!("|{m}").as_bytes());
        }
        Ok((hasher.finish(), matches.len()))
    }
}

impl Write for HashModulo {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.inner.write(data)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "6nqvynq6mpq1s0g0prmzq6dwkpldp8cg";

    fn scan_in_chunks(data: &[u8], chunk: usize) -> BTreeSet<String> {
        let mut s = RefScanner::new([H]);
        for c in data.chunks(chunk) {
            s.write_all(c).unwrap();
        }
        s.into_found()
    }

    #[test]
    fn finds_across_every_chunk_border() {
        let data = format!("xx/nix/store/{H}-dep yy");
        for chunk in 1..data.len() {
            assert_eq!(
                scan_in_chunks(data.as_bytes(), chunk).len(),
                1,
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn embedded_and_case() {
        assert_eq!(
            scan_in_chunks(format!("zz9{H}9zz").as_bytes(), 4096).len(),
            1
        );
        assert!(scan_in_chunks(H.to_uppercase().as_bytes(), 4096).is_empty());
        assert!(scan_in_chunks(&H.as_bytes()[1..], 4096).is_empty());
    }

    #[test]
    fn rewriter_across_borders() {
        let data = format!("a{H}b{H}{H}c");
        let to = "0".repeat(32);
        for chunk in 1..data.len() {
            let mut r = Rewriter::new(H.as_bytes(), to.as_bytes(), Vec::new());
            for c in data.as_bytes().chunks(chunk) {
                r.write_all(c).unwrap();
            }
            let (out, matches) = r.finish().unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), format!("a{to}b{to}{to}c"));
            assert_eq!(matches, vec![1, 34, 66]);
        }
    }
}
