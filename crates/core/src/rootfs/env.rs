//! `/usr/bin/env`, which `#!/usr/bin/env python3` scripts need, in an image whose coreutils
//! (if any) is not linked into `/`. Like nixpkgs' `usrBinEnv`: a store path holding only the
//! symlink `usr/bin/env`, whose target the user names (Debian coreutils' `usr/bin/env`, a
//! busybox…). A target in the store must be an executable file of a valid path, which then
//! becomes the tree's one reference, so the image's closure carries it.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;

use super::{RootfsError, add_tree, resolve};
use crate::nix::path_info::PathInfo;
use crate::store::Store;

/// The store path name of the generated tree.
pub const NAME: &str = "usr-bin-env";

/// Add `usr/bin/env` → `target` (an absolute path, or `@NAME[/SUB]` picked from `inputs`)
/// as the store path `usr-bin-env`.
pub fn add(store: &Store, inputs: &[PathInfo], target: &str) -> Result<PathInfo, RootfsError> {
    let op = resolve(store, inputs, "usr-bin-env", target)?;
    let mut candidates = BTreeSet::new();
    if let Some(path) = &op.store_path {
        let valid = store.check_abs(path)?;
        store.query_valid(valid)?;
        let rest = &op.logical[path.to_string().len()..];
        let physical = store
            .physical_path(valid)
            .join(rest.trim_start_matches('/'));
        let meta = std::fs::metadata(&physical).map_err(RootfsError::io(&physical))?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(RootfsError::BadTarget {
                what: op.logical,
                reason: "not an executable file".into(),
            });
        }
        candidates.insert(path.clone());
    }
    add_tree(store, NAME, &candidates, |tree| {
        let bin = tree.join("usr/bin");
        std::fs::create_dir_all(&bin).map_err(RootfsError::io(&bin))?;
        let link = bin.join("env");
        std::os::unix::fs::symlink(&op.logical, &link).map_err(RootfsError::io(&link))
    })
}
