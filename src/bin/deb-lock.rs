//! `deb-lock`: resolve Debian package names into a pinned, verified closure (a lock file), and
//! build the store paths of a lock, checking every `.deb` against it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strata::cli::{self, Failure, StoreArgs};
use strata_core::deb::index::native_architecture;
use strata_core::deb::lock::{self, FetchOptions, Lock, LockRequest};
use strata_core::store::AddOptions;

const EXAMPLES: &str = "\
Examples:
  # Resolve from apt's lists (as apt-get install --no-install-recommends on an empty system):
  deb-lock resolve openjdk-17-jre-headless bash -o runtime.lock

  # The same closure for arm64 (after `dpkg --add-architecture arm64 && apt-get update`):
  deb-lock resolve openjdk-17-jre-headless bash --architecture arm64 -o runtime.arm64.lock

  # Which package pulled libssl3 in, and through which dependency:
  deb-lock resolve python3 --why libssl3

  # Leave debconf out, with what only it pulled in:
  deb-lock resolve ca-certificates --exclude debconf -o certs.lock

  # Build the locked packages into the store (apt-get download NAME=VERSION into the cache,
  # every file checked against the lock's SHA256 and size); prints path-info JSON lines:
  deb-lock build runtime.lock > runtime.json

  # Re-resolve after `apt-get update`, printing what changed:
  deb-lock update runtime.lock";

/// Resolve Debian packages by name into a lock file, and build a lock into the store.
#[derive(Debug, Parser)]
#[command(name = "deb-lock", version, after_help = EXAMPLES)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, clap::Args)]
struct IndexArgs {
    /// A `Packages` index to read (plain, .gz, .xz or .lz4); repeatable. Default: every
    /// `*_Packages*` file in /var/lib/apt/lists.
    #[arg(long = "index", value_name = "FILE")]
    indexes: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Resolve names (NAME or NAME=VERSION) to their closure of Pre-Depends and Depends; print
    /// `NAME VERSION` lines, and with -o write the lock.
    Resolve {
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,
        #[command(flatten)]
        index: IndexArgs,
        /// Leave out this package and what only it pulls in; repeatable.
        #[arg(long, value_name = "PKG")]
        exclude: Vec<String>,
        /// Print the chain of dependencies that pulled PKG in, instead of the list.
        #[arg(long, value_name = "PKG")]
        why: Option<String>,
        /// Debian architecture to resolve for (amd64, arm64, …): apt's lists of it are read,
        /// `all` packages included; the lock records it.
        #[arg(long = "architecture", alias = "arch", value_name = "ARCH", default_value = native_architecture())]
        arch: String,
        /// Write the lock here (a new file, or one with the same contents; `update` changes
        /// an existing lock).
        #[arg(short, long, value_name = "LOCK")]
        output: Option<PathBuf>,
    },
    /// Re-resolve a lock's names against the current indexes, rewrite it and print what
    /// changed (`+ NAME VERSION`, `- NAME VERSION`, `~ NAME OLD -> NEW`).
    Update {
        lock: PathBuf,
        #[command(flatten)]
        index: IndexArgs,
    },
    /// Add a lock's packages to the store as `store-add --deb` does; print path-info JSON
    /// lines. Every `.deb` is checked against the lock before anything is unpacked.
    Build {
        lock: PathBuf,
        /// A directory of `.deb`s to take packages from (by their archive file name) before
        /// the cache and downloads.
        #[arg(long, value_name = "DIR")]
        debs: Option<PathBuf>,
        /// Where downloaded `.deb`s are kept (default: $XDG_CACHE_HOME/strata/debs or
        /// ~/.cache/strata/debs).
        #[arg(long, value_name = "DIR", env = "STRATA_DEB_CACHE")]
        cache: Option<PathBuf>,
        /// Never run `apt-get download`.
        #[arg(long)]
        offline: bool,
        /// Compute and print the path infos; write nothing to the store.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn main() -> ExitCode {
    cli::main("deb-lock", |args: Args| match args.command {
        Cmd::Resolve {
            names,
            index,
            exclude,
            why,
            arch,
            output,
        } => resolve(names, index, exclude, why.as_deref(), arch, output),
        Cmd::Update { lock, index } => update(&lock, index),
        Cmd::Build {
            lock,
            debs,
            cache,
            offline,
            dry_run,
            store,
        } => build(&lock, debs, cache, offline, dry_run, &store),
    })
}

fn resolve(
    names: Vec<String>,
    index: IndexArgs,
    exclude: Vec<String>,
    why: Option<&str>,
    architecture: String,
    output: Option<PathBuf>,
) -> Result<(), Failure> {
    let request = LockRequest {
        indexes: index.indexes,
        architecture,
        names,
        exclude: exclude.into_iter().collect::<BTreeSet<_>>(),
    };
    let locked = lock::resolve_lock(&request, why)?;
    let mut text = String::new();
    if let Some(pkg) = why {
        let chain = locked.why.as_ref().ok_or_else(|| {
            Failure::failed(format!(
                "--why {pkg}: not in the closure of {}",
                request.names.join(" ")
            ))
        })?;
        let mut parent: Option<&str> = None;
        for (name, via) in chain {
            match (parent, via) {
                (Some(p), Some(via)) => {
                    text.push_str(&format!("{name}  ({p} depends on '{via}')\n"))
                }
                _ => text.push_str(&format!("{name}  (asked for)\n")),
            }
            parent = Some(name);
        }
    } else {
        for (name, p) in &locked.lock.packages {
            text.push_str(&format!("{name} {}\n", p.version));
        }
    }
    for (package, excluded) in &locked.pruned {
        eprintln!("deb-lock: note: {package}: dependency on excluded '{excluded}' left out");
    }
    if let Some(path) = output {
        if path.exists() {
            let old = Lock::read(&path)?;
            if old != locked.lock {
                return Err(Failure::failed(format!(
                    "{}: exists and differs from this resolution; `deb-lock update {}` changes it",
                    path.display(),
                    path.display()
                )));
            }
        } else {
            locked.lock.write(&path)?;
        }
    }
    print(&text)
}

fn update(path: &Path, index: IndexArgs) -> Result<(), Failure> {
    let old = Lock::read(path)?;
    let request = LockRequest {
        indexes: index.indexes,
        architecture: old.architecture.clone(),
        names: old.request.clone(),
        exclude: old.exclude.iter().cloned().collect(),
    };
    let locked = lock::resolve_lock(&request, None)?;
    let changes = locked.lock.changes_from(&old);
    if changes.is_empty() {
        eprintln!("deb-lock: {}: unchanged", path.display());
        return Ok(());
    }
    locked.lock.write(path)?;
    print(&changes.iter().map(|c| format!("{c}\n")).collect::<String>())
}

fn build(
    path: &Path,
    debs: Option<PathBuf>,
    cache: Option<PathBuf>,
    offline: bool,
    dry_run: bool,
    store: &StoreArgs,
) -> Result<(), Failure> {
    let lock = Lock::read(path)?;
    let cache_dir = match cache {
        Some(c) => c,
        None => default_cache()?,
    };
    let store = store.open()?;
    let progress = cli::Progress::start("deb-lock");
    let options = AddOptions {
        dry_run,
        progress: progress.counter(),
        move_source: false,
    };
    let fetch = FetchOptions {
        debs_dir: debs,
        cache_dir,
        offline,
    };
    let report = lock::build(&store, &lock, &fetch, &options)?;
    if !report.unsatisfied.is_empty() {
        progress.note(&format!(
            "deb-lock: warning: unsatisfied dependencies (left out with --exclude): {}",
            strata_core::deb::describe_unsatisfied(&report.unsatisfied)
        ));
    }
    progress.print(&cli::path_info_lines(&report.infos))
}

fn default_cache() -> Result<PathBuf, Failure> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("strata/debs"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".cache/strata/debs"))
        .ok_or_else(|| Failure::usage("no HOME or XDG_CACHE_HOME for the cache; give --cache"))
}

fn print(text: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(cli::stdout_error)
}
