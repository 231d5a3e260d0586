//! `store-add`: add files and directories to the store as content-addressed paths, the way
//! `nix-store --add`, `nix-store --add-fixed` and `builtins.toFile` do, printing one
//! path-info JSON object per input.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use strata::cli::{self, Failure, StoreArgs};
use strata_core::nix::hash::HashAlgo;
use strata_core::nix::path_info::PathInfo;
use strata_core::nix::store_path::{HashPart, IngestionMethod, StorePath};
use strata_core::store::{AddMethod, AddOptions, Store};

const EXAMPLES: &str = "\
Examples:
  # Add a jar; prints {\"ca\":…,\"narHash\":\"sha256:…\",\"narSize\":…,\"path\":\"/nix/store/…-app.jar\",\"references\":[]}
  store-add --store-root /tmp/strata ./app.jar

  # Same path and NAR hash as `nix-store --add`, without writing anything:
  store-add --dry-run ./migrations

  # A text file with a reference, like builtins.toFile (contents from stdin):
  printf 'exec %s\\n' /nix/store/…-dep | store-add --text --name run --ref /nix/store/…-dep -

  # A directory whose references are found by scanning for the paths in deps.json:
  store-add --references deps.json ./wrapper

  # Debian packages as store paths, dependencies as references:
  apt-get download bash libc6 libtinfo6 && store-add --deb *.deb > runtime.json

  # Just the store path, as nix-store --add prints it:
  store-add --print-path ./app.jar

  # Add every path listed on stdin:
  find ./out -mindepth 1 -maxdepth 1 | store-add -";

/// Add files and directories to a content-addressed store.
#[derive(Debug, Parser)]
#[command(name = "store-add", version, after_help = EXAMPLES)]
struct Args {
    /// Files or directories to add; `-` reads a list of paths (one a line) from stdin, or, with
    /// --text, the contents from stdin.
    #[arg(value_name = "PATH", required = true)]
    paths: Vec<String>,

    /// Store path name (default: the input's base name); only with one input.
    #[arg(long)]
    name: Option<String>,

    /// Add each input's bytes as a text file, like `builtins.toFile` (a `text` path).
    #[arg(long, conflicts_with_all = ["fixed", "references"])]
    text: bool,

    /// With --text: a store path the contents refer to (string context); repeatable.
    #[arg(long = "ref", value_name = "STORE_PATH", requires = "text")]
    refs: Vec<String>,

    /// Add as a fixed-output path hashed with ALGO (md5, sha1, sha256, sha512), like
    /// `nix-store --add-fixed`; the file's own hash unless --recursive.
    #[arg(long, value_name = "ALGO", conflicts_with = "references")]
    fixed: Option<String>,

    /// With --fixed: hash the NAR serialisation instead of the file.
    #[arg(long, requires = "fixed")]
    recursive: bool,

    /// Store paths the input may refer to: a file (or `-`) of path-info JSON or one store
    /// path a line. Those it mentions become references (a content-addressed path with
    /// references, as Nix makes floating CA outputs).
    #[arg(long, value_name = "CANDIDATES")]
    references: Option<String>,

    /// With --references: a store path (or bare hash part) that the input uses to mean its
    /// own path; it becomes a self-reference and is rewritten to the new path.
    #[arg(long = "self", value_name = "STORE_PATH", requires = "references")]
    self_path: Option<String>,

    /// Add Debian packages (`.deb` files): one store path per package, named
    /// PACKAGE-VERSION (characters a store name cannot hold become `_`), holding its files at
    /// their FHS paths, with the packages it depends on (among those given together and
    /// --deps) as references. Unsatisfied dependencies are listed in one warning.
    #[arg(long, conflicts_with_all = ["text", "fixed", "references", "name"])]
    deb: bool,

    /// With --deb: path-info JSON of packages added before, which may satisfy dependencies.
    #[arg(long, value_name = "MANIFEST", requires = "deb")]
    deps: Vec<String>,

    /// With --deb: unsatisfied dependencies are an error, not a warning.
    #[arg(long, requires = "deb")]
    strict: bool,

    /// Print only the store paths, one a line (like `nix-store --add`), not path-info JSON.
    #[arg(long)]
    print_path: bool,

    /// Compute and print the path info; write nothing.
    #[arg(long)]
    dry_run: bool,

    #[command(flatten)]
    store: StoreArgs,
}

/// What is printed for added paths: path-info JSON lines, or with --print-path the paths.
fn output<'a>(args: &Args, infos: impl IntoIterator<Item = &'a PathInfo>) -> String {
    if args.print_path {
        infos.into_iter().map(|i| format!("{}\n", i.path)).collect()
    } else {
        cli::path_info_lines(infos)
    }
}

fn main() -> ExitCode {
    cli::main("store-add", |args: Args| add_all(&args))
}

fn add_all(args: &Args) -> Result<(), Failure> {
    let store = args.store.open()?;
    let progress = cli::Progress::start("store-add");
    let options = AddOptions {
        dry_run: args.dry_run,
        progress: progress.counter(),
        move_source: false,
    };
    if args.text {
        return add_texts(args, &store, &options, &progress);
    }
    if args.deb {
        return add_debs(args, &store, &options, &progress);
    }
    let inputs = expand_inputs(&args.paths)?;
    if args.name.is_some() && inputs.len() != 1 {
        return Err(Failure::usage("--name needs exactly one input"));
    }
    let method = method(args, &store)?;
    let mut infos = Vec::new();
    for input in &inputs {
        let name = match &args.name {
            Some(name) => name.clone(),
            None => base_name(input)?,
        };
        let info = store
            .add(input, &name, &method, &options)
            .map_err(|e| cli::about(input.display(), e))?;
        // Print as we go, so a long list shows progress and a later failure keeps earlier results.
        progress.print(&output(args, [&info]))?;
        infos.push(info);
    }
    Ok(())
}

fn method(args: &Args, store: &Store) -> Result<AddMethod, Failure> {
    if let Some(algo) = &args.fixed {
        let algo = HashAlgo::from_name(algo)
            .ok_or_else(|| Failure::usage(format!("--fixed: unknown hash algorithm '{algo}'")))?;
        let ingestion = if args.recursive {
            IngestionMethod::Recursive
        } else {
            IngestionMethod::Flat
        };
        return Ok(AddMethod::Fixed { ingestion, algo });
    }
    if let Some(list) = &args.references {
        let candidates = cli::read_store_path_list(list)?
            .iter()
            .map(|p| {
                store
                    .parse_user_path(p)
                    .map_err(|e| Failure::failed(format!("--references {list}: {e}")))
            })
            .collect::<Result<BTreeSet<StorePath>, _>>()?;
        let self_hash_part = match &args.self_path {
            Some(text) => Some(self_hash_part(store, text)?),
            None => None,
        };
        return Ok(AddMethod::WithReferences {
            candidates,
            self_hash_part,
        });
    }
    Ok(AddMethod::Source)
}

fn self_hash_part(store: &Store, text: &str) -> Result<HashPart, Failure> {
    if let Ok(part) = HashPart::parse(text) {
        return Ok(part);
    }
    let path = store
        .parse_user_path(text)
        .map_err(|e| Failure::usage(format!("--self: {e}")))?;
    Ok(HashPart::of(&path))
}

fn add_texts(
    args: &Args,
    store: &Store,
    options: &AddOptions,
    progress: &cli::Progress,
) -> Result<(), Failure> {
    if args.name.is_some() && args.paths.len() != 1 {
        return Err(Failure::usage("--name needs exactly one input"));
    }
    let refs = args
        .refs
        .iter()
        .map(|r| {
            store
                .parse_user_path(r)
                .map_err(|e| Failure::failed(format!("--ref: {e}")))
        })
        .collect::<Result<BTreeSet<StorePath>, _>>()?;
    if !options.dry_run {
        for r in &refs {
            store
                .query_valid(r)
                .map_err(|e| Failure::failed(format!("--ref: {e}")))?;
        }
    }
    for input in &args.paths {
        let name = match (&args.name, input.as_str()) {
            (Some(name), _) => name.clone(),
            (None, "-") => return Err(Failure::usage("--text with `-` needs --name")),
            (None, path) => base_name(Path::new(path))?,
        };
        let contents = cli::read_input(input)?;
        let info = store
            .add_text(&name, &contents, &refs, options)
            .map_err(|e| Failure::failed(format!("{input}: {e}")))?;
        progress.print(&output(args, [&info]))?;
    }
    Ok(())
}

fn add_debs(
    args: &Args,
    store: &Store,
    options: &AddOptions,
    progress: &cli::Progress,
) -> Result<(), Failure> {
    let debs = expand_inputs(&args.paths)?;
    let mut known = Vec::new();
    for manifest in &args.deps {
        known.extend(cli::read_path_infos(manifest)?);
    }
    let report = strata_core::deb::add_debs(store, &debs, &known, options, args.strict)?;
    if !report.unsatisfied.is_empty() {
        progress.note(&format!(
            "store-add: warning: unsatisfied dependencies (not in the image unless added): {}",
            strata_core::deb::describe_unsatisfied(&report.unsatisfied)
        ));
    }
    if !report.cycles_broken.is_empty() {
        let cycles: Vec<String> = report
            .cycles_broken
            .iter()
            .map(|(a, b)| format!("{a} -> {b}"))
            .collect();
        progress.note(&format!(
            "store-add: note: dependency cycles broken (no reference made): {}",
            cycles.join(", ")
        ));
    }
    progress.print(&output(args, &report.infos))
}

/// Inputs as paths; `-` expands to the paths listed on stdin.
fn expand_inputs(args: &[String]) -> Result<Vec<PathBuf>, Failure> {
    let mut out = Vec::new();
    for arg in args {
        if arg == "-" {
            let data = cli::read_input("-")?;
            let text = String::from_utf8(data).map_err(|_| Failure::failed("stdin: not UTF-8"))?;
            out.extend(text.lines().filter(|l| !l.is_empty()).map(PathBuf::from));
        } else {
            out.push(PathBuf::from(arg));
        }
    }
    Ok(out)
}

/// The default store path name: the input's last component (as `nix-store --add` does).
fn base_name(path: &Path) -> Result<String, Failure> {
    let absolute = std::path::absolute(path)
        .map_err(|e| Failure::failed(format!("{}: {e}", path.display())))?;
    let name = absolute
        .components()
        .next_back()
        .and_then(|c| match c {
            std::path::Component::Normal(n) => Some(n),
            _ => None,
        })
        .ok_or_else(|| {
            Failure::failed(format!(
                "{}: has no name to use; give --name",
                path.display()
            ))
        })?;
    name.to_str().map(str::to_string).ok_or_else(|| {
        Failure::failed(format!(
            "{}: name is not UTF-8; give --name",
            path.display()
        ))
    })
}
