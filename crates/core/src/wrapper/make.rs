//! What `mkwrapper` does, as one call: parse the makeWrapper flags, load the input manifests,
//! resolve and check the operands, build the wrapper and then print its script, write its
//! tree, or add it to the store. The tool only maps its flags to a [`Request`].

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::flags::{Flag, FlagError, parse_flags};
use super::operands::{InstallError, Installed, Operand, OperandError, Resolver, install};
use super::{JavaApp, JavaMain, JavaWrapper, PlainWrapper, Wrapper, WrapperError};
use crate::exit::Exit;
use crate::manifest::{Inputs, ManifestError};
use crate::nix::store_path::{AbsStorePath, StoreDir};
use crate::store::{Store, StoreError};

/// The kind of wrapper, with its own operands (as given: paths, `@NAME`s or manifests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// `bin/NAME` execs `original`.
    Plain { original: String, name: String },
    /// A Java application: the jar copied (or referenced) and `bin/NAME` running the JRE.
    Java(JavaLayout),
}

/// The Java layout's operands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JavaLayout {
    pub jre: String,
    pub jar: String,
    pub name: String,
    pub version: String,
    pub main_class: Option<String>,
    pub classpath: Vec<String>,
    pub jvm_flags: Vec<String>,
}

/// One `mkwrapper` invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub layout: Layout,
    /// The bash package; the shebang is `BASH/bin/bash`.
    pub bash: String,
    /// Path-info manifests (`-` is stdin): reference candidates and what `@NAME` picks from.
    pub inputs: Vec<String>,
    /// makeWrapper flags, unparsed.
    pub flags: Vec<String>,
    /// Write the tree here instead of adding it to the store.
    pub tree: Option<PathBuf>,
    /// Write nothing: only compute the script (and, with a store, the path).
    pub dry_run: bool,
}

/// What was made.
#[derive(Debug, Clone)]
pub enum Made {
    /// A dry run of a tree: the script it would hold.
    Script(String),
    /// The tree was written.
    Tree,
    /// Added to the store (or, for a dry run, only named).
    Installed(Installed),
}

/// Why a wrapper cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum MakeError {
    #[error(transparent)]
    Flag(#[from] FlagError),
    #[error("{what}: {source}")]
    Manifest {
        what: &'static str,
        source: ManifestError,
    },
    #[error(transparent)]
    Operand(#[from] OperandError),
    #[error(transparent)]
    Wrapper(#[from] WrapperError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}: {source}", path.display())]
    Tree {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--tree: the directory name is not UTF-8")]
    TreeNotUtf8,
}

impl Exit for MakeError {
    fn is_usage(&self) -> bool {
        match self {
            MakeError::Flag(_) | MakeError::TreeNotUtf8 => true,
            MakeError::Manifest { source, .. } => source.is_usage(),
            MakeError::Operand(e) => e.is_usage(),
            MakeError::Wrapper(e) => e.is_usage(),
            MakeError::Store(_) | MakeError::Tree { .. } => false,
        }
    }
}

impl From<InstallError> for MakeError {
    fn from(e: InstallError) -> MakeError {
        match e {
            InstallError::Wrapper(e) => MakeError::Wrapper(e),
            InstallError::Store(e) => MakeError::Store(e),
        }
    }
}

/// Where the store is, asked for only when needed (and in this order), so that what the
/// command line alone can refuse is refused first.
pub trait StoreAccess {
    type Error: From<MakeError>;
    /// The logical store dir, checked.
    fn store_dir(&self) -> Result<StoreDir, Self::Error>;
    /// The store, opened.
    fn open(&self) -> Result<Store, Self::Error>;
}

/// Make the wrapper `request` asks for.
pub fn make<A: StoreAccess>(request: &Request, access: &A) -> Result<Made, A::Error> {
    let mut flags = parse_flags(&request.flags).map_err(MakeError::from)?;
    let store_dir = access.store_dir()?;
    let args = Args::load(request, &store_dir)?;
    // The store's files are read (under its root) also when a plain tree is written.
    let root = access.open()?;
    let store = request.tree.is_none().then_some(&root);
    let resolver = Resolver {
        inputs: &args.inputs,
        store,
        root: Some(&root),
    };
    Ok(build(request, &args, &resolver, &mut flags)?)
}

/// The manifests, and the operands with any manifest naming one path replaced by that path.
struct Args {
    inputs: Inputs,
    bash: String,
    original: String,
    jre: String,
    classpath: Vec<String>,
}

impl Args {
    fn load(request: &Request, store_dir: &StoreDir) -> Result<Args, MakeError> {
        let mut inputs = Inputs::default();
        for file in &request.inputs {
            inputs
                .load(file, store_dir)
                .map_err(|source| MakeError::Manifest {
                    what: "--inputs",
                    source,
                })?;
        }
        // An operand may be a manifest file holding the one path meant.
        let mut operand = |what: &'static str, text: &str| -> Result<String, MakeError> {
            Ok(inputs
                .load_operand(text, store_dir)
                .map_err(|source| MakeError::Manifest { what, source })?
                .unwrap_or_else(|| text.to_string()))
        };
        let bash = operand("--bash", &request.bash)?;
        let (original, jre, classpath) = match &request.layout {
            Layout::Plain { original, .. } => (operand("ORIGINAL", original)?, "".into(), vec![]),
            Layout::Java(java) => {
                let classpath = java
                    .classpath
                    .iter()
                    .map(|c| operand("--classpath", c))
                    .collect::<Result<Vec<_>, _>>()?;
                (String::new(), operand("--jre", &java.jre)?, classpath)
            }
        };
        Ok(Args {
            inputs,
            bash,
            original,
            jre,
            classpath,
        })
    }
}

/// Resolve the operands, build the wrapper and write it where the request says.
fn build(
    request: &Request,
    args: &Args,
    resolver: &Resolver<'_>,
    flags: &mut Vec<Flag>,
) -> Result<Made, MakeError> {
    for flag in flags.iter_mut() {
        flag.expand_values(&mut |v| resolver.expand_value(v))?;
    }
    let bash = resolver.resolve("--bash", &args.bash)?;
    let shell = format!("{}/bin/bash", bash.logical);
    resolver.require_store_path("--bash", &bash)?;
    resolver.require_executable("--bash", &shell)?;
    let flags = std::mem::take(flags);
    let (wrapper, used) = match &request.layout {
        Layout::Plain { name, .. } => {
            let original = resolver.resolve("ORIGINAL", &args.original)?;
            resolver.require_store_path("ORIGINAL", &original)?;
            resolver.require_executable("ORIGINAL", &original.logical)?;
            let wrapper = Wrapper::Plain(PlainWrapper {
                shell,
                program: original.logical.clone(),
                name: name.clone(),
                flags,
            });
            (wrapper, vec![bash, original])
        }
        Layout::Java(layout) => java(layout, args, resolver, shell, flags, bash)?,
    };
    write(request, args, resolver, &wrapper, used)
}

/// The Java layout's wrapper, and the operands it uses.
fn java(
    layout: &JavaLayout,
    args: &Args,
    resolver: &Resolver<'_>,
    shell: String,
    flags: Vec<Flag>,
    bash: Operand,
) -> Result<(Wrapper, Vec<Operand>), MakeError> {
    let JavaLayout {
        jre: jre_given,
        jar,
        name,
        version,
        main_class,
        jvm_flags,
        ..
    } = layout;
    let jre = resolver.resolve("--jre", &args.jre)?;
    resolver.require_store_path("--jre", &jre)?;
    let java = format!("{}/bin/java", jre.logical);
    resolver.require_jre("--jre", &jre.logical, jre_given)?;
    let jar = resolver.resolve_file("--jar", jar)?;
    let mut used = vec![bash, jre];
    let main = match main_class {
        None => JavaMain::Jar,
        Some(class) => {
            let mut classpath = Vec::new();
            for entry in &args.classpath {
                let entry = resolver.resolve("--classpath", entry)?;
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
            name: name.clone(),
            version: version.clone(),
            java,
            main,
            jvm_flags: jvm_flags.clone(),
        },
        jar: resolver.physical(&jar),
        // A jar already in the store is referenced, not copied.
        jar_in_store: resolver
            .store
            .and(jar.store_path.as_ref())
            .map(|_| jar.logical.clone()),
        flags,
    });
    used.push(jar);
    Ok((wrapper, used))
}

/// Print, write or install the wrapper.
fn write(
    request: &Request,
    args: &Args,
    resolver: &Resolver<'_>,
    wrapper: &Wrapper,
    used: Vec<Operand>,
) -> Result<Made, MakeError> {
    let mut read = |file: &str| super::read_contents_file(&resolver.physical_of(file));
    match (&request.tree, resolver.store.or(resolver.root)) {
        (Some(dir), _) => {
            let out = std::path::absolute(dir).map_err(|source| MakeError::Tree {
                path: dir.clone(),
                source,
            })?;
            let out_text = out.to_str().ok_or(MakeError::TreeNotUtf8)?;
            if request.dry_run {
                return Ok(Made::Script(wrapper.script(out_text, &mut read)?));
            }
            wrapper.generate(out_text, &out, &mut read)?;
            Ok(Made::Tree)
        }
        (None, Some(store)) => {
            let mut candidates: BTreeSet<AbsStorePath> =
                args.inputs.infos().iter().map(|i| i.path.clone()).collect();
            candidates.extend(used.into_iter().filter_map(|r| r.store_path));
            let installed = install(store, wrapper, &candidates, &mut read, request.dry_run)?;
            Ok(Made::Installed(installed))
        }
        // The store is always opened (its files are read also for a tree).
        (None, None) => Err(MakeError::Store(StoreError::Invalid("no store".into()))),
    }
}
