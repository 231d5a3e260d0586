//! `push-image`: push an image built by `mkimage` (its tar or OCI layout directory) to an OCI
//! registry, uploading only the blobs the registry lacks; the work is in
//! `strata_core::registry`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use strata::cli::{self, Failure, Progress};
use strata_core::image::Compression;
use strata_core::registry::{PushOptions, Reference, push};

const EXAMPLES: &str = "\
Examples:
  # Build, then push; only the layers the registry lacks are uploaded:
  mkimage layers.json --name app --tag 1 -o app.tar
  push-image app.tar registry.example.com/team/app:1

  # A loopback registry speaks plain HTTP; others need --plain-http for that:
  push-image app.tar 127.0.0.1:5000/app:1 --json

  # Mount shared layers from another repository, gzip layers (what each layer compresses
  # to is remembered in the cache), 16 MiB chunks:
  push-image app.tar registry.example.com/team/app:2 --mount-from team/base \\
    --compress gzip --cache ~/.cache/strata/push --chunk-size 16M

  # Credentials: docker login's config file, the environment, or stdin:
  STRATA_REGISTRY_USERNAME=ci STRATA_REGISTRY_PASSWORD=… push-image app.tar r.example/app
  echo \"$TOKEN\" | push-image app.tar r.example/app --username ci --password-stdin

See docs/push.md.";

/// Push an image (mkimage's tar or OCI layout directory) to an OCI registry.
#[derive(Debug, Parser)]
#[command(name = "push-image", version, after_help = EXAMPLES)]
struct Args {
    /// The image: mkimage's tar (docker+OCI, OCI or docker-archive) or an OCI layout directory.
    #[arg(value_name = "IMAGE")]
    image: PathBuf,
    /// Where to: REGISTRY/REPO[:TAG] (the tag defaults to the image's own, else `latest`).
    #[arg(value_name = "REGISTRY/REPO[:TAG]")]
    destination: String,
    /// A repository on the same registry to mount blobs from instead of uploading them.
    #[arg(long, value_name = "REPO")]
    mount_from: Option<String>,
    /// Upload in chunks of this size (bytes, or with K/M/G suffix); default: one request per
    /// blob.
    #[arg(long, value_name = "SIZE", value_parser = cli::parse_size)]
    chunk_size: Option<u64>,
    /// Compress uncompressed layers before upload (pinned levels: gzip 6, zstd 3).
    #[arg(long, value_enum, default_value_t = Compression::None)]
    compress: Compression,
    /// With --compress: remember what each layer compresses to in DIR, so an unchanged layer
    /// the registry has is skipped without compressing it again.
    #[arg(long, env = "STRATA_PUSH_CACHE", value_name = "DIR")]
    cache: Option<PathBuf>,
    #[command(flatten)]
    registry: cli::RegistryArgs,
    /// Print the push summary as JSON (per blob: skipped, mounted or uploaded, and bytes).
    #[arg(long)]
    json: bool,
    /// Print one line per blob on stderr even when it is not a terminal.
    #[arg(short, long)]
    verbose: bool,
}

fn main() -> ExitCode {
    cli::main("push-image", |args: Args| {
        let dest = Reference::parse(&args.destination).map_err(Failure::usage)?;
        let credentials = args.registry.credentials(&dest)?;
        let progress = Progress::counting("push-image", "sent");
        let show = args.verbose || progress.counter().is_some();
        let opts = PushOptions {
            transport: args.registry.transport(),
            mount_from: args.mount_from.clone(),
            chunk_size: args.chunk_size,
            compression: args.compress,
            credentials,
            progress: progress.counter(),
            temp_dir: None,
            cache: args.cache.clone(),
            timeout: args.registry.timeout(),
        };
        let report = push(&args.image, &dest, &opts, &|b| {
            if show {
                progress.note(&cli::blob_line("push-image", b));
            }
        })?;
        let out = if args.json {
            serde_json::to_string(&report).map_err(Failure::failed)? + "\n"
        } else {
            format!("{}@{}\n", report.reference, report.digest)
        };
        progress.print(&out)
    })
}
