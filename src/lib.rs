//! The edge shared by strata's tools: store flags, input reading, one-line errors and exit
//! codes. The domain lives in `strata-core`; this crate only turns it into command lines.

pub mod cli;
pub mod input;
