//! Hashes as Nix names and prints them: the four algorithms, `algo:<nix32>` / hex / SRI forms,
//! and the XOR folding that turns a SHA-256 into a 20-byte store path hash.

use std::fmt;
use std::io;

use sha2::Digest;

use super::nix32;

/// A hash algorithm Nix accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HashAlgo {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl HashAlgo {
    pub const ALL: [HashAlgo; 4] = [
        HashAlgo::Md5,
        HashAlgo::Sha1,
        HashAlgo::Sha256,
        HashAlgo::Sha512,
    ];

    /// The name Nix uses (`md5`, `sha1`, `sha256`, `sha512`).
    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Md5 => "md5",
            HashAlgo::Sha1 => "sha1",
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Sha512 => "sha512",
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            HashAlgo::Md5 => 16,
            HashAlgo::Sha1 => 20,
            HashAlgo::Sha256 => 32,
            HashAlgo::Sha512 => 64,
        }
    }

    pub fn from_name(name: &str) -> Option<HashAlgo> {
        HashAlgo::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl fmt::Display for HashAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors parsing a printed hash.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HashParseError {
    #[error("unknown hash algorithm '{0}'")]
    UnknownAlgo(String),
    #[error("hash '{0}' has no algorithm prefix")]
    NoAlgo(String),
    #[error("hash '{text}' has the wrong length for {algo}")]
    WrongLength { text: String, algo: HashAlgo },
    #[error("hash '{0}' is not valid hex, nix32 or base64")]
    BadEncoding(String),
}

/// A digest together with the algorithm that made it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash {
    algo: HashAlgo,
    bytes: Vec<u8>,
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_typed_nix32())
    }
}

impl Hash {
    /// Wraps digest bytes; panics if the length does not fit the algorithm.
    pub fn new(algo: HashAlgo, bytes: Vec<u8>) -> Hash {
        assert_eq!(bytes.len(), algo.digest_len(), "digest length for {algo}");
        Hash { algo, bytes }
    }

    pub fn algo(&self) -> HashAlgo {
        self.algo
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Hash a byte string in one go.
    pub fn of(algo: HashAlgo, data: &[u8]) -> Hash {
        let mut h = Hasher::new(algo);
        h.update(data);
        h.finish()
    }

    pub fn to_hex(&self) -> String {
        to_hex(&self.bytes)
    }

    pub fn to_nix32(&self) -> String {
        nix32::encode(&self.bytes)
    }

    /// `sha256:<nix32>`, the form of `narHash` in path-info JSON.
    pub fn to_typed_nix32(&self) -> String {
        format!("{}:{}", self.algo, self.to_nix32())
    }

    /// `sha256-<base64>`, the SRI form.
    pub fn to_sri(&self) -> String {
        format!("{}-{}", self.algo, base64_encode(&self.bytes))
    }

    /// Parse `algo:<hex|nix32|base64>` or `algo-<base64>` (SRI).
    pub fn parse_typed(text: &str) -> Result<Hash, HashParseError> {
        if let Some((algo, rest)) = text.split_once(':') {
            let algo = HashAlgo::from_name(algo)
                .ok_or_else(|| HashParseError::UnknownAlgo(algo.to_string()))?;
            return Hash::parse_untyped(algo, rest).map_err(|e| match e {
                HashParseError::WrongLength { algo, .. } => HashParseError::WrongLength {
                    text: text.to_string(),
                    algo,
                },
                HashParseError::BadEncoding(_) => HashParseError::BadEncoding(text.to_string()),
                other => other,
            });
        }
        if let Some((algo, rest)) = text.split_once('-')
            && let Some(algo) = HashAlgo::from_name(algo)
        {
            let bytes =
                base64_decode(rest).ok_or_else(|| HashParseError::BadEncoding(text.to_string()))?;
            if bytes.len() != algo.digest_len() {
                return Err(HashParseError::WrongLength {
                    text: text.to_string(),
                    algo,
                });
            }
            return Ok(Hash { algo, bytes });
        }
        Err(HashParseError::NoAlgo(text.to_string()))
    }

    /// Parse a hash of a known algorithm written in hex, nix32 or base64 (told apart by length).
    pub fn parse_untyped(algo: HashAlgo, text: &str) -> Result<Hash, HashParseError> {
        let bad = || HashParseError::BadEncoding(text.to_string());
        let n = algo.digest_len();
        let bytes = if text.len() == n * 2 {
            from_hex(text).ok_or_else(bad)?
        } else if text.len() == nix32::encoded_len(n) {
            nix32::decode(text).map_err(|_| bad())?
        } else if text.len() == n.div_ceil(3) * 4 {
            base64_decode(text).ok_or_else(bad)?
        } else {
            return Err(HashParseError::WrongLength {
                text: text.to_string(),
                algo,
            });
        };
        if bytes.len() != n {
            return Err(HashParseError::WrongLength {
                text: text.to_string(),
                algo,
            });
        }
        Ok(Hash { algo, bytes })
    }
}

/// Fold a digest to `size` bytes by XOR-ing byte `i` into byte `i % size` (Nix's
/// `compressHash`, used to make the 20-byte store path hash from a SHA-256).
pub fn fold(digest: &[u8], size: usize) -> Vec<u8> {
    let mut out = vec![0u8; size];
    for (i, b) in digest.iter().enumerate() {
        out[i % size] ^= b;
    }
    out
}

enum HasherState {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

/// An incremental hasher for any [`HashAlgo`]; also an [`io::Write`] sink that counts bytes.
pub struct Hasher {
    state: HasherState,
    len: u64,
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hasher({}, {} bytes)", self.algo(), self.len)
    }
}

impl Hasher {
    pub fn new(algo: HashAlgo) -> Hasher {
        let state = match algo {
            HashAlgo::Md5 => HasherState::Md5(md5::Md5::new()),
            HashAlgo::Sha1 => HasherState::Sha1(sha1::Sha1::new()),
            HashAlgo::Sha256 => HasherState::Sha256(sha2::Sha256::new()),
            HashAlgo::Sha512 => HasherState::Sha512(sha2::Sha512::new()),
        };
        Hasher { state, len: 0 }
    }

    pub fn algo(&self) -> HashAlgo {
        match self.state {
            HasherState::Md5(_) => HashAlgo::Md5,
            HasherState::Sha1(_) => HashAlgo::Sha1,
            HasherState::Sha256(_) => HashAlgo::Sha256,
            HasherState::Sha512(_) => HashAlgo::Sha512,
        }
    }

    /// Hash `data` next; it may have just been written by another core (the NAR's batches,
    /// see [`crate::prefetch`]).
    pub fn update(&mut self, data: &[u8]) {
        self.len += data.len() as u64;
        let state = &mut self.state;
        crate::prefetch::in_pieces(data, |piece| match state {
            HasherState::Md5(h) => h.update(piece),
            HasherState::Sha1(h) => h.update(piece),
            HasherState::Sha256(h) => h.update(piece),
            HasherState::Sha512(h) => h.update(piece),
        });
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> Hash {
        let algo = self.algo();
        let bytes = match self.state {
            HasherState::Md5(h) => h.finalize().to_vec(),
            HasherState::Sha1(h) => h.finalize().to_vec(),
            HasherState::Sha256(h) => h.finalize().to_vec(),
            HasherState::Sha512(h) => h.finalize().to_vec(),
        };
        Hash { algo, bytes }
    }
}

impl io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Lower-case hex.
pub use crate::hashing::hex as to_hex;

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(char::from(B64[((v >> (18 - 6 * k)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let t = text.as_bytes();
    if !t.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(t.len() / 4 * 3);
    for quad in t.chunks(4) {
        let mut v = 0u32;
        let mut pad = 0;
        for &c in quad {
            let d = if c == b'=' {
                pad += 1;
                0
            } else {
                if pad > 0 {
                    return None;
                }
                B64.iter().position(|&x| x == c)? as u32
            };
            v = (v << 6) | d;
        }
        let bytes = [(v >> 16) as u8, (v >> 8) as u8, v as u8];
        out.extend_from_slice(&bytes[..3 - pad.min(2)]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_of_one_hash() {
        let h = Hash::of(HashAlgo::Sha256, b"hello\n");
        assert_eq!(
            h.to_hex(),
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        for text in [
            h.to_typed_nix32(),
            h.to_sri(),
            format!("sha256:{}", h.to_hex()),
        ] {
            assert_eq!(Hash::parse_typed(&text).unwrap(), h, "{text}");
        }
    }

    #[test]
    fn sri_matches_vector() {
        let h = Hash::parse_typed("sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw")
            .unwrap();
        assert_eq!(
            h.to_sri(),
            "sha256-HDfQGvQL4ugGkd48w99EN3ppmvuxfGjwgJZLL9Bx/BM="
        );
    }

    #[test]
    fn base64_all_remainders() {
        for n in 0..10 {
            let bytes: Vec<u8> = (0..n).map(|i| i * 29 + 3).collect();
            assert_eq!(base64_decode(&base64_encode(&bytes)).unwrap(), bytes);
        }
    }

    #[test]
    fn parse_errors() {
        assert!(matches!(
            Hash::parse_typed("sha3:00"),
            Err(HashParseError::UnknownAlgo(_))
        ));
        assert!(matches!(
            Hash::parse_typed("abc"),
            Err(HashParseError::NoAlgo(_))
        ));
        assert!(matches!(
            Hash::parse_typed("sha256:abc"),
            Err(HashParseError::WrongLength { .. })
        ));
    }

    #[test]
    fn fold_xors() {
        let digest: Vec<u8> = (0..32).collect();
        let folded = fold(&digest, 20);
        assert_eq!(folded[0], 20);
        assert_eq!(folded[12], 12); // no byte 32: index 12 only gets byte 12
        assert_eq!(folded[11], 11 ^ 31);
    }
}
