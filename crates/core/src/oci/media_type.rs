//! The media types strata writes and reads, each string once. OCI image-spec v1.1 names
//! documents and blobs by these; a registry stores a manifest under its `mediaType`, and a
//! layer's type says how it is compressed.

/// An image index (`index.json` of a layout, a multi-platform list).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// An image manifest: one config and its layers.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The image config blob.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// An uncompressed layer (a tar).
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// A gzip-compressed layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// A zstd-compressed layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker's schema 2 manifest, read (an OCI index may point at one), never written.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Whether a manifest of this type is one image (rather than an index of several).
pub fn is_image_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_types_extend_the_tar_type() {
        assert_eq!(OCI_LAYER_GZIP, format!("{OCI_LAYER}+gzip"));
        assert_eq!(OCI_LAYER_ZSTD, format!("{OCI_LAYER}+zstd"));
        assert!(is_image_manifest(OCI_MANIFEST) && is_image_manifest(DOCKER_MANIFEST));
        assert!(!is_image_manifest(OCI_INDEX) && !is_image_manifest(OCI_CONFIG));
    }
}
