//! What kind of file a name turned out to be, in the words error messages use. Every input
//! read whole (manifests, closure graphs, the layers JSON, a base image's documents) must be
//! a regular file or a pipe, and a customisation root holds files, directories and symlinks
//! only; what is refused is named the same way by every tool, whether it was found through
//! `std::fs` or through the `rustix` calls that open entries beneath a root.

use rustix::fs::FileType;
use std::os::unix::fs::FileTypeExt;

/// `ft` as messages name it: "a directory", "a character device", "a pipe", …
pub fn of(ft: FileType) -> &'static str {
    match ft {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symlink",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Socket => "a socket",
        FileType::Fifo => "a pipe",
        FileType::Unknown => "an unknown kind of file",
    }
}

/// [`of`] for a file type from `std::fs`.
pub fn name(ft: std::fs::FileType) -> &'static str {
    of(if ft.is_file() {
        FileType::RegularFile
    } else if ft.is_dir() {
        FileType::Directory
    } else if ft.is_symlink() {
        FileType::Symlink
    } else if ft.is_char_device() {
        FileType::CharacterDevice
    } else if ft.is_block_device() {
        FileType::BlockDevice
    } else if ft.is_socket() {
        FileType::Socket
    } else if ft.is_fifo() {
        FileType::Fifo
    } else {
        FileType::Unknown
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn kinds_are_named_alike_from_std_and_rustix() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let socket = dir.path().join("s");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let both = |p: &Path| {
            let std_name = name(std::fs::symlink_metadata(p).unwrap().file_type());
            let st = rustix::fs::lstat(p).unwrap();
            (std_name, of(FileType::from_raw_mode(st.st_mode)))
        };
        let cases: [(&Path, &str); 5] = [
            (&file, "a regular file"),
            (dir.path(), "a directory"),
            (Path::new("/dev/null"), "a character device"),
            (&link, "a symlink"),
            (&socket, "a socket"),
        ];
        for (path, kind) in cases {
            assert_eq!(both(path), (kind, kind), "{}", path.display());
        }
        let (reader, _writer) = std::io::pipe().unwrap();
        let pipe = std::fs::File::from(std::os::fd::OwnedFd::from(reader));
        assert_eq!(name(pipe.metadata().unwrap().file_type()), "a pipe");
        assert_eq!(of(FileType::Fifo), "a pipe");
    }
}
