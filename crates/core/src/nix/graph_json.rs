//! Reading a closure graph JSON straight into numbered paths, for tools that load a whole graph
//! to work on it (layering). The general path-info reader builds an owned
//! [`PathInfo`](super::path_info::PathInfo) per
//! object and a path per reference, then looks every reference up again to number the edges;
//! on graphs of thousands of paths that is most of the work. Here each path string, borrowed
//! from the input, is interned by its hash part the moment it is read (the first time fully
//! parsed and checked, later only compared with the first spelling), references are kept as
//! path numbers, and the edges come out of the same pass.
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
use super::path_info::{NarHash, parse_path_info_documents};
use super::store_path::{AbsStorePath, HASH_PART_LEN, StoreDir, intern_key};

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
    // A path-info object takes a few hundred bytes.
    let mut reader = GraphReader::with_capacity(text.len() / 256);
    let mut json = serde_json::Deserializer::from_str(text);
    TopSeed(&mut reader).deserialize(&mut json).ok()?;
    json.end().ok()?;
    reader.into_graph()
}

/// No record (yet) for a path.
const NONE: u32 = u32::MAX;

/// One path-info object as read: what layering needs of it, the path and references as path
/// numbers. The other fields are checked and dropped.
struct Record {
    path: u32,
    nar_size: u64,
    /// Range of [`GraphReader::references`].
    references: (usize, usize),
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
struct GraphReader {
    numbers: HashMap<u64, u32, BuildHasherDefault<HashPartHasher>>,
    /// The store dir of the first path: the others are nearly always in it too.
    store_dir: Option<StoreDir>,
    paths: Vec<AbsStorePath>,
    /// Per path number, the record that describes it, or [`NONE`].
    record_of: Vec<u32>,
    records: Vec<Record>,
    references: Vec<u32>,
}

impl GraphReader {
    fn with_capacity(paths: usize) -> GraphReader {
        GraphReader {
            numbers: HashMap::with_capacity_and_hasher(paths, Default::default()),
            store_dir: None,
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

    /// The number of the path `text` spells: parsed and checked the first time its hash part
    /// is met, compared with that first spelling afterwards.
    fn intern<E: serde::de::Error>(&mut self, text: &str) -> Result<u32, E> {
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
                let path = AbsStorePath::parse(text).map_err(E::custom)?;
                if path.path.hash_part().as_bytes() != key {
                    return Err(E::custom("a store path read from the wrong place"));
                }
                let number = self.paths.len() as u32;
                self.store_dir.get_or_insert_with(|| path.store_dir.clone());
                self.paths.push(path);
                self.record_of.push(NONE);
                slot.insert(number);
                Ok(number)
            }
        }
    }

    /// Keep `record`; an error if its path already has one.
    fn add<E: serde::de::Error>(&mut self, record: Record) -> Result<(), E> {
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
        let mut by_node: Vec<(u32, AbsStorePath)> =
            paths.drain(..).zip(node_of).map(|(p, n)| (n, p)).collect();
        by_node.sort_unstable_by_key(|(n, _)| *n);
        let paths: Vec<AbsStorePath> = by_node.into_iter().map(|(_, p)| p).collect();
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
