//! `mklayers`: read a closure graph, print the store paths split into image layers (a JSON
//! list of lists, most shared first), the way nixpkgs' dockerTools splits them.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use serde::Serialize;
use strata::cli::{self, Failure, StoreArgs};
use strata::input;
use strata_core::layering::{self, Algorithm, LayerBudget, LayeringError, LayeringRequest};
use strata_core::nix::graph_json::{GraphJsonError, read_path_graph};
use strata_core::nix::store_path::AbsStorePath;

const EXAMPLES: &str = "\
Examples:
  nix path-info --json -r ./result | mklayers --max-layers 100 > layers.json
  mklayers --algorithm auto --max-layers 20 --base-layers 3 graph.json
  mklayers --explain --exclude /nix/store/<hash>-customisation graph.json
  mklayers --store-root ~/.local/share/strata --closure-of /nix/store/<hash>-app
  mklayers --closure-of app.json --closure-of runtime.json

Input: the exportReferencesGraph array ({closureSize?, narHash, narSize, path, references}
objects), a stream of such objects or arrays, {\"KEY\": [graph]}, or nix path-info's map from
path to info. Output: [[\"/nix/store/…\", …], …], one inner list per store layer.";

/// Split a closure into container image layers, as nixpkgs' dockerTools does.
#[derive(Debug, Parser)]
#[command(name = "mklayers", version, after_help = EXAMPLES)]
struct Cli {
    /// Closure graph JSON file; `-` reads standard input
    #[arg(default_value = "-", conflicts_with = "closure_of")]
    graph: String,
    /// Read the closure of this store path from the store instead of a graph (repeatable):
    /// a store path, a path-info manifest (a file or `-`) or @NAME from --inputs
    #[arg(long, value_name = "STORE_PATH")]
    closure_of: Vec<String>,
    #[command(flatten)]
    inputs: cli::InputsArg,
    /// Layering algorithm
    #[arg(short, long, value_enum, default_value_t = Algorithm::Popularity)]
    algorithm: Algorithm,
    /// Layers the whole image may have; one is kept for the customisation layer
    #[arg(short, long, default_value_t = 100)]
    max_layers: usize,
    /// Layers already used by the base image
    #[arg(short, long, default_value_t = 0)]
    base_layers: usize,
    /// Store path to leave out of the layers (repeatable); it must be in the graph
    #[arg(short = 'x', long, value_name = "PATH")]
    exclude: Vec<String>,
    /// Print an object with the layers plus, per layer, its sizes and, per path, its layer,
    /// popularity, narSize and closureSize
    #[arg(long)]
    explain: bool,
    #[command(flatten)]
    store: StoreArgs,
}

fn main() -> ExitCode {
    cli::main("mklayers", |args: Cli| run(&args))
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let budget = LayerBudget {
        max_layers: cli.max_layers,
        base_layers: cli.base_layers,
    };
    budget.store_layers().map_err(Failure::usage)?;
    let exclude = cli
        .exclude
        .iter()
        .map(|p| AbsStorePath::parse(p).map_err(|e| Failure::usage(format!("--exclude {p}: {e}"))))
        .collect::<Result<_, _>>()?;
    let request = LayeringRequest {
        algorithm: cli.algorithm,
        budget,
        exclude,
        explain: cli.explain,
    };

    let (name, graph) = if cli.closure_of.is_empty() {
        let name = cli.graph.clone();
        let bytes = input::input_bytes(&name)?;
        let graph = read_path_graph(cli::utf8(&name, &bytes)?).map_err(|e| match e {
            GraphJsonError::Json(e) => cli::json_failure(&name, &e),
            GraphJsonError::Graph(e) => Failure::failed(format!("{}: {e}", cli::input_name(&name))),
        })?;
        drop(bytes);
        (cli::input_name(&name).to_string(), graph)
    } else {
        let store = cli.store.open()?;
        let roots = cli::store_paths(&store, &cli.closure_of, &cli.inputs)
            .map_err(|e| e.prefixed("--closure-of"))?;
        ("store".to_string(), store.closure(&roots)?.to_path_graph())
    };
    let indexed = graph.indexed();
    let layering = layering::layer(&indexed, &request).map_err(|e| match e {
        LayeringError::NoStoreLayers { .. } => Failure::usage(e),
        LayeringError::ExcludedNotInGraph(_) => Failure::failed(format!("{name}: {e}")),
    })?;

    // One-space indentation, as the JSON files nixpkgs writes for layers.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    if cli.explain {
        let mut serializer = serde_json::Serializer::with_formatter(
            &mut out,
            serde_json::ser::PrettyFormatter::with_indent(b" "),
        );
        layering
            .serialize(&mut serializer)
            .map_err(cli::stdout_json_error)?;
    } else {
        layering
            .write_layers_json(&mut out)
            .map_err(cli::stdout_error)?;
    }
    out.write_all(b"\n")
        .and_then(|()| out.flush())
        .map_err(cli::stdout_error)?;
    // Freeing the graph path by path takes longer than the process exit that reclaims it.
    std::mem::forget(layering);
    std::mem::forget(indexed);
    std::mem::forget(graph);
    Ok(())
}
