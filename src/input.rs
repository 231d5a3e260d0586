//! Reading a large input file into huge pages.
//!
//! `read(2)` into a fresh buffer costs a page fault per 4 KiB of buffer, each zeroing a page
//! before the copy overwrites it: for a closure graph of a few thousand paths (about 1 MB)
//! that was an eighth of `mklayers`' whole run. A buffer in transparent huge pages faults
//! once per 2 MiB instead. The bytes are still a private copy, so a file changed or
//! truncated while it is read cannot change them afterwards (as it could under a mapping of
//! the file). Where the kernel gives no huge pages, the buffer is ordinary pages, as before.

use std::fs::File;
use std::io::{self, Read};
use std::ops::Deref;

use strata_core::manifest::{MAX_MANIFEST, ManifestError, check_input_kind};

use crate::cli::{Failure, input_name, read_input};

/// Files below this are read into an ordinary buffer: they fill too little of a huge page.
const HUGE_FROM: u64 = 256 * 1024;

/// The size and alignment of a transparent huge page on the machines strata runs on.
const HUGE_PAGE: usize = 2 << 20;

/// An input's bytes.
#[derive(Debug)]
pub enum InputBytes {
    /// Read into huge pages: `len` bytes from `start` (the first huge page boundary).
    Huge {
        buffer: memmap2::MmapMut,
        start: usize,
        len: usize,
    },
    Read(Vec<u8>),
}

impl Deref for InputBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            InputBytes::Huge { buffer, start, len } => &buffer[*start..*start + *len],
            InputBytes::Read(bytes) => bytes,
        }
    }
}

/// The whole input named on the command line (`-` is stdin); a regular file of at least
/// [`HUGE_FROM`] bytes is read into huge pages.
pub fn input_bytes(name: &str) -> Result<InputBytes, Failure> {
    if name == "-" {
        return read_input(name).map(InputBytes::Read);
    }
    let failed = |e: io::Error| Failure::failed(format!("{}: {e}", input_name(name)));
    let mut data = Vec::new();
    // As manifests are: the kind checked before the open and again on what was opened.
    if let Ok(meta) = std::fs::metadata(name) {
        check_input_kind(name, &meta)?;
    }
    let mut file = File::open(name).map_err(failed)?;
    let meta = file.metadata().map_err(failed)?;
    check_input_kind(name, &meta)?;
    match usize::try_from(meta.len()) {
        Ok(len) if meta.is_file() && meta.len() >= HUGE_FROM => {
            read_huge(&mut file, len).map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => {
                    failed(io::Error::other("the file shrank while it was read"))
                }
                _ => failed(e),
            })
        }
        _ => {
            // A pipe, or a file that may have grown since: no more than the limit either way.
            file.take(MAX_MANIFEST + 1)
                .read_to_end(&mut data)
                .map_err(failed)?;
            if data.len() as u64 > MAX_MANIFEST {
                return Err(ManifestError::TooLarge {
                    input: name.to_string(),
                    limit: MAX_MANIFEST,
                }
                .into());
            }
            Ok(InputBytes::Read(data))
        }
    }
}

/// Read the `len` bytes of `file` into a buffer starting at a huge page boundary; the file
/// must end there.
fn read_huge(file: &mut File, len: usize) -> io::Result<InputBytes> {
    let pages = len.div_ceil(HUGE_PAGE) * HUGE_PAGE;
    // One page more than needed, to start at a boundary wherever the mapping lands.
    let mut buffer = memmap2::MmapMut::map_anon(pages + HUGE_PAGE)?;
    let start = (HUGE_PAGE - buffer.as_ptr() as usize % HUGE_PAGE) % HUGE_PAGE;
    // Only advice: without huge pages the buffer works the same.
    let _ = buffer.advise_range(memmap2::Advice::HugePage, start, pages);
    file.read_exact(&mut buffer[start..start + len])?;
    if file.read(&mut [0u8])? != 0 {
        return Err(io::Error::other("the file grew while it was read"));
    }
    Ok(InputBytes::Huge { buffer, start, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_read_whole_on_either_side_of_the_huge_page_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = [
            0,
            HUGE_FROM as usize - 1,
            HUGE_FROM as usize,
            HUGE_PAGE - 1,
            HUGE_PAGE,
            HUGE_PAGE + 1,
            3 * HUGE_PAGE + 12345,
        ];
        for size in sizes {
            let bytes: Vec<u8> = (0..size).map(|i| (i * 7 + i / 4093) as u8).collect();
            let path = dir.path().join(format!("input-{size}"));
            std::fs::write(&path, &bytes).unwrap();
            let read = input_bytes(path.to_str().unwrap()).unwrap();
            assert_eq!(&read[..], &bytes[..], "{size}");
            match &read {
                InputBytes::Huge { buffer, start, .. } => {
                    assert!(size as u64 >= HUGE_FROM, "{size}");
                    assert_eq!((buffer.as_ptr() as usize + start) % HUGE_PAGE, 0);
                }
                InputBytes::Read(_) => assert!((size as u64) < HUGE_FROM, "{size}"),
            }
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let Err(Failure::Failed(line)) = input_bytes("/nonexistent/graph.json") else {
            panic!("a missing file is an error");
        };
        assert!(line.starts_with("/nonexistent/graph.json: "), "{line}");
    }
}
