//! Reading a tree that may change while it is read without ever following a symlink out of
//! it. mkimage (often root) reads the customisation root after unprivileged extra commands
//! wrote it, and `--contents` directories in the store; a path-based `lstat` followed by an
//! `open` lets a symlink swapped in between redirect the read to any host file. Here every
//! entry is opened relative to its parent directory's descriptor with `O_NOFOLLOW`, starting
//! from a descriptor of the tree's root, and is described by `fstat` of that descriptor: what
//! was looked at is what is read.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path};

use rustix::fs::{Dir, FileType, Mode, OFlags, Stat, fstat, openat, readlinkat};

/// Flags for a directory on the way down.
fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Flags for any entry: never follows a symlink, never blocks on a FIFO, never becomes the
/// controlling terminal.
fn entry_flags() -> OFlags {
    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY
}

/// An entry of a directory, opened and described without following symlinks.
#[derive(Debug)]
pub(crate) enum Node {
    Dir(OwnedFd),
    File(OwnedFd, Stat),
    Symlink(Vec<u8>),
    /// A FIFO, socket or device.
    Other(FileType),
}

/// Open a directory whose path the caller trusts (it made it, or it is the store's own
/// directory, or the directory `-o` names): symlinks in that path are followed.
pub(crate) fn open_root(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(openat(rustix::fs::CWD, path, flags, Mode::empty())?)
}

/// The directory `rel` below `root`, each component opened without following a symlink: a
/// symlink anywhere on the way is `ELOOP` (or `ENOTDIR`).
pub(crate) fn open_dir_below(root: &OwnedFd, rel: &Path) -> io::Result<OwnedFd> {
    let mut fd = root.try_clone()?;
    for c in rel.components() {
        match c {
            Component::Normal(name) => {
                fd = openat(&fd, name, dir_flags(), Mode::empty())?;
            }
            Component::CurDir => {}
            _ => return Err(rustix::io::Errno::INVAL.into()),
        }
    }
    Ok(fd)
}

/// The names in a directory, sorted by their bytes, without `.` and `..`.
pub(crate) fn list(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name.to_vec()));
        }
    }
    names.sort();
    Ok(names)
}

/// Open the entry `name` of `dir` and say what it is, from the opened descriptor.
pub(crate) fn open_entry(dir: &OwnedFd, name: &OsStr) -> io::Result<Node> {
    match openat(dir, name, entry_flags(), Mode::empty()) {
        Ok(fd) => {
            let st = fstat(&fd)?;
            Ok(match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => Node::Dir(fd),
                FileType::RegularFile => Node::File(fd, st),
                other => Node::Other(other),
            })
        }
        // O_NOFOLLOW on a symlink: read the link itself. If it was swapped for something
        // else in between, readlinkat fails (EINVAL) and so does the caller.
        Err(rustix::io::Errno::LOOP) => {
            let target = readlinkat(dir, name, Vec::new())?;
            Ok(Node::Symlink(target.into_bytes()))
        }
        // A socket cannot be opened.
        Err(rustix::io::Errno::NXIO) => Ok(Node::Other(FileType::Socket)),
        Err(e) => Err(e.into()),
    }
}

/// Open the regular file `rel` below the directory `root` for reading, without following
/// a symlink anywhere, and check it is still the file `(dev, ino)` that was described when
/// the layer's entries were made.
pub(crate) fn open_file_below(root: &Path, rel: &Path, dev: u64, ino: u64) -> io::Result<File> {
    let changed = || {
        io::Error::other(format!(
            "{}: changed while the image was built",
            root.join(rel).display()
        ))
    };
    let top = open_root(root)?;
    let parent = rel.parent().unwrap_or(Path::new(""));
    let name = rel.file_name().ok_or_else(changed)?;
    let dir = open_dir_below(&top, parent)?;
    match open_entry(&dir, name)? {
        Node::File(fd, st) if st.st_dev == dev && st.st_ino == ino => Ok(File::from(fd)),
        _ => Err(changed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Read;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::symlink;

    #[test]
    fn entries_are_described_without_following_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        fs::write(&outside, b"secret").unwrap();
        let root = t.path().join("root");
        fs::create_dir_all(root.join("d")).unwrap();
        fs::write(root.join("f"), b"file").unwrap();
        symlink(&outside, root.join("l")).unwrap();
        symlink(t.path(), root.join("dl")).unwrap();
        let fd = open_root(&root).unwrap();
        assert_eq!(list(&fd).unwrap(), ["d", "dl", "f", "l"]);
        assert!(matches!(
            open_entry(&fd, OsStr::new("d")).unwrap(),
            Node::Dir(..)
        ));
        match open_entry(&fd, OsStr::new("l")).unwrap() {
            Node::Symlink(target) => assert_eq!(target, outside.as_os_str().as_bytes()),
            other => panic!("{other:?}"),
        }
        let Node::File(f, st) = open_entry(&fd, OsStr::new("f")).unwrap() else {
            panic!("not a file")
        };
        let mut text = String::new();
        File::from(f).read_to_string(&mut text).unwrap();
        assert_eq!((text.as_str(), st.st_size), ("file", 4));
        // A symlinked directory on the way down is refused, not followed.
        assert!(open_dir_below(&fd, Path::new("dl/root")).is_err());
        assert!(open_dir_below(&fd, Path::new("d")).is_ok());
    }

    #[test]
    fn a_file_swapped_for_a_symlink_is_not_read() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        fs::write(&outside, b"secret").unwrap();
        let root = t.path().join("root");
        fs::create_dir_all(root.join("d")).unwrap();
        fs::write(root.join("d/f"), b"mine!!").unwrap();
        let m = fs::symlink_metadata(root.join("d/f")).unwrap();
        let rel = Path::new("d/f");
        open_file_below(&root, rel, m.dev(), m.ino()).unwrap();
        // The file becomes a symlink to a file outside: refused.
        fs::remove_file(root.join("d/f")).unwrap();
        symlink(&outside, root.join("d/f")).unwrap();
        assert!(open_file_below(&root, rel, m.dev(), m.ino()).is_err());
        // Its directory becomes a symlink to a directory holding an 'f': refused.
        fs::remove_dir_all(root.join("d")).unwrap();
        let other = t.path().join("other");
        fs::create_dir(&other).unwrap();
        fs::write(other.join("f"), b"other!").unwrap();
        symlink(&other, root.join("d")).unwrap();
        assert!(open_file_below(&root, rel, m.dev(), m.ino()).is_err());
        // Another regular file in its place is refused too (not the file described).
        fs::remove_file(root.join("d")).unwrap();
        fs::create_dir(root.join("d")).unwrap();
        fs::write(root.join("d/f"), b"again!").unwrap();
        let again = fs::symlink_metadata(root.join("d/f")).unwrap();
        if again.ino() != m.ino() {
            assert!(open_file_below(&root, rel, m.dev(), m.ino()).is_err());
        }
    }
}
