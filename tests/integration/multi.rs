//! One image for two platforms: bash (with coreutils) built for amd64 and arm64 from Debian's
//! packages, with a text file standing in for an architecture-independent jar in a layer of
//! its own, combined by mkindex into one OCI image index. Read by skopeo and podman, pushed by
//! push-image to docker-registry and pulled per platform by docker (the arm64 image runs under
//! qemu); the shared layer is one blob; the index is byte-identical when built again
//! elsewhere; hostile inputs are refused with one line and no output.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::*;

const NAME: &str = "strata-test/multi";
const JAR_TEXT: &str = "the app jar";

/// The downloaded `.deb`s, shared with the arch tests (the same packages).
fn cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("arch-debs")
}

/// The images of one build: one per platform, and the index of both.
struct Built {
    amd64: PathBuf,
    arm64: PathBuf,
    index: PathBuf,
}

/// Build both platforms' images and their index in `work` (store and all), from scratch.
fn build(work: &Path) -> Built {
    std::fs::create_dir_all(work).unwrap();
    let root = work.join("store");
    let jar_src = work.join("jar");
    std::fs::create_dir_all(jar_src.join("share")).unwrap();
    std::fs::write(jar_src.join("share/app.jar"), format!("{JAR_TEXT}\n")).unwrap();
    let jar = store_add(&root, "app-jar", &jar_src);
    let image = |arch: &str| -> PathBuf {
        let lock = work.join(format!("bash.{arch}.lock"));
        ok(&run(deb_lock(&root)
            .args(["resolve", "bash", "coreutils", "--architecture", arch, "-o"])
            .arg(&lock)));
        let infos = work.join(format!("runtime.{arch}.json"));
        let built = ok(&run(deb_lock(&root)
            .arg("build")
            .arg(&lock)
            .arg("--cache")
            .arg(cache())));
        std::fs::write(&infos, built).unwrap();
        let graph = ok(&run(tool("store-query", &root).arg("closure").arg(&infos)));
        let layers = ok(&run_with_input(
            &mut tool("mklayers", &root),
            graph.as_bytes(),
        ));
        let mut layers: Vec<Vec<String>> = serde_json::from_str(&layers).unwrap();
        // The jar in a layer of its own: the same bytes for both platforms.
        layers.insert(0, vec![jar.clone()]);
        let layers_file = work.join(format!("layers.{arch}.json"));
        std::fs::write(&layers_file, serde_json::to_string(&layers).unwrap()).unwrap();
        let out = work.join(format!("{arch}.tar"));
        ok(&run(tool("mkimage", &root)
            .arg(&layers_file)
            .args(["--name", NAME, "--tag", "1", "--architecture", arch])
            .arg("--contents")
            .arg(&infos)
            .args(["--contents", &jar])
            .args(["--cmd", "/bin/bash", "--cmd", "-c"])
            .args(["--cmd", "echo $(uname -m) $(cat /share/app.jar)"])
            .arg("-o")
            .arg(&out)));
        out
    };
    let amd64 = image("amd64");
    let arm64 = image("arm64");
    let index = work.join("multi.tar");
    ok(&run(tool("mkindex", &root)
        .arg(&amd64)
        .arg(&arm64)
        .args(["--name", NAME])
        .arg("-o")
        .arg(&index)));
    Built {
        amd64,
        arm64,
        index,
    }
}

/// A build of its own for each test, removed when the test ends (each is a few hundred MB,
/// and the test runner gives each test a process of its own, so a shared one would be built
/// as often and never removed).
struct Fixture {
    _dir: tempfile::TempDir,
    built: Built,
}

impl std::ops::Deref for Fixture {
    type Target = Built;
    fn deref(&self) -> &Built {
        &self.built
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix("strata-multi-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let built = build(&dir.path().join("a"));
    Fixture { _dir: dir, built }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The platform of each manifest an index lists: `os/arch[/variant]` → manifest digest.
fn platforms(index: &Value) -> Vec<(String, String)> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            let mut shown = format!(
                "{}/{}",
                p["os"].as_str().unwrap(),
                p["architecture"].as_str().unwrap()
            );
            if let Some(v) = p["variant"].as_str() {
                shown = format!("{shown}/{v}");
            }
            (shown, m["digest"].as_str().unwrap().to_string())
        })
        .collect()
}

fn layer_digests(manifest: &Value) -> BTreeSet<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

fn skopeo(args: &[&str]) -> String {
    ok(&run(Command::new("skopeo").args(args)))
}

#[test]
fn the_index_lists_both_platforms_and_skopeo_and_podman_read_it() {
    let b = &fixture();
    let archive = format!("oci-archive:{}", b.index.display());
    let index = json(&skopeo(&["inspect", "--raw", &archive]));
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let listed = platforms(&index);
    let names: Vec<&str> = listed.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names, ["linux/amd64", "linux/arm64/v8"]);
    // Each platform's manifest is the one mkimage wrote for it.
    for (arch, tar) in [("amd64", &b.amd64), ("arm64", &b.arm64)] {
        let own_raw = skopeo(&[
            "inspect",
            "--raw",
            &format!("oci-archive:{}", tar.display()),
        ]);
        let own = json(&own_raw);
        let digest = listed
            .iter()
            .find(|(p, _)| p.contains(arch))
            .map(|(_, d)| d.clone())
            .unwrap();
        let picked = json(&skopeo(&["inspect", "--override-arch", arch, &archive]));
        assert_eq!(picked["Architecture"], arch);
        assert_eq!(format!("sha256:{}", sha256_hex(own_raw.as_bytes())), digest);
        assert_eq!(picked["Layers"], layer_list(&own));
    }
    // podman runs each platform from the layout (the arm64 one under qemu).
    start_docker();
    sh(&format!(
        "{}/scripts/services.sh binfmt",
        env!("CARGO_MANIFEST_DIR")
    ));
    for (arch, machine) in [("arm64", "aarch64"), ("amd64", "x86_64")] {
        let out = podman_run()
            .args(["--arch", arch, &archive])
            .output()
            .expect("podman");
        assert_eq!(ok(&out).trim(), format!("{machine} {JAR_TEXT}"), "{arch}");
    }
}

fn layer_list(manifest: &Value) -> Value {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].clone())
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(data);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn pushed_each_platform_pulls_its_own_image_and_the_shared_layer_is_one_blob() {
    let b = &fixture();
    let reg = Registry::start(None);
    let dest = format!("{}/{NAME}:1", reg.addr());
    let mut push = tool("push-image", Path::new("/nonexistent"));
    push.arg(&b.index)
        .arg(&dest)
        .arg("--json")
        .env_remove("STRATA_REGISTRY_USERNAME")
        .env_remove("STRATA_REGISTRY_PASSWORD")
        .env("DOCKER_CONFIG", "/nonexistent");
    let report = json(ok(&run(&mut push)).trim());

    // The registry holds the index, and under it each platform's manifest.
    let raw_text = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{dest}"),
    ]);
    let raw = json(&raw_text);
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    // The index is the one mkindex wrote, byte for byte.
    let written = json(&skopeo(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}", b.index.display()),
    ]));
    assert_eq!(raw, written);
    assert_eq!(
        report["digest"].as_str().unwrap(),
        format!("sha256:{}", sha256_hex(raw_text.as_bytes()))
    );
    let listed = platforms(&raw);
    assert_eq!(listed.len(), 2);
    let manifest_of = |digest: &str| {
        json(&skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}/{NAME}@{digest}", reg.addr()),
        ]))
    };
    let amd = layer_digests(&manifest_of(&listed[0].1));
    let arm = layer_digests(&manifest_of(&listed[1].1));
    let shared: BTreeSet<&String> = amd.intersection(&arm).collect();
    assert!(!shared.is_empty(), "the jar's layer is in both manifests");

    // Every blob went up once: the report lists each digest once, and the registry's storage
    // and access log agree.
    let blobs = report["blobs"].as_array().unwrap();
    let reported: BTreeSet<&str> = blobs
        .iter()
        .map(|b| b["digest"].as_str().unwrap())
        .collect();
    assert_eq!(reported.len(), blobs.len(), "a blob reported twice");
    let all: BTreeSet<String> = amd.union(&arm).cloned().collect();
    assert!(all.iter().all(|d| reported.contains(d.as_str())));
    assert_eq!(reg.upload_puts(), blobs.len());
    let sizes: u64 = blobs.iter().map(|b| b["size"].as_u64().unwrap()).sum();
    assert_eq!(report["uploadedBytes"].as_u64().unwrap(), sizes);
    for d in &shared {
        assert!(reg.blobs().contains(*d));
    }

    // docker pulls the image of the platform it asks for; the arm64 one runs under qemu.
    start_docker();
    sh(&format!(
        "{}/scripts/services.sh binfmt",
        env!("CARGO_MANIFEST_DIR")
    ));
    for (platform, machine) in [("linux/arm64", "aarch64"), ("linux/amd64", "x86_64")] {
        docker(&["pull", "--platform", platform, &dest]);
        let arch = docker(&["image", "inspect", "--format", "{{.Architecture}}", &dest]);
        assert_eq!(arch.trim(), &platform[6..]);
        let printed = docker(&[
            "run",
            "--rm",
            "--network=none",
            "--platform",
            platform,
            &dest,
        ]);
        assert_eq!(
            printed.trim(),
            format!("{machine} {JAR_TEXT}"),
            "{platform}"
        );
        docker(&["rmi", "-f", &dest]);
    }

    // Pushed again: nothing to upload.
    let again = json(ok(&run(&mut push)).trim());
    assert_eq!(again["uploadedBytes"], 0);
    assert_eq!(again["digest"], report["digest"]);

    // Compressed on the way: each manifest names gzip layers, the index those manifests, and
    // the arm64 image still pulls and runs.
    let gz_dest = format!("{}/{NAME}-gzip:1", reg.addr());
    let mut gz = tool("push-image", Path::new("/nonexistent"));
    gz.arg(&b.index)
        .arg(&gz_dest)
        .args(["--compress", "gzip"])
        .env_remove("STRATA_REGISTRY_USERNAME")
        .env_remove("STRATA_REGISTRY_PASSWORD")
        .env("DOCKER_CONFIG", "/nonexistent");
    ok(&run(&mut gz));
    let gz_index = json(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{gz_dest}"),
    ]));
    let gz_listed = platforms(&gz_index);
    assert_eq!(gz_listed.len(), 2);
    for ((p, plain), (q, packed)) in listed.iter().zip(&gz_listed) {
        assert_eq!(p, q);
        assert_ne!(plain, packed, "{p}: the manifest names other layers");
        let m = json(&skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}/{NAME}-gzip@{packed}", reg.addr()),
        ]));
        for l in m["layers"].as_array().unwrap() {
            assert_eq!(
                l["mediaType"],
                "application/vnd.oci.image.layer.v1.tar+gzip"
            );
        }
    }
    docker(&["pull", "--platform", "linux/arm64", &gz_dest]);
    let printed = docker(&[
        "run",
        "--rm",
        "--network=none",
        "--platform",
        "linux/arm64",
        &gz_dest,
    ]);
    assert_eq!(printed.trim(), format!("aarch64 {JAR_TEXT}"));
    docker(&["rmi", "-f", &gz_dest]);
}

#[test]
fn the_two_platform_build_is_byte_identical_elsewhere() {
    let b = &fixture();
    let dir = tempfile::Builder::new()
        .prefix("strata-multi-again-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let again = build(&dir.path().join("elsewhere/b"));
    for (one, two) in [
        (&b.amd64, &again.amd64),
        (&b.arm64, &again.arm64),
        (&b.index, &again.index),
    ] {
        assert!(
            std::fs::read(one).unwrap() == std::fs::read(two).unwrap(),
            "{} and {} differ",
            one.display(),
            two.display()
        );
    }
    // The inputs' order does not matter; a directory layout holds the same blobs.
    let swapped = dir.path().join("swapped.tar");
    ok(&run(tool("mkindex", dir.path())
        .arg(&again.arm64)
        .arg(&again.amd64)
        .args(["--name", NAME])
        .arg("-o")
        .arg(&swapped)));
    assert!(std::fs::read(&swapped).unwrap() == std::fs::read(&b.index).unwrap());
    let layout = dir.path().join("layout");
    ok(&run(tool("mkindex", dir.path())
        .arg(&again.amd64)
        .arg(&again.arm64)
        .args(["--name", NAME, "--format", "oci-dir", "-o"])
        .arg(&layout)));
    let from_tar = dir.path().join("from-tar");
    std::fs::create_dir(&from_tar).unwrap();
    sh(&format!(
        "tar -xf {} -C {}",
        b.index.display(),
        from_tar.display()
    ));
    assert_eq!(tree_listing(&layout), tree_listing(&from_tar));
    for name in tree_listing(&layout) {
        let (x, y) = (layout.join(&name), from_tar.join(&name));
        if x.is_file() {
            assert!(
                std::fs::read(&x).unwrap() == std::fs::read(&y).unwrap(),
                "{name}"
            );
        }
    }
}

/// What a failed mkindex must leave: no output, no temporary file beside it.
fn nothing_written(dir: &Path, out: &Path) {
    assert!(!out.exists(), "{} was written", out.display());
    let left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn one_line(out: &std::process::Output, code: i32, needles: &[&str]) {
    fails_with(out, code, needles);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(text.trim_end().lines().count(), 1, "{text}");
    assert!(text.starts_with("mkindex: "), "{text}");
    assert!(out.stdout.is_empty());
}

#[test]
fn hostile_inputs_are_refused_with_one_line_and_no_output() {
    let b = &fixture();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out/multi.tar");
    std::fs::create_dir(d.join("out")).unwrap();
    let mkindex = |inputs: &[&Path]| {
        let mut cmd = tool("mkindex", d);
        cmd.args(inputs).arg("-o").arg(&out);
        run(&mut cmd)
    };

    // Two images of one platform (a copy under another name).
    let copy = d.join("amd64-again.tar");
    std::fs::copy(&b.amd64, &copy).unwrap();
    let r = mkindex(&[&b.amd64, &b.arm64, &copy]);
    one_line(
        &r,
        1,
        &["amd64-again.tar", "linux/amd64", "one image per platform"],
    );
    nothing_written(&d.join("out"), &out);

    // Not an image: a text file, a tar of something else.
    std::fs::write(d.join("notes.txt"), "not an image\n").unwrap();
    let r = mkindex(&[&b.amd64, &d.join("notes.txt")]);
    one_line(&r, 1, &["notes.txt", "not a tar"]);
    nothing_written(&d.join("out"), &out);
    std::fs::create_dir(d.join("other")).unwrap();
    std::fs::write(d.join("other/readme"), "hello\n").unwrap();
    sh(&format!(
        "tar -cf {0}/other.tar -C {0}/other readme",
        d.display()
    ));
    let r = mkindex(&[&b.amd64, &d.join("other.tar")]);
    one_line(&r, 1, &["other.tar", "neither an OCI layout"]);
    nothing_written(&d.join("out"), &out);

    // An index is not an input (one image per platform).
    let r = mkindex(&[&b.index]);
    one_line(&r, 1, &["multi.tar", "not an image manifest"]);
    nothing_written(&d.join("out"), &out);

    // A layout whose names leave it: a docker-archive naming `../`, a blob that is a link
    // out of the image directory.
    let escape = d.join("escape");
    std::fs::create_dir(&escape).unwrap();
    std::fs::write(d.join("secret"), "secret").unwrap();
    std::fs::write(
        escape.join("manifest.json"),
        r#"[{"Config":"../secret","RepoTags":["x:1"],"Layers":[]}]"#,
    )
    .unwrap();
    let r = mkindex(&[&escape]);
    one_line(&r, 1, &["escape", "outside the image"]);
    nothing_written(&d.join("out"), &out);
    let linked = d.join("linked");
    sh(&format!(
        "mkdir -p {l} && tar -xf {a} -C {l}",
        l = linked.display(),
        a = b.arm64.display()
    ));
    let config = read_json(&linked.join("manifest.json"))[0]["Config"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(linked.join(&config)).unwrap();
    std::os::unix::fs::symlink("../../../secret", linked.join(&config)).unwrap();
    let r = mkindex(&[&b.amd64, &linked]);
    one_line(&r, 1, &["linked", "outside the image"]);
    nothing_written(&d.join("out"), &out);

    // A corrupt layer (same size, one byte changed; not the jar's, which the amd64 image
    // gives first) stops the index; nothing is written.
    let corrupt = d.join("corrupt");
    sh(&format!(
        "mkdir -p {l} && tar -xf {a} -C {l}",
        l = corrupt.display(),
        a = b.arm64.display()
    ));
    let first = read_json(&corrupt.join("manifest.json"))[0]["Layers"][1]
        .as_str()
        .unwrap()
        .to_string();
    let mut bytes = std::fs::read(corrupt.join(&first)).unwrap();
    bytes[600] ^= 1;
    std::fs::write(corrupt.join(&first), bytes).unwrap();
    let r = mkindex(&[&b.amd64, &corrupt]);
    one_line(&r, 1, &["corrupt", "hash to"]);
    nothing_written(&d.join("out"), &out);

    // Usage: no images, a bad format.
    let r = run(tool("mkindex", d).arg("-o").arg(&out));
    assert_eq!(r.status.code(), Some(2));
    let r = run(tool("mkindex", d)
        .arg(&b.amd64)
        .args(["--format", "docker"]));
    assert_eq!(r.status.code(), Some(2));
}
