//! The registration database: one path-info JSON file per valid path, written to a temp file,
//! synced, and renamed into place, so a crash leaves either the old state or the new one.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::StoreError;
use super::fsutil::{self, Scratch};
use crate::nix::path_info::PathInfo;
use crate::nix::store_path::StorePath;

pub(super) fn registration_path(db: &Path, path: &StorePath) -> PathBuf {
    db.join(format!("{}.json", path.base_name()))
}

pub(super) fn read(db: &Path, path: &StorePath) -> Result<Option<PathInfo>, StoreError> {
    let file = registration_path(db, path);
    let text = match fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StoreError::Io {
                path: file,
                source: e,
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| StoreError::BadRegistration {
            path: file,
            reason: e.to_string(),
        })
}

/// Register a path: its path info is written in `scratch` and renamed into place.
pub(super) fn write(db: &Path, scratch: &Scratch, info: &PathInfo) -> Result<(), StoreError> {
    let dir = db.to_path_buf();
    fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
    let file = registration_path(db, &info.path.path);
    let mut text = serde_json::to_vec(info).map_err(|e| StoreError::Invalid(e.to_string()))?;
    text.push(b'\n');
    fsutil::write_atomically(scratch, &file, |f| f.write_all(&text))
}

pub(super) fn remove(db: &Path, path: &StorePath) -> Result<(), StoreError> {
    let file = registration_path(db, path);
    match fs::remove_file(&file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::Io {
            path: file,
            source: e,
        }),
    }
}

/// Every registered path (valid or not), sorted.
pub(super) fn list(db: &Path) -> Result<Vec<StorePath>, StoreError> {
    let dir = db.to_path_buf();
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(StoreError::Io {
                path: dir,
                source: e,
            });
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(StoreError::io(&dir))?;
        let name = entry.file_name();
        let Some(base) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if let Ok(path) = StorePath::from_base_name(base) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::path_info::parse_path_infos;

    // A registration as Nix's path info has it (the `text-dep` shared vector).
    const DEP: &str = r#"{"ca":"text:sha256:085ssxbk2llxi98aiz181pvqm5mrhcr632v0y4a886lxyx22yq50","narHash":"sha256:15rnbqpncbwhcd4mqzqhvz9srh6xanjkm7piiwww36si73qbjzky","narSize":128,"path":"/nix/store/6nqvynq6mpq1s0g0prmzq6dwkpldp8cg-dep","references":[]}"#;

    fn dep() -> PathInfo {
        parse_path_infos(DEP).unwrap().remove(0)
    }

    #[test]
    fn a_written_registration_reads_back_as_the_same_bytes() {
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("db");
        let scratch = Scratch::new(&t.path().join("tmp")).unwrap();
        let info = dep();
        let path = info.path.path.clone();
        assert_eq!(read(&db, &path).unwrap(), None);
        write(&db, &scratch, &info).unwrap();
        assert_eq!(read(&db, &path).unwrap(), Some(info));
        let file = registration_path(&db, &path);
        assert_eq!(
            file.file_name().unwrap(),
            "6nqvynq6mpq1s0g0prmzq6dwkpldp8cg-dep.json"
        );
        assert_eq!(fs::read_to_string(&file).unwrap(), format!("{DEP}\n"));
        // Nothing is left beside it.
        assert_eq!(fs::read_dir(&db).unwrap().count(), 1);
    }

    #[test]
    fn remove_is_idempotent() {
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("db");
        let scratch = Scratch::new(&t.path().join("tmp")).unwrap();
        let info = dep();
        write(&db, &scratch, &info).unwrap();
        remove(&db, &info.path.path).unwrap();
        assert_eq!(read(&db, &info.path.path).unwrap(), None);
        remove(&db, &info.path.path).unwrap();
        assert!(list(&db).unwrap().is_empty());
    }

    #[test]
    fn a_damaged_registration_names_its_file() {
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("db");
        fs::create_dir(&db).unwrap();
        let path = dep().path.path;
        let file = registration_path(&db, &path);
        fs::write(&file, &DEP[..40]).unwrap();
        match read(&db, &path) {
            Err(StoreError::BadRegistration { path: named, .. }) => assert_eq!(named, file),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn list_is_sorted_and_skips_what_is_not_a_registration() {
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("db");
        assert!(list(&db).unwrap().is_empty(), "a missing db lists nothing");
        fs::create_dir(&db).unwrap();
        for name in [
            "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-b.json",
            "00000000000000000000000000000000-a.json",
            "not-a-store-path.json",
            "11111111111111111111111111111111-c.json.tmp",
            "README",
        ] {
            fs::write(db.join(name), "{}").unwrap();
        }
        let listed: Vec<String> = list(&db)
            .unwrap()
            .iter()
            .map(StorePath::base_name)
            .collect();
        assert_eq!(
            listed,
            [
                "00000000000000000000000000000000-a",
                "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-b"
            ]
        );
    }
}
