//! mkwrapper and the wrapper generator: the shared makeWrapper reference cases run by real
//! bash, the exact text lines, Java mode with a real JVM (same PID, PID 1 in a PID namespace,
//! SIGTERM → shutdown hook → 143), refusals, determinism and the store end to end.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::support::{Ran, Run};
use strata_core::wrapper::{
    JavaApp, JavaMain, JavaWrapper, PlainWrapper, Wrapper, parse_flags, self_placeholder,
};

const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/wrapper/cases.json");
const MKWRAPPER: &str = env!("CARGO_BIN_EXE_mkwrapper");
const STORE_ADD: &str = env!("CARGO_BIN_EXE_store-add");
const BASH: &str = "/usr/bin/bash";
/// Marks where the wrapped program's report starts on stdout.
const MARK: &[u8] = b"\x01STRATA-PRINTER\x01";
/// A bash program that reports its real argv (argv[0] included) and initial environment
/// from /proc, then its working directory.
const PRINTER: &str = "printf '\\001STRATA-PRINTER\\001'; /usr/bin/cat /proc/$$/cmdline; \
                       printf '\\001'; /usr/bin/cat /proc/$$/environ; printf '\\001'; pwd -P";

/// A directory removed at the end of the test.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!(
            "strata-wrapper-test-{tag}-{}-{n}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn load_cases() -> Value {
    let text = fs::read_to_string(CASES)
        .unwrap_or_else(|e| panic!("the shared makeWrapper cases must be present at {CASES}: {e}"));
    serde_json::from_str(&text).expect("cases.json parses")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

/// What the wrapped program saw.
#[derive(Debug)]
struct Report {
    before: Vec<u8>,
    argv0: String,
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    cwd: String,
}

fn parse_report(stdout: &[u8]) -> Report {
    let at = stdout
        .windows(MARK.len())
        .position(|w| w == MARK)
        .unwrap_or_else(|| panic!("no report in {:?}", String::from_utf8_lossy(stdout)));
    let before = stdout[..at].to_vec();
    let rest = String::from_utf8(stdout[at + MARK.len()..].to_vec()).unwrap();
    let parts: Vec<&str> = rest.split('\x01').collect();
    assert_eq!(parts.len(), 3, "{rest:?}");
    let fields = |s: &str| -> Vec<String> {
        s.split('\0')
            .map(str::to_string)
            .collect::<Vec<_>>()
            .split_last()
            .map(|(_, init)| init.to_vec())
            .unwrap_or_default()
    };
    let cmdline = fields(parts[0]);
    // bash's argv: ARGV0 -c SCRIPT printer ARGS…
    assert!(cmdline.len() >= 4, "{cmdline:?}");
    assert_eq!(cmdline[1], "-c");
    let env = fields(parts[1])
        .into_iter()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    Report {
        before,
        argv0: cmdline[0].clone(),
        argv: cmdline[4..].to_vec(),
        env,
        cwd: parts[2].trim_end_matches('\n').to_string(),
    }
}

#[test]
fn reference_cases_behave_like_makewrapper() {
    let cases = load_cases();
    let cases = cases["cases"].as_array().expect("cases");
    assert!(cases.len() >= 30, "only {} cases", cases.len());
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let work = TempDir::new("case");
        if let Some(files) = case.get("files").and_then(Value::as_object) {
            for (file, contents) in files {
                fs::write(work.path().join(file), contents.as_str().unwrap()).unwrap();
            }
        }
        // The printer is bash itself: `exec -a` on a #! script would lose argv[0].
        let mut args: Vec<String> = [
            "--add-flag",
            "-c",
            "--add-flag",
            PRINTER,
            "--add-flag",
            "printer",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(strings(&case["flags"]));
        let flags = parse_flags(&args).unwrap_or_else(|e| panic!("{name}: {e}"));
        let wrapper = Wrapper::Plain(PlainWrapper {
            shell: BASH.to_string(),
            program: BASH.to_string(),
            name: "wrapped".to_string(),
            flags,
        });
        let tree = work.path().join("out");
        let base = work.path().to_path_buf();
        wrapper
            .generate(tree.to_str().unwrap(), &tree, &mut |f: &str| {
                fs::read(base.join(f))
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"));

        let expect = &case["expect"];
        let case_env = case["env"].as_object().unwrap();
        let mut cmd = Command::new("env");
        cmd.arg("-i").current_dir(work.path());
        // An explicit PATH, except where the case looks at PATH itself: then the caller's
        // PATH is the case's, or empty (bash would otherwise fill in its built-in default).
        let checks_path = expect
            .get("env")
            .and_then(Value::as_object)
            .is_some_and(|e| e.contains_key("PATH"));
        if !case_env.contains_key("PATH") {
            cmd.arg(if checks_path {
                "PATH="
            } else {
                "PATH=/usr/bin:/bin"
            });
        }
        for (k, v) in case_env {
            if let Some(v) = v.as_str() {
                cmd.arg(format!("{k}={v}"));
            }
        }
        cmd.arg(tree.join("bin/wrapped"));
        cmd.args(strings(&case["call"]));
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{name}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let report = parse_report(&out.stdout);
        if let Some(env) = expect.get("env").and_then(Value::as_object) {
            for (k, v) in env {
                assert_eq!(
                    report.env.get(k).map(String::as_str),
                    v.as_str(),
                    "{name}: {k}"
                );
            }
        }
        if let Some(argv) = expect.get("argv") {
            assert_eq!(report.argv, strings(argv), "{name}: argv");
        }
        if let Some(argv0) = expect.get("argv0") {
            assert_eq!(report.argv0, argv0.as_str().unwrap(), "{name}: argv0");
        }
        if let Some(cwd) = expect.get("cwd") {
            assert_eq!(report.cwd, cwd.as_str().unwrap(), "{name}: cwd");
        } else {
            assert_eq!(
                Path::new(&report.cwd),
                work.path().canonicalize().unwrap(),
                "{name}: cwd"
            );
        }
        if let Some(prefix) = expect.get("stdout_starts_with") {
            assert!(
                report
                    .before
                    .starts_with(prefix.as_str().unwrap().as_bytes()),
                "{name}: stdout {:?}",
                String::from_utf8_lossy(&report.before)
            );
        }
        let known = ["env", "argv", "argv0", "cwd", "stdout_starts_with"];
        for key in expect.as_object().unwrap().keys() {
            assert!(known.contains(&key.as_str()), "{name}: unchecked {key}");
        }
    }
}

/// Stand-ins for the store-path base names in `exact_text`.
fn fill(text: &str) -> String {
    text.replace("<bash>", "0b1fi4a7nmbq2khr8dsjzmxbacv9p4zy-bash-5.2")
        .replace("<jre>", "1xvn2cwyzk4l3z6b9f7q0hmrsjd5ga8i-openjdk-17-jre")
        .replace("<app>", "2mqsaf3n5xk8ypjwdl9rvz0b7chi6g41-app-1.0")
}

#[test]
fn exact_text_lines() {
    let cases = load_cases();
    let entries = cases["exact_text"].as_array().expect("exact_text");
    assert!(!entries.is_empty());
    for entry in entries {
        let name = entry["name"].as_str().unwrap();
        let flags: Vec<String> = strings(&entry["flags"])
            .iter()
            .map(|f| fill(f))
            .collect::<Vec<_>>();
        let wrapper = Wrapper::Plain(PlainWrapper {
            shell: fill("/nix/store/<bash>/bin/bash"),
            program: fill(entry["original"].as_str().unwrap_or("/x/prog")),
            name: "w".to_string(),
            flags: parse_flags(&flags).unwrap(),
        });
        let text = wrapper
            .script("/out", &mut |_: &str| Ok(Vec::new()))
            .unwrap();
        for line in strings(&entry["lines"]) {
            let line = fill(&line);
            assert!(
                text.lines().any(|l| l == line),
                "{name}: missing line {line:?} in\n{text}"
            );
        }
    }
}

#[test]
fn quoting_matches_bash_at_q() {
    // Whatever bash's ${x@Q} prints must be what --set writes.
    let values = [
        "plain",
        "",
        "it's",
        "\"!!\n\"",
        "tab\there",
        "esc\x1b[0m",
        "del\x7f",
        "x\\y",
        "$HOME `x`",
        "é ü",
        "a\x01b",
    ];
    for value in values {
        let out = Command::new(BASH)
            .args(["-c", "printf '%s' \"${1@Q}\"", "q", value])
            .output()
            .unwrap();
        let bash = String::from_utf8(out.stdout).unwrap();
        let text = Wrapper::Plain(PlainWrapper {
            shell: BASH.into(),
            program: "/p".into(),
            name: "w".into(),
            flags: parse_flags(&["--set", "V", value]).unwrap(),
        })
        .script("/out", &mut |_: &str| Ok(Vec::new()))
        .unwrap();
        assert!(
            text.contains(&format!("export V={bash}\n")),
            "{value:?}: bash says {bash}, we wrote\n{text}"
        );
    }
}

// ---------------------------------------------------------------- Java

const DEMO_JAVA: &str = r#"
import java.lang.management.ManagementFactory;
public class Demo {
    public static void main(String[] args) throws Exception {
        System.out.println("pid=" + ProcessHandle.current().pid());
        for (String a : ManagementFactory.getRuntimeMXBean().getInputArguments()) {
            System.out.println("jvm=" + a);
        }
        for (String p : new String[] {"demo.a", "demo.b", "demo.c", "demo.g", "demo.h",
                "logback.configurationFile", "awt.useSystemAAFontSettings"}) {
            System.out.println("prop." + p + "=" + System.getProperty(p));
        }
        for (String e : new String[] {"DEMO_ENV", "_JAVA_AWT_WM_NONREPARENTING"}) {
            System.out.println("env." + e + "=" + System.getenv(e));
        }
        for (String a : args) {
            System.out.println("arg=" + a);
        }
        if (args.length > 0 && args[args.length - 1].equals("wait")) {
            Runtime.getRuntime().addShutdownHook(new Thread(() -> {
                System.out.println("hook ran");
                System.out.flush();
            }));
            System.out.println("ready");
            System.out.flush();
            Thread.sleep(120_000);
        }
    }
}
"#;

/// Compile Demo.java into a jar with `Main-Class: Demo`.
fn demo_jar(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("Demo.java"), DEMO_JAVA).unwrap();
    let st = Command::new("javac")
        .arg("-d")
        .arg(&src)
        .arg(src.join("Demo.java"))
        .status()
        .expect("javac (JDK 17) must be installed");
    assert!(st.success());
    fs::write(src.join("manifest.txt"), "Main-Class: Demo\n").unwrap();
    let jar = dir.join("demo.jar");
    let st = Command::new("jar")
        .arg("cfm")
        .arg(&jar)
        .arg(src.join("manifest.txt"))
        .arg("-C")
        .arg(&src)
        .arg("Demo.class")
        .status()
        .unwrap();
    assert!(st.success());
    jar
}

/// The machine's `java` (the JDK's real binary, not the alternatives symlink).
fn host_java() -> PathBuf {
    let java = Command::new(BASH)
        .args(["-c", "command -v java"])
        .output()
        .unwrap();
    let java = String::from_utf8(java.stdout).unwrap();
    fs::canonicalize(java.trim()).expect("java must be installed")
}

/// The seed's flags plus run-time override material.
fn demo_wrapper(jar: &Path, main: JavaMain) -> Wrapper {
    let flags = parse_flags(&[
        "--set",
        "_JAVA_OPTIONS",
        "-Dawt.useSystemAAFontSettings=on",
        "--set",
        "_JAVA_AWT_WM_NONREPARENTING",
        "1",
        "--set",
        "DEMO_ENV",
        "x y $HOME",
        "--add-flag",
        "first app arg",
    ])
    .unwrap();
    Wrapper::Java(JavaWrapper {
        shell: BASH.to_string(),
        app: JavaApp {
            name: "demo-app".to_string(),
            version: "1.0".to_string(),
            java: host_java().to_str().unwrap().to_string(),
            main,
            jvm_flags: vec![
                "-Dlogback.configurationFile=logback.xml".to_string(),
                "-Ddemo.a=baked".to_string(),
                "-Ddemo.b=baked".to_string(),
                "-Ddemo.c=baked".to_string(),
            ],
        },
        jar: jar.to_path_buf(),
        jar_in_store: None,
        flags,
    })
}

fn lines_with<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .collect()
}

fn check_demo_output(text: &str, pid: u32, args: &[&str]) {
    assert_eq!(lines_with(text, "pid="), [pid.to_string()], "{text}");
    let props: BTreeMap<&str, &str> = lines_with(text, "prop.")
        .into_iter()
        .filter_map(|l| l.split_once('='))
        .collect();
    assert_eq!(props["demo.a"], "baked", "{text}");
    assert_eq!(props["demo.b"], "java", "JAVA_OPTS beats baked: {text}");
    assert_eq!(
        props["demo.c"], "app",
        "DEMO_APP_OPTS beats JAVA_OPTS: {text}"
    );
    assert_eq!(props["demo.g"], "*", "no globbing: {text}");
    assert_eq!(props["demo.h"], "$HOME", "no expansion: {text}");
    assert_eq!(props["logback.configurationFile"], "logback.xml");
    assert_eq!(props["awt.useSystemAAFontSettings"], "on");
    assert_eq!(lines_with(text, "env.DEMO_ENV="), ["x y $HOME"]);
    assert_eq!(lines_with(text, "env._JAVA_AWT_WM_NONREPARENTING="), ["1"]);
    // The JVM's own argument list, in order: baked, JAVA_OPTS, DEMO_APP_OPTS.
    let jvm = lines_with(text, "jvm=");
    let pos = |a: &str| {
        jvm.iter()
            .position(|j| *j == a)
            .unwrap_or_else(|| panic!("{a} not in {jvm:?}"))
    };
    assert!(pos("-Ddemo.c=baked") < pos("-Ddemo.b=java"));
    assert!(pos("-Ddemo.c=java") < pos("-Ddemo.c=app"));
    let mut want = vec!["first app arg"];
    want.extend_from_slice(args);
    assert_eq!(lines_with(text, "arg="), want, "{text}");
}

const CALL_ARGS: [&str; 5] = ["a b", "*", "$HOME", "", "x\ty"];

fn run_demo(bin: &Path, cwd: &Path) {
    let child = Command::new("env")
        .arg("-i")
        .arg("PATH=/usr/bin:/bin")
        .arg("HOME=/root")
        .arg("IFS=-")
        .arg("JAVA_OPTS=-Ddemo.b=java  -Ddemo.c=java\t-Ddemo.g=* -Ddemo.h=$HOME\n")
        .arg("DEMO_APP_OPTS=-Ddemo.c=app")
        .arg(bin)
        .args(CALL_ARGS)
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `env` execs the wrapper, which execs the JVM: one process all along.
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_demo_output(&text, pid, &CALL_ARGS);
}

#[test]
fn java_mode_runs_the_jvm_in_place() {
    let work = TempDir::new("java");
    let jar = demo_jar(work.path());
    // A file named like a JVM option, so that a glob would have matched something.
    fs::write(work.path().join("-Ddemo.g=globbed"), "").unwrap();
    let out = work.path().join("out");
    let wrapper = demo_wrapper(&jar, JavaMain::Jar);
    wrapper
        .generate(out.to_str().unwrap(), &out, &mut |f: &str| fs::read(f))
        .unwrap();
    assert_eq!(
        fs::read(out.join("share/java/demo-app-1.0.jar")).unwrap(),
        fs::read(&jar).unwrap()
    );
    let script = fs::read_to_string(out.join("bin/demo-app")).unwrap();
    assert!(!script.contains("eval"), "{script}");
    run_demo(&out.join("bin/demo-app"), work.path());

    // Main class + classpath instead of -jar.
    let out2 = work.path().join("out2");
    let wrapper = demo_wrapper(
        &jar,
        JavaMain::Class {
            class: "Demo".to_string(),
            classpath: vec![work.path().join("src").to_str().unwrap().to_string()],
        },
    );
    wrapper
        .generate(out2.to_str().unwrap(), &out2, &mut |f: &str| fs::read(f))
        .unwrap();
    assert!(
        fs::read_to_string(out2.join("bin/demo-app"))
            .unwrap()
            .contains(" -cp '")
    );
    run_demo(&out2.join("bin/demo-app"), work.path());
}

#[test]
fn java_mode_is_pid_1_and_handles_sigterm() {
    let work = TempDir::new("java-pid1");
    let jar = demo_jar(work.path());
    let out = work.path().join("out");
    demo_wrapper(&jar, JavaMain::Jar)
        .generate(out.to_str().unwrap(), &out, &mut |f: &str| fs::read(f))
        .unwrap();
    let mut child = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(out.join("bin/demo-app"))
        .arg("wait")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux) must be installed; this test runs as root");
    let unshare_pid = child.id();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            let out = child.wait_with_output().unwrap();
            panic!(
                "the JVM ended before it was ready: {seen} {:?} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        seen.push_str(&line);
        if line == "ready\n" {
            break;
        }
    }
    assert_eq!(lines_with(&seen, "pid="), ["1"], "{seen}");
    // The JVM is unshare's only child; signal it by its PID outside the namespace.
    let children =
        fs::read_to_string(format!("/proc/{unshare_pid}/task/{unshare_pid}/children")).unwrap();
    let jvm: Vec<&str> = children.split_whitespace().collect();
    assert_eq!(jvm.len(), 1, "{children}");
    let comm = fs::read_to_string(format!("/proc/{}/comm", jvm[0])).unwrap();
    assert_eq!(comm.trim(), "java", "the wrapper must have exec'd the JVM");
    let st = Command::new("kill")
        .args(["-TERM", jvm[0]])
        .status()
        .unwrap();
    assert!(st.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(rest.contains("hook ran"), "{rest}");
    assert_eq!(status.code(), Some(143), "{status:?}");
}

// ---------------------------------------------------------------- the CLI

fn mkwrapper(args: &[&str], cwd: &Path) -> Output {
    let mut cmd = Command::new(MKWRAPPER);
    cmd.env_remove("STRATA_STORE_ROOT")
        .env_remove("STRATA_STORE_DIR");
    Run::command(cmd).args(args).current_dir(cwd).output().out
}

fn one_line_error(out: &Output, code: i32, contains: &str) {
    Ran { out: out.clone() }
        .failed(code)
        .stderr_has("mkwrapper: ")
        .stderr_has(contains);
    assert!(out.stderr.starts_with(b"mkwrapper: "));
}

#[test]
fn bad_input_is_refused_with_one_line_and_nothing_written() {
    let work = TempDir::new("bad");
    let root = work.path().join("store-root");
    let root_s = root.to_str().unwrap();
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["--set", "1X", "v"],
            2,
            "--set: invalid variable name '1X'",
        ),
        (
            &["--set-default", "A B", "v"],
            2,
            "--set-default: invalid variable name 'A B'",
        ),
        (&["--unset", ""], 2, "--unset: invalid variable name ''"),
        (&["--prefix", "PATH", ":", ""], 2, "--prefix: empty value"),
        (&["--suffix", "PATH", ":", "/a::/b"], 2, "empty component"),
        (
            &["--prefix-each", "V", ":", " "],
            2,
            "--prefix-each: empty list",
        ),
        (&["--suffix", "V", "", "x"], 2, "--suffix: empty separator"),
        (&["--frobnicate"], 2, "unknown flag '--frobnicate'"),
        (
            &["--set", "A", "1", "stray"],
            2,
            "unexpected argument 'stray'",
        ),
        (&["--set", "A"], 2, "--set: missing operand VALUE"),
        (
            &["--prefix", "A", ":"],
            2,
            "--prefix: missing operand VALUE",
        ),
        (&["--chdir"], 2, "--chdir: missing operand DIR"),
        (&["--argv0", ""], 2, "--argv0: empty name"),
        (&["--add-flags", "a\nb"], 2, "newline"),
        (&["--add-flags", "-x; id"], 2, "shell control operator"),
        (&["--append-flags", "$(id)"], 2, "command substitution"),
        (
            &["--prefix-contents", "V", ":", "/dev/zero"],
            1,
            "cannot use '/dev/zero': not a regular file",
        ),
        (
            &["--prefix-contents", "V", ":", "missing-file"],
            1,
            "missing-file",
        ),
    ];
    for (flags, code, msg) in cases {
        for store_mode in [false, true] {
            let tree = work.path().join("tree");
            let mut args = vec!["--store-root", root_s, "wrap"];
            if !store_mode {
                args.extend(["--tree", tree.to_str().unwrap()]);
            }
            args.extend(["--bash", "/usr", "/usr/bin/env", "w", "--"]);
            args.extend_from_slice(flags);
            let out = mkwrapper(&args, work.path());
            if store_mode && *code == 1 {
                // Without --tree, /usr is refused first: it is not in the store.
                one_line_error(&out, 2, "not in the store");
            } else {
                one_line_error(&out, *code, msg);
            }
            assert!(!tree.exists(), "{flags:?}");
            assert!(!root.exists(), "{flags:?}: the store was touched");
        }
    }
    // The tool's own options.
    let tree = work.path().join("tree");
    let tree_s = tree.to_str().unwrap();
    let tool_cases: &[(&[&str], i32, &str)] = &[
        (
            &["wrap", "--tree", tree_s, "/usr/bin/env", "w"],
            2,
            "--bash",
        ),
        (
            &["wrap", "--tree", tree_s, "--bash", "/usr", "/usr/bin/env"],
            2,
            "NAME",
        ),
        (
            &[
                "wrap",
                "--tree",
                tree_s,
                "--bash",
                "/usr",
                "/usr/bin/env",
                "w",
                "--x",
            ],
            2,
            "--x",
        ),
        (
            &[
                "wrap",
                "--tree",
                tree_s,
                "--bash",
                "/usr",
                "/usr/bin/env",
                "a/b",
            ],
            2,
            "invalid name",
        ),
        (
            &[
                "wrap",
                "--tree",
                tree_s,
                "--bash",
                "/usr",
                "/nonexistent",
                "w",
            ],
            1,
            "not an executable",
        ),
        (
            &[
                "wrap",
                "--tree",
                tree_s,
                "--bash",
                "/nonexistent",
                "/usr/bin/env",
                "w",
            ],
            1,
            "--bash",
        ),
        (
            &[
                "wrap",
                "--tree",
                tree_s,
                "--bash",
                "@bash",
                "/usr/bin/env",
                "w",
            ],
            2,
            "no input path is named 'bash'",
        ),
        (
            &[
                "wrap",
                "--tree",
                tree_s,
                "--bash",
                "usr",
                "/usr/bin/env",
                "w",
            ],
            2,
            "absolute",
        ),
        (
            &[
                "java",
                "--tree",
                tree_s,
                "--bash",
                "/usr",
                "--jre",
                "/nonexistent",
                "--jar",
                "x.jar",
                "--name",
                "a",
                "--version",
                "1",
            ],
            1,
            "--jre",
        ),
    ];
    // An operand that looks like a store path but climbs out of it to a host file.
    let climbing = "/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello/../../../usr/bin/id";
    for args in [
        vec![
            "--store-root",
            root_s,
            "wrap",
            "--bash",
            climbing,
            climbing,
            "w",
        ],
        vec!["wrap", "--tree", tree_s, "--bash", "/usr", climbing, "w"],
    ] {
        let out = mkwrapper(&args, work.path());
        one_line_error(&out, 2, "is not a canonical path");
        assert!(!tree.exists() && !root.exists(), "{args:?}");
    }
    for (args, code, msg) in tool_cases {
        let out = mkwrapper(args, work.path());
        one_line_error(&out, *code, msg);
        assert!(!tree.exists(), "{args:?}");
    }
    // An existing --tree is not overwritten.
    fs::create_dir(&tree).unwrap();
    let out = mkwrapper(
        &[
            "wrap",
            "--tree",
            tree_s,
            "--bash",
            "/usr",
            "/usr/bin/env",
            "w",
        ],
        work.path(),
    );
    one_line_error(&out, 1, "already exists");
    assert_eq!(fs::read_dir(&tree).unwrap().count(), 0);
}

/// Every file of a tree: relative path → (mode, bytes or link target).
fn snapshot(dir: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path
                .strip_prefix(dir)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let mode = meta.permissions().mode();
            if meta.is_dir() {
                stack.push(path.clone());
                out.insert(rel, (mode, Vec::new()));
            } else if meta.file_type().is_symlink() {
                let target = fs::read_link(&path).unwrap();
                out.insert(rel, (mode, target.to_str().unwrap().as_bytes().to_vec()));
            } else {
                out.insert(rel, (mode, fs::read(&path).unwrap()));
            }
        }
    }
    out
}

#[test]
fn same_inputs_same_tree() {
    let work = TempDir::new("determinism");
    let jar = demo_jar(work.path());
    fs::write(work.path().join("paths"), "/c:/d\n").unwrap();
    let flags = [
        "--",
        "--argv0",
        "x",
        "--set",
        "A",
        "it's\n",
        "--prefix",
        "PATH",
        ":",
        "/a:/b",
        "--suffix-each",
        "P",
        ";",
        "x y",
        "--prefix-contents",
        "Q",
        ":",
        "paths",
        "--run",
        "echo hi",
        "--add-flags",
        "-v $X",
        "--append-flag",
        "z",
    ];
    let java = host_java();
    let jre = java
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let mut trees = Vec::new();
    for i in 0..2 {
        let plain = work.path().join(format!("plain{i}"));
        let mut args = vec![
            "wrap",
            "--tree",
            plain.to_str().unwrap(),
            "--bash",
            "/usr",
            "/usr/bin/env",
            "w",
        ];
        args.extend(flags);
        let out = mkwrapper(&args, work.path());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let java_tree = work.path().join(format!("java{i}"));
        let mut args = vec![
            "java",
            "--tree",
            java_tree.to_str().unwrap(),
            "--bash",
            "/usr",
            "--jre",
            &jre,
            "--jar",
            jar.to_str().unwrap(),
            "--name",
            "demo",
            "--version",
            "2",
            "--jvm-flag",
            "-Xss1m",
        ];
        args.extend(flags);
        let out = mkwrapper(&args, work.path());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        trees.push((snapshot(&plain), snapshot(&java_tree)));
    }
    assert_eq!(trees[0].0, trees[1].0);
    // The Java trees name their own location ($out), which differs: compare with it masked.
    let mask = |t: &BTreeMap<String, (u32, Vec<u8>)>, i: usize| {
        let own = work.path().join(format!("java{i}"));
        t.iter()
            .map(|(k, (m, b))| {
                let text = String::from_utf8_lossy(b).replace(own.to_str().unwrap(), "$out");
                (k.clone(), (*m, text))
            })
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(mask(&trees[0].1, 0), mask(&trees[1].1, 1));
    assert_eq!(
        trees[0].1.keys().collect::<Vec<_>>(),
        [
            "bin",
            "bin/demo",
            "share",
            "share/java",
            "share/java/demo-2.jar"
        ]
    );
    assert_eq!(trees[0].1["bin/demo"].0 & 0o777, 0o755);
    assert_eq!(trees[0].1["share/java/demo-2.jar"].0 & 0o777, 0o644);
    // And the library alone, with the same $out, gives identical bytes.
    let w = demo_wrapper(&jar, JavaMain::Jar);
    let a = w.script("/o", &mut |f: &str| fs::read(f)).unwrap();
    let b = w.script("/o", &mut |f: &str| fs::read(f)).unwrap();
    assert_eq!(a, b);
}

// ---------------------------------------------------------------- the store, end to end

/// A store whose logical dir is reachable on this machine: the logical dir is a symlink to
/// the physical one, so installed wrappers run in place.
struct TestStore {
    work: TempDir,
    root: PathBuf,
    store_dir: String,
}

impl TestStore {
    fn new() -> TestStore {
        let work = TempDir::new("store");
        let root = work.path().join("root");
        let store_dir = work.path().join("store").to_str().unwrap().to_string();
        let physical = root.join(store_dir.trim_start_matches('/'));
        fs::create_dir_all(&physical).unwrap();
        std::os::unix::fs::symlink(&physical, &store_dir).unwrap();
        TestStore {
            work,
            root,
            store_dir,
        }
    }

    fn cmd(&self, exe: &str) -> Command {
        let mut c = Command::new(exe);
        c.env("STRATA_STORE_ROOT", &self.root)
            .env("STRATA_STORE_DIR", &self.store_dir)
            .current_dir(self.work.path());
        c
    }

    /// store-add a directory; returns the manifest file and the path.
    fn add(&self, dir: &Path, name: &str) -> (PathBuf, String) {
        let out = self
            .cmd(STORE_ADD)
            .arg("--name")
            .arg(name)
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let manifest = self.work.path().join(format!("{name}.json"));
        fs::write(&manifest, &out.stdout).unwrap();
        let info: Value = serde_json::from_slice(&out.stdout).unwrap();
        (manifest, info["path"].as_str().unwrap().to_string())
    }
}

fn refs(info: &Value) -> Vec<String> {
    strings(&info["references"])
}

#[test]
fn store_end_to_end() {
    let store = TestStore::new();
    let pkgs = store.work.path().join("pkgs");
    // bash-5.2: the machine's bash; jre: a link to the machine's JDK.
    let bash_pkg = pkgs.join("bash");
    fs::create_dir_all(bash_pkg.join("bin")).unwrap();
    fs::copy(BASH, bash_pkg.join("bin/bash")).unwrap();
    let (bash_json, bash_path) = store.add(&bash_pkg, "bash-5.2");
    let jre_pkg = pkgs.join("jre");
    fs::create_dir_all(jre_pkg.join("bin")).unwrap();
    std::os::unix::fs::symlink(host_java(), jre_pkg.join("bin/java")).unwrap();
    let (jre_json, jre_path) = store.add(&jre_pkg, "openjdk-17-jre");
    let hello_pkg = pkgs.join("hello");
    fs::create_dir_all(hello_pkg.join("bin")).unwrap();
    fs::write(
        hello_pkg.join("bin/hello"),
        "#!/usr/bin/bash\nprintf '%s|' \"$GREETING\" \"$@\"\n",
    )
    .unwrap();
    fs::set_permissions(
        hello_pkg.join("bin/hello"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let (hello_json, hello_path) = store.add(&hello_pkg, "hello-2.12");

    // Plain: inputs from stdin and a file, picked by name.
    let mut child = store
        .cmd(MKWRAPPER)
        .args(["wrap", "--inputs", "-", "--inputs"])
        .arg(&bash_json)
        .args(["--bash", "@bash", "@hello/bin/hello", "hello", "--"])
        .args(["--set", "GREETING", "hi there", "--add-flag", "a b"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        &fs::read(&hello_json).unwrap(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    let path = info["path"].as_str().unwrap().to_string();
    assert!(path.starts_with(&format!("{}/", store.store_dir)) && path.ends_with("-hello"));
    let mut want = vec![bash_path.clone(), hello_path.clone()];
    want.sort();
    assert_eq!(refs(&info), want, "{info}");
    let script = fs::read_to_string(format!("{path}/bin/hello")).unwrap();
    assert!(
        script.starts_with(&format!("#! {bash_path}/bin/bash -e\n")),
        "{script}"
    );
    let run = Command::new(format!("{path}/bin/hello"))
        .arg("c")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&run.stdout), "hi there|a b|c|");

    // The same again: the same path info.
    let again = store
        .cmd(MKWRAPPER)
        .args(["wrap", "--inputs"])
        .arg(&hello_json)
        .arg("--inputs")
        .arg(&bash_json)
        .args([
            "--bash",
            "@bash-5.2",
            &format!("{hello_path}/bin/hello"),
            "hello",
            "--",
        ])
        .args(["--set", "GREETING", "hi there", "--add-flag", "a b"])
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(again.stdout, out.stdout);

    // Java: the wrapper names its own path, which becomes a self-reference.
    // The jar comes from the store too: it is linked, so it is a reference.
    let jar = demo_jar(store.work.path());
    let (jar_json, jar_path) = store.add(&jar, "demo.jar");
    let out = store
        .cmd(MKWRAPPER)
        .arg("java")
        .arg("--inputs")
        .arg(&bash_json)
        .arg("--inputs")
        .arg(&jre_json)
        .arg("--inputs")
        .arg(&jar_json)
        .args([
            "--bash",
            "@bash",
            "--jre",
            "@openjdk-17-jre",
            "--jar",
            "@demo.jar",
        ])
        .args(["--name", "demo-app", "--version", "1.0"])
        .args(["--jvm-flag", "-Dlogback.configurationFile=logback.xml"])
        .args([
            "--jvm-flag",
            "-Ddemo.a=baked",
            "--jvm-flag",
            "-Ddemo.b=baked",
        ])
        .args(["--jvm-flag", "-Ddemo.c=baked", "--"])
        .args(["--set", "_JAVA_OPTIONS", "-Dawt.useSystemAAFontSettings=on"])
        .args(["--set", "_JAVA_AWT_WM_NONREPARENTING", "1"])
        .args([
            "--set",
            "DEMO_ENV",
            "x y $HOME",
            "--add-flag",
            "first app arg",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    let path = info["path"].as_str().unwrap().to_string();
    assert!(path.ends_with("-demo-app-1.0"), "{path}");
    // The jar is already in the store: referenced (a symlink), not copied.
    let mut want = vec![bash_path, jre_path.clone(), jar_path.clone(), path.clone()];
    want.sort();
    assert_eq!(refs(&info), want, "{info}");
    assert_eq!(
        fs::read_link(format!("{path}/share/java/demo-app-1.0.jar")).unwrap(),
        Path::new(&jar_path)
    );
    let script = fs::read_to_string(format!("{path}/bin/demo-app")).unwrap();
    assert!(
        script.contains(&format!("-jar '{path}/share/java/demo-app-1.0.jar'")),
        "{script}"
    );
    assert!(
        !script.contains(self_placeholder("demo-app-1.0").as_str()),
        "{script}"
    );
    assert!(
        script.contains(&format!("exec \"{jre_path}/bin/java\"")),
        "{script}"
    );
    run_demo(
        Path::new(&format!("{path}/bin/demo-app")),
        store.work.path(),
    );

    // Operands outside the store are refused without --tree; a path not in the store is too.
    let out = store
        .cmd(MKWRAPPER)
        .args(["wrap", "--bash", "/usr", "/usr/bin/env", "w"])
        .output()
        .unwrap();
    one_line_error(&out, 2, "not in the store");
    let missing = format!("{}/0b1fi4a7nmbq2khr8dsjzmxbacv9p4zy-bash", store.store_dir);
    let out = store
        .cmd(MKWRAPPER)
        .args([
            "wrap",
            "--bash",
            &missing,
            &format!("{hello_path}/bin/hello"),
            "w",
        ])
        .output()
        .unwrap();
    one_line_error(&out, 1, "--bash");
}
