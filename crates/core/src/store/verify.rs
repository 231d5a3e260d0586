//! Verifying the store: re-hash every registered path and compare with its registration, and
//! find what a killed or failed add left behind (contents that were never registered, scratch
//! areas, temp files), which `--repair` reclaims. Space is never lost for good: whatever an add
//! leaves is found here or reclaimed by the next add of the same path.

use std::fmt;
use std::fs;
use std::path::PathBuf;

use super::fsutil::{self, PathLock};
use super::{Store, StoreError, db};
use crate::nix::hash::{HashAlgo, Hasher};
use crate::nix::nar;
use crate::nix::store_path::StorePath;

/// Something wrong with one registered path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyProblem {
    /// Registered, but its files are gone.
    Missing(String),
    /// Its files no longer hash to the registered NAR hash or size.
    Modified {
        path: String,
        expected: String,
        actual: String,
    },
    /// Its files cannot be read as a NAR.
    Unreadable { path: String, reason: String },
    /// Files in the store dir that no registration makes valid: an add killed between its
    /// rename and its registration. Reclaimable.
    Unregistered(PathBuf),
    /// A scratch area or temp file a killed process left. Reclaimable.
    Leftover(PathBuf),
}

impl VerifyProblem {
    /// Whether `--repair` removes it (it holds nothing anyone can reach).
    pub fn is_reclaimable(&self) -> bool {
        matches!(
            self,
            VerifyProblem::Unregistered(_) | VerifyProblem::Leftover(_)
        )
    }
}

impl fmt::Display for VerifyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyProblem::Missing(p) => write!(f, "path '{p}' is registered but missing"),
            VerifyProblem::Modified {
                path,
                expected,
                actual,
            } => {
                write!(
                    f,
                    "path '{path}' was modified: expected {expected}, got {actual}"
                )
            }
            VerifyProblem::Unreadable { path, reason } => write!(f, "path '{path}': {reason}"),
            VerifyProblem::Unregistered(p) => write!(
                f,
                "'{}' is in the store but not registered (left by an interrupted add)",
                p.display()
            ),
            VerifyProblem::Leftover(p) => {
                write!(f, "'{}' was left by an interrupted process", p.display())
            }
        }
    }
}

/// What verifying found, and what it reclaimed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// What is wrong and stays wrong.
    pub problems: Vec<VerifyProblem>,
    /// What was reclaimed (with `repair`); without it, these are among the problems.
    pub reclaimed: Vec<VerifyProblem>,
}

pub(super) fn verify(store: &Store, repair: bool) -> Result<VerifyReport, StoreError> {
    let mut report = VerifyReport {
        problems: registered_problems(store)?,
        reclaimed: Vec::new(),
    };
    // A store Nix manages is only read: its store dir and temp files are Nix's business.
    if store.is_nix_managed() {
        return Ok(report);
    }
    let mut leftovers = unregistered(store, repair)?;
    for path in fsutil::abandoned_scratch(&store.tmp_dir(), repair)? {
        leftovers.push(VerifyProblem::Leftover(path));
    }
    leftovers.extend(stray_db_files(store, repair)?);
    if repair {
        report.reclaimed = leftovers;
    } else {
        report.problems.extend(leftovers);
    }
    Ok(report)
}

/// Entries of the physical store dir without a registration. With `remove`, each is removed
/// under its path's lock, after checking again that nobody registered it meanwhile (an add
/// holds that lock from its rename to its registration).
fn unregistered(store: &Store, remove: bool) -> Result<Vec<VerifyProblem>, StoreError> {
    let dir = store.physical_store_dir();
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(&dir)(e)),
    };
    let registered = |name: &str| -> Result<bool, StoreError> {
        Ok(match StorePath::from_base_name(name) {
            // Its registration exists (whether it still matches is checked above, once).
            Ok(path) => fs::symlink_metadata(db::registration_path(&store.db_dir(), &path)).is_ok(),
            Err(_) => false,
        })
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(StoreError::io(&dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if registered(&name)? {
            continue;
        }
        if remove {
            let _lock = match StorePath::from_base_name(&name) {
                Ok(path) => Some(PathLock::acquire(&store.locks_dir(), path.hash_part())?),
                Err(_) => None,
            };
            if registered(&name)? {
                continue;
            }
            fsutil::remove_tree(&entry.path())?;
        }
        out.push(VerifyProblem::Unregistered(entry.path()));
    }
    Ok(out)
}

/// Temp files an older strata wrote beside the registrations (`.tmp-*`).
fn stray_db_files(store: &Store, remove: bool) -> Result<Vec<VerifyProblem>, StoreError> {
    let dir = store.db_dir();
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(".tmp-") {
            if remove {
                fsutil::remove_tree(&entry.path())?;
            }
            out.push(VerifyProblem::Leftover(entry.path()));
        }
    }
    Ok(out)
}

fn registered_problems(store: &Store) -> Result<Vec<VerifyProblem>, StoreError> {
    let mut problems = Vec::new();
    for path in db::list(&store.db_dir())? {
        let Some(info) = db::read(&store.db_dir(), &path)? else {
            continue;
        };
        let shown = store.store_dir().display(&path);
        if let Some(problem) = check_one(store, &path, &info, shown)? {
            problems.push(problem);
        }
    }
    Ok(problems)
}

fn check_one(
    store: &Store,
    path: &StorePath,
    info: &crate::nix::path_info::PathInfo,
    shown: String,
) -> Result<Option<VerifyProblem>, StoreError> {
    let physical = store.physical_path(path);
    if fs::symlink_metadata(&physical).is_err() {
        return Ok(Some(VerifyProblem::Missing(shown)));
    }
    let mut hasher = Hasher::new(HashAlgo::Sha256);
    if let Err(e) = nar::dump_path(&physical, &mut hasher, &mut nar::NoVisitor) {
        return Ok(Some(VerifyProblem::Unreadable {
            path: shown,
            reason: e.to_string(),
        }));
    }
    let size = hasher.len();
    let hash = hasher.finish();
    if hash != info.nar_hash.0 || size != info.nar_size {
        return Ok(Some(VerifyProblem::Modified {
            path: shown,
            expected: format!(
                "{} ({} bytes)",
                info.nar_hash.0.to_typed_nix32(),
                info.nar_size
            ),
            actual: format!("{} ({} bytes)", hash.to_typed_nix32(), size),
        }));
    }
    Ok(None)
}
