//! Where the image is written, and what `-o` may replace. Only a regular file (or nothing)
//! is replaced: the image goes to a temporary file beside it, which is renamed over it when
//! complete. A FIFO or a character device (a pipe's reader, `/dev/null`, a tty) and anything
//! reached through `/proc` (`/dev/stdout` is a link to `/proc/self/fd/1`) are written as a
//! stream, never renamed over. A symlink is written through: the file it leads to is replaced
//! (or created), the link stays. A directory, block device or socket is refused.
//!
//! The archive is assembled in a seekable file (a layer's tar header is written after its
//! bytes): the temporary file beside the output, or for a stream an unlinked temporary file
//! copied into it at the end.

use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::archive::Sink;
use super::temp::{Temp, reclaim};
use super::{Format, ImageError, Output};

/// The prefix of temporary outputs (`.mkimage-XXXXXX.tmp`) beside `-o`.
pub(crate) const TEMP_PREFIX: &str = ".mkimage-";

/// Symlinks followed before giving up, as the kernel does (`ELOOP`).
const MAX_LINKS: usize = 40;

/// How `-o PATH` is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolved {
    /// A regular file or nothing at this path (symlinks resolved): replaced by a rename.
    Replace(PathBuf),
    /// Opened and written as a stream: a FIFO, a character device, a `/proc` link.
    Stream(PathBuf),
}

fn invalid(shown: &Path, why: impl std::fmt::Display) -> ImageError {
    ImageError::Invalid(format!("-o '{}': {why}", shown.display()))
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether `path` names something in procfs (its directory resolves under `/proc`): a link
/// there is a descriptor's "magic" link, not a path to follow by name.
fn in_proc(path: &Path) -> bool {
    fs::canonicalize(parent_of(path)).is_ok_and(|dir| dir.starts_with("/proc"))
}

/// Follow `path` hop by hop (each link read, never opened) to what it names.
pub(crate) fn resolve(path: &Path) -> Result<Resolved, ImageError> {
    let mut p = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        let meta = match fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Resolved::Replace(p)),
            Err(e) => return Err(ImageError::Io { path: p, source: e }),
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            if in_proc(&p) {
                return Ok(Resolved::Stream(path.to_path_buf()));
            }
            let target = fs::read_link(&p).map_err(ImageError::io(&p))?;
            p = parent_of(&p).join(target);
        } else if ft.is_file() {
            return Ok(Resolved::Replace(p));
        } else if ft.is_fifo() || ft.is_char_device() {
            return Ok(Resolved::Stream(p));
        } else if ft.is_dir() {
            return Err(invalid(
                path,
                "is a directory (--format oci-dir makes a new directory)",
            ));
        } else if ft.is_block_device() {
            return Err(invalid(
                path,
                "is a block device; give a file, a FIFO or a character device",
            ));
        } else {
            return Err(invalid(
                path,
                "is a socket; give a file, a FIFO or a character device",
            ));
        }
    }
    Err(invalid(path, "too many levels of symbolic links"))
}

/// The output being written, removed unless [`Target::persist`] is reached.
#[derive(Debug)]
pub(crate) enum Target {
    /// Assembled in an unlinked temporary file, then copied to `to` (`None`: stdout).
    Stream {
        file: File,
        to: Option<(File, PathBuf)>,
    },
    File(Temp, PathBuf),
    Dir(Temp, PathBuf),
}

impl Target {
    pub(crate) fn open(
        output: &Output,
        format: Format,
        mtime: u64,
    ) -> Result<(Target, Sink), ImageError> {
        let stream = ImageError::stream;
        let unlinked = || -> Result<(File, Sink), ImageError> {
            let file = tempfile::tempfile().map_err(stream)?;
            let sink = Sink::tar(file.try_clone().map_err(stream)?, mtime).map_err(stream)?;
            Ok((file, sink))
        };
        match output {
            Output::Dir(dir) => {
                if format != Format::OciDir {
                    return Err(ImageError::Invalid(
                        "a directory output needs --format oci-dir".into(),
                    ));
                }
                if fs::symlink_metadata(dir).is_ok() {
                    return Err(ImageError::Invalid(format!(
                        "'{}' exists; oci-dir output makes a new directory",
                        dir.display()
                    )));
                }
                let parent = parent_of(dir);
                reclaim(&parent, TEMP_PREFIX);
                let tmp = Temp::dir(&parent, TEMP_PREFIX).map_err(ImageError::io(&parent))?;
                fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o777))
                    .map_err(ImageError::io(tmp.path()))?;
                let sink = Sink::dir(tmp.path()).map_err(ImageError::io(tmp.path()))?;
                Ok((Target::Dir(tmp, dir.clone()), sink))
            }
            _ if format == Format::OciDir => Err(ImageError::Invalid(
                "--format oci-dir writes a directory: give -o DIR".into(),
            )),
            Output::File(path) => match resolve(path)? {
                Resolved::Replace(dest) => {
                    let parent = parent_of(&dest);
                    reclaim(&parent, TEMP_PREFIX);
                    // 0666 less the umask, like any file a tool writes.
                    let tmp = Temp::file(&parent, TEMP_PREFIX).map_err(ImageError::io(&parent))?;
                    let file = tmp.file_handle().try_clone().map_err(stream)?;
                    let sink = Sink::tar(file, mtime).map_err(stream)?;
                    Ok((Target::File(tmp, dest), sink))
                }
                Resolved::Stream(dest) => {
                    // Opened now, so a bad output fails before the store is read (a FIFO
                    // waits here for its reader).
                    let to = open_stream(&dest)?;
                    let (file, sink) = unlinked()?;
                    Ok((
                        Target::Stream {
                            file,
                            to: Some((to, dest)),
                        },
                        sink,
                    ))
                }
            },
            Output::Stdout => {
                let (file, sink) = unlinked()?;
                Ok((Target::Stream { file, to: None }, sink))
            }
        }
    }

    pub(crate) fn persist(self) -> Result<(), ImageError> {
        match self {
            Target::Stream { mut file, to } => {
                file.seek(SeekFrom::Start(0)).map_err(ImageError::stream)?;
                match to {
                    None => {
                        let stdout = io::stdout();
                        let mut out = stdout.lock();
                        io::copy(&mut file, &mut out)
                            .and_then(|_| out.flush())
                            .map_err(|e| ImageError::Stream(format!("stdout: {e}")))?;
                    }
                    Some((mut out, dest)) => {
                        io::copy(&mut file, &mut out)
                            .and_then(|_| out.flush())
                            .map_err(ImageError::io(&dest))?;
                    }
                }
                Ok(())
            }
            Target::File(tmp, path) => {
                tmp.file_handle()
                    .sync_all()
                    .map_err(ImageError::io(&path))?;
                tmp.persist(&path).map_err(ImageError::io(&path))
            }
            Target::Dir(tmp, path) => tmp.persist(&path).map_err(ImageError::io(&path)),
        }
    }
}

/// Open a stream output for writing, without creating anything. What it turns out to be
/// is checked on the open descriptor: a regular file behind a `/proc` link (stdout
/// redirected to a file) is truncated; a directory is refused.
fn open_stream(dest: &Path) -> Result<File, ImageError> {
    let file = File::options()
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
        .open(dest)
        .map_err(ImageError::io(dest))?;
    let meta = file.metadata().map_err(ImageError::io(dest))?;
    if meta.is_file() {
        file.set_len(0).map_err(ImageError::io(dest))?;
    } else if meta.is_dir() || meta.file_type().is_block_device() {
        return Err(invalid(dest, "is not a file, a FIFO or a character device"));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn what_o_replaces_and_what_it_streams_into() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        let missing = d.join("new.tar");
        assert_eq!(
            resolve(&missing).unwrap(),
            Resolved::Replace(missing.clone())
        );
        fs::write(d.join("file"), b"x").unwrap();
        assert_eq!(
            resolve(&d.join("file")).unwrap(),
            Resolved::Replace(d.join("file"))
        );
        // Links are followed hop by hop to the file (or the free name) they lead to.
        symlink("file", d.join("l1")).unwrap();
        symlink(d.join("l1"), d.join("l2")).unwrap();
        assert_eq!(
            resolve(&d.join("l2")).unwrap(),
            Resolved::Replace(d.join("file"))
        );
        symlink("nothing", d.join("dangling")).unwrap();
        assert_eq!(
            resolve(&d.join("dangling")).unwrap(),
            Resolved::Replace(d.join("nothing"))
        );
        // Devices and /proc links are streams.
        assert_eq!(
            resolve(Path::new("/dev/null")).unwrap(),
            Resolved::Stream(PathBuf::from("/dev/null"))
        );
        symlink("/dev/null", d.join("null")).unwrap();
        assert_eq!(
            resolve(&d.join("null")).unwrap(),
            Resolved::Stream(PathBuf::from("/dev/null"))
        );
        assert_eq!(
            resolve(Path::new("/dev/stdout")).unwrap(),
            Resolved::Stream(PathBuf::from("/dev/stdout"))
        );
        symlink("/proc/self/fd/2", d.join("err")).unwrap();
        assert_eq!(
            resolve(&d.join("err")).unwrap(),
            Resolved::Stream(d.join("err"))
        );
        // A directory is refused; a loop too.
        assert!(resolve(d).is_err());
        symlink("loop", d.join("loop")).unwrap();
        assert!(
            resolve(&d.join("loop"))
                .unwrap_err()
                .to_string()
                .contains("too many levels")
        );
    }
}
