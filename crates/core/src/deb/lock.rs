//! The lock file of a Debian runtime: the exact packages a resolution chose (name, version,
//! architecture, archive file name, SHA256 and size as the index gave them), so that later
//! builds fetch and check exactly those `.deb`s instead of resolving again, and the same lock
//! gives the same store paths on any machine, any day. Also the fetching and checking itself.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::resolve::Resolution;

/// The lock format's version.
pub const LOCK_FORMAT: u32 = 1;

/// The largest `.deb` a lock may name (Debian's largest are about 1 GiB).
pub const DEB_SIZE_LIMIT: u64 = 4 << 30;

/// A lock file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// Always [`LOCK_FORMAT`].
    pub format: u32,
    /// The Debian architecture resolved for (`amd64`); `all` packages go with any.
    pub architecture: String,
    /// The names asked for, as given.
    pub request: Vec<String>,
    /// Packages left out with what only they pulled in.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Package name → the locked package.
    pub packages: BTreeMap<String, LockedPackage>,
}

/// One locked package.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LockedPackage {
    pub version: String,
    pub architecture: String,
    /// The path in the archive (`pool/main/b/bash/bash_5.2.15-2+b13_amd64.deb`).
    pub filename: String,
    /// Lower-case hex SHA256 of the `.deb`.
    pub sha256: String,
    pub size: u64,
    /// The package whose dependency pulled this one in (absent for a package asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulled_by: Option<String>,
}

/// Errors making, reading or using a lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{index}: package '{package}': {reason}")]
    BadIndexEntry {
        index: PathBuf,
        package: String,
        reason: String,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    /// `package` is `NAME VERSION`; `detail` says what differs.
    #[error("{path}: is not {package} as locked: {detail}; nothing was added")]
    Mismatch {
        path: PathBuf,
        package: String,
        detail: String,
    },
    #[error(
        "{package}={version}: apt-get download failed (the archive may no longer serve this version; `deb-lock update` re-resolves): {detail}"
    )]
    Download {
        package: String,
        version: String,
        detail: String,
    },
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether an archive file name is safe to use as a relative path: plain components, no
/// `..`, no absolute path, a `.deb` at the end.
fn is_safe_filename(name: &str) -> bool {
    let p = Path::new(name);
    !name.is_empty()
        && name.ends_with(".deb")
        && !name.contains('\\')
        && p.components().all(|c| matches!(c, Component::Normal(_)))
}

/// Check a package's name, version and architecture against Debian's syntax (policy §5.6.1,
/// §5.6.12), so that none can be taken for an option or a path by `apt-get`.
fn check_identity(name: &str, version: &str, architecture: &str) -> Result<(), String> {
    let name_ok = name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    if !name_ok {
        return Err(format!("'{name}' is not a Debian package name"));
    }
    let version_ok = version.starts_with(|c: char| c.is_ascii_digit())
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+~:-".contains(&b));
    if !version_ok {
        return Err(format!("'{version}' is not a Debian version"));
    }
    let arch_ok = !architecture.is_empty()
        && architecture
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !arch_ok {
        return Err(format!("'{architecture}' is not a Debian architecture"));
    }
    Ok(())
}

/// Check one package's archive fields (as an index or a lock gives them).
fn check_entry(filename: &str, sha256: &str, size: u64) -> Result<(), String> {
    if !is_safe_filename(filename) {
        return Err(format!(
            "Filename '{filename}' is not a relative path to a .deb inside the archive"
        ));
    }
    if !is_hex64(sha256) {
        return Err(format!("SHA256 '{sha256}' is not 64 lower-case hex digits"));
    }
    if size == 0 || size > DEB_SIZE_LIMIT {
        return Err(format!(
            "Size {size} is not between 1 byte and {} GiB",
            DEB_SIZE_LIMIT >> 30
        ));
    }
    Ok(())
}

impl Lock {
    /// The lock of a resolution; every package's archive fields are checked.
    pub fn from_resolution(
        resolution: &Resolution,
        architecture: &str,
        request: &[String],
        exclude: &BTreeSet<String>,
    ) -> Result<Lock, LockError> {
        let mut packages = BTreeMap::new();
        for (name, r) in &resolution.packages {
            let p = r.package;
            let bad = |reason: String| LockError::BadIndexEntry {
                index: p.index.clone(),
                package: name.clone(),
                reason,
            };
            let filename = p
                .filename
                .clone()
                .ok_or_else(|| bad("no Filename".into()))?;
            let sha256 = p.sha256.clone().ok_or_else(|| bad("no SHA256".into()))?;
            let size_text = p.size.clone().ok_or_else(|| bad("no Size".into()))?;
            let size: u64 = size_text
                .parse()
                .map_err(|_| bad(format!("Size '{size_text}' is not a byte count")))?;
            check_identity(name, &p.version, &p.architecture)
                .and_then(|()| check_entry(&filename, &sha256, size))
                .map_err(bad)?;
            packages.insert(
                name.clone(),
                LockedPackage {
                    version: p.version.clone(),
                    architecture: p.architecture.clone(),
                    filename,
                    sha256,
                    size,
                    pulled_by: r.pulled_by.clone(),
                },
            );
        }
        Ok(Lock {
            format: LOCK_FORMAT,
            architecture: architecture.to_string(),
            request: request.to_vec(),
            exclude: exclude.iter().cloned().collect(),
            packages,
        })
    }

    /// Read and check a lock file.
    pub fn read(path: &Path) -> Result<Lock, LockError> {
        let text = fs::read_to_string(path).map_err(|source| LockError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let lock: Lock = serde_json::from_str(&text).map_err(|source| LockError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |reason: String| LockError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        if lock.format != LOCK_FORMAT {
            return Err(invalid(format!(
                "lock format {} is not {LOCK_FORMAT}",
                lock.format
            )));
        }
        for (name, p) in &lock.packages {
            check_identity(name, &p.version, &p.architecture)
                .and_then(|()| check_entry(&p.filename, &p.sha256, p.size))
                .map_err(|reason| invalid(format!("package '{name}': {reason}")))?;
        }
        Ok(lock)
    }

    /// The lock as written: pretty JSON, keys sorted, a final newline.
    pub fn to_text(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Write the lock atomically (a temporary file beside it, then a rename).
    pub fn write(&self, path: &Path) -> Result<(), LockError> {
        let io_err = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err)?;
        tmp.write_all(self.to_text().as_bytes()).map_err(io_err)?;
        // A lock is meant to be committed and read by others: not the temporary file's 0600.
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(fs::Permissions::from_mode(0o644))
                .map_err(io_err)?;
        }
        tmp.as_file().sync_all().map_err(io_err)?;
        tmp.persist(path).map_err(|e| io_err(e.error))?;
        Ok(())
    }

    /// What changed from `old` to `self`, one line each: `+ name version`, `- name version`,
    /// `~ name old -> new`, sorted by name.
    pub fn changes_from(&self, old: &Lock) -> Vec<String> {
        let mut out = Vec::new();
        let names: BTreeSet<&String> = self.packages.keys().chain(old.packages.keys()).collect();
        for name in names {
            match (old.packages.get(name), self.packages.get(name)) {
                (None, Some(n)) => out.push(format!("+ {name} {}", n.version)),
                (Some(o), None) => out.push(format!("- {name} {}", o.version)),
                (Some(o), Some(n)) if o.version != n.version || o.sha256 != n.sha256 => {
                    out.push(format!("~ {name} {} -> {}", o.version, n.version));
                }
                _ => {}
            }
        }
        out
    }
}

/// Lower-case hex SHA256 and size of a file.
pub fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    let hex = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((hex, size))
}

/// Check that `path` is the locked package: its size, then its SHA256.
pub fn verify(path: &Path, name: &str, p: &LockedPackage) -> Result<(), LockError> {
    let (sha, size) = sha256_file(path).map_err(|source| LockError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mismatch = |what: &str, want: &str, got: &str| LockError::Mismatch {
        path: path.to_path_buf(),
        package: format!("{name} {}", p.version),
        detail: format!("{what} (lock: {want}, file: {got})"),
    };
    if size != p.size {
        return Err(mismatch(
            "size differs",
            &p.size.to_string(),
            &size.to_string(),
        ));
    }
    if sha != p.sha256 {
        return Err(mismatch("SHA256 differs", &p.sha256, &sha));
    }
    Ok(())
}

/// Where the `.deb`s of a lock come from.
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// A directory of `.deb`s the user already has (looked up by the archive file's name).
    pub debs_dir: Option<PathBuf>,
    /// Where downloaded `.deb`s are kept between builds.
    pub cache_dir: PathBuf,
    /// Never run `apt-get download`: a package not found locally is an error.
    pub offline: bool,
}

/// The base name of a locked package's file (`bash_5.2.15-2+b13_amd64.deb`).
fn base_name(p: &LockedPackage) -> &str {
    p.filename.rsplit('/').next().unwrap_or(&p.filename)
}

/// Every locked `.deb`, found in the user's directory or the cache or downloaded by exact
/// version with `apt-get download`, each checked against the lock. Returned in package-name
/// order; on any mismatch nothing is returned.
pub fn fetch(lock: &Lock, options: &FetchOptions) -> Result<Vec<PathBuf>, LockError> {
    let mut found: BTreeMap<&String, PathBuf> = BTreeMap::new();
    let mut missing = Vec::new();
    for (name, p) in &lock.packages {
        let candidates = options
            .debs_dir
            .iter()
            .chain([&options.cache_dir])
            .map(|d| d.join(base_name(p)));
        match candidates.into_iter().find(|c| c.is_file()) {
            Some(path) => {
                verify(&path, name, p)?;
                found.insert(name, path);
            }
            None => missing.push(name),
        }
    }
    if !missing.is_empty() {
        if options.offline {
            let name = missing[0];
            return Err(LockError::Download {
                package: name.clone(),
                version: lock.packages[name].version.clone(),
                detail: "not in the given directory or the cache, and downloads are off".into(),
            });
        }
        fs::create_dir_all(&options.cache_dir).map_err(|source| LockError::Io {
            path: options.cache_dir.clone(),
            source,
        })?;
        for name in missing {
            let p = &lock.packages[name];
            let path = download(name, p, &options.cache_dir)?;
            found.insert(name, path);
        }
    }
    Ok(found.into_values().collect())
}

/// `apt-get download NAME=VERSION` into a fresh directory in the cache, checked, then moved
/// into the cache under the archive file's base name.
fn download(name: &str, p: &LockedPackage, cache: &Path) -> Result<PathBuf, LockError> {
    let io_err = |source| LockError::Io {
        path: cache.to_path_buf(),
        source,
    };
    let tmp = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(cache)
        .map_err(io_err)?;
    let arch_spec = format!("{name}:{}={}", p.architecture, p.version);
    let spec = if p.architecture == "all" {
        format!("{name}={}", p.version)
    } else {
        arch_spec
    };
    let out = Command::new("apt-get")
        .args(["download", "-q", &spec])
        .current_dir(tmp.path())
        .output()
        .map_err(|e| LockError::Download {
            package: name.to_string(),
            version: p.version.clone(),
            detail: format!("cannot run apt-get: {e}"),
        })?;
    let debs: Vec<PathBuf> = fs::read_dir(tmp.path())
        .map_err(io_err)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    if !out.status.success() || debs.len() != 1 {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let detail = stderr
            .lines()
            .find(|l| l.starts_with("E:"))
            .unwrap_or_else(|| stderr.lines().next().unwrap_or("no .deb was written"))
            .to_string();
        return Err(LockError::Download {
            package: name.to_string(),
            version: p.version.clone(),
            detail,
        });
    }
    verify(&debs[0], name, p)?;
    let dest = cache.join(base_name(p));
    fs::rename(&debs[0], &dest).map_err(io_err)?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_fields_are_checked() {
        let sha = "a".repeat(64);
        assert!(check_entry("pool/main/b/bash/bash_1_amd64.deb", &sha, 10).is_ok());
        for bad in [
            "../../etc/passwd",
            "/etc/passwd.deb",
            "pool/../../x.deb",
            "pool/x.txt",
            "",
        ] {
            assert!(check_entry(bad, &sha, 10).is_err(), "{bad}");
        }
        assert!(check_entry("a.deb", &"A".repeat(64), 10).is_err());
        assert!(check_entry("a.deb", &sha, 0).is_err());
        assert!(check_entry("a.deb", &sha, DEB_SIZE_LIMIT + 1).is_err());
        assert!(check_identity("libc6", "1:2.36-9+deb12u4~x", "amd64").is_ok());
        for (n, v, a) in [
            ("-oDebug::X=1", "1", "amd64"),
            ("a", "1", "amd64"),
            ("Bash", "1", "amd64"),
            ("bash", "-1", "amd64"),
            ("bash", "1 2", "amd64"),
            ("bash", "1", "../x"),
        ] {
            assert!(check_identity(n, v, a).is_err(), "{n} {v} {a}");
        }
    }

    #[test]
    fn changes_are_listed() {
        let p = |v: &str| LockedPackage {
            version: v.into(),
            architecture: "amd64".into(),
            filename: "a.deb".into(),
            sha256: "0".repeat(64),
            size: 1,
            pulled_by: None,
        };
        let lock = |ps: &[(&str, &str)]| Lock {
            format: LOCK_FORMAT,
            architecture: "amd64".into(),
            request: vec![],
            exclude: vec![],
            packages: ps.iter().map(|(n, v)| (n.to_string(), p(v))).collect(),
        };
        let old = lock(&[("a", "1"), ("b", "1"), ("c", "1")]);
        let new = lock(&[("a", "1"), ("b", "2"), ("d", "1")]);
        assert_eq!(new.changes_from(&old), ["~ b 1 -> 2", "- c 1", "+ d 1"]);
        assert!(old.changes_from(&old).is_empty());
    }
}

/// Errors building from a lock.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Deb(#[from] super::DebError),
}

/// Fetch and check every locked `.deb`, then add them together as `store-add --deb` does
/// (in package-name order, so the result depends on the lock alone). Nothing is unpacked
/// before every file has matched the lock.
pub fn build(
    store: &crate::store::Store,
    lock: &Lock,
    fetch_options: &FetchOptions,
    options: &crate::store::AddOptions,
) -> Result<super::DebReport, BuildError> {
    let debs = fetch(lock, fetch_options)?;
    Ok(super::add_debs(store, &debs, &[], options, false)?)
}

/// What to resolve into a lock.
#[derive(Debug, Clone, Default)]
pub struct LockRequest {
    /// Package indexes to read; empty means apt's lists in [`super::index::APT_LISTS`].
    pub indexes: Vec<PathBuf>,
    /// The Debian architecture (`amd64`).
    pub architecture: String,
    /// `NAME` or `NAME=VERSION`, in order.
    pub names: Vec<String>,
    pub exclude: BTreeSet<String>,
}

/// A resolution made into a lock.
#[derive(Debug, Clone)]
pub struct Locked {
    pub lock: Lock,
    /// With `why`: the chain from a package asked for down to it, each with the dependency
    /// that pulled it (`None` when it is not in the closure).
    pub why: Option<Vec<(String, Option<String>)>>,
    /// Dependencies left out because they chose an excluded package: (package, excluded).
    pub pruned: Vec<(String, String)>,
}

/// Errors resolving into a lock.
#[derive(Debug, thiserror::Error)]
pub enum LockingError {
    #[error(transparent)]
    Index(#[from] super::index::IndexError),
    #[error(transparent)]
    Resolve(#[from] super::resolve::ResolveError),
    #[error(transparent)]
    Lock(#[from] LockError),
}

/// Read the indexes, resolve the names and make the lock.
pub fn resolve_lock(request: &LockRequest, why: Option<&str>) -> Result<Locked, LockingError> {
    let files = if request.indexes.is_empty() {
        super::index::apt_lists(Path::new(super::index::APT_LISTS), &request.architecture)?
    } else {
        request.indexes.clone()
    };
    let index = super::index::Index::read(&files, &request.architecture)?;
    let resolution = super::resolve::resolve(&index, &request.names, &request.exclude)?;
    let lock = Lock::from_resolution(
        &resolution,
        &request.architecture,
        &request.names,
        &request.exclude,
    )?;
    Ok(Locked {
        lock,
        why: why.and_then(|w| resolution.why(w)),
        pruned: resolution.pruned,
    })
}
