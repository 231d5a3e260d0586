//! File system helpers for the store: canonicalising a finished copy (read-only modes, mtime
//! 1, no setuid/setgid), removing read-only trees, atomic file writes, scratch directories
//! that a later run can tell are abandoned (by a lock, never a PID), and per-path locks.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

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
                let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o700));
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

/// Write `target` by filling a file in `scratch` (a directory on the same file system),
/// syncing it and renaming it into place: a crash leaves the old file or the new one, and a
/// temp file it leaves behind is in a scratch area a later run reclaims.
pub(super) fn write_atomically(
    scratch: &Scratch,
    target: &Path,
    fill: impl FnOnce(&mut fs::File) -> io::Result<()>,
) -> Result<(), StoreError> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let tmp = scratch.path().join("file");
    let result = (|| {
        let mut f = fs::File::create_new(&tmp)?;
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

/// The lock file that serialises making and reclaiming scratch areas in a tmp dir.
const SCRATCH_GUARD: &str = ".scratch.lock";

/// `O_NOFOLLOW` on Linux (the generic value, shared by x86_64 and aarch64).
const O_NOFOLLOW: i32 = 0o400000;

/// A private (0700) scratch directory, removed when dropped.
///
/// Who owns a scratch area is decided by an advisory lock (`flock`) held on the directory for
/// its whole life, never by process IDs: PIDs mean nothing across the PID namespaces of
/// containers that share a store, but a lock belongs to an open file and the kernel releases
/// it when its holder dies, whatever namespace it ran in. One left by a killed process is
/// reclaimed by the next one made in the same tmp dir; a live one never is.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    /// The open directory, locked; `None` for a private temp dir nobody else reclaims.
    _lock: Option<fs::File>,
}

impl Scratch {
    /// Make a new scratch area in a store's `tmp_dir`, first reclaiming any whose owner is
    /// gone (a crash or `kill -9` mid-add).
    pub fn new(tmp_dir: &Path) -> Result<Scratch, StoreError> {
        fs::create_dir_all(tmp_dir).map_err(StoreError::io(tmp_dir))?;
        // Making and reclaiming are serialised, so an area is never seen between its mkdir and
        // its lock; the (slow) removal of what was reclaimed happens after the guard is gone.
        let guard = TmpGuard::lock(tmp_dir)?;
        let abandoned = lock_abandoned(tmp_dir);
        let dir = tempfile::Builder::new()
            .prefix("scratch-")
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir_in(tmp_dir)
            .map_err(StoreError::io(tmp_dir))?
            .keep();
        let lock = fs::File::open(&dir).map_err(StoreError::io(&dir))?;
        lock.try_lock()
            .map_err(|e| StoreError::io(&dir)(io::Error::other(e)))?;
        drop(guard);
        for (path, _held) in abandoned {
            let _ = remove_tree(&path);
        }
        Ok(Scratch {
            path: dir,
            _lock: Some(lock),
        })
    }

    /// A fresh private directory in the system's temp dir (mkdtemp: a new name, 0700, nothing
    /// followed), for work that writes nothing to a store.
    pub fn private() -> Result<Scratch, StoreError> {
        let tmp = std::env::temp_dir();
        let dir = tempfile::Builder::new()
            .prefix("strata-")
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir_in(&tmp)
            .map_err(StoreError::io(&tmp))?
            .keep();
        Ok(Scratch {
            path: dir,
            _lock: None,
        })
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

/// The exclusive lock on a tmp dir's guard file, held while scratch areas are made or
/// reclaimed there.
struct TmpGuard(#[allow(dead_code)] fs::File);

impl TmpGuard {
    fn lock(tmp_dir: &Path) -> Result<TmpGuard, StoreError> {
        let path = tmp_dir.join(SCRATCH_GUARD);
        let file = open_lock_file(&path)?;
        file.lock().map_err(StoreError::io(&path))?;
        Ok(TmpGuard(file))
    }
}

fn open_lock_file(path: &Path) -> Result<fs::File, StoreError> {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(O_NOFOLLOW)
        .open(path)
        .map_err(StoreError::io(path))
}

/// Lock every entry of `tmp_dir` whose owner is gone and return them with their locks held:
/// whoever holds an entry's lock may remove it. Entries that are not directories (files an
/// older strata left) have no owner to ask and are taken too. Called under the tmp dir's guard.
fn lock_abandoned(tmp_dir: &Path) -> Vec<(PathBuf, Option<fs::File>)> {
    let Ok(entries) = fs::read_dir(tmp_dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(_) if entry.file_name() == SCRATCH_GUARD => {}
            Ok(kind) if kind.is_dir() => {
                let dir = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(O_NOFOLLOW)
                    .open(&path);
                if let Ok(dir) = dir
                    && dir.try_lock().is_ok()
                {
                    out.push((path, Some(dir)));
                }
            }
            Ok(_) => out.push((path, None)),
            Err(_) => {}
        }
    }
    out
}

/// What killed processes left in a tmp dir, removed if `remove`; returns those entries.
pub(super) fn abandoned_scratch(tmp_dir: &Path, remove: bool) -> Result<Vec<PathBuf>, StoreError> {
    if !tmp_dir.is_dir() {
        return Ok(Vec::new());
    }
    let guard = TmpGuard::lock(tmp_dir)?;
    let abandoned = lock_abandoned(tmp_dir);
    drop(guard);
    if remove {
        for (path, _held) in &abandoned {
            remove_tree(path)?;
        }
    }
    Ok(abandoned.into_iter().map(|(path, _)| path).collect())
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
        let file = open_lock_file(&path)?;
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
