//! The image to push, read from what `mkimage` wrote: a tar that is an OCI layout
//! (`index.json`, `blobs/sha256/…`; the default docker+OCI tar and `--format oci`), a
//! docker-archive tar (`manifest.json` only; an OCI manifest is made from it), or an OCI layout
//! directory (`--format oci-dir`). Blobs are never extracted: a blob in a tar is read at its
//! offset.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::RegistryError;
use crate::image::config::{Descriptor, DockerManifest, OciManifest, to_bytes};
use crate::image::layer::Compression;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Where a blob's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobLocation {
    /// A member of a tar: `size` bytes at `offset`.
    InTar { path: PathBuf, offset: u64 },
    /// A whole file.
    File(PathBuf),
}

/// A blob of the image: its descriptor and where to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
    pub location: BlobLocation,
}

impl Blob {
    /// A reader over exactly the blob's bytes (not checked against the digest here).
    pub fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        match &self.location {
            BlobLocation::InTar { path, offset } => {
                let mut f = File::open(path)?;
                f.seek(SeekFrom::Start(*offset))?;
                Ok(Box::new(f.take(self.size)))
            }
            BlobLocation::File(path) => Ok(Box::new(File::open(path)?.take(self.size))),
        }
    }

    /// The whole blob in memory (for manifests and configs).
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        let mut data = Vec::new();
        self.open()?.read_to_end(&mut data)?;
        if data.len() as u64 != self.size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "blob {} is {} bytes, not {}",
                    self.digest,
                    data.len(),
                    self.size
                ),
            ));
        }
        Ok(data)
    }

    /// How the blob is compressed, by its media type.
    pub fn compression(&self) -> Compression {
        let t = &self.media_type;
        if t.ends_with("+gzip") || t.ends_with(".gzip") {
            Compression::Gzip
        } else if t.ends_with("+zstd") || t.ends_with(".zstd") {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// An image ready to push: the manifest's exact bytes, its config and its layers.
#[derive(Debug, Clone)]
pub struct SourceImage {
    pub manifest: Vec<u8>,
    pub manifest_media_type: String,
    pub config: Blob,
    pub layers: Vec<Blob>,
    /// The tag the image was built with (`org.opencontainers.image.ref.name`, or the docker
    /// archive's `RepoTags`), used when the destination gives none.
    pub tag: Option<String>,
}

/// Blobs by name in an OCI layout: `blobs/sha256/<hex>` members of a tar, or files.
#[derive(Debug)]
enum Layout {
    Tar {
        path: PathBuf,
        members: BTreeMap<String, (u64, u64)>,
    },
    Dir(PathBuf),
}

impl Layout {
    fn blob(&self, desc: &Descriptor) -> Result<Blob, String> {
        let hex = desc
            .digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| format!("unsupported digest '{}'", desc.digest))?;
        let name = format!("blobs/sha256/{hex}");
        self.blob_named(&name, &desc.digest, desc.size, &desc.media_type)
    }

    fn blob_named(
        &self,
        name: &str,
        digest: &str,
        size: u64,
        media_type: &str,
    ) -> Result<Blob, String> {
        let location = match self {
            Layout::Tar { path, members } => {
                let (offset, actual) = members
                    .get(name)
                    .copied()
                    .ok_or_else(|| format!("no '{name}' in the archive"))?;
                if actual != size {
                    return Err(format!(
                        "'{name}' is {actual} bytes, the manifest says {size}"
                    ));
                }
                BlobLocation::InTar {
                    path: path.clone(),
                    offset,
                }
            }
            Layout::Dir(dir) => {
                let path = dir.join(name);
                let actual = std::fs::metadata(&path)
                    .map_err(|e| format!("{name}: {e}"))?
                    .len();
                if actual != size {
                    return Err(format!(
                        "'{name}' is {actual} bytes, the manifest says {size}"
                    ));
                }
                BlobLocation::File(path)
            }
        };
        Ok(Blob {
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            size,
            location,
        })
    }

    fn file(&self, name: &str) -> Result<Option<Vec<u8>>, String> {
        match self {
            Layout::Tar { path, members } => {
                let Some((offset, size)) = members.get(name).copied() else {
                    return Ok(None);
                };
                let blob = Blob {
                    media_type: String::new(),
                    digest: name.to_string(),
                    size,
                    location: BlobLocation::InTar {
                        path: path.clone(),
                        offset,
                    },
                };
                blob.read_all()
                    .map(Some)
                    .map_err(|e| format!("{name}: {e}"))
            }
            Layout::Dir(dir) => match std::fs::read(dir.join(name)) {
                Ok(d) => Ok(Some(d)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(format!("{name}: {e}")),
            },
        }
    }
}

fn tar_members(path: &Path) -> Result<BTreeMap<String, (u64, u64)>, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut archive = ::tar::Archive::new(file);
    let mut members = BTreeMap::new();
    for entry in archive.entries().map_err(|e| format!("not a tar: {e}"))? {
        let entry = entry.map_err(|e| format!("not a tar: {e}"))?;
        let name = entry
            .path()
            .map_err(|e| format!("not a tar: {e}"))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        members.insert(name, (entry.raw_file_position(), entry.size()));
    }
    if members.is_empty() {
        return Err("not a tar (no members)".to_string());
    }
    Ok(members)
}

/// Read an image: a tar (docker+OCI, OCI or docker-archive) or an OCI layout directory.
pub fn open(path: &Path) -> Result<SourceImage, RegistryError> {
    let err = |message: String| RegistryError::Image {
        path: path.display().to_string(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    let layout = if meta.is_dir() {
        Layout::Dir(path.to_path_buf())
    } else {
        Layout::Tar {
            path: path.to_path_buf(),
            members: tar_members(path).map_err(err)?,
        }
    };
    if let Some(index) = layout.file("index.json").map_err(err)? {
        from_index(&layout, &index).map_err(err)
    } else if let Some(manifest) = layout.file("manifest.json").map_err(err)? {
        from_docker_archive(&layout, &manifest).map_err(err)
    } else {
        Err(err(
            "neither an OCI layout (index.json) nor a docker-archive (manifest.json)".to_string(),
        ))
    }
}

fn from_index(layout: &Layout, index: &[u8]) -> Result<SourceImage, String> {
    let index: serde_json::Value =
        serde_json::from_slice(index).map_err(|e| format!("index.json: {e}"))?;
    let manifests = index
        .get("manifests")
        .and_then(|m| m.as_array())
        .ok_or("index.json: no manifests")?;
    let [entry] = manifests.as_slice() else {
        return Err(format!(
            "index.json lists {} images; push needs exactly one",
            manifests.len()
        ));
    };
    let desc: Descriptor =
        serde_json::from_value(entry.clone()).map_err(|e| format!("index.json: {e}"))?;
    if desc.media_type != OCI_MANIFEST && desc.media_type != DOCKER_MANIFEST {
        return Err(format!(
            "index.json: the image is a '{}', not an image manifest",
            desc.media_type
        ));
    }
    let tag = desc
        .annotations
        .as_ref()
        .and_then(|a| a.get("org.opencontainers.image.ref.name"))
        .cloned();
    let manifest_blob = layout.blob(&desc)?;
    let manifest = manifest_blob
        .read_all()
        .map_err(|e| format!("manifest: {e}"))?;
    let parsed: OciManifest =
        serde_json::from_slice(&manifest).map_err(|e| format!("manifest {}: {e}", desc.digest))?;
    Ok(SourceImage {
        config: layout.blob(&parsed.config)?,
        layers: parsed
            .layers
            .iter()
            .map(|l| layout.blob(l))
            .collect::<Result<_, _>>()?,
        manifest,
        manifest_media_type: desc.media_type,
        tag,
    })
}

fn from_docker_archive(layout: &Layout, manifest: &[u8]) -> Result<SourceImage, String> {
    let list: Vec<DockerManifest> =
        serde_json::from_slice(manifest).map_err(|e| format!("manifest.json: {e}"))?;
    let [image] = list.as_slice() else {
        return Err(format!(
            "manifest.json describes {} images; push needs exactly one",
            list.len()
        ));
    };
    let described = |name: &str, media_type: &str| -> Result<Blob, String> {
        let data_len = match layout {
            Layout::Tar { members, .. } => members
                .get(name.trim_start_matches("./"))
                .map(|m| m.1)
                .ok_or_else(|| format!("no '{name}' in the archive"))?,
            Layout::Dir(dir) => std::fs::metadata(dir.join(name))
                .map_err(|e| format!("{name}: {e}"))?
                .len(),
        };
        let digest = match name.strip_prefix("blobs/sha256/") {
            Some(hex) => format!("sha256:{hex}"),
            None => {
                let blob = layout.blob_named(name, name, data_len, media_type)?;
                let mut hasher = crate::image::archive::Digester::new(io::sink());
                io::copy(&mut blob.open().map_err(|e| e.to_string())?, &mut hasher)
                    .map_err(|e| format!("{name}: {e}"))?;
                format!("sha256:{}", hasher.finish().0)
            }
        };
        let mut blob =
            layout.blob_named(name.trim_start_matches("./"), &digest, data_len, media_type)?;
        if media_type.is_empty() {
            let mut head = [0u8; 4];
            let n = blob.open().and_then(|mut r| r.read(&mut head)).unwrap_or(0);
            blob.media_type = Compression::sniff(&head[..n]).media_type().to_string();
        }
        Ok(blob)
    };
    let config = described(&image.config, OCI_CONFIG)?;
    let layers = image
        .layers
        .iter()
        .map(|l| described(l, ""))
        .collect::<Result<Vec<_>, _>>()?;
    let doc = OciManifest {
        schema_version: 2,
        media_type: OCI_MANIFEST.to_string(),
        config: descriptor(&config),
        layers: layers.iter().map(descriptor).collect(),
    };
    let tag = image
        .repo_tags
        .first()
        .and_then(|t| t.rsplit_once(':'))
        .map(|(_, t)| t.to_string());
    Ok(SourceImage {
        manifest: to_bytes(&doc),
        manifest_media_type: OCI_MANIFEST.to_string(),
        config,
        layers,
        tag,
    })
}

/// The descriptor of a blob.
pub fn descriptor(blob: &Blob) -> Descriptor {
    Descriptor {
        media_type: blob.media_type.clone(),
        digest: blob.digest.clone(),
        size: blob.size,
        annotations: None,
    }
}
