//! Hashing on the way through: SHA-256 of what a writer passes on, and writers that copy
//! to a second one or to several ([`FanOut`], which the store's NAR hashing uses). Both the image builder (layer blobs, their cache copy) and the push (a
//! layer compressed before it is sent) hash bytes as they stream; they share these so a
//! digest is computed one way only.

use std::io::{self, Write};

use sha2::{Digest as _, Sha256};

use crate::oci::digest::Digest;

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// A writer that hashes and counts what passes through it.
#[derive(Debug)]
pub struct Digester<W> {
    pub inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> Digester<W> {
    pub fn new(inner: W) -> Self {
        Digester {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// `(hex sha256, byte count)` and the inner writer.
    pub fn finish(self) -> (String, u64, W) {
        (hex(&self.hasher.finalize()), self.len, self.inner)
    }

    /// `(digest, byte count)` and the inner writer.
    pub fn finish_digest(self) -> (Digest, u64, W) {
        (
            Digest::sha256_of_hash(&self.hasher.finalize()),
            self.len,
            self.inner,
        )
    }
}

impl<W: Write> Write for Digester<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        // The layer's batches come from the other core (see `crate::prefetch`).
        let hasher = &mut self.hasher;
        crate::prefetch::in_pieces(&data[..n], |piece| hasher.update(piece));
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes everything to a writer and, if there is one, a second (the output and a cache
/// file).
#[derive(Debug)]
pub struct Tee<A, B>(pub A, pub Option<B>);

impl<A: Write, B: Write> Write for Tee<A, B> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.write_all(data)?;
        if let Some(b) = &mut self.1 {
            b.write_all(data)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()?;
        if let Some(b) = &mut self.1 {
            b.flush()?;
        }
        Ok(())
    }
}

/// Writes everything to each of several writers (a NAR to its hashers, a counter and a
/// copy). Flushing is left to the writers' owners.
pub struct FanOut<'a> {
    pub sinks: Vec<&'a mut (dyn Write + Send)>,
}

impl std::fmt::Debug for FanOut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FanOut({} writers)", self.sinks.len())
    }
}

impl Write for FanOut<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for s in &mut self.sinks {
            s.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn digester_hashes_what_passes_and_tee_copies_it() {
        let mut copy = Vec::new();
        let mut d = Digester::new(Tee(Vec::new(), Some(&mut copy)));
        d.write_all(b"abc").unwrap();
        let (digest, len, tee) = d.finish();
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!((len, tee.0.as_slice()), (3, &b"abc"[..]));
        assert_eq!(copy, b"abc");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut fan = FanOut {
            sinks: vec![&mut a, &mut b],
        };
        fan.write_all(b"xy").unwrap();
        assert_eq!((a.as_slice(), b.as_slice()), (&b"xy"[..], &b"xy"[..]));
    }
}
