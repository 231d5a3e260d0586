//! `mkimage`: a layered container image from `mklayers` output and the store, like nixpkgs'
//! `dockerTools.streamLayeredImage`; the work is in `strata_core::image`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use strata::cli::{self, Failure, StoreArgs};
use strata_core::image::check::{self, format_time, parse_layers, parse_time};
use strata_core::image::config::{ContainerConfig, Empty};
use strata_core::image::input::{MAX_CONFIG_JSON, MAX_LAYERS_JSON, read_input};
use strata_core::image::sink_engine::{Engine, EngineOptions};
use strata_core::image::{
    BuildReport, Compression, Format, ImageSpec, LayerSource, Output, build_and_load,
    build_and_push, build_observed, contents::PermRule,
};
use strata_core::manifest::{Inputs, PathArg, resolve_path_args};
use strata_core::registry::{PushOptions, Reference};

const EXAMPLES: &str = "\
Examples:
  # The whole pipeline, loaded into Docker:
  store-query closure /nix/store/…-app | mklayers | \\
    mkimage --name app --tag 1 --contents /nix/store/…-app --cmd /bin/app -o app.tar \\
    && docker load < app.tar

  # The same tar is an OCI layout too:
  skopeo copy oci-archive:app.tar oci:app-oci:1

  # Contents and command from the manifests the earlier steps printed:
  mkimage layers.json --name app --contents app.json --contents runtime.json \
    --cmd @app/bin/app -o app.tar

  # Config from a file, a writable /tmp owned by uid 1000, gzip layers, a layer cache:
  mkimage --name app --config config.json --extra-commands 'mkdir -m 1777 tmp' \\
    --perms '/tmp 1777 1000 1000' --compress gzip --cache ~/.cache/strata/layers \\
    -o app.tar layers.json

  # No tar: straight to a registry, or into dockerd; with the layer cache only the layers
  # they lack are read and sent (podman and containerd get the whole image):
  mkimage layers.json --name app --tag 2 --contents app.json --cmd @app/bin/app \\
    --cache ~/.cache/strata/layers --push registry.example.com/team/app
  mkimage layers.json --name app --tag 2 --contents app.json --cmd @app/bin/app \\
    --cache ~/.cache/strata/layers --load docker

The output is one tar that docker load, podman load, skopeo (docker-archive: and
oci-archive:), umoci (after untar) and ctr images import all read; see docs/mkimage.md.";

/// Build a layered container image (docker-archive + OCI layout) from store layers.
#[derive(Debug, Parser)]
#[command(name = "mkimage", version, after_help = EXAMPLES)]
struct Args {
    /// The layers JSON from mklayers (a list of lists of store paths), or `-` for stdin.
    #[arg(default_value = "-", value_name = "LAYERS")]
    layers: String,
    /// Repository name (lowercase, e.g. `app` or `registry.example/team/app`).
    #[arg(long)]
    name: String,
    /// Tag (default: a hash of every input).
    #[arg(long)]
    tag: Option<String>,
    /// Store paths symlink-joined into `/` (directories merged, files linked into the
    /// store): a store path, a path-info manifest (a file or `-`: all its paths) or @NAME from
    /// --inputs and the manifests given. One value per flag; repeatable.
    #[arg(long, value_name = "PATH")]
    contents: Vec<String>,
    #[command(flatten)]
    inputs: cli::InputsArg,
    /// Keep the first of two colliding contents files instead of failing.
    #[arg(long)]
    ignore_collisions: bool,
    /// Accept store paths whose references are in no layer (e.g. in the base image).
    #[arg(long)]
    allow_partial_closure: bool,
    /// Shell commands run by bash in the customisation root, unprivileged (as you, or as
    /// nobody when you are root), umask 022.
    #[arg(long, value_name = "SCRIPT")]
    extra_commands: Option<String>,
    /// Ownership and mode for customisation-layer paths matching a regex:
    /// 'REGEX MODE UID GID' (`-` keeps a field), repeatable, later rules win.
    #[arg(long, value_name = "RULE")]
    perms: Vec<PermRule>,
    /// Image config JSON (`Cmd`, `Entrypoint`, `Env`, `WorkingDir`, `User`, `ExposedPorts`,
    /// `Volumes`, `Labels`, `StopSignal`); the flags below override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// One element of `Cmd` (repeat for more); `@NAME[/SUB]` is the path it references,
    /// `@@…` a literal `@…`.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    cmd: Vec<String>,
    /// One element of `Entrypoint` (repeat for more); `@NAME[/SUB]` as for --cmd.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    entrypoint: Vec<String>,
    /// An environment variable `NAME=VALUE` (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// `WorkingDir`.
    #[arg(long, alias = "working-dir", value_name = "DIR")]
    workdir: Option<String>,
    /// `User` (`uid[:gid]` or a name).
    #[arg(long)]
    user: Option<String>,
    /// An exposed port, `PORT[/tcp|udp]` (repeatable).
    #[arg(long, value_name = "PORT")]
    expose: Vec<String>,
    /// A volume path (repeatable).
    #[arg(long, value_name = "PATH")]
    volume: Vec<String>,
    /// A label `KEY=VALUE` (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// `StopSignal` (e.g. SIGTERM).
    #[arg(long, value_name = "SIGNAL")]
    stop_signal: Option<String>,
    /// Creation time in the config: RFC 3339, `@SECONDS` or `now` (default:
    /// `SOURCE_DATE_EPOCH` if set, else 1970-01-01T00:00:01Z).
    #[arg(long, value_name = "TIME")]
    created: Option<String>,
    /// Modification time of every file in the layers: RFC 3339 or `@SECONDS` (default:
    /// `SOURCE_DATE_EPOCH` if set, else 1970-01-01T00:00:01Z).
    #[arg(long, value_name = "TIME")]
    mtime: Option<String>,
    /// Owner uid of store layer files.
    #[arg(long, default_value_t = 0)]
    uid: u64,
    /// Owner gid of store layer files.
    #[arg(long, default_value_t = 0)]
    gid: u64,
    /// Owner name of store layer files.
    #[arg(long, default_value = "root")]
    uname: String,
    /// Group name of store layer files.
    #[arg(long, default_value = "root")]
    gname: String,
    /// A docker-archive base image: its layers go first, its Env is merged.
    #[arg(long, value_name = "ARCHIVE")]
    from: Option<PathBuf>,
    /// Image architecture, as Docker and OCI name it: amd64, arm64, 386, arm, ppc64le, s390x,
    /// riscv64 (default: this machine's). ELF files of another architecture are refused.
    #[arg(long)]
    architecture: Option<String>,
    /// The platform's CPU variant (default: v8 for arm64, v7 for arm, none otherwise).
    #[arg(long, value_name = "VARIANT")]
    variant: Option<String>,
    /// Layer compression (pinned levels: gzip 6, zstd 3).
    #[arg(long, value_enum, default_value_t = Compression::None)]
    compress: Compression,
    /// Output layout.
    #[arg(long, value_enum, default_value_t = Format::DockerOci)]
    format: Format,
    /// Write the image here (atomically) instead of stdout (`-`); a directory for oci-dir.
    /// A tar is never written to a terminal.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Push the image straight to a registry instead of writing it (no tar is made): only the
    /// layers the registry lacks are read and sent. The tag defaults to --tag's.
    #[arg(long, value_name = "REGISTRY/REPO[:TAG]", conflicts_with_all = ["output", "load"])]
    push: Option<String>,
    /// Load the image straight into a local engine instead of writing it: docker is sent
    /// only the layers it lacks; podman and containerd the whole image.
    #[arg(long, value_enum, value_name = "ENGINE", conflicts_with = "output")]
    load: Option<Engine>,
    /// With --push: a layer the registry lacks goes up in chunks of SIZE while it is made
    /// (bytes, or with K/M/G); one that fits in a chunk is looked up first, sent only if missing.
    #[arg(long, value_name = "SIZE", value_parser = cli::parse_size, requires = "push", default_value = "16M")]
    chunk_size: u64,
    #[command(flatten)]
    registry: cli::RegistryArgs,
    /// Also write what was built (image, config digest, layers, size; with --push or --load,
    /// what went where) as JSON to FILE (`-`: stdout, when the image goes to a file).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Build even if the entrypoint cannot start in the image (missing file, interpreter,
    /// loader or library; see docs/mkimage.md).
    #[arg(long)]
    no_start_check: bool,
    /// Layer cache directory: unchanged store layers are copied from it, not re-read.
    #[arg(long, env = "STRATA_IMAGE_CACHE", value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Print one line per layer (digest, size, cached or built) on stderr.
    #[arg(short, long)]
    verbose: bool,
    #[command(flatten)]
    store: StoreArgs,
}

fn key_value(text: &str, flag: &str) -> Result<(String, String), Failure> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| Failure::usage(format!("{flag} '{text}' must be KEY=VALUE")))
}

/// The config file, then the flags over it.
fn container_config(args: &Args, inputs: &Inputs) -> Result<ContainerConfig, Failure> {
    let mut config = match &args.config {
        Some(path) => {
            let shown = path.display().to_string();
            let text = read_input(&shown, MAX_CONFIG_JSON, "--config")?;
            let text = String::from_utf8(text)
                .map_err(|_| Failure::failed(format!("{shown}: not UTF-8")))?;
            ContainerConfig::from_json(&text)
                .map_err(|e| Failure::failed(format!("config '{shown}': {e}")))?
        }
        None => ContainerConfig::default(),
    };
    let mut flags = ContainerConfig::default();
    let expand = |values: &[String], flag: &str| {
        values
            .iter()
            .map(|v| {
                inputs
                    .expand(v)
                    .map_err(|e| cli::manifest_failure(e).prefixed(flag))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    if !args.cmd.is_empty() {
        flags.cmd = Some(expand(&args.cmd, "--cmd")?);
    }
    if !args.entrypoint.is_empty() {
        flags.entrypoint = Some(expand(&args.entrypoint, "--entrypoint")?);
    }
    if !args.env.is_empty() {
        for e in &args.env {
            key_value(e, "--env")?;
        }
        flags.env = Some(args.env.clone());
    }
    flags.working_dir = args.workdir.clone();
    flags.user = args.user.clone();
    flags.stop_signal = args.stop_signal.clone();
    if !args.expose.is_empty() {
        let mut ports = BTreeMap::new();
        for p in &args.expose {
            let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
            if port.parse::<u16>().is_err() || !matches!(proto, "tcp" | "udp" | "sctp") {
                return Err(Failure::usage(format!(
                    "--expose '{p}' must be PORT[/tcp|udp|sctp]"
                )));
            }
            ports.insert(format!("{port}/{proto}"), Empty {});
        }
        flags.exposed_ports = Some(ports);
    }
    if !args.volume.is_empty() {
        flags.volumes = Some(args.volume.iter().map(|v| (v.clone(), Empty {})).collect());
    }
    if !args.label.is_empty() {
        let mut labels = BTreeMap::new();
        for l in &args.label {
            let (k, v) = key_value(l, "--label")?;
            labels.insert(k, v);
        }
        flags.labels = Some(labels);
    }
    config.overlay(flags);
    Ok(config)
}

fn main() -> ExitCode {
    let args = match cli::parse_args::<Args>("mkimage") {
        Ok(a) => a,
        Err(code) => return code,
    };
    cli::run("mkimage", || {
        cli::on_signals_clean_up()?;
        body(&args)
    })
}

/// `--created` / `--mtime`, else `SOURCE_DATE_EPOCH` (as `@SECONDS`), else nixpkgs' date.
/// The image's architecture and variant from `--architecture` and `--variant`.
fn platform(args: &Args) -> Result<(String, Option<String>), Failure> {
    let arch = args
        .architecture
        .as_deref()
        .unwrap_or(check::host_architecture());
    if !check::ARCHITECTURES.contains(&arch) {
        return Err(Failure::usage(format!(
            "--architecture '{arch}' is not one of {}",
            check::ARCHITECTURES.join(", ")
        )));
    }
    let variant = match &args.variant {
        Some(v) if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            return Err(Failure::usage(format!(
                "--variant '{v}' must be letters and digits (v8)"
            )));
        }
        Some(v) => Some(v.clone()),
        None => check::default_variant(arch).map(str::to_string),
    };
    Ok((arch.to_string(), variant))
}

fn time_or_epoch(flag: &Option<String>) -> Result<String, Failure> {
    if let Some(t) = flag {
        return Ok(t.clone());
    }
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => {
            if !v.bytes().all(|b| b.is_ascii_digit()) || v.len() > 12 {
                return Err(Failure::usage(format!(
                    "SOURCE_DATE_EPOCH '{v}' must be a number of seconds since 1970"
                )));
            }
            Ok(format!("@{v}"))
        }
        _ => Ok("1970-01-01T00:00:01Z".to_string()),
    }
}

/// Where the image goes; a tar onto a terminal is refused.
fn output_of(args: &Args) -> Result<Output, Failure> {
    let dash = args.output.as_deref() == Some(std::path::Path::new("-"));
    let output = match (&args.output, args.format) {
        (Some(_), Format::OciDir) if dash => {
            return Err(Failure::usage("--format oci-dir needs -o DIR"));
        }
        (Some(dir), Format::OciDir) => Output::Dir(dir.clone()),
        (Some(_), _) if dash => Output::Stdout,
        (Some(file), _) => Output::File(file.clone()),
        (None, _) => Output::Stdout,
    };
    if output == Output::Stdout {
        use std::io::IsTerminal;
        if std::io::stdout().is_terminal() {
            return Err(Failure::usage(
                "refusing to write the image tar to a terminal: give -o FILE or redirect stdout",
            ));
        }
        if args.json.as_deref() == Some(std::path::Path::new("-")) {
            return Err(Failure::usage(
                "--json - needs the image in a file (-o FILE): stdout has the image",
            ));
        }
    }
    Ok(output)
}

/// The flags that go together, checked: where the image goes (`-o`, or nothing with
/// `--push`/`--load`) and the registry it is pushed to.
fn destination(args: &Args) -> Result<(Output, Option<Reference>), Failure> {
    let direct = args.push.is_some() || args.load.is_some();
    let output = if direct {
        Output::Stdout
    } else {
        output_of(args)?
    };
    let dest = match &args.push {
        Some(text) => {
            Some(Reference::parse(text).map_err(|e| Failure::usage(format!("--push: {e}")))?)
        }
        None => None,
    };
    if args.push.is_none()
        && (args.registry.username.is_some() || args.registry.plain_http || args.registry.tls)
    {
        return Err(Failure::usage(
            "--username, --plain-http and --tls go with --push",
        ));
    }
    if args.registry.password_stdin && args.layers == "-" {
        return Err(Failure::usage(
            "stdin ('-') can be read once: --password-stdin reads it (give LAYERS as a file)",
        ));
    }
    Ok((output, dest))
}

/// The layers JSON: a list of lists of store paths.
type Layers = Vec<Vec<String>>;

/// The layers JSON and the path-info inputs (`--contents`, `--inputs`), read and checked.
fn layers_and_inputs(args: &Args) -> Result<(Layers, Vec<String>, Inputs), Failure> {
    // The inputs first: a manifest among them may be what was meant as the layers.
    let store_dir = args.store.store_dir()?;
    let stdin_twice = args
        .contents
        .iter()
        .chain(&args.inputs.files)
        .any(|a| a == "-");
    if args.layers == "-" && stdin_twice {
        return Err(Failure::usage(
            "stdin ('-') can be read once: the layers JSON is read from it (give LAYERS as a file)",
        ));
    }
    let (contents, inputs) = resolve_path_args(&args.contents, &args.inputs.files, &store_dir)
        .map_err(|e| cli::manifest_failure(e).prefixed("--contents"))?;
    if let PathArg::Path(path) = PathArg::classify(&args.layers, &store_dir) {
        return Err(Failure::usage(format!(
            "LAYERS '{path}' is a store path, not the layers JSON: --contents takes one value, \
             repeat it (--contents A --contents B)"
        )));
    }
    let layers_text = read_input(&args.layers, MAX_LAYERS_JSON, "the layers JSON")?;
    let shown = if args.layers == "-" {
        "stdin"
    } else {
        &args.layers
    };
    let layers_text = String::from_utf8(layers_text)
        .map_err(|_| Failure::failed(format!("{shown}: not UTF-8")))?;
    let layers =
        parse_layers(&layers_text).map_err(|e| Failure::failed(format!("{shown}: {e}")))?;
    Ok((layers, contents, inputs))
}

/// The image spec the flags describe.
fn spec_of(args: &Args) -> Result<ImageSpec, Failure> {
    let (layers, contents, inputs) = layers_and_inputs(args)?;
    let created = parse_time(&time_or_epoch(&args.created)?, "--created")?;
    let mtime_text = time_or_epoch(&args.mtime)?;
    let mtime = parse_time(&mtime_text, "--mtime")?;
    let mtime = u64::try_from(mtime)
        .map_err(|_| Failure::usage(format!("--mtime '{mtime_text}' is before 1970")))?;
    let mut spec = ImageSpec::new(&args.name, layers);
    spec.tag = args.tag.clone();
    spec.contents = contents;
    spec.extra_commands = args.extra_commands.clone();
    spec.perms = args.perms.clone();
    spec.ignore_collisions = args.ignore_collisions;
    spec.allow_partial_closure = args.allow_partial_closure;
    spec.config = container_config(args, &inputs)?;
    spec.created = format_time(created);
    spec.owner.uid = args.uid;
    spec.owner.gid = args.gid;
    spec.owner.uname = args.uname.clone();
    spec.owner.gname = args.gname.clone();
    spec.owner.mtime = mtime;
    (spec.architecture, spec.variant) = platform(args)?;
    spec.from = args.from.clone();
    spec.compression = args.compress;
    spec.format = args.format;
    spec.cache = args.cache.clone();
    spec.start_check = !args.no_start_check;
    Ok(spec)
}

/// What a build made, and where it went besides `-o`.
type Built = (
    BuildReport,
    Option<strata_core::registry::PushReport>,
    Option<strata_core::image::sink_engine::LoadReport>,
);

fn body(args: &Args) -> Result<(), Failure> {
    let (output, dest) = destination(args)?;
    let spec = spec_of(args)?;
    let store = args.store.open()?;
    let progress = cli::Progress::stages("mkimage");
    let mut on_layer = |l: strata_core::image::LayerStarted<'_>| {
        progress.stage(format!("layer {}/{}: {}", l.number, l.total, l.what))
    };
    let built: Built = if let Some(dest) = &dest {
        let opts = PushOptions {
            transport: args.registry.transport(),
            credentials: args.registry.credentials(dest)?,
            progress: progress.counter(),
            timeout: args.registry.timeout(),
            chunk_size: Some(args.chunk_size),
            ..PushOptions::default()
        };
        let (report, pushed) = build_and_push(&store, &spec, dest, &opts, &mut on_layer, &|b| {
            if args.verbose {
                progress.note(&cli::blob_line("mkimage", b));
            }
        })?;
        (report, Some(pushed), None)
    } else if let Some(engine) = args.load {
        let opts = EngineOptions {
            engine,
            program: None,
        };
        let (report, loaded) = build_and_load(&store, &spec, &opts, &mut on_layer)?;
        (report, None, Some(loaded))
    } else {
        let report = build_observed(&store, &spec, &output, &mut on_layer)?;
        (report, None, None)
    };
    drop(progress);
    finish(args, built)
}

/// With `-v`: each layer, and how many came from the cache.
fn show_layers(report: &BuildReport) {
    for (i, l) in report.layers.iter().enumerate() {
        let what = match &l.source {
            LayerSource::Base => "base".to_string(),
            LayerSource::Store { paths, cached } => format!(
                "{} store paths, {}",
                paths.len(),
                if *cached { "cached" } else { "built" }
            ),
            LayerSource::Customisation => "customisation".to_string(),
        };
        eprintln!(
            "mkimage: layer {} {} {} bytes ({what})",
            i + 1,
            l.digest,
            l.size
        );
    }
    let cached = report
        .layers
        .iter()
        .filter(|l| matches!(l.source, LayerSource::Store { cached: true, .. }))
        .count();
    eprintln!(
        "mkimage: {cached} store layers from the cache ({} bytes of store files read)",
        report.store_bytes_read
    );
}

/// Where the image went besides `-o`: the engine it was loaded into, the registry.
fn show_destinations(built: &Built) {
    if let Some(l) = &built.2 {
        if let Some(why) = &l.fell_back {
            eprintln!(
                "mkimage: {} refused the image without the layers it said it had ({why}); sent the whole image",
                l.engine
            );
        }
        eprintln!(
            "mkimage: loaded into {}: {} layers sent, {} already there ({} bytes)",
            l.engine, l.layers_sent, l.layers_omitted, l.archive_bytes
        );
    }
    if let Some(p) = &built.1 {
        let uploaded = p
            .blobs
            .iter()
            .filter(|b| b.action == strata_core::registry::BlobAction::Uploaded)
            .count();
        eprintln!(
            "mkimage: pushed {}@{}: {uploaded} of {} blobs uploaded ({} bytes)",
            p.reference,
            p.digest,
            p.blobs.len(),
            p.uploaded_bytes
        );
    }
}

/// Tell what was built and where it went.
fn finish(args: &Args, built: Built) -> Result<(), Failure> {
    // What --extra-commands printed, passed on as it ran.
    let _ = std::io::Write::write_all(&mut std::io::stderr(), &built.0.extra_commands_output);
    if args.verbose {
        show_layers(&built.0);
    }
    show_destinations(&built);
    let (report, pushed, loaded) = built;
    let mut summary = report.summary();
    let json_to_stdout = args.json.as_deref() == Some(std::path::Path::new("-"));
    if let Some(p) = &pushed
        && !json_to_stdout
    {
        println!("{}@{}", p.reference, p.digest);
    }
    summary.pushed = pushed;
    summary.loaded = loaded;
    match args.json.as_deref() {
        Some(p) if p == std::path::Path::new("-") => {
            let text = serde_json::to_string(&summary)
                .map_err(|e| Failure::failed(format!("--json: {e}")))?;
            println!("{text}");
        }
        Some(p) => summary.write_json(p)?,
        None => {}
    }
    eprintln!("mkimage: {}", summary.line());
    Ok(())
}
