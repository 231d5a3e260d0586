//! What unit tests share: the reference data in `../shared` beside the workspace (vectors made
//! with Nix, layering fixtures), found in one place that says clearly when it is missing.

use std::path::{Path, PathBuf};

/// `shared/REL`, which must exist.
pub(crate) fn shared(rel: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared")
        .join(rel);
    assert!(
        path.exists(),
        "shared reference data missing: {} does not exist (unit tests read the `shared` \
         directory next to the workspace root)",
        path.display()
    );
    path
}

/// `shared/REL` parsed as JSON.
pub(crate) fn shared_json(rel: &str) -> serde_json::Value {
    let path = shared(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("shared reference data: {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("shared reference data: {}: {e}", path.display()))
}
