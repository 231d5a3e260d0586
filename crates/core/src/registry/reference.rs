//! The push destination, now defined in [`crate::oci::reference`]; the names stay here for
//! code written against this path.

pub use crate::oci::reference::*;
