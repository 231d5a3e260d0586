//! The image's JSON documents, now defined in [`crate::oci::config`]; the names stay here for
//! code written against this path.

pub use crate::oci::config::*;
pub use crate::oci::media_type::{
    OCI_CONFIG as MEDIA_CONFIG, OCI_INDEX as MEDIA_INDEX, OCI_MANIFEST as MEDIA_MANIFEST,
};
pub use crate::oci::reference::qualified_name;
