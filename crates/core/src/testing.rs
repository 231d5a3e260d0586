//! What unit tests share: the reference data in `../shared` beside the workspace (vectors made
//! with Nix, layering fixtures), found in one place that says clearly when it is missing; and
//! a small store to build images from.

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

/// A store at `root` holding one text file, `hello` (`hello\n`); the store and that path.
pub(crate) fn store_with_hello(root: &Path) -> (crate::store::Store, String) {
    use crate::store::{AddOptions, Store, StoreConfig};
    let config = StoreConfig {
        store_dir: Default::default(),
        root: root.to_path_buf(),
        sync_contents: false,
    };
    let store = Store::open(config).unwrap();
    let info = store
        .add_text(
            "hello",
            b"hello\n",
            &std::collections::BTreeSet::new(),
            &AddOptions::default(),
        )
        .unwrap();
    (store, info.path.to_string())
}
