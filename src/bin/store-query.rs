//! `store-query`: read the store: path infos, closures (as an `exportReferencesGraph` array or
//! nixpkgs `closureInfo` files), the list of valid paths, and verification by re-hashing.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strata::cli::{self, Failure, StoreArgs};
use strata_core::manifest::ClosureFormat;

const EXAMPLES: &str = "\
Examples:
  # The closure of a wrapper, in the shape mklayers and mkimage read:
  store-query closure /nix/store/…-app > closure.json

  # Closure of whatever store-add printed, as nixpkgs closureInfo's registration file:
  store-add ./app.jar | store-query closure --format registration -

  # The closure of every path in two manifests, and of one path picked by name:
  store-query closure app.json runtime.json
  store-query closure --inputs runtime.json @bash

  # Re-hash every registered path; exit 1 and one line per problem if any changed:
  store-query verify

  # The same, reclaiming what killed adds left behind:
  store-query verify --repair";

/// Query and verify a strata store.
#[derive(Debug, Parser)]
#[command(name = "store-query", version, after_help = EXAMPLES)]
struct Args {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the path-info JSON of valid paths, one object a line.
    Info {
        /// Store paths, path-info manifests (a file, or `-` for stdin; JSON lines or an
        /// array, or one path a line) or @NAME references into them.
        #[arg(required = true)]
        paths: Vec<String>,
        #[command(flatten)]
        inputs: cli::InputsArg,
    },
    /// Print the closure of the given paths.
    Closure {
        /// Store paths, path-info manifests (a file, or `-` for stdin; JSON lines or an
        /// array, or one path a line) or @NAME references into them.
        #[arg(required = true)]
        paths: Vec<String>,
        #[command(flatten)]
        inputs: cli::InputsArg,
        /// Output shape.
        #[arg(long, value_enum, default_value_t = ClosureFormat::Graph)]
        format: ClosureFormat,
    },
    /// List every valid path, one a line.
    List,
    /// Write the NAR serialisation of a valid path to stdout (like `nix-store --dump`).
    Dump {
        /// A store path.
        path: String,
    },
    /// Re-hash every registered path and report mismatches, and what interrupted adds left
    /// (unregistered contents, scratch areas, temp files); exit 1 if anything is wrong.
    Verify {
        /// Reclaim what interrupted adds left behind (each path under its lock); modified or
        /// missing paths are still reported.
        #[arg(long)]
        repair: bool,
    },
}

fn main() -> ExitCode {
    cli::main("store-query", |args: Args| query(&args))
}

fn query(args: &Args) -> Result<(), Failure> {
    let store = args.store.open()?;
    match &args.command {
        Command::Info { paths, inputs } => {
            let paths = cli::store_paths(&store, paths, inputs)?;
            let infos = paths
                .iter()
                .map(|p| store.query_valid(p))
                .collect::<Result<Vec<_>, _>>()?;
            cli::print_path_infos(&infos)
        }
        Command::Closure {
            paths,
            inputs,
            format,
        } => {
            let roots = cli::store_paths(&store, paths, inputs)?;
            let graph = store.closure(&roots)?;
            let text = format.render(&graph);
            write_stdout(&text)
        }
        Command::List => {
            let text: String = store
                .list()?
                .iter()
                .map(|p| format!("{}\n", store.store_dir().display(p)))
                .collect();
            write_stdout(&text)
        }
        Command::Dump { path } => {
            let path = store
                .parse_user_path(path)
                .map_err(|e| Failure::failed(format!("{path}: {e}")))?;
            store.query_valid(&path)?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            strata_core::nix::nar::dump_path(
                &store.physical_path(&path),
                &mut out,
                &mut strata_core::nix::nar::NoVisitor,
            )
            .map_err(|e| match e {
                strata_core::nix::nar::NarError::Write(e) => cli::stdout_error(e),
                other => Failure::from(other),
            })?;
            out.flush().map_err(cli::stdout_error)
        }
        Command::Verify { repair } => {
            let report = store.verify(*repair)?;
            let mut err = std::io::stderr().lock();
            for p in &report.reclaimed {
                let _ = writeln!(err, "store-query: reclaimed: {p}");
            }
            let problems = report.problems;
            if problems.is_empty() {
                return Ok(());
            }
            for p in &problems[1..] {
                let _ = writeln!(err, "store-query: {p}");
            }
            Err(Failure::failed(&problems[0]))
        }
    }
}

fn write_stdout(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(cli::stdout_error)
}
