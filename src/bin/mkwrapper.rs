//! `mkwrapper`: generate a makeWrapper-style bash wrapper (plain, or a Java application's
//! layout) and add it to the store as a content-addressed path, printing its path-info JSON.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use strata::cli::{self, Failure, StoreArgs};
use strata_core::manifest::Inputs;
use strata_core::nix::store_path::AbsStorePath;
use strata_core::wrapper::flags::misplaced_flag;
use strata_core::wrapper::operands::{InstallError, OperandError, Resolver, install};
use strata_core::wrapper::{
    JavaApp, JavaMain, JavaWrapper, PlainWrapper, Wrapper, WrapperError, parse_flags,
};

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
    let common = match &cli.mode {
        Mode::Wrap(a) => &a.common,
        Mode::Java(a) => &a.common,
    };
    // Everything the command line alone can refuse is refused first.
    let mut flags = parse_flags(&common.flags).map_err(Failure::usage)?;
    let store_dir = cli.store.store_dir()?;
    let mut inputs = Inputs::default();
    for file in &common.inputs {
        inputs
            .load(file, &store_dir)
            .map_err(|e| cli::manifest_failure(e).prefixed("--inputs"))?;
    }
    // An operand may be a manifest file holding the one path meant.
    let mut operand = |what: &str, text: &str| -> Result<String, Failure> {
        Ok(inputs
            .load_operand(text, &store_dir)
            .map_err(|e| cli::manifest_failure(e).prefixed(what))?
            .unwrap_or_else(|| text.to_string()))
    };
    let bash_arg = operand("--bash", &common.bash)?;
    let (original_arg, jre_arg, classpath_args) = match &cli.mode {
        Mode::Wrap(a) => (operand("ORIGINAL", &a.original)?, String::new(), Vec::new()),
        Mode::Java(a) => {
            let classpath = a
                .classpath
                .iter()
                .map(|c| operand("--classpath", c))
                .collect::<Result<Vec<_>, _>>()?;
            (String::new(), operand("--jre", &a.jre)?, classpath)
        }
    };
    // The store's files are read (under its root) also when a plain tree is written.
    let root = cli.store.open()?;
    let store = common.tree.is_none().then_some(&root);
    let ctx = Resolver {
        inputs: &inputs,
        store,
        root: Some(&root),
    };
    for flag in &mut flags {
        flag.expand_values(&mut |v| ctx.expand_value(v))
            .map_err(operand_failure)?;
    }

    let bash = ctx.resolve("--bash", &bash_arg).map_err(operand_failure)?;
    let shell = format!("{}/bin/bash", bash.logical);
    ctx.require_store_path("--bash", &bash)
        .map_err(operand_failure)?;
    ctx.require_executable("--bash", &shell)
        .map_err(operand_failure)?;

    let (wrapper, mut used) = match &cli.mode {
        Mode::Wrap(a) => {
            let original = ctx
                .resolve("ORIGINAL", &original_arg)
                .map_err(operand_failure)?;
            ctx.require_store_path("ORIGINAL", &original)
                .map_err(operand_failure)?;
            ctx.require_executable("ORIGINAL", &original.logical)
                .map_err(operand_failure)?;
            let wrapper = Wrapper::Plain(PlainWrapper {
                shell,
                program: original.logical.clone(),
                name: a.name.clone(),
                flags,
            });
            (wrapper, vec![bash, original])
        }
        Mode::Java(a) => {
            let jre = ctx.resolve("--jre", &jre_arg).map_err(operand_failure)?;
            ctx.require_store_path("--jre", &jre)
                .map_err(operand_failure)?;
            let java = format!("{}/bin/java", jre.logical);
            ctx.require_jre("--jre", &jre.logical, &a.jre)
                .map_err(operand_failure)?;
            let jar = ctx.resolve_file("--jar", &a.jar).map_err(operand_failure)?;
            let mut used = vec![bash, jre];
            let main = match &a.main_class {
                None => JavaMain::Jar,
                Some(class) => {
                    let mut classpath = Vec::new();
                    for entry in &classpath_args {
                        let entry = ctx.resolve("--classpath", entry).map_err(operand_failure)?;
                        classpath.push(entry.logical.clone());
                        used.push(entry);
                    }
                    JavaMain::Class {
                        class: class.clone(),
                        classpath,
                    }
                }
            };
            let wrapper = Wrapper::Java(JavaWrapper {
                shell,
                app: JavaApp {
                    name: a.name.clone(),
                    version: a.app_version.clone(),
                    java,
                    main,
                    jvm_flags: a.jvm_flag.clone(),
                },
                jar: ctx.physical(&jar),
                // A jar already in the store is referenced, not copied.
                jar_in_store: store
                    .and(jar.store_path.as_ref())
                    .map(|_| jar.logical.clone()),
                flags,
            });
            used.push(jar);
            (wrapper, used)
        }
    };

    let mut read = |file: &str| strata_core::wrapper::read_contents_file(&ctx.physical_of(file));
    match (&common.tree, store) {
        (Some(dir), _) => {
            let out = std::path::absolute(dir)
                .map_err(|e| Failure::failed(format!("{}: {e}", dir.display())))?;
            let out_text = out
                .to_str()
                .ok_or_else(|| Failure::usage("--tree: the directory name is not UTF-8"))?;
            if common.dry_run {
                let script = wrapper
                    .script(out_text, &mut read)
                    .map_err(wrapper_failure)?;
                return print(&script);
            }
            wrapper
                .generate(out_text, &out, &mut read)
                .map_err(wrapper_failure)
        }
        (None, Some(store)) => {
            let mut candidates: BTreeSet<AbsStorePath> =
                inputs.infos().iter().map(|i| i.path.clone()).collect();
            candidates.extend(used.drain(..).filter_map(|r| r.store_path));
            let installed = install(store, &wrapper, &candidates, &mut read, common.dry_run)
                .map_err(|e| match e {
                    InstallError::Wrapper(e) => wrapper_failure(e),
                    InstallError::Store(e) => Failure::failed(e),
                })?;
            if common.print_path {
                print(&format!("{}\n", installed.info.path))
            } else if common.dry_run {
                print(&installed.script)
            } else {
                cli::print_path_infos([&installed.info])
            }
        }
        (None, None) => Err(Failure::failed("no store")),
    }
}

fn print(text: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Failure::failed(format!("stdout: {e}")))
}

fn wrapper_failure(e: WrapperError) -> Failure {
    if e.is_usage() {
        Failure::usage(e)
    } else {
        Failure::failed(e)
    }
}

fn operand_failure(e: OperandError) -> Failure {
    if e.is_usage() {
        Failure::usage(e)
    } else {
        Failure::failed(e)
    }
}
