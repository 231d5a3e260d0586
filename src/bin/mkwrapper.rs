//! `mkwrapper`: generate a makeWrapper-style bash wrapper (plain, or a Java application's
//! layout) and add it to the store as a content-addressed path, printing its path-info JSON.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use strata::cli::{self, Failure, StoreArgs};
use strata_core::nix::path_info::PathInfo;
use strata_core::nix::store_path::{AbsStorePath, StorePath, is_name_with_version};
use strata_core::store::Store;
use strata_core::wrapper::{
    JavaApp, JavaMain, JavaWrapper, PlainWrapper, Wrapper, WrapperError, parse_flags,
    self_placeholder,
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
    cli::main("mkwrapper", |args: Cli| mkwrapper(&args))
}

fn mkwrapper(cli: &Cli) -> Result<(), Failure> {
    let common = match &cli.mode {
        Mode::Wrap(a) => &a.common,
        Mode::Java(a) => &a.common,
    };
    // Everything the command line alone can refuse is refused first.
    let flags = parse_flags(&common.flags).map_err(Failure::usage)?;
    let mut inputs = Vec::new();
    for file in &common.inputs {
        inputs.extend(cli::read_path_infos(file)?);
    }
    let store = match &common.tree {
        Some(_) => None,
        None => Some(cli.store.open()?),
    };
    let ctx = Resolver {
        inputs: &inputs,
        store: store.as_ref(),
    };

    let bash = ctx.resolve("--bash", &common.bash)?;
    let shell = format!("{}/bin/bash", bash.logical);
    ctx.require_store_path("--bash", &bash)?;
    ctx.require_executable("--bash", &shell)?;

    let (wrapper, mut used) = match &cli.mode {
        Mode::Wrap(a) => {
            let original = ctx.resolve("ORIGINAL", &a.original)?;
            ctx.require_store_path("ORIGINAL", &original)?;
            ctx.require_executable("ORIGINAL", &original.logical)?;
            let wrapper = Wrapper::Plain(PlainWrapper {
                shell,
                program: original.logical.clone(),
                name: a.name.clone(),
                flags,
            });
            (wrapper, vec![bash, original])
        }
        Mode::Java(a) => {
            let jre = ctx.resolve("--jre", &a.jre)?;
            ctx.require_store_path("--jre", &jre)?;
            let java = format!("{}/bin/java", jre.logical);
            ctx.require_executable("--jre", &java)?;
            let jar = ctx.resolve_file("--jar", &a.jar)?;
            let mut used = vec![bash, jre];
            let main = match &a.main_class {
                None => JavaMain::Jar,
                Some(class) => {
                    let mut classpath = Vec::new();
                    for entry in &a.classpath {
                        let entry = ctx.resolve("--classpath", entry)?;
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
                flags,
            });
            used.push(jar);
            (wrapper, used)
        }
    };

    let mut read = |file: &str| std::fs::read(ctx.physical_of(file));
    match (&common.tree, &store) {
        (Some(dir), _) => {
            let out = std::path::absolute(dir)
                .map_err(|e| Failure::failed(format!("{}: {e}", dir.display())))?;
            let out_text = out
                .to_str()
                .ok_or_else(|| Failure::usage("--tree: the directory name is not UTF-8"))?;
            wrapper
                .generate(out_text, &out, &mut read)
                .map_err(wrapper_failure)
        }
        (None, Some(store)) => {
            let mut candidates: BTreeSet<AbsStorePath> =
                inputs.iter().map(|i| i.path.clone()).collect();
            candidates.extend(used.drain(..).filter_map(|r| r.store_path));
            for candidate in &candidates {
                let path = store.check_abs(candidate).map_err(Failure::failed)?;
                store.query_valid(path).map_err(Failure::failed)?;
            }
            let info = add_to_store(store, &wrapper, &candidates, &mut read)?;
            cli::print_path_infos([&info])
        }
        (None, None) => Err(Failure::failed("no store")),
    }
}

/// Generate the tree in a scratch directory (with `$out` the placeholder path) and add it to
/// the store, where the placeholder becomes the real path.
fn add_to_store(
    store: &Store,
    wrapper: &Wrapper,
    candidates: &BTreeSet<AbsStorePath>,
    read: &mut dyn FnMut(&str) -> std::io::Result<Vec<u8>>,
) -> Result<PathInfo, Failure> {
    let out_name = wrapper.out_name();
    let placeholder = self_placeholder(&out_name);
    let out = format!("{}/{placeholder}-{out_name}", store.store_dir());
    // The store's scratch area: removed on every path out of here, and by the next add if
    // this process is killed.
    let scratch = store.scratch(false)?;
    let tree = scratch.path().join("out");
    wrapper
        .generate(&out, &tree, read)
        .map_err(wrapper_failure)?;
    store
        .add_generated(&tree, &out_name, candidates, Some(&placeholder))
        .map_err(Failure::failed)
}

fn wrapper_failure(e: WrapperError) -> Failure {
    if e.is_usage() {
        Failure::usage(e)
    } else {
        Failure::failed(e)
    }
}

/// A resolved path operand.
#[derive(Debug, Clone)]
struct Resolved {
    /// The path as the wrapper names it.
    logical: String,
    /// The store path it is in, if any.
    store_path: Option<AbsStorePath>,
}

/// Resolves operands against the inputs and (without --tree) the store.
struct Resolver<'a> {
    inputs: &'a [PathInfo],
    store: Option<&'a Store>,
}

impl Resolver<'_> {
    /// `@NAME[/SUB]` or an absolute path.
    fn resolve(&self, what: &str, text: &str) -> Result<Resolved, Failure> {
        if let Some(reference) = text.strip_prefix('@') {
            let (name, sub) = match reference.find('/') {
                Some(i) => (&reference[..i], &reference[i..]),
                None => (reference, ""),
            };
            let input = self.pick(what, name)?;
            return Ok(Resolved {
                logical: format!("{}{sub}", input.path),
                store_path: Some(input.path.clone()),
            });
        }
        if !text.starts_with('/') {
            return Err(Failure::usage(format!(
                "{what}: '{text}' is neither an absolute path nor @NAME"
            )));
        }
        Ok(Resolved {
            logical: text.to_string(),
            store_path: self.store_path_of(text),
        })
    }

    /// Like [`Resolver::resolve`], but a relative path (a local file) is allowed.
    fn resolve_file(&self, what: &str, text: &str) -> Result<Resolved, Failure> {
        if text.starts_with('@') || text.starts_with('/') {
            return self.resolve(what, text);
        }
        Ok(Resolved {
            logical: text.to_string(),
            store_path: None,
        })
    }

    /// The input named `name`: exactly, else `name` followed by `-` and a version.
    fn pick(&self, what: &str, name: &str) -> Result<&PathInfo, Failure> {
        let exact: Vec<&PathInfo> = self
            .inputs
            .iter()
            .filter(|i| i.path.path.name() == name)
            .collect();
        let found = if exact.is_empty() {
            self.inputs
                .iter()
                .filter(|i| is_name_with_version(i.path.path.name(), name))
                .collect()
        } else {
            exact
        };
        let distinct: BTreeSet<&AbsStorePath> = found.iter().map(|i| &i.path).collect();
        match distinct.len() {
            1 => Ok(found[0]),
            0 => Err(Failure::usage(format!(
                "{what}: no --inputs path is named '{name}'"
            ))),
            _ => Err(Failure::usage(format!(
                "{what}: '{name}' names several --inputs paths: {}",
                distinct
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The store path an absolute path is in, when a store is used and it is in its dir.
    fn store_path_of(&self, text: &str) -> Option<AbsStorePath> {
        let store = self.store?;
        let (path, _) = store.store_dir().parse_path_prefix(text).ok()?;
        Some(store.abs(&path))
    }

    /// With a store, the operand must be inside it (the closure must be complete).
    fn require_store_path(&self, what: &str, r: &Resolved) -> Result<(), Failure> {
        match (self.store, &r.store_path) {
            (Some(store), None) => Err(Failure::usage(format!(
                "{what}: '{}' is not in the store '{}' (use --tree to wrap paths outside it)",
                r.logical,
                store.store_dir()
            ))),
            _ => Ok(()),
        }
    }

    /// Where a logical path's files are now: under the store root for store paths.
    fn physical_of(&self, text: &str) -> PathBuf {
        if let Some(store) = self.store
            && let Ok((path, rest)) = store.store_dir().parse_path_prefix(text)
        {
            return physical_in(store, &path, rest);
        }
        PathBuf::from(text)
    }

    fn physical(&self, r: &Resolved) -> PathBuf {
        self.physical_of(&r.logical)
    }

    /// Like nixpkgs' assertExecutable: a regular file with an execute bit.
    fn require_executable(&self, what: &str, logical: &str) -> Result<(), Failure> {
        let physical = self.physical_of(logical);
        let ok = std::fs::metadata(&physical)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false);
        if ok {
            Ok(())
        } else {
            Err(Failure::failed(format!(
                "{what}: cannot wrap '{logical}': not an executable file"
            )))
        }
    }
}

fn physical_in(store: &Store, path: &StorePath, rest: &str) -> PathBuf {
    let base = store.physical_path(path);
    match rest.trim_start_matches('/') {
        "" => base,
        rest => base.join(rest),
    }
}
