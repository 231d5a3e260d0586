//! Reading a closure graph JSON straight into numbered paths, for tools that load a whole graph
//! to work on it (layering). The general path-info reader builds an owned
//! [`PathInfo`](super::path_info::PathInfo) per object and a path per reference, then looks
//! every reference up again to number the edges; on graphs of thousands of paths that is most
//! of the work. Here each path string, borrowed from the input, is interned by its hash part
//! the moment it is read (the first time fully parsed and checked, later only compared with
//! the first spelling), references are kept as path numbers, and the edges come out of the
//! same pass. The text is read by the crate's own scanner (`nix::graph_scan`) when it is as
//! Nix writes it, else by `serde_json`.
//!
//! Only the plain shapes are read this way: one JSON array of path-info objects, or one
//! object. Anything else — another shape, a stream of several values, a graph that is not
//! valid — goes to the general reader, which reads the other shapes and gives the errors (with
//! their lines and columns) callers know; so both readers agree on every input by design.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::hash::BuildHasherDefault;

use serde::de::{
    DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};

use super::closure::{ClosureError, ClosureGraph};
use super::content_address::ContentAddress;
use super::dag::{Adjacency, HashPartHasher, PathGraph};
use super::graph_scan::scan_graph;
use super::path_info::{NarHash, parse_path_info_documents};
use super::store_path::{
    AbsStorePath, HASH_PART_LEN, StoreDir, StorePath, StorePathError, intern_key,
};

/// Why a graph JSON could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GraphJsonError {
    /// Not path-info JSON of a shape the general reader takes, with its position.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// Path infos that do not make a closure graph.
    #[error(transparent)]
    Graph(#[from] ClosureError),
}

/// Read the paths, NAR sizes and edges of a closure graph from path-info JSON in any shape
/// [`parse_path_info_documents`] takes, with the checks of
/// [`ClosureGraph::from_infos_keeping_sizes`]: the result equals that graph's
/// [`to_path_graph`](ClosureGraph::to_path_graph), and so do the errors.
pub fn read_path_graph(text: &str) -> Result<PathGraph, GraphJsonError> {
    if let Some(graph) = read_plain_graph(text) {
        return Ok(graph);
    }
    let infos = parse_path_info_documents(text)?;
    Ok(ClosureGraph::from_infos_keeping_sizes(infos)?.to_path_graph())
}

/// The graph of `text` if it is one plain array (or object) of path infos making a valid
/// closure graph; `None` for anything else, including every error.
fn read_plain_graph(text: &str) -> Option<PathGraph> {
    scanned(text).or_else(|| deserialized(text))?.into_graph()
}

/// Room for the paths of `text`: a path-info object takes a few hundred bytes.
fn reader_for(text: &str) -> GraphReader {
    GraphReader::with_capacity(text.len() / 256)
}

/// The objects of `text` if it is as Nix writes it, read by [`graph_scan`](super::graph_scan).
fn scanned(text: &str) -> Option<GraphReader> {
    let mut reader = reader_for(text);
    scan_graph(text, &mut reader)?;
    Some(reader)
}

/// The objects of `text` if it is a plain array or object of path infos, read by `serde_json`.
fn deserialized(text: &str) -> Option<GraphReader> {
    let mut reader = reader_for(text);
    let mut json = serde_json::Deserializer::from_str(text);
    TopSeed(&mut reader).deserialize(&mut json).ok()?;
    json.end().ok()?;
    Some(reader)
}

/// No record (yet) for a path.
const NONE: u32 = u32::MAX;

/// One path-info object as read: what layering needs of it, the path and references as path
/// numbers. The other fields are checked and dropped.
pub(super) struct Record {
    pub(super) path: u32,
    pub(super) nar_size: u64,
    /// Range of [`GraphReader::references`].
    pub(super) references: (usize, usize),
}

/// A hash part folded to 64 bits: hash parts are uniformly distributed already, so this
/// keeps their entropy. Two paths whose hash parts fold alike are told apart by their text
/// (and then left to the general reader).
fn fingerprint(hash_part: &[u8; HASH_PART_LEN]) -> u64 {
    hash_part.chunks_exact(8).fold(0u64, |folded, word| {
        let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
        (folded.rotate_left(23) ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    })
}

/// Paths numbered in the order they are first met, and the objects read so far.
pub(super) struct GraphReader {
    numbers: HashMap<u64, u32, BuildHasherDefault<HashPartHasher>>,
    /// The store dir of the first path: the others are nearly always in it too.
    store_dir: Option<StoreDir>,
    paths: Vec<AbsStorePath>,
    /// Whether the store dir's text is the same inside a JSON string (nothing escaped), so
    /// that a path in it can be recognised in the raw text; see [`known_at`](Self::known_at).
    plain_store_dir: bool,
    /// Per path number, the record that describes it, or [`NONE`].
    record_of: Vec<u32>,
    records: Vec<Record>,
    pub(super) references: Vec<u32>,
}

impl GraphReader {
    fn with_capacity(paths: usize) -> GraphReader {
        GraphReader {
            numbers: HashMap::with_capacity_and_hasher(paths, Default::default()),
            store_dir: None,
            plain_store_dir: false,
            paths: Vec::with_capacity(paths),
            record_of: Vec::with_capacity(paths),
            records: Vec::with_capacity(paths),
            references: Vec::with_capacity(paths * 4),
        }
    }

    /// The hash part `text` has if it is a store path: read straight after the store dir of
    /// the first path when it starts with it, else after its last `/`.
    fn key(&self, text: &str) -> Option<[u8; HASH_PART_LEN]> {
        let in_dir = self.store_dir.as_ref().and_then(|dir| {
            let base = text.strip_prefix(dir.as_str())?.strip_prefix('/')?;
            base.as_bytes().get(..HASH_PART_LEN)?.try_into().ok()
        });
        in_dir.or_else(|| intern_key(text))
    }

    /// `text` as [`AbsStorePath::parse`] reads it; in `store_dir` (the one already met), only the base
    /// name is checked and the store dir shared (what `parse` would make of it is equal).
    fn parse_path(
        store_dir: Option<&StoreDir>,
        text: &str,
    ) -> Result<AbsStorePath, StorePathError> {
        let in_dir = store_dir.and_then(|dir| {
            let base = text.strip_prefix(dir.as_str())?.strip_prefix('/')?;
            (!base.contains('/')).then_some((dir, base))
        });
        match in_dir {
            Some((dir, base)) => Ok(AbsStorePath {
                store_dir: dir.clone(),
                path: StorePath::from_base_name(base)?,
            }),
            None => AbsStorePath::parse(text),
        }
    }

    /// The number of the path `text` spells: parsed and checked the first time its hash part
    /// is met, compared with that first spelling afterwards.
    pub(super) fn intern<E: serde::de::Error>(&mut self, text: &str) -> Result<u32, E> {
        let Some(key) = self.key(text) else {
            return Err(match AbsStorePath::parse(text) {
                Err(e) => E::custom(e),
                Ok(_) => E::custom("a store path without a hash part"),
            });
        };
        match self.numbers.entry(fingerprint(&key)) {
            Entry::Occupied(known) => {
                let number = *known.get();
                // Two paths alike (never in a real store): the general reader's business.
                if !self.paths[number as usize].spells(text) {
                    return Err(E::custom("two store paths share a hash part"));
                }
                Ok(number)
            }
            Entry::Vacant(slot) => {
                let path = Self::parse_path(self.store_dir.as_ref(), text).map_err(E::custom)?;
                if path.path.hash_part().as_bytes() != key {
                    return Err(E::custom("a store path read from the wrong place"));
                }
                let number = self.paths.len() as u32;
                if self.store_dir.is_none() {
                    self.plain_store_dir = path.store_dir.is_json_plain();
                    self.store_dir = Some(path.store_dir.clone());
                }
                self.paths.push(path);
                self.record_of.push(NONE);
                slot.insert(number);
                Ok(number)
            }
        }
    }

    /// A path already numbered, recognised in raw JSON text: `bytes` starting with a string
    /// whose content is exactly that path in the store dir of the first path (its number and
    /// the bytes the string takes, quotes included). What reading the string and
    /// [`intern`](Self::intern)ing it would give, without scanning the string for its end
    /// first: a base name has no character JSON escapes, nor has the store dir (else this is
    /// never tried), so the closing quote is where the path ends.
    pub(super) fn known_at(&self, bytes: &[u8]) -> Option<(u32, usize)> {
        let dir = self.store_dir.as_ref().filter(|_| self.plain_store_dir)?;
        let dir = dir.as_str().as_bytes();
        let rest = bytes
            .strip_prefix(b"\"")?
            .strip_prefix(dir)?
            .strip_prefix(b"/")?;
        let key: &[u8; HASH_PART_LEN] = rest.get(..HASH_PART_LEN)?.try_into().ok()?;
        let &number = self.numbers.get(&fingerprint(key))?;
        let path = &self.paths[number as usize];
        let base = path.path.as_base_name().as_bytes();
        let whole = path.store_dir.as_str().as_bytes() == dir
            && rest.get(..base.len()) == Some(base)
            && rest.get(base.len()) == Some(&b'"');
        whole.then_some((number, 1 + dir.len() + 1 + base.len() + 1))
    }

    /// Keep `record`; an error if its path already has one.
    pub(super) fn add<E: serde::de::Error>(&mut self, record: Record) -> Result<(), E> {
        let slot = &mut self.record_of[record.path as usize];
        if *slot != NONE {
            return Err(E::custom("a path appears twice"));
        }
        *slot = self.records.len() as u32;
        self.records.push(record);
        Ok(())
    }

    /// The graph, if every path met has exactly one record and there is no cycle.
    fn into_graph(self) -> Option<PathGraph> {
        let GraphReader {
            mut paths,
            record_of,
            mut records,
            references,
            ..
        } = self;
        if record_of.contains(&NONE) {
            return None;
        }
        // Node numbers are positions in path order; Nix writes graphs sorted, so the records
        // usually are in that order already.
        let path_of = |r: &Record| &paths[r.path as usize];
        if !records.windows(2).all(|w| path_of(&w[0]) < path_of(&w[1])) {
            records.sort_unstable_by(|a, b| path_of(a).cmp(path_of(b)));
        }
        let mut node_of = record_of;
        for (node, record) in records.iter().enumerate() {
            node_of[record.path as usize] = node as u32;
        }
        let edges: Vec<Vec<u32>> = records
            .iter()
            .enumerate()
            .map(|(node, record)| {
                let (start, end) = record.references;
                let mut targets: Vec<u32> = references[start..end]
                    .iter()
                    .map(|&p| node_of[p as usize])
                    .filter(|&t| t as usize != node)
                    .collect();
                targets.sort_unstable();
                targets.dedup();
                targets
            })
            .collect();
        // Every path has a record, so renumbering is a permutation of the paths.
        let mut by_node: Vec<Option<AbsStorePath>> = vec![None; paths.len()];
        for (path, node) in paths.drain(..).zip(node_of) {
            by_node[node as usize] = Some(path);
        }
        let paths: Vec<AbsStorePath> = by_node.into_iter().collect::<Option<_>>()?;
        let adjacency =
            Adjacency::from_references(&paths.iter().collect::<Vec<_>>(), edges).ok()?;
        let nar_sizes = records.iter().map(|r| r.nar_size).collect();
        Some(PathGraph::from_parts(paths, nar_sizes, adjacency))
    }
}

/// The whole document: an array of path-info objects or one object.
struct TopSeed<'r>(&'r mut GraphReader);

impl<'de> DeserializeSeed<'de> for TopSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a path-info object or an array of them")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(InfoSeed(self.0))?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        InfoSeed(self.0).visit_map(map)
    }
}

/// One path-info object, added to the reader.
struct InfoSeed<'r>(&'r mut GraphReader);

impl<'de> DeserializeSeed<'de> for InfoSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

/// The fields of a path-info object this reader keeps; others are skipped.
enum Field {
    Ca,
    ClosureSize,
    NarHash,
    NarSize,
    Path,
    References,
    Other,
}

impl<'de> serde::Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Field, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Field, E> {
                Ok(match name {
                    "ca" => Field::Ca,
                    "closureSize" => Field::ClosureSize,
                    "narHash" => Field::NarHash,
                    "narSize" => Field::NarSize,
                    "path" => Field::Path,
                    "references" => Field::References,
                    _ => Field::Other,
                })
            }
        }
        d.deserialize_identifier(Name)
    }
}

/// Set a field read once; a second occurrence is an error, as for derived readers.
fn once<T, E: serde::de::Error>(
    slot: &mut Option<T>,
    value: T,
    name: &'static str,
) -> Result<(), E> {
    if slot.replace(value).is_some() {
        return Err(E::duplicate_field(name));
    }
    Ok(())
}

impl<'de> Visitor<'de> for InfoSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a path-info object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let reader = self.0;
        // The fields layering does not use are checked as the general reader checks them.
        let (mut ca, mut closure_size, mut nar_hash) = (None, None, None);
        let (mut nar_size, mut path, mut references) = (None, None, None);
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Ca => once(&mut ca, map.next_value::<Option<ContentAddress>>()?, "ca")?,
                Field::ClosureSize => once(
                    &mut closure_size,
                    map.next_value::<Option<u64>>()?,
                    "closureSize",
                )?,
                Field::NarHash => once(&mut nar_hash, map.next_value::<NarHash>()?, "narHash")?,
                Field::NarSize => once(&mut nar_size, map.next_value()?, "narSize")?,
                Field::Path => once(&mut path, map.next_value_seed(PathSeed(reader))?, "path")?,
                Field::References => {
                    let start = reader.references.len();
                    map.next_value_seed(ReferencesSeed(reader))?;
                    once(
                        &mut references,
                        (start, reader.references.len()),
                        "references",
                    )?;
                }
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let missing = A::Error::missing_field;
        nar_hash.ok_or_else(|| missing("narHash"))?;
        reader.add(Record {
            path: path.ok_or_else(|| missing("path"))?,
            nar_size: nar_size.ok_or_else(|| missing("narSize"))?,
            references: references.ok_or_else(|| missing("references"))?,
        })
    }
}

/// A list of store paths, appended to the reader's references as numbers.
struct ReferencesSeed<'r>(&'r mut GraphReader);

impl<'de> DeserializeSeed<'de> for ReferencesSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ReferencesSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of store paths")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(number) = seq.next_element_seed(PathSeed(self.0))? {
            self.0.references.push(number);
        }
        Ok(())
    }
}

/// One store path, interned.
struct PathSeed<'r>(&'r mut GraphReader);

impl<'de> DeserializeSeed<'de> for PathSeed<'_> {
    type Value = u32;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u32, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for PathSeed<'_> {
    type Value = u32;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an absolute store path")
    }
    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<u32, E> {
        self.0.intern(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAR_HASH: &str = "sha256:15rnbqpncbwhcd4mqzqhvz9srh6xanjkm7piiwww36si73qbjzky";
    const A: &str = "/nix/store/6nqvynq6mpq1s0g0prmzq6dwkpldp8cg-a";
    const B: &str = "/nix/store/fkckkyn8s8bc544nrrrp4v4f0j21fvkz-b";
    const C: &str = "/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-c";

    /// A path-info object as JSON text.
    fn object(path: &str, refs: &[&str], size: &str) -> String {
        let refs: Vec<String> = refs.iter().map(|r| format!("\"{r}\"")).collect();
        format!(
            r#"{{"narHash":"{NAR_HASH}","narSize":{size},"path":"{path}","references":[{}]}}"#,
            refs.join(",")
        )
    }

    fn array(objects: &[String]) -> String {
        format!("[{}]", objects.join(","))
    }

    /// What the general reader makes of `text`.
    fn general(text: &str) -> Result<PathGraph, String> {
        let infos = parse_path_info_documents(text).map_err(|e| e.to_string())?;
        let graph = ClosureGraph::from_infos_keeping_sizes(infos).map_err(|e| e.to_string())?;
        Ok(graph.to_path_graph())
    }

    /// Both readers agree on `text`; returns whether the fast one read it itself.
    fn agree(text: &str) -> bool {
        let fast = read_plain_graph(text);
        let expected = general(text);
        let scanned = scanned(text).and_then(GraphReader::into_graph);
        let deserialized = deserialized(text).and_then(GraphReader::into_graph);
        for graph in [&fast, &scanned, &deserialized].into_iter().flatten() {
            assert_eq!(Ok(graph), expected.as_ref(), "{text}");
        }
        let read = read_path_graph(text).map_err(|e| e.to_string());
        assert_eq!(read, expected, "{text}");
        fast.is_some()
    }

    fn refused(text: &str) {
        assert!(read_plain_graph(text).is_none(), "{text}");
        assert!(read_path_graph(text).is_err(), "{text}");
        assert!(!agree(text));
    }

    fn graph() -> String {
        array(&[
            object(A, &[A], "10"),
            object(B, &[A], "5"),
            object(C, &[B, A, B], "1"),
        ])
    }

    #[test]
    fn reads_plain_graphs_as_the_general_reader_does() {
        assert!(agree(&graph()));
        // Unsorted, one object alone, extra fields (skipped whatever they hold), nulls.
        let unsorted = array(&[object(C, &[B], "1"), object(B, &[], "2")]);
        assert!(agree(&unsorted));
        assert!(agree(&object(A, &[], "3")));
        let extra = object(A, &[], "3").replace(
            "\"path\"",
            r#""signatures":[[{"x":[1,2.5e3,null,true]}]],"ca":null,"closureSize":null,"path""#,
        );
        assert!(agree(&extra));
        let sized = object(A, &[], "3").replace("\"path\"", "\"closureSize\":7,\"path\"");
        assert!(agree(&sized));
        let empty = "[]";
        assert!(agree(empty));
        assert!(read_plain_graph(empty).unwrap().is_empty());
    }

    #[test]
    fn paths_recognised_in_place_are_the_paths_read() {
        // Known paths as references, before and after their own object, with space around.
        let spaced = graph().replace(",\"", " ,\n \"").replace('[', "[ ");
        assert!(agree(&spaced));
        // Spelled like a known path up to where it goes on: another path (with the same
        // hash part: left to the general reader), or an escape.
        let longer = array(&[
            object(A, &[], "1"),
            object(&format!("{A}x"), &[], "1"),
            object(B, &[&format!("{A}x"), A], "2"),
        ]);
        assert!(!agree(&longer));
        refused(&array(&[
            object(A, &[], "1"),
            object(B, &[&format!("{A}y")], "1"),
        ]));
        // The hash part of a known path with another name of the same length.
        let renamed = format!("{}z", &A[..A.len() - 1]);
        refused(&array(&[object(A, &[], "1"), object(B, &[&renamed], "1")]));
        // The base name of a known path in another store dir.
        let gnu = B.replace("/nix/store", "/gnu/store");
        refused(&array(&[
            object(A, &[], "1"),
            object(&gnu, &[], "1"),
            object(C, &[B], "1"),
        ]));
        assert!(!agree(&array(&[
            object(A, &[], "1"),
            object(B, &[&format!("{A}\\u0078")], "1")
        ])));
        // A store dir with a space (recognised in place) and one JSON escapes (never: the
        // scanner leaves escapes to serde_json).
        for dir in ["/my store", "/my\\\"store"] {
            let text = graph().replace("/nix/store", dir);
            assert!(agree(&text), "{text}");
            assert_eq!(scanned(&text).is_some(), !dir.contains('\\'), "{text}");
            assert_eq!(read_path_graph(&text).unwrap().len(), 3);
        }
        // Keys that start like the fields read in place.
        let keys = object(A, &[], "1").replace("\"path\"", "\"paths\":1,\"narHashes\":[],\"path\"");
        assert!(agree(&keys));
    }

    #[test]
    fn other_shapes_go_to_the_general_reader() {
        let keyed = format!("{{\"graph\": {}}}", graph());
        let stream = format!(
            "{}\n{}\n",
            object(A, &[], "1"),
            array(&[object(B, &[A], "2")])
        );
        // Two paths with one hash part: valid, though no store holds such.
        let twin = array(&[object(A, &[], "1"), object(&format!("{A}2"), &[A], "2")]);
        let elsewhere = array(&[
            object(A, &[], "1"),
            object(&B.replace("/nix/store", "/gnu/store"), &[A], "2"),
        ]);
        for text in [keyed, stream, twin] {
            assert!(!agree(&text), "{text}");
            assert!(read_path_graph(&text).is_ok(), "{text}");
        }
        assert!(agree(&elsewhere));
    }

    #[test]
    fn bad_graphs_are_refused_with_the_general_errors() {
        // Missing references, a path twice, a cycle.
        refused(&array(&[object(B, &[A], "5")]));
        refused(&array(&[object(A, &[], "1"), object(A, &[], "1")]));
        refused(&array(&[object(A, &[B], "1"), object(B, &[A], "1")]));
        // Not store paths: bad hash part, bad name, `..` in the store dir, no store dir.
        let bad_paths = [
            "/nix/store/eeeeynq6mpq1s0g0prmzq6dwkpldp8cg-a",
            "/nix/store/6nqvynq6mpq1s0g0prmzq6dwkpldp8cg-a b",
            "/nix/../store/6nqvynq6mpq1s0g0prmzq6dwkpldp8cg-a",
            "6nqvynq6mpq1s0g0prmzq6dwkpldp8cg-a",
            "/nix/store/6nqvynq6mpq1s0g0prmzq6dwkpldp8cg-a/bin",
            "/nix/store/6nqvynq6mpq1s0g0prmzq6dwkpldp8cg-..",
            "/nix/store/short-a",
            "",
        ];
        for bad in bad_paths {
            refused(&array(&[object(bad, &[], "1")]));
            refused(&array(&[object(A, &[bad], "1")]));
        }
        // A reference spelled like a known path but longer or in another store dir.
        refused(&array(&[object(A, &[&format!("{A}/x")], "1")]));
        // Missing and repeated fields, wrong types.
        refused(&object(A, &[], "1").replace("\"narHash\"", "\"narhash\""));
        refused(&object(A, &[], "1").replace("\"path\"", "\"references\":[],\"path\""));
        refused(&object(A, &[], "1").replace("\"path\"", &format!("\"path\":\"{A}\",\"path\"")));
        refused(&object(A, &[], "1").replace("\"path\"", "\"narSize\":1,\"path\""));
        refused(&object(A, &[], "1").replace(NAR_HASH, "md5:00000000000000000000000000"));
        refused(&object(A, &[], "1").replace("[]", "null"));
        refused(&object(A, &[], "1").replace("[]", "[3]"));
        refused(&object(A, &[], "1").replace("\"path\"", "\"ca\":\"nonsense\",\"path\""));
        refused(&format!("[{}, 3]", object(A, &[], "1")));
        refused("3");
        refused("null");
        // Nothing at all is an empty stream to the general reader: an empty graph.
        assert!(!agree(" "));
        assert!(read_path_graph("").unwrap().is_empty());
    }

    #[test]
    fn hostile_json_is_refused_without_harm() {
        let text = graph();
        // Truncated anywhere.
        for end in 1..text.len() {
            if text.is_char_boundary(end) {
                refused(&text[..end]);
            }
        }
        // Trailing garbage.
        refused(&format!("{text} x"));
        // Numbers too big for a size, negative, fractional, exponent.
        for size in ["18446744073709551616", "1e400", "-1", "1.5", "1e3", "0x10"] {
            refused(&object(A, &[], size));
        }
        assert!(agree(&object(A, &[], "18446744073709551615")));
        // Nesting far deeper than any graph: no stack overflow.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        refused(&deep);
        let deep_field = object(A, &[], "1").replace("\"path\"", &format!("\"x\":{deep},\"path\""));
        // Skipped without recursion, by both readers.
        assert!(agree(&deep_field));
        // A raw NUL or control character in a string is not JSON; an escaped one is not a
        // store path.
        refused(&object(&format!("{A}\0"), &[], "1"));
        refused(&object(&format!("{A}\\u0000"), &[], "1"));
        refused(&object(&format!("{A}\n"), &[], "1"));
        // Fields the graph does not use must still be JSON: no raw control character, no
        // space after a minus, no leading zero, no bare word; the subset the scanner skips
        // (and what it leaves to serde_json) is read as the general reader reads it.
        let with = |value: &str| {
            object(A, &[], "1").replace("\"path\"", &format!("\"x\":{value},\"path\""))
        };
        for bad in [
            "\"a\tb\"",
            "\"a\u{1}\"",
            "- 1",
            "01",
            "-01",
            "nul",
            "tru",
            "[1,]",
            "{\"a\"}",
            "{1:2}",
            "+1",
            ".5",
            "1.",
            "[",
            "\"\\x\"",
        ] {
            refused(&with(bad));
        }
        for good in [
            "-1",
            "0",
            "-0",
            "1.5",
            "-2.5e-3",
            "1E+2",
            "\"\\t\\u00e9\"",
            "[true,false,null,{}]",
            "{\"a\":[{\"b\":-7}]}",
            "18446744073709551616",
        ] {
            assert!(agree(&with(good)), "{good}");
        }
        assert!(agree(&format!(" \n\t\r{} \n", graph())));
    }

    #[test]
    fn escapes_are_decoded_as_the_general_reader_decodes_them() {
        // `\/` and `\u002f` spell `/`, `\u0061` spells `a`: the same paths.
        let escaped = array(&[
            object(&A.replace('/', "\\/"), &[], "1"),
            object(B, &[&A.replace("/store/", "/store\\u002f")], "2"),
            object(&C.replace("-c", "-\\u0063"), &[A, B], "3"),
        ]);
        assert!(agree(&escaped));
        let plain = array(&[
            object(A, &[], "1"),
            object(B, &[A], "2"),
            object(C, &[A, B], "3"),
        ]);
        assert_eq!(read_plain_graph(&escaped), read_plain_graph(&plain));
        // Escaped keys are keys too; a lone surrogate is not text.
        assert!(agree(
            &object(A, &[], "1").replace("\"path\"", "\"p\\u0061th\"")
        ));
        refused(&object(&format!("{A}\\ud800"), &[], "1"));
        // An escaped non-ASCII name is decoded, then refused as a name.
        refused(&object(&format!("{A}\\u00e9"), &[], "1"));
    }
}
