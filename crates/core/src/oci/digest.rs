//! Content digests, `ALGORITHM:HEX` (OCI image-spec's `digest` grammar, restricted to the
//! registered algorithms). A digest names a blob everywhere: in descriptors, in a layout's
//! `blobs/<algorithm>/<hex>` path, in a registry URL and in the config's `diff_ids`. Parsing
//! checks the whole grammar, so a hostile manifest cannot smuggle a path (`sha256:../x`) or
//! an odd form through one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::hashing::hex;

/// A registered digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Hex digits in an encoded digest of this algorithm.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// Why text is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("'{0}' is not a digest (ALGORITHM:HEX)")]
    Form(String),
    #[error("'{0}': unsupported digest algorithm")]
    Algorithm(String),
    #[error("'{0}': a {1} digest is {2} lower-case hex digits")]
    Hex(String, &'static str, usize),
}

/// A content digest: algorithm and lower-case hex. Displays, and serialises, as
/// `sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// The SHA-256 digest of bytes.
    pub fn sha256_of(data: &[u8]) -> Digest {
        Digest {
            algorithm: Algorithm::Sha256,
            hex: hex(&Sha256::digest(data)),
        }
    }

    /// The digest of a finished SHA-256 hash (its 32 bytes).
    pub fn sha256_of_hash(hash: &[u8]) -> Digest {
        Digest {
            algorithm: Algorithm::Sha256,
            hex: hex(hash),
        }
    }

    /// A SHA-256 digest from its hex (as a hashing writer reports it), checked.
    pub fn sha256(hex: &str) -> Result<Digest, DigestError> {
        Digest::new(Algorithm::Sha256, hex)
    }

    fn new(algorithm: Algorithm, hex: &str) -> Result<Digest, DigestError> {
        let ok = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return Err(DigestError::Hex(
                format!("{}:{hex}", algorithm.name()),
                algorithm.name(),
                algorithm.hex_len(),
            ));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }

    /// Parse `ALGORITHM:HEX`.
    pub fn parse(text: &str) -> Result<Digest, DigestError> {
        let (algo, hex) = text
            .split_once(':')
            .ok_or_else(|| DigestError::Form(text.to_string()))?;
        let algorithm = match algo {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            "" => return Err(DigestError::Form(text.to_string())),
            _ => return Err(DigestError::Algorithm(text.to_string())),
        };
        Digest::new(algorithm, hex)
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The encoded part, lower-case hex.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Where an OCI image layout keeps the blob: `blobs/<algorithm>/<hex>`.
    pub fn blob_path(&self) -> String {
        format!("blobs/{}/{}", self.algorithm.name(), self.hex)
    }

    /// The digest a layout path names, if it is `blobs/sha256/<hex>` (a leading `./` allowed).
    pub fn from_blob_path(path: &str) -> Option<Digest> {
        let hex = path
            .trim_start_matches("./")
            .strip_prefix("blobs/sha256/")?;
        Digest::sha256(hex).ok()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(text: &str) -> Result<Digest, DigestError> {
        Digest::parse(text)
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        other
            .split_once(':')
            .is_some_and(|(algo, hex)| algo == self.algorithm.name() && hex == self.hex)
    }
}

impl PartialEq<&str> for Digest {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

impl PartialEq<String> for Digest {
    fn eq(&self, other: &String) -> bool {
        *self == **other
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(d)?;
        Digest::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn parses_and_shows_sha256() {
        let d = Digest::parse(&format!("sha256:{ABC}")).unwrap();
        assert_eq!(d, Digest::sha256_of(b"abc"));
        assert_eq!(d.to_string(), format!("sha256:{ABC}"));
        assert_eq!(d.hex(), ABC);
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.blob_path(), format!("blobs/sha256/{ABC}"));
        assert_eq!(
            Digest::from_blob_path(&format!("./blobs/sha256/{ABC}")),
            Some(d.clone())
        );
        assert!(d == format!("sha256:{ABC}"));
        assert!(d != ABC);
        let long = Digest::parse(&format!("sha512:{}", "a".repeat(128))).unwrap();
        assert_eq!(long.algorithm(), Algorithm::Sha512);
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            String::new(),
            ABC.to_string(),
            format!(":{ABC}"),
            format!("md5:{ABC}"),
            format!("SHA256:{ABC}"),
            format!("sha256:{}", ABC.to_uppercase()),
            format!("sha256:{}", &ABC[1..]),
            format!("sha256:{ABC}0"),
            format!("sha256:{}g", &ABC[1..]),
            "sha256:".to_string(),
            format!("sha256:../{}", &ABC[3..]),
            format!("sha256: {}", &ABC[1..]),
            format!("sha512:{ABC}"),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad:?}");
        }
        assert!(Digest::sha256("00").is_err());
        assert_eq!(Digest::from_blob_path("blobs/sha256/../../etc"), None);
        assert_eq!(Digest::from_blob_path(&format!("blobs/sha512/{ABC}")), None);
    }

    #[test]
    fn serde_is_the_string() {
        let d = Digest::sha256_of(b"abc");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"sha256:{ABC}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        let e = serde_json::from_str::<Digest>("\"sha256:00\"").unwrap_err();
        assert!(e.to_string().contains("64 lower-case hex digits"), "{e}");
    }
}
