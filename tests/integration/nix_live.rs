//! Live differential tests against the installed Nix 2.8: generated trees added by both
//! `nix-store` and strata must get the same store paths, NAR hashes and sizes.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

const NAMES: &[&[u8]] = &[
    b"a",
    b"b",
    b"Z",
    b"file.txt",
    b"with space",
    b"new\nline",
    b"tab\there",
    b"back\\slash",
    b"quote\"s'",
    b"bad\xffbyte",
    "\u{e9}t\u{e9}".as_bytes(),
    "\u{65e5}\u{672c}".as_bytes(),
    b".hidden",
    b"-dash",
    b"x.tar.gz",
    b"UPPER",
    b"9",
    b"~tilde",
    b"$dollar",
    b"*star",
];

fn gen_tree(rng: &mut SplitMix64, dir: &Path, depth: u32, max_depth: u32, big: bool) {
    std::fs::create_dir(dir).unwrap();
    let entries = rng.below(6);
    let mut used = std::collections::BTreeSet::new();
    for _ in 0..entries {
        let name = NAMES[rng.below(NAMES.len() as u64) as usize];
        if !used.insert(name) {
            continue;
        }
        let path = dir.join(std::ffi::OsStr::from_bytes(name));
        match rng.below(10) {
            0..=4 => {
                let make_big = big && rng.below(3) == 0;
                gen_file(rng, &path, make_big)
            }
            5 | 6 if depth < max_depth => gen_tree(rng, &path, depth + 1, max_depth, big),
            7 => std::os::unix::fs::symlink(
                [
                    "a",
                    "../b",
                    "/nix/store/nothing-here",
                    "dangling/target",
                    "x y",
                ][rng.below(5) as usize],
                &path,
            )
            .unwrap(),
            8 => std::fs::create_dir(&path).unwrap(), // empty dir
            _ => gen_file(rng, &path, false),
        }
    }
}

/// A chain of `depth` nested directories (≥ 40: deeper than random trees ever get), with a
/// random tree at the bottom and a random sibling on the way down now and then.
fn gen_deep(rng: &mut SplitMix64, dir: &Path, depth: u32) {
    let mut at = dir.to_path_buf();
    std::fs::create_dir(&at).unwrap();
    for level in 0..depth {
        if rng.below(8) == 0 {
            gen_file(rng, &at.join("side"), false);
        }
        let name = NAMES[rng.below(NAMES.len() as u64) as usize];
        at = at.join(std::ffi::OsStr::from_bytes(name));
        if level + 1 == depth {
            gen_tree(rng, &at, 0, 2, false);
        } else {
            std::fs::create_dir(&at).unwrap();
        }
    }
    let deepest = walkdir_depth(dir);
    assert!(deepest >= 40, "{}: only {deepest} deep", dir.display());
}

fn walkdir_depth(dir: &Path) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    deepest
}

fn gen_file(rng: &mut SplitMix64, path: &Path, big: bool) {
    let len = if big {
        (1 << 20) + rng.below(70_000) as usize
    } else {
        [0, 1, 7, 8, 9, 100, 4095][rng.below(7) as usize]
    };
    std::fs::write(path, rng.bytes(len)).unwrap();
    let mode = [0o644, 0o755, 0o700, 0o610, 0o600, 0o744][rng.below(6) as usize];
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn nix(args: &[&str], paths: &[PathBuf]) -> Vec<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .args(paths)
        .env("NIX_CONFIG", "substituters =\nsandbox = false")
        .output()
        .unwrap_or_else(|e| panic!("{} is required (apt-get install nix-bin): {e}", args[0]));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn generated_trees_match_nix_store_add() {
    let work = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut rng = SplitMix64::new(0x5eed);
    let mut inputs = Vec::new();
    for i in 0..210 {
        let path = work.path().join(format!("tree-{i}"));
        match i % 15 {
            0 => gen_file(&mut rng, &path, i % 30 == 0),
            1 => std::os::unix::fs::symlink("dangling-top", &path).unwrap(),
            2 => {
                let depth = 40 + rng.below(10) as u32;
                gen_deep(&mut rng, &path, depth) // deep nesting
            }
            _ => gen_tree(&mut rng, &path, 0, 5, i % 7 == 0),
        }
        inputs.push(path);
    }
    let nix_paths = nix(&["nix-store", "--add"], &inputs);
    let nix_paths_as_paths: Vec<PathBuf> = nix_paths.iter().map(PathBuf::from).collect();
    let nix_hashes = nix(&["nix-store", "-q", "--hash"], &nix_paths_as_paths);
    let nix_sizes = nix(&["nix-store", "-q", "--size"], &nix_paths_as_paths);
    let ours = json_lines(&ok(&run(tool("store-add", root.path()).args(&inputs))));
    assert_eq!(ours.len(), inputs.len());
    for (i, info) in ours.iter().enumerate() {
        assert_eq!(info["path"], nix_paths[i], "tree-{i}");
        assert_eq!(info["narHash"], nix_hashes[i], "tree-{i}");
        assert_eq!(info["narSize"].to_string(), nix_sizes[i], "tree-{i}");
    }
    // nix-hash agrees on the NAR hash of the store copies too (they were canonicalised).
    let physical: Vec<PathBuf> = nix_paths
        .iter()
        .map(|p| root.path().join(p.trim_start_matches('/')))
        .collect();
    let rehashed = nix(
        &["nix-hash", "--type", "sha256", "--base32"],
        &physical[..40],
    );
    for (i, h) in rehashed.iter().enumerate() {
        assert_eq!(
            format!("sha256:{h}"),
            nix_hashes[i],
            "nix-hash of store copy tree-{i}"
        );
    }
    ok(&run(tool("store-query", root.path()).arg("verify")));

    // Fixed-output adds, recursive and flat.
    let sample: Vec<PathBuf> = inputs.iter().step_by(10).cloned().collect();
    for algo in ["sha1", "sha256", "sha512", "md5"] {
        let nix_fixed = nix(&["nix-store", "--add-fixed", "--recursive", algo], &sample);
        let ours = json_lines(&ok(&run(tool("store-add", root.path())
            .args(["--dry-run", "--fixed", algo, "--recursive"])
            .args(&sample))));
        for (i, info) in ours.iter().enumerate() {
            assert_eq!(
                info["path"], nix_fixed[i],
                "--add-fixed --recursive {algo} #{i}"
            );
        }
    }
    let files: Vec<PathBuf> = inputs.iter().step_by(15).cloned().collect();
    for algo in ["sha256", "sha1", "md5"] {
        let nix_fixed = nix(&["nix-store", "--add-fixed", algo], &files);
        let ours = json_lines(&ok(&run(tool("store-add", root.path())
            .args(["--dry-run", "--fixed", algo])
            .args(&files))));
        for (i, info) in ours.iter().enumerate() {
            assert_eq!(info["path"], nix_fixed[i], "--add-fixed {algo} #{i}");
        }
    }
}

/// Evaluate a Nix expression strictly (adding the files it makes to Nix's store), as JSON.
fn nix_eval(expr: &str) -> serde_json::Value {
    let out = Command::new("nix-instantiate")
        .args([
            "--eval",
            "--strict",
            "--read-write-mode",
            "--json",
            "-E",
            expr,
        ])
        .env("NIX_CONFIG", "substituters =")
        .output()
        .expect("nix-instantiate is required (apt-get install nix-bin)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A Nix string literal for arbitrary UTF-8 text.
fn nix_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '$' => out.push_str("\\$"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[test]
fn text_files_match_builtins_to_file() {
    let root = tempfile::tempdir().unwrap();
    let mut rng = SplitMix64::new(42);
    let alphabet: Vec<char> = "ab z\n\t\"\\${}é日'`".chars().collect();
    let texts: Vec<(String, String)> = (0..30)
        .map(|i| {
            let len = rng.below(200) as usize;
            let body: String = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
                .collect();
            (format!("text-{i}"), body)
        })
        .collect();
    // One evaluation adds them all; the last refers to the first through string context.
    let mut expr = String::from("let\n");
    for (i, (name, body)) in texts.iter().enumerate() {
        expr.push_str(&format!(
            "  t{i} = builtins.toFile {} {};\n",
            nix_string(name),
            nix_string(body)
        ));
    }
    expr.push_str("  user = builtins.toFile \"user\" \"run ${t0} and ${t1}\\n\";\nin [");
    for i in 0..texts.len() {
        expr.push_str(&format!(" t{i}"));
    }
    expr.push_str(" user ]");
    let nix_paths: Vec<String> = serde_json::from_value(nix_eval(&expr)).unwrap();
    let mut ours = Vec::new();
    for (name, body) in &texts {
        let info = &json_lines(&ok(&run_with_input(
            tool("store-add", root.path()).args(["--text", "--name", name, "-"]),
            body.as_bytes(),
        )))[0];
        ours.push(info["path"].as_str().unwrap().to_string());
    }
    let user_text = format!("run {} and {}\n", ours[0], ours[1]);
    let user = &json_lines(&ok(&run_with_input(
        tool("store-add", root.path()).args([
            "--text", "--name", "user", "--ref", &ours[0], "--ref", &ours[1], "-",
        ]),
        user_text.as_bytes(),
    )))[0];
    ours.push(user["path"].as_str().unwrap().to_string());
    assert_eq!(ours, nix_paths);
}

#[test]
fn reads_a_store_nix_manages_without_writing() {
    // A path with a reference, registered by Nix itself.
    let user = nix_eval(
        "let dep = builtins.toFile \"strata-ro-dep\" \"dep\\n\"; in builtins.toFile \"strata-ro-user\" \"use ${dep}\\n\"",
    );
    let user = user.as_str().unwrap().to_string();
    let real_root = Path::new("/");
    let before = std::fs::read_dir("/nix/var").unwrap().count();
    let ours = ok(&run(tool("store-query", real_root).args(["closure", &user])));
    let nix = Command::new("nix")
        .args([
            "path-info",
            "--json",
            "--recursive",
            "--closure-size",
            &user,
        ])
        .env(
            "NIX_CONFIG",
            "experimental-features = nix-command\nsubstituters =",
        )
        .output()
        .expect("nix is required");
    assert!(
        nix.status.success(),
        "{}",
        String::from_utf8_lossy(&nix.stderr)
    );
    let nix_infos: Vec<serde_json::Value> = serde_json::from_slice(&nix.stdout).unwrap();
    let ours: Vec<serde_json::Value> = serde_json::from_str(&ours).unwrap();
    assert_eq!(ours.len(), 2);
    for info in &ours {
        let theirs = nix_infos
            .iter()
            .find(|n| n["path"] == info["path"])
            .expect("same paths");
        for key in ["narSize", "references", "ca", "closureSize"] {
            assert_eq!(info[key], theirs[key], "{key} of {}", info["path"]);
        }
        // Nix prints SRI here; strata prints `sha256:<nix32>`. Same digest.
        let hash = |v: &serde_json::Value| {
            strata_core::nix::hash::Hash::parse_typed(v.as_str().unwrap()).unwrap()
        };
        assert_eq!(hash(&info["narHash"]), hash(&theirs["narHash"]));
    }
    // Writing is refused, and nothing of strata's appears under /nix.
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("f"), "x").unwrap();
    let add = run(tool("store-add", real_root).arg(work.path().join("f")));
    fails_with(&add, 1, &["managed by Nix"]);
    assert_eq!(std::fs::read_dir("/nix/var").unwrap().count(), before);
    assert!(!Path::new("/nix/var/strata").exists());
}
