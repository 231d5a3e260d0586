//! strata's domain library: Nix-compatible store paths and NAR, a content-addressed store
//! with a logical store dir and a physical root, the manifests the tools exchange, and
//! layered OCI images built from store paths and pushed to registries.
//!
//! The modules follow the tools' pipeline: [`nix`] formats → [`store`] (add, query, verify)
//! and what adds to it — [`deb`] (Debian packages, resolved and locked), [`wrapper`]
//! (launchers), [`rootfs`] (users, CA bundle, `/usr/bin/env`) — with [`manifest`] naming
//! store paths the way every tool takes them → [`layering`] (closure → image layers) →
//! [`image`] (building the image archive) → [`registry`] (pushing it over HTTP). [`oci`]
//! holds the OCI formats both image sides share (media types, digests, manifests,
//! references, layer compression, image layouts), as [`nix`] holds Nix's.
//!
//! Beside them: [`hashing`] hashes bytes as they stream past, [`threaded_io`] overlaps
//! reading, hashing and writing on threads (its hashers keep up through `prefetch`), and
//! [`exit`] says which errors are usage errors.

pub mod deb;
pub mod exit;
pub mod file_kind;
pub mod hashing;
pub mod image;
pub mod layering;
pub mod manifest;
pub mod nix;
pub mod oci;
mod prefetch;
pub mod registry;
pub mod rootfs;
pub mod store;
#[cfg(test)]
pub(crate) mod testing;
pub mod threaded_io;
pub mod wrapper;

/// The threaded I/O module under its former name, for code written against it.
#[doc(hidden)]
pub use threaded_io as pipeline;
