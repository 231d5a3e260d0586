//! apt's package indexes (`Packages` files, plain or compressed with gzip, xz or lz4, as
//! `apt-get update` leaves them in `/var/lib/apt/lists/`): what each package is, depends on
//! and provides, and where its `.deb` is in the archive, so packages can be resolved by name
//! without apt's own resolver.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::version::{Constraint, VersionError, compare};

/// Where apt keeps the lists it downloaded.
pub const APT_LISTS: &str = "/var/lib/apt/lists";

/// How large one index may be once decompressed (Debian's largest is about 100 MiB).
pub const INDEX_LIMIT: u64 = 2 << 30;

/// Errors reading an index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: larger than {} MiB once decompressed; not a package index", INDEX_LIMIT >> 20)]
    TooLarge { path: PathBuf },
    #[error("{path}: not UTF-8")]
    NotUtf8 { path: PathBuf },
    #[error("{path}: package '{package}': {source}")]
    Relation {
        path: PathBuf,
        package: String,
        source: VersionError,
    },
    #[error(
        "{dir}: no package indexes for {architecture} (*_Packages*) there; run `apt-get update` \
         (after `dpkg --add-architecture {architecture}` for a foreign one) or give --index"
    )]
    NoLists { dir: PathBuf, architecture: String },
}

/// One alternative of a dependency: `libc6 (>= 2.34)`, `python3:any`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub name: String,
    /// The architecture qualifier (`any`, `native`, `amd64`), if any.
    pub arch: Option<String>,
    pub constraint: Option<Constraint>,
}

impl std::fmt::Display for Relation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        if let Some(a) = &self.arch {
            write!(f, ":{a}")?;
        }
        if let Some(c) = &self.constraint {
            write!(f, " ({c})")?;
        }
        Ok(())
    }
}

/// A package as an index describes it. `Filename`, `Size` and `SHA256` are kept as written and
/// checked only when the package is locked (see `lock`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub multi_arch: Option<String>,
    pub essential: bool,
    pub priority: Option<String>,
    /// `Pre-Depends` then `Depends`: clauses of alternatives.
    pub depends: Vec<Vec<Relation>>,
    /// Provided names, with the version a versioned provide (`foo (= 1.0)`) gives.
    pub provides: Vec<(String, Option<String>)>,
    pub filename: Option<String>,
    pub size: Option<String>,
    pub sha256: Option<String>,
    /// The index it came from.
    pub index: PathBuf,
}

/// Parse a relation field (`a (>= 1) | b:any, c`).
pub fn parse_relations(value: &str) -> Result<Vec<Vec<Relation>>, VersionError> {
    let mut out = Vec::new();
    for clause in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        let mut alts = Vec::new();
        for alt in clause.split('|').map(str::trim) {
            // The name runs to a constraint `(…)`; restrictions (`[amd64]`, `<!nocheck>`) only
            // appear in source packages and are dropped.
            let cut = alt.find(['(', '[', '<']).unwrap_or(alt.len());
            let name = alt[..cut].trim();
            let constraint = match alt[cut..].strip_prefix('(') {
                Some(rest) => Some(Constraint::parse(rest.split(')').next().unwrap_or(rest))?),
                None => None,
            };
            let (name, arch) = match name.split_once(':') {
                Some((n, a)) => (n.trim(), Some(a.trim().to_string())),
                None => (name, None),
            };
            alts.push(Relation {
                name: name.to_string(),
                arch,
                constraint,
            });
        }
        out.push(alts);
    }
    Ok(out)
}

/// Every package of a set of indexes, for one architecture (plus `all`).
#[derive(Debug, Clone, Default)]
pub struct Index {
    pub architecture: String,
    /// Name → its versions, highest first (one entry per distinct version).
    pub packages: BTreeMap<String, Vec<IndexPackage>>,
    /// Provided name → (providing package, version) pairs.
    pub providers: BTreeMap<String, Vec<(String, String)>>,
    /// The index files read, in order.
    pub files: Vec<PathBuf>,
}

/// The Debian name of the architecture this program runs on.
pub fn native_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "i386",
        "arm" => "armhf",
        "powerpc64" => "ppc64el",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// The package indexes apt downloaded into `dir` (`*_Packages`, `.gz`, `.xz`, `.lz4`) for
/// `architecture`, sorted by name: a list of a repository component is for one architecture
/// (`…_main_binary-arm64_Packages`), and holds the `all` packages too; a list of a flat
/// repository (no `binary-ARCH` in its name) may hold any and is read for every architecture.
pub fn apt_lists(dir: &Path, architecture: &str) -> Result<Vec<PathBuf>, IndexError> {
    let entries = fs::read_dir(dir).map_err(|source| IndexError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let is_index = ["", ".gz", ".xz", ".lz4"]
                .iter()
                .any(|ext| name.ends_with(&format!("_Packages{ext}")));
            let for_arch = match name.rsplit_once("_binary-") {
                Some((_, rest)) => rest.split('_').next() == Some(architecture),
                None => true,
            };
            is_index && for_arch
        })
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(IndexError::NoLists {
            dir: dir.to_path_buf(),
            architecture: architecture.to_string(),
        });
    }
    Ok(out)
}

/// Read a whole index, decompressing by its extension, at most [`INDEX_LIMIT`] bytes.
pub fn read_index_text(path: &Path) -> Result<String, IndexError> {
    let io_err = |source| IndexError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = io::BufReader::new(fs::File::open(path).map_err(io_err)?);
    let name = path.to_string_lossy();
    let reader: Box<dyn Read> = if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else if name.ends_with(".xz") {
        Box::new(xz2::read::XzDecoder::new(file))
    } else if name.ends_with(".lz4") {
        Box::new(lz4_flex::frame::FrameDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut data = Vec::new();
    reader
        .take(INDEX_LIMIT + 1)
        .read_to_end(&mut data)
        .map_err(io_err)?;
    if data.len() as u64 > INDEX_LIMIT {
        return Err(IndexError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    String::from_utf8(data).map_err(|_| IndexError::NotUtf8 {
        path: path.to_path_buf(),
    })
}

/// Parse the stanzas of one index; packages of other architectures are skipped.
pub fn parse_index(
    text: &str,
    path: &Path,
    architecture: &str,
) -> Result<Vec<IndexPackage>, IndexError> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        if stanza.trim().is_empty() {
            continue;
        }
        let f = super::control::fields(stanza);
        let (Some(name), Some(version), Some(arch)) =
            (f.get("Package"), f.get("Version"), f.get("Architecture"))
        else {
            continue;
        };
        if arch != architecture && arch != "all" {
            continue;
        }
        let relation_err = |source| IndexError::Relation {
            path: path.to_path_buf(),
            package: name.clone(),
            source,
        };
        let mut depends = Vec::new();
        for key in ["Pre-Depends", "Depends"] {
            if let Some(v) = f.get(key) {
                depends.extend(parse_relations(v).map_err(relation_err)?);
            }
        }
        let provides = match f.get("Provides") {
            Some(v) => parse_relations(v)
                .map_err(relation_err)?
                .into_iter()
                .flatten()
                .map(|r| (r.name, r.constraint.map(|c| c.version)))
                .collect(),
            None => Vec::new(),
        };
        out.push(IndexPackage {
            name: name.clone(),
            version: version.clone(),
            architecture: arch.clone(),
            multi_arch: f.get("Multi-Arch").cloned(),
            essential: f.get("Essential").is_some_and(|v| v == "yes"),
            priority: f.get("Priority").cloned(),
            depends,
            provides,
            filename: f.get("Filename").cloned(),
            size: f.get("Size").cloned(),
            sha256: f.get("SHA256").cloned(),
            index: path.to_path_buf(),
        });
    }
    Ok(out)
}

impl Index {
    /// Read indexes in order; a version found in several keeps the first one read.
    pub fn read(files: &[PathBuf], architecture: &str) -> Result<Index, IndexError> {
        let mut index = Index {
            architecture: architecture.to_string(),
            files: files.to_vec(),
            ..Index::default()
        };
        for path in files {
            let text = read_index_text(path)?;
            for p in parse_index(&text, path, architecture)? {
                index.insert(p);
            }
        }
        for versions in index.packages.values_mut() {
            versions.sort_by(|a, b| compare(&b.version, &a.version));
        }
        for (name, versions) in &index.packages {
            for v in versions {
                for (provided, _) in &v.provides {
                    let entry = index.providers.entry(provided.clone()).or_default();
                    let key = (name.clone(), v.version.clone());
                    if !entry.contains(&key) {
                        entry.push(key);
                    }
                }
            }
        }
        Ok(index)
    }

    fn insert(&mut self, p: IndexPackage) {
        let versions = self.packages.entry(p.name.clone()).or_default();
        // The same version from two lists (a point release and its security update both
        // carrying it) is one package: keep the first.
        if versions
            .iter()
            .any(|v| v.version == p.version && v.architecture == p.architecture)
        {
            return;
        }
        versions.push(p);
    }

    /// apt's candidate for a name: its highest version (every list has the default pin).
    pub fn candidate(&self, name: &str) -> Option<&IndexPackage> {
        self.packages.get(name).and_then(|v| v.first())
    }

    /// A package by name and exact version.
    pub fn get(&self, name: &str, version: &str) -> Option<&IndexPackage> {
        self.packages
            .get(name)
            .and_then(|vs| vs.iter().find(|v| v.version == version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations() {
        let r =
            parse_relations("libc6 (>= 2.34), python3:any (<< 3.12~) | x [amd64] <!nocheck>, y")
                .unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0][0].to_string(), "libc6 (>= 2.34)");
        assert_eq!(r[1][0].name, "python3");
        assert_eq!(r[1][0].arch.as_deref(), Some("any"));
        assert_eq!(r[1][0].constraint.as_ref().unwrap().to_string(), "<< 3.12~");
        assert_eq!(r[1][1].name, "x");
        assert!(r[1][1].constraint.is_none());
        assert!(parse_relations("a (~~ 1)").is_err());
    }

    #[test]
    fn stanzas_and_candidates() {
        let text = "Package: a\nVersion: 1.0\nArchitecture: amd64\nProvides: v (= 2)\n\n\
Package: a\nVersion: 1:0.5\nArchitecture: amd64\n\n\
Package: a\nVersion: 3\nArchitecture: arm64\n\n\
Package: b\nVersion: 1\nArchitecture: all\nPre-Depends: a\nDepends: c | d\n";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x_Packages");
        fs::write(&path, text).unwrap();
        let index = Index::read(std::slice::from_ref(&path), "amd64").unwrap();
        assert_eq!(index.candidate("a").unwrap().version, "1:0.5");
        assert_eq!(index.packages["a"].len(), 2);
        assert_eq!(index.candidate("b").unwrap().depends.len(), 2);
        assert_eq!(index.providers["v"], [("a".to_string(), "1.0".to_string())]);
        assert_eq!(apt_lists(dir.path(), "amd64").unwrap(), [path]);
    }

    #[test]
    fn compressed_indexes() {
        use std::io::Write;
        let text = "Package: a\nVersion: 1\nArchitecture: all\n";
        let dir = tempfile::tempdir().unwrap();
        let mut lz4 = lz4_flex::frame::FrameEncoder::new(Vec::new());
        lz4.write_all(text.as_bytes()).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(text.as_bytes()).unwrap();
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(text.as_bytes()).unwrap();
        let files = [
            ("l_Packages.lz4", lz4.finish().unwrap()),
            ("g_Packages.gz", gz.finish().unwrap()),
            ("x_Packages.xz", xz.finish().unwrap()),
            ("p_Packages", text.as_bytes().to_vec()),
            ("l_Sources.lz4", b"not an index".to_vec()),
        ];
        for (name, data) in &files {
            fs::write(dir.path().join(name), data).unwrap();
        }
        let lists = apt_lists(dir.path(), "amd64").unwrap();
        assert_eq!(lists.len(), 4);
        for path in &lists {
            assert_eq!(read_index_text(path).unwrap(), text, "{}", path.display());
        }
        // A corrupt compressed index is an error naming it.
        let bad = dir.path().join("b_Packages.lz4");
        fs::write(&bad, b"\x04\x22\x4d\x18garbage").unwrap();
        let err = read_index_text(&bad).unwrap_err().to_string();
        assert!(err.contains("b_Packages.lz4"), "{err}");
        // Lists of a component are read for their own architecture only.
        for arch in ["amd64", "arm64"] {
            let name = format!("host_debian_dists_bookworm_main_binary-{arch}_Packages.lz4");
            fs::copy(dir.path().join("l_Packages.lz4"), dir.path().join(name)).unwrap();
        }
        let names = |arch: &str| -> Vec<String> {
            apt_lists(dir.path(), arch)
                .unwrap()
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .filter(|n| n.contains("binary-"))
                .collect()
        };
        assert_eq!(
            names("arm64"),
            ["host_debian_dists_bookworm_main_binary-arm64_Packages.lz4"]
        );
        assert_eq!(
            names("amd64"),
            ["host_debian_dists_bookworm_main_binary-amd64_Packages.lz4"]
        );
        assert!(names("riscv64").is_empty());
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            apt_lists(empty.path(), "amd64"),
            Err(IndexError::NoLists { .. })
        ));
    }
}
