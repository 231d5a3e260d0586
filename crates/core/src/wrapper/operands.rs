//! Path operands of a wrapper (bash, the JRE, the jar, the program): `@NAME[/SUB]` picked from
//! input path infos or absolute paths, mapped to where their files physically are, checked
//! against the store, and, at the end, the generated tree added to the store under its own
//! (placeholder-rewritten) content-addressed path.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::{Wrapper, WrapperError, self_placeholder};
use crate::nix::path_info::PathInfo;
use crate::nix::store_path::{AbsStorePath, is_name_with_version};
use crate::store::{Store, StoreError};

/// Why an operand cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OperandError {
    #[error("{what}: '{text}' is neither an absolute path nor @NAME")]
    NotAbsolute { what: String, text: String },
    #[error("{what}: no --inputs path is named '{name}'")]
    NoInput { what: String, name: String },
    #[error("{what}: '{name}' names several --inputs paths: {paths}")]
    Ambiguous {
        what: String,
        name: String,
        paths: String,
    },
    #[error(
        "{what}: '{path}' is not in the store '{store_dir}' (use --tree to wrap paths outside it)"
    )]
    NotInStore {
        what: String,
        path: String,
        store_dir: String,
    },
    #[error("{what}: cannot wrap '{path}': not an executable file")]
    NotExecutable { what: String, path: String },
    #[error("{what}: '{path}' is not a canonical path ('.', '..' and '//' are not allowed)")]
    NotCanonical { what: String, path: String },
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
    pub inputs: &'a [PathInfo],
    pub store: Option<&'a Store>,
}

impl Resolver<'_> {
    /// `@NAME[/SUB]` or an absolute path.
    pub fn resolve(&self, what: &str, text: &str) -> Result<Operand, OperandError> {
        if let Some(reference) = text.strip_prefix('@') {
            let (name, sub) = match reference.find('/') {
                Some(i) => (&reference[..i], &reference[i..]),
                None => (reference, ""),
            };
            let input = self.pick(what, name)?;
            let logical = format!("{}{sub}", input.path);
            check_canonical(what, &logical)?;
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
        check_canonical(what, text)?;
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

    /// The input named `name`: exactly, else `name` followed by `-` and a version.
    fn pick(&self, what: &str, name: &str) -> Result<&PathInfo, OperandError> {
        let exact: Vec<&PathInfo> = self
            .inputs
            .iter()
            .filter(|i| i.path.path.name() == name)
            .collect();
        let found = if exact.is_empty() {
            self.inputs
                .iter()
                .filter(|i| is_name_with_version(i.path.path.name(), name))
                .collect()
        } else {
            exact
        };
        let distinct: BTreeSet<&AbsStorePath> = found.iter().map(|i| &i.path).collect();
        match distinct.len() {
            1 => Ok(found[0]),
            0 => Err(OperandError::NoInput {
                what: what.into(),
                name: name.into(),
            }),
            _ => Err(OperandError::Ambiguous {
                what: what.into(),
                name: name.into(),
                paths: distinct
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
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

    /// Where a logical path's files are now: under the store root for store paths.
    pub fn physical_of(&self, text: &str) -> PathBuf {
        if let Some(store) = self.store
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
        let ok = std::fs::metadata(self.physical_of(logical))
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false);
        if ok {
            Ok(())
        } else {
            Err(OperandError::NotExecutable {
                what: what.into(),
                path: logical.into(),
            })
        }
    }
}

/// An absolute path without `.`, `..` or empty components (one trailing slash allowed).
fn check_canonical(what: &str, path: &str) -> Result<(), OperandError> {
    let inner = path.strip_prefix('/').unwrap_or(path);
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if inner
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
        && !inner.is_empty()
    {
        return Err(OperandError::NotCanonical {
            what: what.into(),
            path: path.into(),
        });
    }
    Ok(())
}

/// Why a generated wrapper could not be added to the store.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Wrapper(#[from] WrapperError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Generate the tree in the store's scratch area (with `$out` a placeholder path) and add it,
/// where the placeholder becomes the real content-addressed path. Every candidate must be
/// valid in the store; those the files mention become references.
pub fn install(
    store: &Store,
    wrapper: &Wrapper,
    candidates: &BTreeSet<AbsStorePath>,
    read: &mut dyn FnMut(&str) -> std::io::Result<Vec<u8>>,
) -> Result<PathInfo, InstallError> {
    for candidate in candidates {
        store.query_valid(store.check_abs(candidate)?)?;
    }
    let out_name = wrapper.out_name();
    let placeholder = self_placeholder(&out_name);
    let out = format!("{}/{placeholder}-{out_name}", store.store_dir());
    // Removed on every path out of here, and by the next add if this process is killed.
    let scratch = store.scratch(false)?;
    let tree = scratch.path().join("out");
    wrapper.generate(&out, &tree, read)?;
    Ok(store.add_generated(&tree, &out_name, candidates, Some(&placeholder))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(base: &str) -> PathInfo {
        serde_json::from_value(serde_json::json!({
            "narHash": "sha256:15rnbqpncbwhcd4mqzqhvz9srh6xanjkm7piiwww36si73qbjzky",
            "narSize": 1,
            "path": format!("/nix/store/{base}"),
            "references": [],
        }))
        .unwrap()
    }

    #[test]
    fn at_names_pick_by_name_or_name_and_version() {
        let inputs = [
            info("6nqvynq6mpq1s0g0prmzq6dwkpldp8cg-bash-5.2.15-2+b13"),
            info("fkckkyn8s8bc544nrrrp4v4f0j21fvkz-openjdk-17-jre-headless-17.0.15"),
            info("i9pmrzmpshapij2kin22pff6fc2adavx-bash-completion-2.11"),
        ];
        let r = Resolver {
            inputs: &inputs,
            store: None,
        };
        let bash = r.resolve("--bash", "@bash/bin").unwrap();
        assert_eq!(
            bash.logical,
            "/nix/store/6nqvynq6mpq1s0g0prmzq6dwkpldp8cg-bash-5.2.15-2+b13/bin"
        );
        let jre = r.resolve("--jre", "@openjdk-17-jre-headless").unwrap();
        assert!(jre.logical.ends_with("-openjdk-17-jre-headless-17.0.15"));
        assert!(matches!(
            r.resolve("x", "@zsh"),
            Err(OperandError::NoInput { .. })
        ));
        assert!(matches!(
            r.resolve("x", "relative"),
            Err(OperandError::NotAbsolute { .. })
        ));
        assert_eq!(r.resolve_file("--jar", "app.jar").unwrap().store_path, None);
        let twice = [
            inputs[0].clone(),
            info("0zl686gfyqgb4xvhpknhdly1n2daxmbq-bash-5.1"),
        ];
        let r = Resolver {
            inputs: &twice,
            store: None,
        };
        assert!(matches!(
            r.resolve("x", "@bash"),
            Err(OperandError::Ambiguous { .. })
        ));
    }
}
