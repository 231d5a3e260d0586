//! Command-line plumbing every tool uses: the store location flags, reading `-` / files,
//! printing JSON lines, and turning errors into one line on stderr with exit code 1 (failure)
//! or 2 (usage).

use std::fmt::Display;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::collections::BTreeSet;

use strata_core::exit::Exit;
use strata_core::manifest::{ManifestError, resolve_path_args};
use strata_core::nix::path_info::{PathInfo, parse_path_infos};
use strata_core::nix::store_path::{StoreDir, StorePath};
use strata_core::registry::auth::{Credentials, find_credentials};
use strata_core::registry::client::DEFAULT_TIMEOUT;
use strata_core::registry::push::Transport;
use strata_core::registry::{BlobAction, BlobReport, Reference};
use strata_core::store::{Store, StoreConfig};

/// Where the store is: shared by every tool that reads or writes it.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Physical root the store's files live under (default: $XDG_DATA_HOME/strata or
    /// ~/.local/share/strata).
    #[arg(long, env = "STRATA_STORE_ROOT", value_name = "DIR", global = true)]
    pub store_root: Option<PathBuf>,
    /// Logical store directory, part of every store path and hash.
    #[arg(
        long,
        env = "STRATA_STORE_DIR",
        value_name = "DIR",
        global = true,
        default_value = "/nix/store"
    )]
    pub store_dir: String,
    /// fsync every file of a new store path before it becomes valid (survives power loss;
    /// slower). Also STRATA_FSYNC=1.
    #[arg(long, global = true)]
    pub fsync: bool,
}

impl StoreArgs {
    /// The logical store dir, checked, without opening the store.
    pub fn store_dir(&self) -> Result<StoreDir, Failure> {
        StoreDir::new(&self.store_dir)
            .map_err(|e| Failure::usage(format!("--store-dir '{}': {e}", self.store_dir)))
    }

    pub fn open(&self) -> Result<Store, Failure> {
        // A store dir that is not absolute and canonical is a usage error (exit 2).
        self.store_dir()?;
        let mut config =
            StoreConfig::from_env_and_flags(Some(self.store_dir.clone()), self.store_root.clone())
                .map_err(Failure::from)?;
        config.sync_contents |= self.fsync;
        Store::open(config).map_err(Failure::from)
    }
}

/// How to reach a registry and prove who we are: shared by `push-image` and `mkimage --push`.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// Use plain HTTP even for a registry that is not on loopback.
    #[arg(long, conflicts_with = "tls")]
    pub plain_http: bool,
    /// Use TLS even for a loopback registry.
    #[arg(long)]
    pub tls: bool,
    /// User name; the password is read from stdin (--password-stdin).
    #[arg(long, requires = "password_stdin", value_name = "USER")]
    pub username: Option<String>,
    /// Read the password (or token) from stdin, with --username.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// How long the registry may take, in seconds: to connect, and for each request with its
    /// answer (once more for each MiB the request sends).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_TIMEOUT.as_secs(), value_parser = parse_timeout)]
    pub timeout: u64,
}

impl RegistryArgs {
    /// `--plain-http`, `--tls` or neither.
    pub fn transport(&self) -> Transport {
        if self.plain_http {
            Transport::PlainHttp
        } else if self.tls {
            Transport::Tls
        } else {
            Transport::Auto
        }
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout)
    }

    /// The credentials for `dest`: `--username` with the password on stdin, else the
    /// environment or docker's config (its credential helpers included).
    pub fn credentials(&self, dest: &Reference) -> Result<Option<Credentials>, Failure> {
        let explicit = match &self.username {
            Some(user) => {
                let mut password = String::new();
                io::stdin()
                    .read_to_string(&mut password)
                    .map_err(|e| Failure::failed(format!("stdin: {e}")))?;
                let password = password.trim_end_matches(['\n', '\r']);
                Some(Credentials::new(user, password, "--password-stdin"))
            }
            None => None,
        };
        Ok(find_credentials(explicit, &dest.registry, &|k| {
            std::env::var(k).ok()
        })?)
    }
}

/// One line about a pushed blob: `TOOL: layer sha256:… (N bytes): uploaded M bytes`.
pub fn blob_line(tool: &str, b: &BlobReport) -> String {
    let what = match b.action {
        BlobAction::Skipped => "skipped (already there)".to_string(),
        BlobAction::Mounted => "mounted".to_string(),
        BlobAction::Uploaded => format!(
            "uploaded {} bytes{}",
            b.uploaded_bytes,
            if b.fell_back {
                " (chunks refused: monolithic)"
            } else {
                ""
            }
        ),
    };
    format!("{tool}: {} {} ({} bytes): {what}", b.kind, b.digest, b.size)
}

/// A `--chunk-size`: bytes, or with a K/M/G suffix; at least 1.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a size (bytes, or with K/M/G)"))?;
    match n.checked_mul(mult) {
        Some(0) | None => Err(format!("'{text}' is not a usable chunk size")),
        Some(v) => Ok(v),
    }
}

/// A `--timeout`: whole seconds, at least 1.
pub fn parse_timeout(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(0) | Err(_) => Err(format!("'{text}' is not a number of seconds (1 or more)")),
        Ok(secs) => Ok(secs),
    }
}

/// Why a tool stops: a failure (exit 1) or a usage error (exit 2), with a one-line message.
#[derive(Debug)]
pub enum Failure {
    Failed(String),
    Usage(String),
    /// Whoever read stdout has gone (`… | head -1`): stop quietly, with exit 0, as the
    /// reader asked for no more.
    OutputClosed,
}

/// A failure to write stdout: a closed pipe ends the tool quietly, anything else is a failure.
#[allow(clippy::needless_pass_by_value)] // `map_err` hands the error over by value
pub fn stdout_error(e: io::Error) -> Failure {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Failure::OutputClosed
    } else {
        Failure::failed(format!("stdout: {e}"))
    }
}

/// Like [`stdout_error`], for JSON written straight to stdout.
#[allow(clippy::needless_pass_by_value)] // `map_err` hands the error over by value
pub fn stdout_json_error(e: serde_json::Error) -> Failure {
    match e.io_error_kind() {
        Some(io::ErrorKind::BrokenPipe) => Failure::OutputClosed,
        _ => Failure::failed(format!("stdout: {e}")),
    }
}

impl Failure {
    pub fn usage(msg: impl Display) -> Failure {
        Failure::Usage(msg.to_string())
    }
    pub fn failed(msg: impl Display) -> Failure {
        Failure::Failed(msg.to_string())
    }
    /// The same failure, its message after `what: `.
    pub fn prefixed(self, what: &str) -> Failure {
        match self {
            Failure::Failed(m) => Failure::Failed(format!("{what}: {m}")),
            Failure::Usage(m) => Failure::Usage(format!("{what}: {m}")),
            Failure::OutputClosed => Failure::OutputClosed,
        }
    }
}

/// A failure about one input: `INPUT: message`, unless the message already names the input
/// or a file inside it (`'INPUT' does not exist`, `file 'INPUT/x' has …`), so that no line
/// says the same name twice.
pub fn about(input: impl Display, e: impl Display) -> Failure {
    let (input, message) = (input.to_string(), e.to_string());
    let named = message.contains(&format!("'{input}'"))
        || message.contains(&format!("'{input}/"))
        || message.starts_with(&format!("{input}:"));
    if named {
        Failure::Failed(message)
    } else {
        Failure::Failed(format!("{input}: {message}"))
    }
}

/// A library error keeps its exit code: `?` turns a usage error into a usage failure.
impl<E: std::error::Error + Exit> From<E> for Failure {
    fn from(e: E) -> Failure {
        if e.is_usage() {
            Failure::Usage(e.to_string())
        } else {
            Failure::Failed(e.to_string())
        }
    }
}

/// Most characters of an error line: a message quoting its input (a path, a line) quotes
/// at most this much of it, however long the input.
pub const MAX_ERROR_LINE: usize = 2000;

/// An error message as the one line printed: newlines become spaces, and a message longer
/// than [`MAX_ERROR_LINE`] characters keeps its start and its end (which say what is wrong
/// with what) around a note of how much was left out.
pub fn error_line(msg: &str) -> String {
    let line = msg.replace('\n', " ");
    let count = line.chars().count();
    if count <= MAX_ERROR_LINE {
        return line;
    }
    let (head, tail) = (MAX_ERROR_LINE * 2 / 3, MAX_ERROR_LINE / 4);
    let start: String = line.chars().take(head).collect();
    let end: String = line.chars().skip(count - tail).collect();
    format!(
        "{start} … ({} characters left out) … {end}",
        count - head - tail
    )
}

/// Run a tool's body and turn its result into an exit code, printing the error as one line.
pub fn run(tool: &str, body: impl FnOnce() -> Result<(), Failure>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let (msg, code) = match failure {
                Failure::Failed(m) => (m, 1),
                Failure::Usage(m) => (m, 2),
                Failure::OutputClosed => return ExitCode::SUCCESS,
            };
            let line = error_line(&msg);
            let _ = writeln!(io::stderr(), "{tool}: {line}");
            ExitCode::from(code)
        }
    }
}

/// Parse the arguments and run a tool's body: the whole of a tool's `main`.
pub fn main<T: clap::Parser>(tool: &str, body: impl FnOnce(T) -> Result<(), Failure>) -> ExitCode {
    match parse_args::<T>(tool) {
        Ok(args) => run(tool, || body(args)),
        Err(code) => code,
    }
}

/// How an input is named in messages: its path, or `stdin` for `-`.
pub fn input_name(name: &str) -> &str {
    if name == "-" { "stdin" } else { name }
}

/// A JSON error as `INPUT:LINE:COLUMN: message` (or `INPUT: message` without a position).
pub fn json_failure(name: &str, e: &serde_json::Error) -> Failure {
    let shown = input_name(name);
    let message = e.to_string();
    if e.line() == 0 {
        return Failure::failed(format!("{shown}: {message}"));
    }
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = message.strip_suffix(&suffix).unwrap_or(&message);
    Failure::failed(format!("{shown}:{}:{}: {message}", e.line(), e.column()))
}

/// `bytes` of the input `name` as UTF-8 text.
pub fn utf8<'b>(name: &str, bytes: &'b [u8]) -> Result<&'b str, Failure> {
    std::str::from_utf8(bytes)
        .map_err(|_| Failure::failed(format!("{}: not UTF-8", input_name(name))))
}

/// Read a whole input named on the command line as UTF-8 text: `-` is stdin.
pub fn read_text(name: &str) -> Result<String, Failure> {
    String::from_utf8(read_input(name)?)
        .map_err(|_| Failure::failed(format!("{}: not UTF-8", input_name(name))))
}

/// Read a whole input named on the command line: `-` is stdin; a regular file or a pipe of
/// at most [`strata_core::manifest::MAX_MANIFEST`] bytes.
pub fn read_input(name: &str) -> Result<Vec<u8>, Failure> {
    Ok(strata_core::manifest::read_input_bytes(name)?)
}

/// Read path-info JSON from an input, naming the input (and line/column) in errors.
pub fn read_path_infos(name: &str) -> Result<Vec<PathInfo>, Failure> {
    parse_path_infos(&read_text(name)?).map_err(|e| json_failure(name, &e))
}

/// Store paths from an input: path-info JSON (object, array or stream) or one path a line.
pub fn read_store_path_list(name: &str) -> Result<Vec<String>, Failure> {
    let text = read_text(name)?;
    if text.trim_start().starts_with(['{', '[']) {
        let infos = parse_path_infos(&text).map_err(|e| json_failure(name, &e))?;
        return Ok(infos.into_iter().map(|i| i.path.to_string()).collect());
    }
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// `--inputs FILE`: the path-info manifests `@NAME` references pick from.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct InputsArg {
    /// Path-info JSON (JSON lines or an array; `-` is stdin), e.g. store-add's output: what
    /// @NAME[/SUB] picks from (the input path named NAME, else NAME-VERSION). Repeatable.
    #[arg(long = "inputs", value_name = "FILE")]
    pub files: Vec<String>,
}

/// Store paths named by path arguments (store paths, manifests, `@NAME`), as the store
/// parses them; a sub-path names its store path.
pub fn store_paths(
    store: &Store,
    args: &[String],
    inputs: &InputsArg,
) -> Result<BTreeSet<StorePath>, Failure> {
    let (paths, _) =
        resolve_path_args(args, &inputs.files, store.store_dir()).map_err(manifest_failure)?;
    paths
        .iter()
        .map(|text| {
            store
                .parse_user_path(text)
                .map_err(|e| Failure::failed(format!("{text}: {e}")))
        })
        .collect()
}

/// A manifest or reference error: the command line is at fault for a bad reference (exit 2),
/// the input for a bad manifest (exit 1).
pub fn manifest_failure(e: ManifestError) -> Failure {
    Failure::from(e)
}

/// Path infos as JSON lines (compact, keys in Nix's order).
pub fn path_info_lines<'a>(infos: impl IntoIterator<Item = &'a PathInfo>) -> String {
    infos
        .into_iter()
        .map(|i| serde_json::to_string(i).unwrap_or_default() + "\n")
        .collect()
}

/// Print path infos as JSON lines (compact, keys in Nix's order).
pub fn print_path_infos<'a>(infos: impl IntoIterator<Item = &'a PathInfo>) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    out.write_all(path_info_lines(infos).as_bytes())
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// Parse clap arguments, turning clap's own errors into our exit codes (help/version: 0,
/// usage errors: 2, one line).
pub fn parse_args<T: clap::Parser>(tool: &str) -> Result<T, ExitCode> {
    match T::try_parse() {
        Ok(args) => Ok(args),
        Err(e) => match e.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                let _ = e.print();
                Err(ExitCode::SUCCESS)
            }
            clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                let _ = write!(io::stderr(), "{}", e.render());
                Err(ExitCode::from(2))
            }
            _ => {
                let text = e.to_string();
                // The message's first paragraph, on one line (clap lists missing arguments
                // on the lines after the first).
                let first = text
                    .lines()
                    .skip_while(|l| l.trim().is_empty())
                    .take_while(|l| !l.trim().is_empty())
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join(" ");
                let first = if first.is_empty() {
                    "invalid usage"
                } else {
                    first.trim_start_matches("error: ")
                };
                let _ = writeln!(io::stderr(), "{tool}: {first} (see --help)");
                Err(ExitCode::from(2))
            }
        },
    }
}

/// The one progress line of every tool: a byte count (and, for work in steps, what step it is
/// on) shown on stderr while long work runs, when stderr is a terminal; nothing at all
/// otherwise. Output printed through [`Progress::print`] clears the line first, so the two
/// never mix; the line is cleared when the guard is dropped.
#[derive(Debug)]
pub struct Progress {
    counter: Option<Arc<AtomicU64>>,
    /// What step the work is on (`layer 3/11: 5 store paths`), shown before the count.
    step: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    drawing: Arc<Mutex<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    pub fn start(tool: &'static str) -> Progress {
        Progress::counting(tool, "read")
    }

    /// The same, naming what the bytes are (`read`, `sent`).
    pub fn counting(tool: &'static str, verb: &'static str) -> Progress {
        Progress::drawn(tool, Some(verb))
    }

    /// Work in steps with no byte count: the line shows the step given to [`Progress::stage`].
    pub fn stages(tool: &'static str) -> Progress {
        Progress::drawn(tool, None)
    }

    fn drawn(tool: &'static str, verb: Option<&'static str>) -> Progress {
        use std::io::IsTerminal;
        let stop = Arc::new(AtomicBool::new(false));
        let drawing = Arc::new(Mutex::new(()));
        let step = Arc::new(Mutex::new(String::new()));
        if !io::stderr().is_terminal() {
            return Progress {
                counter: None,
                step,
                stop,
                drawing,
                thread: None,
            };
        }
        let counter = Arc::new(AtomicU64::new(0));
        let (c, st, s, d) = (counter.clone(), step.clone(), stop.clone(), drawing.clone());
        let thread = std::thread::spawn(move || {
            let started = std::time::Instant::now();
            loop {
                std::thread::sleep(std::time::Duration::from_millis(200));
                let _guard = d.lock();
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let step = st.lock().map(|t| t.clone()).unwrap_or_default();
                let count = verb.map(|verb| {
                    let mib = c.load(Ordering::Relaxed) as f64 / 1048576.0;
                    let secs = started.elapsed().as_secs_f64().max(0.001);
                    format!("{mib:.1} MiB {verb} ({:.0} MiB/s)", mib / secs)
                });
                let line = match (step.is_empty(), count) {
                    (true, Some(count)) => count,
                    (false, Some(count)) => format!("{step}, {count}"),
                    (_, None) => step,
                };
                let _ = write!(io::stderr(), "\r{tool}: {line}\x1b[K");
            }
        });
        Progress {
            counter: Some(counter),
            step,
            stop,
            drawing,
            thread: Some(thread),
        }
    }

    /// Say what step the work is on (shown from the next redraw).
    pub fn stage(&self, text: String) {
        if self.thread.is_some()
            && let Ok(mut step) = self.step.lock()
        {
            *step = text;
        }
    }

    /// The counter to hand to the library (None when nothing is shown).
    pub fn counter(&self) -> Option<Arc<AtomicU64>> {
        self.counter.clone()
    }

    /// Write to stdout, with the progress line cleared first.
    pub fn print(&self, text: &str) -> Result<(), Failure> {
        let _guard = self.drawing.lock();
        if self.counter.is_some() {
            let _ = write!(io::stderr(), "\r\x1b[K");
        }
        let mut out = io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(stdout_error)
    }
}

impl Progress {
    /// Write one line to stderr (a warning or a note), with the progress line cleared first.
    pub fn note(&self, line: &str) {
        let _guard = self.drawing.lock();
        let clear = if self.counter.is_some() {
            "\r\x1b[K"
        } else {
            ""
        };
        let _ = writeln!(io::stderr(), "{clear}{line}");
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        {
            let _guard = self.drawing.lock();
            self.stop.store(true, Ordering::Relaxed);
            if self.counter.is_some() {
                let _ = write!(io::stderr(), "\r\x1b[K");
            }
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// On SIGINT, SIGTERM or SIGHUP: kill an image build's extra commands and remove every
/// temporary file it made ([`strata_core::image::interrupted`]), then die of the signal as
/// if it had not been caught.
pub fn on_signals_clean_up() -> Result<(), Failure> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| Failure::failed(format!("cannot handle signals: {e}")))?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            strata_core::image::interrupted();
            let _ = signal_hook::low_level::emulate_default_handler(sig);
            std::process::exit(128 + sig);
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_core::manifest::ManifestError;

    fn question_mark(e: ManifestError) -> Result<(), Failure> {
        Err(e)?;
        Ok(())
    }

    #[test]
    fn an_error_line_is_one_line_and_bounded() {
        assert_eq!(error_line("a\nb"), "a b");
        let exact = "é".repeat(MAX_ERROR_LINE);
        assert_eq!(error_line(&exact), exact);
        let long = format!("path '{}' is not in the store", "é ".repeat(100_000));
        let line = error_line(&long);
        assert!(
            line.chars().count() < MAX_ERROR_LINE + 100,
            "{}",
            line.len()
        );
        assert!(line.starts_with("path 'é é"), "{line}");
        assert!(line.ends_with(" ' is not in the store"), "{line}");
        let left_out = long.chars().count() - MAX_ERROR_LINE * 2 / 3 - MAX_ERROR_LINE / 4;
        assert!(
            line.contains(&format!(" … ({left_out} characters left out) … ")),
            "{line}"
        );
    }

    #[test]
    fn the_question_mark_keeps_a_usage_error_a_usage_error() {
        let usage = question_mark(ManifestError::StdinTwice).unwrap_err();
        assert!(
            matches!(usage, Failure::Usage(ref m) if m.contains("stdin")),
            "{usage:?}"
        );
        let failure = question_mark(ManifestError::TooLarge {
            input: "m.json".into(),
            limit: 1,
        })
        .unwrap_err();
        assert!(
            matches!(failure, Failure::Failed(ref m) if m.starts_with("m.json")),
            "{failure:?}"
        );
        assert_eq!(
            format!(
                "{:?}",
                manifest_failure(ManifestError::StdinTwice).prefixed("--inputs")
            ),
            format!(
                "{:?}",
                Failure::usage("--inputs: stdin ('-') can be read only once per invocation")
            )
        );
    }
}
