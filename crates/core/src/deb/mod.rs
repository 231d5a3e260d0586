//! Debian packages as store paths: read a `.deb` (ar, then `control.tar.*` and `data.tar.*`,
//! compressed with xz, zstd or gzip) without dpkg, and add each package as one store path
//! holding its files at their FHS paths, with the packages it depends on as references.

pub mod ar;
pub mod control;
pub mod index;
pub mod lock;
pub mod resolve;
pub mod version;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use self::ar::{ArError, ArReader};
use self::control::{Control, ControlError};
use crate::nix::path_info::PathInfo;
use crate::nix::store_path::{StorePath, is_name_with_version};
use crate::store::{AddMethod, AddOptions, Store, StoreError};

/// Errors reading or adding a package.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("{path}: {source}")]
    Ar { path: PathBuf, source: ArError },
    #[error("{path}: {source}")]
    Control { path: PathBuf, source: ControlError },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Store { path: PathBuf, source: StoreError },
    #[error("package '{0}' is given twice")]
    Duplicate(String),
    #[error("unsatisfied dependencies: {0}")]
    Unsatisfied(String),
}

fn decompressor<'a>(name: &str, input: impl Read + 'a) -> Option<Box<dyn Read + 'a>> {
    Some(match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("xz") => Box::new(xz2::read::XzDecoder::new(input)),
        Some("zst") => Box::new(zstd::stream::read::Decoder::new(input).ok()?),
        Some("gz") => Box::new(flate2::read::GzDecoder::new(input)),
        Some("tar") => Box::new(input),
        _ => return None,
    })
}

/// Read a package's control data, and if `unpack_to` is given, extract its files there (the
/// directory must not exist).
pub fn read_deb(path: &Path, unpack_to: Option<&Path>) -> Result<Control, DebError> {
    let io_err = |source| DebError::Io {
        path: path.to_path_buf(),
        source,
    };
    let format = |reason: &str| DebError::Format {
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    let file = fs::File::open(path).map_err(io_err)?;
    let mut ar = ArReader::new(io::BufReader::new(file)).map_err(|source| DebError::Ar {
        path: path.to_path_buf(),
        source,
    })?;
    let mut control = None;
    let mut seen_binary = false;
    loop {
        let member = ar.next_member().map_err(|source| DebError::Ar {
            path: path.to_path_buf(),
            source,
        })?;
        let Some(member) = member else { break };
        if member.name == "debian-binary" {
            let mut v = String::new();
            (&mut ar).take(16).read_to_string(&mut v).map_err(io_err)?;
            if !v.starts_with("2.") {
                return Err(format(&format!(
                    "unsupported .deb format version '{}'",
                    v.trim()
                )));
            }
            seen_binary = true;
        } else if member.name.starts_with("control.tar") {
            let tar = decompressor(&member.name, &mut ar)
                .ok_or_else(|| format("unknown control.tar compression"))?;
            let text = control_text(tar)
                .map_err(io_err)?
                .ok_or_else(|| format("control.tar has no control file"))?;
            control = Some(Control::parse(&text).map_err(|source| DebError::Control {
                path: path.to_path_buf(),
                source,
            })?);
        } else if member.name.starts_with("data.tar") {
            let Some(dest) = unpack_to else { continue };
            let tar = decompressor(&member.name, &mut ar)
                .ok_or_else(|| format("unknown data.tar compression"))?;
            unpack_data(tar, dest).map_err(io_err)?;
            if control.is_none() {
                return Err(format("data.tar comes before control.tar"));
            }
            return control.ok_or_else(|| format("no control.tar"));
        }
    }
    if !seen_binary {
        return Err(format("not a Debian package (no debian-binary member)"));
    }
    match (control, unpack_to) {
        (Some(c), None) => Ok(c),
        (Some(_), Some(_)) => Err(format("no data.tar member")),
        (None, _) => Err(format("no control.tar member")),
    }
}

/// How many bytes `control.tar` may expand to. Real ones hold a few small scripts and lists
/// (tens of KiB); the limit only stops a crafted package from taking the machine's memory
/// or time.
pub const CONTROL_TAR_LIMIT: u64 = 64 << 20;
/// How large the `control` file itself may be (Debian's largest are a few KiB).
pub const CONTROL_FILE_LIMIT: u64 = 1 << 20;

fn control_text(tar: impl Read) -> io::Result<Option<String>> {
    let too_large = |what: &str, limit: u64| {
        io::Error::other(format!(
            "{what} is larger than {} MiB; not a Debian package strata reads",
            limit >> 20
        ))
    };
    let mut bounded = Bounded {
        inner: tar,
        left: CONTROL_TAR_LIMIT,
    };
    let mut archive = tar::Archive::new(&mut bounded);
    for entry in archive.entries()? {
        let entry = entry.map_err(|e| {
            if e.kind() == io::ErrorKind::FileTooLarge {
                too_large("control.tar", CONTROL_TAR_LIMIT)
            } else {
                e
            }
        })?;
        let p = entry.path()?.into_owned();
        if p == Path::new("./control") || p == Path::new("control") {
            if entry.size() > CONTROL_FILE_LIMIT {
                return Err(too_large("its control file", CONTROL_FILE_LIMIT));
            }
            let mut text = String::new();
            entry.take(CONTROL_FILE_LIMIT).read_to_string(&mut text)?;
            return Ok(Some(text));
        }
    }
    Ok(None)
}

/// A reader that fails with `FileTooLarge` once more than `left` bytes were asked of it.
struct Bounded<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // Only an error if there is more to read.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::ErrorKind::FileTooLarge.into()),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

fn unpack_data(tar: impl Read, dest: &Path) -> io::Result<()> {
    fs::create_dir(dest)?;
    let mut archive = tar::Archive::new(tar);
    // Modes are taken without setuid, setgid and sticky bits: a store path never has them,
    // and one written to disk even for a moment is a setuid binary someone could run.
    archive.set_preserve_permissions(false);
    archive.set_mask(0o7000);
    archive.set_preserve_ownerships(false);
    archive.set_unpack_xattrs(false);
    archive.set_preserve_mtime(false);
    archive.set_overwrite(true);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink() || kind.is_hard_link()) {
            let p = entry.path()?.display().to_string();
            return Err(io::Error::other(format!(
                "'{p}' is a special file; a store path cannot hold it"
            )));
        }
        // Refuses absolute paths and `..`; hard links resolve inside `dest`.
        if !entry.unpack_in(dest)? {
            let p = entry.path()?.display().to_string();
            return Err(io::Error::other(format!(
                "'{p}' points outside the package"
            )));
        }
    }
    Ok(())
}

/// What adding a set of packages did.
#[derive(Debug, Clone, Default)]
pub struct DebReport {
    /// One per package, in the order the packages were given.
    pub infos: Vec<PathInfo>,
    /// Package → dependency clauses no given package satisfies (`a | b` as written).
    pub unsatisfied: BTreeMap<String, Vec<String>>,
    /// Dependencies left out to break a cycle (`libc6 -> libgcc-s1`): store paths cannot
    /// refer to each other in a circle.
    pub cycles_broken: Vec<(String, String)>,
}

/// Add packages together: each becomes a store path whose references are the store paths of
/// the packages it depends on, among those given here and those in `known` (path infos of
/// packages added before). `strict` turns unsatisfied dependencies into an error. The packages
/// may be of any one architecture (`Architecture: all` goes with any); a set mixing two is
/// refused before anything is added.
pub fn add_debs(
    store: &Store,
    debs: &[PathBuf],
    known: &[PathInfo],
    options: &AddOptions,
    strict: bool,
) -> Result<DebReport, DebError> {
    let controls = read_controls(debs)?;
    let mut report = DebReport::default();
    let links = link(&controls, known, &mut report.unsatisfied);
    if strict && !report.unsatisfied.is_empty() {
        return Err(DebError::Unsatisfied(describe_unsatisfied(
            &report.unsatisfied,
        )));
    }
    let added = add_in_order(store, debs, &controls, links, options, &mut report)?;
    report.infos = added;
    Ok(report)
}

/// The control data of every package, refusing a package given twice and a set of packages
/// of two architectures.
fn read_controls(debs: &[PathBuf]) -> Result<Vec<Control>, DebError> {
    let mut controls: Vec<Control> = Vec::new();
    let mut names = BTreeSet::new();
    // The first package of a real architecture: (its file, the architecture).
    let mut architecture: Option<(&Path, String)> = None;
    for deb in debs {
        let c = read_deb(deb, None)?;
        if !names.insert(c.package.clone()) {
            return Err(DebError::Duplicate(c.package));
        }
        match (&architecture, c.architecture.as_deref()) {
            (_, None | Some("all")) => {}
            (None, Some(arch)) => architecture = Some((deb, arch.to_string())),
            (Some((first, want)), Some(arch)) if arch != want => {
                return Err(DebError::Format {
                    path: deb.clone(),
                    reason: format!(
                        "package {} is for {arch}, but {} is for {want}; packages added \
                         together must be of one architecture (or all)",
                        c.package,
                        first.display()
                    ),
                });
            }
            (Some(_), Some(_)) => {}
        }
        controls.push(c);
    }
    Ok(controls)
}

/// How the packages depend on each other: for each, the given packages it depends on
/// (indexes) and the store paths of earlier packages (`known`) it depends on. Clauses that
/// nothing satisfies go to `unsatisfied`.
struct Links {
    deps: Vec<BTreeSet<usize>>,
    known_refs: Vec<BTreeSet<StorePath>>,
}

fn link(
    controls: &[Control],
    known: &[PathInfo],
    unsatisfied: &mut BTreeMap<String, Vec<String>>,
) -> Links {
    // Which given package satisfies each clause (by name, then by Provides).
    let mut providers: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, c) in controls.iter().enumerate() {
        for p in &c.provides {
            providers.entry(p.as_str()).or_insert(i);
        }
    }
    for (i, c) in controls.iter().enumerate() {
        providers.insert(c.package.as_str(), i);
    }
    let mut links = Links {
        deps: vec![BTreeSet::new(); controls.len()],
        known_refs: vec![BTreeSet::new(); controls.len()],
    };
    for (i, c) in controls.iter().enumerate() {
        for clause in &c.depends {
            let given = clause
                .iter()
                .find_map(|a| providers.get(a.package.as_str()).copied());
            if let Some(j) = given {
                if j != i {
                    links.deps[i].insert(j);
                }
                continue;
            }
            let earlier = clause.iter().find_map(|a| {
                known
                    .iter()
                    .find(|k| is_name_with_version(k.path.path.name(), &a.package))
            });
            match earlier {
                Some(k) => {
                    links.known_refs[i].insert(k.path.path.clone());
                }
                None => {
                    let text: Vec<&str> = clause.iter().map(|a| a.package.as_str()).collect();
                    unsatisfied
                        .entry(c.package.clone())
                        .or_default()
                        .push(text.join(" | "));
                }
            }
        }
    }
    links
}

/// Add the packages, dependencies first; in a cycle, the package with the smallest name goes
/// first and its dependencies on the rest of the cycle are dropped (and recorded in
/// `report.cycles_broken`). The path infos come back in the order the packages were given.
fn add_in_order(
    store: &Store,
    debs: &[PathBuf],
    controls: &[Control],
    links: Links,
    options: &AddOptions,
    report: &mut DebReport,
) -> Result<Vec<PathInfo>, DebError> {
    let Links {
        mut deps,
        known_refs,
    } = links;
    let mut added: BTreeMap<usize, PathInfo> = BTreeMap::new();
    while added.len() < controls.len() {
        let ready = (0..controls.len())
            .filter(|i| !added.contains_key(i))
            .filter(|i| deps[*i].iter().all(|d| added.contains_key(d)))
            .min_by(|a, b| controls[*a].package.cmp(&controls[*b].package));
        let Some(next) = ready else {
            let (i, back) = cycle_to_break(controls, &deps, &added);
            for d in back {
                deps[i].remove(&d);
                report
                    .cycles_broken
                    .push((controls[i].package.clone(), controls[d].package.clone()));
            }
            continue;
        };
        let mut references = known_refs[next].clone();
        references.extend(deps[next].iter().map(|d| added[d].path.path.clone()));
        let info = add_one(store, &debs[next], &controls[next], references, options)?;
        added.insert(next, info);
    }
    Ok((0..controls.len()).map(|i| added[&i].clone()).collect())
}

/// Everything not yet added waits on a cycle: the smallest-named package on one, and its
/// dependencies that lead back to it.
fn cycle_to_break(
    controls: &[Control],
    deps: &[BTreeSet<usize>],
    added: &BTreeMap<usize, PathInfo>,
) -> (usize, Vec<usize>) {
    let mut stuck: Vec<usize> = (0..controls.len())
        .filter(|i| !added.contains_key(i))
        .collect();
    stuck.sort_by(|a, b| controls[*a].package.cmp(&controls[*b].package));
    let on_cycle = |i: usize| -> Vec<usize> {
        deps[i]
            .iter()
            .copied()
            .filter(|&d| !added.contains_key(&d) && reaches(deps, d, i))
            .collect()
    };
    stuck
        .iter()
        .map(|&i| (i, on_cycle(i)))
        .find(|(_, back)| !back.is_empty())
        .unwrap_or_else(|| {
            // Cannot happen (a finite chain of waits closes a cycle), but never loop.
            let first = stuck[0];
            let rest = deps[first]
                .iter()
                .copied()
                .filter(|d| !added.contains_key(d))
                .collect();
            (first, rest)
        })
}

/// Whether `to` can be reached from `from` along dependencies.
fn reaches(deps: &[BTreeSet<usize>], from: usize, to: usize) -> bool {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from];
    while let Some(n) = todo.pop() {
        if n == to {
            return true;
        }
        if seen.insert(n) {
            todo.extend(deps[n].iter().copied());
        }
    }
    false
}

/// `pkg: a | b, c; other: d` for messages.
pub fn describe_unsatisfied(unsatisfied: &BTreeMap<String, Vec<String>>) -> String {
    unsatisfied
        .iter()
        .map(|(p, clauses)| format!("{p}: {}", clauses.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

fn add_one(
    store: &Store,
    deb: &Path,
    control: &Control,
    references: BTreeSet<StorePath>,
    options: &AddOptions,
) -> Result<PathInfo, DebError> {
    let scratch = store
        .scratch(options.dry_run)
        .map_err(|source| DebError::Store {
            path: deb.to_path_buf(),
            source,
        })?;
    let tree = scratch.path().join("tree");
    read_deb(deb, Some(&tree))?;
    store
        .add(
            &tree,
            &control.store_name(),
            &AddMethod::Declared { references },
            // The unpacked tree is ours and in the store's scratch area: move, do not copy.
            &AddOptions {
                move_source: true,
                ..options.clone()
            },
        )
        .map_err(|source| DebError::Store {
            path: deb.to_path_buf(),
            source,
        })
}
