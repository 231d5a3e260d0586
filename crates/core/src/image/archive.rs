//! Where an image is written: one tar that is both a docker-archive (`manifest.json`) and an
//! OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`), or either alone, or an
//! OCI layout directory.
//!
//! Blobs are streamed once: a layer's bytes go straight into the output while they are hashed.
//! In a tar, the 512-byte header of `blobs/sha256/<digest>` is reserved before the blob and
//! written once the digest is known (the output is a seekable file: `-o FILE`'s temporary file,
//! or a temporary file copied to stdout). In a directory, a blob is written to a temporary
//! name and renamed to its digest.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::tar::{BLOCK, Entry, EntryKind, Owner, RECORD, Source, header};

pub use crate::hashing::{Digester, Tee, hex};

/// What the output holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Format {
    /// docker-archive and OCI layout in one tar (the default).
    #[cfg_attr(
        feature = "clap",
        value(help = "One tar that is both a docker-archive and an OCI layout")
    )]
    DockerOci,
    /// docker-archive only (`manifest.json`).
    #[cfg_attr(
        feature = "clap",
        value(help = "docker-archive (`manifest.json`) only")
    )]
    Docker,
    /// OCI image layout as a tar (`oci-archive`).
    #[cfg_attr(feature = "clap", value(help = "OCI layout tar (`oci-archive`) only"))]
    Oci,
    /// OCI image layout as a directory.
    #[cfg_attr(feature = "clap", value(help = "OCI layout directory (`-o DIR`)"))]
    OciDir,
}

impl Format {
    pub fn has_docker(self) -> bool {
        matches!(self, Format::DockerOci | Format::Docker)
    }
    pub fn has_oci(self) -> bool {
        !matches!(self, Format::Docker)
    }
}

/// The output being written.
#[derive(Debug)]
pub enum Sink {
    Tar(TarSink),
    Dir(DirSink),
}

/// An output tar in a seekable file.
#[derive(Debug)]
pub struct TarSink {
    file: File,
    pos: u64,
    owner: Owner,
    names: BTreeSet<String>,
    pending: Option<u64>,
}

/// An OCI layout directory.
#[derive(Debug)]
pub struct DirSink {
    dir: PathBuf,
    pending: Option<(PathBuf, File)>,
    counter: u64,
}

impl Sink {
    /// A tar written to `file` (empty, seekable), entries owned by root with `mtime`.
    pub fn tar(file: File, mtime: u64) -> io::Result<Sink> {
        let mut sink = TarSink {
            file,
            pos: 0,
            owner: Owner {
                mtime,
                ..Owner::default()
            },
            names: BTreeSet::new(),
            pending: None,
        };
        sink.dir("blobs")?;
        sink.dir("blobs/sha256")?;
        Ok(Sink::Tar(sink))
    }

    /// A layout directory at `dir` (created, must not hold another layout).
    pub fn dir(dir: &Path) -> io::Result<Sink> {
        fs::create_dir_all(dir.join("blobs/sha256"))?;
        Ok(Sink::Dir(DirSink {
            dir: dir.to_path_buf(),
            pending: None,
            counter: 0,
        }))
    }

    /// Start a blob whose digest is not known yet; write its bytes to [`Sink::blob_writer`].
    pub fn begin_blob(&mut self) -> io::Result<()> {
        match self {
            Sink::Tar(t) => {
                t.pending = Some(t.pos);
                t.file.write_all(&[0u8; BLOCK as usize])?;
                Ok(())
            }
            Sink::Dir(d) => {
                d.counter += 1;
                let tmp = d.dir.join(format!("blobs/sha256/.tmp-{}", d.counter));
                let file = File::create(&tmp)?;
                d.pending = Some((tmp, file));
                Ok(())
            }
        }
    }

    /// Where the bytes of the blob being written go.
    pub fn blob_writer(&mut self) -> &mut File {
        match self {
            Sink::Tar(t) => &mut t.file,
            Sink::Dir(d) => match &mut d.pending {
                Some((_, f)) => f,
                None => unreachable_blob(),
            },
        }
    }

    /// Finish the blob begun last: `size` bytes were written, `digest` is their hex SHA-256.
    /// A blob already in the output is dropped.
    pub fn end_blob(&mut self, digest: &str, size: u64) -> io::Result<()> {
        match self {
            Sink::Tar(t) => {
                let start = t.pending.take().unwrap_or(t.pos);
                let name = format!("blobs/sha256/{digest}");
                if !t.names.insert(name.clone()) {
                    t.file.set_len(start)?;
                    t.file.seek(SeekFrom::Start(start))?;
                    t.pos = start;
                    return Ok(());
                }
                let pad = (BLOCK - size % BLOCK) % BLOCK;
                t.file.write_all(&vec![0u8; pad as usize])?;
                let end = start + BLOCK + size + pad;
                let h = t.header(&name, size);
                t.file.seek(SeekFrom::Start(start))?;
                t.file.write_all(&h)?;
                t.file.seek(SeekFrom::Start(end))?;
                t.pos = end;
                Ok(())
            }
            Sink::Dir(d) => {
                let Some((tmp, file)) = d.pending.take() else {
                    unreachable_blob()
                };
                file.sync_data().ok();
                drop(file);
                let dest = d.dir.join(format!("blobs/sha256/{digest}"));
                if dest.exists() {
                    fs::remove_file(&tmp)
                } else {
                    fs::rename(&tmp, dest)
                }
            }
        }
    }

    /// Drop the blob begun last (its bytes were not what they should be).
    pub fn abort_blob(&mut self) -> io::Result<()> {
        match self {
            Sink::Tar(t) => {
                let start = t.pending.take().unwrap_or(t.pos);
                t.file.set_len(start)?;
                t.file.seek(SeekFrom::Start(start))?;
                t.pos = start;
                Ok(())
            }
            Sink::Dir(d) => match d.pending.take() {
                Some((tmp, file)) => {
                    drop(file);
                    fs::remove_file(tmp)
                }
                None => Ok(()),
            },
        }
    }

    /// A whole blob from a file (a cached layer), checked while copied; see [`copy_blob`].
    pub fn copy_blob(&mut self, from: &Path, digest: &str, size: u64) -> io::Result<bool> {
        copy_blob(self, from, digest, size)
    }

    /// A small blob held in memory (a config or manifest); returns its hex digest.
    pub fn put_blob(&mut self, data: &[u8]) -> io::Result<String> {
        let digest = hex(&Sha256::digest(data));
        self.begin_blob()?;
        self.blob_writer().write_all(data)?;
        self.end_blob(&digest, data.len() as u64)?;
        Ok(digest)
    }

    /// A file at the top of the layout (`index.json`, `manifest.json`, `oci-layout`).
    pub fn put_file(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        match self {
            Sink::Tar(t) => {
                let h = t.header(name, data.len() as u64);
                t.file.write_all(&h)?;
                t.file.write_all(data)?;
                let pad = (BLOCK - data.len() as u64 % BLOCK) % BLOCK;
                t.file.write_all(&vec![0u8; pad as usize])?;
                t.pos += h.len() as u64 + data.len() as u64 + pad;
                Ok(())
            }
            Sink::Dir(d) => {
                let tmp = d.dir.join(format!(".{name}.tmp"));
                fs::write(&tmp, data)?;
                fs::rename(tmp, d.dir.join(name))
            }
        }
    }

    /// Close the archive (end blocks and record padding) and hand back the file, if a tar.
    pub fn finish(self) -> io::Result<Option<File>> {
        match self {
            Sink::Tar(mut t) => {
                let m = t.pos + 2 * BLOCK;
                let tail = 2 * BLOCK + (RECORD - m % RECORD) % RECORD;
                t.file.write_all(&vec![0u8; tail as usize])?;
                t.file.flush()?;
                Ok(Some(t.file))
            }
            Sink::Dir(_) => Ok(None),
        }
    }
}

/// Where a sink writes a layer blob whose digest is known only at its end: the plan streams
/// a layer into it ([`super::plan::ImagePlan::write_layer`]).
pub trait BlobOut {
    /// Start a blob whose digest is not known yet; write its bytes to [`BlobOut::blob_writer`].
    fn begin_blob(&mut self) -> io::Result<()>;
    /// Where the bytes of the blob being written go.
    fn blob_writer(&mut self) -> &mut (dyn Write + Send);
    /// Finish the blob begun last: `size` bytes were written, `digest` is their hex SHA-256.
    fn end_blob(&mut self, digest: &str, size: u64) -> io::Result<()>;
    /// Drop the blob begun last (its bytes were not what they should be).
    fn abort_blob(&mut self) -> io::Result<()>;
}

impl BlobOut for Sink {
    fn begin_blob(&mut self) -> io::Result<()> {
        Sink::begin_blob(self)
    }
    fn blob_writer(&mut self) -> &mut (dyn Write + Send) {
        Sink::blob_writer(self)
    }
    fn end_blob(&mut self, digest: &str, size: u64) -> io::Result<()> {
        Sink::end_blob(self, digest, size)
    }
    fn abort_blob(&mut self) -> io::Result<()> {
        Sink::abort_blob(self)
    }
}

/// A whole blob from a file (a cached layer), hashed while it is copied: `Ok(false)`, and
/// nothing written, if it cannot be opened or is not `size` bytes with the SHA-256 `digest`.
/// Errors are the output's (or a read failing midway).
pub fn copy_blob(out: &mut dyn BlobOut, from: &Path, digest: &str, size: u64) -> io::Result<bool> {
    let Ok(mut src) = File::open(from) else {
        return Ok(false);
    };
    out.begin_blob()?;
    let mut w = Digester::new(out.blob_writer());
    let copied = io::copy(&mut (&mut src).take(size + 1), &mut w);
    let (got, n, _) = w.finish();
    match copied {
        Ok(_) if n == size && got == digest => {
            out.end_blob(digest, size)?;
            Ok(true)
        }
        Ok(_) => {
            out.abort_blob()?;
            Ok(false)
        }
        Err(e) => {
            let _ = out.abort_blob();
            Err(e)
        }
    }
}

fn unreachable_blob() -> ! {
    panic!("blob_writer called without begin_blob")
}

impl TarSink {
    fn header(&self, name: &str, size: u64) -> Vec<u8> {
        let source = Source::Path(PathBuf::new());
        header(&Entry::new(
            name.as_bytes().to_vec(),
            EntryKind::File { source, size },
            0o644,
            &self.owner,
        ))
    }

    fn dir(&mut self, name: &str) -> io::Result<()> {
        let h = header(&Entry::dir(name.as_bytes(), 0o755, &self.owner));
        self.file.write_all(&h)?;
        self.pos += h.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_sink_backfills_headers_and_drops_duplicates() {
        let t = tempfile::tempdir().unwrap();
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(t.path().join("out.tar"))
            .unwrap();
        let mut sink = Sink::tar(file, 1).unwrap();
        let d1 = sink.put_blob(b"hello").unwrap();
        let d2 = sink.put_blob(b"hello").unwrap();
        assert_eq!(d1, d2);
        sink.put_file("oci-layout", b"{}").unwrap();
        let mut file = sink.finish().unwrap().unwrap();
        file.seek(SeekFrom::Start(0)).unwrap();
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes.len() as u64 % RECORD, 0);
        let mut archive = ::tar::Archive::new(bytes.as_slice());
        let mut names = Vec::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            if name.ends_with(&d1) {
                assert_eq!(body, b"hello");
            }
            names.push(name);
        }
        assert_eq!(
            names,
            [
                "blobs/".to_string(),
                "blobs/sha256/".to_string(),
                format!("blobs/sha256/{d1}"),
                "oci-layout".to_string()
            ]
        );
    }

    #[test]
    fn a_copied_blob_is_checked_against_its_digest() {
        let t = tempfile::tempdir().unwrap();
        let blob = t.path().join("blob");
        fs::write(&blob, b"layer bytes").unwrap();
        let good = hex(&Sha256::digest(b"layer bytes"));
        let bad = hex(&Sha256::digest(b"other bytes"));
        let out = t.path().join("out.tar");
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&out)
            .unwrap();
        let mut sink = Sink::tar(file, 1).unwrap();
        assert!(!sink.copy_blob(&t.path().join("gone"), &good, 11).unwrap());
        assert!(!sink.copy_blob(&blob, &bad, 11).unwrap());
        assert!(!sink.copy_blob(&blob, &good, 10).unwrap());
        assert!(sink.copy_blob(&blob, &good, 11).unwrap());
        sink.finish().unwrap();
        let names: Vec<String> = ::tar::Archive::new(File::open(&out).unwrap())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            ["blobs/", "blobs/sha256/", &format!("blobs/sha256/{good}")]
        );
        // In a directory the same.
        let dir = t.path().join("layout");
        let mut sink = Sink::dir(&dir).unwrap();
        assert!(!sink.copy_blob(&blob, &bad, 11).unwrap());
        assert!(sink.copy_blob(&blob, &good, 11).unwrap());
        let blobs: Vec<_> = fs::read_dir(dir.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(blobs, [good]);
    }
}
