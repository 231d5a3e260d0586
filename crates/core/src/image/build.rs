//! Building an image: an [`ImagePlan`] (every check before the first byte is written), written
//! by the [`LayoutSink`] to `-o` (put in place atomically), and a report of what was built.

use std::io::Write;
use std::path::Path;

use super::config;
use super::plan::{ImageDocuments, ImagePlan, LayerOrigin, PlannedLayer};
use super::sink::{LayoutSink, emit};
use super::{ImageError, ImageSpec, Output};
use crate::oci::Digest;
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
    /// Of the uncompressed tar.
    pub diff_id: Digest,
    /// Of the blob.
    pub digest: Digest,
    pub size: u64,
}

/// What was built.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub name: String,
    pub tag: String,
    pub layers: Vec<LayerReport>,
    /// Of the config blob: the image ID Docker shows.
    pub config_digest: Digest,
    /// Of the OCI manifest.
    pub manifest_digest: Digest,
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
    pub config_digest: Digest,
    pub manifest_digest: Digest,
    /// How many layers (base, store and customisation).
    pub layers: usize,
    /// Bytes of all layer blobs (compressed, if they are).
    pub size: u64,
    /// With `--push`: what went to the registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pushed: Option<crate::registry::PushReport>,
    /// With `--load`: what went to the engine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loaded: Option<super::sink_engine::LoadReport>,
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
            pushed: None,
            loaded: None,
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

/// What the progress line says while a layer is written.
fn label(layer: &PlannedLayer) -> String {
    match &layer.origin {
        LayerOrigin::Base(_) => "base layer".to_string(),
        LayerOrigin::Store { infos, .. } if infos.len() == 1 => "1 store path".to_string(),
        LayerOrigin::Store { infos, .. } => format!("{} store paths", infos.len()),
        LayerOrigin::Customisation => "customisation".to_string(),
    }
}

/// What a plan, written, turned out to be.
fn report(plan: &ImagePlan<'_>, docs: &ImageDocuments) -> BuildReport {
    let layers = plan
        .layers
        .iter()
        .filter_map(|l| {
            let blob = l.blob.as_ref()?;
            let source = match &l.origin {
                LayerOrigin::Base(_) => LayerSource::Base,
                LayerOrigin::Store { infos, .. } => LayerSource::Store {
                    paths: infos.iter().map(|p| p.path.to_string()).collect(),
                    cached: l.from_cache,
                },
                LayerOrigin::Customisation => LayerSource::Customisation,
            };
            Some(LayerReport {
                source,
                diff_id: blob.diff_id.clone(),
                digest: blob.digest.clone(),
                size: blob.size,
            })
        })
        .collect();
    BuildReport {
        name: plan.name.clone(),
        tag: plan.tag.clone(),
        layers,
        config_digest: docs.config_digest.clone(),
        manifest_digest: docs.manifest_digest.clone(),
        store_bytes_read: plan.store_bytes_read,
        extra_commands_output: plan.extra_commands_output.clone(),
    }
}

/// Build the image `spec` describes from `store` into `output`: the plan (every check before
/// the first byte is written), then the layout sink.
pub fn build(store: &Store, spec: &ImageSpec, output: &Output) -> Result<BuildReport, ImageError> {
    build_observed(store, spec, output, &mut |_| {})
}

/// A layer about to be written, for a caller that shows progress (the library prints nothing).
#[derive(Debug, Clone, Copy)]
pub struct LayerStarted<'a> {
    /// 1-based.
    pub number: usize,
    pub total: usize,
    /// What the layer is: `base layer`, `N store paths`, `customisation`.
    pub what: &'a str,
}

/// [`build`], telling `on_layer` as each layer starts.
pub fn build_observed(
    store: &Store,
    spec: &ImageSpec,
    output: &Output,
    on_layer: &mut dyn FnMut(LayerStarted<'_>),
) -> Result<BuildReport, ImageError> {
    let mut plan = ImagePlan::new(store, spec)?;
    let sink = LayoutSink::open(output, spec.format, spec.owner.mtime)?;
    let labels: Vec<String> = plan.layers.iter().map(label).collect();
    let total = labels.len();
    let docs = emit(&mut plan, sink, &mut |i| {
        on_layer(LayerStarted {
            number: i + 1,
            total,
            what: &labels[i],
        })
    })?;
    Ok(report(&plan, &docs))
}

/// Build the image `spec` describes and push it straight to `dest` with the registry sink
/// (see [`super::sink_registry`]): no image tar is written. `on_layer` is told as each layer
/// starts, `on_blob` about each blob when it is done.
pub fn build_and_push(
    store: &Store,
    spec: &ImageSpec,
    dest: &crate::registry::Reference,
    opts: &crate::registry::PushOptions,
    on_layer: &mut dyn FnMut(LayerStarted<'_>),
    on_blob: &dyn Fn(&crate::registry::BlobReport),
) -> Result<(BuildReport, crate::registry::PushReport), ImageError> {
    let mut plan = ImagePlan::new(store, spec)?;
    let labels: Vec<String> = plan.layers.iter().map(label).collect();
    let total = labels.len();
    let (docs, pushed) = super::sink_registry::push_plan(
        &mut plan,
        dest,
        opts,
        &mut |i| {
            on_layer(LayerStarted {
                number: i + 1,
                total,
                what: &labels[i],
            })
        },
        on_blob,
    )?;
    Ok((report(&plan, &docs), pushed))
}

/// Build the image `spec` describes and load it into a local engine with the engine sink
/// (see [`super::sink_engine`]): Docker is sent only the layers it lacks. `on_layer` is told
/// as each layer starts.
pub fn build_and_load(
    store: &Store,
    spec: &ImageSpec,
    engine: &super::sink_engine::EngineOptions,
    on_layer: &mut dyn FnMut(LayerStarted<'_>),
) -> Result<(BuildReport, super::sink_engine::LoadReport), ImageError> {
    let mut plan = ImagePlan::new(store, spec)?;
    let labels: Vec<String> = plan.layers.iter().map(label).collect();
    let total = labels.len();
    let (docs, loaded) = super::sink_engine::load_plan(&mut plan, engine, &mut |i| {
        on_layer(LayerStarted {
            number: i + 1,
            total,
            what: &labels[i],
        })
    })?;
    Ok((report(&plan, &docs), loaded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::config::OciIndex;
    use crate::testing::store_with_hello as store_with_text;

    #[test]
    fn the_report_says_what_each_layer_was_and_the_layout_names_the_manifest() {
        let t = tempfile::tempdir().unwrap();
        let (store, path) = store_with_text(&t.path().join("store"));
        let mut spec = ImageSpec::new("app", vec![vec![path.clone()]]);
        spec.tag = Some("1".into());
        spec.format = super::super::Format::OciDir;
        let mut started = Vec::new();
        let out = t.path().join("image");
        let report = build_observed(&store, &spec, &Output::Dir(out.clone()), &mut |l| {
            started.push((l.number, l.total, l.what.to_string()))
        })
        .unwrap();
        assert_eq!(
            started,
            [
                (1, 2, "1 store path".into()),
                (2, 2, "customisation".into())
            ]
        );
        assert_eq!(
            report.layers[0].source,
            LayerSource::Store {
                paths: vec![path],
                cached: false
            }
        );
        assert_eq!(report.layers[1].source, LayerSource::Customisation);
        assert!(report.store_bytes_read > 0);
        // The digests reported are those of the blobs written.
        let index: OciIndex =
            serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
        assert_eq!(index.manifests[0].digest, report.manifest_digest);
        for layer in &report.layers {
            let blob = std::fs::read(out.join(layer.digest.blob_path())).unwrap();
            assert_eq!(Digest::sha256_of(&blob), layer.digest);
            assert_eq!(blob.len() as u64, layer.size);
        }
        let summary = report.summary();
        assert_eq!((summary.image.as_str(), summary.layers), ("app:1", 2));
        assert_eq!(
            summary.size,
            report.layers.iter().map(|l| l.size).sum::<u64>()
        );
        assert!(summary.line().starts_with("built app:1 (config sha256:"));
    }

    #[test]
    fn the_summary_json_is_written_whole_beside_its_path() {
        let t = tempfile::tempdir().unwrap();
        let summary = BuildSummary {
            image: "app:1".into(),
            name: "app".into(),
            tag: "1".into(),
            config_digest: Digest::sha256_of(b"config"),
            manifest_digest: Digest::sha256_of(b"manifest"),
            layers: 2,
            size: 10,
            pushed: None,
            loaded: None,
        };
        let path = t.path().join("summary.json");
        summary.write_json(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("}\n"), "{text}");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            back["configDigest"],
            Digest::sha256_of(b"config").to_string()
        );
        // Nothing else is left in the directory (no temporary file).
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
    }
}
