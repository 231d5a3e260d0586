//! `deb-lock`: names resolved as apt resolves them (apt run live on the same lists), locks
//! built into identical store paths on two store roots, and tampered, vanished or hostile
//! inputs refused before anything enters the store.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// The downloaded `.deb`s, kept between runs.
fn cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("deb-lock-cache")
}

fn require_apt_lists() {
    let has_lists = std::fs::read_dir("/var/lib/apt/lists")
        .map(|d| {
            d.filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
        })
        .unwrap_or(false);
    assert!(
        has_lists,
        "no package lists in /var/lib/apt/lists: run scripts/setup.sh (it runs apt-get update)"
    );
}

/// What `apt-get install --simulate` selects for an empty system: `NAME VERSION` pairs.
fn apt_selects(names: &[&str]) -> BTreeSet<String> {
    let empty = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("apt-get")
        .args(["install", "--simulate", "--no-install-recommends", "-o"])
        .arg(format!("Dir::State::status={}", empty.path().display()))
        .args(names)
        .env("LC_ALL", "C")
        .output()
        .expect("run apt-get");
    let text = ok(&out);
    text.lines()
        .filter_map(|l| l.strip_prefix("Inst "))
        .map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next().unwrap();
            let version = words.next().unwrap().trim_start_matches('(');
            format!("{name} {version}")
        })
        .collect()
}

fn resolved(names: &[&str], extra: &[&str]) -> BTreeSet<String> {
    let root = tempfile::tempdir().unwrap();
    let out = run(deb_lock(root.path()).arg("resolve").args(names).args(extra));
    ok(&out).lines().map(str::to_string).collect()
}

#[test]
fn resolves_each_runtime_as_apt_does_on_an_empty_system() {
    require_apt_lists();
    for name in [
        "openjdk-17-jre-headless",
        "bash",
        "python3",
        "ca-certificates",
    ] {
        let apt = apt_selects(&[name]);
        assert!(apt.iter().any(|l| l.starts_with(&format!("{name} "))));
        let ours = resolved(&[name], &[]);
        let only_apt: Vec<_> = apt.difference(&ours).collect();
        let only_ours: Vec<_> = ours.difference(&apt).collect();
        assert!(
            only_apt.is_empty() && only_ours.is_empty(),
            "{name}: apt alone selects {only_apt:?}; deb-lock alone {only_ours:?}"
        );
    }
}

#[test]
fn why_shows_the_chain_and_exclude_prunes_what_only_it_pulled() {
    require_apt_lists();
    let root = tempfile::tempdir().unwrap();
    let out = run(deb_lock(root.path()).args(["resolve", "python3", "--why", "libssl3"]));
    let text = ok(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("python3  (asked for)"), "{text}");
    assert!(lines.last().unwrap().starts_with("libssl3  ("), "{text}");
    assert!(lines.len() > 2, "{text}");
    let out = run(deb_lock(root.path()).args(["resolve", "bash", "--why", "python3"]));
    fails_with(&out, 1, &["--why python3", "not in the closure of bash"]);

    // base-files alone pulls mawk (for awk) into bash's closure.
    let all = resolved(&["bash"], &[]);
    let pruned = resolved(&["bash"], &["--exclude", "base-files"]);
    let names = |s: &BTreeSet<String>| -> BTreeSet<String> {
        s.iter()
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect()
    };
    let gone: BTreeSet<String> = names(&all).difference(&names(&pruned)).cloned().collect();
    assert_eq!(
        gone,
        ["base-files", "mawk"].map(String::from).into(),
        "{pruned:?}"
    );
}

/// A `NAME := words…` variable of an example's Makefile (with `\` continuations).
fn makefile_words(makefile: &Path, var: &str) -> Vec<String> {
    let text = std::fs::read_to_string(makefile).unwrap();
    let start = text
        .find(&format!("\n{var} := "))
        .unwrap_or_else(|| panic!("{var} in {}", makefile.display()));
    let mut words = Vec::new();
    for line in text[start + var.len() + 5..].lines() {
        let continued = line.trim_end().ends_with('\\');
        words.extend(
            line.trim_end_matches('\\')
                .split_whitespace()
                .map(str::to_string),
        );
        if !continued {
            break;
        }
    }
    words
}

/// The examples' exclusions prune exactly what they name and what only they pulled in: every
/// package the lock leaves out was pulled in through an excluded package (its `--why` chain
/// passes one), and the examples' committed locks hold exactly the pruned set's names.
#[test]
fn the_examples_exclusions_prune_exactly_what_they_name() {
    require_apt_lists();
    let root = tempfile::tempdir().unwrap();
    let names_of = |s: &BTreeSet<String>| -> BTreeSet<String> {
        s.iter()
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect()
    };
    for example in ["agatha", "pyhello"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(example);
        let runtime = makefile_words(&dir.join("Makefile"), "RUNTIME");
        let exclude = makefile_words(&dir.join("Makefile"), "RUNTIME_EXCLUDE");
        let names: Vec<&str> = runtime.iter().map(String::as_str).collect();
        let flags: Vec<String> = exclude
            .iter()
            .flat_map(|e| ["--exclude".to_string(), e.clone()])
            .collect();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        // One full resolution, as a lock: each package's `pulledBy` names who pulled it in.
        let full_lock = root.path().join(format!("{example}-full.lock"));
        ok(&run(deb_lock(root.path())
            .arg("resolve")
            .args(&names)
            .arg("-o")
            .arg(&full_lock)));
        let full: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&full_lock).unwrap()).unwrap();
        let full = full["packages"].as_object().unwrap();
        let all: BTreeSet<String> = full.keys().cloned().collect();
        let kept = names_of(&resolved(&names, &flags));
        assert!(kept.is_subset(&all), "{example}");
        for name in all.difference(&kept) {
            let mut chain = vec![name.clone()];
            while let Some(parent) = full
                .get(chain.last().unwrap())
                .and_then(|p| p["pulledBy"].as_str())
                .filter(|p| !chain.iter().any(|c| c == p))
            {
                chain.push(parent.to_string());
            }
            assert!(
                chain.iter().any(|c| exclude.contains(c)),
                "{example}: {name} left out, but not pulled in by an excluded package: {chain:?}"
            );
        }
        // The committed lock was resolved from these names and exclusions.
        let lock: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("runtime.lock")).unwrap())
                .unwrap();
        let locked: BTreeSet<String> = lock["packages"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            locked, kept,
            "{example}: runtime.lock is not the resolution of its names"
        );
        assert_eq!(lock["request"], serde_json::json!(runtime), "{example}");
        let mut sorted = exclude.clone();
        sorted.sort();
        assert_eq!(lock["exclude"], serde_json::json!(sorted), "{example}");
    }
}

/// Resolve bash into a lock in `dir`.
fn bash_lock(dir: &Path) -> PathBuf {
    let lock = dir.join("bash.lock");
    ok(&run(deb_lock(dir)
        .args(["resolve", "bash", "-o"])
        .arg(&lock)));
    lock
}

fn build(lock: &Path, store_root: &Path, extra: &[&str]) -> std::process::Output {
    run(deb_lock(store_root)
        .arg("build")
        .arg(lock)
        .arg("--cache")
        .arg(cache())
        .args(extra))
}

fn store_entries(root: &Path) -> usize {
    std::fs::read_dir(root.join("nix/store"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_lock_builds_the_same_store_paths_on_two_store_roots() {
    require_apt_lists();
    let work = tempfile::tempdir().unwrap();
    let lock = bash_lock(work.path());
    let text = std::fs::read_to_string(&lock).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
    let bash = &parsed["packages"]["bash"];
    assert_eq!(bash["sha256"].as_str().unwrap().len(), 64);
    assert!(bash["size"].as_u64().unwrap() > 0);
    assert!(bash["filename"].as_str().unwrap().ends_with(".deb"));
    // Resolving again to the same lock is fine and leaves it as it is.
    ok(&run(deb_lock(work.path())
        .args(["resolve", "bash", "-o"])
        .arg(&lock)));
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), text);

    let (a, b) = (work.path().join("a"), work.path().join("b"));
    let first = ok(&build(&lock, &a, &[]));
    // The second build takes every .deb from the cache, checked again.
    let second = ok(&build(&lock, &b, &["--offline"]));
    assert_eq!(first, second);
    let infos = json_lines(&first);
    assert_eq!(infos.len(), parsed["packages"].as_object().unwrap().len());
    let bash_info = infos
        .iter()
        .find(|i| i["path"].as_str().unwrap().contains("-bash-5"))
        .expect("bash's path");
    assert!(!bash_info["references"].as_array().unwrap().is_empty());
    assert!(
        a.join(&bash_info["path"].as_str().unwrap()[1..])
            .join("bin/bash")
            .is_file()
    );
}

#[test]
fn a_deb_one_byte_off_the_lock_is_refused_and_nothing_is_added() {
    require_apt_lists();
    let work = tempfile::tempdir().unwrap();
    let lock = bash_lock(work.path());
    ok(&build(&lock, &work.path().join("warm"), &["--dry-run"]));
    let debs = work.path().join("debs");
    std::fs::create_dir(&debs).unwrap();
    for e in std::fs::read_dir(cache()).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().ends_with(".deb") {
            std::fs::copy(e.path(), debs.join(e.file_name())).unwrap();
        }
    }
    let target = std::fs::read_dir(&debs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("bash_")
        })
        .unwrap();
    let original = std::fs::read(&target).unwrap();

    // One byte changed: same size, other SHA256.
    let mut bytes = original.clone();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&target, &bytes).unwrap();
    let root = work.path().join("store");
    let debs_arg = debs.to_str().unwrap();
    let out = build(&lock, &root, &["--debs", debs_arg, "--offline"]);
    fails_with(
        &out,
        1,
        &[target.to_str().unwrap(), "bash", "SHA256 differs"],
    );
    assert_eq!(store_entries(&root), 0, "nothing may enter the store");

    // One byte more: the size is checked too.
    let mut longer = original;
    longer.push(0);
    std::fs::write(&target, &longer).unwrap();
    let out = build(&lock, &root, &["--debs", debs_arg, "--offline"]);
    fails_with(&out, 1, &["bash", "size differs"]);
    assert_eq!(store_entries(&root), 0, "nothing may enter the store");
}

#[test]
fn a_version_the_archive_no_longer_serves_is_named() {
    require_apt_lists();
    let work = tempfile::tempdir().unwrap();
    let lock = bash_lock(work.path());
    let text = std::fs::read_to_string(&lock).unwrap();
    let mut parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
    let bash = &mut parsed["packages"]["bash"];
    bash["version"] = "5.2.15-2+b99".into();
    bash["filename"] = "pool/main/b/bash/bash_5.2.15-2+b99_amd64.deb".into();
    std::fs::write(&lock, serde_json::to_string_pretty(&parsed).unwrap()).unwrap();
    let root = work.path().join("store");
    let out = run(deb_lock(&root)
        .arg("build")
        .arg(&lock)
        .arg("--cache")
        .arg(work.path().join("empty-cache")));
    fails_with(&out, 1, &["bash=5.2.15-2+b99", "no longer serve"]);
    assert_eq!(store_entries(&root), 0);
}

const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn stanza(name: &str, version: &str, extra: &str) -> String {
    format!(
        "Package: {name}\nVersion: {version}\nArchitecture: all\n\
Filename: pool/main/{name}_{version}_all.deb\nSize: 1000\nSHA256: {SHA}\n{extra}\n"
    )
}

#[test]
fn hostile_indexes_and_locks_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let index = work.path().join("hostile_Packages");
    let lock = work.path().join("x.lock");
    let cases = [
        (
            "Package: aa\nVersion: 1\nArchitecture: all\nFilename: ../../etc/passwd\nSize: 10\nSHA256: "
                .to_string()
                + SHA
                + "\n",
            "Filename '../../etc/passwd'",
        ),
        (
            "Package: aa\nVersion: 1\nArchitecture: all\nFilename: pool/../../../tmp/evil.deb\nSize: 10\nSHA256: "
                .to_string()
                + SHA
                + "\n",
            "Filename 'pool/../../../tmp/evil.deb'",
        ),
        (
            "Package: aa\nVersion: 1\nArchitecture: all\nFilename: a.deb\nSize: 99999999999999999999999\nSHA256: "
                .to_string()
                + SHA
                + "\n",
            "Size '99999999999999999999999'",
        ),
        (
            "Package: aa\nVersion: 1\nArchitecture: all\nFilename: a.deb\nSize: 1099511627776\nSHA256: "
                .to_string()
                + SHA
                + "\n",
            "Size 1099511627776",
        ),
        (
            "Package: aa\nVersion: 1\nArchitecture: all\nFilename: a.deb\nSize: 1\nSHA256: x\n"
                .to_string(),
            "SHA256 'x'",
        ),
        (
            "Package: aa\nVersion: 1\nArchitecture: all\nDepends: bb (~~ 1)\n".to_string(),
            "bad version constraint",
        ),
    ];
    for (text, needle) in cases {
        std::fs::write(&index, text).unwrap();
        let out = run(deb_lock(work.path())
            .args(["resolve", "aa", "--index"])
            .arg(&index)
            .arg("-o")
            .arg(&lock));
        fails_with(&out, 1, &[index.to_str().unwrap(), needle]);
        assert!(!lock.exists(), "no lock may be written ({needle})");
    }

    // A lock edited to point outside the archive is refused before anything is fetched.
    std::fs::write(&index, stanza("aa", "1", "")).unwrap();
    ok(&run(deb_lock(work.path())
        .args(["resolve", "aa", "--index"])
        .arg(&index)
        .arg("-o")
        .arg(&lock)));
    let text = std::fs::read_to_string(&lock).unwrap();
    std::fs::write(
        &lock,
        text.replace("pool/main/aa_1_all.deb", "../../etc/passwd"),
    )
    .unwrap();
    let out = run(deb_lock(work.path())
        .arg("build")
        .arg(&lock)
        .arg("--offline")
        .arg("--cache")
        .arg(work.path()));
    fails_with(&out, 1, &[lock.to_str().unwrap(), "'../../etc/passwd'"]);

    // A package name that apt-get would read as an option is refused too.
    std::fs::write(
        &lock,
        text.replace("\"aa\": {", "\"-oDebug::pkgAcquire=1\": {"),
    )
    .unwrap();
    let out = run(deb_lock(work.path())
        .arg("build")
        .arg(&lock)
        .arg("--cache")
        .arg(work.path()));
    fails_with(
        &out,
        1,
        &["'-oDebug::pkgAcquire=1' is not a Debian package name"],
    );
}

#[test]
fn update_rewrites_the_lock_and_prints_what_changed() {
    let work = tempfile::tempdir().unwrap();
    let index = work.path().join("t_Packages");
    let lock = work.path().join("t.lock");
    std::fs::write(
        &index,
        stanza("aa", "1", "Depends: bb, cc\n")
            + "\n"
            + &stanza("bb", "1", "")
            + "\n"
            + &stanza("cc", "1", ""),
    )
    .unwrap();
    let resolve = |root: &Path| {
        run(deb_lock(root)
            .args(["resolve", "aa", "--index"])
            .arg(&index)
            .arg("-o")
            .arg(&lock))
    };
    assert_eq!(ok(&resolve(work.path())), "aa 1\nbb 1\ncc 1\n");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&lock).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "a lock is readable by all");
    }
    let before = std::fs::read_to_string(&lock).unwrap();

    // The archive moves on: a new a, b gone from its dependencies, d new.
    std::fs::write(
        &index,
        stanza("aa", "1", "Depends: bb, cc\n")
            + "\n"
            + &stanza("aa", "1:0.9", "Depends: cc, dd\n")
            + "\n"
            + &stanza("bb", "1", "")
            + "\n"
            + &stanza("cc", "1", "")
            + "\n"
            + &stanza("dd", "2~rc1", ""),
    )
    .unwrap();
    // Resolving onto the existing lock does not change it silently.
    fails_with(
        &resolve(work.path()),
        1,
        &[lock.to_str().unwrap(), "deb-lock update"],
    );
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), before);

    let out = run(deb_lock(work.path())
        .arg("update")
        .arg(&lock)
        .arg("--index")
        .arg(&index));
    assert_eq!(ok(&out), "~ aa 1 -> 1:0.9\n- bb 1\n+ dd 2~rc1\n");
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&lock).unwrap()).unwrap();
    assert_eq!(after["packages"]["aa"]["version"], "1:0.9");
    assert_eq!(after["packages"]["dd"]["pulledBy"], "aa");
    // Nothing more to change.
    let out = run(deb_lock(work.path())
        .arg("update")
        .arg(&lock)
        .arg("--index")
        .arg(&index));
    assert_eq!(ok(&out), "");
}
