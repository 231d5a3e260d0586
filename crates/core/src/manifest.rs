//! What one tool wrote, read by the next: path-info manifests (a file or `-`, JSON lines or a
//! JSON array, as `store-add` and `mkwrapper` print them) and `@NAME[/SUB]` references into
//! them. Every tool that takes store paths resolves its arguments here, so that
//! `store-query closure app.json`, `mkimage --contents runtime.json` and
//! `mkwrapper --bash @bash` all mean the same thing, and no JSON glue is needed between them.
//!
//! A path argument is, by its spelling:
//! - `-`: a manifest on stdin (once per invocation);
//! - `@NAME[/SUB]`: the input path whose name is NAME, else NAME followed by `-VERSION`,
//!   plus SUB (canonical: no `.`, `..` or empty component);
//! - an absolute path in the store dir: itself;
//! - anything else: a manifest file, whose paths are all meant.

use std::collections::BTreeSet;
use std::io::Read;

use crate::file_kind;
use crate::nix::closure::ClosureGraph;
use crate::nix::path_info::{PathInfo, parse_path_infos};
use crate::nix::store_path::{AbsStorePath, StoreDir, is_name_with_version};

/// How a closure is printed (`store-query closure --format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ClosureFormat {
    /// The `exportReferencesGraph` JSON array (path infos with closureSize, sorted by path).
    Graph,
    /// nixpkgs closureInfo `registration` (nix-store --load-db input).
    Registration,
    /// nixpkgs closureInfo `store-paths`: one path a line.
    StorePaths,
    /// nixpkgs closureInfo `total-nar-size`.
    TotalNarSize,
}

impl ClosureFormat {
    /// `graph` in this format.
    pub fn render(self, graph: &ClosureGraph) -> String {
        match self {
            ClosureFormat::Graph => graph.to_export_json() + "\n",
            ClosureFormat::Registration => graph.registration(),
            ClosureFormat::StorePaths => graph.store_paths(),
            ClosureFormat::TotalNarSize => graph.total_nar_size(),
        }
    }
}

/// Most bytes of one manifest (a closure of tens of thousands of paths fits easily).
pub const MAX_MANIFEST: u64 = 64 << 20;

/// Why a reference or a manifest cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("no input path is named '{name}' (known: {known})")]
    NoInput { name: String, known: String },
    #[error("'{name}' names several input paths: {paths}")]
    Ambiguous { name: String, paths: String },
    #[error("'{text}' is not a canonical path ('.', '..' and '//' are not allowed)")]
    NotCanonical { text: String },
    #[error("{input}: {message}")]
    Invalid { input: String, message: String },
    #[error("{input}: larger than {limit} bytes")]
    TooLarge { input: String, limit: u64 },
    #[error("{input}: '{path}' is not in the store dir '{store_dir}'")]
    OutsideStore {
        input: String,
        path: String,
        store_dir: String,
    },
    #[error(
        "{input}: this is a layers JSON (mklayers' list of lists), not a path-info manifest; give it as the LAYERS operand"
    )]
    LayersJson { input: String },
    #[error(
        "{input}: names {count} paths where one is wanted (give it with --inputs and pick one with @NAME)"
    )]
    NotOne { input: String, count: usize },
    #[error("stdin ('-') can be read only once per invocation")]
    StdinTwice,
}

impl ManifestError {
    /// Whether the command line is at fault (a bad reference, stdin named twice: exit 2)
    /// rather than a manifest it names (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ManifestError::NoInput { .. }
                | ManifestError::Ambiguous { .. }
                | ManifestError::NotCanonical { .. }
                | ManifestError::NotOne { .. }
                | ManifestError::StdinTwice
        )
    }
}

/// How an input is named in messages: its path, or `stdin` for `-`.
fn shown(name: &str) -> String {
    if name == "-" {
        "stdin".to_string()
    } else {
        name.to_string()
    }
}

/// The paths `@NAME` references pick from: every manifest given to one invocation.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    infos: Vec<PathInfo>,
    stdin_read: bool,
}

impl Inputs {
    pub fn new(infos: Vec<PathInfo>) -> Inputs {
        Inputs {
            infos,
            stdin_read: false,
        }
    }

    /// Every input path info, in the order read.
    pub fn infos(&self) -> &[PathInfo] {
        &self.infos
    }

    /// Read a manifest (a file, or `-` for stdin, at most once), check that its paths are in
    /// `store_dir`, keep its infos as inputs and return its paths.
    pub fn load(&mut self, name: &str, store_dir: &StoreDir) -> Result<Vec<String>, ManifestError> {
        if name == "-" {
            if self.stdin_read {
                return Err(ManifestError::StdinTwice);
            }
            self.stdin_read = true;
        }
        let text = read_bounded(name)?;
        if !text.trim_start().starts_with(['{', '[']) && !text.trim().is_empty() {
            return path_lines(name, &text, store_dir);
        }
        let infos = parse_manifest(name, &text, store_dir)?;
        let paths = infos.iter().map(|i| i.path.to_string()).collect();
        self.infos.extend(infos);
        Ok(paths)
    }

    /// An operand that is a manifest (an existing file named by a relative path, or `-`)
    /// holding exactly one path: that path, its info kept as an input. Other operands
    /// (absolute paths, `@NAME`, other words) are `None`, left as they are.
    pub fn load_operand(
        &mut self,
        text: &str,
        store_dir: &StoreDir,
    ) -> Result<Option<String>, ManifestError> {
        let file = text != "-" && !std::path::Path::new(text).is_file();
        if text.starts_with(['/', '@']) || text.is_empty() || file {
            return Ok(None);
        }
        let paths = self.load(text, store_dir)?;
        match paths.as_slice() {
            [one] => Ok(Some(one.clone())),
            _ => Err(ManifestError::NotOne {
                input: shown(text),
                count: paths.len(),
            }),
        }
    }

    /// The input named `name`: exactly, else `name` followed by `-` and a version.
    pub fn pick(&self, name: &str) -> Result<&PathInfo, ManifestError> {
        let exact: Vec<&PathInfo> = self
            .infos
            .iter()
            .filter(|i| i.path.path.name() == name)
            .collect();
        let found: Vec<&PathInfo> = if exact.is_empty() {
            self.infos
                .iter()
                .filter(|i| is_name_with_version(i.path.path.name(), name))
                .collect()
        } else {
            exact
        };
        let distinct: BTreeSet<&AbsStorePath> = found.iter().map(|i| &i.path).collect();
        match distinct.len() {
            1 => Ok(found[0]),
            0 => Err(ManifestError::NoInput {
                name: name.to_string(),
                known: self.known_names(),
            }),
            _ => Err(ManifestError::Ambiguous {
                name: name.to_string(),
                paths: distinct
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// The names `@NAME` can use, sorted, for messages (`none` without inputs).
    fn known_names(&self) -> String {
        let names: BTreeSet<&str> = self.infos.iter().map(|i| i.path.path.name()).collect();
        if names.is_empty() {
            return "none: give path-info manifests with --inputs".to_string();
        }
        let more = names.len() > 50;
        let mut list: Vec<&str> = names.into_iter().take(50).collect();
        if more {
            list.push("…");
        }
        list.join(", ")
    }

    /// Resolve `@NAME[/SUB]` (the text after the `@`) to the store path it picks and the
    /// whole logical path.
    pub fn resolve(&self, reference: &str) -> Result<(&PathInfo, String), ManifestError> {
        let (name, sub) = match reference.find('/') {
            Some(i) => (&reference[..i], &reference[i..]),
            None => (reference, ""),
        };
        if check_canonical(sub).is_err() {
            return Err(ManifestError::NotCanonical {
                text: format!("@{reference}"),
            });
        }
        let input = self.pick(name)?;
        Ok((input, format!("{}{sub}", input.path)))
    }

    /// A value as given, or, when it starts with `@`, the path it references. `@@…` stands
    /// for a literal `@…`.
    pub fn expand(&self, value: &str) -> Result<String, ManifestError> {
        if let Some(literal) = value.strip_prefix("@@") {
            return Ok(format!("@{literal}"));
        }
        match value.strip_prefix('@') {
            Some(reference) => Ok(self.resolve(reference)?.1),
            None => Ok(value.to_string()),
        }
    }
}

/// What a path argument is, by its spelling (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathArg<'a> {
    /// A manifest file, or `-`.
    Manifest(&'a str),
    /// `@NAME[/SUB]`, without the `@`.
    Reference(&'a str),
    /// An absolute path in the store dir.
    Path(&'a str),
}

impl<'a> PathArg<'a> {
    pub fn classify(text: &'a str, store_dir: &StoreDir) -> PathArg<'a> {
        if let Some(reference) = text.strip_prefix('@') {
            return PathArg::Reference(reference);
        }
        match text.strip_prefix(store_dir.as_str()) {
            Some(rest) if rest.starts_with('/') => PathArg::Path(text),
            _ => PathArg::Manifest(text),
        }
    }
}

/// Paths named by path arguments: manifests give all their paths, references and plain
/// paths one each (a plain path is left for the store to parse and check). `inputs_files`
/// are read first; the manifests among `args` are inputs for `@NAME` too.
pub fn resolve_path_args(
    args: &[String],
    inputs_files: &[String],
    store_dir: &StoreDir,
) -> Result<(Vec<String>, Inputs), ManifestError> {
    let mut inputs = Inputs::default();
    for file in inputs_files {
        inputs.load(file, store_dir)?;
    }
    // Manifests first, so that a reference may use one named after it.
    let mut loaded = Vec::with_capacity(args.len());
    for arg in args {
        loaded.push(match PathArg::classify(arg, store_dir) {
            PathArg::Manifest(name) => Some(inputs.load(name, store_dir)?),
            _ => None,
        });
    }
    let mut out = Vec::new();
    for (arg, infos) in args.iter().zip(loaded) {
        match (PathArg::classify(arg, store_dir), infos) {
            (_, Some(paths)) => out.extend(paths),
            (PathArg::Reference(reference), None) => out.push(inputs.resolve(reference)?.1),
            (_, None) => out.push(arg.clone()),
        }
    }
    Ok((out, inputs))
}

/// A manifest that is one store path a line (`store-query closure --format store-paths`).
fn path_lines(name: &str, text: &str, store_dir: &StoreDir) -> Result<Vec<String>, ManifestError> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        check_canonical(line)?;
        if store_dir.parse_path_prefix(line).is_err() {
            return Err(ManifestError::OutsideStore {
                input: shown(name),
                path: line.to_string(),
                store_dir: store_dir.to_string(),
            });
        }
        out.push(line.to_string());
    }
    Ok(out)
}

/// Read a manifest file or stdin, at most [`MAX_MANIFEST`] bytes, as UTF-8.
fn read_bounded(name: &str) -> Result<String, ManifestError> {
    // A directory among path arguments is most likely a store path outside the store dir.
    if name != "-" && std::fs::metadata(name).is_ok_and(|m| m.is_dir()) {
        return Err(ManifestError::Invalid {
            input: shown(name),
            message:
                "a directory, not a path-info manifest (store paths are absolute, in the store dir)"
                    .to_string(),
        });
    }
    let data = read_input_bytes(name)?;
    String::from_utf8(data).map_err(|_| ManifestError::Invalid {
        input: shown(name),
        message: "not UTF-8".to_string(),
    })
}

/// Read a whole input named on the command line (`-` is stdin), at most [`MAX_MANIFEST`]
/// bytes: what every tool reads whole before it parses (manifests, closure graphs, texts to
/// add). A named input must be a regular file or a pipe: a directory, device or socket is
/// refused before it is opened, so `/dev/zero` or a multi-gigabyte file fails with one line
/// instead of filling memory.
pub fn read_input_bytes(name: &str) -> Result<Vec<u8>, ManifestError> {
    let input = shown(name);
    let io_error = |e: std::io::Error| ManifestError::Invalid {
        input: input.clone(),
        message: e.to_string(),
    };
    let mut data = Vec::new();
    if name == "-" {
        std::io::stdin()
            .lock()
            .take(MAX_MANIFEST + 1)
            .read_to_end(&mut data)
            .map_err(io_error)?;
    } else {
        // Refused before it is opened (opening a device can block or act), and checked again
        // on what was opened, in case the name changed in between.
        if let Ok(meta) = std::fs::metadata(name) {
            check_input_kind(name, &meta)?;
        }
        let file = std::fs::File::open(name).map_err(io_error)?;
        let meta = file.metadata().map_err(io_error)?;
        check_input_kind(name, &meta)?;
        file.take(MAX_MANIFEST + 1)
            .read_to_end(&mut data)
            .map_err(io_error)?;
    }
    if data.len() as u64 > MAX_MANIFEST {
        return Err(ManifestError::TooLarge {
            input,
            limit: MAX_MANIFEST,
        });
    }
    Ok(data)
}

/// Fail unless the opened input `name` (`meta` of what was opened) is a regular file of at
/// most [`MAX_MANIFEST`] bytes or a pipe.
pub fn check_input_kind(name: &str, meta: &std::fs::Metadata) -> Result<(), ManifestError> {
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    if ft.is_file() && meta.len() > MAX_MANIFEST {
        return Err(ManifestError::TooLarge {
            input: shown(name),
            limit: MAX_MANIFEST,
        });
    }
    if ft.is_file() || ft.is_fifo() {
        return Ok(());
    }
    Err(ManifestError::Invalid {
        input: shown(name),
        message: format!("not a regular file ({})", file_kind::name(ft)),
    })
}

/// Parse a manifest: path-info JSON (an object, an array, or a stream of them), or one store
/// path a line; every path must be in `store_dir`.
pub fn parse_manifest(
    name: &str,
    text: &str,
    store_dir: &StoreDir,
) -> Result<Vec<PathInfo>, ManifestError> {
    let input = shown(name);
    let trimmed = text.trim_start();
    let infos = if trimmed.starts_with(['{', '[']) {
        if serde_json::from_str::<Vec<Vec<String>>>(text).is_ok_and(|l| !l.is_empty()) {
            return Err(ManifestError::LayersJson { input });
        }
        parse_path_infos(text).map_err(|e| ManifestError::Invalid {
            input: input.clone(),
            message: e.to_string(),
        })?
    } else {
        return Err(ManifestError::Invalid {
            input,
            message: "not a path-info manifest (JSON objects, as store-add prints them)"
                .to_string(),
        });
    };
    for info in &infos {
        if info.path.store_dir != *store_dir {
            return Err(ManifestError::OutsideStore {
                input,
                path: info.path.to_string(),
                store_dir: store_dir.to_string(),
            });
        }
    }
    Ok(infos)
}

/// An absolute path without `.`, `..` or empty components (one trailing slash allowed).
pub fn check_canonical(path: &str) -> Result<(), ManifestError> {
    let inner = path.strip_prefix('/').unwrap_or(path);
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if !inner.is_empty()
        && inner
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(ManifestError::NotCanonical {
            text: path.to_string(),
        });
    }
    Ok(())
}

/// A path info for `/nix/store/BASE` with no references, for tests of what picks inputs.
#[cfg(test)]
pub(crate) fn test_info(base: &str) -> PathInfo {
    serde_json::from_value(serde_json::json!({
        "narHash": "sha256:15rnbqpncbwhcd4mqzqhvz9srh6xanjkm7piiwww36si73qbjzky",
        "narSize": 1,
        "path": format!("/nix/store/{base}"),
        "references": [],
    }))
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_info as info;

    #[test]
    fn references_pick_by_name_or_name_and_version() {
        let inputs = Inputs::new(vec![
            info("6nqvynq6mpq1s0g0prmzq6dwkpldp8cg-bash-5.2.15-2+b13"),
            info("fkckkyn8s8bc544nrrrp4v4f0j21fvkz-openjdk-17-jre-headless-17.0.15"),
            info("i9pmrzmpshapij2kin22pff6fc2adavx-bash-completion-2.11"),
        ]);
        assert_eq!(
            inputs.expand("@bash/bin").unwrap(),
            "/nix/store/6nqvynq6mpq1s0g0prmzq6dwkpldp8cg-bash-5.2.15-2+b13/bin"
        );
        assert_eq!(inputs.expand("@@literal").unwrap(), "@literal");
        assert_eq!(inputs.expand("plain").unwrap(), "plain");
        let Err(ManifestError::NoInput { known, .. }) = inputs.expand("@zsh") else {
            panic!("zsh is no input")
        };
        assert!(known.contains("bash-completion-2.11") && known.contains("bash-5.2.15-2+b13"));
        for hostile in [
            "@bash/../../etc/passwd",
            "@bash/./x",
            "@bash//x",
            "@bash/x/..",
        ] {
            assert!(
                matches!(
                    inputs.expand(hostile),
                    Err(ManifestError::NotCanonical { .. })
                ),
                "{hostile}"
            );
        }
        let twice = Inputs::new(vec![
            info("6nqvynq6mpq1s0g0prmzq6dwkpldp8cg-bash-5.2.15-2+b13"),
            info("0zl686gfyqgb4xvhpknhdly1n2daxmbq-bash-5.1"),
        ]);
        assert!(matches!(
            twice.expand("@bash"),
            Err(ManifestError::Ambiguous { .. })
        ));
    }

    #[test]
    fn manifests_are_path_infos_in_the_store_dir_and_not_layers() {
        let dir = StoreDir::default();
        let line =
            serde_json::to_string(&info("6nqvynq6mpq1s0g0prmzq6dwkpldp8cg-bash-5.2")).unwrap();
        assert_eq!(
            parse_manifest("-", &format!("{line}\n{line}\n"), &dir)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            parse_manifest("-", &format!("[{line},{line}]"), &dir)
                .unwrap()
                .len(),
            2
        );
        let other = StoreDir::new("/gnu/store").unwrap();
        assert!(matches!(
            parse_manifest("m.json", &line, &other),
            Err(ManifestError::OutsideStore { .. })
        ));
        assert!(matches!(
            parse_manifest("layers.json", "[[\"/nix/store/x\"]]", &dir),
            Err(ManifestError::LayersJson { .. })
        ));
        assert!(parse_manifest("m", "/nix/store/a-b\n", &dir).is_err());
    }

    #[test]
    fn path_args_are_classified_by_spelling() {
        let dir = StoreDir::default();
        assert_eq!(PathArg::classify("-", &dir), PathArg::Manifest("-"));
        assert_eq!(PathArg::classify("@a/b", &dir), PathArg::Reference("a/b"));
        assert_eq!(
            PathArg::classify("/nix/store/x-a", &dir),
            PathArg::Path("/nix/store/x-a")
        );
        assert_eq!(
            PathArg::classify("/nix/storex/a.json", &dir),
            PathArg::Manifest("/nix/storex/a.json")
        );
    }
}
