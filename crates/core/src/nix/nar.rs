//! NAR, the Nix ARchive: a canonical serialisation of a file system object. The writer streams
//! a tree in NAR order (names sorted bytewise, only the owner-execute bit kept, symlink targets
//! as raw bytes) and refuses special files; the reader is strict, accepting only NARs the writer
//! could have produced. Both report to a [`NarVisitor`], which lets one walk hash, scan and copy.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::threaded_io::{Buffered, LendingSink};

/// The first string of every NAR.
pub const MAGIC: &str = "nix-archive-1";

/// Errors writing or reading a NAR.
#[derive(Debug, thiserror::Error)]
pub enum NarError {
    #[error("file '{0}' has an unsupported type")]
    UnsupportedType(PathBuf),
    #[error("file '{0}' changed while it was being read")]
    Changed(PathBuf),
    #[error("cannot read '{path}': {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write NAR: {0}")]
    Write(#[source] io::Error),
    #[error("invalid NAR at byte {offset}: {reason}")]
    Invalid { offset: u64, reason: String },
    #[error("cannot restore '{path}': {source}")]
    Restore { path: PathBuf, source: io::Error },
}

/// Receives the entries of a tree in NAR order, with paths relative to the root (the root
/// itself is the empty path).
pub trait NarVisitor {
    fn directory(&mut self, _rel: &Path) -> io::Result<()> {
        Ok(())
    }
    fn file_start(&mut self, _rel: &Path, _executable: bool, _size: u64) -> io::Result<()> {
        Ok(())
    }
    fn file_data(&mut self, _data: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn file_end(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn symlink(&mut self, _rel: &Path, _target: &OsStr) -> io::Result<()> {
        Ok(())
    }
}

/// A visitor that does nothing (hash or scan only).
#[derive(Debug, Default)]
pub struct NoVisitor;
impl NarVisitor for NoVisitor {}

/// Streams NAR tokens to a sink.
struct TokenWriter<'a, W: Write + ?Sized> {
    out: &'a mut W,
}

impl<W: Write + ?Sized> TokenWriter<'_, W> {
    fn len_prefix(&mut self, len: u64) -> Result<(), NarError> {
        self.out
            .write_all(&len.to_le_bytes())
            .map_err(NarError::Write)
    }
    fn pad(&mut self, len: u64) -> Result<(), NarError> {
        let pad = padding(len);
        self.out
            .write_all(&[0u8; 8][..pad])
            .map_err(NarError::Write)
    }
    fn bytes(&mut self, data: &[u8]) -> Result<(), NarError> {
        self.len_prefix(data.len() as u64)?;
        self.out.write_all(data).map_err(NarError::Write)?;
        self.pad(data.len() as u64)
    }
    fn strs(&mut self, items: &[&str]) -> Result<(), NarError> {
        items.iter().try_for_each(|s| self.bytes(s.as_bytes()))
    }
}

fn padding(len: u64) -> usize {
    ((8 - len % 8) % 8) as usize
}

/// Size of the read buffer for file contents.
const CHUNK: usize = 256 * 1024;

/// Write the NAR of the file system object at `path` to `out`, reporting each entry to
/// `visitor`. Returns nothing: wrap `out` in a counting hasher to learn the hash and size.
pub fn dump_path(
    path: &Path,
    out: &mut (impl Write + ?Sized),
    visitor: &mut (impl NarVisitor + ?Sized),
) -> Result<(), NarError> {
    dump_path_into(path, &mut Buffered::new(out, CHUNK), visitor)
}

/// [`dump_path`] into a sink that lends its buffer for file contents, which are then read
/// straight into the memory the sink's consumer hashes.
pub fn dump_path_into(
    path: &Path,
    out: &mut (impl LendingSink + ?Sized),
    visitor: &mut (impl NarVisitor + ?Sized),
) -> Result<(), NarError> {
    let mut w = TokenWriter { out };
    w.strs(&[MAGIC])?;
    let mut rel = PathBuf::new();
    dump_node(path, &mut rel, &mut w, visitor)
}

fn visit_err(path: &Path) -> impl FnOnce(io::Error) -> NarError + '_ {
    move |source| NarError::Read {
        path: path.to_path_buf(),
        source,
    }
}

fn dump_node<W: LendingSink + ?Sized>(
    path: &Path,
    rel: &mut PathBuf,
    w: &mut TokenWriter<'_, W>,
    visitor: &mut (impl NarVisitor + ?Sized),
) -> Result<(), NarError> {
    let meta = fs::symlink_metadata(path).map_err(visit_err(path))?;
    let ft = meta.file_type();
    w.strs(&["(", "type"])?;
    if ft.is_file() {
        let executable = meta.permissions().mode() & 0o100 != 0;
        if executable {
            w.strs(&["regular", "executable", "", "contents"])?;
        } else {
            w.strs(&["regular", "contents"])?;
        }
        let size = meta.len();
        visitor
            .file_start(rel, executable, size)
            .map_err(visit_err(path))?;
        let mut file = fs::File::open(path).map_err(visit_err(path))?;
        w.len_prefix(size)?;
        let mut left = size;
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(usize::MAX);
            let room = w.out.room(want).map_err(NarError::Write)?;
            let n = file.read(room).map_err(visit_err(path))?;
            if n == 0 {
                return Err(NarError::Changed(path.to_path_buf()));
            }
            visitor.file_data(&room[..n]).map_err(visit_err(path))?;
            w.out.commit(n).map_err(NarError::Write)?;
            left -= n as u64;
        }
        if file.read(&mut [0u8; 1]).map_err(visit_err(path))? != 0 {
            return Err(NarError::Changed(path.to_path_buf()));
        }
        w.pad(size)?;
        visitor.file_end().map_err(visit_err(path))?;
    } else if ft.is_symlink() {
        let target = fs::read_link(path).map_err(visit_err(path))?;
        w.strs(&["symlink", "target"])?;
        w.bytes(target.as_os_str().as_bytes())?;
        visitor
            .symlink(rel, target.as_os_str())
            .map_err(visit_err(path))?;
    } else if ft.is_dir() {
        w.strs(&["directory"])?;
        visitor.directory(rel).map_err(visit_err(path))?;
        let mut names: Vec<OsString> = fs::read_dir(path)
            .map_err(visit_err(path))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(visit_err(path))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            w.strs(&["entry", "(", "name"])?;
            w.bytes(name.as_bytes())?;
            w.strs(&["node"])?;
            rel.push(&name);
            let child = path.join(&name);
            dump_node(&child, rel, w, visitor)?;
            rel.pop();
            w.strs(&[")"])?;
        }
    } else {
        return Err(NarError::UnsupportedType(path.to_path_buf()));
    }
    w.strs(&[")"])
}

/// The NAR of a single regular, non-executable file with these contents (what
/// `builtins.toFile` stores).
pub fn text_nar(contents: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(contents.len() + 128);
    let mut w = TokenWriter { out: &mut out };
    // Writing to a Vec cannot fail.
    let _ = w.strs(&[MAGIC, "(", "type", "regular", "contents"]);
    let _ = w.bytes(contents);
    let _ = w.strs(&[")"]);
    out
}

/// A strict NAR parser over any reader.
struct NarReader<R: Read> {
    input: R,
    offset: u64,
}

/// Longest name or symlink target the reader accepts (Linux's PATH_MAX).
const MAX_SHORT_STRING: u64 = 4096;

impl<R: Read> NarReader<R> {
    fn invalid(&self, reason: impl Into<String>) -> NarError {
        NarError::Invalid {
            offset: self.offset,
            reason: reason.into(),
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), NarError> {
        self.input.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                self.invalid("unexpected end of archive")
            } else {
                NarError::Invalid {
                    offset: self.offset,
                    reason: e.to_string(),
                }
            }
        })?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn read_u64(&mut self) -> Result<u64, NarError> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn read_padding(&mut self, len: u64) -> Result<(), NarError> {
        let pad = padding(len);
        let mut b = [0u8; 8];
        self.read_exact(&mut b[..pad])?;
        if b[..pad].iter().any(|&x| x != 0) {
            return Err(self.invalid("non-zero padding"));
        }
        Ok(())
    }

    fn read_short(&mut self) -> Result<Vec<u8>, NarError> {
        let len = self.read_u64()?;
        if len > MAX_SHORT_STRING {
            return Err(self.invalid(format!("string of {len} bytes is too long")));
        }
        let mut data = vec![0u8; len as usize];
        self.read_exact(&mut data)?;
        self.read_padding(len)?;
        Ok(data)
    }

    fn expect(&mut self, token: &str) -> Result<(), NarError> {
        let got = self.read_short()?;
        if got != token.as_bytes() {
            return Err(self.invalid(format!(
                "expected '{token}', found '{}'",
                String::from_utf8_lossy(&got)
            )));
        }
        Ok(())
    }

    fn node(&mut self, rel: &mut PathBuf, visitor: &mut impl NarVisitor) -> Result<(), NarError> {
        self.expect("(")?;
        self.expect("type")?;
        let ty = self.read_short()?;
        match ty.as_slice() {
            b"regular" => self.regular(rel, visitor),
            b"symlink" => self.symlink(rel, visitor),
            b"directory" => self.directory(rel, visitor),
            other => Err(self.invalid(format!(
                "unknown node type '{}'",
                String::from_utf8_lossy(other)
            ))),
        }
    }

    /// A regular file's node, after its type: `[executable ""] contents SIZE DATA )`.
    fn regular(&mut self, rel: &Path, visitor: &mut impl NarVisitor) -> Result<(), NarError> {
        let mut tag = self.read_short()?;
        let executable = tag == b"executable";
        if executable {
            if !self.read_short()?.is_empty() {
                return Err(self.invalid("executable marker must be empty"));
            }
            tag = self.read_short()?;
        }
        if tag != b"contents" {
            return Err(self.invalid("expected 'contents'"));
        }
        let size = self.read_u64()?;
        visitor
            .file_start(rel, executable, size)
            .map_err(restore_error(rel))?;
        let mut buf = vec![0u8; CHUNK.min(size as usize).max(1)];
        let mut left = size;
        while left > 0 {
            let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            self.read_exact(&mut buf[..n])?;
            visitor.file_data(&buf[..n]).map_err(restore_error(rel))?;
            left -= n as u64;
        }
        self.read_padding(size)?;
        visitor.file_end().map_err(restore_error(rel))?;
        self.expect(")")
    }

    /// A symlink's node, after its type: `target TARGET )`.
    fn symlink(&mut self, rel: &Path, visitor: &mut impl NarVisitor) -> Result<(), NarError> {
        self.expect("target")?;
        let target = self.read_short()?;
        if target.is_empty() || target.contains(&0) {
            return Err(self.invalid("invalid symlink target"));
        }
        visitor
            .symlink(rel, OsStr::from_bytes(&target))
            .map_err(restore_error(rel))?;
        self.expect(")")
    }

    /// A directory's node, after its type: `entry ( name NAME node NODE )`… `)`, the names
    /// sorted, distinct and real.
    fn directory(
        &mut self,
        rel: &mut PathBuf,
        visitor: &mut impl NarVisitor,
    ) -> Result<(), NarError> {
        visitor.directory(rel).map_err(restore_error(rel))?;
        let mut previous: Option<Vec<u8>> = None;
        loop {
            let tag = self.read_short()?;
            if tag == b")" {
                return Ok(());
            }
            if tag != b"entry" {
                return Err(self.invalid("expected 'entry' or ')'"));
            }
            self.expect("(")?;
            self.expect("name")?;
            let name = self.read_short()?;
            if name.is_empty()
                || name == b"."
                || name == b".."
                || name.contains(&b'/')
                || name.contains(&0)
            {
                return Err(self.invalid(format!(
                    "invalid entry name '{}'",
                    String::from_utf8_lossy(&name)
                )));
            }
            if previous.as_ref().is_some_and(|p| *p >= name) {
                return Err(self.invalid("directory entries are not sorted or repeat"));
            }
            self.expect("node")?;
            rel.push(OsStr::from_bytes(&name));
            self.node(rel, visitor)?;
            rel.pop();
            self.expect(")")?;
            previous = Some(name);
        }
    }
}

/// A visitor's error at `rel`, as a restore error naming it.
fn restore_error(rel: &Path) -> impl Fn(io::Error) -> NarError + '_ {
    move |source| NarError::Restore {
        path: rel.to_path_buf(),
        source,
    }
}

/// Parse a whole NAR from `input`, reporting every entry to `visitor`. Trailing bytes after
/// the archive are an error.
pub fn parse(input: impl Read, visitor: &mut impl NarVisitor) -> Result<(), NarError> {
    let mut r = NarReader { input, offset: 0 };
    r.expect(MAGIC)?;
    r.node(&mut PathBuf::new(), visitor)?;
    let mut extra = [0u8; 1];
    match r.input.read(&mut extra) {
        Ok(0) => Ok(()),
        Ok(_) => Err(r.invalid("trailing data after the archive")),
        Err(e) => Err(NarError::Invalid {
            offset: r.offset,
            reason: e.to_string(),
        }),
    }
}

/// Writes the entries it is shown as real files under `dest` (which must not exist yet):
/// used to restore a NAR and to copy a tree while dumping it.
#[derive(Debug)]
pub struct Restorer {
    dest: PathBuf,
    file: Option<fs::File>,
    canonical: bool,
}

/// The modification time every file in a Nix store has (1 second after the epoch).
pub const CANONICAL_MTIME_SECS: u64 = 1;

impl Restorer {
    /// Files get ordinary modes (0644, or 0755 when executable).
    pub fn new(dest: &Path) -> Restorer {
        Restorer {
            dest: dest.to_path_buf(),
            file: None,
            canonical: false,
        }
    }

    /// Files get a store's canonical metadata as they are written: mode 0444 (0555 when
    /// executable) and mtime 1. Directories and symlinks are left to the caller, since a
    /// directory's mtime changes until its last entry is made.
    pub fn canonical(dest: &Path) -> Restorer {
        Restorer {
            dest: dest.to_path_buf(),
            file: None,
            canonical: true,
        }
    }

    fn target(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.dest.clone()
        } else {
            self.dest.join(rel)
        }
    }
}

impl NarVisitor for Restorer {
    fn directory(&mut self, rel: &Path) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new().mode(0o755).create(self.target(rel))
    }
    fn file_start(&mut self, rel: &Path, executable: bool, _size: u64) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mode = match (self.canonical, executable) {
            (true, true) => 0o555,
            (true, false) => 0o444,
            (false, true) => 0o755,
            (false, false) => 0o644,
        };
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(self.target(rel))?;
        // The umask may have removed bits.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        self.file = Some(f);
        Ok(())
    }
    fn file_data(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.write_all(data),
            None => Err(io::Error::other("file data outside a file")),
        }
    }
    fn file_end(&mut self) -> io::Result<()> {
        match self.file.take() {
            Some(f) if self.canonical => {
                let t =
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(CANONICAL_MTIME_SECS);
                f.set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))
            }
            _ => Ok(()),
        }
    }
    fn symlink(&mut self, rel: &Path, target: &OsStr) -> io::Result<()> {
        std::os::unix::fs::symlink(target, self.target(rel))
    }
}

/// Restore a NAR into `dest`, which must not exist.
pub fn restore(input: impl Read, dest: &Path) -> Result<(), NarError> {
    parse(input, &mut Restorer::new(dest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nar_of(path: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        dump_path(path, &mut out, &mut NoVisitor).unwrap();
        out
    }

    #[test]
    fn text_nar_matches_dump() {
        let dir = std::env::temp_dir().join(format!("strata-nar-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("f");
        fs::write(&f, b"dep contents\n").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(nar_of(&f), text_nar(b"dep contents\n"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn round_trip_through_restore() {
        let dir = std::env::temp_dir().join(format!("strata-nar-rt-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let src = dir.join("src");
        fs::create_dir_all(src.join("sub/deeper")).unwrap();
        fs::write(src.join("sub/a"), vec![7u8; 300_000]).unwrap();
        fs::write(src.join("x"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(src.join("x"), fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink("sub/a", src.join("link")).unwrap();
        std::os::unix::fs::symlink("/nowhere", src.join("dangling")).unwrap();
        let nar = nar_of(&src);
        let dst = dir.join("dst");
        restore(nar.as_slice(), &dst).unwrap();
        assert_eq!(nar_of(&dst), nar);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reader_rejects_damage() {
        let good = text_nar(b"abc");
        assert!(parse(good.as_slice(), &mut NoVisitor).is_ok());
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0; 8]);
        assert!(parse(trailing.as_slice(), &mut NoVisitor).is_err());
        let truncated = &good[..good.len() - 3];
        assert!(parse(truncated, &mut NoVisitor).is_err());
        let mut bad_pad = good.clone();
        let at = good.len() - 16 - 5; // inside the padding after "abc"
        bad_pad[at] = 1;
        assert!(parse(bad_pad.as_slice(), &mut NoVisitor).is_err());
    }
}
