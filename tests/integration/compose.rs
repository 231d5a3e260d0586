//! The tools compose without JSON glue: each reads what the previous one wrote (path-info
//! manifests, JSON lines or arrays, files or `-`) and `@NAME[/SUB]` references into them;
//! plain `--print-path` output; mkwrapper's dry run, store-root operands and error hints.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// A store (logical dir /nix/store, under a private root) holding bash-5.2, hello-2.12 and
/// hello-completion-1.0, and their manifests.
struct Fixture {
    work: tempfile::TempDir,
    root: PathBuf,
    bash: String,
    hello: String,
    bash_json: PathBuf,
    hello_json: PathBuf,
}

fn executable(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

impl Fixture {
    fn new() -> Fixture {
        let work = tempfile::tempdir().unwrap();
        let root = work.path().join("root");
        let src = work.path().join("src");
        executable(&src.join("bash/bin/bash"), "#!/bin/sh\n");
        executable(&src.join("hello/bin/hello"), "#!/bin/sh\necho hello\n");
        fs::create_dir_all(src.join("hello/share")).unwrap();
        fs::write(src.join("hello/share/app.py"), "print(1)\n").unwrap();
        executable(&src.join("completion/share/x"), "x\n");
        let mut f = Fixture {
            root,
            bash: String::new(),
            hello: String::new(),
            bash_json: work.path().join("bash.json"),
            hello_json: work.path().join("hello.json"),
            work,
        };
        f.bash = f.add(&src.join("bash"), "bash-5.2", &f.bash_json.clone());
        f.hello = f.add(&src.join("hello"), "hello-2.12", &f.hello_json.clone());
        let completion = f.work.path().join("completion.json");
        f.add(&src.join("completion"), "hello-completion-1.0", &completion);
        f
    }

    fn add(&self, src: &Path, name: &str, manifest: &Path) -> String {
        let out = ok(&run(self.tool("store-add").args(["--name", name]).arg(src)));
        fs::write(manifest, &out).unwrap();
        json_lines(&out)[0]["path"].as_str().unwrap().to_string()
    }

    fn tool(&self, name: &str) -> Command {
        let mut c = tool(name, &self.root);
        c.current_dir(self.work.path());
        c
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.work.path().join(name);
        fs::write(&path, text).unwrap();
        path
    }

    fn info_of(&self, path: &str) -> String {
        ok(&run(self.tool("store-query").args(["info", path])))
    }
}

#[test]
fn store_query_reads_manifests_and_references() {
    let f = Fixture::new();
    let hello_info = f.info_of(&f.hello);
    let both = ok(&run(f
        .tool("store-query")
        .args(["info", &f.bash, &f.hello])));
    // A manifest file (JSON lines), and the same on stdin.
    let out = ok(&run(f.tool("store-query").arg("info").arg(&f.hello_json)));
    assert_eq!(out, hello_info);
    let out = ok(&run_with_input(
        f.tool("store-query").args(["info", "-"]),
        fs::read(&f.hello_json).unwrap().as_slice(),
    ));
    assert_eq!(out, hello_info);
    // A JSON array holding both.
    let array: Vec<serde_json::Value> = json_lines(&both);
    let array = f.file("both.json", &serde_json::to_string(&array).unwrap());
    let out = ok(&run(f.tool("store-query").arg("info").arg(&array)));
    assert_eq!(out, both);
    // @NAME (exact, then NAME-VERSION) and @NAME/SUB from --inputs.
    for reference in ["@hello", "@hello-2.12", "@hello/bin/hello"] {
        let out = ok(&run(f
            .tool("store-query")
            .arg("info")
            .arg("--inputs")
            .arg(&array)
            .arg(reference)));
        assert_eq!(out, hello_info, "{reference}");
    }
    // The closure of a manifest is the closure of its paths.
    let by_manifest = ok(&run(f.tool("store-query").arg("closure").arg(&array)));
    let by_path = ok(&run(f
        .tool("store-query")
        .args(["closure", &f.bash, &f.hello])));
    assert_eq!(by_manifest, by_path);
}

#[test]
fn bad_references_and_manifests_are_refused_with_one_line() {
    let f = Fixture::new();
    let q = |args: &[&str]| {
        let mut c = f.tool("store-query");
        c.arg("info").arg("--inputs").arg(&f.hello_json);
        c.arg("--inputs").arg(&f.bash_json).args(args);
        run(&mut c)
    };
    // Unknown: the message lists the names it knows.
    fails_with(
        &q(&["@zsh"]),
        2,
        &["no input path is named 'zsh'", "bash-5.2", "hello-2.12"],
    );
    // Climbing out of the store path, or any non-canonical sub-path.
    for hostile in [
        "@hello/../../etc/passwd",
        "@hello/./bin",
        "@hello//bin",
        "@hello/bin/..",
    ] {
        fails_with(&q(&[hostile]), 2, &["not a canonical path", hostile]);
    }
    // Ambiguous: two paths named hello-VERSION.
    let completion = fs::read_to_string(f.work.path().join("completion.json")).unwrap();
    let other = completion.replace("hello-completion-1.0", "hello-2.13");
    let twice = f.file(
        "twice.json",
        &format!("{}{other}", fs::read_to_string(&f.hello_json).unwrap()),
    );
    let out = run(f
        .tool("store-query")
        .args(["info", "--inputs"])
        .arg(&twice)
        .arg("@hello"));
    fails_with(
        &out,
        2,
        &["'hello' names several input paths", "hello-2.13"],
    );
    // A manifest naming a path outside the store dir.
    let outside = fs::read_to_string(&f.hello_json)
        .unwrap()
        .replace("/nix/store/", "/gnu/store/");
    let outside = f.file("outside.json", &outside);
    let out = run(f.tool("store-query").arg("info").arg(&outside));
    fails_with(
        &out,
        1,
        &["outside.json", "is not in the store dir '/nix/store'"],
    );
    // stdin once per invocation.
    let out = run_with_input(
        f.tool("store-query").args(["info", "-", "-"]),
        &fs::read(&f.hello_json).unwrap(),
    );
    fails_with(&out, 2, &["stdin"]);
    // Huge manifests are bounded (not read to the end).
    let huge = f.work.path().join("huge.json");
    let file = fs::File::create(&huge).unwrap();
    file.set_len(65 << 20).unwrap();
    let out = run(f.tool("store-query").arg("info").arg(&huge));
    fails_with(&out, 1, &["huge.json", "larger than"]);
    // Garbage names its input.
    let bad = f.file("bad.json", "{\"path\": 1}\n");
    fails_with(
        &run(f.tool("store-query").arg("info").arg(&bad)),
        1,
        &["bad.json"],
    );
}

/// Every input a tool reads whole (manifests, closure graphs, texts to add, candidate lists)
/// is bounded: a device is refused by name before it is read, a file over the limit before it
/// is read, stdin once the limit is passed. One line, exit 1, nothing on stdout.
#[test]
fn whole_inputs_are_bounded() {
    let f = Fixture::new();
    let limit = strata_core::manifest::MAX_MANIFEST;
    let huge = f.work.path().join("huge.json");
    fs::File::create(&huge).unwrap().set_len(limit + 1).unwrap();
    let at_limit = vec![b' '; limit as usize + 1];
    let src = f.file("a.txt", "a\n");
    let src = src.to_str().unwrap();
    let huge = huge.to_str().unwrap();
    let cases: [(&str, Vec<&str>); 3] = [
        ("mklayers", vec![]),
        ("store-add", vec!["--text", "--name", "t"]),
        ("store-add", vec!["--name", "a", src, "--references"]),
    ];
    for (tool, args) in cases {
        let named = |input: &str| {
            let mut c = f.tool(tool);
            c.args(&args).arg(input);
            c
        };
        fails_with(
            &run(&mut named("/dev/zero")),
            1,
            &["/dev/zero", "not a regular file (a character device)"],
        );
        fails_with(&run(&mut named(huge)), 1, &["huge.json", "larger than"]);
        fails_with(
            &run_with_input(&mut named("-"), &at_limit),
            1,
            &["stdin", "larger than"],
        );
    }
    // Within the limit, an error quoting the input quotes a bounded part of it.
    let junk = vec![b'x'; 1 << 20];
    let mut references = f.tool("store-add");
    references.args(["--name", "a", src, "--references", "-"]);
    let out = run_with_input(&mut references, &junk);
    fails_with(&out, 1, &["characters left out", "is not in the Nix store"]);
    assert!(out.stderr.len() < 4096, "{} bytes", out.stderr.len());
}

/// mklayers' output for a closure.
fn layers_of(f: &Fixture, args: &[&str]) -> String {
    ok(&run(f.tool("mklayers").args(args)))
}

#[test]
fn mklayers_closure_of_takes_manifests_and_references() {
    let f = Fixture::new();
    let by_path = layers_of(&f, &["--closure-of", &f.hello, "--closure-of", &f.bash]);
    let hello = f.hello_json.to_str().unwrap();
    let bash = f.bash_json.to_str().unwrap();
    assert_eq!(
        layers_of(&f, &["--closure-of", hello, "--closure-of", bash]),
        by_path
    );
    assert_eq!(
        layers_of(
            &f,
            &[
                "--inputs",
                bash,
                "--closure-of",
                hello,
                "--closure-of",
                "@bash"
            ]
        ),
        by_path
    );
    let out = run(f
        .tool("mklayers")
        .args(["--closure-of", "@bash/../x", "--inputs", bash]));
    fails_with(&out, 2, &["--closure-of", "not a canonical path"]);
}

#[test]
fn mkimage_contents_and_cmd_take_manifests_and_references() {
    let f = Fixture::new();
    let layers = f.file(
        "layers.json",
        &layers_of(&f, &["--closure-of", &f.hello, "--closure-of", &f.bash]),
    );
    let image = |name: &str, args: &[&str]| {
        let out = f.work.path().join(name);
        ok(&run(f
            .tool("mkimage")
            .arg(&layers)
            .args(["--name", "app", "--tag", "1"])
            // The hello script's /bin/sh is not in these images: only how the paths are
            // given is compared here (the start check has its own tests).
            .arg("--no-start-check")
            .args(args)
            .arg("-o")
            .arg(&out)));
        fs::read(out).unwrap()
    };
    let cmd = format!("{}/bin/hello", f.hello);
    let by_path = image(
        "a.tar",
        &["--contents", &f.hello, "--contents", &f.bash, "--cmd", &cmd],
    );
    let hello = f.hello_json.to_str().unwrap();
    let bash = f.bash_json.to_str().unwrap();
    let by_manifest = image(
        "b.tar",
        &[
            "--contents",
            hello,
            "--contents",
            bash,
            "--cmd",
            "@hello/bin/hello",
        ],
    );
    assert!(by_path == by_manifest, "the same image either way");
    let by_reference = image(
        "c.tar",
        &[
            "--inputs",
            hello,
            "--inputs",
            bash,
            "--contents",
            "@hello",
            "--contents",
            "@bash",
            "--cmd",
            "@hello/bin/hello",
        ],
    );
    assert!(by_path == by_reference, "the same image either way");

    // --contents takes one value: the layers file after it is the positional operand, and
    // a layers file given to --contents is named as such.
    let out = f.work.path().join("d.tar");
    let o = run(f
        .tool("mkimage")
        .args(["--name", "app", "--contents", &f.hello])
        .arg(&layers)
        .arg("-o")
        .arg(&out));
    ok(&o);
    let o = run_with_input(
        f.tool("mkimage")
            .args(["--name", "app", "--contents", &f.hello, &f.bash, "-o"])
            .arg(&out),
        &fs::read(&layers).unwrap(),
    );
    fails_with(&o, 2, &["LAYERS", &f.bash, "--contents A --contents B"]);
    let o = run(f
        .tool("mkimage")
        .args(["--name", "app", "--contents"])
        .arg(&layers)
        .arg("-o")
        .arg(f.work.path().join("e.tar")));
    fails_with(&o, 1, &["layers.json", "layers JSON", "LAYERS"]);
    // Unknown and hostile references write nothing.
    for (flag, value, msg) in [
        ("--cmd", "@zsh", "no input path is named 'zsh'"),
        (
            "--entrypoint",
            "@hello/../../etc/passwd",
            "not a canonical path",
        ),
        ("--contents", "@hello/../..", "not a canonical path"),
    ] {
        let out = f.work.path().join("f.tar");
        let o = run(f
            .tool("mkimage")
            .arg(&layers)
            .args(["--name", "app", "--inputs", hello, flag, value, "-o"])
            .arg(&out));
        fails_with(&o, 2, &[flag, msg]);
        assert!(!out.exists());
    }
}

#[test]
fn print_path_prints_just_the_path() {
    let f = Fixture::new();
    let src = f.work.path().join("src/hello");
    let out = ok(&run(f
        .tool("store-add")
        .args(["--print-path", "--name", "hello-2.12"])
        .arg(&src)));
    assert_eq!(out, format!("{}\n", f.hello));
    let wrap = |extra: &[&str]| {
        run(f
            .tool("mkwrapper")
            .arg("wrap")
            .args(extra)
            .arg("--inputs")
            .arg(&f.bash_json)
            .arg("--inputs")
            .arg(&f.hello_json)
            .args(["--bash", "@bash", "@hello/bin/hello", "hi", "--"])
            .args(["--add-flag", "@hello/share/app.py", "--set", "AT", "@@home"]))
    };
    let listing = tree_listing(&f.root);
    // A dry run prints the script as it will be installed, and writes nothing.
    let script = ok(&wrap(&["--dry-run"]));
    assert_eq!(tree_listing(&f.root), listing, "a dry run writes nothing");
    let planned = ok(&wrap(&["--dry-run", "--print-path"]));
    assert_eq!(tree_listing(&f.root), listing, "a dry run writes nothing");
    let path = ok(&wrap(&["--print-path"]));
    assert_eq!(path, planned);
    let path = path.trim_end();
    assert!(
        path.starts_with("/nix/store/") && path.ends_with("-hi"),
        "{path}"
    );
    let base = path.trim_start_matches("/nix/store/");
    let installed = fs::read_to_string(f.root.join("nix/store").join(base).join("bin/hi")).unwrap();
    assert_eq!(script, installed);
    // @NAME in flag values: expanded; @@ is a literal @.
    assert!(
        script.contains(&format!("'{}/share/app.py'", f.hello)),
        "{script}"
    );
    assert!(
        script.contains("export AT='@home'") || script.contains("AT=@home"),
        "{script}"
    );
    // The JSON output names the same path.
    let info = ok(&wrap(&[]));
    assert_eq!(json_lines(&info)[0]["path"], path);
}

#[test]
fn mkwrapper_reads_operands_under_the_store_root() {
    let f = Fixture::new();
    // With --tree, @bash is a store path whose files are under the root, not on the host.
    let tree = f.work.path().join("tree");
    ok(&run(f
        .tool("mkwrapper")
        .args(["wrap", "--tree"])
        .arg(&tree)
        .arg("--inputs")
        .arg(&f.bash_json)
        .arg("--inputs")
        .arg(&f.hello_json)
        .args(["--bash", "@bash", "@hello/bin/hello", "hi"])));
    let script = fs::read_to_string(tree.join("bin/hi")).unwrap();
    // The bash operand given as its manifest (what store-add printed) means the same.
    let tree2 = f.work.path().join("tree2");
    ok(&run(f
        .tool("mkwrapper")
        .args(["wrap", "--tree"])
        .arg(&tree2)
        .arg("--inputs")
        .arg(&f.hello_json)
        .arg("--bash")
        .arg("bash.json")
        .args(["@hello/bin/hello", "hi"])));
    assert_eq!(
        fs::read_to_string(tree2.join("bin/hi")).unwrap(),
        script.replace(tree.to_str().unwrap(), tree2.to_str().unwrap())
    );
    // --dry-run with --tree prints the same script and writes no tree.
    let dry = f.work.path().join("dry");
    let printed = ok(&run(f
        .tool("mkwrapper")
        .args(["wrap", "--dry-run", "--tree"])
        .arg(&dry)
        .arg("--inputs")
        .arg(&f.bash_json)
        .arg("--inputs")
        .arg(&f.hello_json)
        .args(["--bash", "@bash", "@hello/bin/hello", "hi"])));
    assert!(!dry.exists(), "a dry run writes no tree");
    assert_eq!(
        printed,
        script.replace(tree.to_str().unwrap(), dry.to_str().unwrap())
    );
    assert!(
        script.starts_with(&format!("#! {}/bin/bash", f.bash)),
        "{script}"
    );
}

#[test]
fn mkwrapper_errors_say_what_to_do() {
    let f = Fixture::new();
    // A JRE package, not a JRE home: the home inside it is suggested.
    let src = f.work.path().join("src/jre");
    executable(
        &src.join("usr/lib/jvm/java-17-openjdk-amd64/bin/java"),
        "#!/bin/sh\n",
    );
    let jre_json = f.work.path().join("jre.json");
    f.add(&src, "openjdk-17-jre-headless-17.0.15", &jre_json);
    let jar = f.file("app.jar", "jar");
    let out = run(f
        .tool("mkwrapper")
        .arg("java")
        .arg("--inputs")
        .arg(&f.bash_json)
        .arg("--inputs")
        .arg(&jre_json)
        .args([
            "--bash",
            "@bash",
            "--jre",
            "@openjdk-17-jre-headless",
            "--jar",
        ])
        .arg(&jar)
        .args(["--name", "app", "--version", "1"]));
    fails_with(
        &out,
        1,
        &["--jre @openjdk-17-jre-headless/usr/lib/jvm/java-17-openjdk-amd64"],
    );
    // The same with the package given as its manifest: the hint names the path.
    let out = run(f
        .tool("mkwrapper")
        .arg("java")
        .args(["--bash", "bash.json", "--jre", "jre.json"])
        .arg("--jar")
        .arg(&jar)
        .args(["--name", "app", "--version", "1"]));
    fails_with(
        &out,
        1,
        &["-openjdk-17-jre-headless-17.0.15/usr/lib/jvm/java-17-openjdk-amd64"],
    );
    // A manifest of several paths where one operand is wanted.
    f.file(
        "two.json",
        &format!(
            "{}{}",
            fs::read_to_string(&f.bash_json).unwrap(),
            fs::read_to_string(&f.hello_json).unwrap()
        ),
    );
    let out = run(f
        .tool("mkwrapper")
        .args(["wrap", "--bash", "two.json", "/usr/bin/env", "w"]));
    fails_with(&out, 2, &["--bash", "two.json", "names 2 paths"]);
    // A makeWrapper flag before `--`.
    let out = run(f.tool("mkwrapper").args([
        "wrap",
        "--bash",
        "/usr",
        "--set",
        "A",
        "1",
        "/usr/bin/env",
        "w",
    ]));
    fails_with(&out, 2, &["--set", "after `--`"]);
    // An unknown reference in a flag value lists the known names.
    let out = run(f
        .tool("mkwrapper")
        .arg("wrap")
        .arg("--inputs")
        .arg(&f.bash_json)
        .args([
            "--bash",
            "@bash",
            "/usr/bin/env",
            "w",
            "--",
            "--add-flag",
            "@quotes/x",
        ]));
    fails_with(&out, 2, &["no input path is named 'quotes'", "bash-5.2"]);
}
