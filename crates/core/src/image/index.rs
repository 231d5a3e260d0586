//! One image for several platforms: an OCI image index made from images mkimage wrote, one
//! per platform. Each input is read back as `push-image` reads it ([`oci::layout`]:
//! names that leave the image refused, blobs read in place), its platform taken from its
//! config, and the images written into one OCI layout: their blobs (each once, however many
//! images share it, and checked against its digest as it is copied), their manifests, an
//! index manifest listing them with their `platform`, and `index.json` naming that index.
//!
//! The bytes depend only on the inputs' blobs: platforms are listed in a fixed order (os,
//! architecture, variant), not in the order given, and the layout is written as mkimage
//! writes its own ([`Target`]: nothing is in place until all of it is).
//!
//! [`oci::layout`]: crate::oci::layout

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::archive::{Format, Sink};
use super::output::Target;
use super::tar::Owner;
use super::{ImageError, Output};
use crate::hashing::Digester;
use crate::oci::config::{self, Descriptor, OciIndex};
use crate::oci::layout::{self, Blob, SourceImage};
use crate::oci::media_type::OCI_INDEX;
use crate::oci::platform::Platform;
use crate::oci::{Digest, reference};

/// What an index is made of.
#[derive(Debug, Clone)]
pub struct IndexSpec {
    /// mkimage outputs, one per platform, in any order.
    pub images: Vec<PathBuf>,
    /// The tag (`org.opencontainers.image.ref.name`); default: the one the images share.
    pub tag: Option<String>,
    /// The name for `io.containerd.image.name`, if given.
    pub name: Option<String>,
    /// [`Format::Oci`] (a tar) or [`Format::OciDir`] (a directory).
    pub format: Format,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexReport {
    /// The index manifest's digest.
    pub digest: Digest,
    pub tag: String,
    /// Per platform (in the index's order): the platform and its manifest digest.
    pub platforms: Vec<(String, Digest)>,
    /// Distinct blobs written (layers and configs), and those shared by several images.
    pub blobs: usize,
    pub shared_blobs: usize,
}

impl IndexReport {
    /// `sha256:… (tag): linux/amd64, linux/arm64/v8; N blobs, M shared`.
    pub fn line(&self) -> String {
        let platforms: Vec<&str> = self.platforms.iter().map(|(p, _)| p.as_str()).collect();
        format!(
            "{} ({}): {}; {} blobs, {} shared",
            self.digest,
            self.tag,
            platforms.join(", "),
            self.blobs,
            self.shared_blobs
        )
    }
}

/// The most a config read to learn the platform may be.
const MAX_CONFIG: u64 = 4 << 20;

/// The fields of an image config that say its platform.
#[derive(Debug, Deserialize)]
struct ConfigPlatform {
    architecture: Option<String>,
    os: Option<String>,
    #[serde(default)]
    variant: Option<String>,
}

/// One input: where it came from, the image read back, and its platform.
struct Input {
    path: PathBuf,
    image: SourceImage,
    config: Vec<u8>,
    platform: Platform,
}

fn invalid(path: &Path, why: impl std::fmt::Display) -> ImageError {
    ImageError::Invalid(format!("{}: {why}", path.display()))
}

fn read_input(path: &Path) -> Result<Input, ImageError> {
    let image = layout::open(path).map_err(|e| ImageError::Invalid(e.to_string()))?;
    if image.config.size > MAX_CONFIG {
        return Err(invalid(
            path,
            format!(
                "its config is {} bytes: not an image config",
                image.config.size
            ),
        ));
    }
    let config = image
        .config
        .read_all()
        .map_err(|e| invalid(path, format!("config: {e}")))?;
    let got = Digest::sha256_of(&config);
    if got != image.config.digest {
        return Err(invalid(
            path,
            format!(
                "config {} holds bytes that hash to {got}: the image is corrupt",
                image.config.digest
            ),
        ));
    }
    let parsed: ConfigPlatform = serde_json::from_slice(&config)
        .map_err(|e| invalid(path, format!("config {}: {e}", image.config.digest)))?;
    let (Some(architecture), Some(os)) = (parsed.architecture, parsed.os) else {
        return Err(invalid(
            path,
            "its config names no architecture and os: not an image config",
        ));
    };
    let platform = Platform {
        os,
        architecture,
        variant: parsed.variant.filter(|v| !v.is_empty()),
    };
    Ok(Input {
        path: path.to_path_buf(),
        image,
        config,
        platform,
    })
}

/// Copy one blob into the layout, hashing it on the way: it is written only if its bytes are
/// `size` bytes with its digest.
fn copy_checked(out: &mut Sink, blob: &Blob, from: &Path) -> Result<(), ImageError> {
    let stream = |e: io::Error| ImageError::Stream(e.to_string());
    let mut reader = blob
        .open()
        .map_err(|e| invalid(from, format!("blob {}: {e}", blob.digest)))?;
    out.begin_blob().map_err(stream)?;
    let mut w = Digester::new(out.blob_writer());
    let copied = io::copy(&mut (&mut reader).take(blob.size + 1), &mut w);
    let (got, n, _) = w.finish();
    let wrong = match copied {
        Err(e) => Some(format!("blob {}: {e}", blob.digest)),
        Ok(_) if n != blob.size => Some(format!(
            "blob {} is {n} bytes, not {}: the image is corrupt",
            blob.digest, blob.size
        )),
        Ok(_) if Digest::sha256(&got).ok().as_ref() != Some(&blob.digest) => Some(format!(
            "blob {} holds bytes that hash to {got}: the image is corrupt",
            blob.digest
        )),
        Ok(_) => None,
    };
    match wrong {
        Some(why) => {
            out.abort_blob().map_err(stream)?;
            Err(invalid(from, why))
        }
        None => out.end_blob(blob.digest.hex(), blob.size).map_err(stream),
    }
}

/// The tag of the index: the one given, else the one every image has.
fn choose_tag(spec: &IndexSpec, inputs: &[Input]) -> Result<String, ImageError> {
    if let Some(tag) = &spec.tag {
        return Ok(tag.clone());
    }
    let tags: BTreeSet<Option<&String>> = inputs.iter().map(|i| i.image.tag.as_ref()).collect();
    match tags.into_iter().collect::<Vec<_>>().as_slice() {
        [Some(tag)] => Ok((*tag).clone()),
        [None] => Ok("latest".to_string()),
        _ => Err(ImageError::Invalid(
            "the images have different tags: give the index's with --tag".into(),
        )),
    }
}

/// The inputs of `spec`, read and checked, in platform order; one image per platform.
fn read_inputs(spec: &IndexSpec) -> Result<Vec<Input>, ImageError> {
    if !matches!(spec.format, Format::Oci | Format::OciDir) {
        return Err(ImageError::Invalid(
            "an index is an OCI layout: --format oci or oci-dir".into(),
        ));
    }
    if spec.images.is_empty() {
        return Err(ImageError::Invalid("no images to combine".into()));
    }
    let mut inputs = spec
        .images
        .iter()
        .map(|p| read_input(p))
        .collect::<Result<Vec<_>, _>>()?;
    inputs.sort_by_key(|a| a.platform.key());
    for pair in inputs.windows(2) {
        if pair[0].platform.key() == pair[1].platform.key() {
            return Err(ImageError::Invalid(format!(
                "{} and {} are both {}: an index holds one image per platform",
                pair[0].path.display(),
                pair[1].path.display(),
                pair[1].platform.shown()
            )));
        }
    }
    Ok(inputs)
}

/// How many blobs (layers and configs) more than one image holds.
fn shared_blobs(inputs: &[Input]) -> usize {
    let mut holders: BTreeMap<&Digest, usize> = BTreeMap::new();
    for input in inputs {
        let own: BTreeSet<&Digest> = input
            .image
            .layers
            .iter()
            .chain([&input.image.config])
            .map(|b| &b.digest)
            .collect();
        for d in own {
            *holders.entry(d).or_default() += 1;
        }
    }
    holders.values().filter(|n| **n > 1).count()
}

/// Write every image's blobs (each once) and manifest into `out`; the index entries, in
/// the inputs' order, and the number of distinct blobs written.
fn write_images(out: &mut Sink, inputs: &[Input]) -> Result<(Vec<Descriptor>, usize), ImageError> {
    let stream = |e: io::Error| ImageError::Stream(e.to_string());
    let mut written: BTreeSet<Digest> = BTreeSet::new();
    let mut entries = Vec::new();
    for input in inputs {
        for blob in &input.image.layers {
            if written.insert(blob.digest.clone()) {
                copy_checked(out, blob, &input.path)?;
            }
        }
        if written.insert(input.image.config.digest.clone()) {
            out.put_blob(&input.config).map_err(stream)?;
        }
        let manifest = out.put_blob(&input.image.manifest).map_err(stream)?;
        entries.push(Descriptor {
            media_type: input.image.manifest_media_type.clone(),
            digest: Digest::sha256(&manifest).map_err(|e| ImageError::Stream(e.to_string()))?,
            size: input.image.manifest.len() as u64,
            annotations: None,
            platform: Some(input.platform.clone()),
        });
    }
    Ok((entries, written.len()))
}

/// `index.json`: the one index manifest (`index`, `size` bytes), tagged `tag` and, with a
/// name, named for containerd.
fn top_index(index: &Digest, size: u64, tag: &str, name: Option<&str>) -> Vec<u8> {
    let mut annotations = BTreeMap::new();
    if let Some(name) = name {
        annotations.insert(
            "io.containerd.image.name".to_string(),
            reference::qualified_name(name, tag),
        );
    }
    annotations.insert("org.opencontainers.image.ref.name".to_string(), tag.into());
    config::to_bytes(&OciIndex {
        schema_version: 2,
        media_type: OCI_INDEX.into(),
        manifests: vec![Descriptor {
            media_type: OCI_INDEX.into(),
            digest: index.clone(),
            size,
            annotations: Some(annotations),
            platform: None,
        }],
    })
}

/// Combine `spec.images` into one OCI layout holding an index of their platforms, written
/// to `output`.
pub fn build_index(spec: &IndexSpec, output: &Output) -> Result<IndexReport, ImageError> {
    let inputs = read_inputs(spec)?;
    let tag = choose_tag(spec, &inputs)?;
    let (target, mut out) = Target::open(output, spec.format, Owner::default().mtime)?;
    let stream = |e: io::Error| ImageError::Stream(e.to_string());
    let (entries, blobs) = write_images(&mut out, &inputs)?;
    let index = config::to_bytes(&OciIndex {
        schema_version: 2,
        media_type: OCI_INDEX.into(),
        manifests: entries.clone(),
    });
    let index_digest = out.put_blob(&index).map_err(stream)?;
    let index_digest =
        Digest::sha256(&index_digest).map_err(|e| ImageError::Stream(e.to_string()))?;
    let top = top_index(
        &index_digest,
        index.len() as u64,
        &tag,
        spec.name.as_deref(),
    );
    out.put_file("index.json", &top).map_err(stream)?;
    out.put_file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(stream)?;
    out.finish().map_err(stream)?;
    target.persist()?;
    Ok(IndexReport {
        digest: index_digest,
        tag,
        platforms: entries
            .iter()
            .filter_map(|e| Some((e.platform.as_ref()?.shown(), e.digest.clone())))
            .collect(),
        blobs,
        shared_blobs: shared_blobs(&inputs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::config::OciManifest;
    use crate::oci::layout::{Source, open_source};
    use crate::oci::media_type::{OCI_CONFIG as MEDIA_CONFIG, OCI_MANIFEST as MEDIA_MANIFEST};

    fn digest_of(data: &[u8]) -> Digest {
        Digest::sha256_of(data)
    }

    fn put(dir: &Path, data: &[u8]) -> Descriptor {
        let digest = digest_of(data);
        std::fs::write(dir.join("blobs/sha256").join(digest.hex()), data).unwrap();
        Descriptor {
            media_type: String::new(),
            digest,
            size: data.len() as u64,
            annotations: None,
            platform: None,
        }
    }

    /// A one-image OCI layout directory for `arch` with the given layers.
    fn image(dir: &Path, arch: &str, variant: Option<&str>, layers: &[&[u8]]) -> PathBuf {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        let mut config = serde_json::json!({"architecture": arch, "os": "linux",
            "config": {}, "rootfs": {"type": "layers", "diff_ids": []}});
        if let Some(v) = variant {
            config["variant"] = v.into();
        }
        let mut config_desc = put(dir, config.to_string().as_bytes());
        config_desc.media_type = MEDIA_CONFIG.into();
        let manifest = config::to_bytes(&OciManifest {
            schema_version: 2,
            media_type: MEDIA_MANIFEST.into(),
            config: config_desc,
            layers: layers
                .iter()
                .map(|l| Descriptor {
                    media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                    ..put(dir, l)
                })
                .collect(),
        });
        let mut desc = put(dir, &manifest);
        desc.media_type = MEDIA_MANIFEST.into();
        desc.annotations = Some(BTreeMap::from([(
            "org.opencontainers.image.ref.name".to_string(),
            "1".to_string(),
        )]));
        let index = OciIndex {
            schema_version: 2,
            media_type: OCI_INDEX.into(),
            manifests: vec![desc],
        };
        std::fs::write(dir.join("index.json"), config::to_bytes(&index)).unwrap();
        dir.to_path_buf()
    }

    fn spec(images: &[&Path]) -> IndexSpec {
        IndexSpec {
            images: images.iter().map(|p| p.to_path_buf()).collect(),
            tag: None,
            name: None,
            format: Format::OciDir,
        }
    }

    #[test]
    fn platforms_in_a_fixed_order_shared_blobs_once_and_read_back_as_an_index() {
        let t = tempfile::tempdir().unwrap();
        let arm = image(
            &t.path().join("arm"),
            "arm64",
            Some("v8"),
            &[b"jar", b"arm"],
        );
        let amd = image(&t.path().join("amd"), "amd64", None, &[b"jar", b"amd"]);
        let out = t.path().join("multi");
        let report = build_index(&spec(&[&arm, &amd]), &Output::Dir(out.clone())).unwrap();
        let shown: Vec<&str> = report.platforms.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(shown, ["linux/amd64", "linux/arm64/v8"]);
        assert_eq!((report.blobs, report.shared_blobs), (5, 1));
        assert_eq!(report.tag, "1");
        // 5 blobs, 2 manifests and the index; the jar once.
        let blobs = std::fs::read_dir(out.join("blobs/sha256")).unwrap().count();
        assert_eq!(blobs, 8);
        match open_source(&out).unwrap() {
            Source::Index(index) => {
                assert_eq!(digest_of(&index.index), report.digest);
                assert_eq!(index.images.len(), 2);
                assert_eq!(index.tag.as_deref(), Some("1"));
                assert_eq!(index.images[0].layers[1].digest, digest_of(b"amd"));
                let doc: serde_json::Value = serde_json::from_slice(&index.index).unwrap();
                assert_eq!(
                    doc["manifests"][1]["platform"],
                    serde_json::json!({"architecture": "arm64", "os": "linux", "variant": "v8"})
                );
            }
            Source::Image(_) => panic!("read back as one image"),
        }
        // The same bytes whatever the order of the inputs.
        let again = t.path().join("again");
        build_index(&spec(&[&amd, &arm]), &Output::Dir(again.clone())).unwrap();
        for name in [
            "index.json",
            &format!("blobs/sha256/{}", report.digest.hex()),
        ] {
            assert_eq!(
                std::fs::read(out.join(name)).unwrap(),
                std::fs::read(again.join(name)).unwrap()
            );
        }
    }

    #[test]
    fn one_image_per_platform_and_arm64_is_arm64_v8() {
        let t = tempfile::tempdir().unwrap();
        let a = image(&t.path().join("a"), "arm64", Some("v8"), &[b"a"]);
        let b = image(&t.path().join("b"), "arm64", None, &[b"b"]);
        let out = t.path().join("multi");
        let e = build_index(&spec(&[&a, &b]), &Output::Dir(out.clone()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("both linux/arm64") && e.contains("one image per platform"),
            "{e}"
        );
        assert!(!out.exists());
        let v7 = image(&t.path().join("v7"), "arm", Some("v7"), &[b"c"]);
        let v6 = image(&t.path().join("v6"), "arm", Some("v6"), &[b"d"]);
        build_index(&spec(&[&v7, &v6]), &Output::Dir(out)).unwrap();
    }

    #[test]
    fn images_of_other_tags_need_one_given() {
        let t = tempfile::tempdir().unwrap();
        let a = image(&t.path().join("a"), "amd64", None, &[b"a"]);
        let b = image(&t.path().join("b"), "arm64", None, &[b"b"]);
        let text = std::fs::read_to_string(b.join("index.json")).unwrap();
        std::fs::write(
            b.join("index.json"),
            text.replace("\"ref.name\":\"1\"", "\"ref.name\":\"2\"")
                .replace(".ref.name\":\"1\"", ".ref.name\":\"2\""),
        )
        .unwrap();
        let e = build_index(&spec(&[&a, &b]), &Output::Dir(t.path().join("x")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--tag"), "{e}");
        let mut with_tag = spec(&[&a, &b]);
        with_tag.tag = Some("3".into());
        let report = build_index(&with_tag, &Output::Dir(t.path().join("y"))).unwrap();
        assert_eq!(report.tag, "3");
    }
}
