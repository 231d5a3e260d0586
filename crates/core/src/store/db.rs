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
