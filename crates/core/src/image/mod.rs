//! Layered container images from store paths, like nixpkgs' `dockerTools.streamLayeredImage`:
//! one normalised tar layer per group of store paths (byte-identical to nixpkgs'
//! `stream_layered_image.py`), a customisation layer (symlink-joined contents, extra
//! commands, permission rules), an image config, and an output that is both a docker-archive
//! and an OCI image layout.
//!
//! Modules: [`tar`] the normalised layer writer, [`layer`] store layer entries and the blob
//! pipeline, [`contents`] the customisation layer, [`config`] the JSON documents, [`archive`]
//! the output layouts, [`cache`] the layer cache; [`plan`] computes what the image is (after
//! the pre-flight checks of [`check`] and [`start_check`], which reads the image's files
//! through `rootfs` and `elf`), and a [`sink`] writes it; `build` joins the two. [`index`]
//! combines images of several platforms into one OCI image index. Hostile
//! input is kept out by `beneath` (trees read without following symlinks), [`input`]
//! (bounded reads), `output` (what `-o` may replace) and `temp` (temporary files and
//! processes that never outlive a build, see [`interrupted`]).

pub mod archive;
mod base;
pub(crate) mod beneath;
mod build;
pub mod cache;
pub mod check;
pub mod config;
pub mod contents;
mod custom_root;
mod elf;
pub mod index;
pub mod input;
pub mod layer;
mod output;
pub mod plan;
mod rootfs;
pub mod sink;
pub mod sink_engine;
pub mod sink_registry;
pub mod start_check;
pub mod tar;
mod temp;

use std::io;
use std::path::{Path, PathBuf};

pub use archive::Format;
pub use build::{
    BuildReport, BuildSummary, LayerReport, LayerSource, LayerStarted, build, build_and_load,
    build_and_push, build_observed,
};
pub use layer::Compression;
pub use temp::interrupted;

use crate::store::StoreError;
use config::ContainerConfig;
use contents::PermRule;
use tar::Owner;

/// Most layers an image may have (the overlay filesystem limit loaders enforce).
pub const MAX_LAYERS: usize = 125;

/// Errors from building an image; each displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Bad input found before anything is written.
    #[error("{0}")]
    Invalid(String),
    /// Bad input found by an I/O error (a file that cannot be read, a blob that does not
    /// decompress); the message names the input and the error is kept.
    #[error("{message}")]
    InvalidIo {
        message: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the image: {0}")]
    Stream(String),
    /// Pushing the image straight to a registry (`mkimage --push`).
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    /// Loading the image into a container engine (`mkimage --load`).
    #[error("{0}")]
    Engine(String),
    /// Writing the image failed; the I/O error is kept (its kind says what happened).
    #[error("writing the image: {0}")]
    StreamIo(#[source] io::Error),
}

impl ImageError {
    /// Bad input: `what` and the I/O error, in one line, the error kept as the source.
    pub(crate) fn invalid_io(what: impl std::fmt::Display, source: io::Error) -> ImageError {
        ImageError::InvalidIo {
            message: format!("{what}: {source}"),
            source,
        }
    }

    /// An I/O error while the image is written.
    pub(crate) fn stream(e: io::Error) -> ImageError {
        ImageError::StreamIo(e)
    }

    pub(crate) fn io(path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
        move |source| ImageError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Where the image goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Standard output (the image is assembled in an unlinked temporary file first).
    Stdout,
    /// `-o PATH`: a regular file (or a new one) is written to a temporary name in its
    /// directory and renamed over it when complete; a FIFO, a character device or a `/proc`
    /// link (`/dev/stdout`) is written as a stream; a symlink is written through.
    File(PathBuf),
    /// A new OCI layout directory (`--format oci-dir`), renamed into place when complete.
    Dir(PathBuf),
}

/// Everything an image is built from.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Repository name, lowercase (`app`, `registry.example/team/app`).
    pub name: String,
    /// The tag; `None` means a hash of the inputs.
    pub tag: Option<String>,
    /// Store layers, lowest first: absolute store paths as the layers JSON gives them.
    pub layers: Vec<Vec<String>>,
    /// Store paths (or directories inside them) symlink-joined into `/`.
    pub contents: Vec<String>,
    pub extra_commands: Option<String>,
    pub perms: Vec<PermRule>,
    pub ignore_collisions: bool,
    /// Accept layers whose paths refer to paths in no layer (e.g. provided by the base).
    pub allow_partial_closure: bool,
    pub config: ContainerConfig,
    /// RFC 3339 creation time written to the config and history.
    pub created: String,
    /// Ownership and mtime of store layer entries (the customisation layer is 0:0 with the
    /// same mtime unless `perms` say otherwise).
    pub owner: Owner,
    pub architecture: String,
    /// The CPU variant of the platform (`v8` for arm64); see [`check::default_variant`].
    pub variant: Option<String>,
    pub os: String,
    /// A docker-archive whose layers go first and whose `Env` is merged.
    pub from: Option<PathBuf>,
    pub compression: Compression,
    pub format: Format,
    /// Layer cache directory.
    pub cache: Option<PathBuf>,
    /// Check before writing anything that the entrypoint can start (see [`start_check`]).
    pub start_check: bool,
}

impl ImageSpec {
    /// A spec with nixpkgs' defaults: created/mtime 1970-01-01T00:00:01Z, root:root, the host
    /// architecture, linux, uncompressed, docker+OCI output.
    pub fn new(name: &str, layers: Vec<Vec<String>>) -> ImageSpec {
        ImageSpec {
            name: name.to_string(),
            tag: None,
            layers,
            contents: Vec::new(),
            extra_commands: None,
            perms: Vec::new(),
            ignore_collisions: false,
            allow_partial_closure: false,
            config: ContainerConfig::default(),
            created: "1970-01-01T00:00:01Z".to_string(),
            owner: Owner::default(),
            architecture: check::host_architecture().to_string(),
            variant: check::default_variant(check::host_architecture()).map(str::to_string),
            os: "linux".to_string(),
            from: None,
            compression: Compression::None,
            format: Format::DockerOci,
            cache: None,
            start_check: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_write_error_keeps_its_io_error() {
        let e = ImageError::stream(io::Error::new(io::ErrorKind::BrokenPipe, "pipe closed"));
        assert_eq!(e.to_string(), "writing the image: pipe closed");
        let kind = e
            .source()
            .and_then(|s| s.downcast_ref::<io::Error>())
            .map(io::Error::kind);
        assert_eq!(kind, Some(io::ErrorKind::BrokenPipe));
    }

    #[test]
    fn a_read_error_of_an_input_keeps_its_io_error() {
        struct Failing;
        impl io::Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::PermissionDenied, "denied"))
            }
        }
        let e = input::read_limited(Failing, 10, "--config 'c.json'", "a config").unwrap_err();
        assert_eq!(e.to_string(), "--config 'c.json': denied");
        let kind = e
            .source()
            .and_then(|s| s.downcast_ref::<io::Error>())
            .map(io::Error::kind);
        assert_eq!(kind, Some(io::ErrorKind::PermissionDenied));
    }
}
