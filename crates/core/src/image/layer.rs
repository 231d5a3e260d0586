//! Store layers and layer blobs: the normalised entries of a layer's store paths (nixpkgs'
//! order: the store dir's ancestors first, then each path in the given order, walked
//! component-wise sorted without following symlinks), and the pipeline that streams a layer
//! archive into a blob: tar → SHA-256 (diff_id) → optional compressor → SHA-256 (digest) →
//! output (and cache file), with reading on one thread and hashing/compressing/writing on a
//! second one.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::ImageError;
use super::tar::{Entry, EntryKind, Owner, Source, write_layer_into};
use crate::hashing::{Digester, Tee};
use crate::threaded_io::with_background_lending_sink;

pub use crate::oci::compression::{Compression, GZIP_LEVEL, ZSTD_LEVEL};

/// The entries of a store layer. `paths` are `(logical, physical)` pairs; the store dir's
/// ancestors (`/nix`, `/nix/store`) come first with mode 0755.
pub fn store_layer_entries(
    store_dir: &str,
    paths: &[(String, &Path)],
    owner: &Owner,
) -> Result<Vec<Entry>, ImageError> {
    let mut entries = Vec::new();
    let mut prefix = String::new();
    for part in store_dir.split('/').filter(|p| !p.is_empty()) {
        prefix.push('/');
        prefix.push_str(part);
        entries.push(Entry::dir(prefix.as_bytes(), 0o755, owner));
    }
    for (logical, physical) in paths {
        let walk = walkdir::WalkDir::new(physical)
            .follow_links(false)
            .follow_root_links(false)
            .sort_by(|a, b| a.file_name().cmp(b.file_name()));
        for item in walk {
            let item = item.map_err(|e| ImageError::Io {
                path: e.path().unwrap_or(physical).to_path_buf(),
                source: e.into(),
            })?;
            let path = item.path();
            let rel = path.strip_prefix(physical).unwrap_or(Path::new(""));
            let mut name = logical.as_bytes().to_vec();
            if !rel.as_os_str().is_empty() {
                name.push(b'/');
                name.extend_from_slice(rel.as_os_str().as_encoded_bytes());
            }
            let meta = fs::symlink_metadata(path).map_err(ImageError::io(path))?;
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                EntryKind::Dir
            } else if ft.is_symlink() {
                let target = fs::read_link(path).map_err(ImageError::io(path))?;
                EntryKind::Symlink {
                    target: target.into_os_string().into_encoded_bytes(),
                }
            } else if ft.is_file() {
                EntryKind::File {
                    source: Source::Path(path.to_path_buf()),
                    size: meta.len(),
                }
            } else {
                return Err(ImageError::Invalid(format!(
                    "'{}' is not a file, directory or symlink",
                    String::from_utf8_lossy(&name)
                )));
            };
            entries.push(Entry::new(name, kind, meta.mode(), owner));
        }
    }
    Ok(entries)
}

/// What streaming a layer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// Hex SHA-256 of the uncompressed tar.
    pub diff_id: String,
    /// Hex SHA-256 of the blob.
    pub digest: String,
    /// Blob size in bytes.
    pub size: u64,
}

/// Stream the layer archive of `entries` into `out` (and `copy`, if given), compressed as
/// asked. The store is read on this thread; hashing, compression and writing happen on a
/// second one.
pub fn stream_layer(
    entries: &[Entry],
    compression: Compression,
    out: &mut (dyn Write + Send),
    copy: Option<&mut (dyn Write + Send)>,
) -> Result<BlobInfo, ImageError> {
    let target = Tee(out, copy);
    let err = ImageError::stream;
    let info = match compression {
        Compression::None => {
            let mut sink = Digester::new(target);
            with_background_lending_sink(&mut sink, |w| write_layer_into(entries, w))
                .map_err(err)?
                .map_err(err)?;
            let (digest, size, _) = sink.finish();
            BlobInfo {
                diff_id: digest.clone(),
                digest,
                size,
            }
        }
        Compression::Gzip | Compression::Zstd => {
            let enc = compression.encoder(Digester::new(target)).map_err(err)?;
            let mut sink = Digester::new(enc);
            with_background_lending_sink(&mut sink, |w| write_layer_into(entries, w))
                .map_err(err)?
                .map_err(err)?;
            let (diff_id, _, enc) = sink.finish();
            let (digest, size, _) = enc.finish().map_err(err)?.finish();
            BlobInfo {
                diff_id,
                digest,
                size,
            }
        }
    };
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::io::Read;

    fn sample() -> (tempfile::TempDir, Vec<Entry>) {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("abc-x");
        fs::create_dir_all(p.join("b")).unwrap();
        fs::write(p.join("b/f"), vec![3u8; 70_000]).unwrap();
        fs::write(p.join("a-b"), b"x").unwrap();
        fs::create_dir(p.join("a")).unwrap();
        fs::write(p.join("a/z"), b"z").unwrap();
        let entries = store_layer_entries(
            "/nix/store",
            &[("/nix/store/abc-x".into(), p.as_path())],
            &Owner::default(),
        )
        .unwrap();
        (t, entries)
    }

    #[test]
    fn walk_is_component_wise_sorted() {
        let (_t, entries) = sample();
        let names: Vec<String> = entries
            .iter()
            .map(|e| String::from_utf8(e.name.clone()).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "/nix",
                "/nix/store",
                "/nix/store/abc-x",
                "/nix/store/abc-x/a",
                "/nix/store/abc-x/a/z",
                "/nix/store/abc-x/a-b",
                "/nix/store/abc-x/b",
                "/nix/store/abc-x/b/f"
            ]
        );
    }

    #[test]
    fn compressed_blobs_decompress_to_the_diff_id() {
        let (_t, entries) = sample();
        let mut plain = Vec::new();
        let p = stream_layer(&entries, Compression::None, &mut plain, None).unwrap();
        assert_eq!(p.diff_id, p.digest);
        for c in [Compression::Gzip, Compression::Zstd] {
            let mut blob = Vec::new();
            let mut copy = Vec::new();
            let info = stream_layer(&entries, c, &mut blob, Some(&mut copy)).unwrap();
            assert_eq!(blob, copy);
            assert_eq!(info.diff_id, p.diff_id);
            assert_eq!(info.size, blob.len() as u64);
            assert_eq!(crate::hashing::hex(&Sha256::digest(&blob)), info.digest);
            assert_eq!(Compression::sniff(&blob), c);
            let mut back = Vec::new();
            match c {
                Compression::Gzip => {
                    flate2::read::GzDecoder::new(blob.as_slice())
                        .read_to_end(&mut back)
                        .unwrap();
                }
                _ => {
                    back = zstd::decode_all(blob.as_slice()).unwrap();
                }
            }
            assert_eq!(back, plain);
            // Deterministic: the same bytes again.
            let mut again = Vec::new();
            stream_layer(&entries, c, &mut again, None).unwrap();
            assert_eq!(again, blob);
        }
    }
}
