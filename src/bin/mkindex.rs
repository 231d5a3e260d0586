//! `mkindex`: one image for several platforms, an OCI image index made from mkimage's
//! outputs (one per platform); the work is in `strata_core::image::index`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use strata::cli::{self, Failure};
use strata_core::image::index::{IndexSpec, build_index};
use strata_core::image::{Format, Output};

const EXAMPLES: &str = "\
Examples:
  # The same application for two platforms, then one index of both:
  mkimage layers.amd64.json --name app --tag 1 --architecture amd64 -o app-amd64.tar
  mkimage layers.arm64.json --name app --tag 1 --architecture arm64 -o app-arm64.tar
  mkindex app-amd64.tar app-arm64.tar --name app -o app-multi.tar

  # Read by skopeo and podman; push-image pushes every platform and the index:
  skopeo inspect --raw oci-archive:app-multi.tar
  push-image app-multi.tar registry.example.com/team/app:1

  # An OCI layout directory instead of a tar:
  mkindex app-amd64.tar app-arm64.tar --format oci-dir -o app-multi

Each input is an image mkimage wrote (any --format); its platform is read from its config.
Two images of one platform are refused. See docs/mkindex.md.";

/// Combine images of several platforms into one OCI image index.
#[derive(Debug, Parser)]
#[command(name = "mkindex", version, after_help = EXAMPLES)]
struct Args {
    /// The images, one per platform (mkimage's tar or OCI layout directory).
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<PathBuf>,
    /// Where to write the index: a file (or directory with --format oci-dir); `-` or none is
    /// stdout.
    #[arg(short, long, value_name = "PATH")]
    output: Option<PathBuf>,
    /// `oci`: an OCI layout tar (oci-archive); `oci-dir`: an OCI layout directory.
    #[arg(long, default_value = "oci", value_parser = ["oci", "oci-dir"])]
    format: String,
    /// The index's tag (default: the tag the images share).
    #[arg(long)]
    tag: Option<String>,
    /// Repository name recorded for containerd (`io.containerd.image.name`).
    #[arg(long)]
    name: Option<String>,
    /// Print the index's digest and platforms as JSON on stdout (needs -o).
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    cli::main("mkindex", |args: Args| {
        cli::on_signals_clean_up()?;
        let format = if args.format == "oci-dir" {
            Format::OciDir
        } else {
            Format::Oci
        };
        let dash = args.output.as_deref() == Some(std::path::Path::new("-"));
        let output = match (&args.output, format) {
            (Some(_), Format::OciDir) if dash => {
                return Err(Failure::usage("--format oci-dir needs -o DIR"));
            }
            (None, Format::OciDir) => return Err(Failure::usage("--format oci-dir needs -o DIR")),
            (Some(dir), Format::OciDir) => Output::Dir(dir.clone()),
            (Some(file), _) if !dash => Output::File(file.clone()),
            _ => Output::Stdout,
        };
        if output == Output::Stdout {
            use std::io::IsTerminal;
            if std::io::stdout().is_terminal() {
                return Err(Failure::usage(
                    "refusing to write the index tar to a terminal: give -o FILE or redirect stdout",
                ));
            }
            if args.json {
                return Err(Failure::usage(
                    "--json needs the index in a file (-o FILE): stdout has the index",
                ));
            }
        }
        let spec = IndexSpec {
            images: args.images.clone(),
            tag: args.tag.clone(),
            name: args.name.clone(),
            format,
        };
        let report = build_index(&spec, &output)?;
        if args.json {
            let text = serde_json::to_string(&report).map_err(Failure::failed)?;
            println!("{text}");
        }
        eprintln!("mkindex: {}", report.line());
        Ok(())
    })
}
