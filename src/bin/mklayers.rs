//! `mklayers`: read a closure graph, print the store paths split into image layers (a JSON
//! list of lists, most shared first), the way nixpkgs' dockerTools splits them.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use serde::Serialize;
use strata_core::layering::{self, Algorithm, LayerBudget, LayeringError, LayeringRequest};
use strata_core::nix::closure::ClosureGraph;
use strata_core::nix::path_info::parse_path_info_documents;
use strata_core::nix::store_path::AbsStorePath;

const EXAMPLES: &str = "\
Examples:
  nix path-info --json -r ./result | mklayers --max-layers 100 > layers.json
  mklayers --algorithm auto --max-layers 20 --base-layers 3 graph.json
  mklayers --explain --exclude /nix/store/<hash>-customisation graph.json

Input: the exportReferencesGraph array ({closureSize?, narHash, narSize, path, references}
objects), a stream of such objects or arrays, {\"KEY\": [graph]}, or nix path-info's map from
path to info. Output: [[\"/nix/store/…\", …], …], one inner list per store layer.";

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AlgorithmArg {
    /// nixpkgs' popularity contest: most referenced paths first, one layer each
    Popularity,
    /// nixpkgs' size-aware auto-layer: largest paths get their own layers
    Auto,
}

/// Split a closure into container image layers, as nixpkgs' dockerTools does.
#[derive(Debug, Parser)]
#[command(name = "mklayers", version, after_help = EXAMPLES)]
struct Cli {
    /// Closure graph JSON file; `-` reads standard input
    #[arg(default_value = "-")]
    graph: PathBuf,
    /// Layering algorithm
    #[arg(short, long, value_enum, default_value_t = AlgorithmArg::Popularity)]
    algorithm: AlgorithmArg,
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
}

/// A failure, with the exit code it maps to.
struct Failure {
    code: u8,
    message: String,
}

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or_default();
            eprintln!("mklayers: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("mklayers: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let budget = LayerBudget {
        max_layers: cli.max_layers,
        base_layers: cli.base_layers,
    };
    budget.store_layers().map_err(|e| fail(2, e.to_string()))?;
    let exclude = cli
        .exclude
        .iter()
        .map(|p| AbsStorePath::parse(p).map_err(|e| fail(2, format!("--exclude {p}: {e}"))))
        .collect::<Result<_, _>>()?;
    let request = LayeringRequest {
        algorithm: match cli.algorithm {
            AlgorithmArg::Popularity => Algorithm::Popularity,
            AlgorithmArg::Auto => Algorithm::Auto,
        },
        budget,
        exclude,
        explain: cli.explain,
    };

    let name = if cli.graph.as_os_str() == "-" {
        "<stdin>".to_string()
    } else {
        cli.graph.display().to_string()
    };
    let text = read_input(&cli.graph).map_err(|e| fail(1, format!("{name}: {e}")))?;
    let infos = parse_path_info_documents(&text).map_err(|e| {
        let message = e.to_string();
        if e.line() == 0 {
            fail(1, format!("{name}: {message}"))
        } else {
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let message = message.strip_suffix(&suffix).unwrap_or(&message);
            fail(1, format!("{name}:{}:{}: {message}", e.line(), e.column()))
        }
    })?;
    drop(text);
    let graph = ClosureGraph::from_infos(infos).map_err(|e| fail(1, format!("{name}: {e}")))?;
    let layering = layering::layer(&graph, &request).map_err(|e| match e {
        LayeringError::NoStoreLayers { .. } => fail(2, e.to_string()),
        LayeringError::ExcludedNotInGraph(_) => fail(1, format!("{name}: {e}")),
    })?;

    // One-space indentation, as the JSON files nixpkgs writes for layers.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut serializer = serde_json::Serializer::with_formatter(
        &mut out,
        serde_json::ser::PrettyFormatter::with_indent(b" "),
    );
    if cli.explain {
        layering.serialize(&mut serializer)
    } else {
        layering.layers.serialize(&mut serializer)
    }
    .map_err(|e| fail(1, format!("writing to standard output: {e}")))?;
    out.write_all(b"\n")
        .and_then(|()| out.flush())
        .map_err(|e| fail(1, format!("writing to standard output: {e}")))?;
    // Freeing the graph path by path takes longer than the process exit that reclaims it.
    std::mem::forget(layering);
    std::mem::forget(graph);
    Ok(())
}

fn read_input(path: &PathBuf) -> std::io::Result<String> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin().lock().read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(path)?;
    }
    Ok(text)
}
