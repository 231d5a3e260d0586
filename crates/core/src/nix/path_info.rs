//! Path-info objects, the JSON Nix prints for `nix path-info --json` and writes for
//! `exportReferencesGraph`: `{ca?, closureSize?, narHash, narSize, path, references}`. Keys are
//! written in Nix's (sorted) order so strata's output is byte-comparable with Nix's.

use std::collections::BTreeSet;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::content_address::ContentAddress;
use super::hash::{Hash, HashAlgo};
use super::nix32;
use super::store_path::{AbsStorePath, InternPaths};

/// A NAR hash as path-info JSON writes it: `sha256:<nix32>` (SRI and hex accepted on input).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NarHash(pub Hash);

impl NarHash {
    /// Whether reading `text` as a NAR hash succeeds, without building the hash: the form
    /// Nix writes (`sha256:` and 52 nix32 digits) is checked in place, any other goes
    /// through the reader itself.
    pub fn accepts(text: &str) -> bool {
        let written_by_nix = text
            .strip_prefix("sha256:")
            .is_some_and(|digits| digits.len() == 52 && nix32::is_valid(digits));
        written_by_nix
            || NarHash::deserialize(
                serde::de::value::StrDeserializer::<serde::de::value::Error>::new(text),
            )
            .is_ok()
    }
}

impl Serialize for NarHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_typed_nix32())
    }
}

impl<'de> Deserialize<'de> for NarHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Parsed from the input's string, without copying it first.
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = NarHash;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<NarHash, E> {
                let hash = Hash::parse_typed(text).map_err(E::custom)?;
                if hash.algo() != HashAlgo::Sha256 {
                    return Err(E::custom(format!("narHash '{text}' is not SHA-256")));
                }
                Ok(NarHash(hash))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// What is known about one valid store path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathInfo {
    /// The content address (`fixed:r:sha256:…`, `text:sha256:…`), when the path has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<ContentAddress>,
    /// Total NAR size of the path's closure; present in closure graphs.
    #[serde(
        rename = "closureSize",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub closure_size: Option<u64>,
    #[serde(rename = "narHash")]
    pub nar_hash: NarHash,
    #[serde(rename = "narSize")]
    pub nar_size: u64,
    pub path: AbsStorePath,
    /// Store paths this one mentions, sorted; a self-reference is listed.
    #[serde(deserialize_with = "path_set")]
    pub references: BTreeSet<AbsStorePath>,
}

/// A JSON list of paths as a set, built in bulk: the list is read whole, then sorted (a
/// linear check when it already is, as Nix writes it) and deduplicated, instead of inserting
/// path by path with a search each time.
fn path_set<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeSet<AbsStorePath>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = BTreeSet<AbsStorePath>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of store paths")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut paths = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(path) = seq.next_element::<AbsStorePath>()? {
                paths.push(path);
            }
            Ok(BTreeSet::from_iter(paths))
        }
    }
    d.deserialize_seq(Visitor)
}

impl PathInfo {
    /// Whether the path refers to itself.
    pub fn has_self_reference(&self) -> bool {
        self.references.contains(&self.path)
    }
}

/// Read one or more path-info objects: a single object, a JSON array, or a stream of
/// whitespace-separated objects/arrays (what piping several tools together produces). Errors
/// name the line and column.
pub fn parse_path_infos(text: &str) -> Result<Vec<PathInfo>, serde_json::Error> {
    // A path-info object takes a few hundred bytes (at least 150): room for the paths of a
    // typical graph without growing the table.
    let _interned = InternPaths::start(text.len() / 256);
    let mut out = Vec::new();
    for item in serde_json::Deserializer::from_str(text).into_iter::<OneOrMany>() {
        match item? {
            OneOrMany::One(info) => out.push(*info),
            OneOrMany::Many(infos) => out.extend(infos),
        }
    }
    Ok(out)
}

/// Like [`parse_path_infos`], and also the two object shapes other tools write: a single-key
/// `{"KEY": [infos…]}` (the structured-attrs file `exportReferencesGraph` writes) and a map
/// from path to info without `path` fields (newer `nix path-info --json`; `null` values, which
/// Nix writes for invalid paths, are refused). Errors of the plain shapes keep their line and
/// column; errors inside the object shapes have none (`line() == 0`).
pub fn parse_path_info_documents(text: &str) -> Result<Vec<PathInfo>, serde_json::Error> {
    let plain = match parse_path_infos(text) {
        Ok(infos) => return Ok(infos),
        Err(e) => e,
    };
    let Ok(object) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text)
    else {
        return Err(plain);
    };
    if object.len() == 1 && object.values().all(serde_json::Value::is_array) {
        let (_, graph) = object.into_iter().next().unwrap_or_default();
        return serde_json::from_value(graph);
    }
    if !object.is_empty() && object.keys().all(|k| k.starts_with('/')) {
        return object
            .into_iter()
            .map(|(path, value)| match value {
                serde_json::Value::Object(mut fields) => {
                    fields.insert("path".to_string(), serde_json::Value::String(path));
                    serde_json::from_value(serde_json::Value::Object(fields))
                }
                _ => Err(serde::de::Error::custom(format!(
                    "'{path}' has no path info (is it a valid path?)"
                ))),
            })
            .collect();
    }
    Err(plain)
}

/// A path-info object or an array of them, deserialised in place so that errors keep their
/// line and column.
enum OneOrMany {
    One(Box<PathInfo>),
    Many(Vec<PathInfo>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a path-info object or an array of them")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<OneOrMany, A::Error> {
                let info =
                    PathInfo::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(OneOrMany::One(Box::new(info)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(info) = seq.next_element::<PathInfo>()? {
                    items.push(info);
                }
                Ok(OneOrMany::Many(items))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nar_hash_accepts_what_it_reads() {
        let nix32 = "15rnbqpncbwhcd4mqzqhvz9srh6xanjkm7piiwww36si73qbjzky";
        let mut texts = vec![
            format!("sha256:{nix32}"),
            format!("sha256:{}", "1".repeat(52)),
            format!("sha256:{}", "2".repeat(52)),
            format!("sha256:{}", &nix32[1..]),
            format!("sha256:{nix32}0"),
            format!("sha256:{}", nix32.replace('q', "e")),
            format!("sha256:{}", nix32.to_uppercase()),
            format!("sha1:{}", "0".repeat(32)),
            format!("sha256:{}", "ab".repeat(32)),
            "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=".to_string(),
            format!("SHA256:{nix32}"),
            nix32.to_string(),
            String::new(),
        ];
        // Every first digit: only 0 and 1 leave the bits above 256 zero.
        for digit in nix32::ALPHABET {
            texts.push(format!("sha256:{}{}", char::from(*digit), &nix32[1..]));
        }
        for text in texts {
            let read = NarHash::deserialize(serde::de::value::StrDeserializer::<
                serde::de::value::Error,
            >::new(&text));
            assert_eq!(NarHash::accepts(&text), read.is_ok(), "{text}");
        }
    }

    const ONE: &str = r#"{"ca":"text:sha256:085ssxbk2llxi98aiz181pvqm5mrhcr632v0y4a886lxyx22yq50","closureSize":128,"narHash":"sha256:15rnbqpncbwhcd4mqzqhvz9srh6xanjkm7piiwww36si73qbjzky","narSize":128,"path":"/nix/store/6nqvynq6mpq1s0g0prmzq6dwkpldp8cg-dep","references":[]}"#;

    #[test]
    fn round_trips_byte_for_byte() {
        let info: PathInfo = serde_json::from_str(ONE).unwrap();
        assert_eq!(serde_json::to_string(&info).unwrap(), ONE);
    }

    #[test]
    fn reads_streams_and_arrays() {
        let text = format!("[{ONE},{ONE}]\n{ONE}\n");
        assert_eq!(parse_path_infos(&text).unwrap().len(), 3);
        let err = parse_path_infos("{\"path\": 3}").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn references_are_a_sorted_set() {
        let path = |c: char| format!("/nix/store/{}-{c}", c.to_string().repeat(32));
        let info: PathInfo = serde_json::from_value(serde_json::json!({
            "narHash": "sha256:15rnbqpncbwhcd4mqzqhvz9srh6xanjkm7piiwww36si73qbjzky",
            "narSize": 1,
            "path": path('a'),
            "references": [path('c'), path('a'), path('b'), path('c')],
        }))
        .unwrap();
        let refs: Vec<String> = info.references.iter().map(|r| r.to_string()).collect();
        assert_eq!(refs, [path('a'), path('b'), path('c')]);
        assert!(serde_json::from_str::<PathInfo>(&ONE.replace("[]", "[3]")).is_err());
    }

    #[test]
    fn reads_keyed_objects() {
        let keyed = format!("{{\"graph\": [{ONE}]}}");
        assert_eq!(parse_path_info_documents(&keyed).unwrap().len(), 1);
        let by_path = r#"{"/nix/store/6nqvynq6mpq1s0g0prmzq6dwkpldp8cg-dep": {"narHash": "sha256:15rnbqpncbwhcd4mqzqhvz9srh6xanjkm7piiwww36si73qbjzky", "narSize": 1, "references": [], "ca": null, "signatures": []}}"#;
        let infos = parse_path_info_documents(by_path).unwrap();
        assert_eq!(infos[0].path.path.name(), "dep");
        let invalid = r#"{"/nix/store/6nqvynq6mpq1s0g0prmzq6dwkpldp8cg-dep": null}"#;
        assert!(parse_path_info_documents(invalid).is_err());
        let err = parse_path_info_documents("[\n{\"path\": 3}]").unwrap_err();
        assert_eq!(err.line(), 2);
    }
}
