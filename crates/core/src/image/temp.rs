//! Temporary files and directories a build must never leave behind (an output being written
//! can be over a gigabyte), and the extra commands' processes it must never leave running.
//!
//! - A temporary entry is named `<prefix><random>.tmp` and holds an exclusive `flock` for
//!   its whole life (made as `….new`, locked, then renamed to `….tmp`, so no `….tmp` is ever
//!   unlocked while its owner lives). A later run calls [`reclaim`] on the same directory:
//!   whatever lock it can take belongs to a run that was killed (SIGKILL, power loss), and
//!   that entry is removed.
//! - Every live entry and every running extra-commands process group is registered, so
//!   [`interrupted`] (called from a SIGINT/SIGTERM handler) can remove and kill them all.
//!   Renames into place happen under the same lock, so an interrupt either sees the temporary
//!   entry (and removes it) or the finished output (and leaves it).

use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, RenameFlags};

use super::beneath;

#[derive(Debug)]
struct Registry {
    next: u64,
    /// Temporary entries: id, path, whether a directory.
    paths: Vec<(u64, PathBuf, bool)>,
    /// Process groups of running extra commands: id, process group id.
    groups: Vec<(u64, i32)>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    next: 0,
    paths: Vec::new(),
    groups: Vec::new(),
});

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Registry {
    fn id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

/// Kill every running extra-commands process group and remove every temporary entry of the
/// builds in progress, at once. For a signal handler: the process is ending, so the registry
/// stays locked afterwards and no build can rename anything into place or start anything.
pub fn interrupted() {
    let guard = registry();
    for (_, pgid) in &guard.groups {
        kill_group(*pgid);
    }
    for (_, path, dir) in &guard.paths {
        remove(path, *dir);
    }
    std::mem::forget(guard);
}

fn kill_group(pgid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// A running process group, killed by [`interrupted`]; unregistered when dropped.
#[derive(Debug)]
pub(crate) struct GroupWatch(u64);

pub(crate) fn watch_group(pgid: u32) -> GroupWatch {
    let mut r = registry();
    let id = r.id();
    r.groups.push((id, pgid as i32));
    GroupWatch(id)
}

impl Drop for GroupWatch {
    fn drop(&mut self) {
        registry().groups.retain(|(id, _)| *id != self.0);
    }
}

/// Kill a process group now (SIGKILL); one that is already gone is fine.
pub(crate) fn kill_process_group(pgid: u32) {
    kill_group(pgid as i32);
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Remove a file or a whole tree, best effort. A tree that unprivileged extra commands left
/// read-only is made writable first when we are not root (root needs no write permission).
pub(crate) fn remove(path: &Path, dir: bool) {
    if !dir {
        let _ = fs::remove_file(path);
        return;
    }
    if fs::remove_dir_all(path).is_err() && !is_root() {
        make_writable(path);
        let _ = fs::remove_dir_all(path);
    }
}

/// Give every directory under `root` (not following symlinks) its owner's write permission.
/// Only ever run as the user who owns the tree, so a race can only touch that user's files.
fn make_writable(root: &Path) {
    for entry in walkdir::WalkDir::new(root).into_iter().flatten() {
        if entry.file_type().is_dir() {
            let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o755));
        }
    }
}

/// A temporary file or directory, locked and registered; removed when dropped unless
/// [`Temp::persist`]ed.
#[derive(Debug)]
pub(crate) struct Temp {
    id: u64,
    path: PathBuf,
    dir: bool,
    /// The open file (or directory), holding the lock.
    handle: File,
    persisted: bool,
}

impl Temp {
    /// A new, empty temporary file in `dir`, mode 0666 less the umask, open for reading and
    /// writing.
    pub(crate) fn file(dir: &Path, prefix: &str) -> io::Result<Temp> {
        Temp::create(dir, prefix, false)
    }

    /// A new, empty temporary directory in `dir` (mode 0700 until the caller changes it).
    pub(crate) fn dir(dir: &Path, prefix: &str) -> io::Result<Temp> {
        Temp::create(dir, prefix, true)
    }

    fn create(dir: &Path, prefix: &str, is_dir: bool) -> io::Result<Temp> {
        loop {
            let mut builder = tempfile::Builder::new();
            builder.prefix(prefix).suffix(".new");
            let (handle, new) = if is_dir {
                let path = builder.tempdir_in(dir)?.keep();
                match File::open(&path) {
                    Ok(f) => (f, path),
                    Err(e) => {
                        let _ = fs::remove_dir(&path);
                        return Err(e);
                    }
                }
            } else {
                builder.permissions(fs::Permissions::from_mode(0o666));
                builder.tempfile_in(dir)?.keep().map_err(|e| e.error)?
            };
            let mut r = registry();
            let id = r.id();
            let undo = |e: io::Error| {
                remove(&new, is_dir);
                e
            };
            handle.try_lock().map_err(io::Error::from).map_err(undo)?;
            let name = new.file_name().unwrap_or_default().as_bytes();
            let stem = &name[..name.len() - ".new".len()];
            let path = new.with_file_name(std::ffi::OsStr::from_bytes(
                &[stem, b".tmp".as_slice()].concat(),
            ));
            match rustix::fs::renameat_with(
                rustix::fs::CWD,
                &new,
                rustix::fs::CWD,
                &path,
                RenameFlags::NOREPLACE,
            ) {
                Ok(()) => {}
                // Another run's `.tmp` of the same name: try another name.
                Err(rustix::io::Errno::EXIST) => {
                    remove(&new, is_dir);
                    continue;
                }
                Err(e) => return Err(undo(e.into())),
            }
            r.paths.push((id, path.clone(), is_dir));
            return Ok(Temp {
                id,
                path,
                dir: is_dir,
                handle,
                persisted: false,
            });
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The open file (for a temporary file), holding the lock.
    pub(crate) fn file_handle(&self) -> &File {
        &self.handle
    }

    /// Rename into `dest`: a file replaces what is there, a directory only takes a name that
    /// is free.
    pub(crate) fn persist(mut self, dest: &Path) -> io::Result<()> {
        let mut r = registry();
        if self.dir {
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &self.path,
                rustix::fs::CWD,
                dest,
                RenameFlags::NOREPLACE,
            )?;
        } else {
            fs::rename(&self.path, dest)?;
        }
        r.paths.retain(|(id, _, _)| *id != self.id);
        self.persisted = true;
        Ok(())
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if self.persisted {
            return;
        }
        let mut r = registry();
        remove(&self.path, self.dir);
        r.paths.retain(|(id, _, _)| *id != self.id);
    }
}

/// Remove the temporary entries (`<prefix>….tmp`) in `dir` that a killed run left: those
/// owned by us whose lock nobody holds. A `….new` one is removed only when it is also over a
/// minute old (a live run holds it unlocked for an instant). Best effort: errors are ignored.
pub(crate) fn reclaim(dir: &Path, prefix: &str) {
    let Ok(dirfd) = beneath::open_root(dir) else {
        return;
    };
    let Ok(names) = beneath::list(&dirfd) else {
        return;
    };
    let me = rustix::process::geteuid().as_raw();
    for name in names {
        let b = name.as_bytes();
        let new = b.ends_with(b".new");
        if !b.starts_with(prefix.as_bytes()) || !(new || b.ends_with(b".tmp")) {
            continue;
        }
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let Ok(fd) = rustix::fs::openat(&dirfd, &name, flags, Mode::empty()) else {
            continue;
        };
        let Ok(st) = rustix::fs::fstat(&fd) else {
            continue;
        };
        let kind = FileType::from_raw_mode(st.st_mode);
        if st.st_uid != me || !matches!(kind, FileType::RegularFile | FileType::Directory) {
            continue;
        }
        if rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue;
        }
        let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(st.st_mtime.max(0) as u64);
        let old = SystemTime::now()
            .duration_since(mtime)
            .is_ok_and(|age| age > Duration::from_secs(60));
        if new && !old {
            continue;
        }
        // Still the entry that was locked (not renamed away and replaced meanwhile)?
        match rustix::fs::statat(&dirfd, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(now) if now.st_dev == st.st_dev && now.st_ino == st.st_ino => {}
            _ => continue,
        }
        remove(&dir.join(&name), kind == FileType::Directory);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_temp_is_locked_removed_when_dropped_and_renamed_when_persisted() {
        let t = tempfile::tempdir().unwrap();
        let temp = Temp::file(t.path(), ".x-").unwrap();
        let name = temp
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with(".x-") && name.ends_with(".tmp"), "{name}");
        // Someone else cannot take its lock.
        let other = File::open(temp.path()).unwrap();
        assert!(other.try_lock().is_err());
        drop(temp);
        assert!(names(t.path()).is_empty());
        let temp = Temp::file(t.path(), ".x-").unwrap();
        use std::io::Write;
        temp.file_handle().write_all(b"done").unwrap();
        temp.persist(&t.path().join("out")).unwrap();
        assert_eq!(names(t.path()), ["out"]);
        assert_eq!(fs::read(t.path().join("out")).unwrap(), b"done");
        // A directory is never renamed over an existing one.
        let d = Temp::dir(t.path(), ".x-").unwrap();
        fs::create_dir(t.path().join("taken")).unwrap();
        assert!(d.persist(&t.path().join("taken")).is_err());
        assert_eq!(names(t.path()), ["out", "taken"]);
    }

    #[test]
    fn reclaim_removes_unlocked_temps_only() {
        let t = tempfile::tempdir().unwrap();
        let live = Temp::file(t.path(), ".x-").unwrap();
        let live_dir = Temp::dir(t.path(), ".x-").unwrap();
        // What a killed run leaves: a `.tmp` file and directory nobody holds a lock on.
        fs::write(t.path().join(".x-dead1.tmp"), b"stale").unwrap();
        fs::create_dir_all(t.path().join(".x-dead2.tmp/sub")).unwrap();
        // Young `.new` entries and other names are left alone.
        fs::write(t.path().join(".x-young.new"), b"").unwrap();
        fs::write(t.path().join(".y-other.tmp"), b"").unwrap();
        fs::write(t.path().join("keep.tmp"), b"").unwrap();
        std::os::unix::fs::symlink("/etc", t.path().join(".x-link.tmp")).unwrap();
        reclaim(t.path(), ".x-");
        let mut expected = vec![
            ".x-link.tmp".to_string(),
            ".x-young.new".to_string(),
            ".y-other.tmp".to_string(),
            "keep.tmp".to_string(),
            live.path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
            live_dir
                .path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        ];
        expected.sort();
        assert_eq!(names(t.path()), expected);
        assert!(fs::metadata("/etc").unwrap().is_dir());
    }
}
