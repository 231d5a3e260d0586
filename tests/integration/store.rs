//! store-add and store-query against the frozen Nix 2.8 vectors, live Nix, bad input,
//! concurrency and crashes.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::store_safety::scratch_left;
use crate::support::*;

/// `rel TAB type TAB mode TAB mtime TAB uid` rows for a store copy, as the vectors list them.
fn store_listing(top: &Path) -> Vec<String> {
    let mut rows = Vec::new();
    let mut stack = vec![top.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let ty = if m.is_dir() {
            "d"
        } else if m.file_type().is_symlink() {
            "l"
        } else {
            "f"
        };
        let rel = escape_bytes(p.strip_prefix(top).unwrap().as_os_str().as_encoded_bytes());
        rows.push(format!(
            "{rel}\t{ty}\t{:o}\t{}.0000000000\t{}",
            m.mode() & 0o7777,
            m.mtime(),
            m.uid()
        ));
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    rows.sort();
    rows
}

/// UTF-8 with each undecodable byte written `\xNN`.
fn escape_bytes(mut bytes: &[u8]) -> String {
    let mut out = String::new();
    while !bytes.is_empty() {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(s);
                break;
            }
            Err(e) => {
                let (good, rest) = bytes.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(good).unwrap());
                out.push_str(&format!("\\x{:02x}", rest[0]));
                bytes = &rest[1..];
            }
        }
    }
    out
}

fn euid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

/// Checks one vector; returns what differs.
fn check_vector(v: &Value, root: &Path, errors: &mut Vec<String>) {
    let name = v["name"].as_str().unwrap();
    let kind = v["kind"].as_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    if kind != "source-with-references" || !v["input"].is_null() {
        bash_in(work.path(), v["recipe"].as_str().unwrap());
    }
    let store_dir = v["store_dir"].as_str().unwrap_or("/nix/store");
    let mut cmd = tool("store-add", root);
    cmd.arg("--store-dir").arg(store_dir);
    let input = v["input"].as_str().map(|i| work.path().join(i));
    let out = match kind {
        "source" | "error" => run(cmd.arg(input.as_ref().unwrap())),
        "fixed-flat-sha256" => run(cmd.args(["--fixed", "sha256"]).arg(input.as_ref().unwrap())),
        "fixed-recursive-sha1" => run(cmd
            .args(["--fixed", "sha1", "--recursive"])
            .arg(input.as_ref().unwrap())),
        "text" => {
            // Files the expression defines with `let` are added first (they are the references).
            let expr = v["expr"].as_str().unwrap();
            let defs: Vec<&str> = expr.split("builtins.toFile \"").skip(1).collect();
            for def in &defs[..defs.len() - 1] {
                let (file, rest) = def.split_once("\" \"").unwrap();
                let contents = rest.split_once('"').unwrap().0.replace("\\n", "\n");
                ok(&run_with_input(
                    tool("store-add", root).args(["--text", "--name", file, "-"]),
                    contents.as_bytes(),
                ));
            }
            let name = v["expected_store_path"]
                .as_str()
                .unwrap()
                .split_once('-')
                .unwrap()
                .1;
            cmd.args(["--text", "--name", name]);
            for r in v["expected_references"].as_array().unwrap() {
                cmd.arg("--ref").arg(r.as_str().unwrap());
            }
            run_with_input(cmd.arg("-"), v["contents"].as_str().unwrap().as_bytes())
        }
        "source-with-references" if input.is_some() => {
            let cands = work.path().join("candidates");
            let refs: Vec<&str> = v["expected_references"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            std::fs::write(&cands, refs.join("\n")).unwrap();
            run(cmd
                .arg("--references")
                .arg(&cands)
                .arg(input.as_ref().unwrap()))
        }
        // The make-content-addressed vector has no input tree; it is checked in
        // `self_reference_rewrite_matches_nix`.
        _ => return,
    };
    if kind == "error" {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let class = v["expected_error"].as_str().unwrap();
        let wanted = [
            "contains illegal character",
            "longer than 211",
            "unsupported type",
        ]
        .into_iter()
        .find(|c| class.contains(c))
        .expect("known error class");
        if out.status.code() != Some(1) || !stderr.contains(wanted) || stderr.lines().count() != 1 {
            errors.push(format!(
                "{name}: want one-line '{wanted}' exit 1, got {:?} {stderr:?}",
                out.status
            ));
        }
        return;
    }
    if !out.status.success() {
        errors.push(format!(
            "{name}: failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
        return;
    }
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut want = |field: &str, got: &Value, expected: &Value| {
        if got != expected {
            errors.push(format!("{name}: {field}: got {got} want {expected}"));
        }
    };
    want("path", &info["path"], &v["expected_store_path"]);
    want(
        "narHash",
        &info["narHash"],
        &Value::String(format!(
            "sha256:{}",
            v["expected_nar_sha256_base32"].as_str().unwrap()
        )),
    );
    want("narSize", &info["narSize"], &v["expected_nar_size"]);
    want("references", &info["references"], &v["expected_references"]);
    want("ca", &info["ca"], &v["expected_ca"]);
    let path = v["expected_store_path"].as_str().unwrap();
    if let Some(nar_file) = v["nar_file"].as_str() {
        let dumped = run(tool("store-query", root).args(["--store-dir", store_dir, "dump", path]));
        if std::fs::read(shared("vectors").join(nar_file)).unwrap() != dumped.stdout {
            errors.push(format!("{name}: NAR bytes differ from {nar_file}"));
        }
    }
    if let Some(listing) = v["expected_store_listing"].as_array() {
        let physical = root.join(path.trim_start_matches('/'));
        // The vectors' rows came from a line-based listing: names with a newline span two
        // rows and undecodable bytes are written `\xff`. Compare in that shape, without uid
        // (the owner is whoever ran the add).
        let normalise = |rows: Vec<String>| {
            let mut out: Vec<String> = rows
                .iter()
                .flat_map(|r| r.split('\n').map(str::to_string).collect::<Vec<_>>())
                .map(|r| {
                    if r.matches('\t').count() == 4 {
                        r.rsplit_once('\t').unwrap().0.to_string()
                    } else {
                        r
                    }
                })
                .collect();
            out.sort();
            out
        };
        let got = normalise(store_listing(&physical));
        let wanted = normalise(
            listing
                .iter()
                .map(|r| r.as_str().unwrap().to_string())
                .collect(),
        );
        if got != wanted {
            errors.push(format!("{name}: store listing {got:?} want {wanted:?}"));
        }
        let owner = std::fs::symlink_metadata(&physical).unwrap().uid();
        if owner != euid() {
            errors.push(format!("{name}: owned by {owner}, not the adding user"));
        }
    }
}

#[test]
fn nix_vectors_reproduce() {
    let doc = read_json(&shared("vectors/vectors.json"));
    let vectors = doc["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 37, "the vector file has 37 cases");
    let root = tempfile::tempdir().unwrap();
    let mut errors = Vec::new();
    // In file order: text vectors refer to paths earlier vectors add.
    for v in vectors {
        check_vector(v, root.path(), &mut errors);
    }
    assert!(
        errors.is_empty(),
        "{} vector mismatches:\n{}",
        errors.len(),
        errors.join("\n")
    );
    let verify = run(tool("store-query", root.path()).arg("verify"));
    ok(&verify);
}

#[test]
fn self_reference_rewrite_matches_nix() {
    // `nix store make-content-addressed` on a path that mentions itself and a dep: restore
    // the input NAR, point it at the content-addressed dep, and add it with --self.
    let doc = read_json(&shared("vectors/vectors.json"));
    let v = doc["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "ca-rewrite-self-reference")
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (old_dep, new_dep) = v["dep_rewrite"].as_object().unwrap().iter().next().unwrap();
    let new_dep = new_dep.as_str().unwrap();
    // The content-addressed dep is `source` path of the same bytes.
    let dep_file = work.path().join("dep");
    std::fs::write(&dep_file, "dep contents\n").unwrap();
    let dep_info = json_lines(&ok(&run(tool("store-add", root.path()).arg(&dep_file))));
    assert_eq!(dep_info[0]["path"], new_dep);

    let before = std::fs::read(shared("vectors/nar/selfref-before.nar")).unwrap();
    let rewritten = String::from_utf8_lossy(&before).replace(old_dep.as_str(), new_dep);
    assert_eq!(rewritten.len(), before.len());
    let tree = work.path().join("selfref");
    strata_core::nix::nar::restore(rewritten.as_bytes(), &tree).unwrap();
    let cands = work.path().join("cands");
    std::fs::write(&cands, new_dep).unwrap();
    let out = Run::tool("store-add", root.path())
        .arg("--references")
        .arg(&cands)
        .arg("--self")
        .arg(v["old_path"].as_str().unwrap())
        .arg(&tree)
        .succeeds()
        .stdout_has("\"ca\":\"fixed:r:sha256:")
        .stdout();
    let info = &json_lines(&out)[0];
    assert_eq!(info["path"], v["expected_store_path"]);
    assert_eq!(info["references"], v["expected_references"]);
    assert_eq!(info["ca"], v["expected_ca"]);
    assert_eq!(info["narSize"], v["expected_nar_size"]);
    let dumped =
        run(tool("store-query", root.path())
            .args(["dump", v["expected_store_path"].as_str().unwrap()]));
    assert_eq!(
        dumped.stdout,
        std::fs::read(shared("vectors/nar/selfref-after.nar")).unwrap()
    );
}

#[test]
fn reference_scan_rules_reproduce() {
    let doc = read_json(&shared("vectors/reference-scan.json"));
    let dep = doc["dep"].as_str().unwrap();
    let hash = &dep["/nix/store/".len()..][..32];
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let dep_file = work.path().join("dep");
    std::fs::write(&dep_file, "dep contents\n").unwrap();
    ok(&run_with_input(
        tool("store-add", root.path()).args(["--text", "--name", "dep", "-"]),
        b"dep contents\n",
    ));
    let cands = work.path().join("cands");
    std::fs::write(&cands, format!("{dep}\n")).unwrap();
    for r in doc["results"].as_array().unwrap() {
        let output = r["output"].as_str().unwrap();
        let own = r["path"].as_str().unwrap();
        let dir = work.path().join(format!("out-{output}"));
        std::fs::create_dir(&dir).unwrap();
        // The same builder steps as reference-scan.nix, with $out at `own`.
        let script = format!(
            "h={hash}; dep={dep}; notcand=/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt; out=$PWD/{output}; self={own}\n\
             case {output} in\n\
             bare) echo -n \"$h\" > $out;;\n\
             embedded) echo \"zz9${{h}}9zz\" > $out;;\n\
             upper) echo \"$h\" | tr a-z A-Z > $out;;\n\
             filename) mkdir $out; echo x > \"$out/$h\";;\n\
             symlink) ln -s \"$dep\" $out;;\n\
             unmentioned) echo nothing > $out;;\n\
             notcandidate) echo \"$notcand\" > $out;;\n\
             gz) echo \"$dep\" | gzip -n > $out;;\n\
             selfonly) echo \"$self\" > $out;;\n\
             esac"
        );
        bash_in(&dir, &script);
        let out = ok(&run(tool("store-add", root.path())
            .arg("--dry-run")
            .arg("--references")
            .arg(&cands)
            .arg("--self")
            .arg(own)
            .arg(dir.join(output))));
        let info = &json_lines(&out)[0];
        let refs: Vec<String> = info["references"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let p = p.as_str().unwrap();
                // A self-reference has the new content-addressed path; name it by the output.
                if p == info["path"].as_str().unwrap() {
                    own.to_string()
                } else {
                    p.to_string()
                }
            })
            .collect();
        let want: Vec<String> = r["references"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        assert_eq!(refs, want, "rule: {}", r["rule"]);
    }
}

#[test]
fn closure_info_vectors_reproduce() {
    let root = tempfile::tempdir().unwrap();
    let dep = &json_lines(&ok(&run_with_input(
        tool("store-add", root.path()).args(["--text", "--name", "dep", "-"]),
        b"dep contents\n",
    )))[0];
    let dep = dep["path"].as_str().unwrap();
    let user = &json_lines(&ok(&run_with_input(
        tool("store-add", root.path()).args(["--text", "--name", "uses-dep", "--ref", dep, "-"]),
        format!("exec {dep}\n").as_bytes(),
    )))[0];
    let user = user["path"].as_str().unwrap();
    let attrs = read_json(&shared("vectors/export-references-graph.attrs.json"));
    let graph = ok(&run(
        tool("store-query", root.path()).args(["closure", user])
    ));
    assert_eq!(
        serde_json::from_str::<Value>(&graph).unwrap(),
        attrs["closure"]
    );
    // Compact, sorted keys: byte-identical to what Nix wrote.
    let nix_bytes =
        std::fs::read_to_string(shared("vectors/export-references-graph.attrs.json")).unwrap();
    assert!(
        nix_bytes.contains(graph.trim_end()),
        "graph bytes differ from Nix's"
    );
    for (format, file) in [
        ("registration", "closure-info.registration"),
        ("store-paths", "closure-info.store-paths"),
        ("total-nar-size", "closure-info.total-nar-size"),
    ] {
        let got = ok(&run(
            tool("store-query", root.path()).args(["closure", "--format", format, user])
        ));
        assert_eq!(
            got,
            std::fs::read_to_string(shared("vectors").join(file)).unwrap(),
            "{format}"
        );
    }
}

fn assert_store_empty(root: &Path) {
    let listing = tree_listing(&root.join("nix/store"));
    assert!(listing.is_empty(), "store not empty: {listing:?}");
    assert!(
        tree_listing(&root.join("nix/var/strata/db")).is_empty(),
        "registrations left"
    );
    assert!(scratch_left(root).is_empty(), "scratch left");
}

#[test]
fn bad_input_fails_cleanly() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    bash_in(
        w,
        "mkdir withfifo; echo ok > withfifo/ok; mkfifo withfifo/pipe\n\
                mkdir withsock; python3 -c 'import socket; s=socket.socket(socket.AF_UNIX); s.bind(\"withsock/s\")'\n\
                echo x > ok.txt",
    );
    let cases: Vec<(Vec<String>, i32, Vec<String>)> = vec![
        (
            vec![w.join("withfifo").display().to_string()],
            1,
            vec![
                format!("{}/withfifo/pipe", w.display()),
                "unsupported type".into(),
            ],
        ),
        (
            vec![w.join("withsock").display().to_string()],
            1,
            vec!["withsock/s".into(), "unsupported type".into()],
        ),
        (
            vec!["/dev/null".into()],
            1,
            vec!["/dev/null".into(), "unsupported type".into()],
        ),
        (
            vec![w.join("missing").display().to_string()],
            1,
            vec!["missing".into(), "does not exist".into()],
        ),
        (
            vec![
                "--name".into(),
                "n".repeat(212),
                w.join("ok.txt").display().to_string(),
            ],
            1,
            vec!["ok.txt".into(), "longer than 211".into()],
        ),
        (
            vec![
                "--name".into(),
                "héllo".into(),
                w.join("ok.txt").display().to_string(),
            ],
            1,
            vec!["ok.txt".into(), "illegal character 'é'".into()],
        ),
        (
            vec![
                "--name".into(),
                "..".into(),
                w.join("ok.txt").display().to_string(),
            ],
            1,
            vec!["ok.txt".into(), "'..'".into()],
        ),
        (
            vec![
                "--name".into(),
                ".".into(),
                w.join("ok.txt").display().to_string(),
            ],
            1,
            vec!["ok.txt".into()],
        ),
        (
            vec![
                "--fixed".into(),
                "sha3".into(),
                w.join("ok.txt").display().to_string(),
            ],
            2,
            vec!["sha3".into()],
        ),
        (
            vec![
                "--fixed".into(),
                "sha256".into(),
                w.join("withfifo").display().to_string(),
            ],
            1,
            vec!["withfifo".into(), "not a regular file".into()],
        ),
        (vec!["--bogus".into()], 2, vec!["--bogus".into()]),
    ];
    for (args, code, needles) in cases {
        let out = run(tool("store-add", root.path()).args(&args));
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        fails_with(&out, code, &needles);
        // The input is named once, not as `x: 'x' …`.
        let line = String::from_utf8_lossy(&out.stderr);
        if let Some(input) = args.last().filter(|a| a.starts_with('/')) {
            assert!(line.matches(input.as_str()).count() <= 1, "{line}");
        }
    }
    assert_store_empty(root.path());
}

#[test]
fn store_dirs_that_climb_out_of_the_root_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("a/b/root");
    std::fs::write(work.path().join("f"), "x").unwrap();
    for dir in [
        "/../../x",
        "/nix/../../x",
        "/nix/./store",
        "nix/store",
        "/nix//store",
    ] {
        let out = run(tool("store-add", &root)
            .args(["--store-dir", dir])
            .arg(work.path().join("f")));
        fails_with(&out, 2, &["--store-dir", dir, "canonical"]);
    }
    assert_eq!(tree_listing(work.path()), ["f"], "something was written");
}

#[test]
fn unreadable_file_fails_cleanly() {
    // As root every file is readable, so read it as an unprivileged user.
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    bash_in(
        work.path(),
        "mkdir d; echo secret > d/secret; chmod 000 d/secret; echo ok > d/ok",
    );
    for p in [root.path(), work.path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
    ];
    let mut cmd = Command::new(nobody[0]);
    cmd.args(&nobody[1..])
        .arg(env!("CARGO_BIN_EXE_store-add"))
        .arg(work.path().join("d"))
        .env("STRATA_STORE_ROOT", root.path());
    let out = run(&mut cmd);
    fails_with(&out, 1, &["d/secret", "ermission denied"]);
    // Nothing half-written anywhere: no store entry, no registration, no scratch area.
    assert_store_empty(root.path());
}

#[test]
fn kill_during_add_leaves_no_partial_path() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // Many files, so the add is certainly still copying when it is killed.
    bash_in(
        work.path(),
        "mkdir big; for i in $(seq 1 400); do head -c 200000 /dev/urandom > big/f$i; done",
    );
    let input = work.path().join("big");
    let mut child = tool("store-add", root.path())
        .arg(&input)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let tmp = root.path().join("nix/var/strata/tmp");
    // Wait until the copy has started, then kill -9.
    let start = std::time::Instant::now();
    while scratch_left(root.path()).len() < 20 {
        assert!(start.elapsed().as_secs() < 60, "add never started copying");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the add finished before it could be killed"
    );
    assert!(
        tree_listing(&root.path().join("nix/store")).is_empty(),
        "partial path visible"
    );
    assert!(tree_listing(&root.path().join("nix/var/strata/db")).is_empty());
    // The next add succeeds, and clears the abandoned scratch copy.
    let info = &json_lines(&ok(&run(tool("store-add", root.path()).arg(&input))))[0];
    let nix_hash =
        strata_core::nix::hash::Hash::parse_typed(info["narHash"].as_str().unwrap()).unwrap();
    assert_eq!(nix_hash.algo(), strata_core::nix::hash::HashAlgo::Sha256);
    ok(&run(tool("store-query", root.path()).arg("verify")));
    assert!(
        scratch_left(root.path()).is_empty(),
        "abandoned scratch not cleaned: {:?}",
        tree_listing(&tmp)
    );
}

#[test]
fn verify_reports_a_modified_path() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    bash_in(work.path(), "echo original > f");
    let info = &json_lines(&ok(&run(
        tool("store-add", root.path()).arg(work.path().join("f"))
    )))[0];
    let physical = root
        .path()
        .join(info["path"].as_str().unwrap().trim_start_matches('/'));
    std::fs::set_permissions(&physical, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&physical, "tampered\n").unwrap();
    Run::tool("store-query", root.path())
        .arg("verify")
        .env("STRATA_STORE_DIR", "/nix/store")
        .current_dir(work.path())
        .fails(1)
        .stderr_has(info["path"].as_str().unwrap())
        .stderr_has("modified");
}

#[test]
fn readding_is_idempotent_and_dry_run_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    bash_in(work.path(), "mkdir t; echo a > t/a; ln -s a t/l");
    let dry = ok(&run(tool("store-add", root.path())
        .arg("--dry-run")
        .arg(work.path().join("t"))));
    assert!(
        !root.path().join("nix").exists(),
        "dry run wrote to the store"
    );
    let first = ok(&run(
        tool("store-add", root.path()).arg(work.path().join("t"))
    ));
    let second = ok(&run(
        tool("store-add", root.path()).arg(work.path().join("t"))
    ));
    assert_eq!(dry, first);
    assert_eq!(first, second);
}

#[test]
fn progress_only_on_a_terminal() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // A sparse file: long to hash, cheap to make.
    let big = work.path().join("big");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let piped = run(tool("store-add", root.path()).arg("--dry-run").arg(&big));
    ok(&piped);
    assert!(
        piped.stderr.is_empty(),
        "progress on a pipe: {:?}",
        String::from_utf8_lossy(&piped.stderr)
    );
    // Under a pseudo-terminal (script(1)), the byte count shows.
    let line = format!(
        "{} --store-root {} --dry-run {}",
        env!("CARGO_BIN_EXE_store-add"),
        root.path().display(),
        big.display()
    );
    let text = on_a_terminal(&line);
    assert!(
        text.contains("MiB read"),
        "no progress on a terminal: {text:?}"
    );
    // The result comes after the last progress line, which is cleared: nothing follows it.
    let json_at = text.find("{\"ca\"").expect("result printed");
    assert!(
        !text[json_at..].contains("MiB read"),
        "progress after the result: {text:?}"
    );
}

/// `tool … | head -1`: the reader is gone before the tool writes; the tool stops quietly with
/// exit 0, like a Unix filter, instead of reporting a broken pipe.
#[test]
fn a_closed_stdout_ends_the_tools_quietly() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    bash_in(work.path(), "for i in $(seq 1 50); do echo $i > f$i; done");
    let info = &json_lines(&ok(&run(
        tool("store-add", root.path()).arg(work.path().join("f1"))
    )))[0];
    let path = info["path"].as_str().unwrap().to_string();
    let files: Vec<PathBuf> = (1..=50)
        .map(|i| work.path().join(format!("f{i}")))
        .collect();
    let mut cases: Vec<(&str, Vec<String>)> = vec![
        (
            "store-add",
            std::iter::once("--dry-run".to_string())
                .chain(files.iter().map(|f| f.display().to_string()))
                .collect(),
        ),
        ("store-query", vec!["closure".into(), path.clone()]),
        ("store-query", vec!["dump".into(), path.clone()]),
        ("store-query", vec!["list".into()]),
    ];
    let closure = work.path().join("closure.json");
    std::fs::write(
        &closure,
        ok(&run(
            tool("store-query", root.path()).args(["closure", &path])
        )),
    )
    .unwrap();
    cases.push(("mklayers", vec![closure.display().to_string()]));
    for (name, args) in cases {
        let mut child = tool(name, root.path())
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).as_ref()
            ),
            (Some(0), ""),
            "{name} {args:?}"
        );
    }
}
