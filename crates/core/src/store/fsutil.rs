//! File system helpers for the store: canonicalising a finished copy (read-only modes, mtime
//! 1, no setuid/setgid), removing read-only trees, atomic file writes, scratch directories
//! that a later run can tell are abandoned, and per-path locks.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use filetime::FileTime;

use super::StoreError;

/// The mtime Nix gives every store file.
pub(super) const STORE_MTIME: i64 = crate::nix::nar::CANONICAL_MTIME_SECS as i64;

/// Every entry of a tree, children before their directory, not following symlinks (not even
/// a symlink at the root).
fn children_first(root: &Path) -> impl Iterator<Item = Result<walkdir::DirEntry, StoreError>> + '_ {
    walkdir::WalkDir::new(root)
        .follow_root_links(false)
        .contents_first(true)
        .into_iter()
        .map(move |entry| {
            entry.map_err(|e| StoreError::Io {
                path: e.path().unwrap_or(root).to_path_buf(),
                source: e.into(),
            })
        })
}

/// Make a freshly copied tree look like a store path: files 0444 (0555 if owner-executable),
/// directories 0555, mtime 1 everywhere (symlinks included). Children before parents, so a
/// directory's mtime is set after its last entry changed it. Entries that already look right
/// (files a canonical [`Restorer`](crate::nix::nar::Restorer) wrote) are only looked at.
pub(super) fn canonicalise(root: &Path) -> Result<(), StoreError> {
    let one = FileTime::from_unix_time(STORE_MTIME, 0);
    for entry in children_first(root) {
        let entry = entry?;
        let path = entry.path();
        let meta = fs::symlink_metadata(path).map_err(StoreError::io(path))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            filetime::set_symlink_file_times(path, one, one).map_err(StoreError::io(path))?;
            continue;
        }
        let mode = if ft.is_dir() || meta.mode() & 0o100 != 0 {
            0o555
        } else {
            0o444
        };
        if meta.mode() & 0o7777 != mode {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(StoreError::io(path))?;
        }
        if ft.is_dir() || meta.mtime() != STORE_MTIME || meta.mtime_nsec() != 0 {
            filetime::set_file_times(path, one, one).map_err(StoreError::io(path))?;
        }
    }
    Ok(())
}

/// Remove a tree even when its directories are read-only.
pub(super) fn remove_tree(path: &Path) -> Result<(), StoreError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source: e,
            });
        }
    };
    if meta.is_dir() {
        for entry in walkdir::WalkDir::new(path).follow_root_links(false) {
            let Ok(entry) = entry else { continue };
            if entry.file_type().is_dir() {
                let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o755));
            }
        }
        fs::remove_dir_all(path).map_err(StoreError::io(path))
    } else {
        fs::remove_file(path).map_err(StoreError::io(path))
    }
}

/// fsync a directory, so a rename inside it is durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io(dir))
}

/// Write a file by writing a temp file beside it, syncing it and renaming it into place.
pub(super) fn write_atomically(
    target: &Path,
    fill: impl FnOnce(&mut fs::File) -> io::Result<()>,
) -> Result<(), StoreError> {
    let dir = target.parent().unwrap_or(Path::new("."));
    // Short, so a target name near the 255-byte limit still leaves room.
    let tmp = dir.join(format!(".tmp-{}", unique_suffix()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        fill(&mut f)?;
        f.sync_all()?;
        fs::rename(&tmp, target)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(StoreError::Io {
            path: target.to_path_buf(),
            source: e,
        });
    }
    sync_dir(dir)
}

/// `<pid>-<counter>`: unique among live processes, and tells which process made it.
pub(super) fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A scratch directory, removed when dropped; one left by a killed process is removed by the
/// next one made in the same place.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// Make a new scratch area in `tmp_dir`, first removing any left by processes that no
    /// longer run.
    pub fn new(tmp_dir: &Path) -> Result<Scratch, StoreError> {
        fs::create_dir_all(tmp_dir).map_err(StoreError::io(tmp_dir))?;
        remove_abandoned(tmp_dir);
        let path = tmp_dir.join(unique_suffix());
        fs::create_dir(&path).map_err(StoreError::io(&path))?;
        Ok(Scratch { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = remove_tree(&self.path);
    }
}

/// Remove scratch dirs whose process is gone (a crash or `kill -9` mid-add).
fn remove_abandoned(tmp_dir: &Path) {
    let Ok(entries) = fs::read_dir(tmp_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = remove_tree(&entry.path());
        }
    }
}

/// An exclusive lock on one store path, held until dropped.
#[derive(Debug)]
pub(super) struct PathLock {
    _file: fs::File,
}

impl PathLock {
    pub(super) fn acquire(lock_dir: &Path, hash_part: &str) -> Result<PathLock, StoreError> {
        fs::create_dir_all(lock_dir).map_err(StoreError::io(lock_dir))?;
        let path = lock_dir.join(format!("{hash_part}.lock"));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(StoreError::io(&path))?;
        file.lock().map_err(StoreError::io(&path))?;
        Ok(PathLock { _file: file })
    }
}

/// fsync every file and directory of a tree (after all of it is written, so the kernel can
/// write back in parallel), so that a rename of the tree is never durable before its data.
pub(super) fn sync_tree(root: &Path) -> Result<(), StoreError> {
    for entry in children_first(root) {
        let entry = entry?;
        if entry.file_type().is_symlink() {
            continue;
        }
        let path = entry.path();
        fs::File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(StoreError::io(path))?;
    }
    Ok(())
}
