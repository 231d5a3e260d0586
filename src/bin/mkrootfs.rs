//! `mkrootfs`: the rootfs basics as store paths for `mkimage --contents`: user and group
//! databases, a CA bundle from Debian's ca-certificates, `/usr/bin/env`. Prints each path's
//! path-info JSON, like store-add.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strata::cli::{self, Failure, StoreArgs};
use strata_core::nix::path_info::PathInfo;
use strata_core::rootfs;

const AFTER_HELP: &str = "\
Each subcommand adds one generated store path (same inputs, same path) and prints its
path-info JSON (or, with --print-path, just its path). Link it into the image with
`mkimage --contents PATH`; see docs/rootfs.md.

Examples:
  # /etc/passwd, /etc/group, /etc/nsswitch.conf with root, nobody and app:
  mkrootfs nss --user app:1000:1000:/home/app > nss.json

  # /etc/ssl/certs/ca-certificates.crt from Debian's package:
  apt-get download ca-certificates && store-add --deb ca-certificates_*.deb > ca.json
  mkrootfs ca-bundle --inputs ca.json @ca-certificates > ca-bundle.json

  # /usr/bin/env from Debian's coreutils:
  mkrootfs usr-bin-env --inputs runtime.json @coreutils/usr/bin/env > env.json

  # /tmp (no mkrootfs needed): mkimage … --extra-commands 'mkdir -p tmp' --perms '/tmp 1777 0 0'";

#[derive(Debug, Parser)]
#[command(name = "mkrootfs", version, after_help = AFTER_HELP)]
/// Add the rootfs basics (users, CA bundle, /usr/bin/env) to the store as generated paths.
struct Cli {
    #[command(subcommand)]
    what: What,
    /// Print the store path alone (one line) instead of its path-info JSON.
    #[arg(long, global = true)]
    print_path: bool,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Subcommand)]
enum What {
    /// etc/passwd, etc/group and etc/nsswitch.conf: root (0:0), nobody (65534:65534, group
    /// nogroup) and each --user, whose GID becomes a group of its name if it is not one yet.
    Nss {
        /// A user: NAME:UID:GID[:HOME[:SHELL]] (HOME defaults to /, SHELL to /bin/sh).
        /// NAME is [a-z_][a-z0-9_-]{0,31}. Repeatable.
        #[arg(long = "user", value_name = "SPEC")]
        users: Vec<String>,
    },
    /// etc/ssl/certs/ca-certificates.crt: every *.crt below usr/share/ca-certificates of the
    /// ca-certificates package, sorted by path (byte order), each ending with a newline. The
    /// new path references nothing.
    CaBundle {
        /// Path-info JSON that @NAME picks from (e.g. store-add --deb's output). Repeatable.
        #[arg(long = "inputs", value_name = "FILE")]
        inputs: Vec<String>,
        /// The ca-certificates package: a store path, or @NAME.
        #[arg(value_name = "PACKAGE")]
        package: String,
    },
    /// usr/bin/env, a symlink to TARGET (a store path's executable, which becomes the new
    /// path's reference, or any absolute path).
    UsrBinEnv {
        /// Path-info JSON that @NAME picks from (e.g. store-add --deb's output). Repeatable.
        #[arg(long = "inputs", value_name = "FILE")]
        inputs: Vec<String>,
        /// What env runs: an absolute path, or @NAME[/SUB] (@coreutils/usr/bin/env).
        #[arg(value_name = "TARGET")]
        target: String,
    },
}

fn main() -> ExitCode {
    cli::main("mkrootfs", |args: Cli| make(&args))
}

fn read_inputs(files: &[String]) -> Result<Vec<PathInfo>, Failure> {
    let mut out = Vec::new();
    for file in files {
        out.extend(cli::read_path_infos(file)?);
    }
    Ok(out)
}

fn make(args: &Cli) -> Result<(), Failure> {
    // Flags are checked before the store is opened or anything is written.
    let info = match &args.what {
        What::Nss { users } => {
            let users = users
                .iter()
                .map(|u| rootfs::nss::parse_user(u))
                .collect::<Result<Vec<_>, _>>()?;
            rootfs::nss::render(&users)?;
            rootfs::nss::add(&args.store.open()?, &users)?
        }
        What::CaBundle { inputs, package } => {
            let inputs = read_inputs(inputs)?;
            let store = args.store.open()?;
            let op = rootfs::resolve(&store, &inputs, "ca-bundle", package)?;
            let path = op.store_path.filter(|p| p.to_string() == op.logical);
            let Some(path) = path else {
                return Err(Failure::usage(format!(
                    "ca-bundle: '{package}' is not a store path (a ca-certificates package)"
                )));
            };
            rootfs::ca::add(&store, &path)?
        }
        What::UsrBinEnv { inputs, target } => {
            let inputs = read_inputs(inputs)?;
            rootfs::env::add(&args.store.open()?, &inputs, target)?
        }
    };
    if args.print_path {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", info.path)
            .and_then(|()| out.flush())
            .map_err(|e| Failure::failed(format!("stdout: {e}")))
    } else {
        cli::print_path_infos([&info])
    }
}
