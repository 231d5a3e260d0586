//! Adding to the store: hash (and scan) while copying into a scratch dir, compute the store
//! path, then under the path's lock canonicalise, sync, rename into place and register.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::fsutil::{self, PathLock, Scratch};
use super::{Store, StoreError, db};
use crate::hashing::FanOut;
use crate::nix::content_address::ContentAddress;
use crate::nix::hash::{Hash, HashAlgo, Hasher};
use crate::nix::nar::{self, NarVisitor, Restorer};
use crate::nix::path_info::{NarHash, PathInfo};
use crate::nix::refscan::{HashModulo, RefScanner, Rewriter};
use crate::nix::store_path::{HashPart, IngestionMethod, StorePath, check_name};

/// What kind of content-addressed path to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddMethod {
    /// `nix-store --add`: the NAR's SHA-256, no references (a `source` path).
    Source,
    /// A `source` path with references the caller declares rather than scans for (a Debian
    /// package's `Depends`). They must be valid.
    Declared { references: BTreeSet<StorePath> },
    /// `nix-store --add-fixed ALGO [--recursive]`: the file's (flat) or NAR's (recursive) hash.
    Fixed {
        ingestion: IngestionMethod,
        algo: HashAlgo,
    },
    /// A `source` path whose references are the `candidates` its NAR mentions, plus itself if
    /// it mentions `self_hash_part` (replaced by its real hash part), as Nix makes floating
    /// content-addressed outputs.
    WithReferences {
        candidates: BTreeSet<StorePath>,
        self_hash_part: Option<HashPart>,
    },
}

/// How to add.
#[derive(Debug, Clone, Default)]
pub struct AddOptions {
    /// Compute and return the path info, write nothing.
    pub dry_run: bool,
    /// Counts the NAR bytes read so far, for a caller that shows progress.
    pub progress: Option<Arc<AtomicU64>>,
    /// The source is a tree the caller made in this store's scratch area
    /// ([`Store::scratch`]) and will not touch again: hash it, then move it into place
    /// instead of copying it. (Ignored for a dry run, and where a self-reference must be
    /// rewritten, which needs a copy.)
    pub move_source: bool,
}

/// Copies entries (when given a restorer) and hashes file contents for flat hashing.
struct CopyAndHash {
    restorer: Option<Restorer>,
    flat: Option<Hasher>,
}

impl NarVisitor for CopyAndHash {
    fn directory(&mut self, rel: &Path) -> io::Result<()> {
        self.restorer.as_mut().map_or(Ok(()), |r| r.directory(rel))
    }
    fn file_start(&mut self, rel: &Path, executable: bool, size: u64) -> io::Result<()> {
        self.restorer
            .as_mut()
            .map_or(Ok(()), |r| r.file_start(rel, executable, size))
    }
    fn file_data(&mut self, data: &[u8]) -> io::Result<()> {
        if let Some(h) = &mut self.flat {
            h.update(data);
        }
        self.restorer.as_mut().map_or(Ok(()), |r| r.file_data(data))
    }
    fn file_end(&mut self) -> io::Result<()> {
        self.restorer.as_mut().map_or(Ok(()), |r| r.file_end())
    }
    fn symlink(&mut self, rel: &Path, target: &OsStr) -> io::Result<()> {
        self.restorer
            .as_mut()
            .map_or(Ok(()), |r| r.symlink(rel, target))
    }
}

pub(super) fn add_path(
    store: &Store,
    src: &Path,
    name: &str,
    method: &AddMethod,
    options: &AddOptions,
) -> Result<PathInfo, StoreError> {
    let meta = fs::symlink_metadata(src).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => StoreError::Missing(src.to_path_buf()),
        _ => StoreError::io(src)(e),
    })?;
    check_name(name, name)?;
    let target = Target::prepare(store, method, options)?;
    let ingest = Ingest {
        store,
        src,
        name,
        copy_to: target.copy.as_deref(),
        options,
    };
    let info = match method {
        AddMethod::Source => ingest.source(&BTreeSet::new())?,
        AddMethod::Declared { references } => ingest.source(references)?,
        AddMethod::Fixed { ingestion, algo } => ingest.fixed(&meta, *ingestion, *algo)?,
        AddMethod::WithReferences {
            candidates,
            self_hash_part,
        } => ingest.scanned(candidates, self_hash_part.as_ref())?,
    };
    target.install(store, src, info)
}

/// Where an add's copy goes: a fresh scratch area, the source itself (moved), or nowhere (a
/// dry run).
struct Target {
    /// Lives until the copy is installed (or the add fails).
    scratch: Option<Scratch>,
    copy: Option<PathBuf>,
    moving: bool,
}

impl Target {
    fn prepare(
        store: &Store,
        method: &AddMethod,
        options: &AddOptions,
    ) -> Result<Target, StoreError> {
        let rewrites = matches!(
            method,
            AddMethod::WithReferences {
                self_hash_part: Some(_),
                ..
            }
        );
        let moving = options.move_source && !options.dry_run && !rewrites;
        // A dry run copies nothing, so needs no scratch area (and writes nothing); nor does a
        // move.
        let scratch = if options.dry_run || moving {
            None
        } else {
            Some(store.scratch(false)?)
        };
        if moving {
            store.check_writable()?;
        }
        let copy = scratch.as_ref().map(|s| s.path().join("out"));
        Ok(Target {
            scratch,
            copy,
            moving,
        })
    }

    /// Install the copy (or the moved source) under the path's lock, or just return the info
    /// of a dry run.
    fn install(self, store: &Store, src: &Path, info: PathInfo) -> Result<PathInfo, StoreError> {
        match (&self.scratch, &self.copy) {
            (Some(scratch), Some(copy)) => install(store, copy, info, Some(scratch)),
            _ if self.moving => install(store, src, info, None),
            _ => Ok(info),
        }
    }
}

/// One source being read: walked, hashed, scanned and (unless a dry run) copied.
struct Ingest<'a> {
    store: &'a Store,
    src: &'a Path,
    name: &'a str,
    copy_to: Option<&'a Path>,
    options: &'a AddOptions,
}

impl Ingest<'_> {
    fn dump(
        &self,
        sinks: &mut [&mut (dyn Write + Send)],
        copy_to: Option<&Path>,
        flat: Option<&mut Option<Hasher>>,
    ) -> Result<u64, StoreError> {
        dump_copying(
            self.src,
            sinks,
            copy_to,
            flat,
            self.options.progress.as_ref(),
        )
    }

    /// A registered path's closure must be complete: what it refers to must be valid.
    fn check_valid(&self, references: &BTreeSet<StorePath>) -> Result<(), StoreError> {
        if !self.options.dry_run {
            for r in references {
                self.store.query_valid(r)?;
            }
        }
        Ok(())
    }

    /// A `source` path: its NAR's SHA-256, with the references the caller declared.
    fn source(&self, references: &BTreeSet<StorePath>) -> Result<PathInfo, StoreError> {
        self.check_valid(references)?;
        let mut nar_hasher = Hasher::new(HashAlgo::Sha256);
        let size = self.dump(&mut [&mut nar_hasher], self.copy_to, None)?;
        let nar_hash = nar_hasher.finish();
        let path = self.store.store_dir().make_fixed_output_path(
            self.name,
            IngestionMethod::Recursive,
            &nar_hash,
            references,
            false,
        )?;
        let ca = ContentAddress::source(nar_hash.clone());
        Ok(new_info(self.store, &path, &nar_hash, size, references, ca))
    }

    /// A fixed-output path: the file's (flat) or NAR's (recursive) hash with `algo`.
    fn fixed(
        &self,
        meta: &fs::Metadata,
        ingestion: IngestionMethod,
        algo: HashAlgo,
    ) -> Result<PathInfo, StoreError> {
        let mut nar_hasher = Hasher::new(HashAlgo::Sha256);
        let (size, content_hash) = match ingestion {
            IngestionMethod::Flat => {
                if !meta.is_file() {
                    return Err(StoreError::NotAFile(self.src.to_path_buf()));
                }
                let mut flat = Some(Hasher::new(algo));
                let size = self.dump(&mut [&mut nar_hasher], self.copy_to, Some(&mut flat))?;
                (size, flat.take().unwrap_or_else(|| Hasher::new(algo)))
            }
            IngestionMethod::Recursive => {
                let mut content_hash = Hasher::new(algo);
                let size = self.dump(
                    &mut [&mut nar_hasher, &mut content_hash],
                    self.copy_to,
                    None,
                )?;
                (size, content_hash)
            }
        };
        let hash = content_hash.finish();
        let nar_hash = nar_hasher.finish();
        let path = self.store.store_dir().make_fixed_output_path(
            self.name,
            ingestion,
            &hash,
            [],
            false,
        )?;
        let ca = ContentAddress::Fixed { ingestion, hash };
        Ok(new_info(
            self.store,
            &path,
            &nar_hash,
            size,
            &BTreeSet::new(),
            ca,
        ))
    }

    /// A `source` path whose references are the `candidates` its NAR mentions, plus itself if
    /// it mentions `self_hash_part` (which the copy gets rewritten to its real hash part).
    fn scanned(
        &self,
        candidates: &BTreeSet<StorePath>,
        self_hash_part: Option<&HashPart>,
    ) -> Result<PathInfo, StoreError> {
        let mut nar_hasher = Hasher::new(HashAlgo::Sha256);
        let mut scanner = RefScanner::new(candidates.iter().map(StorePath::hash_part));
        let zero = HashPart::zero();
        let mut modulo = HashModulo::new(self_hash_part.unwrap_or(&zero).as_str());
        // With a placeholder, the copy is made in a second pass that rewrites it.
        let first_copy = self.copy_to.filter(|_| self_hash_part.is_none());
        let sinks: &mut [&mut (dyn Write + Send)] =
            &mut [&mut nar_hasher, &mut scanner, &mut modulo];
        let size = self.dump(sinks, first_copy, None)?;
        let (modulo_hash, self_count) = modulo.finish().map_err(StoreError::io(self.src))?;
        let found = scanner.into_found();
        let mut references: BTreeSet<StorePath> = candidates
            .iter()
            .filter(|c| found.contains(c.hash_part()))
            .cloned()
            .collect();
        self.check_valid(&references)?;
        let has_self = self_hash_part.is_some() && self_count > 0;
        let path = self.store.store_dir().make_fixed_output_path(
            self.name,
            IngestionMethod::Recursive,
            &modulo_hash,
            &references,
            has_self,
        )?;
        let mut nar_hash = nar_hasher.finish();
        if let Some(placeholder) = self_hash_part {
            nar_hash = copy_rewriting(
                self.src,
                placeholder.as_str(),
                path.hash_part(),
                self.copy_to,
            )?;
        }
        if has_self {
            references.insert(path.clone());
        }
        let ca = ContentAddress::source(modulo_hash);
        Ok(new_info(
            self.store,
            &path,
            &nar_hash,
            size,
            &references,
            ca,
        ))
    }
}

/// Dump `src` as a NAR into `sinks`, copying it to `copy_to` if given and hashing file
/// contents into `flat` if given. Returns the NAR size.
fn dump_copying(
    src: &Path,
    sinks: &mut [&mut (dyn Write + Send)],
    copy_to: Option<&Path>,
    flat: Option<&mut Option<Hasher>>,
    progress: Option<&Arc<AtomicU64>>,
) -> Result<u64, StoreError> {
    let mut counter = Counter(0, progress.cloned());
    let mut all: Vec<&mut (dyn Write + Send)> = sinks
        .iter_mut()
        .map(|s| &mut **s as &mut (dyn Write + Send))
        .collect();
    all.push(&mut counter);
    let mut tee = FanOut { sinks: all };
    let mut visitor = CopyAndHash {
        restorer: copy_to.map(Restorer::canonical),
        flat: flat
            .as_ref()
            .and_then(|f| f.as_ref().map(|h| Hasher::new(h.algo()))),
    };
    // Walking and reading on this thread; hashing and scanning on a second; writing the copy
    // (when there is one) on a third.
    if visitor.restorer.is_some() {
        crate::threaded_io::with_background_lending_sink(&mut tee, |w| {
            crate::threaded_io::with_background_visitor(&mut visitor, |v| {
                nar::dump_path_into(src, w, v)
            })
        })
        .map_err(StoreError::io(src))?
        .map_err(StoreError::io(src))??;
    } else {
        crate::threaded_io::with_background_lending_sink(&mut tee, |w| {
            nar::dump_path_into(src, w, &mut visitor)
        })
        .map_err(StoreError::io(src))??;
    }
    drop(tee);
    if let (Some(slot), Some(h)) = (flat, visitor.flat.take()) {
        *slot = Some(h);
    }
    Ok(counter.0)
}

/// Counts the NAR's bytes, and reports them to a progress counter if there is one.
struct Counter(u64, Option<Arc<AtomicU64>>);
impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        if let Some(p) = &self.1 {
            p.fetch_add(buf.len() as u64, Ordering::Relaxed);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Dump `src` with `from` rewritten to `to`, hashing the result and (if `copy_to`) restoring
/// it there. Returns the rewritten NAR's SHA-256.
fn copy_rewriting(
    src: &Path,
    from: &str,
    to: &str,
    copy_to: Option<&Path>,
) -> Result<Hash, StoreError> {
    let (reader, writer) = io::pipe().map_err(StoreError::io(src))?;
    let src_owned = src.to_path_buf();
    let (from, to) = (from.to_string(), to.to_string());
    let producer = std::thread::spawn(move || -> Result<Hash, StoreError> {
        let mut hasher = Hasher::new(HashAlgo::Sha256);
        let mut writer = writer;
        {
            let mut tee = FanOut {
                sinks: vec![&mut hasher, &mut writer],
            };
            let mut rewriter = Rewriter::new(from.as_bytes(), to.as_bytes(), &mut tee);
            nar::dump_path(&src_owned, &mut rewriter, &mut nar::NoVisitor)?;
            rewriter.finish().map_err(StoreError::io(&src_owned))?;
        }
        Ok(hasher.finish())
    });
    let consumed = match copy_to {
        Some(dest) => nar::restore(reader, dest).map_err(StoreError::from),
        None => io::copy(&mut { reader }, &mut io::sink())
            .map(|_| ())
            .map_err(StoreError::io(src)),
    };
    let produced = producer
        .join()
        .map_err(|_| StoreError::Invalid("rewriting thread panicked".into()))?;
    let hash = produced?;
    consumed?;
    Ok(hash)
}

fn new_info(
    store: &Store,
    path: &StorePath,
    nar_hash: &Hash,
    nar_size: u64,
    references: &BTreeSet<StorePath>,
    ca: ContentAddress,
) -> PathInfo {
    PathInfo {
        ca: Some(ca),
        closure_size: None,
        nar_hash: NarHash(nar_hash.clone()),
        nar_size,
        references: references.iter().map(|r| store.abs(r)).collect(),
        path: store.abs(path),
    }
}

/// Move a finished copy into place and register it, unless the path is already valid.
/// `scratch`, if given, is the live scratch area the copy was made in: the registration is
/// written there too, rather than in a second one.
fn install(
    store: &Store,
    copy: &Path,
    info: PathInfo,
    scratch: Option<&Scratch>,
) -> Result<PathInfo, StoreError> {
    let path = info.path.path.clone();
    let _lock = PathLock::acquire(&store.locks_dir(), path.hash_part())?;
    if let Some(existing) = store.query(&path)? {
        return Ok(existing);
    }
    let target = store.physical_path(&path);
    // Left over from a crash between the rename and the registration: not valid, replace it.
    db::remove(&store.db_dir(), &path)?;
    fsutil::remove_tree(&target)?;
    fsutil::canonicalise(copy)?;
    if store.config().sync_contents {
        fsutil::sync_tree(copy)?;
    }
    let store_dir = store.physical_store_dir();
    fs::create_dir_all(&store_dir).map_err(StoreError::io(&store_dir))?;
    // Made before the rename, so a registration that cannot even start leaves nothing behind.
    let own_scratch;
    let registration_scratch = match scratch {
        Some(scratch) => scratch,
        None => {
            own_scratch = store.scratch(false)?;
            &own_scratch
        }
    };
    fs::rename(copy, &target).map_err(StoreError::io(&target))?;
    let registered = fsutil::sync_dir(&store_dir)
        .and_then(|()| db::write(&store.db_dir(), registration_scratch, &info));
    if let Err(e) = registered {
        // A full disk or an I/O error: contents without a registration are not valid, and
        // would only take space. (If this removal fails too, the next add of the path or
        // `store-query verify --repair` reclaims them, under the same lock.)
        let _ = fsutil::remove_tree(&target);
        return Err(e);
    }
    Ok(info)
}

pub(super) fn add_text(
    store: &Store,
    name: &str,
    contents: &[u8],
    references: &BTreeSet<StorePath>,
    options: &AddOptions,
) -> Result<PathInfo, StoreError> {
    check_name(name, name)?;
    let content_hash = Hash::of(HashAlgo::Sha256, contents);
    let path = store
        .store_dir()
        .make_text_path(name, &content_hash, references)?;
    let nar = nar::text_nar(contents);
    let nar_hash = Hash::of(HashAlgo::Sha256, &nar);
    let ca = ContentAddress::Text(content_hash);
    let info = new_info(store, &path, &nar_hash, nar.len() as u64, references, ca);
    if options.dry_run {
        return Ok(info);
    }
    let scratch = store.scratch(false)?;
    let copy = scratch.path().join("out");
    fs::write(&copy, contents).map_err(StoreError::io(&copy))?;
    install(store, &copy, info, Some(&scratch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::store_path::StoreDir;
    use crate::store::StoreConfig;

    fn store_in(dir: &Path, store_dir: &str) -> Store {
        Store::open(StoreConfig {
            sync_contents: false,
            store_dir: StoreDir::new(store_dir).unwrap(),
            root: dir.join("root"),
        })
        .unwrap()
    }

    /// The vectors Nix made, of the kinds `add_path` and `add_text` make.
    fn vectors(kinds: &[&str]) -> Vec<serde_json::Value> {
        let doc = crate::testing::shared_json("vectors/vectors.json");
        let all = doc["vectors"].as_array().unwrap().clone();
        let picked: Vec<_> = all
            .into_iter()
            .filter(|v| kinds.contains(&v["kind"].as_str().unwrap()))
            .collect();
        assert!(!picked.is_empty(), "no vectors of kinds {kinds:?}");
        picked
    }

    /// Run a vector's recipe in a fresh directory, as the vectors were made.
    fn make_input(vector: &serde_json::Value, dir: &Path) -> PathBuf {
        let recipe = vector["recipe"].as_str().unwrap();
        let status = std::process::Command::new("bash")
            .arg("-ec")
            .arg(format!("umask 022\n{recipe}"))
            .current_dir(dir)
            .status()
            .unwrap();
        assert!(status.success(), "recipe of {}", vector["name"]);
        dir.join(vector["input"].as_str().unwrap())
    }

    fn method_of(kind: &str) -> AddMethod {
        match kind {
            "source" => AddMethod::Source,
            "fixed-flat-sha256" => AddMethod::Fixed {
                ingestion: IngestionMethod::Flat,
                algo: HashAlgo::Sha256,
            },
            "fixed-recursive-sha1" => AddMethod::Fixed {
                ingestion: IngestionMethod::Recursive,
                algo: HashAlgo::Sha1,
            },
            other => panic!("no add method for {other}"),
        }
    }

    fn assert_matches_vector(info: &PathInfo, vector: &serde_json::Value) {
        let name = &vector["name"];
        assert_eq!(
            info.path.to_string(),
            vector["expected_store_path"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            info.nar_hash.0.to_nix32(),
            vector["expected_nar_sha256_base32"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            info.nar_size,
            vector["expected_nar_size"].as_u64().unwrap(),
            "{name}"
        );
        let ca = info.ca.as_ref().map(ToString::to_string);
        assert_eq!(ca.as_deref(), vector["expected_ca"].as_str(), "{name}");
    }

    #[test]
    fn paths_hashes_and_content_addresses_match_nix() {
        for vector in vectors(&["source", "fixed-flat-sha256", "fixed-recursive-sha1"]) {
            let t = tempfile::tempdir().unwrap();
            let src = make_input(&vector, t.path());
            let expected = vector["expected_store_path"].as_str().unwrap();
            let store_dir = &expected[..expected.rfind('/').unwrap()];
            let store = store_in(t.path(), store_dir);
            let method = method_of(vector["kind"].as_str().unwrap());
            let name = src.file_name().unwrap().to_str().unwrap().to_string();
            let info = store
                .add(&src, &name, &method, &AddOptions::default())
                .unwrap_or_else(|e| panic!("{}: {e}", vector["name"]));
            assert_matches_vector(&info, &vector);
            // Installed and registered: the store answers for it, and its files are there.
            assert_eq!(store.query(&info.path.path).unwrap(), Some(info.clone()));
            assert!(
                fs::symlink_metadata(store.physical_path(&info.path.path)).is_ok(),
                "{}",
                vector["name"]
            );
        }
    }

    #[test]
    fn text_paths_match_nix() {
        for vector in vectors(&["text"]) {
            if !vector["expected_references"].as_array().unwrap().is_empty() {
                continue;
            }
            let t = tempfile::tempdir().unwrap();
            let store = store_in(t.path(), "/nix/store");
            let expected = vector["expected_store_path"].as_str().unwrap();
            let name = &expected[expected.find('-').unwrap() + 1..];
            let contents = vector["contents"].as_str().unwrap().as_bytes();
            let info = store
                .add_text(name, contents, &BTreeSet::new(), &AddOptions::default())
                .unwrap();
            assert_matches_vector(&info, &vector);
            let physical = store.physical_path(&info.path.path);
            assert_eq!(fs::read(physical).unwrap(), contents);
        }
    }

    #[test]
    fn a_dry_run_computes_the_same_info_and_writes_nothing() {
        let t = tempfile::tempdir().unwrap();
        let store = store_in(t.path(), "/nix/store");
        let src = t.path().join("hello.txt");
        fs::write(&src, "hello\n").unwrap();
        let dry = AddOptions {
            dry_run: true,
            ..AddOptions::default()
        };
        let planned = store
            .add(&src, "hello.txt", &AddMethod::Source, &dry)
            .unwrap();
        assert!(store.list().unwrap().is_empty());
        assert!(!store.physical_path(&planned.path.path).exists());
        let added = store
            .add(
                &src,
                "hello.txt",
                &AddMethod::Source,
                &AddOptions::default(),
            )
            .unwrap();
        assert_eq!(planned, added);
        // Adding it again finds the valid path and changes nothing.
        let again = store
            .add(
                &src,
                "hello.txt",
                &AddMethod::Source,
                &AddOptions::default(),
            )
            .unwrap();
        assert_eq!(again, added);
        assert_eq!(store.list().unwrap(), vec![added.path.path]);
    }

    #[test]
    fn progress_counts_every_nar_byte() {
        let t = tempfile::tempdir().unwrap();
        let store = store_in(t.path(), "/nix/store");
        let src = t.path().join("data");
        fs::write(&src, vec![7u8; 100_000]).unwrap();
        let counter = Arc::new(AtomicU64::new(0));
        let options = AddOptions {
            progress: Some(counter.clone()),
            ..AddOptions::default()
        };
        let info = store
            .add(&src, "data", &AddMethod::Source, &options)
            .unwrap();
        assert_eq!(counter.load(Ordering::Relaxed), info.nar_size);
    }

    #[test]
    fn bad_sources_and_names_are_refused_before_anything_is_written() {
        let t = tempfile::tempdir().unwrap();
        let store = store_in(t.path(), "/nix/store");
        let missing = t.path().join("missing");
        let err = store
            .add(&missing, "x", &AddMethod::Source, &AddOptions::default())
            .unwrap_err();
        assert!(matches!(err, StoreError::Missing(_)), "{err}");
        let dir = t.path().join("tree");
        fs::create_dir(&dir).unwrap();
        let flat = AddMethod::Fixed {
            ingestion: IngestionMethod::Flat,
            algo: HashAlgo::Sha256,
        };
        let err = store
            .add(&dir, "tree", &flat, &AddOptions::default())
            .unwrap_err();
        assert!(matches!(err, StoreError::NotAFile(_)), "{err}");
        for bad in ["", "..", "a/b", "héllo"] {
            assert!(
                store
                    .add(&dir, bad, &AddMethod::Source, &AddOptions::default())
                    .is_err(),
                "{bad:?}"
            );
        }
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn a_placeholder_for_the_own_path_is_rewritten_and_makes_a_self_reference() {
        let t = tempfile::tempdir().unwrap();
        let store = store_in(t.path(), "/nix/store");
        let placeholder = HashPart::parse(&"1".repeat(32)).unwrap();
        let src = t.path().join("out");
        fs::create_dir(&src).unwrap();
        fs::write(
            src.join("self"),
            format!("/nix/store/{placeholder}-gen/self\n"),
        )
        .unwrap();
        let method = AddMethod::WithReferences {
            candidates: BTreeSet::new(),
            self_hash_part: Some(placeholder),
        };
        let info = store
            .add(&src, "gen", &method, &AddOptions::default())
            .unwrap();
        assert!(info.has_self_reference());
        let written =
            fs::read_to_string(store.physical_path(&info.path.path).join("self")).unwrap();
        assert_eq!(written, format!("{}/self\n", info.path));
        // Without a mention, the same placeholder makes no self-reference.
        let plain = t.path().join("plain");
        fs::create_dir(&plain).unwrap();
        fs::write(plain.join("f"), "nothing\n").unwrap();
        let info = store
            .add(&plain, "gen", &method, &AddOptions::default())
            .unwrap();
        assert!(!info.has_self_reference());
    }
}
