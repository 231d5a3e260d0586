//! mkrootfs: the rootfs basics (users, CA bundle, /usr/bin/env) and mkimage's /tmp, in a
//! container built from Debian .debs and run in Docker; their store paths reproducible;
//! hostile inputs refused. And the second example (examples/pyhello), built and answering.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// The .debs the container needs: bash, libc and getent, coreutils (env, id), python for
/// TLS, and ca-certificates.
const DEBS: &[&str] = &[
    "bash",
    "libtinfo6",
    "libc6",
    "libgcc-s1",
    "libc-bin",
    "coreutils",
    "libacl1",
    "libattr1",
    "libgmp10",
    "libselinux1",
    "libpcre2-8-0",
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libssl3",
    "zlib1g",
    "libexpat1",
    "ca-certificates",
];

/// Download `DEBS` once into the test target's tmp dir (kept between runs; `.done` holds
/// the list it was made for).
fn debs() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rootfs-debs");
    let done = dir.join(".done");
    let names = DEBS.join(" ");
    if std::fs::read_to_string(&done).ok().as_deref() != Some(names.as_str()) {
        std::fs::create_dir_all(&dir).unwrap();
        let script = format!(
            "apt-get download {names} || {{ apt-get update -qq && apt-get download {names}; }}"
        );
        let out = Command::new("bash")
            .args(["-c", &script])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "apt-get download: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&done, &names).unwrap();
    }
    dir
}

/// The .deb files of `DEBS` in `dir`.
fn deb_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            DEBS.iter().any(|d| name.starts_with(&format!("{d}_")))
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), DEBS.len(), "{files:?}");
    files
}

/// A strata tool on the store at `root`, run by bash under `umask` (the tools inherit it).
fn under_umask(exe: &str, root: &Path, umask: &str) -> Command {
    let mut cmd = Command::new("bash");
    cmd.args(["-c", "umask \"$0\" && exec \"$@\"", umask, exe])
        .env_remove("STRATA_STORE_DIR")
        .env("STRATA_STORE_ROOT", root);
    cmd
}

const MKROOTFS: &str = env!("CARGO_BIN_EXE_mkrootfs");
const STORE_ADD: &str = env!("CARGO_BIN_EXE_store-add");

/// mkrootfs on the store at `root`.
fn mkrootfs_cmd(root: &Path) -> Command {
    let mut cmd = Command::new(MKROOTFS);
    cmd.env_remove("STRATA_STORE_DIR")
        .env("STRATA_STORE_ROOT", root);
    cmd
}

/// Run `cmd` and return its one path-info line.
fn info_of(cmd: &mut Command) -> serde_json::Value {
    let lines = json_lines(&ok(&run(cmd)));
    assert_eq!(lines.len(), 1);
    lines[0].clone()
}

fn path(info: &serde_json::Value) -> String {
    info["path"].as_str().unwrap().to_string()
}

/// The runtime (store-add --deb) and the three mkrootfs paths, in a new store at `root`.
struct Built {
    runtime: Vec<serde_json::Value>,
    nss: serde_json::Value,
    ca: serde_json::Value,
    env: serde_json::Value,
}

fn build(root: &Path, debs: &Path, umask: &str) -> Built {
    let runtime_text = ok(&run(under_umask(STORE_ADD, root, umask)
        .arg("--deb")
        .args(deb_files(debs))));
    let runtime = json_lines(&runtime_text);
    let manifest = root.with_extension("runtime.json");
    std::fs::write(&manifest, &runtime_text).unwrap();
    let nss = info_of(
        under_umask(MKROOTFS, root, umask)
            .arg("nss")
            .args(["--user", "app:1000:1000:/home/app:/bin/bash"]),
    );
    let ca = info_of(
        under_umask(MKROOTFS, root, umask)
            .args(["ca-bundle", "--inputs"])
            .arg(&manifest)
            .arg("@ca-certificates"),
    );
    let env = info_of(
        under_umask(MKROOTFS, root, umask)
            .args(["usr-bin-env", "--inputs"])
            .arg(&manifest)
            .arg("@coreutils/usr/bin/env"),
    );
    Built {
        runtime,
        nss,
        ca,
        env,
    }
}

/// The runtime path whose name starts with `name-` and a digit.
fn deb_path(built: &Built, name: &str) -> String {
    built
        .runtime
        .iter()
        .map(path)
        .find(|p| {
            p.split_once('-')
                .and_then(|(_, n)| n.strip_prefix(&format!("{name}-")))
                .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        })
        .unwrap_or_else(|| panic!("{name} in the runtime"))
}

#[test]
fn rootfs_basics_work_in_a_running_container_and_are_reproducible() {
    let debs = debs();
    let work = tempfile::tempdir().unwrap();
    let a = work.path().join("a/store");
    let built = build(&a, &debs, "022");

    // Reproducible: another store in another directory, built under umask 077, gives the
    // same paths and hashes.
    let b = work.path().join("elsewhere/b/store");
    let built_b = build(&b, &debs, "077");
    for (x, y) in [
        (&built.nss, &built_b.nss),
        (&built.ca, &built_b.ca),
        (&built.env, &built_b.env),
    ] {
        assert_eq!(x, y);
    }
    assert_eq!(built.ca["references"], serde_json::json!([]));
    let coreutils = deb_path(&built, "coreutils");
    assert_eq!(built.env["references"], serde_json::json!([coreutils]));

    // The bundle holds every certificate of the package, once.
    let physical = |p: &str| a.join(p.trim_start_matches('/'));
    let bundle = std::fs::read_to_string(
        physical(&path(&built.ca)).join("etc/ssl/certs/ca-certificates.crt"),
    )
    .unwrap();
    let crts = std::fs::read_dir(
        physical(&deb_path(&built, "ca-certificates")).join("usr/share/ca-certificates/mozilla"),
    )
    .unwrap()
    .count();
    assert!(crts > 100);
    assert_eq!(bundle.matches("-----BEGIN CERTIFICATE-----").count(), crts);

    // The image: every package but ca-certificates (the bundle replaces it) and coreutils
    // (only /usr/bin/env's target, in the closure but not linked into /), the three paths,
    // and /tmp from mkimage's own options.
    let mut contents: Vec<String> = built
        .runtime
        .iter()
        .map(path)
        .filter(|p| *p != coreutils && *p != deb_path(&built, "ca-certificates"))
        .collect();
    contents.extend([&built.nss, &built.ca, &built.env].map(path));
    let roots: String = contents.iter().map(|p| format!("{p}\n")).collect();
    let closure = ok(&run_with_input(
        tool("store-query", &a).args(["closure", "-"]),
        roots.as_bytes(),
    ));
    let layers = ok(&run_with_input(
        tool("mklayers", &a).arg("-"),
        closure.as_bytes(),
    ));
    let tar = work.path().join("rootfs.tar");
    let tag = format!("t{}", std::process::id());
    let image = format!("strata-rootfs-test:{tag}");
    ok(&run_with_input(
        tool("mkimage", &a)
            .args(["-", "--name", "strata-rootfs-test", "--tag", &tag])
            .args(contents.iter().flat_map(|p| ["--contents", p]))
            .args(["--extra-commands", "mkdir tmp", "--perms", "/tmp 1777 0 0"])
            .args(["--env", "PATH=/usr/bin:/bin", "--env", "PYTHONHOME=/usr"])
            .arg("-o")
            .arg(&tar),
        layers.as_bytes(),
    ));
    start_docker();
    let loaded = docker(&["load", "-i", tar.to_str().unwrap()]);
    assert!(loaded.contains(&image), "{loaded}");
    let run_in = |user: &str, args: &[&str]| {
        let mut all = vec!["run", "--rm", "--network=none", "--user", user, &image];
        all.extend_from_slice(args);
        docker(&all)
    };

    // Users: nobody and the added user, by name, through /etc/nsswitch.conf and the files.
    let id = format!("{coreutils}/usr/bin/id");
    assert_eq!(
        run_in("0", &[&id, "nobody"]).trim(),
        "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)"
    );
    assert_eq!(
        run_in("app", &[&id]).trim(),
        "uid=1000(app) gid=1000(app) groups=1000(app)"
    );
    // Hosts: `hosts: files` reads the /etc/hosts Docker provides.
    let hosts = run_in("0", &["getent", "hosts", "localhost"]);
    assert!(hosts.contains("localhost"), "{hosts}");
    // /usr/bin/env finds bash on PATH.
    assert_eq!(
        run_in("0", &["/usr/bin/env", "bash", "-c", "echo ok"]).trim(),
        "ok"
    );
    // /tmp: root-owned, 1777, writable by nobody.
    let tmp = run_in(
        "65534",
        &[
            "bash",
            "-c",
            "echo written > /tmp/f && read -r l < /tmp/f && echo \"$l\" && \
             python3.11 -c 'import os; s = os.stat(\"/tmp\"); print(oct(s.st_mode), s.st_uid, s.st_gid)'",
        ],
    );
    assert_eq!(tmp, "written\n0o41777 0 0\n");
    // TLS: python's ssl (OpenSSL) loads the bundle and finds ISRG Root X1.
    let tls = run_in(
        "65534",
        &[
            "python3.11",
            "-c",
            "import ssl; c = ssl.create_default_context(cafile='/etc/ssl/certs/ca-certificates.crt'); \
             cas = c.get_ca_certs(); print(len(cas)); \
             print(any(dict(x[0] for x in ca['subject']).get('commonName') == 'ISRG Root X1' for ca in cas))",
        ],
    );
    let lines: Vec<&str> = tls.lines().collect();
    assert_eq!(lines.get(1), Some(&"True"), "{tls}");
    assert!(lines[0].parse::<usize>().unwrap() > 100, "{tls}");
    docker(&["rmi", &image]);
}

/// A fake ca-certificates package in the store: `files` (relative path, contents) and
/// `links` (relative path, target).
fn fake_package(
    root: &Path,
    work: &Path,
    name: &str,
    files: &[(&str, &[u8])],
    links: &[(&str, &str)],
) -> String {
    let dir = work.join(name);
    for (rel, data) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    for (rel, target) in links {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, p).unwrap();
    }
    path(&info_of(tool("store-add", root).arg(&dir)))
}

#[test]
fn mkrootfs_refuses_hostile_input_with_one_line_and_adds_nothing() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    const PEM: &[u8] = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let certs = "usr/share/ca-certificates/mozilla";
    let good = format!("{certs}/good.crt");
    // A certificate that is a symlink out of the package, to a host file.
    let evil = fake_package(
        &root,
        work.path(),
        "evil",
        &[(&good, PEM)],
        &[(&format!("{certs}/passwd.crt"), "/etc/passwd")],
    );
    // The certificate directory itself a symlink out of the package.
    let evil_dir = fake_package(
        &root,
        work.path(),
        "evil-dir",
        &[],
        &[("usr/share/ca-certificates", "/etc/ssl/certs")],
    );
    // A huge certificate file.
    let mut huge = PEM.to_vec();
    huge.extend(std::iter::repeat_n(b'A', 4 << 20));
    let huge_pkg = fake_package(
        &root,
        work.path(),
        "huge",
        &[(&format!("{certs}/huge.crt"), &huge)],
        &[],
    );
    let list = || ok(&run(tool("store-query", &root).arg("list")));
    let before = list();

    let mk = || mkrootfs_cmd(&root);
    fails_with(
        &run(mk().args(["ca-bundle", &evil])),
        1,
        &["passwd.crt: is a symlink"],
    );
    fails_with(
        &run(mk().args(["ca-bundle", &evil_dir])),
        1,
        &["usr/share/ca-certificates"],
    );
    fails_with(
        &run(mk().args(["ca-bundle", &huge_pkg])),
        1,
        &["huge.crt: larger than"],
    );
    fails_with(&run(mk().args(["ca-bundle", "/etc"])), 2, &["/etc"]);
    // Operands: unknown, relative or non-canonical (a store-looking path that climbs out).
    fails_with(&run(mk().args(["ca-bundle", "@nothing"])), 2, &["@nothing"]);
    fails_with(&run(mk().args(["usr-bin-env", "bin/env"])), 2, &["bin/env"]);
    fails_with(
        &run(mk().args(["usr-bin-env", &format!("{evil}/../../../bin/sh")])),
        2,
        &["not a canonical path"],
    );
    for spec in [
        "ev:il:1:1",
        "evil\nroot:0:0",
        "evil:1:1:/home\nroot::0:0::/:/bin/sh",
        "evil:1:1:/h:/bin/sh:extra",
        "root:5:5",
        "evil:-1:1",
    ] {
        fails_with(&run(mk().args(["nss", "--user", spec])), 2, &["--user"]);
    }
    fails_with(
        &run(mk().args(["usr-bin-env", &format!("{evil}/{good}")])),
        1,
        &["not an executable file"],
    );
    assert_eq!(list(), before, "nothing was added");

    // The good package of the same shape works (the refusals were about the hostile parts).
    let fine = fake_package(&root, work.path(), "fine", &[(&good, PEM)], &[]);
    let manifest = work.path().join("fine.json");
    std::fs::write(
        &manifest,
        ok(&run(tool("store-query", &root).args(["info", &fine]))),
    )
    .unwrap();
    let info = info_of(
        mk().args(["ca-bundle", "--inputs"])
            .arg(&manifest)
            .arg("@fine"),
    );
    assert_eq!(info, info_of(mk().args(["ca-bundle", &fine])));
    let bundle = root
        .join(path(&info).trim_start_matches('/'))
        .join("etc/ssl/certs/ca-certificates.crt");
    assert_eq!(std::fs::read(bundle).unwrap(), PEM);
}

#[test]
fn the_pyhello_example_builds_runs_and_answers() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pyhello");
    let debs = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pyhello-debs");
    let bin = Path::new(STORE_ADD).parent().unwrap();
    start_docker();
    let status = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(&dir)
        .arg("run")
        .arg(format!("OUT={}", out.display()))
        .arg(format!("DEBS_DIR={}", debs.display()))
        .arg(format!("STRATA_BIN={}", bin.display()))
        .arg("TAG=test")
        .env_remove("STRATA_STORE_ROOT")
        .env_remove("STRATA_STORE_DIR")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("make");
    let answer = std::fs::read_to_string(out.join("answer.txt")).unwrap_or_default();
    let _ = Command::new("docker")
        .args(["rm", "-f", "pyhello-example"])
        .output();
    assert!(status.success(), "make run failed; answer: {answer}");
    for line in [
        "HTTP/1.0 200 OK",
        "hello from pyhello",
        "user: pyhello",
        "localhost: 127.0.0.1",
        "isrg-root-x1: True",
        "tmp: writable",
    ] {
        assert!(answer.contains(line), "{line:?} in {answer}");
    }
    docker(&["rmi", "pyhello:test"]);
}
