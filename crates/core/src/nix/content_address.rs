//! Content addresses, the `ca` field of path info: `text:sha256:<nix32>` for text paths and
//! `fixed:[r:]ALGO:<nix32>` for fixed-output and source paths. A typed value rather than a
//! string, so the forms are written in one place and what is read is checked.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::hash::{Hash, HashAlgo, HashParseError};
use super::store_path::IngestionMethod;

/// How a content-addressed path's hash part was derived from its contents.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ContentAddress {
    /// A text path (`builtins.toFile`): the SHA-256 of its contents.
    Text(Hash),
    /// A fixed-output or source path: the hash of the file (flat) or of its NAR (recursive).
    Fixed {
        ingestion: IngestionMethod,
        hash: Hash,
    },
}

/// Errors reading a content address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContentAddressError {
    #[error("content address '{0}' is neither 'text:ALGO:HASH' nor 'fixed:[r:]ALGO:HASH'")]
    Form(String),
    #[error("content address '{0}': a text path's hash must be SHA-256")]
    TextAlgo(String),
    #[error("content address '{text}': {source}")]
    Hash {
        text: String,
        source: HashParseError,
    },
}

impl ContentAddress {
    /// A source path (`nix-store --add`): the recursive SHA-256 of its NAR.
    pub fn source(nar_sha256: Hash) -> ContentAddress {
        ContentAddress::Fixed {
            ingestion: IngestionMethod::Recursive,
            hash: nar_sha256,
        }
    }

    /// The hash the address carries.
    pub fn hash(&self) -> &Hash {
        match self {
            ContentAddress::Text(hash) | ContentAddress::Fixed { hash, .. } => hash,
        }
    }

    /// Parse `text:sha256:HASH` or `fixed:[r:]ALGO:HASH` (HASH in nix32, hex or base64).
    pub fn parse(text: &str) -> Result<ContentAddress, ContentAddressError> {
        let form = || ContentAddressError::Form(text.to_string());
        let (kind, rest) = text.split_once(':').ok_or_else(form)?;
        let (ingestion, typed) = match (kind, rest.strip_prefix("r:")) {
            ("text", _) => (None, rest),
            ("fixed", Some(typed)) => (Some(IngestionMethod::Recursive), typed),
            ("fixed", None) => (Some(IngestionMethod::Flat), rest),
            _ => return Err(form()),
        };
        let (algo, digest) = typed.split_once(':').ok_or_else(form)?;
        let hash_error = |source| ContentAddressError::Hash {
            text: text.to_string(),
            source,
        };
        let algo = HashAlgo::from_name(algo)
            .ok_or_else(|| hash_error(HashParseError::UnknownAlgo(algo.to_string())))?;
        let hash = Hash::parse_untyped(algo, digest).map_err(hash_error)?;
        match ingestion {
            None if algo != HashAlgo::Sha256 => Err(ContentAddressError::TextAlgo(text.into())),
            None => Ok(ContentAddress::Text(hash)),
            Some(ingestion) => Ok(ContentAddress::Fixed { ingestion, hash }),
        }
    }
}

impl fmt::Display for ContentAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContentAddress::Text(hash) => write!(f, "text:{}:{}", hash.algo(), hash.to_nix32()),
            ContentAddress::Fixed { ingestion, hash } => write!(
                f,
                "fixed:{}{}:{}",
                ingestion.prefix(),
                hash.algo(),
                hash.to_nix32()
            ),
        }
    }
}

impl FromStr for ContentAddress {
    type Err = ContentAddressError;
    fn from_str(text: &str) -> Result<ContentAddress, ContentAddressError> {
        ContentAddress::parse(text)
    }
}

impl Serialize for ContentAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ContentAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ContentAddress;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a content address string")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ContentAddress, E> {
                ContentAddress::parse(text).map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The two forms strata writes, as Nix prints them.
    const SOURCE: &str = "fixed:r:sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0";
    const TEXT: &str = "text:sha256:085ssxbk2llxi98aiz181pvqm5mrhcr632v0y4a886lxyx22yq50";

    #[test]
    fn round_trips_the_forms_nix_writes() {
        for text in [SOURCE, TEXT] {
            let ca = ContentAddress::parse(text).unwrap();
            assert_eq!(ca.to_string(), text);
            let json = serde_json::to_string(&ca).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<ContentAddress>(&json).unwrap(), ca);
        }
        let flat = ContentAddress::Fixed {
            ingestion: IngestionMethod::Flat,
            hash: Hash::of(HashAlgo::Sha1, b"x"),
        };
        let text = flat.to_string();
        assert!(text.starts_with("fixed:sha1:"), "{text}");
        assert_eq!(ContentAddress::parse(&text).unwrap(), flat);
    }

    #[test]
    fn the_kind_and_method_are_read() {
        let ca = ContentAddress::parse(SOURCE).unwrap();
        assert!(matches!(
            ca,
            ContentAddress::Fixed {
                ingestion: IngestionMethod::Recursive,
                ..
            }
        ));
        assert_eq!(ca.hash().algo(), HashAlgo::Sha256);
        assert!(matches!(
            ContentAddress::parse(TEXT).unwrap(),
            ContentAddress::Text(_)
        ));
        // Hex is accepted on input and written back as nix32.
        let hex = format!("text:sha256:{}", ca.hash().to_hex());
        let read = ContentAddress::parse(&hex).unwrap();
        assert_eq!(read.hash(), ca.hash());
        assert!(read.to_string().starts_with("text:sha256:1b4sb93"));
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for bad in [
            "",
            "sha256:abc",
            "fixed:r:sha256",
            "git:sha1:0123",
            "fixed:git:sha1:0000000000000000000000000000000000000000",
            "fixed:r:sha256:tooshort",
            "fixed:r:blake9:0000",
            "text:sha1:0000000000000000000000000000000000000000",
        ] {
            let err = ContentAddress::parse(bad).unwrap_err();
            assert!(
                err.to_string().contains(&format!("'{bad}'")),
                "{bad}: {err}"
            );
        }
    }
}
