//! The pre-flight checks that an image's config holds together with its files, so that an
//! image that cannot start does not build (instead of a `docker run` failing with `exec
//! /bin/app: no such file or directory`):
//!
//! - [`check_config_paths`]: store paths named in `Cmd`, `Entrypoint` or `Env` are in the
//!   layers (nixpkgs puts them in the closure);
//! - the start check (`StartCheck`): the entrypoint (`Entrypoint` + `Cmd[0]`, a bare name
//!   looked up in `PATH`) is, in the image's root filesystem (symlinks resolved inside it),
//!   an executable regular file; a script's `#!` interpreter is there (and for `env`, the program it runs); an ELF's loader
//!   is there and its libraries resolve as the loader would find them (`DT_RPATH`,
//!   `LD_LIBRARY_PATH`, `DT_RUNPATH` with `$ORIGIN`, `/etc/ld.so.conf`, the default and
//!   multiarch directories), recursively and bounded.
//!
//! - the machine check (`StartCheck::foreign_elf`): every ELF file in the layers' store paths
//!   is for the image's architecture, so that an amd64 library in an arm64 image (a closure
//!   mixed from two architectures' packages) does not build into an image that fails at run
//!   time, or worse, runs a different program than the one meant.
//!
//! A failure is one line naming the missing file, who needs it, and when the store has one,
//! the store path that provides it.

use std::collections::{BTreeSet, VecDeque};

use super::ImageError;
use super::beneath::{open_dir_below, open_entry, open_root};
use super::check::{ARCHITECTURES, architecture_machine};
use super::config::ContainerConfig;
use super::elf::{self, ElfInfo};
use super::rootfs::{Found, ImageFs, read_head};
use crate::store::Store;

/// `PATH` when the config sets none (Docker's and runc's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Nested `#!` interpreters the kernel allows.
const MAX_INTERPRETERS: usize = 4;
/// Libraries looked at for one entrypoint.
const MAX_LIBRARIES: usize = 1024;
/// Bytes of a `#!` line the kernel reads.
const SHEBANG_MAX: usize = 256;
/// `/etc/ld.so.conf` and each `/etc/ld.so.conf.d/*.conf` file read, and how many of those.
const MAX_CONF: usize = 64 << 10;
const MAX_CONF_FILES: usize = 64;

/// The store paths a config names in `Cmd`, `Entrypoint` and `Env` must be in `layers`
/// (their base names); the first that is not fails the build.
pub fn check_config_paths(
    store_dir: &str,
    config: &ContainerConfig,
    layers: &BTreeSet<String>,
) -> Result<(), ImageError> {
    let pattern = format!(
        "{}/([0-9a-df-np-sv-z]{{32}}-[A-Za-z0-9+._?=-]+)",
        regex::escape(store_dir)
    );
    let re = regex::Regex::new(&pattern).map_err(|e| ImageError::Invalid(e.to_string()))?;
    let fields = [
        ("Entrypoint", &config.entrypoint),
        ("Cmd", &config.cmd),
        ("Env", &config.env),
    ];
    for (field, values) in fields {
        for value in values.iter().flatten() {
            for cap in re.captures_iter(value) {
                let base = cap[1].trim_end_matches('.');
                if !layers.contains(base) {
                    let path = format!("{store_dir}/{base}");
                    return Err(ImageError::Invalid(format!(
                        "{field} '{value}' names {path}, which is in no layer; add it to the closure: store-query closure {path} … | mklayers"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Whether the config names something to start (`Entrypoint` or `Cmd`).
pub fn has_command(config: &ContainerConfig) -> bool {
    config
        .entrypoint
        .iter()
        .chain(&config.cmd)
        .any(|v| !v.is_empty())
}

/// The value of the last `NAME=` entry of `Env`.
fn env_value<'a>(config: &'a ContainerConfig, name: &str) -> Option<&'a str> {
    config
        .env
        .iter()
        .flatten()
        .rev()
        .find_map(|e| e.strip_prefix(name)?.strip_prefix('='))
}

fn triplet_of(machine: u16) -> Option<&'static str> {
    ARCHITECTURES
        .into_iter()
        .filter_map(architecture_machine)
        .find(|(m, _)| *m == machine)
        .map(|(_, t)| t)
}

/// `e_machine` of a file that starts like an ELF file (`None`: not ELF, or too short).
fn elf_machine(path: &std::path::Path) -> Result<Option<u16>, ImageError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(ImageError::io(path))?;
    let head = read_head(&file, 20).map_err(ImageError::io(path))?;
    if !elf::is_elf(&head) || head.len() < 20 {
        return Ok(None);
    }
    let bytes = [head[18], head[19]];
    Ok(Some(match head[5] {
        2 => u16::from_be_bytes(bytes),
        _ => u16::from_le_bytes(bytes),
    }))
}

/// An ELF machine for messages: the image architecture it is, or its number.
fn machine_name(machine: u16) -> String {
    ARCHITECTURES
        .into_iter()
        .find(|a| architecture_machine(a).is_some_and(|(m, _)| m == machine))
        .map_or_else(|| format!("machine {machine}"), str::to_string)
}

/// `dir/name`, with `.` and `..` taken out lexically (for messages and store look-ups).
fn join(dir: &str, name: &str) -> String {
    let dir = if name.starts_with('/') { "" } else { dir };
    let mut parts: Vec<&str> = Vec::new();
    for c in dir.split('/').chain(name.split('/')) {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("/", |(d, _)| d)
}

/// What the build is checked against.
pub(crate) struct StartCheck<'a> {
    pub fs: &'a ImageFs,
    pub store: &'a Store,
    /// Base names of the layers' store paths.
    pub layers: &'a BTreeSet<String>,
    pub config: &'a ContainerConfig,
    pub architecture: &'a str,
}

/// An ELF object on the way: where it is, who needs it, its `$ORIGIN`.
struct Object {
    path: String,
    origin: String,
    info: ElfInfo,
}

impl StartCheck<'_> {
    /// Check that the image's entrypoint can start; nothing to start is fine (a base image).
    pub(crate) fn run(&self) -> Result<(), ImageError> {
        self.foreign_elf()?;
        let argv: Vec<&String> = self
            .config
            .entrypoint
            .iter()
            .flatten()
            .chain(self.config.cmd.iter().flatten())
            .collect();
        let Some(first) = argv.first() else {
            return Ok(());
        };
        let path = self.command(first, "the entrypoint")?;
        self.program(&path, "the entrypoint", 0)
    }

    /// The first ELF file (in store path, then file name order) in the layers' store paths
    /// whose `e_machine` is not the image's. Files are opened without following symlinks;
    /// only their first 20 bytes are read.
    fn foreign_elf(&self) -> Result<(), ImageError> {
        let Some((want, _)) = architecture_machine(self.architecture) else {
            return Ok(());
        };
        let physical = self.store.physical_store_dir();
        let store_dir = self.store.store_dir().as_str();
        for base in self.layers {
            let top = physical.join(base);
            let walk = walkdir::WalkDir::new(&top)
                .follow_links(false)
                .sort_by_file_name();
            for entry in walk {
                let entry = entry.map_err(|e| {
                    let path = e.path().unwrap_or(&top).to_path_buf();
                    ImageError::io(&path)(e.into())
                })?;
                if !entry.file_type().is_file() {
                    continue;
                }
                let Some(machine) = elf_machine(entry.path())? else {
                    continue;
                };
                if machine != want {
                    let rel = entry.path().strip_prefix(&physical).unwrap_or(entry.path());
                    return Err(ImageError::Invalid(format!(
                        "{store_dir}/{} is an ELF file for {}, not for the image's architecture {} \
                         (--no-start-check builds it anyway)",
                        rel.display(),
                        machine_name(machine),
                        self.architecture
                    )));
                }
            }
        }
        Ok(())
    }

    fn path_dirs(&self) -> Vec<&str> {
        env_value(self.config, "PATH")
            .unwrap_or(DEFAULT_PATH)
            .split(':')
            .filter(|d| !d.is_empty())
            .collect()
    }

    fn workdir(&self) -> &str {
        self.config.working_dir.as_deref().unwrap_or("/")
    }

    /// The image path a command runs: a path (relative to WorkingDir), or a name in PATH.
    fn command(&self, name: &str, role: &str) -> Result<String, ImageError> {
        if name.contains('/') {
            return Ok(join(self.workdir(), name));
        }
        let dirs = self.path_dirs();
        for dir in &dirs {
            let candidate = join(dir, name);
            if let Some(Found::File { .. }) = self.fs.resolve(&candidate)? {
                return Ok(candidate);
            }
        }
        let candidates: Vec<String> = dirs.iter().map(|d| join(d, name)).collect();
        let provider = self.provider(&candidates);
        Err(self.cannot_start(&format!(
            "'{name}' ({role}) is in no directory of PATH={}{}",
            dirs.join(":"),
            provided(provider.as_ref(), name)
        )))
    }

    fn cannot_start(&self, what: &str) -> ImageError {
        ImageError::Invalid(format!(
            "the image cannot start: {what} (--no-start-check builds it anyway)"
        ))
    }

    /// `path` is an executable regular file: a script whose interpreter is there, or an ELF
    /// whose loader and libraries are.
    fn program(&self, path: &str, role: &str, depth: usize) -> Result<(), ImageError> {
        let (file, stat, real) = match self.fs.resolve(path)? {
            Some(Found::File { file, stat, path }) => (file, stat, path),
            Some(_) => {
                return Err(self.cannot_start(&format!("{path} ({role}) is not a regular file")));
            }
            None => return Err(self.not_in_image(path, role, &[path.to_string()])),
        };
        if stat.st_mode & 0o111 == 0 {
            return Err(self.cannot_start(&format!(
                "{path} ({role}) is not executable (mode {:04o})",
                stat.st_mode & 0o7777
            )));
        }
        let head = read_head(&file, SHEBANG_MAX).map_err(ImageError::io(path.as_ref()))?;
        if head.starts_with(b"#!") {
            return self.script(path, &head, depth);
        }
        if !elf::is_elf(&head) {
            return Err(self.cannot_start(&format!(
                "{path} ({role}) is neither an ELF executable nor a script starting with #!"
            )));
        }
        let info = elf::read(&file, stat.st_size as u64).map_err(|e| {
            self.cannot_start(&format!("{path} ({role}): not a valid ELF file: {e}"))
        })?;
        self.elf(
            &Object {
                path: path.to_string(),
                origin: parent(&real).to_string(),
                info,
            },
            role,
        )
    }

    /// A `#!` script: its interpreter, and for `env`, the program it runs.
    fn script(&self, path: &str, head: &[u8], depth: usize) -> Result<(), ImageError> {
        let line = head[2..].split(|b| *b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let line = line.trim_matches(|c| c == ' ' || c == '\t' || c == '\r');
        let (interp, arg) = line
            .split_once([' ', '\t'])
            .map_or((line, ""), |(i, a)| (i, a.trim()));
        if interp.is_empty() {
            return Err(self.cannot_start(&format!("{path} has an empty #! line")));
        }
        if depth >= MAX_INTERPRETERS {
            return Err(self.cannot_start(&format!(
                "{path}: more than {MAX_INTERPRETERS} levels of #! interpreters"
            )));
        }
        let interp_path = join(self.workdir(), interp);
        let role = format!("the interpreter of {path}");
        self.program(&interp_path, &role, depth + 1)?;
        if interp.rsplit('/').next() != Some("env") {
            return Ok(());
        }
        let args = arg.strip_prefix("-S").unwrap_or(arg);
        let Some(prog) = args
            .split_whitespace()
            .find(|a| !a.starts_with('-') && !a.contains('='))
        else {
            return Ok(());
        };
        let role = format!("run by {interp} in {path}");
        let prog_path = self.command(prog, &role)?;
        self.program(&prog_path, &role, depth + 1)
    }

    /// An ELF program: right machine, loader present, libraries found (recursively).
    fn elf(&self, exe: &Object, role: &str) -> Result<(), ImageError> {
        if let Some((want, _)) = architecture_machine(self.architecture)
            && exe.info.machine != want
        {
            return Err(self.cannot_start(&format!(
                "{} ({role}) is an ELF file for {}, not for {}",
                exe.path,
                machine_name(exe.info.machine),
                self.architecture
            )));
        }
        let Some(interp) = exe.info.interp.clone() else {
            return Ok(()); // static
        };
        let loader_role = format!("the loader of {}", exe.path);
        match self.fs.resolve(&interp)? {
            Some(Found::File { .. }) => {}
            Some(_) => {
                return Err(
                    self.cannot_start(&format!("{interp} ({loader_role}) is not a regular file"))
                );
            }
            None => {
                return Err(self.not_in_image(
                    &interp,
                    &loader_role,
                    std::slice::from_ref(&interp),
                ));
            }
        }
        self.libraries(exe)
    }

    /// Every library `exe` needs, breadth first, each name once, at most [`MAX_LIBRARIES`].
    fn libraries(&self, exe: &Object) -> Result<(), ImageError> {
        let conf = self.ld_so_conf_dirs()?;
        let mut seen: BTreeSet<String> = BTreeSet::new();
        // (library, index in `objects` of who needs it; None: the executable)
        let mut queue: VecDeque<(String, Option<usize>)> = VecDeque::new();
        let mut objects: Vec<Object> = Vec::new();
        queue.extend(exe.info.needed.iter().map(|n| (n.clone(), None)));
        while let Some((name, needer)) = queue.pop_front() {
            if !seen.insert(name.clone()) {
                continue;
            }
            if seen.len() > MAX_LIBRARIES {
                return Err(self.cannot_start(&format!(
                    "{} needs more than {MAX_LIBRARIES} libraries",
                    exe.path
                )));
            }
            let by = needer.map_or(exe, |i| &objects[i]);
            let dirs = self.search_dirs(by, exe, &conf);
            let Some(found) = self.find_library(&name, &dirs, exe.info.machine, exe.info.is_64)?
            else {
                return Err(self.library_missing(&name, &by.path, &dirs));
            };
            let index = objects.len();
            queue.extend(found.info.needed.iter().map(|n| (n.clone(), Some(index))));
            objects.push(found);
        }
        Ok(())
    }

    fn library_missing(&self, name: &str, needer: &str, dirs: &[String]) -> ImageError {
        let candidates: Vec<String> = dirs.iter().map(|d| join(d, name)).collect();
        let role = format!("needed by {needer}");
        match self.provider(&candidates) {
            Some((store_path, at)) => self.cannot_start(&format!(
                "{at} ({role}) is not in the image; {store_path} provides it"
            )),
            None => self.cannot_start(&format!(
                "{name} ({role}) is not in the image (looked in {})",
                dirs.join(", ")
            )),
        }
    }

    /// Where the loader looks for a library `obj` needs: `DT_RPATH` (the object's, then the
    /// executable's) unless it has `DT_RUNPATH`, `LD_LIBRARY_PATH`, `DT_RUNPATH`, the
    /// directories of `/etc/ld.so.conf`, then the defaults (multiarch first).
    fn search_dirs(&self, obj: &Object, exe: &Object, conf: &[String]) -> Vec<String> {
        let expand = |d: &String, origin: &str| -> Option<String> {
            let d = d.replace("${ORIGIN}", origin).replace("$ORIGIN", origin);
            (!d.contains('$')).then(|| join(self.workdir(), &d))
        };
        let mut dirs: Vec<String> = Vec::new();
        if obj.info.runpath.is_empty() {
            dirs.extend(obj.info.rpath.iter().filter_map(|d| expand(d, &obj.origin)));
            if !std::ptr::eq(obj, exe) {
                dirs.extend(exe.info.rpath.iter().filter_map(|d| expand(d, &exe.origin)));
            }
        }
        let ld_path = env_value(self.config, "LD_LIBRARY_PATH").unwrap_or("");
        dirs.extend(
            ld_path
                .split([':', ';'])
                .filter(|d| !d.is_empty())
                .map(|d| join(self.workdir(), d)),
        );
        dirs.extend(
            obj.info
                .runpath
                .iter()
                .filter_map(|d| expand(d, &obj.origin)),
        );
        dirs.extend(conf.iter().cloned());
        if let Some(t) = triplet_of(exe.info.machine) {
            dirs.push(format!("/lib/{t}"));
            dirs.push(format!("/usr/lib/{t}"));
        }
        dirs.extend(["/lib".to_string(), "/usr/lib".to_string()]);
        let mut seen = BTreeSet::new();
        dirs.retain(|d| seen.insert(d.clone()));
        dirs
    }

    /// The first `dir/name` that is an ELF file of the executable's machine and class.
    fn find_library(
        &self,
        name: &str,
        dirs: &[String],
        machine: u16,
        is_64: bool,
    ) -> Result<Option<Object>, ImageError> {
        let candidates: Vec<String> = if name.contains('/') {
            vec![join(self.workdir(), name)]
        } else {
            dirs.iter().map(|d| join(d, name)).collect()
        };
        for path in candidates {
            let Some(Found::File { file, stat, .. }) = self.fs.resolve(&path)? else {
                continue;
            };
            let Ok(info) = elf::read(&file, stat.st_size as u64) else {
                continue;
            };
            if info.machine == machine && info.is_64 == is_64 {
                return Ok(Some(Object {
                    origin: parent(&path).to_string(),
                    path,
                    info,
                }));
            }
        }
        Ok(None)
    }

    /// Directories named in the image's `/etc/ld.so.conf` and `/etc/ld.so.conf.d/*.conf`.
    fn ld_so_conf_dirs(&self) -> Result<Vec<String>, ImageError> {
        let mut files = vec!["/etc/ld.so.conf".to_string()];
        if let Some(Found::Dir(view)) = self.fs.resolve("/etc/ld.so.conf.d")? {
            files.extend(
                self.fs
                    .list(&view)
                    .into_iter()
                    .filter_map(|n| String::from_utf8(n).ok())
                    .filter(|n| n.ends_with(".conf"))
                    .take(MAX_CONF_FILES)
                    .map(|n| format!("/etc/ld.so.conf.d/{n}")),
            );
        }
        let mut dirs = Vec::new();
        for f in files {
            let Some(Found::File { file, .. }) = self.fs.resolve(&f)? else {
                continue;
            };
            let text = read_head(&file, MAX_CONF).map_err(ImageError::io(f.as_ref()))?;
            for line in String::from_utf8_lossy(&text).lines() {
                let line = line.split('#').next().unwrap_or_default().trim();
                if line.starts_with('/') {
                    dirs.push(join("/", line));
                }
            }
        }
        Ok(dirs)
    }

    fn not_in_image(&self, path: &str, role: &str, candidates: &[String]) -> ImageError {
        let provider = self.provider(candidates);
        self.cannot_start(&format!(
            "{path} ({role}) is not in the image{}",
            provided(provider.as_ref(), path)
        ))
    }

    /// A valid store path that has one of `candidates` (image paths), and where: a store
    /// path outside the layers named by the path itself, or one whose tree holds it at that
    /// place (as `--contents` would put it). Looked up without following symlinks.
    fn provider(&self, candidates: &[String]) -> Option<(String, String)> {
        let store_dir = self.store.store_dir().as_str();
        let top = open_root(&self.store.physical_store_dir()).ok()?;
        let exists = |base: &str, rel: &str| -> bool {
            let rel = std::path::Path::new(base).join(rel.trim_start_matches('/'));
            let (Some(dir), Some(name)) = (rel.parent(), rel.file_name()) else {
                return false;
            };
            open_dir_below(&top, dir).is_ok_and(|d| open_entry(&d, name).is_ok())
        };
        for c in candidates {
            if let Some(rest) = c.strip_prefix(&format!("{store_dir}/")) {
                let (base, tail) = rest.split_once('/').unwrap_or((rest, ""));
                let valid = self.store.parse_user_path(&format!("{store_dir}/{base}"));
                if valid.is_ok_and(|p| matches!(self.store.query(&p), Ok(Some(_))))
                    && !self.layers.contains(base)
                    && (tail.is_empty() || exists(base, tail))
                {
                    return Some((format!("{store_dir}/{base}"), c.clone()));
                }
            }
        }
        let mut paths = self.store.list().ok()?;
        paths.sort();
        for p in paths {
            let base = p.base_name();
            if let Some(c) = candidates
                .iter()
                .find(|c| !c.starts_with(store_dir) && exists(&base, c))
            {
                return Some((format!("{store_dir}/{base}"), c.clone()));
            }
        }
        None
    }
}

/// `; /nix/store/…-libc6 provides it`, with where when that is not `shown`.
fn provided(provider: Option<&(String, String)>, shown: &str) -> String {
    match provider {
        Some((store_path, at)) if at == shown => format!("; {store_path} provides it"),
        Some((store_path, at)) => format!("; {store_path} provides it (at {at})"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_store_paths_must_be_in_the_layers() {
        let jre = "0c0dw6xj05x0gnskxbg8g1xbajbv2gqn-jre-17";
        let layers: BTreeSet<String> = [jre.to_string()].into();
        let mut config = ContainerConfig {
            env: Some(vec![format!("PATH=/nix/store/{jre}/bin:/bin")]),
            cmd: Some(vec![
                "bash".into(),
                "-c".into(),
                format!("/nix/store/{jre}/bin/java"),
            ]),
            ..ContainerConfig::default()
        };
        check_config_paths("/nix/store", &config, &layers).unwrap();
        let app = "1c0dw6xj05x0gnskxbg8g1xbajbv2gqn-app";
        config.cmd = Some(vec![
            "bash".into(),
            "-c".into(),
            format!("\"/nix/store/{app}/bin/app\""),
        ]);
        let e = check_config_paths("/nix/store", &config, &layers)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("names /nix/store/{app},")) && e.contains("Cmd"),
            "{e}"
        );
    }

    #[test]
    fn paths_join_lexically_and_env_takes_the_last_value() {
        assert_eq!(
            join("/nix/store/x/bin", "../lib/libc.so.6"),
            "/nix/store/x/lib/libc.so.6"
        );
        assert_eq!(join("/srv", "/bin/app"), "/bin/app");
        assert_eq!(join("/srv", "./app"), "/srv/app");
        let config = ContainerConfig {
            env: Some(vec!["PATH=/a".into(), "PATHX=/c".into(), "PATH=/b".into()]),
            ..ContainerConfig::default()
        };
        assert_eq!(env_value(&config, "PATH"), Some("/b"));
        assert_eq!(triplet_of(183), Some("aarch64-linux-gnu"));
    }
}
