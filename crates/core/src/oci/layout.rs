//! An image read back from disk, as `mkimage` writes it and other tools do: a tar that is an
//! OCI layout (`index.json`, `blobs/sha256/…`; the default docker+OCI tar and `--format oci`),
//! a docker-archive tar (`manifest.json` only; an OCI manifest is made from it), or an OCI
//! layout directory (`--format oci-dir`); or an image index of several platforms (`mkindex`'s
//! output: `index.json` naming one index manifest), read by [`open_source`]. Blobs are never
//! extracted: a blob in a tar is read
//! at its offset, found in the one index of a tar's members ([`tar_members`]) that a base
//! image (`--from`) is read through too.
//!
//! An image is outside input: its manifests name the files to upload, so every name must stay
//! inside the image. A name is refused when it is absolute or has a `..` component, a tar
//! member is looked up among the tar's regular files only, and a file of an image directory
//! is opened one component at a time beneath the directory, never following a symbolic link
//! out of it ([`open_beneath`]). Nothing is sent before the whole image has been checked so.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, FileType, Mode, OFlags};

use super::compression::Compression;
use super::config::{Descriptor, DockerManifest, OciIndex, OciManifest, to_bytes};
use super::digest::Digest;
use super::media_type::{self, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};
use crate::hashing::Digester;

/// An image that cannot be read, or is not one: one line naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct LayoutError {
    pub path: String,
    pub message: String,
}

/// Where a blob's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobLocation {
    /// A member of a tar: `size` bytes at `offset`.
    InTar { path: PathBuf, offset: u64 },
    /// A file of an image directory: `name` (relative, checked) opened beneath `root`.
    InDir { root: PathBuf, name: String },
    /// A whole file of our own (a compressed layer in the temporary directory).
    File(PathBuf),
}

impl BlobLocation {
    /// The file, for messages.
    pub fn shown(&self) -> String {
        match self {
            BlobLocation::InTar { path, .. } | BlobLocation::File(path) => {
                path.display().to_string()
            }
            BlobLocation::InDir { root, name } => root.join(name).display().to_string(),
        }
    }

    /// A reader over the `size` bytes here.
    pub fn open(&self, size: u64) -> io::Result<Box<dyn Read + Send>> {
        match self {
            BlobLocation::InTar { path, offset } => {
                let mut f = File::open(path)?;
                f.seek(SeekFrom::Start(*offset))?;
                Ok(Box::new(f.take(size)))
            }
            BlobLocation::InDir { root, name } => {
                Ok(Box::new(open_beneath(root, name)?.take(size)))
            }
            BlobLocation::File(path) => Ok(Box::new(File::open(path)?.take(size))),
        }
    }

    /// All `size` bytes here, in memory (the shown name in a short read's message).
    fn read_all(&self, size: u64, shown: &dyn std::fmt::Display) -> io::Result<Vec<u8>> {
        let mut data = Vec::new();
        self.open(size)?.read_to_end(&mut data)?;
        if data.len() as u64 != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("blob {shown} is {} bytes, not {size}", data.len()),
            ));
        }
        Ok(data)
    }
}

/// A blob of the image: its descriptor and where to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub location: BlobLocation,
    /// The digest was computed from these bytes (not taken from a manifest), so they need
    /// not be hashed again before they are sent.
    pub verified: bool,
}

impl Blob {
    /// A reader over exactly the blob's bytes (not checked against the digest here).
    pub fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        self.location.open(self.size)
    }

    /// The whole blob in memory (for manifests and configs).
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        self.location.read_all(self.size, &self.digest)
    }

    /// How the blob is compressed, by its media type.
    pub fn compression(&self) -> Compression {
        Compression::of_media_type(&self.media_type)
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

/// The most of a manifest (`index.json`, `manifest.json`, an image manifest) that is read:
/// what registries accept (distribution's limit).
pub const MAX_MANIFEST: u64 = 4 << 20;

/// Blobs by name in an OCI layout: `blobs/sha256/<hex>` members of a tar, or files.
#[derive(Debug)]
enum Layout {
    Tar {
        path: PathBuf,
        /// Regular-file members by their name made relative ([`inside_name`]): offset, size.
        members: BTreeMap<String, (u64, u64)>,
    },
    Dir(PathBuf),
}

impl Layout {
    fn blob(&self, desc: &Descriptor) -> Result<Blob, String> {
        if desc.digest.algorithm() != super::digest::Algorithm::Sha256 {
            return Err(format!("unsupported digest '{}'", desc.digest));
        }
        let name = desc.digest.blob_path();
        self.blob_named(&name, &desc.digest, desc.size, &desc.media_type)
    }

    /// The size of the file or member `name` (already checked by [`inside_name`]).
    fn size_of(&self, name: &str) -> Result<u64, String> {
        match self {
            Layout::Tar { members, .. } => members
                .get(name)
                .map(|m| m.1)
                .ok_or_else(|| format!("no '{name}' in the archive")),
            Layout::Dir(root) => open_beneath(root, name)
                .and_then(|f| f.metadata())
                .map(|m| m.len())
                .map_err(|e| format!("{name}: {e}")),
        }
    }

    fn blob_named(
        &self,
        name: &str,
        digest: &Digest,
        size: u64,
        media_type: &str,
    ) -> Result<Blob, String> {
        Ok(Blob {
            media_type: media_type.to_string(),
            digest: digest.clone(),
            size,
            location: self.location(name, size)?,
            verified: false,
        })
    }

    /// Where `name` is, checked to be `size` bytes.
    fn location(&self, name: &str, size: u64) -> Result<BlobLocation, String> {
        let actual = self.size_of(name)?;
        if actual != size {
            return Err(format!(
                "'{name}' is {actual} bytes, the manifest says {size}"
            ));
        }
        Ok(match self {
            Layout::Tar { path, members } => BlobLocation::InTar {
                path: path.clone(),
                offset: members.get(name).map_or(0, |m| m.0),
            },
            Layout::Dir(root) => BlobLocation::InDir {
                root: root.clone(),
                name: name.to_string(),
            },
        })
    }

    /// A metadata file (`index.json`, `manifest.json`), if the image has it.
    fn file(&self, name: &str) -> Result<Option<Vec<u8>>, String> {
        let size = match self.size_of(name) {
            Ok(size) => size,
            Err(_) if !self.has(name) => return Ok(None),
            Err(e) => return Err(e),
        };
        if size > MAX_MANIFEST {
            return Err(format!(
                "{name} is {size} bytes, more than a manifest may be ({} MiB)",
                MAX_MANIFEST >> 20
            ));
        }
        self.location(name, size)?
            .read_all(size, &name)
            .map(Some)
            .map_err(|e| format!("{name}: {e}"))
    }

    /// Whether `name` exists at all (a broken or hostile one is not "absent").
    fn has(&self, name: &str) -> bool {
        match self {
            Layout::Tar { members, .. } => members.contains_key(name),
            Layout::Dir(root) => {
                !matches!(open_beneath(root, name), Err(e) if e.kind() == io::ErrorKind::NotFound)
            }
        }
    }
}

/// A name a manifest gives for a file of the image, made relative (`./` and empty components
/// dropped). Refused: an absolute path, and any `..` component: blobs are read only from
/// inside the image.
pub fn inside_name(name: &str) -> Result<String, String> {
    if name.starts_with('/') {
        return Err(format!("'{name}' is an absolute path, outside the image"));
    }
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("'{name}' goes up ('..'), outside the image")),
            p if p.contains('\0') => return Err(format!("'{name}' holds a NUL byte")),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(format!("'{name}' names no file"));
    }
    Ok(parts.join("/"))
}

/// The components of a path, without empty ones and `.`.
fn components(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|b| *b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .map(<[u8]>::to_vec)
        .collect()
}

/// Open the regular file `name` beneath the directory `root`, one component at a time, each
/// relative to the directory already open and without following a symbolic link: a link is
/// read and its target walked the same way, so a link inside the image is followed while it
/// stays inside, and one that leads out (an absolute target, or `..` above `root`) is
/// refused. A link swapped in meanwhile makes the open fail, never escape. Anything but a
/// regular file (a FIFO, a device) is refused without blocking.
pub fn open_beneath(root: &Path, name: &str) -> io::Result<File> {
    const MAX_LINKS: usize = 40;
    let outside = |why: &str| io::Error::new(io::ErrorKind::PermissionDenied, why.to_string());
    let not_a_file = || io::Error::new(io::ErrorKind::InvalidInput, "not a regular file");
    let root_fd = rustix::fs::openat(
        CWD,
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut dirs = vec![root_fd];
    // The components still to walk, the next one last.
    let mut pending = components(name.as_bytes());
    pending.reverse();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == b".." {
            if dirs.len() == 1 {
                return Err(outside("a symbolic link that leads outside the image"));
            }
            dirs.pop();
            continue;
        }
        let Some(dir) = dirs.last() else {
            return Err(not_a_file());
        };
        let part = OsStr::from_bytes(&part);
        match rustix::fs::readlinkat(dir, part, Vec::new()) {
            Ok(target) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(outside("too many levels of symbolic links"));
                }
                let target = target.into_bytes();
                if target.starts_with(b"/") {
                    return Err(outside(
                        "a symbolic link to an absolute path, outside the image",
                    ));
                }
                let mut more = components(&target);
                more.reverse();
                pending.extend(more);
                continue;
            }
            // Not a symbolic link.
            Err(rustix::io::Errno::INVAL) => {}
            Err(e) => return Err(e.into()),
        }
        let last = pending.is_empty();
        let flags = OFlags::RDONLY
            | OFlags::CLOEXEC
            | OFlags::NOFOLLOW
            | if last {
                OFlags::NONBLOCK | OFlags::NOCTTY
            } else {
                OFlags::DIRECTORY
            };
        let fd = rustix::fs::openat(dir, part, flags, Mode::empty())?;
        if last {
            let stat = rustix::fs::fstat(&fd)?;
            if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
                return Err(not_a_file());
            }
            return Ok(File::from(fd));
        }
        dirs.push(fd);
    }
    Err(not_a_file())
}

/// The index of a tar's members: each regular file's name, made relative by [`inside_name`]
/// (names that leave the archive are left out), to its data's offset and size.
pub fn tar_members(path: &Path) -> Result<BTreeMap<String, (u64, u64)>, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut archive = ::tar::Archive::new(file);
    let mut members = BTreeMap::new();
    let mut any = false;
    for entry in archive.entries().map_err(|e| format!("not a tar: {e}"))? {
        let entry = entry.map_err(|e| format!("not a tar: {e}"))?;
        any = true;
        // Only regular files can be blobs; links and names that leave the archive's root
        // are nothing a manifest can name.
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let raw = entry.path_bytes();
        let Ok(name) = inside_name(&String::from_utf8_lossy(&raw)) else {
            continue;
        };
        members.insert(name, (entry.raw_file_position(), entry.size()));
    }
    if !any {
        return Err("not a tar (no members)".to_string());
    }
    Ok(members)
}

/// The layout at `path`: an image directory, or a tar's regular-file members.
fn layout_of(path: &Path) -> Result<Layout, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    Ok(if meta.is_dir() {
        Layout::Dir(path.to_path_buf())
    } else {
        Layout::Tar {
            path: path.to_path_buf(),
            members: tar_members(path)?,
        }
    })
}

/// A [`LayoutError`] naming `path`.
fn error_at(path: &Path) -> impl Fn(String) -> LayoutError + '_ {
    move |message| LayoutError {
        path: path.display().to_string(),
        message,
    }
}

/// Read an image: a tar (docker+OCI, OCI or docker-archive) or an OCI layout directory.
pub fn open(path: &Path) -> Result<SourceImage, LayoutError> {
    let err = error_at(path);
    let layout = layout_of(path).map_err(&err)?;
    image_in(&layout).map_err(err)
}

/// The one image of a layout: an OCI layout's, else a docker-archive's.
fn image_in(layout: &Layout) -> Result<SourceImage, String> {
    if let Some(index) = layout.file("index.json")? {
        from_index(layout, &index)
    } else if let Some(manifest) = layout.file("manifest.json")? {
        from_docker_archive(layout, &manifest)
    } else {
        Err("neither an OCI layout (index.json) nor a docker-archive (manifest.json)".to_string())
    }
}

/// An image index ready to push: the index manifest's exact bytes and, in its order, the
/// image of each platform.
#[derive(Debug, Clone)]
pub struct SourceIndex {
    pub index: Vec<u8>,
    pub media_type: String,
    pub images: Vec<SourceImage>,
    /// The tag the index was made with (`org.opencontainers.image.ref.name`).
    pub tag: Option<String>,
}

/// What an image file holds: one image, or an index of several platforms.
#[derive(Debug, Clone)]
pub enum Source {
    Image(SourceImage),
    Index(SourceIndex),
}

/// Read an image or an image index: an OCI layout whose `index.json` names one index
/// manifest (`mkindex`'s output) is an index; anything else is read by [`open`].
pub fn open_source(path: &Path) -> Result<Source, LayoutError> {
    let err = error_at(path);
    let layout = layout_of(path).map_err(&err)?;
    if let Some(top) = layout.file("index.json").map_err(&err)?
        && let Some(desc) = nested_index(&top).map_err(&err)?
    {
        return from_nested_index(&layout, desc)
            .map(Source::Index)
            .map_err(err);
    }
    image_in(&layout).map(Source::Image).map_err(err)
}

/// The descriptor of the index manifest `index.json` names, if it names exactly one.
fn nested_index(top: &[u8]) -> Result<Option<Descriptor>, String> {
    let top: OciIndex = serde_json::from_slice(top).map_err(|e| format!("index.json: {e}"))?;
    match <[Descriptor; 1]>::try_from(top.manifests) {
        Ok([desc]) if desc.media_type == OCI_INDEX => Ok(Some(desc)),
        _ => Ok(None),
    }
}

/// The `org.opencontainers.image.ref.name` annotation of `desc`.
fn ref_name(desc: &Descriptor) -> Option<String> {
    desc.annotations
        .as_ref()
        .and_then(|a| a.get("org.opencontainers.image.ref.name"))
        .cloned()
}

/// `what` must be at most [`MAX_MANIFEST`] bytes.
fn check_manifest_size(what: &str, size: u64) -> Result<(), String> {
    if size > MAX_MANIFEST {
        return Err(format!(
            "{what} is {size} bytes, more than a manifest may be ({} MiB)",
            MAX_MANIFEST >> 20
        ));
    }
    Ok(())
}

/// The bytes of the blob `desc` names, checked against its digest.
fn verified_blob(layout: &Layout, desc: &Descriptor, what: &str) -> Result<Vec<u8>, String> {
    let bytes = layout
        .blob(desc)?
        .read_all()
        .map_err(|e| format!("{what}: {e}"))?;
    let got = Digest::sha256_of(&bytes);
    if got != desc.digest {
        return Err(format!(
            "{what} {} holds bytes that hash to {got}: the image is corrupt",
            desc.digest
        ));
    }
    Ok(bytes)
}

fn from_nested_index(layout: &Layout, desc: Descriptor) -> Result<SourceIndex, String> {
    check_manifest_size("index.json: the index", desc.size)?;
    let tag = ref_name(&desc);
    let index = verified_blob(layout, &desc, "index")?;
    let parsed: OciIndex =
        serde_json::from_slice(&index).map_err(|e| format!("index {}: {e}", desc.digest))?;
    if parsed.manifests.is_empty() {
        return Err(format!("index {}: no manifests", desc.digest));
    }
    let mut images = Vec::new();
    for d in parsed.manifests {
        if !media_type::is_image_manifest(&d.media_type) {
            return Err(format!(
                "index {}: {} is a '{}', not an image manifest",
                desc.digest, d.digest, d.media_type
            ));
        }
        check_manifest_size(
            &format!("index {}: manifest {}", desc.digest, d.digest),
            d.size,
        )?;
        images.push(image_of(layout, d, tag.clone())?);
    }
    Ok(SourceIndex {
        index,
        media_type: desc.media_type,
        images,
        tag,
    })
}

fn from_index(layout: &Layout, index: &[u8]) -> Result<SourceImage, String> {
    let index: OciIndex = serde_json::from_slice(index).map_err(|e| format!("index.json: {e}"))?;
    let manifests = index.manifests;
    let [desc] = <[Descriptor; 1]>::try_from(manifests).map_err(|manifests| {
        format!(
            "index.json lists {} images; push needs exactly one",
            manifests.len()
        )
    })?;
    if !media_type::is_image_manifest(&desc.media_type) {
        return Err(format!(
            "index.json: the image is a '{}', not an image manifest",
            desc.media_type
        ));
    }
    check_manifest_size("index.json: the manifest", desc.size)?;
    let tag = ref_name(&desc);
    image_of(layout, desc, tag)
}

/// The image whose manifest `desc` describes (an image manifest of at most [`MAX_MANIFEST`]
/// bytes, checked by the caller).
fn image_of(layout: &Layout, desc: Descriptor, tag: Option<String>) -> Result<SourceImage, String> {
    let manifest = verified_blob(layout, &desc, "manifest")?;
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
    let described = |raw: &str, media_type: &str| -> Result<Blob, String> {
        let name = inside_name(raw).map_err(|e| format!("manifest.json: {e}"))?;
        let size = layout.size_of(&name)?;
        let mut blob = match Digest::from_blob_path(&name) {
            Some(digest) => layout.blob_named(&name, &digest, size, media_type)?,
            None => {
                // No digest in the name: the digest is computed from the bytes.
                let location = layout.location(&name, size)?;
                let mut hasher = Digester::new(io::sink());
                io::copy(
                    &mut location.open(size).map_err(|e| e.to_string())?,
                    &mut hasher,
                )
                .map_err(|e| format!("{name}: {e}"))?;
                let digest = Digest::sha256(&hasher.finish().0).map_err(|e| e.to_string())?;
                Blob {
                    media_type: media_type.to_string(),
                    digest,
                    size,
                    location,
                    verified: true,
                }
            }
        };
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
        platform: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn names_stay_inside_the_image() {
        assert_eq!(inside_name("blobs/sha256/ab").unwrap(), "blobs/sha256/ab");
        assert_eq!(
            inside_name("./blobs//sha256/./ab").unwrap(),
            "blobs/sha256/ab"
        );
        assert_eq!(inside_name("layer.tar").unwrap(), "layer.tar");
        for bad in [
            "/etc/shadow",
            "//etc/shadow",
            "../secret",
            "blobs/sha256/../../../etc/shadow",
            "a/..",
            "..",
            "",
            ".",
            "./",
            "a\0b",
        ] {
            assert!(inside_name(bad).is_err(), "{bad:?}");
        }
    }

    fn read(root: &Path, name: &str) -> io::Result<String> {
        let mut text = String::new();
        open_beneath(root, name)?.read_to_string(&mut text)?;
        Ok(text)
    }

    #[test]
    fn files_open_beneath_the_directory_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("image");
        let outside = tmp.path().join("secret");
        std::fs::write(&outside, "secret").unwrap();
        std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
        std::fs::create_dir_all(root.join("store/sub")).unwrap();
        std::fs::write(root.join("blobs/sha256/plain"), "plain").unwrap();
        std::fs::write(root.join("store/sub/file"), "stored").unwrap();
        let link = |target: &str, at: &str| symlink(target, root.join(at)).unwrap();
        // Inside: followed.
        link("../../store/sub/file", "blobs/sha256/inside");
        link("sub/../sub/file", "store/via-dotdot");
        link("store", "store-dir");
        link("blobs/sha256/inside", "chain");
        assert_eq!(read(&root, "blobs/sha256/plain").unwrap(), "plain");
        assert_eq!(read(&root, "blobs/sha256/inside").unwrap(), "stored");
        assert_eq!(read(&root, "store/via-dotdot").unwrap(), "stored");
        assert_eq!(read(&root, "store-dir/sub/file").unwrap(), "stored");
        assert_eq!(read(&root, "chain").unwrap(), "stored");
        // Out: refused, whatever the route.
        link("../../../secret", "blobs/sha256/up");
        link(outside.to_str().unwrap(), "blobs/sha256/absolute");
        link("..", "parent");
        link("loop-b", "loop-a");
        link("loop-a", "loop-b");
        for (name, why) in [
            ("blobs/sha256/up", "outside the image"),
            ("blobs/sha256/absolute", "outside the image"),
            ("parent/secret", "outside the image"),
            ("loop-a", "symbolic links"),
        ] {
            let e = read(&root, name).unwrap_err();
            assert!(e.to_string().contains(why), "{name}: {e}");
        }
        // Not regular files: refused, without blocking on a FIFO.
        assert!(read(&root, "store").is_err());
        assert!(read(&root, "store-dir").is_err());
        let fifo = std::process::Command::new("mkfifo")
            .arg(root.join("fifo"))
            .status()
            .unwrap();
        assert!(fifo.success());
        let e = read(&root, "fifo").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        // Missing: NotFound (an image without index.json is not an error yet).
        let e = read(&root, "index.json").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    fn oci_dir(root: &Path, manifest: &[u8], named: &str) {
        std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
        std::fs::write(root.join("blobs/sha256").join(named), manifest).unwrap();
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": format!("sha256:{named}"),
            "size": manifest.len(),
        }]});
        std::fs::write(root.join("index.json"), index.to_string()).unwrap();
    }

    #[test]
    fn a_manifest_must_hash_to_its_digest() {
        let tmp = tempfile::tempdir().unwrap();
        let config = b"{}";
        let config_hex = Digest::sha256_of(config).hex().to_string();
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": format!("sha256:{config_hex}"), "size": 2},
            "layers": [],
        })
        .to_string();
        let good = tmp.path().join("good");
        oci_dir(
            &good,
            manifest.as_bytes(),
            Digest::sha256_of(manifest.as_bytes()).hex(),
        );
        std::fs::write(good.join("blobs/sha256").join(&config_hex), config).unwrap();
        let image = open(&good).unwrap();
        assert_eq!(image.manifest, manifest.as_bytes());
        assert!(!image.config.verified);

        let bad = tmp.path().join("bad");
        let other = manifest.replace("\"layers\":[]", "\"layers\":[ ]");
        oci_dir(
            &bad,
            other.as_bytes(),
            Digest::sha256_of(manifest.as_bytes()).hex(),
        );
        let e = open(&bad).unwrap_err().to_string();
        assert!(e.contains("corrupt"), "{e}");
    }

    /// A tar of `(name, kind, data)` members; names are written raw, so hostile ones too.
    fn raw_tar(path: &Path, members: &[(&str, ::tar::EntryType, &[u8])]) {
        let mut b = ::tar::Builder::new(File::create(path).unwrap());
        for (name, kind, data) in members {
            let mut h = ::tar::Header::new_ustar();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            if kind.is_symlink() {
                h.set_link_name("manifest.json").unwrap();
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.finish().unwrap();
    }

    #[test]
    fn the_member_index_holds_regular_files_inside_the_archive_only() {
        use ::tar::EntryType;
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("t.tar");
        raw_tar(
            &t,
            &[
                ("./a/b.json", EntryType::Regular, b"12345"),
                ("../evil", EntryType::Regular, b"x"),
                ("/abs", EntryType::Regular, b"x"),
                ("link", EntryType::Symlink, b""),
                ("dir/", EntryType::Directory, b""),
            ],
        );
        let members = tar_members(&t).unwrap();
        assert_eq!(members.keys().collect::<Vec<_>>(), ["a/b.json"]);
        let (offset, size) = members["a/b.json"];
        assert_eq!(size, 5);
        let data = BlobLocation::InTar { path: t, offset }
            .read_all(size, &"b")
            .unwrap();
        assert_eq!(data, b"12345");
        let empty = tmp.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(tar_members(&empty).unwrap_err().contains("not a tar"));
    }

    #[test]
    fn a_docker_archive_becomes_an_oci_manifest() {
        use ::tar::EntryType::Regular;
        let tmp = tempfile::tempdir().unwrap();
        let layer = b"layer bytes";
        let layer_digest = Digest::sha256_of(layer);
        let manifest = serde_json::json!([{
            "Config": "config.json",
            "RepoTags": ["app:7"],
            "Layers": [layer_digest.blob_path()],
        }])
        .to_string();
        let t = tmp.path().join("d.tar");
        let layer_path = layer_digest.blob_path();
        raw_tar(
            &t,
            &[
                ("manifest.json", Regular, manifest.as_bytes()),
                ("config.json", Regular, b"{}"),
                (&layer_path, Regular, layer),
            ],
        );
        let image = open(&t).unwrap();
        assert_eq!(image.tag.as_deref(), Some("7"));
        assert_eq!(image.manifest_media_type, OCI_MANIFEST);
        // The config's digest is computed (its name holds none); the layer's is its name.
        assert_eq!(image.config.digest, Digest::sha256_of(b"{}"));
        assert!(image.config.verified);
        assert_eq!(image.layers[0].digest, layer_digest);
        assert!(!image.layers[0].verified);
        assert_eq!(image.layers[0].media_type, media_type::OCI_LAYER);
        let doc: OciManifest = serde_json::from_slice(&image.manifest).unwrap();
        assert_eq!(doc.config.media_type, OCI_CONFIG);
        assert_eq!(doc.layers[0].digest, layer_digest);

        // A layer named outside the archive is refused, naming it.
        let bad = tmp.path().join("bad.tar");
        let manifest = manifest.replace(&layer_path, "../../etc/passwd");
        raw_tar(
            &bad,
            &[
                ("manifest.json", Regular, manifest.as_bytes()),
                ("config.json", Regular, b"{}"),
            ],
        );
        let e = open(&bad).unwrap_err().to_string();
        assert!(
            e.contains("outside the image") && e.contains("bad.tar"),
            "{e}"
        );
    }

    #[test]
    fn an_index_with_a_bad_digest_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("img");
        std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
        for digest in ["sha256:../../../etc/passwd", "sha256:ABC", "md5:00"] {
            let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
                "mediaType": OCI_MANIFEST, "digest": digest, "size": 2,
            }]});
            std::fs::write(root.join("index.json"), index.to_string()).unwrap();
            let e = open(&root).unwrap_err().to_string();
            assert!(
                e.contains("index.json") && e.contains("digest"),
                "{digest}: {e}"
            );
        }
    }
}
