//! The store on disk: a logical store dir (what paths are called, `/nix/store` by default)
//! and a physical root where their files live (`ROOT/nix/store/…`, like Nix's chroot stores).
//!
//! Layout under the root:
//! - `<store dir>/<hash>-<name>`: the immutable, canonicalised contents;
//! - `nix/var/strata/db/<store dir>/<hash>-<name>.json`: the registration (a path-info object); a path is
//!   valid only when both exist;
//! - `nix/var/strata/locks/<hash>.lock`: per-path locks taken while a path is written;
//! - `nix/var/strata/tmp/`: scratch copies, renamed into place when complete.

mod add;
mod db;
mod fsutil;
mod nixdb;
mod verify;

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

pub use add::{AddMethod, AddOptions};
pub use fsutil::Scratch;
pub use verify::{VerifyProblem, VerifyReport};

use crate::nix::closure::{ClosureError, ClosureGraph};
use crate::nix::nar::NarError;
use crate::nix::path_info::PathInfo;
use crate::nix::store_path::{AbsStorePath, HashPart, StoreDir, StorePath, StorePathError};

/// Environment variable naming the physical root.
pub const ROOT_ENV: &str = "STRATA_STORE_ROOT";
/// Environment variable that, set to anything but `0`, turns on [`StoreConfig::sync_contents`].
pub const FSYNC_ENV: &str = "STRATA_FSYNC";
/// Environment variable naming the logical store dir.
pub const STORE_DIR_ENV: &str = "STRATA_STORE_DIR";

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Nar(#[from] NarError),
    #[error(transparent)]
    Path(#[from] StorePathError),
    #[error(transparent)]
    Closure(#[from] ClosureError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("'{0}' does not exist")]
    Missing(PathBuf),
    #[error("'{0}' is not a regular file (flat hashing takes one file)")]
    NotAFile(PathBuf),
    #[error("registration '{path}' is damaged: {reason}")]
    BadRegistration { path: PathBuf, reason: String },
    #[error("path '{0}' is not valid in this store")]
    NotValid(String),
    #[error("no store root: set --store-root or {ROOT_ENV}, or HOME for the default")]
    NoRoot,
    #[error(
        "path '{path}' is in store dir '{found}', but this store's dir is '{expected}' (--store-dir)"
    )]
    WrongStoreDir {
        path: String,
        found: String,
        expected: String,
    },
    #[error(
        "the store at '{0}' is managed by Nix; strata only reads it (add to another --store-root)"
    )]
    ReadOnly(PathBuf),
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Where a store lives, and how carefully it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub store_dir: StoreDir,
    pub root: PathBuf,
    /// fsync every file of a new path before it is renamed into place, so that even a power
    /// loss cannot leave a valid path with lost contents. Off by default, as in Nix
    /// (`fsync-store-paths`): a process crash, `kill -9` or concurrent writers never need it.
    pub sync_contents: bool,
}

impl StoreConfig {
    /// Flags win over the environment (`STRATA_STORE_ROOT`, `STRATA_STORE_DIR`), which wins
    /// over the defaults (`$XDG_DATA_HOME/strata` or `~/.local/share/strata`, `/nix/store`).
    pub fn from_env_and_flags(
        store_dir: Option<String>,
        root: Option<PathBuf>,
    ) -> Result<StoreConfig, StoreError> {
        let store_dir = match store_dir.or_else(|| non_empty_env(STORE_DIR_ENV)) {
            Some(dir) => StoreDir::new(&dir)?,
            None => StoreDir::default(),
        };
        let root = match root.or_else(|| non_empty_env(ROOT_ENV).map(PathBuf::from)) {
            Some(root) => root,
            None => default_root().ok_or(StoreError::NoRoot)?,
        };
        let root = std::path::absolute(&root).map_err(StoreError::io(&root))?;
        let sync_contents = non_empty_env(FSYNC_ENV).is_some_and(|v| v != "0");
        Ok(StoreConfig {
            store_dir,
            root,
            sync_contents,
        })
    }
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn default_root() -> Option<PathBuf> {
    if let Some(data) = non_empty_env("XDG_DATA_HOME") {
        return Some(PathBuf::from(data).join("strata"));
    }
    non_empty_env("HOME").map(|home| PathBuf::from(home).join(".local/share/strata"))
}

/// A store: reading needs nothing; writing creates the layout on first use. A root that
/// holds Nix's own database (a store Nix manages, such as `/`) is read through that database
/// and never written.
#[derive(Debug)]
pub struct Store {
    config: StoreConfig,
    nix_db: Option<nixdb::NixDb>,
}

impl Store {
    pub fn open(config: StoreConfig) -> Result<Store, StoreError> {
        let nix_db = nixdb::NixDb::open(&config.root)?;
        Ok(Store { config, nix_db })
    }

    /// Whether Nix manages this store (then strata reads it and refuses to write).
    pub fn is_nix_managed(&self) -> bool {
        self.nix_db.is_some()
    }

    pub(crate) fn check_writable(&self) -> Result<(), StoreError> {
        if self.is_nix_managed() {
            return Err(StoreError::ReadOnly(self.config.root.clone()));
        }
        Ok(())
    }

    pub fn store_dir(&self) -> &StoreDir {
        &self.config.store_dir
    }

    pub fn root(&self) -> &Path {
        &self.config.root
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Where the store dir's files physically are.
    pub fn physical_store_dir(&self) -> PathBuf {
        self.config
            .root
            .join(self.config.store_dir.as_str().trim_start_matches('/'))
    }

    /// Physical location of a store path's files.
    pub fn physical_path(&self, path: &StorePath) -> PathBuf {
        self.physical_store_dir().join(path.base_name())
    }

    fn state_dir(&self) -> PathBuf {
        self.config.root.join("nix/var/strata")
    }

    /// Registrations, one directory per logical store dir (`db/nix/store/`).
    fn db_dir(&self) -> PathBuf {
        self.state_dir()
            .join("db")
            .join(self.config.store_dir.as_str().trim_start_matches('/'))
    }

    /// The absolute (logical) form of a store path in this store.
    pub fn abs(&self, path: &StorePath) -> AbsStorePath {
        AbsStorePath {
            store_dir: self.config.store_dir.clone(),
            path: path.clone(),
        }
    }

    /// Check that an absolute store path belongs to this store's dir.
    pub fn check_abs<'a>(&self, path: &'a AbsStorePath) -> Result<&'a StorePath, StoreError> {
        if path.store_dir != self.config.store_dir {
            return Err(StoreError::WrongStoreDir {
                path: path.to_string(),
                found: path.store_dir.to_string(),
                expected: self.config.store_dir.to_string(),
            });
        }
        Ok(&path.path)
    }

    /// Parse a path given by a user: an absolute store path, possibly with a trailing
    /// component (`/nix/store/…-jre/bin/java` names `…-jre`).
    pub fn parse_user_path(&self, text: &str) -> Result<StorePath, StoreError> {
        let (path, _) = self.config.store_dir.parse_path_prefix(text)?;
        Ok(path)
    }

    /// A private scratch directory for work that ends in an add (generated trees, unpacked
    /// packages): inside the root, where one abandoned by a killed process is reclaimed by the
    /// next add. With `dry_run`, a fresh directory in the system's temp dir instead, so nothing
    /// is written under the root.
    pub fn scratch(&self, dry_run: bool) -> Result<Scratch, StoreError> {
        if dry_run {
            return Scratch::private();
        }
        self.check_writable()?;
        Scratch::new(&self.tmp_dir())
    }

    fn tmp_dir(&self) -> PathBuf {
        self.state_dir().join("tmp")
    }

    fn locks_dir(&self) -> PathBuf {
        self.state_dir().join("locks")
    }

    /// The registration of a path, if it is valid.
    pub fn query(&self, path: &StorePath) -> Result<Option<PathInfo>, StoreError> {
        let Some(info) = db::read(&self.db_dir(), path)? else {
            return match &self.nix_db {
                Some(nix) => nix.query(&self.config.store_dir, path),
                None => Ok(None),
            };
        };
        if std::fs::symlink_metadata(self.physical_path(path)).is_err() {
            return Ok(None);
        }
        if info.path.path != *path || info.path.store_dir != self.config.store_dir {
            return Err(StoreError::BadRegistration {
                path: db::registration_path(&self.db_dir(), path),
                reason: format!("it describes '{}'", info.path),
            });
        }
        Ok(Some(info))
    }

    /// Like [`Store::query`], but a path that is not valid is an error.
    pub fn query_valid(&self, path: &StorePath) -> Result<PathInfo, StoreError> {
        self.query(path)?
            .ok_or_else(|| StoreError::NotValid(self.store_dir().display(path)))
    }

    /// Every valid path, sorted.
    pub fn list(&self) -> Result<Vec<StorePath>, StoreError> {
        let mut out = BTreeSet::new();
        for path in db::list(&self.db_dir())? {
            if self.query(&path)?.is_some() {
                out.insert(path);
            }
        }
        if let Some(nix) = &self.nix_db {
            out.extend(nix.list(&self.config.store_dir)?);
        }
        Ok(out.into_iter().collect())
    }

    /// The closure of `roots` as a graph of registered path infos.
    pub fn closure(&self, roots: &BTreeSet<StorePath>) -> Result<ClosureGraph, StoreError> {
        let graph = ClosureGraph::closure_of(roots.iter().map(|p| self.abs(p)), |p| {
            let path = self.check_abs(p)?;
            self.query(path)
        })??;
        Ok(graph)
    }

    /// Add a file system object; see [`AddMethod`] for the kinds of path it can make.
    pub fn add(
        &self,
        src: &Path,
        name: &str,
        method: &AddMethod,
        options: &AddOptions,
    ) -> Result<PathInfo, StoreError> {
        add::add_path(self, src, name, method, options)
    }

    /// Add a `builtins.toFile`-style text file with explicit references.
    pub fn add_text(
        &self,
        name: &str,
        contents: &[u8],
        references: &BTreeSet<StorePath>,
        options: &AddOptions,
    ) -> Result<PathInfo, StoreError> {
        add::add_text(self, name, contents, references, options)
    }

    /// Add a tree generated in a scratch directory as a content-addressed path whose
    /// references are found by scanning for `candidates`. `self_hash_part`, if given, is the
    /// placeholder hash part the files use to mention their own path; it is replaced by the
    /// real one (Nix's hash modulo, as for floating content-addressed outputs). With
    /// `dry_run`, the path info is computed and nothing is written.
    pub fn add_generated(
        &self,
        src: &Path,
        name: &str,
        candidates: &BTreeSet<AbsStorePath>,
        self_hash_part: Option<&HashPart>,
        dry_run: bool,
    ) -> Result<PathInfo, StoreError> {
        let candidates = candidates
            .iter()
            .map(|c| self.check_abs(c).cloned())
            .collect::<Result<BTreeSet<StorePath>, _>>()?;
        let method = AddMethod::WithReferences {
            candidates,
            self_hash_part: self_hash_part.cloned(),
        };
        let options = AddOptions {
            dry_run,
            ..AddOptions::default()
        };
        self.add(src, name, &method, &options)
    }

    /// Re-hash every registered path and report what does not match, and what interrupted
    /// adds left behind; with `repair`, reclaim the latter.
    pub fn verify(&self, repair: bool) -> Result<VerifyReport, StoreError> {
        if repair {
            self.check_writable()?;
        }
        verify::verify(self, repair)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store(tag: &str) -> (Store, PathBuf) {
        let dir = std::env::temp_dir().join(format!("strata-store-{tag}-{}", std::process::id()));
        let _ = fsutil::remove_tree(&dir);
        let config = StoreConfig {
            sync_contents: true,
            store_dir: StoreDir::default(),
            root: dir.join("root"),
        };
        std::fs::create_dir_all(&dir).unwrap();
        (Store::open(config).unwrap(), dir)
    }

    #[test]
    fn contents_without_registration_are_replaced() {
        let (store, dir) = temp_store("stale");
        let src = dir.join("f");
        std::fs::write(&src, b"data\n").unwrap();
        let info = store
            .add(&src, "f", &AddMethod::Source, &AddOptions::default())
            .unwrap();
        // A crash between the rename and the registration leaves contents but no registration.
        db::remove(&store.db_dir(), &info.path.path).unwrap();
        assert_eq!(store.query(&info.path.path).unwrap(), None);
        assert!(store.list().unwrap().is_empty());
        let again = store
            .add(&src, "f", &AddMethod::Source, &AddOptions::default())
            .unwrap();
        assert_eq!(again, info);
        assert!(store.verify(false).unwrap().problems.is_empty());
        fsutil::remove_tree(&dir).unwrap();
    }

    #[test]
    fn a_scratch_tree_is_moved_not_copied() {
        let (store, dir) = temp_store("move");
        let moved = |contents: &str| {
            let scratch = store.scratch(false).unwrap();
            let tree = scratch.path().join("t");
            std::fs::create_dir(&tree).unwrap();
            std::fs::write(tree.join("f"), contents).unwrap();
            let options = AddOptions {
                move_source: true,
                ..AddOptions::default()
            };
            let info = store.add(&tree, "t", &AddMethod::Source, &options).unwrap();
            (info, tree.exists())
        };
        let (first, left) = moved("x");
        assert!(!left, "the tree was moved into the store");
        // Already valid: the scratch tree stays where it was (and goes with its scratch area).
        let (second, left) = moved("x");
        assert!(left);
        assert_eq!(first, second);
        assert!(store.verify(false).unwrap().problems.is_empty());
        fsutil::remove_tree(&dir).unwrap();
    }

    #[test]
    fn references_must_be_valid() {
        let (store, dir) = temp_store("refs");
        let dep = StorePath::from_base_name("6nqvynq6mpq1s0g0prmzq6dwkpldp8cg-dep").unwrap();
        let src = dir.join("uses");
        std::fs::write(&src, format!("exec /nix/store/{dep}\n")).unwrap();
        let method = AddMethod::WithReferences {
            candidates: [dep].into_iter().collect(),
            self_hash_part: None,
        };
        let err = store
            .add(&src, "uses", &method, &AddOptions::default())
            .unwrap_err();
        assert!(matches!(err, StoreError::NotValid(_)), "{err}");
        let dry = store
            .add(
                &src,
                "uses",
                &method,
                &AddOptions {
                    dry_run: true,
                    ..AddOptions::default()
                },
            )
            .unwrap();
        assert_eq!(dry.references.len(), 1);
        assert!(store.list().unwrap().is_empty());
        fsutil::remove_tree(&dir).unwrap();
    }
}
