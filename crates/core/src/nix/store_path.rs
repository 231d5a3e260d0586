//! Store paths: the store directory, `<hash>-<name>` base names with Nix's name rules, and the
//! fingerprints (`source`, `text`, fixed-output) whose folded SHA-256 is the hash part.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::dag::HashPartHasher;
use super::hash::{Hash, HashAlgo, fold};
use super::nix32;

/// Length of the hash part of a store path base name.
pub const HASH_PART_LEN: usize = 32;
/// Longest name Nix 2.8 accepts after the hash part.
pub const MAX_NAME_LEN: usize = 211;

/// Errors about store path syntax; the texts follow Nix's `BadStorePath` messages.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum StorePathError {
    #[error("store path '{0}' has an empty name")]
    EmptyName(String),
    #[error("store path '{0}' has a name longer than {MAX_NAME_LEN} characters")]
    NameTooLong(String),
    #[error("store path '{path}' contains illegal character '{ch}'")]
    IllegalChar { path: String, ch: String },
    #[error("store path name '{0}' is not allowed ('.' and '..' name nothing)")]
    DotName(String),
    #[error("path '{path}' is not in the Nix store '{store_dir}'")]
    NotInStore { path: String, store_dir: String },
    #[error("path '{0}' is not a valid store path: no 32-character nix32 hash part")]
    BadHashPart(String),
    #[error(
        "store directory '{0}' must be an absolute, canonical path (no '.', '..', '//' or trailing slash)"
    )]
    BadStoreDir(String),
    #[error("path '{0}' is not canonical: '.', '..' and '//' are not allowed in store paths")]
    NotCanonical(String),
}

/// Whether `/`-separated `components` (after a leading `/`) are all real names: none empty,
/// `.` or `..`, so the path names what it spells, inside the directory it starts from.
fn canonical_components(components: &str) -> bool {
    components
        .split('/')
        .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'))
}

/// The logical store directory (e.g. `/nix/store`): part of every store path and fingerprint.
/// Shared, not copied: a closure's hundreds of thousands of paths hold one string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoreDir(Arc<str>);

impl Default for StoreDir {
    fn default() -> Self {
        StoreDir::new("/nix/store").unwrap_or_else(|_| StoreDir(Arc::from("/nix/store")))
    }
}

impl fmt::Display for StoreDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StoreDir {
    pub fn new(dir: &str) -> Result<StoreDir, StorePathError> {
        // Paths are parsed in bulk and nearly always share their store dir: reuse the last one
        // (checked when it was made).
        thread_local! {
            static LAST: RefCell<Option<StoreDir>> = const { RefCell::new(None) };
        }
        if let Some(known) =
            LAST.with_borrow(|last| last.as_ref().filter(|k| &*k.0 == dir).cloned())
        {
            return Ok(known);
        }
        // Canonical, so that the physical store (the root joined with this) stays inside the
        // root: `/../../x` would not.
        if !dir
            .strip_prefix('/')
            .is_some_and(|rest| !rest.is_empty() && canonical_components(rest))
        {
            return Err(StorePathError::BadStoreDir(dir.to_string()));
        }
        Ok(LAST.with_borrow_mut(|last| last.insert(StoreDir(Arc::from(dir))).clone()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether JSON writes the store dir inside quotes as it is (no control character, quote
    /// or backslash), so that its paths can be written, and recognised, byte for byte.
    pub fn is_json_plain(&self) -> bool {
        self.0.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
    }

    /// Parse an absolute path directly inside this store dir (`/nix/store/<hash>-<name>`).
    pub fn parse_path(&self, path: &str) -> Result<StorePath, StorePathError> {
        let base = path
            .strip_prefix(&*self.0)
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|base| !base.contains('/'))
            .ok_or_else(|| StorePathError::NotInStore {
                path: path.to_string(),
                store_dir: self.0.to_string(),
            })?;
        StorePath::from_base_name(base)
    }

    /// Split an absolute path inside the store into its store path and the rest (`/bin/java`).
    pub fn parse_path_prefix<'a>(
        &self,
        path: &'a str,
    ) -> Result<(StorePath, &'a str), StorePathError> {
        let not_in = || StorePathError::NotInStore {
            path: path.to_string(),
            store_dir: self.0.to_string(),
        };
        let rest = path
            .strip_prefix(&*self.0)
            .and_then(|r| r.strip_prefix('/'));
        let rest = rest.ok_or_else(not_in)?;
        let (base, tail) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let path_part = StorePath::from_base_name(base)?;
        // A sub-path stays inside its store path: no `..` (nor `.` or `//`) to climb out, so
        // `…-hello/../../../usr/bin/id` is refused rather than resolved on the host. One
        // trailing slash is allowed, as shells write directories.
        let inner = tail.strip_prefix('/').unwrap_or(tail);
        let inner = inner.strip_suffix('/').unwrap_or(inner);
        if !inner.is_empty() && !canonical_components(inner) {
            return Err(StorePathError::NotCanonical(path.to_string()));
        }
        Ok((path_part, tail))
    }

    /// The absolute path of a store path under this store dir.
    pub fn display(&self, path: &StorePath) -> String {
        format!("{}/{}", self.0, path.base_name())
    }

    /// Nix's `makeStorePath`: the hash part is nix32(fold20(sha256(fingerprint))), with
    /// fingerprint `TYPE:ALGO:HEX:STOREDIR:NAME`.
    pub fn make_store_path(
        &self,
        path_type: &str,
        inner: &Hash,
        name: &str,
    ) -> Result<StorePath, StorePathError> {
        let fingerprint = self.fingerprint(path_type, inner, name);
        StorePath::from_fingerprint(&fingerprint, name)
    }

    /// The exact string that is hashed for a store path (see [`StoreDir::make_store_path`]).
    pub fn fingerprint(&self, path_type: &str, inner: &Hash, name: &str) -> String {
        format!(
            "{path_type}:{}:{}:{}:{name}",
            inner.algo(),
            inner.to_hex(),
            self.0
        )
    }

    /// `TYPE:REF1:REF2…[:self]`: the type prefix of text and source paths with references.
    pub fn type_with_references<'a>(
        &self,
        base: &str,
        references: impl IntoIterator<Item = &'a StorePath>,
        has_self: bool,
    ) -> String {
        let mut out = base.to_string();
        let sorted: BTreeSet<String> = references.into_iter().map(|r| self.display(r)).collect();
        for r in sorted {
            out.push(':');
            out.push_str(&r);
        }
        if has_self {
            out.push_str(":self");
        }
        out
    }

    /// A `builtins.toFile`-style path: `text:REFS:sha256:<sha256 of contents>`.
    pub fn make_text_path<'a>(
        &self,
        name: &str,
        contents_sha256: &Hash,
        references: impl IntoIterator<Item = &'a StorePath>,
    ) -> Result<StorePath, StorePathError> {
        let ty = self.type_with_references("text", references, false);
        self.make_store_path(&ty, contents_sha256, name)
    }

    /// A content-addressed path (Nix's `makeFixedOutputPath`). Recursive SHA-256 with any
    /// references is a `source` path (`nix-store --add`, floating CA outputs); anything else
    /// hashes `fixed:out:[r:]ALGO:HEX:` into an `output:out` path and may not have references.
    pub fn make_fixed_output_path<'a>(
        &self,
        name: &str,
        method: IngestionMethod,
        hash: &Hash,
        references: impl IntoIterator<Item = &'a StorePath>,
        has_self: bool,
    ) -> Result<StorePath, StorePathError> {
        if method == IngestionMethod::Recursive && hash.algo() == HashAlgo::Sha256 {
            let ty = self.type_with_references("source", references, has_self);
            self.make_store_path(&ty, hash, name)
        } else {
            let inner = format!(
                "fixed:out:{}{}:{}:",
                method.prefix(),
                hash.algo(),
                hash.to_hex()
            );
            let inner = Hash::of(HashAlgo::Sha256, inner.as_bytes());
            self.make_store_path("output:out", &inner, name)
        }
    }
}

/// How a file system object is hashed for a content address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IngestionMethod {
    /// The hash of the file's bytes (a regular file only).
    Flat,
    /// The hash of the NAR serialisation.
    Recursive,
}

impl IngestionMethod {
    /// `r:` for recursive, nothing for flat (as in `fixed:r:sha256:…`).
    pub fn prefix(self) -> &'static str {
        match self {
            IngestionMethod::Flat => "",
            IngestionMethod::Recursive => "r:",
        }
    }
}

/// A store path without its store directory: a 20-byte hash (as 32 nix32 chars) and a name,
/// kept as the one shared string `<hash>-<name>` (one allocation; closures hold many of
/// these, and a path's references share the string of the path they name).
/// Ordered like Nix orders them: by base name, bytewise.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    base: Arc<str>,
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({})", self.base)
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)
    }
}

/// Whether a store path name is `pname` followed by a version: `pname-` then a digit
/// (`bash-5.2` for `bash`, `openjdk-17-jre-headless-17.0.15` for `openjdk-17-jre-headless`).
pub fn is_name_with_version(name: &str, pname: &str) -> bool {
    name.strip_prefix(pname)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|version| version.chars().next())
        .is_some_and(|c| c.is_ascii_digit())
}

/// Check a store path name against Nix's rules; `shown` is what the error message names.
pub fn check_name(name: &str, shown: &str) -> Result<(), StorePathError> {
    if name.is_empty() {
        return Err(StorePathError::EmptyName(shown.to_string()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(StorePathError::NameTooLong(shown.to_string()));
    }
    // Checked bytewise first: names are ASCII, and a non-ASCII byte is refused below.
    if !name.bytes().all(|b| NAME_BYTES[usize::from(b)])
        && let Some(bad) = name.chars().find(|&c| !is_name_char(c))
    {
        return Err(StorePathError::IllegalChar {
            path: shown.to_string(),
            ch: bad.to_string(),
        });
    }
    if name == "." || name == ".." {
        return Err(StorePathError::DotName(name.to_string()));
    }
    Ok(())
}

const fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_' | '?' | '=')
}

/// [`is_name_char`] for each byte value: one load per character of a name.
const NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 128 {
        table[byte] = is_name_char(byte as u8 as char);
        byte += 1;
    }
    table
};

impl StorePath {
    /// Build from a hash part and a name, checking both.
    pub fn new(hash_part: &str, name: &str) -> Result<StorePath, StorePathError> {
        Self::check(hash_part, name)?;
        let mut base = String::with_capacity(HASH_PART_LEN + 1 + name.len());
        base.push_str(hash_part);
        base.push('-');
        base.push_str(name);
        Ok(StorePath {
            base: Arc::from(base),
        })
    }

    /// Check a hash part and a name.
    fn check(hash_part: &str, name: &str) -> Result<(), StorePathError> {
        let shown = || format!("{hash_part}-{name}");
        if hash_part.len() != HASH_PART_LEN || !hash_part.bytes().all(nix32::is_nix32_char) {
            return Err(StorePathError::BadHashPart(shown()));
        }
        if let Err(e) = check_name(name, "") {
            // Name the whole base name in the message; checking costs no allocation.
            return Err(check_name(name, &shown()).err().unwrap_or(e));
        }
        Ok(())
    }

    /// Parse `<hash>-<name>`.
    pub fn from_base_name(base: &str) -> Result<StorePath, StorePathError> {
        if base.len() < HASH_PART_LEN + 2 || base.as_bytes()[HASH_PART_LEN] != b'-' {
            return Err(StorePathError::BadHashPart(base.to_string()));
        }
        Self::check(&base[..HASH_PART_LEN], &base[HASH_PART_LEN + 1..])?;
        // Copied once, straight from the text.
        Ok(StorePath {
            base: Arc::from(base),
        })
    }

    /// The path whose hash part is the folded SHA-256 of `fingerprint`.
    pub fn from_fingerprint(fingerprint: &str, name: &str) -> Result<StorePath, StorePathError> {
        let digest = Hash::of(HashAlgo::Sha256, fingerprint.as_bytes());
        let hash_part = nix32::encode(&fold(digest.bytes(), 20));
        let base = format!("{hash_part}-{name}");
        check_name(name, &base)?;
        Ok(StorePath {
            base: Arc::from(base),
        })
    }

    pub fn hash_part(&self) -> &str {
        &self.base[..HASH_PART_LEN]
    }

    pub fn name(&self) -> &str {
        &self.base[HASH_PART_LEN + 1..]
    }

    /// `<hash>-<name>`.
    pub fn base_name(&self) -> String {
        self.base.to_string()
    }

    /// `<hash>-<name>`, borrowed.
    pub fn as_base_name(&self) -> &str {
        &self.base
    }
}

/// The hash part of a store path on its own: 32 nix32 characters, checked once. Used where a
/// hash part travels without its name (the placeholder a generated tree uses for its own path).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HashPart(String);

impl HashPart {
    /// Check `text` is 32 nix32 characters.
    pub fn parse(text: &str) -> Result<HashPart, StorePathError> {
        if text.len() != HASH_PART_LEN || !text.bytes().all(nix32::is_nix32_char) {
            return Err(StorePathError::BadHashPart(text.to_string()));
        }
        Ok(HashPart(text.to_string()))
    }

    /// The hash part of `path`.
    pub fn of(path: &StorePath) -> HashPart {
        HashPart(path.hash_part().to_string())
    }

    /// All zeros: a hash part no real path has, standing for "no placeholder".
    pub fn zero() -> HashPart {
        HashPart("0".repeat(HASH_PART_LEN))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HashPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A store path together with the store dir it was written with: what manifests serialise,
/// as the absolute path string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AbsStorePath {
    pub store_dir: StoreDir,
    pub path: StorePath,
}

impl AbsStorePath {
    /// Parse any absolute store path; the store dir is everything before the last `/`.
    pub fn parse(text: &str) -> Result<AbsStorePath, StorePathError> {
        let (dir, base) = text
            .rsplit_once('/')
            .ok_or_else(|| StorePathError::BadHashPart(text.to_string()))?;
        let store_dir = StoreDir::new(dir).map_err(|_| StorePathError::NotInStore {
            path: text.to_string(),
            store_dir: dir.to_string(),
        })?;
        Ok(AbsStorePath {
            store_dir,
            path: StorePath::from_base_name(base)?,
        })
    }
}

impl AbsStorePath {
    /// The absolute path as a string, built without the formatting machinery.
    pub fn to_path_string(&self) -> String {
        let (dir, base) = (self.store_dir.as_str(), self.path.as_base_name());
        let mut text = String::with_capacity(dir.len() + 1 + base.len());
        text.push_str(dir);
        text.push('/');
        text.push_str(base);
        text
    }
}

impl fmt::Display for AbsStorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.store_dir, self.path)
    }
}

impl Ord for AbsStorePath {
    /// The order of the absolute path strings, compared byte by byte without building them.
    fn cmp(&self, other: &Self) -> Ordering {
        if self.store_dir == other.store_dir {
            // Hash parts all have the same length, so (hash, name) orders like the strings.
            return self.path.cmp(&other.path);
        }
        fn bytes(p: &AbsStorePath) -> impl Iterator<Item = u8> + '_ {
            p.store_dir
                .as_str()
                .bytes()
                .chain(std::iter::once(b'/'))
                .chain(p.path.hash_part().bytes())
                .chain(std::iter::once(b'-'))
                .chain(p.path.name().bytes())
        }
        bytes(self).cmp(bytes(other))
    }
}

impl PartialOrd for AbsStorePath {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Serialize for AbsStorePath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // One string copied together costs less than formatting in pieces (layer lists write
        // every path of the closure).
        s.serialize_str(&self.to_path_string())
    }
}

thread_local! {
    /// The paths read so far while an [`InternPaths`] guard is alive on this thread.
    static INTERNED: RefCell<Option<InternTable>> = const { RefCell::new(None) };
}

/// Paths by their hash part, kept inline (no copy of the text per path): uniformly
/// distributed, so the cheap hasher of the closure graph's tables does. A path found this way
/// is used only if it spells the same text.
type InternTable = HashMap<[u8; HASH_PART_LEN], AbsStorePath, BuildHasherDefault<HashPartHasher>>;

/// The hash part of an absolute store path's text, if it has one where it should.
pub(crate) fn intern_key(text: &str) -> Option<[u8; HASH_PART_LEN]> {
    let (_, base) = text.rsplit_once('/')?;
    base.as_bytes().get(..HASH_PART_LEN)?.try_into().ok()
}

impl AbsStorePath {
    /// Whether the absolute path's text is `text`, compared without building it.
    pub(crate) fn spells(&self, text: &str) -> bool {
        let (dir, base) = (self.store_dir.as_str(), self.path.as_base_name());
        text.len() == dir.len() + 1 + base.len()
            && text.starts_with(dir)
            && text.as_bytes()[dir.len()] == b'/'
            && text.ends_with(base)
    }
}

/// While alive, deserialising the same path string again on this thread gives a clone of the
/// path read the first time (sharing its string) instead of parsing and allocating it anew: a
/// closure graph names each path once as `path` and then again in every `references` list
/// that holds it. Dropping the guard forgets the paths (nested guards keep the outer one's).
#[derive(Debug)]
pub struct InternPaths {
    outermost: bool,
}

impl InternPaths {
    /// Start interning, with room for `paths` paths before the table grows.
    pub fn start(paths: usize) -> InternPaths {
        let outermost = INTERNED.with_borrow_mut(|interned| {
            let table = || InternTable::with_capacity_and_hasher(paths, Default::default());
            interned.is_none() && interned.replace(table()).is_none()
        });
        InternPaths { outermost }
    }
}

impl Drop for InternPaths {
    fn drop(&mut self) {
        if self.outermost {
            INTERNED.with_borrow_mut(|interned| *interned = None);
        }
    }
}

impl<'de> Deserialize<'de> for AbsStorePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Parse straight from the input's string (no intermediate String): closure graphs
        // hold tens of thousands of these.
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = AbsStorePath;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an absolute store path")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<AbsStorePath, E> {
                INTERNED.with_borrow_mut(|interned| {
                    let parse = |text| AbsStorePath::parse(text).map_err(E::custom);
                    let Some((known, key)) = interned.as_mut().zip(intern_key(text)) else {
                        return parse(text);
                    };
                    match known.get(&key) {
                        Some(path) if path.spells(text) => Ok(path.clone()),
                        // Another path with the same hash part (not in a real store): not
                        // shared.
                        Some(_) => parse(text),
                        None => {
                            let path = parse(text)?;
                            known.insert(key, path.clone());
                            Ok(path)
                        }
                    }
                })
            }
        }
        d.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_byte_table_is_the_name_characters() {
        for byte in 0..=255u8 {
            assert_eq!(
                NAME_BYTES[usize::from(byte)],
                byte.is_ascii() && is_name_char(char::from(byte)),
                "{byte}"
            );
        }
    }

    #[test]
    fn source_path_of_hello() {
        let nar = Hash::parse_typed("sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw")
            .unwrap();
        let dir = StoreDir::default();
        let p = dir
            .make_fixed_output_path("hello.txt", IngestionMethod::Recursive, &nar, [], false)
            .unwrap();
        assert_eq!(
            dir.display(&p),
            "/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt"
        );
    }

    #[test]
    fn hash_parts_are_checked() {
        let path = StorePath::from_base_name("i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt").unwrap();
        let part = HashPart::parse("i9pmrzmpshapij2kin22pff6fc2adavx").unwrap();
        assert_eq!(HashPart::of(&path), part);
        assert_eq!(part.to_string(), path.hash_part());
        // 'e', 'o', 'u' and 't' are not nix32; lengths other than 32 are not hash parts.
        for bad in [
            "e9pmrzmpshapij2kin22pff6fc2adavx",
            "i9pmrzmpshapij2kin22pff6fc2adav",
            "",
        ] {
            assert!(matches!(
                HashPart::parse(bad),
                Err(StorePathError::BadHashPart(_))
            ));
        }
        assert_eq!(HashPart::zero().as_str(), "0".repeat(32));
    }

    #[test]
    fn name_rules() {
        assert!(check_name("a+b=c?d_e.f-g", "x").is_ok());
        assert!(check_name(".dotfile", "x").is_ok());
        assert!(matches!(
            check_name("héllo", "x"),
            Err(StorePathError::IllegalChar { .. })
        ));
        assert!(matches!(
            check_name(&"n".repeat(212), "x"),
            Err(StorePathError::NameTooLong(_))
        ));
        assert!(check_name(&"n".repeat(211), "x").is_ok());
        assert!(matches!(
            check_name("..", "x"),
            Err(StorePathError::DotName(_))
        ));
        assert!(matches!(
            check_name("", "x"),
            Err(StorePathError::EmptyName(_))
        ));
    }

    #[test]
    fn versioned_names() {
        assert!(is_name_with_version("bash-5.2", "bash"));
        assert!(is_name_with_version(
            "openjdk-17-jre-headless-17.0.15",
            "openjdk-17-jre-headless"
        ));
        assert!(is_name_with_version("zlib1g-1_1.2.13.dfsg-1", "zlib1g"));
        assert!(!is_name_with_version("libc6-dev-2.36", "libc6"));
        assert!(!is_name_with_version("bash", "bash"));
        assert!(!is_name_with_version("bash-interactive-5.2", "bash"));
    }

    #[test]
    fn absolute_paths_order_like_their_strings() {
        let texts = [
            "/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt",
            "/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello",
            "/nix/store/09pmrzmpshapij2kin22pff6fc2adavx-zzz",
            "/nix/store2/09pmrzmpshapij2kin22pff6fc2adavx-zzz",
            "/nix/stor/09pmrzmpshapij2kin22pff6fc2adavx-zzz",
            "/gnu/store/09pmrzmpshapij2kin22pff6fc2adavx-a",
        ];
        for a in texts {
            for b in texts {
                let (pa, pb) = (
                    AbsStorePath::parse(a).unwrap(),
                    AbsStorePath::parse(b).unwrap(),
                );
                assert_eq!(pa.cmp(&pb), a.cmp(b), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn interned_paths_are_shared_only_when_they_spell_the_same_text() {
        let hash = "i9pmrzmpshapij2kin22pff6fc2adavx";
        let texts = [
            format!("/nix/store/{hash}-hello"),
            format!("/nix/store/{hash}-hello"),
            // The same hash part under another name or store dir is another path.
            format!("/nix/store/{hash}-hello2"),
            format!("/nix/store/{hash}-hell"),
            format!("/gnu/store/{hash}-hello"),
        ];
        let _interned = InternPaths::start(4);
        let paths: Vec<AbsStorePath> = serde_json::from_value(serde_json::json!(texts)).unwrap();
        for (path, text) in paths.iter().zip(&texts) {
            assert_eq!(&path.to_path_string(), text);
        }
        assert!(Arc::ptr_eq(&paths[0].path.base, &paths[1].path.base));
        // Interned or not, a bad path is refused.
        let bad = serde_json::from_value::<AbsStorePath>(serde_json::json!(format!(
            "/nix/store/{hash}-bad/name"
        )));
        assert!(bad.is_err());
    }

    #[test]
    fn store_dirs_are_canonical() {
        for good in ["/nix/store", "/a", "/gnu/store", "/x/.y/z..", "/a/b c"] {
            assert!(StoreDir::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/",
            "nix/store",
            "/nix/store/",
            "//nix/store",
            "/nix//store",
            "/../../x",
            "/nix/./store",
            "/nix/store/..",
            "/.",
            "/nix/\0",
        ] {
            assert!(
                matches!(StoreDir::new(bad), Err(StorePathError::BadStoreDir(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sub_paths_do_not_climb_out() {
        let dir = StoreDir::default();
        let base = "/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello";
        for good in ["", "/", "/bin/hello", "/bin/", "/share/.hidden/x..y"] {
            let text = format!("{base}{good}");
            let (p, tail) = dir.parse_path_prefix(&text).unwrap();
            assert_eq!((p.name(), tail), ("hello", good));
        }
        for bad in [
            "/..",
            "/../../../usr/bin/id",
            "/bin/../..",
            "/./bin",
            "//bin",
            "/bin//x",
        ] {
            assert!(
                matches!(
                    dir.parse_path_prefix(&format!("{base}{bad}")),
                    Err(StorePathError::NotCanonical(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn parse_paths() {
        let dir = StoreDir::default();
        let p = dir
            .parse_path("/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt")
            .unwrap();
        assert_eq!(p.name(), "hello.txt");
        let (q, rest) = dir
            .parse_path_prefix("/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-jre/bin/java")
            .unwrap();
        assert_eq!((q.name(), rest), ("jre", "/bin/java"));
        assert!(
            dir.parse_path("/gnu/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt")
                .is_err()
        );
        assert!(
            dir.parse_path("/nix/store/e9pmrzmpshapij2kin22pff6fc2adavx-hello.txt")
                .is_err()
        );
        assert!(StoreDir::new("relative").is_err());
        assert!(StoreDir::new("/nix/store/").is_err());
    }
}
