//! The example, end to end: Debian runtimes as store paths, the agatha backend and its
//! migration tool wrapped, layered and assembled, then loaded into a real dockerd and podman
//! and run with its configs mounted.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/agatha")
}

fn strata_bin() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_store-add"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `make -C examples/agatha TARGET` into `out`, from sources in `src`, with a shell prefix
/// (umask, TZ) to vary the environment.
fn make(target: &str, out: &Path, src: &Path, prefix: &str) {
    let debs = Path::new(env!("CARGO_TARGET_TMPDIR")).join("agatha-debs");
    let script = format!(
        "{prefix} make -s -C {dir} {target} OUT={out} SRC={src} DEBS_DIR={debs} STRATA_BIN={bin}",
        dir = example_dir().display(),
        out = out.display(),
        src = src.display(),
        debs = debs.display(),
        bin = strata_bin().display(),
    );
    let status = Command::new("bash")
        .args(["-c", &script])
        .env_remove("STRATA_STORE_ROOT")
        .env_remove("STRATA_STORE_DIR")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("make");
    assert!(status.success(), "{script}");
}

/// The image's layer diff_ids, from the docker view of the archive.
fn diff_ids(tar: &Path) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(tar)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let manifest = read_json(&dir.path().join("manifest.json"));
    let config = read_json(&dir.path().join(manifest[0]["Config"].as_str().unwrap()));
    config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect()
}

fn path_of(manifest: &Path) -> String {
    let text = std::fs::read_to_string(manifest).unwrap();
    json_lines(&text)[0]["path"].as_str().unwrap().to_string()
}

/// Ask the app for its quotes from inside the container (bash's /dev/tcp), until it answers.
fn quotes(container: &str) -> String {
    let ask = "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /quotes HTTP/1.0\\r\\n\\r\\n' >&3 && while IFS= read -r l <&3 || [ -n \"$l\" ]; do printf \"%s\\n\" \"$l\"; done";
    for _ in 0..120 {
        let out = Command::new("docker")
            .args(["exec", container, "/bin/bash", "-c", ask])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("200 OK") {
            return text;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    panic!(
        "the app never answered; logs:\n{}",
        docker(&["logs", container])
    );
}

#[test]
fn the_example_image_builds_reproducibly_layers_well_and_runs() {
    let work = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        work.path().join("a"),
        work.path().join("b"),
        work.path().join("c"),
    );
    let src = example_dir();
    make("image", &a, &src, "umask 022; TZ=UTC");
    let tar_a = a.join("agatha-back.tar");

    // Bit-reproducible: another directory, store, umask and time zone.
    make("image", &b, &src, "umask 077; TZ=Asia/Tokyo");
    let (bytes_a, bytes_b) = (
        std::fs::read(&tar_a).unwrap(),
        std::fs::read(b.join("agatha-back.tar")).unwrap(),
    );
    assert!(bytes_a == bytes_b, "two builds differ");

    // Real popularity layers: libc and the JRE each alone in a shared layer; the app's wrapper
    // (which holds the jar) alone, small, and above them.
    let layers: Vec<Vec<String>> =
        serde_json::from_str(&std::fs::read_to_string(a.join("layers.json")).unwrap()).unwrap();
    let runtime = std::fs::read_to_string(a.join("runtime.json")).unwrap();
    let deb = |name: &str| {
        json_lines(&runtime)
            .iter()
            .map(|i| i["path"].as_str().unwrap().to_string())
            .find(|p| p.contains(&format!("-{name}-")))
            .unwrap_or_else(|| panic!("{name} in the runtime"))
    };
    let layer_of = |path: &str| {
        layers
            .iter()
            .position(|l| l.iter().any(|p| p == path))
            .expect("path in a layer")
    };
    let app = path_of(&a.join("app.json"));
    for path in [deb("libc6"), deb("openjdk-17-jre-headless"), app.clone()] {
        assert_eq!(
            layers[layer_of(&path)],
            vec![path.clone()],
            "{path} has a layer of its own"
        );
    }
    assert!(
        layer_of(&deb("libc6")) < layer_of(&app)
            && layer_of(&deb("openjdk-17-jre-headless")) < layer_of(&app)
    );
    let app_size = json_lines(&std::fs::read_to_string(a.join("app.json")).unwrap())[0]["narSize"]
        .as_u64()
        .unwrap();
    assert!(app_size < 8 << 20, "the app layer is small: {app_size}");

    // A one-line change to the backend changes only the app's layer and the customisation
    // layer (which links the new app into /).
    let src2 = work.path().join("src2");
    let status = Command::new("cp")
        .arg("-R")
        .arg(&src)
        .arg(&src2)
        .status()
        .unwrap();
    assert!(status.success());
    let main = src2.join("backend/src/agatha/Main.java");
    let code = std::fs::read_to_string(&main).unwrap();
    std::fs::write(
        &main,
        code.replace("GREETING = \"agatha\"", "GREETING = \"agatha 2\""),
    )
    .unwrap();
    make("image", &c, &src2, "");
    let (ids_a, ids_c) = (diff_ids(&tar_a), diff_ids(&c.join("agatha-back.tar")));
    assert_eq!(ids_a.len(), ids_c.len());
    let changed: BTreeSet<usize> = (0..ids_a.len()).filter(|&i| ids_a[i] != ids_c[i]).collect();
    let expected: BTreeSet<usize> = [layer_of(&app), ids_a.len() - 1].into_iter().collect();
    assert_eq!(
        changed, expected,
        "only the app layer and the customisation layer change"
    );

    // Docker: load, run with the configs mounted, and ask the app from inside.
    start_docker();
    let loaded = docker(&["load", "-i", tar_a.to_str().unwrap()]);
    assert!(loaded.contains("agatha-back:1.0"), "{loaded}");
    let name = format!("agatha-test-{}", std::process::id());
    let container = run_agatha(&name, "agatha-back:1.0", "linux/amd64", &src);
    let answer = quotes(&name);
    // Rows only the migrations could have created.
    assert!(
        answer.contains("Hercule Poirot: It is the brain") && answer.contains("Miss Marple:"),
        "{answer}"
    );
    let logs = docker(&["logs", &name]);
    assert!(
        logs.contains("applied V1__create_quotes.sql")
            && logs.contains("applied V2__seed_quotes.sql"),
        "{logs}"
    );
    // A restart migrates nothing twice, and the data is still there once.
    docker(&["restart", &name]);
    let again = quotes(&name);
    assert_eq!(again.matches("Hercule Poirot").count(), 1, "{again}");
    let logs = docker(&["logs", &name]);
    assert!(logs.contains("flyway: 0 migration(s) applied"), "{logs}");
    assert_eq!(
        logs.matches("applied V1__create_quotes.sql").count(),
        1,
        "{logs}"
    );
    docker(&["rm", "-f", container.trim()]);

    // Podman loads the same tar.
    let out = Command::new("podman")
        .args(["load", "-i"])
        .arg(&tar_a)
        .output()
        .expect("podman is required");
    assert!(
        out.status.success(),
        "podman load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = Command::new("podman")
        .args(["image", "exists", "docker.io/library/agatha-back:1.0"])
        .status()
        .unwrap();
    assert!(listed.success(), "podman lists the image");
}

#[test]
fn the_example_builds_for_arm64_and_answers_under_emulation() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("arm64");
    let src = example_dir();
    make("image ARCH=arm64", &out, &src, "");
    let tar = out.join("agatha-back.tar");
    let config = config_of(&tar);
    assert_eq!(
        (&config["architecture"], &config["variant"]),
        (&serde_json::json!("arm64"), &serde_json::json!("v8"))
    );
    // Every runtime package is an arm64 (or all) one, from the arm64 lock.
    let runtime = std::fs::read_to_string(out.join("runtime.json")).unwrap();
    let lock = read_json(&src.join("runtime.arm64.lock"));
    assert_eq!(lock["architecture"], "arm64");
    assert_eq!(
        json_lines(&runtime).len(),
        lock["packages"].as_object().unwrap().len()
    );

    start_docker();
    sh(&format!(
        "{}/scripts/services.sh binfmt",
        env!("CARGO_MANIFEST_DIR")
    ));
    let loaded = docker(&["load", "-i", tar.to_str().unwrap()]);
    assert!(loaded.contains("agatha-back:1.0-arm64"), "{loaded}");
    let name = format!("agatha-arm64-test-{}", std::process::id());
    let container = run_agatha(&name, "agatha-back:1.0-arm64", "linux/arm64", &src);
    let answer = quotes(&name);
    let hosttype = docker(&["exec", &name, "/bin/bash", "-c", "echo $HOSTTYPE"]);
    docker(&["rm", "-f", container.trim()]);
    assert!(
        answer.contains("Hercule Poirot: It is the brain") && answer.contains("Miss Marple:"),
        "{answer}"
    );
    assert_eq!(hosttype.trim(), "aarch64");
}

/// Start the example's `image` as container `name` for `platform`, its configs mounted from
/// the example's `home/`, without a network; the container's ID.
fn run_agatha(name: &str, image: &str, platform: &str, src: &Path) -> String {
    let home = src.join("home");
    let mount = |file: &str| format!("{}:/home/{file}:ro", home.join(file).display());
    docker(&[
        "run",
        "-d",
        "--name",
        name,
        "--network=none",
        "--platform",
        platform,
        "-v",
        &mount("flyway.conf"),
        "-v",
        &mount("agatha.properties"),
        image,
    ])
}
