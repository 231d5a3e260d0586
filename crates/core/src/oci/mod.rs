//! The OCI image formats, one module each, typed and with their quirks written down: media
//! types, digests, the JSON documents (descriptor, manifest, index, config, docker-archive's
//! `manifest.json`), references with the Docker Hub rule, layer compression with its pinned
//! encoders, and the image layouts read back from disk. Nothing here builds an image
//! ([`crate::image`]) or speaks HTTP ([`crate::registry`]); both use these.
//!
//! Modules: [`media_type`] the type strings, [`digest`] `sha256:<hex>`, [`config`] the
//! documents, [`reference`] names, tags and `REGISTRY/REPO[:TAG]`, [`compression`] layer
//! compression, [`layout`] a docker-archive or OCI layout, tar or directory, [`platform`]
//! architectures and variants, [`time`] RFC 3339 times.

pub mod compression;
pub mod config;
pub mod digest;
pub mod layout;
pub mod media_type;
pub mod platform;
pub mod reference;
pub mod time;

pub use compression::Compression;
pub use config::Descriptor;
pub use digest::Digest;
pub use reference::Reference;
