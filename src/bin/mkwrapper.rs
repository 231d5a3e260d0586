//! `mkwrapper`: generate a makeWrapper-style bash wrapper (plain, or a Java application's
//! layout) and add it to the store as a content-addressed path, printing its path-info JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use strata::cli::{self, Failure, StoreArgs};
use strata_core::nix::store_path::StoreDir;
use strata_core::store::Store;
use strata_core::wrapper::flags::misplaced_flag;
use strata_core::wrapper::make::{JavaLayout, Layout, Made, Request, StoreAccess, make};

const ABOUT: &str = "Generate a makeWrapper-style bash wrapper and add it to the store.";

const AFTER_HELP: &str = "\
Path operands (--bash, --jre, --jar, --classpath, ORIGINAL) are absolute paths, or @NAME[/SUB]:
the --inputs path whose name is NAME (`bash-5.2`) or NAME, `-` and a version (`bash` finds
`bash-5.2`; `openjdk-17-jre-headless` finds `openjdk-17-jre-headless-17.0.15`), plus SUB. Every --inputs path, and every store path named by an operand, is a
reference candidate; a store path the generated files mention becomes a reference.

makeWrapper flags (after `--`, run left to right, nixpkgs semantics):
  --argv0 NAME | --inherit-argv0 | --resolve-argv0 (no-op, bash resolves $0)
  --set VAR VALUE | --set-default VAR VALUE | --unset VAR | --chdir DIR | --run COMMAND
  --prefix VAR SEP VALUE | --suffix VAR SEP VALUE        (VALUE split on SEP, no duplicates)
  --prefix-each VAR SEP VALUES | --suffix-each VAR SEP VALUES      (VALUES split on blanks)
  --prefix-contents VAR SEP FILES | --suffix-contents VAR SEP FILES (files read now)
  --add-flags ARGS | --append-flags ARGS   (shell words, split and expanded at run time)
  --add-flag ARG | --append-flag ARG       (one argument, quoted)
A flag VALUE that starts with @ (--set/--set-default VALUE, --chdir DIR, --add-flag/--append-flag
ARG, each SEP-separated --prefix/--suffix component, each -contents file) is @NAME[/SUB] as
above; @@… is a literal @…. --add-flags/--append-flags words, --run and names are not expanded.
Stricter than nixpkgs: invalid variable names, empty values, separators or components,
unknown flags, stray words and missing operands are refused before anything is written.

Output: without --tree, the tree is added to the store (--store-root / STRATA_STORE_ROOT,
logical dir --store-dir / STRATA_STORE_DIR, default /nix/store) and its path-info JSON is
printed. --bash, --jre and ORIGINAL must then be valid store paths.

See `mkwrapper java --help` for the Java layout and run-time JVM options.

Examples:
  store-add --store-root S ./hello | mkwrapper --store-root S wrap --inputs - \\
      --inputs bash.json --bash @bash @hello/bin/hello hello -- --set GREETING hi
  mkwrapper wrap --tree ./out --bash /usr /usr/bin/env show-env -- --set A 1 --chdir /tmp";

const JAVA_AFTER_HELP: &str = "\
Layout: share/java/NAME-VERSION.jar (a copy of --jar) and bin/NAME, which runs
  exec \"JRE/bin/java\" [--jvm-flag…] $JAVA_OPTS $<APP>_OPTS -jar $out/share/java/NAME-VERSION.jar \\
       [--add-flag(s)…] \"$@\" [--append-flag(s)…]
(with --main-class: -cp $out/share/java/NAME-VERSION.jar[:--classpath…] CLASS instead of -jar).
The output's store path name is NAME-VERSION.

Run-time JVM options, later wins: baked --jvm-flag < JAVA_OPTS < <APP>_OPTS, where APP is NAME
upper-cased with every character other than a letter or digit turned into `_` (my-app:
MY_APP_OPTS). Both are split at blanks with `read -r -a`: no eval, no globbing, no quote
removal, so an option cannot contain a blank. They are read just before exec, so
`-- --set-default JAVA_OPTS -Xmx512m` gives a default the caller can replace.
JAVA_TOOL_OPTIONS and JDK_JAVA_OPTIONS cannot beat baked flags: the JVM reads them before its
command line. _JAVA_OPTIONS beats everything (the JVM reads it last).

The JVM replaces the wrapper (exec): same PID, signals go straight to it.

Example (the seed's application):
  mkwrapper java --inputs deps.json --bash @bash --jre @openjdk-17-jre --jar ./app.jar \\
      --name app --version 1.0 --jvm-flag -Dlogback.configurationFile=logback.xml \\
      -- --set _JAVA_OPTIONS -Dawt.useSystemAAFontSettings=on --set _JAVA_AWT_WM_NONREPARENTING 1";

#[derive(Debug, Parser)]
#[command(name = "mkwrapper", version, about = ABOUT, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,

    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Wrap any executable: bin/NAME execs ORIGINAL.
    Wrap(WrapArgs),
    /// Wrap a Java application: share/java/NAME-VERSION.jar and bin/NAME running the JRE.
    #[command(after_help = JAVA_AFTER_HELP)]
    Java(JavaArgs),
}

#[derive(Debug, Args)]
struct Common {
    /// The bash package (a store path, or @NAME); the shebang is BASH/bin/bash.
    #[arg(long, value_name = "BASH")]
    bash: String,

    /// Path-info JSON (object, array or stream; `-` is stdin), e.g. store-add's output. Its
    /// paths are reference candidates and what @NAME picks from. Repeatable.
    #[arg(long = "inputs", value_name = "FILE")]
    inputs: Vec<String>,

    /// Print only the output's store path (like `nix-store --add`), not its path-info JSON.
    #[arg(long)]
    print_path: bool,

    /// Print the script (bin/NAME) as it would be installed; write nothing. With
    /// --print-path, print the path it would have instead.
    #[arg(long)]
    dry_run: bool,

    /// Write the tree to DIR (which must not exist) instead of adding it to the store. The
    /// wrapper's own path ($out) is then DIR; operands need not be in the store.
    #[arg(long, value_name = "DIR")]
    tree: Option<PathBuf>,

    /// makeWrapper flags, after `--`.
    #[arg(
        last = true,
        value_name = "MAKEWRAPPER_FLAGS",
        allow_hyphen_values = true
    )]
    flags: Vec<String>,
}

#[derive(Debug, Args)]
struct WrapArgs {
    /// The executable to wrap.
    #[arg(value_name = "ORIGINAL")]
    original: String,

    /// The wrapper's name: bin/NAME, and the output's store path name.
    #[arg(value_name = "NAME")]
    name: String,

    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct JavaArgs {
    /// The JRE (a store path, or @NAME); the wrapper runs JRE/bin/java.
    #[arg(long, value_name = "JRE")]
    jre: String,

    /// The application jar: a file, a store path, or @NAME[/SUB]; copied into the output.
    #[arg(long, value_name = "JAR")]
    jar: String,

    /// Application name: bin/NAME, share/java/NAME-VERSION.jar, <APP>_OPTS.
    #[arg(long, value_name = "NAME")]
    name: String,

    /// Application version.
    #[arg(long = "version", value_name = "VERSION")]
    app_version: String,

    /// Run CLASS with the jar on the classpath instead of `-jar`.
    #[arg(long, value_name = "CLASS")]
    main_class: Option<String>,

    /// With --main-class: a further classpath entry, after the jar. Repeatable.
    #[arg(long, value_name = "ENTRY", requires = "main_class")]
    classpath: Vec<String>,

    /// A JVM option baked in before the run-time ones (one argument). Repeatable.
    #[arg(long, value_name = "FLAG", allow_hyphen_values = true)]
    jvm_flag: Vec<String>,

    #[command(flatten)]
    common: Common,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(flag) = misplaced_flag(&args) {
        return cli::run("mkwrapper", || {
            Err(Failure::usage(format!(
                "{flag} is a makeWrapper flag: give it after `--` (mkwrapper … -- {flag} …)"
            )))
        });
    }
    cli::main("mkwrapper", |args: Cli| mkwrapper(&args))
}

fn mkwrapper(cli: &Cli) -> Result<(), Failure> {
    let (common, layout) = match &cli.mode {
        Mode::Wrap(a) => (
            &a.common,
            Layout::Plain {
                original: a.original.clone(),
                name: a.name.clone(),
            },
        ),
        Mode::Java(a) => (
            &a.common,
            Layout::Java(JavaLayout {
                jre: a.jre.clone(),
                jar: a.jar.clone(),
                name: a.name.clone(),
                version: a.app_version.clone(),
                main_class: a.main_class.clone(),
                classpath: a.classpath.clone(),
                jvm_flags: a.jvm_flag.clone(),
            }),
        ),
    };
    let request = Request {
        layout,
        bash: common.bash.clone(),
        inputs: common.inputs.clone(),
        flags: common.flags.clone(),
        tree: common.tree.clone(),
        dry_run: common.dry_run,
    };
    match make(&request, &Access(&cli.store))? {
        Made::Script(script) => print(&script),
        Made::Tree => Ok(()),
        Made::Installed(installed) if common.print_path => {
            print(&format!("{}\n", installed.info.path))
        }
        Made::Installed(installed) if common.dry_run => print(&installed.script),
        Made::Installed(installed) => cli::print_path_infos([&installed.info]),
    }
}

/// The store flags, opened when the library asks.
struct Access<'a>(&'a StoreArgs);

impl StoreAccess for Access<'_> {
    type Error = Failure;
    fn store_dir(&self) -> Result<StoreDir, Failure> {
        self.0.store_dir()
    }
    fn open(&self) -> Result<Store, Failure> {
        self.0.open()
    }
}

fn print(text: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Failure::failed(format!("stdout: {e}")))
}
