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

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "/nix/store/6nqvynq6mpq1s0g0prmzq6dwkpldp8cg-dep";
    const USER: &str = "/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt";
    const HASH: &str = "sha256:15rnbqpncbwhcd4mqzqhvz9srh6xanjkm7piiwww36si73qbjzky";

    /// A database with Nix's schema for valid paths and references.
    fn nix_db(root: &Path, rows: &[(i64, &str, &str, Option<&str>)], refs: &[(i64, i64)]) {
        let file = db_file(root);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        let conn = Connection::open(&file).unwrap();
        conn.execute_batch(
            "CREATE TABLE ValidPaths (id integer primary key autoincrement not null, \
             path text unique not null, hash text not null, registrationTime integer not null, \
             deriver text, narSize integer, ultimate integer, sigs text, ca text);
             CREATE TABLE Refs (referrer integer not null, reference integer not null, \
             primary key (referrer, reference));",
        )
        .unwrap();
        for (id, path, hash, ca) in rows {
            conn.execute(
                "INSERT INTO ValidPaths (id, path, hash, registrationTime, narSize, ca) \
                 VALUES (?1, ?2, ?3, 1, 128, ?4)",
                rusqlite::params![id, path, hash, ca],
            )
            .unwrap();
        }
        for (referrer, reference) in refs {
            conn.execute("INSERT INTO Refs VALUES (?1, ?2)", [referrer, reference])
                .unwrap();
        }
    }

    use std::fs;

    #[test]
    fn path_infos_and_references_come_from_nix_s_tables() {
        let t = tempfile::tempdir().unwrap();
        let ca = "text:sha256:085ssxbk2llxi98aiz181pvqm5mrhcr632v0y4a886lxyx22yq50";
        nix_db(
            t.path(),
            &[
                (1, DEP, HASH, Some(ca)),
                (2, USER, HASH, Some("fixed:git:sha1:x")),
            ],
            &[(2, 1), (2, 2)],
        );
        let db = NixDb::open(t.path()).unwrap().expect("a database");
        let dir = StoreDir::default();
        let listed = db.list(&dir).unwrap();
        let names: Vec<String> = listed.iter().map(StorePath::base_name).collect();
        assert_eq!(
            names,
            [
                "6nqvynq6mpq1s0g0prmzq6dwkpldp8cg-dep",
                "i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt"
            ]
        );
        let dep = db.query(&dir, &listed[0]).unwrap().unwrap();
        assert_eq!(dep.ca.map(|c| c.to_string()).as_deref(), Some(ca));
        assert_eq!(dep.nar_size, 128);
        assert!(dep.references.is_empty());
        let user = db.query(&dir, &listed[1]).unwrap().unwrap();
        // A content address strata does not know is left out, not an error.
        assert_eq!(user.ca, None);
        let refs: Vec<String> = user.references.iter().map(ToString::to_string).collect();
        assert_eq!(refs, [DEP, USER]);
        let other = StorePath::from_base_name("00000000000000000000000000000000-x").unwrap();
        assert_eq!(db.query(&dir, &other).unwrap(), None);
    }

    #[test]
    fn no_database_is_none_and_a_bad_hash_names_the_database() {
        let t = tempfile::tempdir().unwrap();
        assert!(NixDb::open(t.path()).unwrap().is_none());
        nix_db(t.path(), &[(1, DEP, "md5:nothex", None)], &[]);
        let db = NixDb::open(t.path()).unwrap().unwrap();
        let path = StorePath::from_base_name("6nqvynq6mpq1s0g0prmzq6dwkpldp8cg-dep").unwrap();
        let err = db.query(&StoreDir::default(), &path).unwrap_err();
        assert!(err.to_string().contains("db.sqlite"), "{err}");
    }
}
