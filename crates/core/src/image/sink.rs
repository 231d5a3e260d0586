//! Sinks: where an [`ImagePlan`] goes. A sink takes the plan's layers one by one, then its
//! config and manifest ([`ImagePlan::documents`]), and asks the plan only for what it needs:
//! [`ImagePlan::write_layer`] streams a layer's bytes (each store file read once, none for a
//! verified cache hit) into the sink's [`BlobOut`]. Adding a sink adds a type (here or in a
//! `sink_*` module); the phases of the plan do not change.
//!
//! The sinks: [`LayoutSink`] here (the image as one tar that is a docker-archive and an OCI
//! layout, either alone, or an OCI layout directory: the [`Format`]s);
//! [`super::sink_registry`] (pushed straight to a registry: a layer the plan knows from the
//! cache is looked up with `HEAD` and not read if the registry has it, the others streamed
//! into upload sessions); [`super::sink_engine`] (loaded into a local engine: for Docker, the
//! layer files whose chains the engine holds are left out of the archive).

use std::collections::BTreeMap;

use super::archive::{BlobOut, Format, Sink};
use super::config::{self, Descriptor, DockerManifest, MEDIA_INDEX, MEDIA_MANIFEST, OciIndex};
use super::output::Target;
use super::plan::{ImageDocuments, ImagePlan};
use super::{ImageError, Output};

/// Where a plan is written.
pub trait ImageSink {
    /// Take layer `i` of `plan` (in order, lowest first).
    fn layer(&mut self, plan: &mut ImagePlan<'_>, i: usize) -> Result<(), ImageError>;
    /// Take the config and manifest, and put the image in place.
    fn finish(self, plan: &ImagePlan<'_>, docs: &ImageDocuments) -> Result<(), ImageError>;
}

/// Run `sink` over `plan`: every layer (calling `each` with its number before it is taken),
/// then the documents.
pub fn emit<S: ImageSink>(
    plan: &mut ImagePlan<'_>,
    mut sink: S,
    each: &mut dyn FnMut(usize),
) -> Result<ImageDocuments, ImageError> {
    for i in 0..plan.layers.len() {
        each(i);
        sink.layer(plan, i)?;
    }
    let docs = plan.documents()?;
    sink.finish(plan, &docs)?;
    Ok(docs)
}

/// A docker-archive and/or OCI layout, as a tar or a directory (see [`Format`]), written
/// atomically to an [`Output`].
#[derive(Debug)]
pub struct LayoutSink {
    target: Target,
    out: Sink,
    format: Format,
}

impl LayoutSink {
    /// Open `output` for `format` (tar entries dated `mtime`); nothing is in place until
    /// [`ImageSink::finish`].
    pub fn open(output: &Output, format: Format, mtime: u64) -> Result<LayoutSink, ImageError> {
        let (target, out) = Target::open(output, format, mtime)?;
        Ok(LayoutSink {
            target,
            out,
            format,
        })
    }

    fn oci_index(plan: &ImagePlan<'_>, docs: &ImageDocuments) -> Vec<u8> {
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "io.containerd.image.name".to_string(),
            config::qualified_name(&plan.name, &plan.tag),
        );
        annotations.insert(
            "org.opencontainers.image.ref.name".to_string(),
            plan.tag.clone(),
        );
        config::to_bytes(&OciIndex {
            schema_version: 2,
            media_type: MEDIA_INDEX.into(),
            manifests: vec![Descriptor {
                media_type: MEDIA_MANIFEST.into(),
                digest: docs.manifest_digest.clone(),
                size: docs.manifest.len() as u64,
                annotations: Some(annotations),
                platform: None,
            }],
        })
    }

    fn docker_manifest(plan: &ImagePlan<'_>, docs: &ImageDocuments) -> Vec<u8> {
        let layers = plan.layers.iter().filter_map(|l| l.blob.as_ref());
        config::to_bytes(&vec![DockerManifest {
            config: docs.config_digest.blob_path(),
            repo_tags: vec![format!("{}:{}", plan.name, plan.tag)],
            layers: layers.map(|b| b.digest.blob_path()).collect(),
        }])
    }
}

impl ImageSink for LayoutSink {
    fn layer(&mut self, plan: &mut ImagePlan<'_>, i: usize) -> Result<(), ImageError> {
        plan.write_layer(i, &mut self.out as &mut dyn BlobOut)?;
        Ok(())
    }

    fn finish(mut self, plan: &ImagePlan<'_>, docs: &ImageDocuments) -> Result<(), ImageError> {
        let stream = ImageError::stream;
        self.out.put_blob(&docs.config).map_err(stream)?;
        if self.format.has_oci() {
            self.out.put_blob(&docs.manifest).map_err(stream)?;
            let index = Self::oci_index(plan, docs);
            self.out.put_file("index.json", &index).map_err(stream)?;
        }
        if self.format.has_docker() {
            let manifest = Self::docker_manifest(plan, docs);
            self.out
                .put_file("manifest.json", &manifest)
                .map_err(stream)?;
        }
        if self.format.has_oci() {
            self.out
                .put_file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
                .map_err(stream)?;
        }
        self.out.finish().map_err(stream)?;
        self.target.persist()
    }
}
