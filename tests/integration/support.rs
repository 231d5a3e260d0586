//! Helpers for the integration tests: the shared reference data, running the tools, and
//! checking the one-line error contract.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub mod registry;
pub use registry::Registry;

/// A file or folder of the shared reference data; a missing one fails the test.
pub fn shared(rel: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
        .join(rel);
    assert!(
        path.exists(),
        "shared reference data missing: {} (see README)",
        path.display()
    );
    path
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A command for one of strata's tools, with a store root and nothing from the caller's env
/// that could change its behaviour.
pub fn tool(name: &str, store_root: &Path) -> Command {
    let exe = match name {
        "store-add" => env!("CARGO_BIN_EXE_store-add"),
        "store-query" => env!("CARGO_BIN_EXE_store-query"),
        "mklayers" => env!("CARGO_BIN_EXE_mklayers"),
        "mkwrapper" => env!("CARGO_BIN_EXE_mkwrapper"),
        "mkimage" => env!("CARGO_BIN_EXE_mkimage"),
        "mkindex" => env!("CARGO_BIN_EXE_mkindex"),
        "push-image" => env!("CARGO_BIN_EXE_push-image"),
        other => panic!("unknown tool {other}"),
    };
    let mut cmd = Command::new(exe);
    cmd.env_remove("STRATA_STORE_DIR")
        .env("STRATA_STORE_ROOT", store_root);
    cmd
}

/// A command to run and check, fluently:
/// `Run::tool("mklayers", root).args(["-"]).stdin(text).fails(2).stderr_has("--max-layers")`.
pub struct Run {
    cmd: Command,
    input: Vec<u8>,
}

impl Run {
    /// One of strata's tools, as [`tool`] makes it.
    pub fn tool(name: &str, store_root: &Path) -> Run {
        Run::command(tool(name, store_root))
    }

    /// Any command (a tool set up by the caller, or an external program).
    pub fn command(cmd: Command) -> Run {
        Run {
            cmd,
            input: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Run {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(mut self, args: I) -> Run {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Run {
        self.cmd.env(key, value);
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Run {
        self.cmd.current_dir(dir);
        self
    }

    /// What stdin holds (empty by default).
    pub fn stdin(mut self, input: impl AsRef<[u8]>) -> Run {
        self.input = input.as_ref().to_vec();
        self
    }

    /// Run to completion, whatever the outcome.
    pub fn output(mut self) -> Ran {
        Ran {
            out: run_with_input(&mut self.cmd, &self.input),
        }
    }

    /// Run, and assert it succeeded.
    pub fn succeeds(self) -> Ran {
        let ran = self.output();
        assert!(
            ran.out.status.success(),
            "command failed ({:?}): {}",
            ran.out.status,
            ran.stderr()
        );
        ran
    }

    /// Run, and assert the failure contract: exit `code`, nothing on stdout, exactly one line
    /// on stderr.
    pub fn fails(self, code: i32) -> Ran {
        self.output().failed(code)
    }
}

impl Ran {
    /// Assert the failure contract (see [`Run::fails`]).
    pub fn failed(self, code: i32) -> Ran {
        let ran = self;
        let stderr = ran.stderr();
        assert_eq!(
            ran.out.status.code(),
            Some(code),
            "exit code; stderr: {stderr}"
        );
        assert!(
            ran.out.stdout.is_empty(),
            "stdout on failure: {}",
            String::from_utf8_lossy(&ran.out.stdout)
        );
        assert!(
            stderr.ends_with('\n') && stderr.matches('\n').count() == 1,
            "stderr must be one line: {stderr:?}"
        );
        ran
    }
}

/// A finished command, to assert on.
pub struct Ran {
    pub out: Output,
}

impl Ran {
    /// Stdout as text.
    pub fn stdout(&self) -> String {
        String::from_utf8(self.out.stdout.clone()).expect("stdout is UTF-8")
    }

    /// Stderr as text (lossy).
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    pub fn stdout_has(self, needle: &str) -> Ran {
        let stdout = self.stdout();
        assert!(
            stdout.contains(needle),
            "stdout {stdout:?} lacks {needle:?}"
        );
        self
    }

    pub fn stderr_has(self, needle: &str) -> Ran {
        let stderr = self.stderr();
        assert!(
            stderr.contains(needle),
            "stderr {stderr:?} lacks {needle:?}"
        );
        self
    }
}

/// Run to completion with stdin from `input`.
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait for the command");
    let _ = writer.join();
    out
}

pub fn run(cmd: &mut Command) -> Output {
    run_with_input(cmd, b"")
}

/// Assert success and return stdout as text.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

/// Assert the failure contract: the exit code, nothing on stdout, exactly one line on stderr
/// that contains every one of `needles`.
pub fn fails_with(out: &Output, code: i32, needles: &[&str]) {
    let mut ran = Ran { out: out.clone() }.failed(code);
    for n in needles {
        ran = ran.stderr_has(n);
    }
}

/// The JSON objects a tool printed, one a line.
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// Run a bash script in `dir` the way the vectors' recipes are meant to run.
pub fn bash_in(dir: &Path, script: &str) {
    let status = Command::new("bash")
        .arg("-e")
        .arg("-c")
        .arg(format!("umask 022\n{script}"))
        .current_dir(dir)
        .status()
        .expect("run bash");
    assert!(status.success(), "recipe failed: {script}");
}

/// Everything below a directory, as sorted relative paths (empty if it does not exist).
pub fn tree_listing(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).unwrap_or(&p).display().to_string())
        .collect();
    out.sort();
    out
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        out.push(p.clone());
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.extend(walkdir(&p));
        }
    }
    out
}

/// splitmix64: a small seeded generator, so a failing random case names a reproducible input.
#[derive(Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Run a bash script; a failure fails the test.
pub fn sh(script: &str) {
    let st = Command::new("bash")
        .arg("-ec")
        .arg(script)
        .status()
        .expect("bash");
    assert!(st.success(), "failed: {script}");
}

/// `store-add --name NAME SRC` into the store at `root`; the new store path.
pub fn store_add(root: &Path, name: &str, src: &Path) -> String {
    let out = run(tool("store-add", root).arg("--name").arg(name).arg(src));
    let info: serde_json::Value = serde_json::from_str(ok(&out).trim()).expect("path info");
    info["path"].as_str().expect("path").to_string()
}

/// A program that runs in a scratch image: prints `hello from strata: $GREETING ARG1
/// <first line of /etc/motd>`.
pub const HELLO_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    const char *g = getenv("GREETING");
    FILE *f = fopen("/etc/motd", "r");
    char motd[64] = "";
    if (f) { if (!fgets(motd, sizeof motd, f)) motd[0] = 0; fclose(f); }
    printf("hello from strata: %s %s %s", g ? g : "-", argc > 1 ? argv[1] : "-", motd);
    return 0;
}
"#;

/// Compile [`HELLO_C`] statically (`gcc -static`) into `work/hello/bin/hello`; returns
/// `work/hello`, ready for store-add.
pub fn static_hello(work: &Path) -> PathBuf {
    std::fs::write(work.join("hello.c"), HELLO_C).expect("write hello.c");
    sh(&format!(
        "cd {w} && mkdir -p hello/bin && gcc -static -O1 -o hello/bin/hello hello.c",
        w = work.display()
    ));
    work.join("hello")
}

/// Start dockerd (scripts/services.sh) unless it answers; a failure fails the test.
pub fn start_docker() {
    sh(&format!(
        "{}/scripts/services.sh docker",
        env!("CARGO_MANIFEST_DIR")
    ));
}

/// Run `docker ARGS…`; a failure fails the test. Returns what it printed.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker is required");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `deb-lock` on the store at `store_root`, with no store dir or cache from the environment.
pub fn deb_lock(store_root: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_deb-lock"));
    cmd.env_remove("STRATA_STORE_DIR")
        .env_remove("STRATA_DEB_CACHE")
        .env("STRATA_STORE_ROOT", store_root);
    cmd
}

/// The config of a docker-archive.
pub fn config_of(tar: &Path) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    sh(&format!(
        "tar -xf {} -C {}",
        tar.display(),
        dir.path().display()
    ));
    let manifest = read_json(&dir.path().join("manifest.json"));
    read_json(&dir.path().join(manifest[0]["Config"].as_str().unwrap()))
}

/// Run the shell command `line` under a pseudo-terminal (script(1)); it must succeed. What the
/// terminal showed (stdout and stderr together).
pub fn on_a_terminal(line: &str) -> String {
    let out = Command::new("script")
        .args(["-qec", line, "/dev/null"])
        .output()
        .expect("script(1) from util-linux");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    text
}

/// `podman run --rm` as the tests run it: runc, no network, and file and process limits that
/// fit inside a container; the image and command follow.
pub fn podman_run() -> Command {
    let mut cmd = Command::new("podman");
    cmd.args(["run", "--rm", "--runtime", "runc", "--network=none"])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ]);
    cmd
}

/// A directory for fixtures a test process makes once and keeps in a static (statics are
/// never dropped, so their directories would pile up in `CARGO_TARGET_TMPDIR`, one per test
/// process). It holds an `flock` on its `.owner` file for the life of the process; making one
/// first removes the directories of the same prefix whose lock nobody holds any more, i.e.
/// those of test processes that have ended.
pub struct FixtureDir {
    dir: tempfile::TempDir,
    _owner: std::fs::File,
}

impl FixtureDir {
    pub fn new(prefix: &str) -> FixtureDir {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        reclaim_fixture_dirs(base, prefix);
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(base)
            .unwrap();
        // Locked under another name first: a `.owner` is never seen unlocked while its
        // process lives.
        let owner = std::fs::File::create(dir.path().join(".owner.new")).unwrap();
        owner.lock().unwrap();
        std::fs::rename(dir.path().join(".owner.new"), dir.path().join(".owner")).unwrap();
        FixtureDir { dir, _owner: owner }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn reclaim_fixture_dirs(base: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with(prefix) {
            continue;
        }
        // No `.owner` yet: still being made (or from before owners existed, left alone).
        let Ok(owner) = std::fs::File::open(e.path().join(".owner")) else {
            continue;
        };
        if owner.try_lock().is_ok() {
            let _ = Command::new("chmod")
                .arg("-R")
                .arg("u+w")
                .arg(e.path())
                .output();
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
