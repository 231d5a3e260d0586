//! Adding to the store: hash (and scan) while copying into a scratch dir, compute the store
//! path, then under the path's lock canonicalise, sync, rename into place and register.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::fsutil::{self, PathLock, Scratch};
use super::{Store, StoreError, db};
use crate::nix::hash::{Hash, HashAlgo, Hasher};
use crate::nix::nar::{self, NarVisitor, Restorer};
use crate::nix::path_info::{NarHash, PathInfo};
use crate::nix::refscan::{HashModulo, RefScanner, Rewriter};
use crate::nix::store_path::{IngestionMethod, StorePath, check_name};

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
        self_hash_part: Option<String>,
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

/// Sends every write to several sinks.
struct Tee<'a> {
    sinks: Vec<&'a mut (dyn Write + Send)>,
}

impl Write for Tee<'_> {
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
        _ => StoreError::Io {
            path: src.to_path_buf(),
            source: e,
        },
    })?;
    check_name(name, name)?;
    let rewrites = matches!(
        method,
        AddMethod::WithReferences {
            self_hash_part: Some(_),
            ..
        }
    );
    let moving = options.move_source && !options.dry_run && !rewrites;
    // A dry run copies nothing, so needs no scratch area (and writes nothing); nor does a move.
    let scratch = if options.dry_run || moving {
        None
    } else {
        Some(store.scratch(false)?)
    };
    if moving {
        store.check_writable()?;
    }
    let copy_to = scratch.as_ref().map(|s| s.path().join("out"));

    let mut nar_hasher = Hasher::new(HashAlgo::Sha256);
    let dir = store.store_dir();
    let info = match method {
        AddMethod::Source | AddMethod::Declared { .. } => {
            let empty = BTreeSet::new();
            let references = match method {
                AddMethod::Declared { references } => references,
                _ => &empty,
            };
            if !options.dry_run {
                for r in references {
                    store.query_valid(r)?;
                }
            }
            let size = dump_copying(
                src,
                &mut [&mut nar_hasher],
                copy_to.as_deref(),
                None,
                options.progress.as_ref(),
            )?;
            let nar_hash = nar_hasher.finish();
            let path = dir.make_fixed_output_path(
                name,
                IngestionMethod::Recursive,
                &nar_hash,
                references,
                false,
            )?;
            let ca = format!("fixed:r:sha256:{}", nar_hash.to_nix32());
            new_info(store, &path, &nar_hash, size, references, Some(ca))
        }
        AddMethod::Fixed { ingestion, algo } => {
            let mut content_hash = Hasher::new(*algo);
            let size;
            match ingestion {
                IngestionMethod::Flat => {
                    if !meta.is_file() {
                        return Err(StoreError::NotAFile(src.to_path_buf()));
                    }
                    let mut flat = Some(Hasher::new(*algo));
                    size = dump_copying(
                        src,
                        &mut [&mut nar_hasher],
                        copy_to.as_deref(),
                        Some(&mut flat),
                        options.progress.as_ref(),
                    )?;
                    content_hash = flat.take().unwrap_or(content_hash);
                }
                IngestionMethod::Recursive => {
                    size = dump_copying(
                        src,
                        &mut [&mut nar_hasher, &mut content_hash],
                        copy_to.as_deref(),
                        None,
                        options.progress.as_ref(),
                    )?;
                }
            }
            let content_hash = content_hash.finish();
            let nar_hash = nar_hasher.finish();
            let path = dir.make_fixed_output_path(name, *ingestion, &content_hash, [], false)?;
            let ca = format!(
                "fixed:{}{}:{}",
                ingestion.prefix(),
                algo,
                content_hash.to_nix32()
            );
            new_info(store, &path, &nar_hash, size, &BTreeSet::new(), Some(ca))
        }
        AddMethod::WithReferences {
            candidates,
            self_hash_part,
        } => {
            let mut scanner = RefScanner::new(candidates.iter().map(StorePath::hash_part));
            let mut modulo = HashModulo::new(self_hash_part.as_deref().unwrap_or(&"0".repeat(32)));
            // With a placeholder, the copy is made in a second pass that rewrites it.
            let first_copy = if self_hash_part.is_some() {
                None
            } else {
                copy_to.as_deref()
            };
            let size = dump_copying(
                src,
                &mut [&mut nar_hasher, &mut scanner, &mut modulo],
                first_copy,
                None,
                options.progress.as_ref(),
            )?;
            let (modulo_hash, self_count) = modulo.finish().map_err(StoreError::io(src))?;
            let found = scanner.into_found();
            let refs: BTreeSet<StorePath> = candidates
                .iter()
                .filter(|c| found.contains(c.hash_part()))
                .cloned()
                .collect();
            // A registered path's closure must be complete: what it refers to must be valid.
            if !options.dry_run {
                for r in &refs {
                    store.query_valid(r)?;
                }
            }
            let has_self = self_hash_part.is_some() && self_count > 0;
            let path = dir.make_fixed_output_path(
                name,
                IngestionMethod::Recursive,
                &modulo_hash,
                &refs,
                has_self,
            )?;
            let mut nar_hash = nar_hasher.finish();
            if let Some(placeholder) = self_hash_part {
                nar_hash = copy_rewriting(src, placeholder, path.hash_part(), copy_to.as_deref())?;
            }
            let mut references: BTreeSet<StorePath> = refs;
            if has_self {
                references.insert(path.clone());
            }
            let ca = format!("fixed:r:sha256:{}", modulo_hash.to_nix32());
            new_info(store, &path, &nar_hash, size, &references, Some(ca))
        }
    };
    match (scratch, copy_to) {
        // The scratch area lives until the copy is installed (or the add fails).
        (Some(scratch), Some(copy)) => install(store, &copy, info, Some(&scratch)),
        _ if moving => install(store, src, info, None),
        _ => Ok(info),
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
    let mut tee = Tee { sinks: all };
    let mut visitor = CopyAndHash {
        restorer: copy_to.map(Restorer::canonical),
        flat: flat
            .as_ref()
            .and_then(|f| f.as_ref().map(|h| Hasher::new(h.algo()))),
    };
    // Walking and reading on this thread; hashing and scanning on a second; writing the copy
    // (when there is one) on a third.
    if visitor.restorer.is_some() {
        crate::pipeline::with_background_lending_sink(&mut tee, |w| {
            crate::pipeline::with_background_visitor(&mut visitor, |v| {
                nar::dump_path_into(src, w, v)
            })
        })
        .map_err(StoreError::io(src))?
        .map_err(StoreError::io(src))??;
    } else {
        crate::pipeline::with_background_lending_sink(&mut tee, |w| {
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
            let mut tee = Tee {
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
    ca: Option<String>,
) -> PathInfo {
    PathInfo {
        ca,
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
    let ca = format!("text:sha256:{}", content_hash.to_nix32());
    let info = new_info(
        store,
        &path,
        &nar_hash,
        nar.len() as u64,
        references,
        Some(ca),
    );
    if options.dry_run {
        return Ok(info);
    }
    let scratch = store.scratch(false)?;
    let copy = scratch.path().join("out");
    fs::write(&copy, contents).map_err(StoreError::io(&copy))?;
    install(store, &copy, info, Some(&scratch))
}
