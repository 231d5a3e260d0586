//! Pushing an image to an OCI registry (the distribution API): the destination reference,
//! the image read back from `mkimage`'s output, credentials and auth challenges, an HTTP
//! client, and the push itself (blob `HEAD` first, cross-repository mounts, monolithic or
//! chunked uploads, the manifest last).
//!
//! Modules: [`reference`](mod@reference) `REGISTRY/REPO:TAG`, [`source`] the image (tar or
//! OCI layout directory), [`auth`] credentials and challenges, [`client`] HTTP with auth,
//! [`push`](mod@push) the algorithm and its report.

pub mod auth;
pub mod client;
pub mod push;
pub mod reference;
pub mod source;

pub use push::{BlobAction, BlobReport, PushOptions, PushReport, push};
pub use reference::Reference;

/// Errors from pushing; each displays as one line and never holds a credential.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A bad destination, image or option, found before anything is sent.
    #[error("{0}")]
    Invalid(String),
    /// The image on disk could not be read.
    #[error("{path}: {message}")]
    Image { path: String, message: String },
    /// Reading the image on disk failed; the I/O error is kept.
    #[error("{path}: {message}")]
    ImageIo {
        path: String,
        message: String,
        #[source]
        source: std::io::Error,
    },
    /// The registry could not be reached (DNS, connect, TLS, a cut connection).
    #[error("{0}")]
    Unreachable(String),
    /// The registry refused our credentials, or asked for some we do not have.
    #[error("{0}")]
    Auth(String),
    /// Credentials could not be had because of an I/O error (a credential helper that
    /// cannot be run, a Docker config that cannot be read); the error is kept.
    #[error("{message}")]
    AuthIo {
        message: String,
        #[source]
        source: std::io::Error,
    },
    /// The registry answered with an error.
    #[error("{0}")]
    Registry(String),
    /// What was uploaded or stored is not what its digest says.
    #[error("{0}")]
    Digest(String),
}

impl From<crate::oci::reference::ReferenceError> for RegistryError {
    fn from(e: crate::oci::reference::ReferenceError) -> RegistryError {
        RegistryError::Invalid(e.0)
    }
}

impl From<crate::oci::layout::LayoutError> for RegistryError {
    fn from(e: crate::oci::layout::LayoutError) -> RegistryError {
        RegistryError::Image {
            path: e.path,
            message: e.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn read_errors_keep_their_io_error_and_other_errors_convert_unchanged() {
        let e = RegistryError::ImageIo {
            path: "img.tar".into(),
            message: "blob sha256:00: gone".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        };
        assert_eq!(e.to_string(), "img.tar: blob sha256:00: gone");
        let kind = e
            .source()
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .map(std::io::Error::kind);
        assert_eq!(kind, Some(std::io::ErrorKind::NotFound));
        let e = RegistryError::from(crate::oci::reference::ReferenceError("bad".into()));
        assert!(matches!(&e, RegistryError::Invalid(m) if m == "bad"));
        let e = RegistryError::from(crate::oci::layout::LayoutError {
            path: "p".into(),
            message: "m".into(),
        });
        assert_eq!(e.to_string(), "p: m");
    }
}
