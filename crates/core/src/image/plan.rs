//! The image plan: what an image is, computed once and handed to a sink (see [`super::sink`])
//! that decides where it goes. The plan is made in named phases, each a plain function:
//!
//! 1. `check_inputs`: name, tag, store layers (valid, each path in one layer, a whole
//!    closure), `--contents`, the base image, the layer limit, the config's paths, the cache.
//! 2. `customise`: the customisation root (contents joined, extra commands run, permission
//!    rules applied) and the start check — before any output is opened.
//! 3. `plan_layers`: one [`PlannedLayer`] per layer, saying where its bytes come from. A
//!    store layer the cache holds gets its digests and sizes from the cache record, without
//!    the store being read; other layers learn theirs when a sink first asks for their bytes
//!    ([`ImagePlan::write_layer`]).
//! 4. [`ImagePlan::documents`]: once every layer's blob is known, the config and manifest
//!    bytes and digests.
//!
//! Nothing here writes an output: a sink asks the plan for what it needs, layer by layer.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::archive::{BlobOut, copy_blob, hex};
use super::base::{BaseImage, BaseLayer};
use super::cache::{CachedLayer, LayerCache, layer_key};
use super::check::{check_name, check_no_dotdot, check_tag};
use super::config::{
    self, ContainerConfig, Descriptor, History, ImageConfig, MEDIA_CONFIG, MEDIA_MANIFEST,
    OciManifest, RootFs,
};
use super::contents::{ContentsDir, NOBODY, root_entries, run_extra_commands, symlink_join};
use super::custom_root::CustomRoot;
use super::layer::{Compression, stream_layer};
use super::rootfs::ImageFs;
use super::start_check::{StartCheck, check_config_paths, has_command};
use super::tar::{Entry, Owner};
use super::{ImageError, ImageSpec, MAX_LAYERS};
use crate::nix::path_info::PathInfo;
use crate::nix::store_path::{AbsStorePath, StorePath};
use crate::oci::Digest;
use crate::store::Store;

/// A store layer after the pre-flight.
#[derive(Debug)]
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
        // `arm64/v8`; a platform without a variant keeps the tags it always had.
        "architecture": spec.variant.as_ref().map_or(spec.architecture.clone(), |v| format!("{}/{v}", spec.architecture)),
        "os": spec.os,
        "compression": spec.compression.name(),
        "base": base.map(|b| hex(&Sha256::digest(&b.config_bytes))),
    });
    let bytes = serde_json::to_vec(&doc).map_err(|e| ImageError::Stream(e.to_string()))?;
    Ok(hex(&Sha256::digest(bytes))[..32].to_string())
}

/// What a layer's blob is, once known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobFacts {
    /// Of the uncompressed tar.
    pub diff_id: Digest,
    /// Of the blob.
    pub digest: Digest,
    /// Bytes of the blob (compressed, if it is).
    pub size: u64,
    pub media_type: &'static str,
}

/// Where a layer's bytes come from.
#[derive(Debug)]
pub enum LayerOrigin {
    /// A layer of the `--from` archive, copied (and checked against its diff_id).
    Base(BaseLayer),
    /// Store paths, streamed from the store, or copied from `cached` (the cache entry under
    /// `key`) if its bytes still hash to the recorded digest.
    Store {
        infos: Vec<PathInfo>,
        key: String,
        cached: Option<PathBuf>,
    },
    /// The customisation root.
    Customisation,
}

/// One layer of the plan.
#[derive(Debug)]
pub struct PlannedLayer {
    pub origin: LayerOrigin,
    /// Known from the plan (a cache hit) or once the layer has been written.
    pub blob: Option<BlobFacts>,
    /// Whether the layer came from the cache, not the store: its facts from the cache record
    /// and, if it was written, its bytes from the cache entry.
    pub from_cache: bool,
    history: History,
}

/// The computed image: its layers and, once they are known, its config and manifest.
#[derive(Debug)]
pub struct ImagePlan<'a> {
    pub name: String,
    pub tag: String,
    pub layers: Vec<PlannedLayer>,
    /// Bytes of store files read so far (cache hits read none).
    pub store_bytes_read: u64,
    store: &'a Store,
    config: ContainerConfig,
    compression: Compression,
    owner: Owner,
    base: Option<BaseImage>,
    cache: Option<LayerCache>,
    /// The customisation root (a scratch one removed, a kept one unlocked with the plan) and
    /// the layer's entries.
    custom: (CustomRoot, Vec<Entry>),
    /// What `--extra-commands` printed (stdout and stderr), for the caller to show.
    pub extra_commands_output: Vec<u8>,
    created: String,
    architecture: String,
    variant: Option<String>,
    os: String,
}

/// The config and manifest of a plan whose layers are all known.
#[derive(Debug, Clone)]
pub struct ImageDocuments {
    pub config: Vec<u8>,
    /// Of `config`.
    pub config_digest: Digest,
    /// The OCI manifest.
    pub manifest: Vec<u8>,
    /// Of `manifest`.
    pub manifest_digest: Digest,
}

/// The inputs after phase 1.
#[derive(Debug)]
pub(crate) struct Checked {
    layers: Vec<StoreLayer>,
    contents: Vec<ContentsDir>,
    /// Base names of every store path in a layer.
    names: BTreeSet<String>,
    base: Option<BaseImage>,
    config: ContainerConfig,
    tag: String,
    cache: Option<LayerCache>,
}

/// Phase 1: every check on the inputs that needs no file written.
pub(crate) fn check_inputs(store: &Store, spec: &ImageSpec) -> Result<Checked, ImageError> {
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
    let mut config = spec.config.clone();
    if let Some(b) = &base {
        let ours = config.env.take().unwrap_or_default();
        let merged = config::merge_env(&b.env, &ours);
        if !merged.is_empty() {
            config.env = Some(merged);
        }
    }
    if !spec.allow_partial_closure {
        check_config_paths(store.store_dir().as_str(), &config, &names)?;
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
    Ok(Checked {
        layers,
        contents,
        names,
        base,
        config,
        tag,
        cache,
    })
}

/// Phase 2: the customisation root, built before any output is opened so a failing script,
/// a collision or an entrypoint that cannot start stops the build before the store is read.
/// Returns the root (kept in the layer cache and brought up to date, or a scratch directory:
/// see `custom_root`) and the layer's entries.
pub(crate) fn customise(
    store: &Store,
    spec: &ImageSpec,
    checked: &Checked,
) -> Result<Customised, ImageError> {
    let tree = symlink_join(&checked.contents, spec.ignore_collisions)?;
    // As root the extra commands run as nobody, who must own the root to change it.
    let as_root = rustix::process::geteuid().is_root();
    let commands_user = (as_root && spec.extra_commands.is_some()).then_some(NOBODY);
    let cache_dir = checked.cache.as_ref().map(LayerCache::dir);
    let custom = CustomRoot::prepare(cache_dir, &tree, commands_user)?;
    let root = custom.path();
    let mut file_owner = None;
    let mut output = Vec::new();
    if let Some(script) = &spec.extra_commands {
        output = run_extra_commands(script, root, spec.owner.mtime)?;
        file_owner = commands_user;
    }
    let entries = root_entries(root, &spec.perms, spec.owner.mtime, file_owner)?;
    // A base image's files are not looked at: with --from, nothing is checked.
    if spec.start_check && checked.base.is_none() && has_command(&checked.config) {
        let store_dir = store.store_dir().as_str();
        let names = checked.names.clone();
        let fs = ImageFs::open(root, &store.physical_store_dir(), store_dir, names)?;
        StartCheck {
            fs: &fs,
            store,
            layers: &checked.names,
            config: &checked.config,
            architecture: &spec.architecture,
        }
        .run()?;
    }
    Ok(Customised {
        custom,
        entries,
        output,
    })
}

/// What phase 2 made: the customisation root, the layer's
/// entries, and what `--extra-commands` printed.
pub(crate) struct Customised {
    custom: CustomRoot,
    entries: Vec<Entry>,
    output: Vec<u8>,
}

/// Phase 3: the layers, lowest first — base layers, store layers (a cache hit's blob facts
/// taken from its record), the customisation layer.
pub(crate) fn plan_layers(
    store: &Store,
    spec: &ImageSpec,
    checked: &mut Checked,
) -> Vec<PlannedLayer> {
    let history = |created_by: &str, comment: String| History {
        created: spec.created.clone(),
        created_by: created_by.into(),
        comment: Some(comment),
    };
    // A cache hit is "from the cache" until writing it finds the entry bad and rebuilds it
    // from the store; one never written (a registry already had it) stays so.
    let planned = |origin, blob: Option<BlobFacts>, history| PlannedLayer {
        origin,
        from_cache: blob.is_some(),
        blob,
        history,
    };
    let mut out = Vec::new();
    for layer in checked.base.iter().flat_map(|b| &b.layers) {
        let h = history(
            "strata mkimage --from",
            format!("base layer {}", layer.name),
        );
        out.push(planned(LayerOrigin::Base(layer.clone()), None, h));
    }
    let store_dir = store.store_dir().as_str();
    for layer in std::mem::take(&mut checked.layers) {
        let refs: Vec<&PathInfo> = layer.infos.iter().collect();
        let key = layer_key(spec.compression.name(), &spec.owner, store_dir, &refs);
        let hit = checked.cache.as_ref().and_then(|c| c.get(&key));
        // A record that does not parse is no hit: the layer is built again.
        let hit = hit.and_then(|(rec, path)| {
            let facts = BlobFacts {
                diff_id: Digest::parse(&rec.diff_id).ok()?,
                digest: Digest::sha256(&rec.digest).ok()?,
                size: rec.size,
                media_type: spec.compression.media_type(),
            };
            Some((facts, path))
        });
        let blob = hit.as_ref().map(|(facts, _)| facts.clone());
        let names: Vec<String> = layer.infos.iter().map(|p| p.path.to_string()).collect();
        let h = history(
            "strata mkimage",
            format!("store paths: {}", names.join(" ")),
        );
        let cached = hit.map(|(_, path)| path);
        let origin = LayerOrigin::Store {
            infos: layer.infos,
            key,
            cached,
        };
        out.push(planned(origin, blob, h));
    }
    let comment = if spec.contents.is_empty() {
        "customisation layer".to_string()
    } else {
        format!("customisation layer: contents {}", spec.contents.join(" "))
    };
    let h = history("strata mkimage", comment);
    out.push(planned(LayerOrigin::Customisation, None, h));
    out
}

impl<'a> ImagePlan<'a> {
    /// Phases 1 to 3: check the inputs, build the customisation root, plan the layers.
    /// Nothing is read from the store but path metadata; no output is opened.
    pub fn new(store: &'a Store, spec: &ImageSpec) -> Result<ImagePlan<'a>, ImageError> {
        let mut checked = check_inputs(store, spec)?;
        let Customised {
            custom,
            entries,
            output,
        } = customise(store, spec, &checked)?;
        let layers = plan_layers(store, spec, &mut checked);
        Ok(ImagePlan {
            name: spec.name.clone(),
            tag: checked.tag,
            layers,
            store_bytes_read: 0,
            store,
            config: checked.config,
            compression: spec.compression,
            owner: spec.owner.clone(),
            base: checked.base,
            cache: checked.cache,
            custom: (custom, entries),
            extra_commands_output: output,
            created: spec.created.clone(),
            architecture: spec.architecture.clone(),
            variant: spec.variant.clone(),
            os: spec.os.clone(),
        })
    }

    /// Write layer `i`'s blob into `out` (each store file read at most once, none for a
    /// verified cache hit) and record what it turned out to be.
    pub fn write_layer(
        &mut self,
        i: usize,
        out: &mut dyn BlobOut,
    ) -> Result<&BlobFacts, ImageError> {
        let (facts, from_cache, read) = match &self.layers[i].origin {
            LayerOrigin::Base(layer) => (self.write_base(layer, out)?, false, 0),
            LayerOrigin::Store {
                infos, key, cached, ..
            } => self.write_store(infos, key, cached.as_deref(), &self.layers[i], out)?,
            LayerOrigin::Customisation => {
                let facts = stream_entries(&self.custom.1, self.compression, out, None)?;
                (facts, false, 0)
            }
        };
        self.store_bytes_read += read;
        let layer = &mut self.layers[i];
        layer.from_cache = from_cache;
        Ok(layer.blob.insert(facts))
    }

    fn write_base(
        &self,
        layer: &BaseLayer,
        out: &mut dyn BlobOut,
    ) -> Result<BlobFacts, ImageError> {
        let base = self
            .base
            .as_ref()
            .ok_or_else(|| ImageError::Stream("a base layer without a base image".into()))?;
        let (digest, compression) = base.copy_layer(layer, out)?;
        Ok(BlobFacts {
            diff_id: layer.diff_id.clone(),
            digest,
            size: layer.size,
            media_type: compression.media_type(),
        })
    }

    /// A store layer: the cached blob if it still hashes to its digest, else the store's
    /// files streamed (and kept in the cache, if there is one).
    fn write_store(
        &self,
        infos: &[PathInfo],
        key: &str,
        cached: Option<&Path>,
        layer: &PlannedLayer,
        out: &mut dyn BlobOut,
    ) -> Result<(BlobFacts, bool, u64), ImageError> {
        let stream = ImageError::stream;
        if let (Some(path), Some(facts)) = (cached, &layer.blob)
            && copy_blob(out, path, facts.digest.hex(), facts.size).map_err(ImageError::io(path))?
        {
            return Ok((facts.clone(), true, 0));
        }
        let store_dir = self.store.store_dir().as_str();
        let phys: Vec<(String, PathBuf)> = infos
            .iter()
            .map(|p| (p.path.to_string(), self.store.physical_path(&p.path.path)))
            .collect();
        let pairs: Vec<(String, &Path)> =
            phys.iter().map(|(l, p)| (l.clone(), p.as_path())).collect();
        let entries = super::layer::store_layer_entries(store_dir, &pairs, &self.owner)?;
        let read = entries.iter().map(|e| e.size()).sum::<u64>();
        let temp = match &self.cache {
            Some(c) => Some(c.create_temp().map_err(stream)?),
            None => None,
        };
        let facts = {
            let mut file = temp.as_ref().map(|t| t.file_handle());
            let copy = file.as_mut().map(|f| f as &mut (dyn Write + Send));
            stream_entries(&entries, self.compression, out, copy)?
        };
        if let (Some(c), Some(t)) = (&self.cache, temp) {
            let rec = CachedLayer {
                diff_id: facts.diff_id.to_string(),
                digest: facts.digest.hex().to_string(),
                size: facts.size,
            };
            c.commit(key, t, &rec).map_err(stream)?;
        }
        Ok((facts, false, read))
    }

    /// Phase 4: the config and the OCI manifest. Every layer must be known (planned from the
    /// cache or written).
    pub fn documents(&self) -> Result<ImageDocuments, ImageError> {
        let blobs = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                l.blob
                    .as_ref()
                    .ok_or_else(|| ImageError::Stream(format!("layer {} is not known yet", i + 1)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let image_config = ImageConfig {
            architecture: self.architecture.clone(),
            config: self.config.clone(),
            created: self.created.clone(),
            history: self.layers.iter().map(|l| l.history.clone()).collect(),
            os: self.os.clone(),
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: blobs.iter().map(|b| b.diff_id.to_string()).collect(),
            },
            variant: self.variant.clone(),
        };
        let config = config::to_bytes(&image_config);
        let config_digest = Digest::sha256_of(&config);
        let layers = blobs
            .iter()
            .map(|b| {
                Ok(Descriptor {
                    media_type: b.media_type.into(),
                    digest: b.digest.clone(),
                    size: b.size,
                    annotations: None,
                    platform: None,
                })
            })
            .collect::<Result<Vec<_>, ImageError>>()?;
        let manifest = OciManifest {
            schema_version: 2,
            media_type: MEDIA_MANIFEST.into(),
            config: Descriptor {
                media_type: MEDIA_CONFIG.into(),
                size: config.len() as u64,
                digest: config_digest.clone(),
                annotations: None,
                platform: None,
            },
            layers,
        };

        let manifest = config::to_bytes(&manifest);
        let manifest_digest = Digest::sha256_of(&manifest);
        Ok(ImageDocuments {
            config,
            config_digest,
            manifest,
            manifest_digest,
        })
    }
}

/// Stream a layer of `entries` into `out` as one blob.
fn stream_entries(
    entries: &[Entry],
    compression: Compression,
    out: &mut dyn BlobOut,
    copy: Option<&mut (dyn Write + Send)>,
) -> Result<BlobFacts, ImageError> {
    let stream = ImageError::stream;
    out.begin_blob().map_err(stream)?;
    let info = stream_layer(entries, compression, out.blob_writer(), copy)?;
    out.end_blob(&info.digest, info.size).map_err(stream)?;
    Ok(BlobFacts {
        diff_id: Digest::sha256(&info.diff_id).map_err(|e| ImageError::Stream(e.to_string()))?,
        digest: Digest::sha256(&info.digest).map_err(|e| ImageError::Stream(e.to_string()))?,
        size: info.size,
        media_type: compression.media_type(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io;

    /// A blob output that keeps every blob in memory.
    #[derive(Default)]
    struct Memory {
        blobs: Vec<(String, Vec<u8>)>,
        current: Vec<u8>,
    }

    impl BlobOut for Memory {
        fn begin_blob(&mut self) -> io::Result<()> {
            self.current.clear();
            Ok(())
        }
        fn blob_writer(&mut self) -> &mut (dyn Write + Send) {
            &mut self.current
        }
        fn end_blob(&mut self, digest: &str, _size: u64) -> io::Result<()> {
            let data = std::mem::take(&mut self.current);
            self.blobs.push((digest.to_string(), data));
            Ok(())
        }
        fn abort_blob(&mut self) -> io::Result<()> {
            self.current.clear();
            Ok(())
        }
    }

    fn store(root: &Path) -> (Store, String) {
        crate::testing::store_with_hello(root)
    }

    fn spec(path: &str, cache: &Path) -> ImageSpec {
        let mut spec = ImageSpec::new("app", vec![vec![path.to_string()]]);
        spec.tag = Some("1".into());
        spec.cache = Some(cache.to_path_buf());
        spec
    }

    fn write_all(plan: &mut ImagePlan<'_>) -> Memory {
        let mut out = Memory::default();
        for i in 0..plan.layers.len() {
            plan.write_layer(i, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn a_cached_layer_is_known_from_the_plan_and_copied_without_reading_the_store() {
        let t = tempfile::tempdir().unwrap();
        let (store, path) = store(&t.path().join("store"));
        let spec = spec(&path, &t.path().join("cache"));

        let mut first = ImagePlan::new(&store, &spec).unwrap();
        assert!(first.layers.iter().all(|l| l.blob.is_none()));
        assert!(
            first.documents().is_err(),
            "nothing is known before writing"
        );
        let out = write_all(&mut first);
        assert!(first.store_bytes_read > 0);
        let docs = first.documents().unwrap();

        let mut second = ImagePlan::new(&store, &spec).unwrap();
        // The store layer's facts come from the cache before anything is written.
        assert_eq!(second.layers[0].blob, first.layers[0].blob);
        assert!(second.layers[1].blob.is_none());
        let again = write_all(&mut second);
        assert_eq!(second.store_bytes_read, 0);
        assert!(second.layers[0].from_cache);
        assert_eq!(again.blobs, out.blobs);
        assert_eq!(second.documents().unwrap().manifest, docs.manifest);
    }

    #[test]
    fn a_cache_entry_that_does_not_hash_to_its_digest_is_rebuilt_from_the_store() {
        let t = tempfile::tempdir().unwrap();
        let (store, path) = store(&t.path().join("store"));
        let spec = spec(&path, &t.path().join("cache"));
        let mut first = ImagePlan::new(&store, &spec).unwrap();
        let out = write_all(&mut first);
        let blob = match &ImagePlan::new(&store, &spec).unwrap().layers[0].origin {
            LayerOrigin::Store { cached, .. } => cached.clone().unwrap(),
            other => panic!("{other:?}"),
        };
        let mut bytes = fs::read(&blob).unwrap();
        bytes[0] ^= 1;
        fs::write(&blob, bytes).unwrap();
        let mut second = ImagePlan::new(&store, &spec).unwrap();
        let again = write_all(&mut second);
        assert!(!second.layers[0].from_cache);
        assert!(second.store_bytes_read > 0);
        assert_eq!(again.blobs, out.blobs);
    }

    /// A sink that takes only the layers it cannot know in advance, as a registry sink
    /// would for blobs the registry already has.
    struct SkipKnown {
        out: Memory,
    }

    impl super::super::sink::ImageSink for SkipKnown {
        fn layer(&mut self, plan: &mut ImagePlan<'_>, i: usize) -> Result<(), ImageError> {
            if plan.layers[i].blob.is_some() {
                return Ok(());
            }
            plan.write_layer(i, &mut self.out).map(|_| ())
        }
        fn finish(self, _: &ImagePlan<'_>, _: &ImageDocuments) -> Result<(), ImageError> {
            Ok(())
        }
    }

    #[test]
    fn a_sink_may_skip_a_layer_the_plan_knows_and_the_documents_are_the_same() {
        let t = tempfile::tempdir().unwrap();
        let (store, path) = store(&t.path().join("store"));
        let spec = spec(&path, &t.path().join("cache"));
        let mut first = ImagePlan::new(&store, &spec).unwrap();
        write_all(&mut first);
        let docs = first.documents().unwrap();

        let mut plan = ImagePlan::new(&store, &spec).unwrap();
        let sink = SkipKnown {
            out: Memory::default(),
        };
        let mut seen = Vec::new();
        let again = super::super::sink::emit(&mut plan, sink, &mut |i| seen.push(i)).unwrap();
        assert_eq!(seen, [0, 1]);
        assert_eq!(plan.store_bytes_read, 0);
        // Not copied, not read from the store: it came from the cache record alone.
        assert!(plan.layers[0].from_cache);
        assert_eq!(again.manifest, docs.manifest);
        assert_eq!(again.config_digest, docs.config_digest);
    }
}
