//! Images for another architecture than the machine's: arm64 packages resolved from apt's
//! arm64 lists, added to the store, assembled into an arm64 image that runs under qemu
//! (binfmt_misc), and a closure mixing amd64 and arm64 packages refused.

use std::path::{Path, PathBuf};

use crate::support::*;

/// The downloaded `.deb`s, kept between runs. Not the deb-lock tests' cache: some of those
/// take every `.deb` in theirs as the amd64 closure of bash.
fn cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("arch-debs")
}

fn require_arm64_lists() {
    let has_lists = std::fs::read_dir("/var/lib/apt/lists")
        .map(|d| {
            d.filter_map(Result::ok).any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .contains("_binary-arm64_Packages")
            })
        })
        .unwrap_or(false);
    assert!(
        has_lists,
        "no arm64 package lists in /var/lib/apt/lists: run scripts/setup.sh (dpkg \
         --add-architecture arm64, apt-get update)"
    );
}

/// Resolve bash for `arch` into `dir/bash.ARCH.lock`.
fn bash_lock(dir: &Path, arch: &str) -> PathBuf {
    lock_of(dir, arch, &["bash"])
}

/// Resolve `names` for `arch` into `dir/NAMES.ARCH.lock`.
fn lock_of(dir: &Path, arch: &str, names: &[&str]) -> PathBuf {
    require_arm64_lists();
    let lock = dir.join(format!("{}.{arch}.lock", names.join("+")));
    ok(&run(deb_lock(dir)
        .arg("resolve")
        .args(names)
        .args(["--architecture", arch, "-o"])
        .arg(&lock)));
    lock
}

/// Build a lock into the store at `root`; the path-info lines it printed.
fn build(lock: &Path, root: &Path) -> String {
    ok(&run(deb_lock(root)
        .arg("build")
        .arg(lock)
        .arg("--cache")
        .arg(cache())))
}

/// The cached `.deb` of a locked package.
fn cached_deb(lock: &Path, package: &str) -> PathBuf {
    let parsed = read_json(lock);
    let file = parsed["packages"][package]["filename"].as_str().unwrap();
    cache().join(Path::new(file).file_name().unwrap())
}

#[test]
fn deb_lock_resolves_from_the_arm64_lists() {
    let work = tempfile::tempdir().unwrap();
    let lock = read_json(&bash_lock(work.path(), "arm64"));
    assert_eq!(lock["architecture"], "arm64");
    let packages = lock["packages"].as_object().unwrap();
    assert!(packages.contains_key("bash") && packages.contains_key("libc6"));
    for (name, p) in packages {
        let arch = p["architecture"].as_str().unwrap();
        assert!(arch == "arm64" || arch == "all", "{name} is {arch}");
        if arch == "arm64" {
            let file = p["filename"].as_str().unwrap();
            assert!(file.ends_with("_arm64.deb"), "{name}: {file}");
        }
    }
    assert_eq!(packages["bash"]["architecture"], "arm64");
}

#[test]
fn store_add_takes_an_arm64_deb_and_refuses_a_set_of_two_architectures() {
    let work = tempfile::tempdir().unwrap();
    let arm = bash_lock(work.path(), "arm64");
    let amd = bash_lock(work.path(), "amd64");
    // Fetched (and checked against the locks) into the cache.
    build(&arm, &work.path().join("fetch"));
    build(&amd, &work.path().join("fetch"));
    let bash_arm = cached_deb(&arm, "bash");
    let libc_amd = cached_deb(&amd, "libc6");
    assert!(bash_arm.to_string_lossy().ends_with("_arm64.deb"));

    let root = work.path().join("store");
    let add = |debs: &[&Path]| {
        let mut cmd = tool("store-add", &root);
        cmd.arg("--deb").args(debs);
        run(&mut cmd)
    };
    let first = json_lines(&ok(&add(&[&bash_arm])));
    let again = json_lines(&ok(&add(&[&bash_arm])));
    assert_eq!(first.len(), 1);
    assert_eq!(first, again);
    let path = first[0]["path"].as_str().unwrap();
    assert!(path.contains("-bash-5"), "{path}");
    assert!(root.join(&path[1..]).join("bin/bash").is_file());

    // An arm64 bash with an amd64 libc is refused, naming the second package's file, and
    // nothing is added.
    let before = std::fs::read_dir(root.join("nix/store")).unwrap().count();
    let libc_name = libc_amd.file_name().unwrap().to_string_lossy().into_owned();
    fails_with(
        &add(&[&bash_arm, &libc_amd]),
        1,
        &[&libc_name, "amd64", "arm64", "one architecture"],
    );
    assert_eq!(
        std::fs::read_dir(root.join("nix/store")).unwrap().count(),
        before
    );
}

/// The arm64 packages `names` and their closure built into the store at `root`: the file of
/// path-info lines.
fn arm64_closure(work: &Path, root: &Path, names: &[&str]) -> PathBuf {
    let lock = lock_of(work, "arm64", names);
    let infos = work.join("runtime.arm64.json");
    std::fs::write(&infos, build(&lock, root)).unwrap();
    infos
}

#[test]
fn an_arm64_bash_image_runs_under_emulation() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    let infos = arm64_closure(work.path(), &root, &["bash", "coreutils"]);
    let tar = work.path().join("bash-arm64.tar");
    sh(&format!(
        "export STRATA_STORE_ROOT={root}
         {q} closure {infos} | {l} | \
           {m} --name strata-test/bash-arm64 --tag 1 --contents {infos} --architecture arm64 \
               --cmd /bin/bash --cmd -c --cmd 'echo $(uname -m) $HOSTTYPE' -o {tar}",
        root = root.display(),
        q = env!("CARGO_BIN_EXE_store-query"),
        l = env!("CARGO_BIN_EXE_mklayers"),
        m = env!("CARGO_BIN_EXE_mkimage"),
        infos = infos.display(),
        tar = tar.display()
    ));
    start_docker();
    sh(&format!(
        "{}/scripts/services.sh binfmt",
        env!("CARGO_MANIFEST_DIR")
    ));
    docker(&["load", "-i", tar.to_str().unwrap()]);
    let inspect = docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Architecture}} {{.Variant}} {{.Os}}",
        "strata-test/bash-arm64:1",
    ]);
    assert_eq!(inspect.trim(), "arm64 v8 linux");
    let printed = docker(&[
        "run",
        "--rm",
        "--network=none",
        "--platform",
        "linux/arm64",
        "strata-test/bash-arm64:1",
    ]);
    assert_eq!(printed.trim(), "aarch64 aarch64");
}

#[test]
fn an_amd64_library_in_an_arm64_image_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    let infos = arm64_closure(work.path(), &root, &["bash"]);
    // amd64's libc6, added on its own (its dependencies left out).
    let amd = bash_lock(work.path(), "amd64");
    build(&amd, &work.path().join("fetch"));
    let libc = json_lines(&ok(&run(tool("store-add", &root)
        .arg("--deb")
        .arg(cached_deb(&amd, "libc6")))));
    let libc_path = libc[0]["path"].as_str().unwrap().to_string();
    let closure = ok(&run(tool("store-query", &root)
        .args(["closure"])
        .arg(&infos)
        .arg(&libc_path)));
    let layers = work.path().join("layers.json");
    std::fs::write(
        &layers,
        ok(&run_with_input(
            &mut tool("mklayers", &root),
            closure.as_bytes(),
        )),
    )
    .unwrap();
    let tar = work.path().join("mixed.tar");
    let out = run(tool("mkimage", &root)
        .arg(&layers)
        .args(["--name", "mixed", "--tag", "1", "--architecture", "arm64"])
        .arg("--contents")
        .arg(&infos)
        .args(["--allow-partial-closure", "--cmd", "/bin/bash", "-o"])
        .arg(&tar));
    fails_with(
        &out,
        1,
        &[
            &format!("{libc_path}/"),
            "is an ELF file for amd64, not for the image's architecture arm64",
        ],
    );
    assert!(!tar.exists(), "an output was written");
    // The same layers as amd64: the arm64 bash is refused the same way.
    let out = run(tool("mkimage", &root)
        .arg(&layers)
        .args(["--name", "mixed", "--tag", "1", "--architecture", "amd64"])
        .args(["--allow-partial-closure", "--cmd", "/bin/bash", "-o"])
        .arg(&tar));
    fails_with(
        &out,
        1,
        &["is an ELF file for arm64, not for the image's architecture amd64"],
    );
    assert!(!tar.exists(), "an output was written");
}

#[test]
fn the_platform_is_the_architecture_and_its_variant() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    let layers = work.path().join("layers.json");
    std::fs::write(&layers, "[]").unwrap();
    let image = |extra: &[&str], out: &Path| {
        run(tool("mkimage", &root)
            .arg(&layers)
            .args(["--name", "platform", "--tag", "1"])
            .args(extra)
            .arg("-o")
            .arg(out))
    };
    let cases: [(&[&str], &str, Option<&str>); 4] = [
        (&["--architecture", "arm64"], "arm64", Some("v8")),
        (
            &["--architecture", "arm64", "--variant", "v9"],
            "arm64",
            Some("v9"),
        ),
        (&["--architecture", "arm"], "arm", Some("v7")),
        (&["--architecture", "amd64"], "amd64", None),
    ];
    for (i, (flags, arch, variant)) in cases.into_iter().enumerate() {
        let tar = work.path().join(format!("{i}.tar"));
        ok(&image(flags, &tar));
        let config = config_of(&tar);
        assert_eq!(config["architecture"], arch, "{flags:?}");
        assert_eq!(config["variant"].as_str(), variant, "{flags:?}");
    }
    let tar = work.path().join("bad.tar");
    fails_with(
        &image(&["--architecture", "aarch64"], &tar),
        2,
        &["--architecture 'aarch64'", "arm64"],
    );
    fails_with(
        &image(&["--architecture", "arm64", "--variant", "v8/x"], &tar),
        2,
        &["--variant 'v8/x'"],
    );
    assert!(!tar.exists());
}
