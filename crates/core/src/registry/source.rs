//! The image to push, now read by [`crate::oci::layout`]; the names stay here for code
//! written against this path.

pub use crate::oci::layout::*;
pub use crate::oci::media_type::{OCI_CONFIG, OCI_MANIFEST};
