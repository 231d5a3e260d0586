//! Path operands of a wrapper (bash, the JRE, the jar, the program): `@NAME[/SUB]` picked from
//! input path infos or absolute paths, mapped to where their files physically are, checked
//! against the store, and, at the end, the generated tree added to the store under its own
//! (placeholder-rewritten) content-addressed path.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::{Wrapper, WrapperError, self_placeholder};
use crate::manifest::{Inputs, ManifestError, check_canonical};
use crate::nix::path_info::PathInfo;
use crate::nix::store_path::AbsStorePath;
use crate::store::{Store, StoreError};

/// Why an operand cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OperandError {
    #[error("{what}: '{text}' is neither an absolute path nor @NAME")]
    NotAbsolute { what: String, text: String },
    #[error("{what}: {source}")]
    Reference { what: String, source: ManifestError },
    #[error(
        "{what}: '{path}' is not in the store '{store_dir}' (use --tree to wrap paths outside it)"
    )]
    NotInStore {
        what: String,
        path: String,
        store_dir: String,
    },
    #[error("{what}: cannot wrap '{path}': not an executable file{hint}")]
    NotExecutable {
        what: String,
        path: String,
        hint: String,
    },
}

impl OperandError {
    /// Whether the command line itself is at fault (exit 2) rather than the files (exit 1).
    pub fn is_usage(&self) -> bool {
        !matches!(self, OperandError::NotExecutable { .. })
    }
}

/// A resolved path operand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operand {
    /// The path as the wrapper names it.
    pub logical: String,
    /// The store path it is in, if any.
    pub store_path: Option<AbsStorePath>,
}

/// Resolves operands against the inputs and (unless a plain tree is written) the store.
#[derive(Debug, Clone, Copy)]
pub struct Resolver<'a> {
    pub inputs: &'a Inputs,
    /// The store the output goes to; operands must then be in it.
    pub store: Option<&'a Store>,
    /// Where store paths' files physically are, also when a plain tree is written.
    pub root: Option<&'a Store>,
}

impl Resolver<'_> {
    /// `@NAME[/SUB]` or an absolute path.
    pub fn resolve(&self, what: &str, text: &str) -> Result<Operand, OperandError> {
        let reference_error = |source| OperandError::Reference {
            what: what.into(),
            source,
        };
        if let Some(reference) = text.strip_prefix('@') {
            let (input, logical) = self.inputs.resolve(reference).map_err(reference_error)?;
            return Ok(Operand {
                logical,
                store_path: Some(input.path.clone()),
            });
        }
        if !text.starts_with('/') {
            return Err(OperandError::NotAbsolute {
                what: what.into(),
                text: text.into(),
            });
        }
        // A path names what it spells: `…-hello/../../../usr/bin/id` would look like a store
        // path and resolve to a host file.
        check_canonical(text).map_err(reference_error)?;
        Ok(Operand {
            logical: text.to_string(),
            store_path: self.store_path_of(text),
        })
    }

    /// Like [`Resolver::resolve`], but a relative path (a local file) is allowed.
    pub fn resolve_file(&self, what: &str, text: &str) -> Result<Operand, OperandError> {
        if text.starts_with('@') || text.starts_with('/') {
            return self.resolve(what, text);
        }
        Ok(Operand {
            logical: text.to_string(),
            store_path: None,
        })
    }

    /// A makeWrapper flag value: `@NAME[/SUB]` becomes its path (see
    /// [`crate::wrapper::Flag::expand_values`]), `@@…` a literal `@…`.
    pub fn expand_value(&self, flag_value: &str) -> Result<String, OperandError> {
        self.inputs
            .expand(flag_value)
            .map_err(|source| OperandError::Reference {
                what: "makeWrapper flag value".into(),
                source,
            })
    }

    /// The store path an absolute path is in, when a store is used and it is in its dir.
    fn store_path_of(&self, text: &str) -> Option<AbsStorePath> {
        let store = self.store?;
        let (path, _) = store.store_dir().parse_path_prefix(text).ok()?;
        Some(store.abs(&path))
    }

    /// With a store, the operand must be inside it (the closure must be complete).
    pub fn require_store_path(&self, what: &str, op: &Operand) -> Result<(), OperandError> {
        match (self.store, &op.store_path) {
            (Some(store), None) => Err(OperandError::NotInStore {
                what: what.into(),
                path: op.logical.clone(),
                store_dir: store.store_dir().to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Where a logical path's files are now: under the store root for paths in the store dir
    /// (also with --tree: the files are where the store keeps them, not on the host's
    /// `/nix/store`).
    pub fn physical_of(&self, text: &str) -> PathBuf {
        if let Some(store) = self.store.or(self.root)
            && let Ok((path, rest)) = store.store_dir().parse_path_prefix(text)
        {
            let base = store.physical_path(&path);
            return match rest.trim_start_matches('/') {
                "" => base,
                rest => base.join(rest),
            };
        }
        PathBuf::from(text)
    }

    pub fn physical(&self, op: &Operand) -> PathBuf {
        self.physical_of(&op.logical)
    }

    /// Like nixpkgs' assertExecutable: a regular file with an execute bit.
    pub fn require_executable(&self, what: &str, logical: &str) -> Result<(), OperandError> {
        if self.is_executable(logical) {
            Ok(())
        } else {
            Err(OperandError::NotExecutable {
                what: what.into(),
                path: logical.into(),
                hint: String::new(),
            })
        }
    }

    fn is_executable(&self, logical: &str) -> bool {
        std::fs::metadata(self.physical_of(logical))
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    }

    /// `JRE/bin/java` must be executable; when JRE is a package holding JRE homes
    /// (`usr/lib/jvm/*/bin/java`, as Debian's), the error names them.
    pub fn require_jre(&self, what: &str, jre: &str, given: &str) -> Result<(), OperandError> {
        let java = format!("{jre}/bin/java");
        if self.is_executable(&java) {
            return Ok(());
        }
        // The hint is spelt as the user spelt the package, when that was a path or @NAME.
        let base = if given.starts_with(['@', '/']) {
            given
        } else {
            jre
        };
        let jvm = self.physical_of(&format!("{jre}/usr/lib/jvm"));
        let mut homes: Vec<String> = std::fs::read_dir(&jvm)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|home| self.is_executable(&format!("{jre}/usr/lib/jvm/{home}/bin/java")))
            .map(|home| format!("{}/usr/lib/jvm/{home}", base.trim_end_matches('/')))
            .collect();
        homes.sort();
        let hint = match homes.as_slice() {
            [] => String::new(),
            [home] => format!(" (this is a package; its JRE home is --jre {home})"),
            _ => format!(
                " (this is a package; its JRE homes are {})",
                homes.join(", ")
            ),
        };
        Err(OperandError::NotExecutable {
            what: what.into(),
            path: java,
            hint,
        })
    }
}

/// Why a generated wrapper could not be added to the store.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Wrapper(#[from] WrapperError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A wrapper added to the store (or, for a dry run, only named).
#[derive(Debug, Clone)]
pub struct Installed {
    pub info: PathInfo,
    /// `bin/NAME` as installed, with its own path in place of the placeholder.
    pub script: String,
}

/// Generate the tree in the store's scratch area (with `$out` a placeholder path) and add it,
/// where the placeholder becomes the real content-addressed path. Every candidate must be
/// valid in the store; those the files mention become references. With `dry_run`, the tree
/// is generated in a private temporary directory and the store is not written.
pub fn install(
    store: &Store,
    wrapper: &Wrapper,
    candidates: &BTreeSet<AbsStorePath>,
    read: &mut dyn FnMut(&str) -> std::io::Result<Vec<u8>>,
    dry_run: bool,
) -> Result<Installed, InstallError> {
    for candidate in candidates {
        store.query_valid(store.check_abs(candidate)?)?;
    }
    let out_name = wrapper.out_name();
    let placeholder = self_placeholder(&out_name);
    let out = format!("{}/{placeholder}-{out_name}", store.store_dir());
    // Removed on every path out of here, and by the next add if this process is killed.
    let scratch = store.scratch(dry_run)?;
    let tree = scratch.path().join("out");
    wrapper.generate(&out, &tree, read)?;
    let script_path = tree.join("bin").join(wrapper.bin_name());
    let script = std::fs::read_to_string(&script_path).map_err(|source| WrapperError::Write {
        path: script_path,
        source,
    })?;
    let info = store.add_generated(&tree, &out_name, candidates, Some(&placeholder), dry_run)?;
    let script = script.replace(placeholder.as_str(), info.path.path.hash_part());
    Ok(Installed { info, script })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::test_info as info;

    #[test]
    fn operands_are_references_or_absolute_paths() {
        let inputs = Inputs::new(vec![
            info("6nqvynq6mpq1s0g0prmzq6dwkpldp8cg-bash-5.2.15-2+b13"),
            info("fkckkyn8s8bc544nrrrp4v4f0j21fvkz-openjdk-17-jre-headless-17.0.15"),
        ]);
        let r = Resolver {
            inputs: &inputs,
            store: None,
            root: None,
        };
        let bash = r.resolve("--bash", "@bash/bin").unwrap();
        assert_eq!(
            bash.logical,
            "/nix/store/6nqvynq6mpq1s0g0prmzq6dwkpldp8cg-bash-5.2.15-2+b13/bin"
        );
        assert!(matches!(
            r.resolve("x", "@zsh"),
            Err(OperandError::Reference {
                source: ManifestError::NoInput { .. },
                ..
            })
        ));
        assert!(matches!(
            r.resolve("x", "relative"),
            Err(OperandError::NotAbsolute { .. })
        ));
        assert_eq!(r.resolve_file("--jar", "app.jar").unwrap().store_path, None);
    }
}
