//! The normalised layer tar: the exact bytes of nixpkgs' `stream_layered_image.py` for store
//! layers (POSIX.1-2001 headers with a pax extended header only where ustar cannot hold a
//! value, fixed mtime and ownership, hard links written as regular files, 10240-byte records),
//! produced from a list of [`Entry`]s whose file sizes come from `lstat`.
//!
//! Header rules (those of CPython's `tarfile` in its default PAX format, which the reference
//! uses): `name` is the entry name with a `/` appended for directories; a pax `x` header named
//! `././@PaxHeader` precedes the ustar header when the name or link target is longer than 100
//! characters or not ASCII, when the user/group name is longer than 32 or not ASCII, or when
//! a number does not fit its octal field. The ustar header then holds the name truncated to
//! 100 bytes with every non-ASCII character written `?`, and 0 for a number that did not fit.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use crate::threaded_io::{Buffered, LendingSink};

/// Tar block size.
pub const BLOCK: u64 = 512;
/// Tar record size: the archive is padded to a multiple of this.
pub const RECORD: u64 = 10240;

/// Where a regular file's bytes are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file at a path (a store file); a symlink in its last component is not followed.
    Path(PathBuf),
    /// The file `rel` below the directory `root`, which others could change while the layer
    /// is written (the customisation root): opened component by component without following
    /// a symlink, and read only if it is still the file `dev`/`ino` that was described.
    Below {
        root: PathBuf,
        rel: PathBuf,
        dev: u64,
        ino: u64,
    },
}

impl Source {
    /// The path, for messages.
    pub fn display(&self) -> std::path::Display<'_> {
        match self {
            Source::Path(p) => p.display(),
            Source::Below { rel, .. } => rel.display(),
        }
    }

    /// Open for reading, never through a symlink where the kind says so; must be a regular
    /// file.
    fn open(&self) -> io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        match self {
            Source::Path(path) => {
                let file = File::options()
                    .read(true)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(path)?;
                if !file.metadata()?.is_file() {
                    return Err(io::Error::other("not a regular file"));
                }
                Ok(file)
            }
            Source::Below {
                root,
                rel,
                dev,
                ino,
            } => super::beneath::open_file_below(root, rel, *dev, *ino),
        }
    }
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    /// A regular file: its bytes are read from `source`, exactly `size` of them.
    File {
        source: Source,
        size: u64,
    },
    Symlink {
        target: Vec<u8>,
    },
}

/// One member of a layer, fully normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Name in the archive, as bytes, without the trailing `/` of directories.
    pub name: Vec<u8>,
    pub kind: EntryKind,
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub uname: String,
    pub gname: String,
    pub mtime: u64,
}

/// Fixed metadata every entry of a layer gets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub uid: u64,
    pub gid: u64,
    pub uname: String,
    pub gname: String,
    pub mtime: u64,
}

impl Default for Owner {
    fn default() -> Self {
        Owner {
            uid: 0,
            gid: 0,
            uname: "root".into(),
            gname: "root".into(),
            mtime: 1,
        }
    }
}

impl Entry {
    pub fn dir(name: impl Into<Vec<u8>>, mode: u32, owner: &Owner) -> Entry {
        Entry::new(name.into(), EntryKind::Dir, mode, owner)
    }

    pub fn new(name: Vec<u8>, kind: EntryKind, mode: u32, owner: &Owner) -> Entry {
        Entry {
            name,
            kind,
            mode: mode & 0o7777,
            uid: owner.uid,
            gid: owner.gid,
            uname: owner.uname.clone(),
            gname: owner.gname.clone(),
            mtime: owner.mtime,
        }
    }

    /// Bytes of file content this entry carries.
    pub fn size(&self) -> u64 {
        match &self.kind {
            EntryKind::File { size, .. } => *size,
            _ => 0,
        }
    }
}

/// Characters of a name as CPython counts them after decoding with `surrogateescape`: one
/// per code point of valid UTF-8, one per byte that is not.
fn char_count_and_ascii(bytes: &[u8]) -> (usize, bool) {
    let mut count = 0;
    for chunk in bytes.utf8_chunks() {
        count += chunk.valid().chars().count() + chunk.invalid().len();
    }
    (count, bytes.is_ascii())
}

/// The ustar form of a string field: non-ASCII characters become `?`, then truncated.
fn ascii_replace(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            out.push(if c.is_ascii() { c as u8 } else { b'?' });
        }
        out.extend(std::iter::repeat_n(b'?', chunk.invalid().len()));
    }
    out
}

fn put_str(block: &mut [u8], at: usize, len: usize, value: &[u8]) {
    let v = ascii_replace(value);
    let n = v.len().min(len);
    block[at..at + n].copy_from_slice(&v[..n]);
}

/// An octal number field of `digits` bytes: `digits - 1` zero-padded octal digits and NUL.
fn put_octal(block: &mut [u8], at: usize, digits: usize, value: u64) {
    let text = format!("{:0width$o}", value, width = digits - 1);
    block[at..at + digits - 1].copy_from_slice(text.as_bytes());
    block[at + digits - 1] = 0;
}

struct Fields<'a> {
    name: &'a [u8],
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    typeflag: u8,
    linkname: &'a [u8],
    uname: &'a [u8],
    gname: &'a [u8],
}

fn ustar_block(f: &Fields<'_>) -> [u8; 512] {
    let mut b = [0u8; 512];
    put_str(&mut b, 0, 100, f.name);
    put_octal(&mut b, 100, 8, u64::from(f.mode & 0o7777));
    put_octal(&mut b, 108, 8, f.uid);
    put_octal(&mut b, 116, 8, f.gid);
    put_octal(&mut b, 124, 12, f.size);
    put_octal(&mut b, 136, 12, f.mtime);
    b[148..156].copy_from_slice(b"        ");
    b[156] = f.typeflag;
    put_str(&mut b, 157, 100, f.linkname);
    b[257..265].copy_from_slice(b"ustar\x0000");
    put_str(&mut b, 265, 32, f.uname);
    put_str(&mut b, 297, 32, f.gname);
    // devmajor, devminor, prefix: all NUL.
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    let text = format!("{sum:06o}\0");
    b[148..155].copy_from_slice(text.as_bytes());
    b
}

/// The length-prefixed pax record `LEN key=value\n`, whose LEN counts itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let base = key.len() + value.len() + 3;
    let mut len = base;
    loop {
        let next = base + len.to_string().len();
        if next == len {
            break;
        }
        len = next;
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

fn pad_to_block(n: u64) -> u64 {
    (BLOCK - n % BLOCK) % BLOCK
}

/// The header blocks (pax header if needed, then ustar) of an entry.
pub fn header(e: &Entry) -> Vec<u8> {
    let mut name = e.name.clone();
    if matches!(e.kind, EntryKind::Dir) && !name.ends_with(b"/") {
        name.push(b'/');
    }
    let (typeflag, linkname): (u8, &[u8]) = match &e.kind {
        EntryKind::Dir => (b'5', b""),
        EntryKind::File { .. } => (b'0', b""),
        EntryKind::Symlink { target } => (b'2', target),
    };
    let mut pax: Vec<(&str, Vec<u8>)> = Vec::new();
    for (key, value, max) in [
        ("path", name.as_slice(), 100),
        ("linkpath", linkname, 100),
        ("uname", e.uname.as_bytes(), 32),
        ("gname", e.gname.as_bytes(), 32),
    ] {
        let (chars, ascii) = char_count_and_ascii(value);
        if !ascii || chars > max {
            pax.push((key, value.to_vec()));
        }
    }
    let mut numbers = [
        ("uid", e.uid, 8usize),
        ("gid", e.gid, 8),
        ("size", e.size(), 12),
        ("mtime", e.mtime, 12),
    ];
    for (key, value, digits) in numbers.iter_mut() {
        if *value >= 8u64.pow(*digits as u32 - 1) {
            pax.push((key, value.to_string().into_bytes()));
            *value = 0;
        }
    }
    let mut out = Vec::with_capacity(1024);
    if !pax.is_empty() {
        let mut records = Vec::new();
        if pax.iter().any(|(_, v)| std::str::from_utf8(v).is_err()) {
            records.extend_from_slice(b"21 hdrcharset=BINARY\n");
        }
        for (key, value) in &pax {
            records.extend(pax_record(key, value));
        }
        out.extend_from_slice(&ustar_block(&Fields {
            name: b"././@PaxHeader",
            mode: 0,
            uid: 0,
            gid: 0,
            size: records.len() as u64,
            mtime: 0,
            typeflag: b'x',
            linkname: b"",
            uname: b"",
            gname: b"",
        }));
        let pad = pad_to_block(records.len() as u64) as usize;
        out.extend_from_slice(&records);
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend_from_slice(&ustar_block(&Fields {
        name: &name,
        mode: e.mode,
        uid: numbers[0].1,
        gid: numbers[1].1,
        size: numbers[2].1,
        mtime: numbers[3].1,
        typeflag,
        linkname,
        uname: e.uname.as_bytes(),
        gname: e.gname.as_bytes(),
    }));
    out
}

/// The size of the archive [`write_layer`] writes for `entries`, known before any file is
/// read.
pub fn layer_size(entries: &[Entry]) -> u64 {
    let mut n = 0;
    for e in entries {
        n += header(e).len() as u64 + e.size() + pad_to_block(e.size());
    }
    n += 2 * BLOCK;
    n + (RECORD - n % RECORD) % RECORD
}

/// Write the layer archive: each entry's header and contents, two zero blocks, and zeros up to
/// a whole record. Each file is opened once (never through a symlink in its last component,
/// nor anywhere for [`Source::Below`]) and exactly its described size is copied; a file that
/// is shorter than that (changed while read) is an error. Returns the bytes written.
pub fn write_layer(entries: &[Entry], out: &mut dyn Write) -> io::Result<u64> {
    write_layer_into(entries, &mut Buffered::new(out, 256 * 1024))
}

/// [`write_layer`] into a sink that lends its buffer for file contents, which are then read
/// straight into the memory the sink's consumer hashes (and compresses).
pub fn write_layer_into(entries: &[Entry], out: &mut dyn LendingSink) -> io::Result<u64> {
    let mut n = 0u64;
    for e in entries {
        let h = header(e);
        out.write_all(&h)?;
        n += h.len() as u64;
        if let EntryKind::File { source, size } = &e.kind {
            copy_exact(source, *size, out)?;
            let pad = pad_to_block(*size);
            out.write_all(&[0u8; BLOCK as usize][..pad as usize])?;
            n += size + pad;
        }
    }
    let tail = {
        let m = n + 2 * BLOCK;
        2 * BLOCK + (RECORD - m % RECORD) % RECORD
    };
    let zeros = vec![0u8; tail as usize];
    out.write_all(&zeros)?;
    Ok(n + tail)
}

fn copy_exact(source: &Source, size: u64, out: &mut dyn LendingSink) -> io::Result<()> {
    let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", source.display()));
    let mut file = source.open().map_err(with_path)?;
    let mut left = size;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX);
        let room = out.room(want)?;
        let got = file.read(room).map_err(with_path)?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: file shrank while it was read ({} of {size} bytes)",
                    source.display(),
                    size - left
                ),
            ));
        }
        out.commit(got)?;
        left -= got as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner::default()
    }

    #[test]
    fn short_directory_header_is_plain_ustar() {
        let h = header(&Entry::dir("/nix", 0o755, &owner()));
        assert_eq!(h.len(), 512);
        assert_eq!(&h[..6], b"/nix/\0");
        assert_eq!(&h[100..108], b"0000755\0");
        assert_eq!(&h[136..148], b"00000000001\0");
        assert_eq!(h[156], b'5');
        assert_eq!(&h[257..265], b"ustar\x0000");
        assert_eq!(&h[265..270], b"root\0");
        // Checksum: six octal digits, NUL, space.
        assert_eq!(h[154], 0);
        assert_eq!(h[155], b' ');
        let mut copy = h.clone();
        copy[148..156].copy_from_slice(b"        ");
        let sum: u32 = copy.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(&h[148..154], format!("{sum:06o}").as_bytes());
    }

    #[test]
    fn long_name_gets_a_pax_path_record() {
        let name = format!("/nix/store/{}", "a".repeat(120));
        let h = header(&Entry::dir(name.as_bytes(), 0o555, &owner()));
        assert_eq!(h.len(), 512 * 3);
        assert_eq!(&h[..15], b"././@PaxHeader\0");
        assert_eq!(h[156], b'x');
        let record = format!("142 path={name}/\n");
        assert_eq!(&h[512..512 + record.len()], record.as_bytes());
        // The ustar name is the first 100 bytes.
        assert_eq!(&h[1024..1124], &name.as_bytes()[..100]);
    }

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(pax_record("path", b"abc"), b"12 path=abc\n");
        // 93 + 2 digits = 95 + ... crossing a digit boundary.
        let v = vec![b'x'; 92];
        let r = pax_record("path", &v);
        assert_eq!(r.len().to_string(), String::from_utf8_lossy(&r[..3]).trim());
    }

    #[test]
    fn non_ascii_names_are_replaced_in_ustar_and_kept_in_pax() {
        let e = Entry::dir("/é".as_bytes(), 0o555, &owner());
        let h = header(&e);
        assert_eq!(h.len(), 1536);
        assert!(h[512..1024].starts_with("13 path=/é/\n".as_bytes()));
        assert_eq!(&h[1024..1028], b"/?/\0");
        let bad = Entry::dir(b"/\xff".to_vec(), 0o555, &owner());
        let h = header(&bad);
        assert!(h[512..1024].starts_with(b"21 hdrcharset=BINARY\n12 path=/\xff/\n"));
    }

    #[test]
    fn layer_size_matches_written_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, vec![7u8; 1000]).unwrap();
        let entries = vec![
            Entry::dir("/nix", 0o755, &owner()),
            Entry::new(
                b"/nix/f".to_vec(),
                EntryKind::File {
                    source: Source::Path(f),
                    size: 1000,
                },
                0o444,
                &owner(),
            ),
            Entry::new(
                b"/nix/l".to_vec(),
                EntryKind::Symlink {
                    target: b"f".to_vec(),
                },
                0o777,
                &owner(),
            ),
        ];
        let mut out = Vec::new();
        let n = write_layer(&entries, &mut out).unwrap();
        assert_eq!(n, out.len() as u64);
        assert_eq!(n, layer_size(&entries));
        assert_eq!(n % RECORD, 0);
        let mut archive = ::tar::Archive::new(out.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["/nix/", "/nix/f", "/nix/l"]);
    }

    #[test]
    fn a_layer_through_lent_batches_is_the_plain_layer() {
        let dir = tempfile::tempdir().unwrap();
        // Sizes around the 1 MiB batches the background sink fills, and small ones between.
        let sizes = [
            (1 << 20) - 700,
            3,
            3 * (1 << 20) + 11,
            0,
            1 << 20,
            511,
            600_000,
        ];
        let mut entries = vec![Entry::dir("/nix/", 0o555, &owner())];
        for (i, size) in sizes.iter().enumerate() {
            let f = dir.path().join(format!("f{i}"));
            let data: Vec<u8> = (0..*size).map(|j| (j * 13 + i) as u8).collect();
            std::fs::write(&f, data).unwrap();
            entries.push(Entry::new(
                format!("/nix/f{i}").into_bytes(),
                EntryKind::File {
                    source: Source::Path(f),
                    size: *size as u64,
                },
                0o444,
                &owner(),
            ));
        }
        let mut plain = Vec::new();
        let n = write_layer(&entries, &mut plain).unwrap();
        let mut lent = Vec::new();
        let m = crate::threaded_io::with_background_lending_sink(&mut lent, |w| {
            write_layer_into(&entries, w)
        })
        .unwrap()
        .unwrap();
        assert_eq!((m, lent.len()), (n, plain.len()));
        assert!(lent == plain, "the layers differ");
    }

    #[test]
    fn a_file_that_shrank_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"abc").unwrap();
        let e = Entry::new(
            b"f".to_vec(),
            EntryKind::File {
                source: Source::Path(f),
                size: 10,
            },
            0o444,
            &owner(),
        );
        let err = write_layer(&[e], &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("shrank"), "{err}");
    }
}
