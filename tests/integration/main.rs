//! Cross-tool and consumer tests: the real binaries against Nix, the shared reference data and
//! real consumers (docker, podman, skopeo, umoci + runc, containerd). One binary, one module
//! per area.

mod arch;
mod compose;
mod deb;
mod deb_resolve;
mod direct;
mod example;
mod image;
mod layering;
mod multi;
mod nix_live;
mod push;
mod readme;
mod rootfs;
mod store;
mod store_safety;
mod support;
mod wrapper;
