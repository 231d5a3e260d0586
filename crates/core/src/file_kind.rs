//! What kind of file a name turned out to be, in the words error messages use. Every input
//! read whole (manifests, closure graphs, the layers JSON, a base image's documents) must be
//! a regular file or a pipe; what is refused is named the same way by every tool.

use std::fs::FileType;
use std::os::unix::fs::FileTypeExt;

/// `ft` as messages name it: "a directory", "a character device", "a pipe", …
pub fn name(ft: FileType) -> &'static str {
    if ft.is_file() {
        "a regular file"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symlink"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_fifo() {
        "a pipe"
    } else {
        "not a file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let kind = |p: &std::path::Path| name(std::fs::symlink_metadata(p).unwrap().file_type());
        assert_eq!(kind(&file), "a regular file");
        assert_eq!(kind(dir.path()), "a directory");
        assert_eq!(
            kind(std::path::Path::new("/dev/null")),
            "a character device"
        );
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(kind(&link), "a symlink");
        let socket = dir.path().join("s");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert_eq!(kind(&socket), "a socket");
        let (reader, _writer) = std::io::pipe().unwrap();
        let pipe = std::fs::File::from(std::os::fd::OwnedFd::from(reader));
        assert_eq!(name(pipe.metadata().unwrap().file_type()), "a pipe");
    }
}
