//! Verifying the store: re-hash every registered path and compare with its registration.

use std::fmt;

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
        }
    }
}

pub(super) fn verify(store: &Store) -> Result<Vec<VerifyProblem>, StoreError> {
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
    if std::fs::symlink_metadata(&physical).is_err() {
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
