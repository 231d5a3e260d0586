//! The store under attack and under faults: adds from several PID namespaces sharing one
//! store, concurrent writers held at a barrier, a full disk, setuid files in packages, hostile
//! temp dirs, and a campaign of SIGKILLs after which nothing is lost or left behind.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// What a store's tmp dir holds besides its guard file: scratch areas (live or abandoned).
pub fn scratch_left(root: &Path) -> Vec<String> {
    tree_listing(&root.join("nix/var/strata/tmp"))
        .into_iter()
        .filter(|e| e != ".scratch.lock")
        .collect()
}

/// `store-add` as PID > 1 of a new PID namespace with its own /proc, as in a container: the
/// PIDs it sees and the PIDs of adds in other namespaces mean nothing to each other.
fn add_in_pid_namespace(root: &Path, args: &[&Path]) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
        "bash",
        "-c",
    ])
    // Two children first, so store-add is PID 4 rather than 1; `exit` after it keeps
    // bash from exec'ing it.
    .arg(r#": & : & wait; "$0" "$@"; exit $?"#)
    .arg(env!("CARGO_BIN_EXE_store-add"))
    .args(args)
    .env("STRATA_STORE_ROOT", root)
    .env_remove("STRATA_STORE_DIR");
    cmd
}

fn spawn_piped(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Files under the store's scratch areas (what an add has copied so far).
fn scratch_files(root: &Path) -> usize {
    scratch_left(root).len()
}

#[test]
fn adds_in_other_pid_namespaces_never_take_a_live_scratch_area() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    bash_in(
        work.path(),
        "mkdir big; for i in $(seq 1 20000); do echo \"$i\" > big/f$i; done; echo small > small",
    );
    let mut first = spawn_piped(&mut add_in_pid_namespace(
        root.path(),
        &[&work.path().join("big")],
    ));
    wait_until("the first add copies", Duration::from_secs(60), || {
        scratch_files(root.path()) > 200
    });
    // A second container's add makes its own scratch area, and reclaims what it thinks was
    // abandoned, while the first is still copying.
    let second = run(&mut add_in_pid_namespace(
        root.path(),
        &[&work.path().join("small")],
    ));
    ok(&second);
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first add finished before the second ran: the test proves nothing"
    );
    let out = first.wait_with_output().unwrap();
    let info = &json_lines(&ok(&out))[0];
    assert!(info["path"].as_str().unwrap().ends_with("-big"));
    ok(&run(tool("store-query", root.path()).arg("verify")));
    assert!(scratch_left(root.path()).is_empty());
}

/// The inode numbers of the given files.
fn inodes(paths: &[PathBuf]) -> BTreeSet<u64> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().ino())
        .collect()
}

/// How many lock requests wait on these inodes (`->` lines of /proc/locks).
fn lock_waiters(inodes: &BTreeSet<u64>) -> usize {
    let locks = std::fs::read_to_string("/proc/locks").unwrap();
    locks
        .lines()
        .filter(|l| l.contains("->"))
        .filter(|l| {
            l.split_whitespace()
                .find(|f| f.matches(':').count() == 2)
                .and_then(|f| f.rsplit(':').next())
                .and_then(|i| i.parse::<u64>().ok())
                .is_some_and(|i| inodes.contains(&i))
        })
        .count()
}

#[test]
fn concurrent_adds_wait_for_the_path_lock_and_make_one_copy_each() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    bash_in(
        work.path(),
        "mkdir same; head -c 3000000 /dev/urandom > same/big; echo a > same/small\n\
         for i in 1 2 3 4; do mkdir diff$i; head -c 1000000 /dev/urandom > diff$i/f; done",
    );
    let inputs: Vec<PathBuf> = (0..8)
        .map(|i| match i % 2 {
            0 => work.path().join("same"),
            _ => work.path().join(format!("diff{}", i / 2 + 1)),
        })
        .collect();
    // The barrier: the test holds every path's lock, so all eight adds finish their copies and
    // then queue on the locks; released together, they install at the same moment.
    let lock_dir = root.path().join("nix/var/strata/locks");
    std::fs::create_dir_all(&lock_dir).unwrap();
    let mut lock_files = Vec::new();
    let mut held = Vec::new();
    let distinct: BTreeSet<&PathBuf> = inputs.iter().collect();
    assert_eq!(distinct.len(), 5);
    for input in distinct {
        let dry = run(tool("store-add", root.path()).arg("--dry-run").arg(input));
        let path = json_lines(&ok(&dry))[0]["path"]
            .as_str()
            .unwrap()
            .to_string();
        let hash = &path["/nix/store/".len().."/nix/store/".len() + 32];
        let lock = lock_dir.join(format!("{hash}.lock"));
        let file = std::fs::File::create(&lock).unwrap();
        file.try_lock().unwrap();
        lock_files.push(lock);
        held.push(file);
    }
    let watched = inodes(&lock_files);
    let mut children: Vec<Child> = inputs
        .iter()
        .map(|input| spawn_piped(tool("store-add", root.path()).arg(input)))
        .collect();
    wait_until(
        "all eight adds wait for their path's lock",
        Duration::from_secs(60),
        || lock_waiters(&watched) == 8,
    );
    for c in &mut children {
        assert!(c.try_wait().unwrap().is_none(), "an add did not wait");
    }
    drop(held);
    let mut paths = std::collections::BTreeMap::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let info = &json_lines(&ok(&out))[0];
        *paths
            .entry(info["path"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(paths.len(), 5, "{paths:?}");
    let store = tree_listing(&root.path().join("nix/store"));
    assert_eq!(
        store.iter().filter(|p| !p.contains('/')).count(),
        5,
        "{store:?}"
    );
    ok(&run(tool("store-query", root.path()).arg("verify")));
    assert!(scratch_left(root.path()).is_empty());
}

/// Build a package whose data holds a setuid-root program followed by many files, so that
/// unpacking it takes a while after the setuid file is written.
fn setuid_deb(dir: &Path) -> PathBuf {
    let pkg = dir.join("pkg");
    bash_in(
        dir,
        "mkdir -p pkg/DEBIAN pkg/usr/bin pkg/usr/share/many\n\
         printf 'Package: suid\\nVersion: 1\\nArchitecture: all\\nMaintainer: t <t@example.org>\\nDescription: t\\n' > pkg/DEBIAN/control\n\
         cp /bin/true pkg/usr/bin/aa-suid; chmod 4755 pkg/usr/bin/aa-suid\n\
         mkdir pkg/usr/bin/sgid-dir; chmod 2775 pkg/usr/bin/sgid-dir\n\
         for i in $(seq 1 4000); do echo $i > pkg/usr/share/many/f$i; done",
    );
    let deb = dir.join("suid.deb");
    let out = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "--build"])
        .arg(&pkg)
        .arg(&deb)
        .output()
        .expect("dpkg-deb");
    assert!(out.status.success());
    deb
}

#[test]
fn unpacking_a_package_never_writes_a_special_bit_or_an_open_directory() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let deb = setuid_deb(work.path());
    let tmp = root.path().join("nix/var/strata/tmp");
    let mut seen_scratch = 0;
    let mut problems = BTreeSet::new();
    let mut child = spawn_piped(tool("store-add", root.path()).arg("--deb").arg(&deb));
    // Watch every scratch area while the add runs, as a local user would.
    while child.try_wait().unwrap().is_none() {
        for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_dir() {
                continue;
            }
            seen_scratch += 1;
            if meta.mode() & 0o7777 != 0o700 {
                problems.insert(format!(
                    "scratch {:?} is {:o}",
                    entry.file_name(),
                    meta.mode() & 0o7777
                ));
            }
            for file in ["tree/usr/bin/aa-suid", "tree/usr/bin/sgid-dir"] {
                if let Ok(m) = std::fs::symlink_metadata(entry.path().join(file))
                    && m.mode() & 0o7000 != 0
                {
                    problems.insert(format!("{file} is {:o} on disk", m.mode() & 0o7777));
                }
            }
        }
    }
    let out = child.wait_with_output().unwrap();
    let info = &json_lines(&ok(&out))[0];
    assert!(seen_scratch > 0, "never saw the add's scratch area");
    assert!(problems.is_empty(), "{problems:?}");
    let bin = root
        .path()
        .join(info["path"].as_str().unwrap().trim_start_matches('/'))
        .join("usr/bin/aa-suid");
    assert_eq!(
        std::fs::metadata(bin).unwrap().permissions().mode() & 0o7777,
        0o555
    );
}

#[test]
fn dry_runs_make_fresh_temp_dirs_and_follow_no_planted_link() {
    let work = tempfile::tempdir().unwrap();
    let deb = setuid_deb(work.path());
    // Another user plants the old fixed name as a link to a directory of theirs (or of a
    // victim's) holding entries that look like abandoned scratch areas.
    let tmpdir = work.path().join("tmpdir");
    let victim = work.path().join("victim");
    std::fs::create_dir_all(victim.join("999999-0")).unwrap();
    std::fs::write(victim.join("4194000-1"), "keep").unwrap();
    std::fs::create_dir(&tmpdir).unwrap();
    std::os::unix::fs::symlink(&victim, tmpdir.join("strata-scratch")).unwrap();
    let root = work.path().join("unused-root");
    let out = run(tool("store-add", &root)
        .env("TMPDIR", &tmpdir)
        .args(["--deb", "--dry-run"])
        .arg(&deb));
    ok(&out);
    assert_eq!(
        tree_listing(&victim),
        ["4194000-1", "999999-0"],
        "entries behind the planted link were touched"
    );
    assert_eq!(tree_listing(&tmpdir), ["strata-scratch"], "temp dir left");
    assert!(!root.exists(), "a dry run wrote the store");
}

#[test]
fn a_registration_that_cannot_be_written_leaves_nothing_behind() {
    // A tmpfs of 16 pages in a private mount namespace, filled so that exactly one page is
    // free: the add's contents (one page) fit, its registration does not.
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(work.path().join("a"), "first\n").unwrap();
    std::fs::write(work.path().join("b"), "second\n").unwrap();
    let script = r#"
        set -u
        add() { STRATA_STORE_ROOT="$root" "$exe" "$@"; }
        mount -t tmpfs -o size=64k strata-full "$root"
        add "$work/a" > /dev/null
        dd if=/dev/zero of="$root/filler" bs=4096 2>/dev/null || true
        truncate -s -4096 "$root/filler"
        if add "$work/b" > "$work/out" 2> "$work/err"; then echo "ADD-SUCCEEDED"; fi
        echo "STORE:"; ls -A "$root/nix/store"
        echo "TMP:"; ls -A "$root/nix/var/strata/tmp"
        echo "DB:"; ls -A "$root/nix/var/strata/db/nix/store"
        rm "$root/filler"
        add "$work/b" > /dev/null && echo "RETRY-OK"
        STRATA_STORE_ROOT="$root" "$query" verify && echo "VERIFY-OK"
    "#;
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash", "-c", script])
        .env("root", &root)
        .env("work", work.path())
        .env("exe", env!("CARGO_BIN_EXE_store-add"))
        .env("query", env!("CARGO_BIN_EXE_store-query"))
        .env_remove("STRATA_STORE_DIR")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = std::fs::read_to_string(work.path().join("err")).unwrap_or_default();
    assert!(!text.contains("ADD-SUCCEEDED"), "{text}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    let section = |name: &str| -> Vec<&str> {
        let start = text.find(&format!("{name}:\n")).unwrap() + name.len() + 2;
        text[start..]
            .lines()
            .take_while(|l| !l.ends_with(':') && !l.ends_with("-OK"))
            .collect()
    };
    assert_eq!(section("STORE").len(), 1, "{text}");
    assert!(section("STORE")[0].ends_with("-a"), "{text}");
    assert_eq!(section("TMP"), [".scratch.lock"], "{text}");
    assert_eq!(section("DB").len(), 1, "{text}");
    assert!(text.contains("RETRY-OK"), "{text}");
    assert!(text.contains("VERIFY-OK"), "{text}");
}

#[test]
fn verify_finds_what_interrupted_adds_left_and_repair_reclaims_it() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    bash_in(
        work.path(),
        "mkdir kept; echo kept > kept/f; echo lost > lost",
    );
    let kept = store_add(root.path(), "kept", &work.path().join("kept"));
    let lost = store_add(root.path(), "lost", &work.path().join("lost"));
    let r = root.path();
    // What a kill leaves: contents renamed into place but never registered, an abandoned
    // scratch area (nobody holds its lock), and a registration temp file of an older strata.
    let lost_name = lost.trim_start_matches("/nix/store/");
    std::fs::remove_file(r.join(format!("nix/var/strata/db/nix/store/{lost_name}.json"))).unwrap();
    std::fs::create_dir_all(r.join("nix/var/strata/tmp/scratch-abandoned/out")).unwrap();
    std::fs::write(r.join("nix/var/strata/tmp/scratch-abandoned/out/x"), "x").unwrap();
    std::fs::write(r.join("nix/var/strata/db/nix/store/.tmp-77-0"), "{").unwrap();
    let out = run(tool("store-query", r).arg("verify"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 3, "{err}");
    for needle in [lost_name, "scratch-abandoned", ".tmp-77-0"] {
        assert!(err.contains(needle), "{needle} not reported: {err}");
    }
    let repaired = run(tool("store-query", r).args(["verify", "--repair"]));
    ok(&repaired);
    assert_eq!(
        String::from_utf8_lossy(&repaired.stderr)
            .matches("reclaimed")
            .count(),
        3
    );
    let clean = run(tool("store-query", r).arg("verify"));
    ok(&clean);
    assert!(clean.stderr.is_empty());
    assert_eq!(
        tree_listing(&r.join("nix/store"))
            .into_iter()
            .filter(|p| !p.contains('/'))
            .collect::<Vec<_>>(),
        [kept.trim_start_matches("/nix/store/")]
    );
    assert!(scratch_left(r).is_empty());
}

/// Everything a store holds must be accounted for by its registrations: every entry of the
/// store dir is registered (and verify re-hashed it), the tmp dir holds only its guard file,
/// and the db only registrations.
fn assert_accounted_for(root: &Path) {
    let store: BTreeSet<String> = std::fs::read_dir(root.join("nix/store"))
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let db: BTreeSet<String> = std::fs::read_dir(root.join("nix/var/strata/db/nix/store"))
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let registered: BTreeSet<String> = db
        .iter()
        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
        .collect();
    assert_eq!(registered.len(), db.len(), "stray files in the db: {db:?}");
    assert_eq!(store, registered, "store entries and registrations differ");
    assert!(
        scratch_left(root).is_empty(),
        "left in tmp: {:?}",
        scratch_left(root)
    );
}

#[test]
fn a_hundred_kills_lose_nothing_and_leave_nothing() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // Inputs of several sizes, three variants each so most adds are new paths.
    bash_in(
        work.path(),
        "for v in 1 2 3; do\n\
           echo tiny $v > tiny$v\n\
           mkdir small$v; for i in $(seq 1 40); do echo $v $i > small$v/f$i; done\n\
           mkdir medium$v; for i in $(seq 1 30); do head -c 100000 /dev/urandom > medium$v/f$i; done; echo $v > medium$v/v\n\
           mkdir large$v; for i in $(seq 1 600); do head -c 20000 /dev/urandom > large$v/f$i; done; echo $v > large$v/v\n\
         done",
    );
    let inputs: Vec<PathBuf> = ["tiny", "small", "medium", "large"]
        .iter()
        .flat_map(|kind| (1..=3).map(move |v| format!("{kind}{v}")))
        .map(|n| work.path().join(n))
        .collect();
    let mut rng = SplitMix64::new(0xdead_beef);
    let (mut kills, mut finished, mut rounds) = (0, 0, 0);
    let start = Instant::now();
    while kills < 100 {
        rounds += 1;
        assert!(
            rounds < 600 && start.elapsed() < Duration::from_secs(240),
            "only {kills} kills in {rounds} rounds"
        );
        let concurrent = 1 + rng.below(3) as usize;
        let mut children: Vec<Child> = (0..concurrent)
            .map(|_| {
                let input = &inputs[rng.below(inputs.len() as u64) as usize];
                let mut cmd = if rng.chance(30) {
                    add_in_pid_namespace(root.path(), &[input])
                } else {
                    let mut cmd = tool("store-add", root.path());
                    cmd.arg(input);
                    cmd
                };
                cmd.stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.below(120)));
        for c in &mut children {
            if c.try_wait().unwrap().is_some() {
                finished += 1;
            } else {
                c.kill().unwrap();
                kills += 1;
            }
            c.wait().unwrap();
        }
    }
    eprintln!("{kills} kills, {finished} adds finished, {rounds} rounds");
    // Nothing registered was damaged; what the kills left is found and reclaimed.
    let repaired = run(tool("store-query", root.path()).args(["verify", "--repair"]));
    ok(&repaired);
    let clean = run(tool("store-query", root.path()).arg("verify"));
    ok(&clean);
    assert!(clean.stderr.is_empty());
    assert_accounted_for(root.path());
    // And every input still adds, to the path a dry run names.
    for input in &inputs {
        let dry = ok(&run(tool("store-add", root.path())
            .arg("--dry-run")
            .arg(input)));
        let real = ok(&run(tool("store-add", root.path()).arg(input)));
        assert_eq!(dry, real);
    }
    ok(&run(tool("store-query", root.path()).arg("verify")));
    assert_accounted_for(root.path());
}
