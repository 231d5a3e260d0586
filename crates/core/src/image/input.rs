//! Inputs read whole into memory (the layers JSON, `--config`, a base image's manifest and
//! config, cache records), each with a size limit, so a wrong or hostile input (`/dev/zero`,
//! a multi-gigabyte file) fails with one line instead of exhausting memory. A named input
//! must be a regular file or a pipe (`<(…)`, `/dev/stdin`): a device, directory or socket
//! is refused before it is opened.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use super::ImageError;
use crate::file_kind;

const MIB: u64 = 1 << 20;

/// Most bytes of the layers JSON (a list of store paths: 100,000 paths take about 8 MiB).
pub const MAX_LAYERS_JSON: u64 = 64 * MIB;
/// Most bytes of a `--config` file.
pub const MAX_CONFIG_JSON: u64 = 4 * MIB;
/// Most bytes of a base image's `manifest.json`.
pub const MAX_BASE_MANIFEST: u64 = 4 * MIB;
/// Most bytes of a base image's config (Docker's own limit for an image config is 8 MiB).
pub const MAX_BASE_CONFIG: u64 = 8 * MIB;
/// Most bytes of a layer cache record (a larger one is ignored).
pub const MAX_CACHE_RECORD: u64 = 64 * 1024;

/// `n` bytes as the limits are documented (`4 MiB`, `64 KiB`).
pub fn show_size(n: u64) -> String {
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else {
        format!("{} KiB", n / 1024)
    }
}

/// Fail unless `path` (symlinks followed) is a regular file, or a pipe when `pipe_ok`.
pub fn check_file(path: &Path, what: &str, pipe_ok: bool) -> Result<(), ImageError> {
    let meta = std::fs::metadata(path).map_err(ImageError::io(path))?;
    let ft = meta.file_type();
    if ft.is_file() || (pipe_ok && ft.is_fifo()) {
        return Ok(());
    }
    let kind = file_kind::name(ft);
    Err(ImageError::Invalid(format!(
        "{what} '{}': not a regular file ({kind})",
        path.display()
    )))
}

/// Read at most `limit` bytes from `reader`; more is an error naming `shown` and `what`.
pub fn read_limited(
    reader: impl Read,
    limit: u64,
    shown: &str,
    what: &str,
) -> Result<Vec<u8>, ImageError> {
    let mut data = Vec::new();
    reader
        .take(limit + 1)
        .read_to_end(&mut data)
        .map_err(|e| ImageError::invalid_io(shown, e))?;
    if data.len() as u64 > limit {
        return Err(ImageError::Invalid(format!(
            "{shown}: larger than the limit of {} for {what}",
            show_size(limit)
        )));
    }
    Ok(data)
}

/// Read a whole input named on the command line: `-` is stdin (any kind of stdin), anything
/// else a regular file or a pipe; at most `limit` bytes.
pub fn read_input(name: &str, limit: u64, what: &str) -> Result<Vec<u8>, ImageError> {
    if name == "-" {
        return read_limited(io::stdin().lock(), limit, "stdin", what);
    }
    let path = Path::new(name);
    check_file(path, what, true)?;
    let file = File::open(path).map_err(ImageError::io(path))?;
    // Checked again on what was opened, in case the name changed in between.
    let ft = file.metadata().map_err(ImageError::io(path))?.file_type();
    if !(ft.is_file() || ft.is_fifo()) {
        return Err(ImageError::Invalid(format!(
            "{what} '{name}': not a regular file ({})",
            file_kind::name(ft)
        )));
    }
    read_limited(file, limit, name, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_kinds() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f.json");
        std::fs::write(&f, b"0123456789").unwrap();
        let name = f.to_str().unwrap();
        assert_eq!(read_input(name, 10, "x").unwrap(), b"0123456789");
        let err = read_input(name, 9, "the thing").unwrap_err().to_string();
        assert!(
            err.contains("larger than the limit") && err.contains("the thing"),
            "{err}"
        );
        for bad in ["/dev/zero", "/dev/null"] {
            let err = read_input(bad, 10, "--config").unwrap_err().to_string();
            assert!(
                err.contains("not a regular file (a character device)"),
                "{err}"
            );
        }
        let err = read_input(t.path().to_str().unwrap(), 10, "--config")
            .unwrap_err()
            .to_string();
        assert!(err.contains("(a directory)"), "{err}");
        assert_eq!(show_size(MAX_CONFIG_JSON), "4 MiB");
        assert_eq!(show_size(MAX_CACHE_RECORD), "64 KiB");
    }
}
