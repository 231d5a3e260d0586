//! A base image (`--from`): a docker-archive (or strata's docker+OCI tar) whose layers go
//! first, unchanged, and whose config's `Env` is merged into ours the way nixpkgs does. The
//! rest of the base config is not kept (as in nixpkgs).
//!
//! The archive is not trusted: it must be a regular file, its manifest and config are read
//! with size limits, and each layer is checked against the config's `rootfs.diff_ids` (and
//! against its own name when that is `blobs/sha256/<digest>`) while it is copied, decompressed
//! on the side if it is compressed, so a mismatch fails the build naming the layer instead of
//! making an image that `docker load` refuses with `invalid diffID`.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ImageError;
use super::archive::BlobOut;
use super::input::{MAX_BASE_CONFIG, MAX_BASE_MANIFEST, check_file, read_limited, show_size};
use crate::hashing::{Digester, Tee};
use crate::oci::config::DockerManifest;
use crate::oci::layout::{inside_name, tar_members};
use crate::oci::{Compression, Digest};

/// A base layer as found in the archive.
#[derive(Debug, Clone)]
pub struct BaseLayer {
    pub name: String,
    offset: u64,
    pub size: u64,
    /// From the base config.
    pub diff_id: Digest,
}

#[derive(Debug, Clone)]
pub struct BaseImage {
    path: PathBuf,
    pub layers: Vec<BaseLayer>,
    pub env: Vec<String>,
    /// The bytes of the base config (part of the inputs hash).
    pub config_bytes: Vec<u8>,
}

fn invalid(path: &Path, why: impl std::fmt::Display) -> ImageError {
    ImageError::Invalid(format!("--from '{}': {why}", path.display()))
}

fn read_member(file: &mut File, offset: u64, size: u64) -> io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(offset))?;
    let mut data = Vec::new();
    file.take(size).read_to_end(&mut data)?;
    Ok(data)
}

/// Hashes the uncompressed bytes of a layer blob written to it (the diff_id).
enum DiffHasher {
    Plain(Digester<io::Sink>),
    Gzip(Box<flate2::write::MultiGzDecoder<Digester<io::Sink>>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, Digester<io::Sink>>>),
}

impl DiffHasher {
    fn new(compression: Compression) -> io::Result<DiffHasher> {
        let inner = Digester::new(io::sink());
        Ok(match compression {
            Compression::None => DiffHasher::Plain(inner),
            Compression::Gzip => {
                DiffHasher::Gzip(Box::new(flate2::write::MultiGzDecoder::new(inner)))
            }
            Compression::Zstd => {
                DiffHasher::Zstd(Box::new(zstd::stream::write::Decoder::new(inner)?))
            }
        })
    }

    /// The digest of the uncompressed bytes.
    fn finish(self) -> io::Result<Digest> {
        let inner = match self {
            DiffHasher::Plain(d) => d,
            DiffHasher::Gzip(d) => d.finish()?,
            DiffHasher::Zstd(mut d) => {
                d.flush()?;
                d.into_inner()
            }
        };
        Ok(inner.finish_digest().0)
    }
}

impl Write for DiffHasher {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            DiffHasher::Plain(d) => d.write(data),
            DiffHasher::Gzip(d) => d.write(data),
            DiffHasher::Zstd(d) => d.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            DiffHasher::Plain(d) => d.flush(),
            DiffHasher::Gzip(d) => d.flush(),
            DiffHasher::Zstd(d) => d.flush(),
        }
    }
}

/// The part of a base config that is read: the layers' diff_ids and the `Env`. Anything
/// else is not kept (as in nixpkgs), so it is not parsed either.
#[derive(Debug, Default, Deserialize)]
struct BaseConfig {
    #[serde(default)]
    rootfs: Option<BaseRootFs>,
    #[serde(default)]
    config: Option<BaseRuntime>,
}

#[derive(Debug, Default, Deserialize)]
struct BaseRootFs {
    #[serde(default)]
    diff_ids: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
struct BaseRuntime {
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
}

impl BaseImage {
    pub fn open(path: &Path) -> Result<BaseImage, ImageError> {
        // Read by offset, twice: a pipe or a device will not do.
        check_file(path, "--from", false)?;
        // The one index of a tar's members an image is read through (regular files only,
        // no name that leaves the archive).
        let members = tar_members(path).map_err(|e| invalid(path, e))?;
        let find =
            |name: &str| -> Option<(u64, u64)> { members.get(&inside_name(name).ok()?).copied() };
        let mut file = File::open(path).map_err(ImageError::io(path))?;
        let mut member = |name: &str, limit: u64| -> Result<Vec<u8>, ImageError> {
            let (off, size) =
                find(name).ok_or_else(|| invalid(path, format!("no '{name}' in the archive")))?;
            if size > limit {
                return Err(invalid(
                    path,
                    format!("'{name}' is larger than the limit of {}", show_size(limit)),
                ));
            }
            file.seek(SeekFrom::Start(off))
                .map_err(ImageError::io(path))?;
            let shown = format!("--from '{}': '{name}'", path.display());
            read_limited((&mut file).take(size), limit, &shown, "a base image member")
        };
        let manifest: Vec<DockerManifest> =
            serde_json::from_slice(&member("manifest.json", MAX_BASE_MANIFEST)?)
                .map_err(|e| invalid(path, format!("manifest.json: {e}")))?;
        let [manifest] = manifest.as_slice() else {
            return Err(invalid(
                path,
                "manifest.json must describe exactly one image",
            ));
        };
        let config_bytes = member(&manifest.config, MAX_BASE_CONFIG)?;
        let config: BaseConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| invalid(path, format!("{}: {e}", manifest.config)))?;
        let diff_ids = config.rootfs.and_then(|r| r.diff_ids).unwrap_or_default();
        if diff_ids.len() != manifest.layers.len() {
            return Err(invalid(
                path,
                format!(
                    "{} layers but {} diff_ids",
                    manifest.layers.len(),
                    diff_ids.len()
                ),
            ));
        }
        let env = config.config.and_then(|c| c.env).unwrap_or_default();
        let mut layers = Vec::new();
        for (name, diff_id) in manifest.layers.iter().zip(diff_ids) {
            let diff_id = Digest::parse(&diff_id)
                .map_err(|e| invalid(path, format!("{}: {e}", manifest.config)))?;
            let (offset, size) = find(name)
                .ok_or_else(|| invalid(path, format!("no layer '{name}' in the archive")))?;
            layers.push(BaseLayer {
                name: name.clone(),
                offset,
                size,
                diff_id,
            });
        }
        Ok(BaseImage {
            path: path.to_path_buf(),
            layers,
            env,
            config_bytes,
        })
    }

    /// Copy a base layer into the output as a blob, checking it against its diff_id (and
    /// its name, if that is a digest) on the way; returns its digest and compression.
    pub fn copy_layer(
        &self,
        layer: &BaseLayer,
        sink: &mut dyn BlobOut,
    ) -> Result<(Digest, Compression), ImageError> {
        let mut file = File::open(&self.path).map_err(ImageError::io(&self.path))?;
        let head = read_member(&mut file, layer.offset, layer.size.min(8))
            .map_err(ImageError::io(&self.path))?;
        let compression = Compression::sniff(&head);
        file.seek(SeekFrom::Start(layer.offset))
            .map_err(ImageError::io(&self.path))?;
        let bad = |why: String| invalid(&self.path, format!("base layer '{}' {why}", layer.name));
        let bad_io = |why: &str, e: io::Error| {
            ImageError::invalid_io(
                format_args!(
                    "--from '{}': base layer '{}' {why}",
                    self.path.display(),
                    layer.name
                ),
                e,
            )
        };
        let mut diff = DiffHasher::new(compression).map_err(|e| bad_io("cannot be read", e))?;
        sink.begin_blob().map_err(ImageError::stream)?;
        let mut w = Tee(Digester::new(sink.blob_writer()), Some(&mut diff));
        let n = io::copy(&mut (&mut file).take(layer.size), &mut w).map_err(|e| {
            if e.kind() == io::ErrorKind::InvalidData || e.kind() == io::ErrorKind::InvalidInput {
                bad_io(&format!("is not a valid {} blob", compression.name()), e)
            } else {
                ImageError::stream(e)
            }
        })?;
        let (digest, _, _) = w.0.finish_digest();
        if n != layer.size {
            return Err(bad("is cut short".into()));
        }
        let diff_id = diff
            .finish()
            .map_err(|e| bad_io(&format!("is not a valid {} blob", compression.name()), e))?;
        if diff_id != layer.diff_id {
            return Err(bad(format!(
                "does not match its diff_id in the config ({} expected, {diff_id} found)",
                layer.diff_id
            )));
        }
        if let Some(named) = Digest::from_blob_path(&layer.name)
            && named != digest
        {
            return Err(bad(format!("does not match its name ({digest} found)")));
        }
        sink.end_blob(digest.hex(), layer.size)
            .map_err(ImageError::stream)?;
        Ok((digest, compression))
    }
}
