//! strata's domain library: Nix-compatible store paths and NAR, a content-addressed store
//! with a logical store dir and a physical root, and the manifests the tools exchange.
//!
//! The modules follow the pipeline: [`nix`] formats → [`store`] (add, query, verify) and
//! what adds to it — [`deb`] (Debian packages, resolved and locked), [`wrapper`] (launchers),
//! [`rootfs`] (users, CA bundle, `/usr/bin/env`) — with [`manifest`] naming store paths the
//! way every tool takes them → [`layering`] (closure → image layers) → [`image`] (the image
//! archive) → [`registry`] (pushing it). [`pipeline`] overlaps reading, hashing and writing;
//! [`exit`] says which errors are usage errors.

pub mod deb;
pub mod exit;
pub mod hashing;
pub mod image;
pub mod layering;
pub mod manifest;
pub mod nix;
pub mod oci;
pub mod pipeline;
pub mod registry;
pub mod rootfs;
pub mod store;
#[cfg(test)]
pub(crate) mod testing;
pub mod wrapper;
