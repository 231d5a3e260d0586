//! Wrapper generation, as nixpkgs' shell `makeWrapper` does it: a bash script that sets up
//! the environment, arguments and working directory and then `exec`s the wrapped program.
//! [`Wrapper::generate`] writes a tree (`bin/NAME`, and in Java mode the jar) into a scratch
//! directory; adding it to the store is the caller's business.

pub mod flags;
pub mod java;
pub mod make;
pub mod operands;
pub mod quote;
pub mod script;

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use flags::{Flag, FlagError, parse_flags};
pub use java::{JavaApp, JavaMain};
pub use script::{CONTENTS_LIMIT, ReadFile, Script, read_contents_file, render};

use crate::nix::store_path::{HashPart, StorePath, check_name};
use quote::bash_quote;

/// Why a wrapper cannot be generated.
#[derive(Debug, thiserror::Error)]
pub enum WrapperError {
    #[error(transparent)]
    Flag(#[from] FlagError),
    #[error("invalid {what} {}: {reason}", bash_quote(.value))]
    BadName {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("bash {} cannot be a #! interpreter (it must be absolute, without blanks, short)", bash_quote(.0))]
    BadShell(String),
    #[error("{flag}: cannot use {}: {reason}", bash_quote(.file))]
    Contents {
        flag: &'static str,
        file: String,
        reason: String,
    },
    #[error("contents of {}: {error}", bash_quote(.file))]
    ContentsValue { file: String, error: FlagError },
    #[error("jar '{}': {source}", .path.display())]
    Jar { path: PathBuf, source: io::Error },
    #[error("'{}' already exists", .0.display())]
    Exists(PathBuf),
    #[error("cannot write '{}': {source}", .path.display())]
    Write { path: PathBuf, source: io::Error },
}

impl WrapperError {
    /// Whether this is the caller's mistake in the command line (exit 2) rather than a
    /// failure (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            WrapperError::Flag(_) | WrapperError::BadName { .. } | WrapperError::BadShell(_)
        )
    }
}

/// Wrap any executable: `bin/NAME` execs `program`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainWrapper {
    /// The bash for the shebang (`…-bash-5.2/bin/bash`).
    pub shell: String,
    /// The executable to run.
    pub program: String,
    /// The wrapper's file name in `bin/`, also the output's store path name.
    pub name: String,
    pub flags: Vec<Flag>,
}

/// A Java application: `share/java/NAME-VERSION.jar` copied from `jar` (or a symlink to it,
/// when it is already in the store), `bin/NAME` runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JavaWrapper {
    pub shell: String,
    pub app: JavaApp,
    /// Where to read the jar from now (a physical path).
    pub jar: PathBuf,
    /// The jar's logical path when it is already in the store: `share/java/NAME-VERSION.jar`
    /// is then a symlink to it (a reference), not a copy.
    pub jar_in_store: Option<String>,
    /// makeWrapper flags; `--add-flag(s)` are the application's arguments.
    pub flags: Vec<Flag>,
}

/// A wrapper to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wrapper {
    Plain(PlainWrapper),
    Java(JavaWrapper),
}

impl Wrapper {
    /// The output's store path name: NAME, or NAME-VERSION in Java mode.
    pub fn out_name(&self) -> String {
        match self {
            Wrapper::Plain(w) => w.name.clone(),
            Wrapper::Java(w) => w.app.out_name(),
        }
    }

    /// The name of the wrapper script in `bin/`.
    pub fn bin_name(&self) -> &str {
        match self {
            Wrapper::Plain(w) => &w.name,
            Wrapper::Java(w) => &w.app.name,
        }
    }

    /// Check names and render the script, reading `-contents` files through `read`. `out` is
    /// the absolute path the tree will have when installed (Java mode names its jar by it).
    pub fn script(&self, out: &str, read: &mut ReadFile<'_>) -> Result<String, WrapperError> {
        match self {
            Wrapper::Plain(w) => {
                check_bin_name(&w.name)?;
                if w.program.is_empty() {
                    return Err(WrapperError::BadName {
                        what: "program",
                        value: String::new(),
                        reason: "it is empty".to_string(),
                    });
                }
                let script = Script {
                    shell: &w.shell,
                    program: &w.program,
                    flags: &w.flags,
                    before_exec: Vec::new(),
                    leading_words: Vec::new(),
                };
                render(&script, read)
            }
            Wrapper::Java(w) => {
                w.app.validate()?;
                let script = Script {
                    shell: &w.shell,
                    program: &w.app.java,
                    flags: &w.flags,
                    before_exec: w.app.before_exec(),
                    leading_words: w.app.leading_words(out),
                };
                render(&script, read)
            }
        }
    }

    /// Generate the tree in `dir`, which must not exist yet; it is created. Everything is
    /// checked and rendered before anything is written; if writing fails, `dir` is removed.
    /// Files are written `0755` (the script) and `0644` (the jar), directories `0755`.
    pub fn generate(
        &self,
        out: &str,
        dir: &Path,
        read: &mut ReadFile<'_>,
    ) -> Result<(), WrapperError> {
        let text = self.script(out, read)?;
        if let Wrapper::Java(w) = self {
            let meta = fs::metadata(&w.jar).map_err(|source| WrapperError::Jar {
                path: w.jar.clone(),
                source,
            })?;
            if !meta.is_file() {
                return Err(WrapperError::Jar {
                    path: w.jar.clone(),
                    source: io::Error::other("not a regular file"),
                });
            }
        }
        if fs::symlink_metadata(dir).is_ok() {
            return Err(WrapperError::Exists(dir.to_path_buf()));
        }
        let written = self.write(dir, &text);
        if written.is_err() {
            let _ = fs::remove_dir_all(dir);
        }
        written
    }

    fn write(&self, dir: &Path, text: &str) -> Result<(), WrapperError> {
        let wrote = |path: &Path| {
            let path = path.to_path_buf();
            move |source| WrapperError::Write { path, source }
        };
        let bin = dir.join("bin");
        fs::create_dir_all(&bin).map_err(wrote(&bin))?;
        let script = bin.join(self.bin_name());
        fs::write(&script, text).map_err(wrote(&script))?;
        set_mode(&script, 0o755)?;
        if let Wrapper::Java(w) = self {
            let jar = dir.join(w.app.jar_rel_path());
            let share = dir.join("share/java");
            fs::create_dir_all(&share).map_err(wrote(&share))?;
            match &w.jar_in_store {
                Some(target) => {
                    std::os::unix::fs::symlink(target, &jar).map_err(wrote(&jar))?;
                }
                None => {
                    fs::copy(&w.jar, &jar).map_err(|source| WrapperError::Jar {
                        path: w.jar.clone(),
                        source,
                    })?;
                    set_mode(&jar, 0o644)?;
                }
            }
            set_mode(&share, 0o755)?;
            set_mode(&dir.join("share"), 0o755)?;
        }
        set_mode(&bin, 0o755)?;
        set_mode(dir, 0o755)
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), WrapperError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|source| {
        WrapperError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// A wrapper's file name must be a store path name and a plain file name.
fn check_bin_name(name: &str) -> Result<(), WrapperError> {
    let bad = |reason: String| WrapperError::BadName {
        what: "name",
        value: name.to_string(),
        reason,
    };
    check_name(name, name).map_err(|e| bad(e.to_string()))?;
    if name.starts_with('.') {
        return Err(bad("it starts with '.'".to_string()));
    }
    Ok(())
}

/// The placeholder hash part a generated tree uses for its own path before it is known:
/// 32 nix32 characters derived from the output name, so the same inputs give the same tree.
pub fn self_placeholder(out_name: &str) -> HashPart {
    let fingerprint = format!("strata:mkwrapper:self-placeholder:{out_name}");
    match StorePath::from_fingerprint(&fingerprint, "placeholder") {
        Ok(path) => HashPart::of(&path),
        // "placeholder" is a valid name, so this cannot happen; keep a valid fallback.
        Err(_) => HashPart::zero(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::nix32;

    #[test]
    fn placeholder_is_nix32_and_stable() {
        let p = self_placeholder("app-1.0");
        assert_eq!(p.as_str().len(), 32);
        assert!(p.as_str().bytes().all(nix32::is_nix32_char));
        assert_eq!(p, self_placeholder("app-1.0"));
        assert_ne!(p, self_placeholder("app-1.1"));
    }

    #[test]
    fn nothing_written_on_bad_input() {
        let dir = std::env::temp_dir().join(format!("strata-wrapper-bad-{}", std::process::id()));
        let w = Wrapper::Plain(PlainWrapper {
            shell: "/bin/bash".into(),
            program: "/bin/true".into(),
            name: "a/b".into(),
            flags: Vec::new(),
        });
        let err = w
            .generate("/out", &dir, &mut |_: &str| Ok(Vec::new()))
            .unwrap_err();
        assert!(err.is_usage(), "{err}");
        assert!(!dir.exists());
    }
}
