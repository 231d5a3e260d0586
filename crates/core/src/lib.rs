//! strata's domain library: Nix-compatible store paths and NAR, a content-addressed store
//! with a logical store dir and a physical root, and the manifests the tools exchange.
//!
//! The modules follow the pipeline: [`nix`] formats → [`store`] (add, query, verify) →
//! [`layering`] (closure → image layers).

pub mod deb;
pub mod image;
pub mod layering;
pub mod manifest;
pub mod nix;
pub mod pipeline;
pub mod registry;
pub mod rootfs;
pub mod store;
pub mod wrapper;
