//! Cross-tool tests: each module runs the built binaries on shared reference data.

mod layering;
