//! The rootfs basics an image built from store paths lacks because no base image and no
//! maintainer script provides them: user and group databases (`/etc/passwd`, `/etc/group`,
//! `/etc/nsswitch.conf`), a CA bundle (`/etc/ssl/certs/ca-certificates.crt`) and
//! `/usr/bin/env`. As in nixpkgs (`fakeNss`, `cacert`, `usrBinEnv`), each is a small
//! generated tree added to the store as a content-addressed path, which `mkimage --contents`
//! then links into `/`: same inputs, same store path.

pub mod ca;
pub mod env;
pub mod nss;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::manifest::{Inputs, check_canonical};
use crate::nix::path_info::PathInfo;
use crate::nix::store_path::AbsStorePath;
use crate::store::{Store, StoreError};

/// Why a rootfs tree cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("--user {}: {reason}", .spec.escape_debug())]
    BadUser { spec: String, reason: String },
    #[error("{path}: {reason}")]
    BadCertificate { path: String, reason: String },
    #[error("{0}: no .crt file below usr/share/ca-certificates")]
    NoCertificates(String),
    #[error("{what}: {reason}")]
    BadTarget { what: String, reason: String },
    #[error("{what}: '{}': {reason}", .text.escape_debug())]
    BadOperand {
        what: String,
        text: String,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl RootfsError {
    /// Whether the command line itself is at fault (exit 2) rather than the files (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            RootfsError::BadUser { .. } | RootfsError::BadOperand { .. }
        )
    }

    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError + '_ {
        move |source| RootfsError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A path argument, resolved: the path it names, and the store path that is in, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operand {
    pub logical: String,
    pub store_path: Option<AbsStorePath>,
}

/// Resolve an absolute path, or `@NAME[/SUB]`: the one path of `inputs` named NAME exactly,
/// else NAME, `-` and a version (`@coreutils` finds `coreutils-9.1-1`), then SUB. The path
/// must be canonical (no `.`, `..` or empty component), so it names what it spells.
pub fn resolve(
    store: &Store,
    inputs: &[PathInfo],
    what: &str,
    text: &str,
) -> Result<Operand, RootfsError> {
    let bad = |reason: String| RootfsError::BadOperand {
        what: what.to_string(),
        text: text.to_string(),
        reason,
    };
    // `@NAME[/SUB]` as every tool resolves it (crate::manifest); a plain path must be
    // canonical too, so it names what it spells.
    let logical = match text.strip_prefix('@') {
        Some(reference) => {
            Inputs::new(inputs.to_vec())
                .resolve(reference)
                .map_err(|e| bad(e.to_string()))?
                .1
        }
        None if text.starts_with('/') => {
            check_canonical(text).map_err(|e| bad(e.to_string()))?;
            text.to_string()
        }
        None => return Err(bad("neither an absolute path nor @NAME".into())),
    };
    let store_path = store
        .store_dir()
        .parse_path_prefix(&logical)
        .ok()
        .map(|(path, _)| store.abs(&path));
    Ok(Operand {
        logical,
        store_path,
    })
}

/// Write a tree with `write` in a scratch directory of the store and add it as `name`; the
/// candidates its files mention (a symlink target counts) become its references.
pub(crate) fn add_tree(
    store: &Store,
    name: &str,
    candidates: &BTreeSet<AbsStorePath>,
    write: impl FnOnce(&Path) -> Result<(), RootfsError>,
) -> Result<PathInfo, RootfsError> {
    for candidate in candidates {
        store.query_valid(store.check_abs(candidate)?)?;
    }
    // Removed on every path out of here, and by the next add if this process is killed.
    let scratch = store.scratch(false)?;
    let tree = scratch.path().join("out");
    std::fs::create_dir(&tree).map_err(RootfsError::io(&tree))?;
    write(&tree)?;
    Ok(store.add_generated(&tree, name, candidates, None, false)?)
}

/// Write `contents` at `rel` below `tree`, making its directories.
pub(crate) fn write_file(tree: &Path, rel: &str, contents: &[u8]) -> Result<(), RootfsError> {
    let path = tree.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(RootfsError::io(parent))?;
    }
    std::fs::write(&path, contents).map_err(RootfsError::io(&path))
}
