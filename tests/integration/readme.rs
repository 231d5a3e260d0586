//! The README's hand-written pipeline ("Calling the tools by hand"), run as written: real
//! files for `./app.jar` and the rest, the example's Debian packages for `apt-get download`,
//! a local registry for `registry.example.com`, and the real dockerd. The README cannot drift
//! from what the tools do.

use std::path::Path;
use std::process::Command;

use crate::support::*;

/// The shell block of a README section.
fn section_block(readme: &str, heading: &str) -> String {
    let section = &readme[readme.find(heading).expect("the section")..];
    let start = section.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = start + section[start..].find("\n```").expect("the block's end");
    section[start..end].to_string()
}

#[test]
fn the_readme_pipeline_runs_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let block = section_block(&readme, "## Calling the tools by hand");
    assert!(
        !block.contains("python3 -c") && !block.contains("jq"),
        "no JSON glue: {block}"
    );
    let registry = Registry::start(None);
    let script = block.replace("registry.example.com", &registry.addr());

    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    std::fs::create_dir_all(w.join("migrations")).unwrap();
    std::fs::write(
        w.join("migrations/V1__init.sql"),
        "create table t (x int);\n",
    )
    .unwrap();
    std::fs::write(w.join("app.jar"), b"PK\x05\x06 not really a jar").unwrap();
    std::fs::create_dir_all(w.join("big-tree/a/b")).unwrap();
    std::fs::write(w.join("big-tree/a/b/c"), vec![7u8; 1 << 20]).unwrap();
    std::fs::write(w.join("release.tar.gz"), b"release").unwrap();
    // `apt-get download`: the packages the example keeps (fetched if it has not run yet), of the
    // machine's architecture as apt-get gives them (the cache also holds the arm64 build's).
    let stubs = w.join("stubs");
    let debs = Path::new(env!("CARGO_TARGET_TMPDIR")).join("agatha-debs");
    std::fs::create_dir_all(&stubs).unwrap();
    std::fs::write(
        stubs.join("apt-get"),
        format!(
            "#!/bin/bash\nset -eu\n[ \"$1\" = download ] || exit 2\nshift\n\
             arch=$(dpkg --print-architecture)\n\
             for p; do f=$(ls {debs}/\"$p\"_*_\"$arch\".deb {debs}/\"$p\"_*_all.deb 2>/dev/null | sort -V | tail -n 1)\n               if [ -n \"$f\" ]; then cp \"$f\" .; else /usr/bin/apt-get download \"$p\"; fi; done\n",
            debs = debs.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        stubs.join("apt-get"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    start_docker();

    let bin = Path::new(env!("CARGO_BIN_EXE_store-add")).parent().unwrap();
    let path = format!(
        "{}:{}:{}",
        bin.display(),
        stubs.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(w)
        .env("PATH", path)
        .env("STRATA_STORE_ROOT", w.join("store"))
        .env_remove("STRATA_STORE_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the README's pipeline failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // What it made: the launcher, the image (in Docker, with the command given by @NAME) and
    // the pushed tag.
    let app = json_lines(&std::fs::read_to_string(w.join("app.json")).unwrap());
    let app_path = app[0]["path"].as_str().unwrap();
    assert!(app_path.ends_with("-app-1.0"), "{app_path}");
    let inspect = Command::new("docker")
        .args([
            "image",
            "inspect",
            "--format",
            "{{json .Config.Cmd}}",
            "app:1",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        format!("[\"{app_path}/bin/app\"]")
    );
    assert!(registry.has_tag("team/app", "1", None));
}
