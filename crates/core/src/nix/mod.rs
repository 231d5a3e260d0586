//! Nix's formats, one module each: nix32, hashes, store paths, content addresses, NAR,
//! reference scanning, path-info JSON and closure graphs. Nothing here touches the store on disk.

pub mod closure;
pub mod content_address;
pub mod dag;
pub mod graph_json;
mod graph_scan;
pub mod hash;
pub mod nar;
pub mod nix32;
pub mod path_info;
pub mod refscan;
pub mod store_path;
