//! Cross-tool and consumer tests: the real binaries against Nix, the shared reference data and
//! each other. One binary, one module per area.

mod deb;
mod example;
mod layering;
mod nix_live;
mod store;
mod support;
mod wrapper;
