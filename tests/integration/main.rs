//! Cross-tool and consumer tests: the real binaries against Nix, the shared reference data and
//! real consumers (docker, podman, skopeo, umoci + runc, containerd). One binary, one module
//! per area.

mod deb;
mod example;
mod image;
mod layering;
mod nix_live;
mod push;
mod rootfs;
mod store;
mod store_safety;
mod support;
mod wrapper;
