//! `store-add --deb`: packages built with dpkg-deb become store paths with their files at
//! FHS paths and their dependencies as references.

use std::path::Path;

use crate::support::*;

/// Build a package with dpkg-deb from a control text and a shell script that fills its root.
fn build_deb(
    dir: &Path,
    name: &str,
    control: &str,
    fill: &str,
    compression: &str,
) -> std::path::PathBuf {
    let root = dir.join(format!("{name}-root"));
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::write(root.join("DEBIAN/control"), control).unwrap();
    bash_in(&root, fill);
    let deb = dir.join(format!("{name}.deb"));
    let out = std::process::Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Z", compression, "--build"])
        .arg(&root)
        .arg(&deb)
        .output()
        .expect("dpkg-deb is required");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    deb
}

fn control(pkg: &str, version: &str, depends: &str) -> String {
    let deps = if depends.is_empty() {
        String::new()
    } else {
        format!("Depends: {depends}\n")
    };
    format!(
        "Package: {pkg}\nVersion: {version}\nArchitecture: all\nMaintainer: t <t@example.org>\n{deps}Description: test\n"
    )
}

#[test]
fn packages_become_store_paths_with_dependency_references() {
    let work = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let w = work.path();
    let app = build_deb(
        w,
        "app",
        &control(
            "app",
            "1:2.0~rc1-1",
            "libfoo (>= 1.0), missing-pkg | other-missing, virtual-thing",
        ),
        "mkdir -p usr/bin usr/share/app && printf '#!/bin/sh\\necho hi\\n' > usr/bin/app && chmod 755 usr/bin/app\n\
         ln -s ../share/app/data usr/bin/data-link && echo data > usr/share/app/data && ln usr/share/app/data usr/share/app/hard",
        "xz",
    );
    let libfoo = build_deb(
        w,
        "libfoo",
        &control("libfoo", "1.2-3", "libbar"),
        "mkdir -p usr/lib && echo foo > usr/lib/libfoo.so.1",
        "zstd",
    );
    let libbar = build_deb(
        w,
        "libbar",
        &(control("libbar", "0.9", "libfoo")
            .replace("Description", "Provides: virtual-thing\nDescription")),
        "mkdir -p usr/lib && echo bar > usr/lib/libbar.so.0",
        "gzip",
    );
    let out = run(tool("store-add", root.path())
        .arg("--deb")
        .args([&app, &libfoo, &libbar]));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let infos = json_lines(&ok(&out));
    let names: Vec<String> = infos
        .iter()
        .map(|i| {
            i["path"]
                .as_str()
                .unwrap()
                .split_once('-')
                .unwrap()
                .1
                .to_string()
        })
        .collect();
    assert_eq!(names, ["app-1_2.0_rc1-1", "libfoo-1.2-3", "libbar-0.9"]);
    let path = |i: usize| infos[i]["path"].as_str().unwrap().to_string();
    // app depends on libfoo and (through Provides) libbar; libfoo <-> libbar is a cycle,
    // broken at the package with the smaller name.
    assert_eq!(
        infos[0]["references"],
        serde_json::json!(
            [path(1), path(2)]
                .iter()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>()
        )
    );
    assert_eq!(infos[2]["references"], serde_json::json!([]));
    assert_eq!(infos[1]["references"], serde_json::json!([path(2)]));
    assert!(
        stderr.contains("unsatisfied dependencies")
            && stderr.contains("app: missing-pkg | other-missing"),
        "{stderr}"
    );
    assert!(stderr.contains("libbar -> libfoo"), "{stderr}");
    // The files are at their FHS paths, with modes, symlinks and hard links as packaged.
    let app_root = root.path().join(path(0).trim_start_matches('/'));
    let run_app = std::process::Command::new(app_root.join("usr/bin/app"))
        .output()
        .unwrap();
    assert_eq!(run_app.stdout, b"hi\n");
    assert_eq!(
        std::fs::read_link(app_root.join("usr/bin/data-link")).unwrap(),
        Path::new("../share/app/data")
    );
    assert_eq!(
        std::fs::read(app_root.join("usr/share/app/hard")).unwrap(),
        b"data\n"
    );
    // The NAR hash is Nix's for the same tree.
    let nix = std::process::Command::new("nix-hash")
        .args(["--type", "sha256", "--base32"])
        .arg(&app_root)
        .output()
        .unwrap();
    assert_eq!(
        format!("sha256:{}", String::from_utf8_lossy(&nix.stdout).trim()),
        infos[0]["narHash"].as_str().unwrap()
    );
    ok(&run(tool("store-query", root.path()).arg("verify")));

    // --strict refuses the unsatisfied dependency, and adds nothing.
    let strict_root = tempfile::tempdir().unwrap();
    let strict = run(tool("store-add", strict_root.path())
        .args(["--deb", "--strict"])
        .arg(&app));
    fails_with(&strict, 1, &["unsatisfied dependencies", "libfoo"]);
    assert!(tree_listing(&strict_root.path().join("nix/store")).is_empty());

    // A package added later finds its dependencies through --deps.
    let later_root = tempfile::tempdir().unwrap();
    let first = ok(&run(tool("store-add", later_root.path())
        .arg("--deb")
        .arg(&libbar)));
    std::fs::write(w.join("first.json"), &first).unwrap();
    let second = json_lines(&ok(&run(tool("store-add", later_root.path())
        .arg("--deb")
        .arg("--deps")
        .arg(w.join("first.json"))
        .arg(&libfoo))));
    assert_eq!(
        second[0]["references"],
        serde_json::json!([json_lines(&first)[0]["path"]])
    );
}

#[test]
fn bad_packages_fail_cleanly() {
    let work = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let w = work.path();
    std::fs::write(w.join("not.deb"), b"PK\x03\x04 this is a zip").unwrap();
    let good = build_deb(
        w,
        "good",
        &control("good", "1", ""),
        "mkdir -p usr && echo x > usr/x",
        "xz",
    );
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(w.join("truncated.deb"), &bytes[..bytes.len() / 2]).unwrap();
    for (file, needle) in [
        ("not.deb", "not an ar archive"),
        ("truncated.deb", "truncated.deb"),
        ("missing.deb", "missing.deb"),
    ] {
        let out = run(tool("store-add", root.path())
            .arg("--deb")
            .arg(w.join(file)));
        fails_with(&out, 1, &[needle]);
    }
    assert!(tree_listing(&root.path().join("nix/store")).is_empty());
}

#[test]
fn control_members_that_expand_without_bound_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    // Two bombs that compress to little: a control file of 200 MB, and a control.tar whose
    // first member is 100 MB of zeros. Real control files are a few KiB.
    bash_in(
        work.path(),
        "printf '2.0\\n' > debian-binary\n\
         mkdir empty; tar -C empty -cJf data.tar.xz .\n\
         mkdir big-control junk\n\
         { printf 'Package: bomb\\nVersion: 1\\nArchitecture: all\\nDescription: x\\n '; head -c 200000000 /dev/zero | tr '\\0' a; echo; } > big-control/control\n\
         tar -C big-control -czf control.tar.gz ./control\n\
         ar qc big-control.deb debian-binary control.tar.gz data.tar.xz\n\
         head -c 100000000 /dev/zero > junk/aaa\n\
         printf 'Package: bomb\\nVersion: 1\\nArchitecture: all\\nDescription: x\\n' > junk/control\n\
         rm control.tar.gz; tar -C junk -czf control.tar.gz ./aaa ./control\n\
         ar qc junk-first.deb debian-binary control.tar.gz data.tar.xz",
    );
    for (deb, needle) in [
        ("big-control.deb", "control file is larger than 1 MiB"),
        ("junk-first.deb", "control.tar is larger than 64 MiB"),
    ] {
        let out = run(tool("store-add", root.path())
            .arg("--deb")
            .arg(work.path().join(deb)));
        fails_with(&out, 1, &[deb, needle]);
    }
    assert!(tree_listing(&root.path().join("nix/store")).is_empty());
}
