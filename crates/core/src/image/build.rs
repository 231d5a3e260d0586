//! Building an image: pre-flight (every check before the first byte is written), then base
//! layers, store layers (from the cache or streamed from the store), the customisation layer,
//! the config, manifests and index, and finally the output put in place atomically.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::archive::hex;
use super::base::BaseImage;
use super::cache::{CachedLayer, LayerCache, layer_key};
use super::check::{check_name, check_no_dotdot, check_tag};
use super::config::{
    self, ContainerConfig, Descriptor, DockerManifest, History, ImageConfig, MEDIA_CONFIG,
    MEDIA_INDEX, MEDIA_MANIFEST, OciIndex, OciManifest, RootFs,
};
use super::contents::{
    ContentsDir, Customisation, NOBODY, root_entries, run_extra_commands, symlink_join,
};
use super::layer::stream_layer;
use super::output::Target;
use super::rootfs::ImageFs;
use super::start_check::{StartCheck, check_config_paths, has_command};
use super::temp::{Temp, reclaim};
use super::{ImageError, ImageSpec, MAX_LAYERS, Output};
use crate::nix::path_info::PathInfo;
use crate::nix::store_path::{AbsStorePath, StorePath};
use crate::store::Store;

/// Where a layer came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerSource {
    Base,
    /// A store layer; `cached` if its blob came from the cache without reading the store.
    Store {
        paths: Vec<String>,
        cached: bool,
    },
    Customisation,
}

/// One layer of the built image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerReport {
    pub source: LayerSource,
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    /// `sha256:<hex>` of the blob.
    pub digest: String,
    pub size: u64,
}

/// What was built.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub name: String,
    pub tag: String,
    pub layers: Vec<LayerReport>,
    /// `sha256:<hex>` of the config blob: the image ID Docker shows.
    pub config_digest: String,
    /// `sha256:<hex>` of the OCI manifest.
    pub manifest_digest: String,
    /// Bytes of store files read (cache hits read none).
    pub store_bytes_read: u64,
    /// What `--extra-commands` printed (stdout and stderr), for the caller to show.
    pub extra_commands_output: Vec<u8>,
}

/// What a build made, in one line on stderr or as `--json`: the image, its config digest
/// (the image ID Docker shows), its layers and their total size in bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildSummary {
    /// `NAME:TAG`.
    pub image: String,
    pub name: String,
    pub tag: String,
    pub config_digest: String,
    pub manifest_digest: String,
    /// How many layers (base, store and customisation).
    pub layers: usize,
    /// Bytes of all layer blobs (compressed, if they are).
    pub size: u64,
}

impl BuildReport {
    pub fn summary(&self) -> BuildSummary {
        BuildSummary {
            image: format!("{}:{}", self.name, self.tag),
            name: self.name.clone(),
            tag: self.tag.clone(),
            config_digest: self.config_digest.clone(),
            manifest_digest: self.manifest_digest.clone(),
            layers: self.layers.len(),
            size: self.layers.iter().map(|l| l.size).sum(),
        }
    }
}

impl BuildSummary {
    /// `built app:1 (config sha256:…, 3 layers, 1234 bytes)`.
    pub fn line(&self) -> String {
        format!(
            "built {} (config {}, {} layers, {} bytes)",
            self.image, self.config_digest, self.layers, self.size
        )
    }

    /// Write the summary as JSON to `path`, whole or not at all (a temporary file beside
    /// it, renamed).
    pub fn write_json(&self, path: &Path) -> Result<(), ImageError> {
        let mut text = config::to_bytes(self);
        text.push(b'\n');
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut temp = tempfile::Builder::new()
            .prefix(".mkimage-json-")
            .tempfile_in(dir)
            .map_err(ImageError::io(dir))?;
        temp.write_all(&text).map_err(ImageError::io(path))?;
        temp.persist(path)
            .map_err(|e| ImageError::io(path)(e.error))?;
        Ok(())
    }
}

/// The prefix of the customisation scratch directory in `$TMPDIR` (`mkimage-root-XXXXXX.tmp`).
const SCRATCH_PREFIX: &str = "mkimage-root-";

/// A store layer after the pre-flight.
struct StoreLayer {
    infos: Vec<PathInfo>,
}

/// Resolve and check the layers: store paths only, each in one layer, valid in the store, and
/// every reference inside the image.
fn resolve_layers(
    store: &Store,
    layers: &[Vec<String>],
    partial: bool,
) -> Result<Vec<StoreLayer>, ImageError> {
    let mut seen: BTreeMap<StorePath, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        if layer.is_empty() {
            return Err(ImageError::Invalid(format!(
                "layer {} of the layers JSON is empty",
                i + 1
            )));
        }
        let mut infos = Vec::new();
        for text in layer {
            check_no_dotdot(text, "store path")?;
            let path = store
                .store_dir()
                .parse_path(text)
                .map_err(|e| ImageError::Invalid(format!("layers JSON: {e}")))?;
            if let Some(prev) = seen.insert(path.clone(), i) {
                return Err(ImageError::Invalid(format!(
                    "'{text}' is in layer {} and layer {}; a path belongs to one layer",
                    prev + 1,
                    i + 1
                )));
            }
            let info = store.query(&path)?.ok_or_else(|| {
                ImageError::Invalid(format!(
                    "unknown store path '{text}': not valid in the store at '{}'",
                    store.root().display()
                ))
            })?;
            infos.push(info);
        }
        out.push(StoreLayer { infos });
    }
    let all: BTreeSet<&AbsStorePath> = out
        .iter()
        .flat_map(|l| l.infos.iter().map(|i| &i.path))
        .collect();
    for info in out.iter().flat_map(|l| &l.infos) {
        if partial {
            break;
        }
        if let Some(missing) = info.references.iter().find(|r| !all.contains(r)) {
            return Err(ImageError::Invalid(format!(
                "'{}' refers to '{missing}', which is in no layer (the layers must hold a whole closure, or give --allow-partial-closure)",
                info.path
            )));
        }
    }
    Ok(out)
}

/// Resolve `--contents`: inside a store path that is in some layer, no `..`. (That it is a
/// real directory, reached without a symlink, is checked when it is read.)
fn resolve_contents(
    store: &Store,
    contents: &[String],
    layers: &[StoreLayer],
) -> Result<Vec<ContentsDir>, ImageError> {
    let in_layers: BTreeSet<&StorePath> = layers
        .iter()
        .flat_map(|l| l.infos.iter().map(|i| &i.path.path))
        .collect();
    let mut out = Vec::new();
    for text in contents {
        check_no_dotdot(text, "--contents path")?;
        let (path, tail) = store
            .store_dir()
            .parse_path_prefix(text.trim_end_matches('/'))
            .map_err(|e| ImageError::Invalid(format!("--contents: {e}")))?;
        if !in_layers.contains(&path) {
            return Err(ImageError::Invalid(format!(
                "--contents '{text}' is in no layer (add it to the layers so its links resolve)"
            )));
        }
        out.push(ContentsDir {
            logical: text.trim_end_matches('/').to_string(),
            store_dir: store.physical_store_dir(),
            rel: Path::new(&path.base_name()).join(tail.trim_start_matches('/')),
        });
    }
    Ok(out)
}

/// A hash of every input: the default tag.
fn inputs_hash(
    spec: &ImageSpec,
    layers: &[StoreLayer],
    base: Option<&BaseImage>,
) -> Result<String, ImageError> {
    let doc = serde_json::json!({
        "v": "strata-mkimage-v1",
        "name": spec.name,
        "layers": layers.iter().map(|l| l.infos.iter().map(|i| {
            serde_json::json!([i.path.to_string(), i.nar_hash.0.to_typed_nix32()])
        }).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "contents": spec.contents,
        "extraCommands": spec.extra_commands,
        "perms": spec.perms.iter().map(|p| p.text.clone()).collect::<Vec<_>>(),
        "ignoreCollisions": spec.ignore_collisions,
        "config": spec.config,
        "created": spec.created,
        "owner": [spec.owner.uid.to_string(), spec.owner.gid.to_string(), spec.owner.uname.clone(), spec.owner.gname.clone(), spec.owner.mtime.to_string()],
        "architecture": spec.architecture,
        "os": spec.os,
        "compression": spec.compression.name(),
        "base": base.map(|b| hex(&Sha256::digest(&b.config_bytes))),
    });
    let bytes = serde_json::to_vec(&doc).map_err(|e| ImageError::Stream(e.to_string()))?;
    Ok(hex(&Sha256::digest(bytes))[..32].to_string())
}

struct Progress {
    on: bool,
    total: usize,
}

impl Progress {
    fn show(&self, n: usize, what: &str) {
        if self.on {
            eprint!("\r\x1b[Kmkimage: layer {n}/{}: {what}", self.total);
        }
    }
    /// Clear the line: the summary mkimage prints takes its place.
    fn done(&self) {
        if self.on {
            eprint!("\r\x1b[K");
        }
    }
}

/// Build the image `spec` describes from `store` into `output`.
pub fn build(store: &Store, spec: &ImageSpec, output: &Output) -> Result<BuildReport, ImageError> {
    // Pre-flight: nothing is written until all of these pass.
    check_name(&spec.name)?;
    if let Some(tag) = &spec.tag {
        check_tag(tag)?;
    }
    let layers = resolve_layers(store, &spec.layers, spec.allow_partial_closure)?;
    let contents = resolve_contents(store, &spec.contents, &layers)?;
    let names: BTreeSet<String> = layers
        .iter()
        .flat_map(|l| l.infos.iter().map(|i| i.path.path.base_name()))
        .collect();
    let base = spec.from.as_deref().map(BaseImage::open).transpose()?;
    let base_count = base.as_ref().map_or(0, |b| b.layers.len());
    let total = base_count + layers.len() + 1;
    if total > MAX_LAYERS {
        return Err(ImageError::Invalid(format!(
            "{total} layers ({base_count} base + {} store + 1 customisation) exceed the limit of {MAX_LAYERS}; use fewer layers (mklayers --max-layers)",
            layers.len()
        )));
    }
    let mut config_doc: ContainerConfig = spec.config.clone();
    if let Some(b) = &base {
        let ours = config_doc.env.take().unwrap_or_default();
        let merged = config::merge_env(&b.env, &ours);
        if !merged.is_empty() {
            config_doc.env = Some(merged);
        }
    }
    if !spec.allow_partial_closure {
        check_config_paths(store.store_dir().as_str(), &config_doc, &names)?;
    }
    let tag = match &spec.tag {
        Some(t) => t.clone(),
        None => inputs_hash(spec, &layers, base.as_ref())?,
    };
    let cache = spec
        .cache
        .as_deref()
        .map(|d| LayerCache::open(d).map_err(ImageError::io(d)))
        .transpose()?;
    let stream = |e: io::Error| ImageError::Stream(e.to_string());

    // The customisation root: built before the output is opened, so a failing script or a
    // collision stops the build before the store is read.
    let custom = Customisation {
        contents,
        extra_commands: spec.extra_commands.clone(),
        perms: spec.perms.clone(),
        ignore_collisions: spec.ignore_collisions,
    };
    // Locked and registered: removed on an error or a signal, reclaimed after a kill.
    let tmpdir = std::env::temp_dir();
    reclaim(&tmpdir, SCRATCH_PREFIX);
    let scratch = Temp::dir(&tmpdir, SCRATCH_PREFIX).map_err(ImageError::io(&tmpdir))?;
    // Traversable, so extra commands run as nobody can reach the root (but not rename it).
    fs::set_permissions(scratch.path(), fs::Permissions::from_mode(0o711))
        .map_err(ImageError::io(scratch.path()))?;
    let root = scratch.path().join("root");
    fs::create_dir(&root).map_err(ImageError::io(&root))?;
    symlink_join(&custom.contents, &root, custom.ignore_collisions)?;
    let mut file_owner = None;
    let mut extra_commands_output = Vec::new();
    if let Some(script) = &custom.extra_commands {
        extra_commands_output = run_extra_commands(script, &root, spec.owner.mtime)?;
        if rustix::process::geteuid().is_root() {
            file_owner = Some(NOBODY);
        }
    }
    let entries = root_entries(&root, &custom.perms, spec.owner.mtime, file_owner)?;
    // A base image's files are not looked at: with --from, nothing is checked.
    if spec.start_check && base.is_none() && has_command(&config_doc) {
        let store_dir = store.store_dir().as_str();
        let fs = ImageFs::open(&root, &store.physical_store_dir(), store_dir, names.clone())?;
        StartCheck {
            fs: &fs,
            store,
            layers: &names,
            config: &config_doc,
            architecture: &spec.architecture,
        }
        .run()?;
    }

    let (target, mut sink) = Target::open(output, spec.format, spec.owner.mtime)?;
    let progress = Progress {
        on: spec.progress && io::stderr().is_terminal(),
        total,
    };
    let mut reports: Vec<LayerReport> = Vec::new();
    let mut media: Vec<&'static str> = Vec::new();
    let mut history: Vec<History> = Vec::new();
    let mut store_bytes_read = 0u64;

    if let Some(b) = &base {
        for (i, layer) in b.layers.iter().enumerate() {
            progress.show(i + 1, "base layer");
            let (digest, compression) = b.copy_layer(layer, &mut sink)?;
            reports.push(LayerReport {
                source: LayerSource::Base,
                diff_id: layer.diff_id.clone(),
                digest: format!("sha256:{digest}"),
                size: layer.size,
            });
            media.push(compression.media_type());
            history.push(History {
                created: spec.created.clone(),
                created_by: "strata mkimage --from".into(),
                comment: Some(format!("base layer {}", layer.name)),
            });
        }
    }

    let store_dir = store.store_dir().as_str();
    for (i, layer) in layers.iter().enumerate() {
        let n = base_count + i + 1;
        let names: Vec<String> = layer.infos.iter().map(|p| p.path.to_string()).collect();
        progress.show(n, &format!("{} store paths", names.len()));
        let refs: Vec<&PathInfo> = layer.infos.iter().collect();
        let key = layer_key(spec.compression.name(), &spec.owner, store_dir, &refs);
        let hit = cache.as_ref().and_then(|c| c.get(&key));
        // A cached blob is used only if its bytes hash to its digest (checked while copied).
        let hit = match hit {
            Some((rec, blob)) => sink
                .copy_blob(&blob, &rec.digest, rec.size)
                .map_err(ImageError::io(&blob))?
                .then_some(rec),
            None => None,
        };
        let (rec, cached) = match hit {
            Some(rec) => (rec, true),
            None => {
                let phys: Vec<(String, PathBuf)> = layer
                    .infos
                    .iter()
                    .map(|p| (p.path.to_string(), store.physical_path(&p.path.path)))
                    .collect();
                let pairs: Vec<(String, &Path)> =
                    phys.iter().map(|(l, p)| (l.clone(), p.as_path())).collect();
                let entries = super::layer::store_layer_entries(store_dir, &pairs, &spec.owner)?;
                store_bytes_read += entries.iter().map(|e| e.size()).sum::<u64>();
                let temp = match &cache {
                    Some(c) => Some(c.create_temp().map_err(stream)?),
                    None => None,
                };
                sink.begin_blob().map_err(stream)?;
                let info = {
                    let mut file = temp.as_ref().map(|t| t.file_handle());
                    let copy = file.as_mut().map(|f| f as &mut (dyn Write + Send));
                    stream_layer(&entries, spec.compression, sink.blob_writer(), copy)?
                };
                sink.end_blob(&info.digest, info.size).map_err(stream)?;
                let rec = CachedLayer {
                    diff_id: format!("sha256:{}", info.diff_id),
                    digest: info.digest,
                    size: info.size,
                };
                if let (Some(c), Some(t)) = (&cache, temp) {
                    c.commit(&key, t, &rec).map_err(stream)?;
                }
                (rec, false)
            }
        };
        history.push(History {
            created: spec.created.clone(),
            created_by: "strata mkimage".into(),
            comment: Some(format!("store paths: {}", names.join(" "))),
        });
        reports.push(LayerReport {
            source: LayerSource::Store {
                paths: names,
                cached,
            },
            diff_id: rec.diff_id,
            digest: format!("sha256:{}", rec.digest),
            size: rec.size,
        });
        media.push(spec.compression.media_type());
    }

    progress.show(total, "customisation");
    sink.begin_blob().map_err(stream)?;
    let info = stream_layer(&entries, spec.compression, sink.blob_writer(), None)?;
    sink.end_blob(&info.digest, info.size).map_err(stream)?;
    drop(scratch);
    reports.push(LayerReport {
        source: LayerSource::Customisation,
        diff_id: format!("sha256:{}", info.diff_id),
        digest: format!("sha256:{}", info.digest),
        size: info.size,
    });
    media.push(spec.compression.media_type());
    history.push(History {
        created: spec.created.clone(),
        created_by: "strata mkimage".into(),
        comment: Some(if spec.contents.is_empty() {
            "customisation layer".to_string()
        } else {
            format!("customisation layer: contents {}", spec.contents.join(" "))
        }),
    });
    progress.done();

    // Config, manifests, index.
    let image_config = ImageConfig {
        architecture: spec.architecture.clone(),
        config: config_doc,
        created: spec.created.clone(),
        history,
        os: spec.os.clone(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: reports.iter().map(|r| r.diff_id.clone()).collect(),
        },
    };
    let config_bytes = config::to_bytes(&image_config);
    let config_digest = sink.put_blob(&config_bytes).map_err(stream)?;
    let manifest = OciManifest {
        schema_version: 2,
        media_type: MEDIA_MANIFEST.into(),
        config: Descriptor {
            media_type: MEDIA_CONFIG.into(),
            digest: format!("sha256:{config_digest}"),
            size: config_bytes.len() as u64,
            annotations: None,
        },
        layers: reports
            .iter()
            .zip(&media)
            .map(|(r, m)| Descriptor {
                media_type: (*m).into(),
                digest: r.digest.clone(),
                size: r.size,
                annotations: None,
            })
            .collect(),
    };
    let manifest_bytes = config::to_bytes(&manifest);
    let manifest_digest = hex(&Sha256::digest(&manifest_bytes));
    if spec.format.has_oci() {
        sink.put_blob(&manifest_bytes).map_err(stream)?;
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "io.containerd.image.name".to_string(),
            config::qualified_name(&spec.name, &tag),
        );
        annotations.insert("org.opencontainers.image.ref.name".to_string(), tag.clone());
        let index = OciIndex {
            schema_version: 2,
            media_type: MEDIA_INDEX.into(),
            manifests: vec![Descriptor {
                media_type: MEDIA_MANIFEST.into(),
                digest: format!("sha256:{manifest_digest}"),
                size: manifest_bytes.len() as u64,
                annotations: Some(annotations),
            }],
        };
        sink.put_file("index.json", &config::to_bytes(&index))
            .map_err(stream)?;
    }
    if spec.format.has_docker() {
        let docker = vec![DockerManifest {
            config: format!("blobs/sha256/{config_digest}"),
            repo_tags: vec![format!("{}:{tag}", spec.name)],
            layers: reports
                .iter()
                .map(|r| format!("blobs/sha256/{}", r.digest.trim_start_matches("sha256:")))
                .collect(),
        }];
        sink.put_file("manifest.json", &config::to_bytes(&docker))
            .map_err(stream)?;
    }
    if spec.format.has_oci() {
        sink.put_file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(stream)?;
    }
    sink.finish().map_err(stream)?;
    target.persist()?;
    Ok(BuildReport {
        name: spec.name.clone(),
        tag,
        layers: reports,
        config_digest: format!("sha256:{config_digest}"),
        manifest_digest: format!("sha256:{manifest_digest}"),
        store_bytes_read,
        extra_commands_output,
    })
}
