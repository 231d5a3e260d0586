//! Read-only access to a store Nix manages: path infos come from Nix's own SQLite database
//! (`ROOT/nix/var/nix/db/db.sqlite`), which strata never writes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::StoreError;
use crate::nix::content_address::ContentAddress;
use crate::nix::hash::{Hash, HashAlgo};
use crate::nix::path_info::{NarHash, PathInfo};
use crate::nix::store_path::{AbsStorePath, StoreDir, StorePath};

/// Nix's database of valid paths, opened read-only.
#[derive(Debug)]
pub(super) struct NixDb {
    conn: Connection,
    file: PathBuf,
}

/// Where Nix keeps its database under a root.
pub(super) fn db_file(root: &Path) -> PathBuf {
    root.join("nix/var/nix/db/db.sqlite")
}

impl NixDb {
    /// Open the database if the root has one.
    pub(super) fn open(root: &Path) -> Result<Option<NixDb>, StoreError> {
        let file = db_file(root);
        if !file.exists() {
            return Ok(None);
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let err = |e: rusqlite::Error| StoreError::Invalid(format!("{}: {e}", file.display()));
        // A reader that may not write the WAL index (another user's store) asks for an
        // immutable view instead.
        let conn = Connection::open_with_flags(&file, flags)
            .and_then(|c| {
                c.query_row("SELECT count(*) FROM ValidPaths LIMIT 1", [], |_| Ok(()))
                    .map(|()| c)
            })
            .or_else(|_| {
                let uri = format!("file:{}?immutable=1", file.display());
                Connection::open_with_flags(uri, flags)
            })
            .map_err(err)?;
        Ok(Some(NixDb { conn, file }))
    }

    fn err(&self, e: &rusqlite::Error) -> StoreError {
        StoreError::Invalid(format!("{}: {e}", self.file.display()))
    }

    /// The path info Nix registered for `path`, if it is valid.
    pub(super) fn query(
        &self,
        store_dir: &StoreDir,
        path: &StorePath,
    ) -> Result<Option<PathInfo>, StoreError> {
        let shown = store_dir.display(path);
        let row = self
            .conn
            .query_row(
                "SELECT id, hash, narSize, ca FROM ValidPaths WHERE path = ?1",
                [&shown],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.err(&e))?;
        let Some((id, hash, nar_size, ca)) = row else {
            return Ok(None);
        };
        let bad = |reason: String| StoreError::BadRegistration {
            path: self.file.clone(),
            reason,
        };
        let nar_hash = Hash::parse_typed(&hash).map_err(|e| bad(format!("{shown}: {e}")))?;
        if nar_hash.algo() != HashAlgo::Sha256 {
            return Err(bad(format!("{shown}: NAR hash is not SHA-256")));
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT v.path FROM Refs r JOIN ValidPaths v ON r.reference = v.id WHERE r.referrer = ?1")
            .map_err(|e| self.err(&e))?;
        let refs = stmt
            .query_map([id], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(&e))?
            .collect::<Result<Vec<String>, _>>()
            .map_err(|e| self.err(&e))?;
        let references = refs
            .iter()
            .map(|r| AbsStorePath::parse(r).map_err(|e| bad(e.to_string())))
            .collect::<Result<BTreeSet<_>, _>>()?;
        Ok(Some(PathInfo {
            // Only passed on, never checked against: a form strata does not know (Nix's
            // experimental `fixed:git:…`) is left out rather than making the path unreadable.
            ca: ca.and_then(|c| ContentAddress::parse(&c).ok()),
            closure_size: None,
            nar_hash: NarHash(nar_hash),
            nar_size: nar_size.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
            path: AbsStorePath {
                store_dir: store_dir.clone(),
                path: path.clone(),
            },
            references,
        }))
    }

    /// Every valid path in `store_dir`, sorted.
    pub(super) fn list(&self, store_dir: &StoreDir) -> Result<Vec<StorePath>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT path FROM ValidPaths")
            .map_err(|e| self.err(&e))?;
        let paths = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(&e))?
            .collect::<Result<Vec<String>, _>>()
            .map_err(|e| self.err(&e))?;
        let mut out: Vec<StorePath> = paths
            .iter()
            .filter_map(|p| store_dir.parse_path(p).ok())
            .collect();
        out.sort();
        Ok(out)
    }
}
