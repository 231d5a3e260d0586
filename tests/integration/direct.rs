//! `mkimage --push` and `mkimage --load docker` against the real docker-registry and dockerd:
//! the direct push gives the manifest `push-image` gives for mkimage's tar, and after a change
//! reads and sends only the changed layers (strace counts the store files opened, a counting
//! proxy the bytes sent); the thin load into dockerd sends only the layers it lacks, always
//! sends one it lacks (an image deleted between builds), and falls back to the whole image when
//! the engine claims a layer it does not have.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::push::blobs_with;
use crate::push::{Fault, Proxy, docker_pull_run};
use crate::support::*;

const REPO: &str = "strata-test/direct";

/// A store with hello, 3 MB of data (unique to this run, so no engine holds it already) and a
/// small store path whose motd each version changes; the layers put the changing one last.
struct Fixture {
    _dir: tempfile::TempDir,
    work: PathBuf,
    root: PathBuf,
    hello: String,
    data: String,
    cache: PathBuf,
}

impl Fixture {
    fn new(prefix: &str) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let work = dir.path().to_path_buf();
        let root = work.join("root");
        let hello = store_add(&root, "hello", &static_hello(&work));
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let mut rng = SplitMix64::new(seed);
        std::fs::create_dir_all(work.join("data/share")).unwrap();
        std::fs::write(work.join("data/share/blob"), rng.bytes(3_000_000)).unwrap();
        let data = store_add(&root, "data", &work.join("data"));
        let cache = work.join("cache");
        Fixture {
            _dir: dir,
            work,
            root,
            hello,
            data,
            cache,
        }
    }

    /// The store path holding `/etc/motd` with `motd`, and the layers JSON with it last.
    fn version(&self, motd: &str) -> (String, PathBuf) {
        let tag = motd.replace(' ', "-");
        let src = self.work.join(format!("extra-{tag}"));
        std::fs::create_dir_all(src.join("etc")).unwrap();
        std::fs::write(src.join("etc/motd"), format!("{motd}\n")).unwrap();
        let extra = store_add(&self.root, "extra", &src);
        let layers = self.work.join(format!("layers-{tag}.json"));
        let doc = vec![vec![&self.data], vec![&self.hello], vec![&extra]];
        std::fs::write(&layers, serde_json::to_string(&doc).unwrap()).unwrap();
        (extra, layers)
    }

    /// mkimage for `layers` with the test image's config and the layer cache.
    fn mkimage(&self, layers: &Path, extra: &str, name: &str, tag: &str) -> Command {
        let mut cmd = tool("mkimage", &self.root);
        cmd.arg(layers)
            .args(["--name", name, "--tag", tag])
            .arg("--cache")
            .arg(&self.cache)
            .args(["--contents", &self.hello, "--contents", extra])
            .args(["--cmd", "/bin/hello", "--cmd", "arg1"])
            .args(["--env", "GREETING=world"])
            .env_remove("STRATA_REGISTRY_USERNAME")
            .env_remove("STRATA_REGISTRY_PASSWORD")
            .env("DOCKER_CONFIG", "/nonexistent");
        cmd
    }
}

/// The `--json -` summary mkimage printed.
fn summary(cmd: &mut Command) -> (Value, String) {
    let out = run(cmd);
    let text = ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("{stderr}");
    (serde_json::from_str(text.trim()).expect("--json -"), stderr)
}

/// The store paths (of `paths`) whose files the traced run opened, from an strace log.
fn opened(trace: &Path, root: &Path, paths: &[&str]) -> BTreeSet<String> {
    let log = std::fs::read_to_string(trace).unwrap();
    paths
        .iter()
        .filter(|p| {
            let physical = format!("{}{}/", root.display(), p);
            // Files opened for their bytes (directories are listed for the customisation
            // layer's links, whatever the sink).
            log.lines().any(|l| {
                l.contains("openat(")
                    && l.contains(&physical)
                    && !l.contains("O_DIRECTORY")
                    && !l.contains("= -1")
            })
        })
        .map(|p| p.to_string())
        .collect()
}

#[test]
fn a_direct_push_is_the_tar_push_and_after_a_change_reads_and_sends_only_the_changed_layers() {
    let fx = Fixture::new("strata-direct-push-");
    let reg = Registry::start(None);
    let proxy = Proxy::start(reg.port, Fault::None, None);
    let (extra1, layers1) = fx.version("from the store");

    // The tar way: mkimage -o, then push-image (this also fills the layer cache).
    let tar = fx.work.join("v1.tar");
    ok(&run(fx
        .mkimage(&layers1, &extra1, REPO, "t1")
        .arg("-o")
        .arg(&tar)));
    let mut push = tool("push-image", Path::new("/nonexistent"));
    push.arg(&tar)
        .arg(format!("{}/strata-test/by-tar:t1", reg.addr()))
        .arg("--json")
        .env("DOCKER_CONFIG", "/nonexistent");
    let by_tar: Value = serde_json::from_str(ok(&run(&mut push)).trim()).unwrap();

    // The direct way, to another repository (a registry links blobs per repository, so
    // every blob goes up again).
    let dest = format!("{}/{REPO}", proxy.addr());
    let (s1, _) = summary(
        fx.mkimage(&layers1, &extra1, REPO, "t1")
            .args(["--push", &dest, "--json", "-"]),
    );
    let p1 = &s1["pushed"];
    assert_eq!(p1["digest"], by_tar["digest"], "the same manifest: {s1}");
    assert_eq!(p1["reference"], format!("{dest}:t1"));
    assert_eq!(
        blobs_with(p1, "uploaded").len(),
        5,
        "4 layers and the config"
    );
    assert_eq!(
        proxy.upload_body_bytes(),
        p1["uploadedBytes"].as_u64().unwrap()
    );
    let direct = format!("{}/{REPO}", reg.addr());
    assert_eq!(
        docker_pull_run(&format!("{direct}:t1")),
        "hello from strata: world arg1 from the store"
    );

    // A one-line change: strace sees which store paths' files are opened.
    let (extra2, layers2) = fx.version("a changed line");
    proxy.reset();
    let trace = fx.work.join("trace");
    let mut traced = Command::new("strace");
    traced
        .args(["-f", "-qq", "-e", "trace=openat", "-o"])
        .arg(&trace);
    // (The start check reads the entrypoint's files whatever the sink: left out here.)
    let mut mk = fx.mkimage(&layers2, &extra2, REPO, "t2");
    mk.arg("--no-start-check");
    traced.arg(mk.get_program()).args(mk.get_args());
    for (k, v) in mk.get_envs() {
        match v {
            Some(v) => traced.env(k, v),
            None => traced.env_remove(k),
        };
    }
    let (s2, _) = summary(traced.args(["--push", &dest, "--json", "-"]));
    let p2 = &s2["pushed"];
    let read = opened(&trace, &fx.root, &[&fx.data, &fx.hello, &extra1, &extra2]);
    assert_eq!(
        read,
        BTreeSet::from([extra2.clone()]),
        "only the changed store path is read"
    );
    let uploaded = blobs_with(p2, "uploaded");
    assert_eq!(
        uploaded.len(),
        3,
        "the changed layer, the customisation layer, the config: {p2}"
    );
    assert_eq!(blobs_with(p2, "skipped").len(), 2, "data and hello: {p2}");
    let sent = p2["uploadedBytes"].as_u64().unwrap();
    assert_eq!(proxy.upload_body_bytes(), sent, "bytes on the wire");
    assert!(sent < 100_000, "{sent} bytes sent after a one-line change");
    assert_eq!(proxy.count("POST", "/blobs/uploads/"), 3);
    assert_eq!(
        docker_pull_run(&format!("{direct}:t2")),
        "hello from strata: world arg1 a changed line"
    );

    // And the tar way again gives the same manifest.
    let tar2 = fx.work.join("v2.tar");
    ok(&run(fx
        .mkimage(&layers2, &extra2, REPO, "t2")
        .arg("-o")
        .arg(&tar2)));
    let mut push = tool("push-image", Path::new("/nonexistent"));
    push.arg(&tar2)
        .arg(format!("{}/strata-test/by-tar:t2", reg.addr()))
        .arg("--json")
        .env("DOCKER_CONFIG", "/nonexistent");
    let by_tar2: Value = serde_json::from_str(ok(&run(&mut push)).trim()).unwrap();
    assert_eq!(p2["digest"], by_tar2["digest"]);
}

#[test]
fn a_direct_push_streams_a_big_new_layer_in_chunks() {
    let fx = Fixture::new("strata-direct-chunks-");
    let reg = Registry::start(None);
    let proxy = Proxy::start(reg.port, Fault::None, None);
    let (extra, layers) = fx.version("from the store");
    let dest = format!("{}/{REPO}", proxy.addr());
    // No cache: every layer is streamed as it is made; 1 MiB chunks.
    let mut cmd = fx.mkimage(&layers, &extra, REPO, "c1");
    cmd.env_remove("STRATA_IMAGE_CACHE");
    let args: Vec<_> = cmd
        .get_args()
        .map(|a| a.to_owned())
        .filter(|a| a != "--cache" && Path::new(a) != fx.cache)
        .collect();
    let mut cmd2 = tool("mkimage", &fx.root);
    cmd2.args(args)
        .args(["--push", &dest, "--json", "-", "--chunk-size", "1M"])
        .env("DOCKER_CONFIG", "/nonexistent");
    let (s, _) = summary(&mut cmd2);
    let pushed = &s["pushed"];
    let big = pushed["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["size"].as_u64().unwrap() > 3_000_000)
        .unwrap();
    assert_eq!(big["action"], "uploaded");
    assert_eq!(big["chunks"], 3, "{big}");
    assert_eq!(big["uploadedBytes"], big["size"]);
    assert!(proxy.count("PATCH", "/blobs/uploads/") >= 3);
    let direct = format!("{}/{REPO}", reg.addr());
    assert_eq!(
        docker_pull_run(&format!("{direct}:c1")),
        "hello from strata: world arg1 from the store"
    );
}

#[test]
fn a_direct_push_to_a_registry_that_refuses_chunks_sends_each_blob_whole() {
    let fx = Fixture::new("strata-direct-whole-");
    let reg = Registry::start(None);
    let refusing = Proxy::start(reg.port, Fault::RefusePatch, None);
    let (extra, layers) = fx.version("from the store");
    let tmp = fx.work.join("tmp-whole");
    std::fs::create_dir_all(&tmp).unwrap();
    let (s, _) = summary(
        fx.mkimage(&layers, &extra, REPO, "w1")
            .args(["--push", &format!("{}/{REPO}", refusing.addr())])
            .args(["--json", "-", "--chunk-size", "1M"])
            .env("TMPDIR", &tmp)
            .env("DOCKER_CONFIG", "/nonexistent"),
    );
    let blobs = s["pushed"]["blobs"].as_array().unwrap();
    // A blob bigger than a chunk was refused its first chunk and went up whole; the others
    // were whole anyway.
    let big: Vec<&Value> = blobs
        .iter()
        .filter(|b| b["size"].as_u64().unwrap() > 1 << 20)
        .collect();
    assert!(
        !big.is_empty() && big.iter().all(|b| b["fellBack"] == true),
        "{s}"
    );
    // The spooled blobs were removed once sent.
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(
        docker_pull_run(&format!("{}/{REPO}:w1", reg.addr())),
        "hello from strata: world arg1 from the store"
    );
}

/// `docker run` of a loaded image.
fn docker_run(image: &str) -> String {
    docker(&["run", "--rm", "--network=none", image])
        .trim()
        .to_string()
}

fn rmi(images: &[&str]) {
    let _ = Command::new("docker")
        .args(["rmi", "-f"])
        .args(images)
        .output();
}

#[test]
fn the_thin_load_sends_docker_only_what_it_lacks_and_never_leaves_out_a_missing_layer() {
    start_docker();
    let fx = Fixture::new("strata-direct-load-");
    let name = format!(
        "strata-test/thin-{}",
        fx.work
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_lowercase()
    )
    .replace(['.', '_'], "-");
    let image = |tag: &str| format!("{name}:{tag}");
    let (extra1, layers1) = fx.version("from the store");
    let (extra2, layers2) = fx.version("a changed line");
    let load = |layers: &Path, extra: &str, tag: &str| {
        summary(
            fx.mkimage(layers, extra, &name, tag)
                .args(["--load", "docker", "--json", "-"]),
        )
    };

    // First load: dockerd has none of this run's data layer, so every layer goes.
    let (s1, err1) = load(&layers1, &extra1, "l1");
    assert_eq!(s1["loaded"]["layersSent"], 4, "{s1}");
    assert_eq!(s1["loaded"]["layersOmitted"], 0);
    assert!(!err1.contains("refused"), "{err1}");
    assert_eq!(
        docker_run(&image("l1")),
        "hello from strata: world arg1 from the store"
    );

    // A change in the top store layer: data and hello are left out.
    let (s2, err2) = load(&layers2, &extra2, "l2");
    assert_eq!(s2["loaded"]["layersOmitted"], 2, "{s2}");
    assert_eq!(s2["loaded"]["layersSent"], 2);
    assert!(s2["loaded"]["fellBack"].is_null(), "{err2}");
    assert_eq!(
        docker_run(&image("l2")),
        "hello from strata: world arg1 a changed line"
    );
    let id = docker(&["image", "inspect", "--format", "{{.Id}}", &image("l2")]);
    assert_eq!(id.trim(), s2["configDigest"].as_str().unwrap());

    // Rebuilt under the same tag: the image it replaces holds every cached layer, so that one
    // image is all dockerd is asked about.
    let (extra3, layers3) = fx.version("a third line");
    let log = fx.work.join("docker-calls");
    let path = docker_wrapper(
        &fx.work.join("logging-docker"),
        &format!("echo \"$*\" >> '{}'", log.display()),
    );
    let (s2b, _) = summary(
        fx.mkimage(&layers3, &extra3, &name, "l2")
            .args(["--load", "docker", "--json", "-"])
            .env("PATH", &path),
    );
    assert_eq!(s2b["loaded"]["layersOmitted"], 2, "{s2b}");
    // What the wrapper was asked besides `load` (the log read and emptied).
    let questions = || -> Vec<String> {
        let calls = std::fs::read_to_string(&log).unwrap();
        std::fs::remove_file(&log).unwrap();
        calls
            .lines()
            .filter(|l| !l.starts_with("load"))
            .map(String::from)
            .collect()
    };
    let only_the_replaced_image = [format!(
        "image inspect --format {{{{json .RootFS.Layers}}}} {}",
        image("l2")
    )];
    assert_eq!(questions(), only_the_replaced_image);
    assert_eq!(
        docker_run(&image("l2")),
        "hello from strata: world arg1 a third line"
    );

    // The changed path below an unchanged one: that one's chain now runs through new bytes,
    // which no engine can hold, so again only the replaced image is asked about, and both
    // are sent.
    let (extra4, _) = fx.version("a fourth line");
    let middle = fx.work.join("layers-middle.json");
    let doc = vec![vec![&fx.data], vec![&extra4], vec![&fx.hello]];
    std::fs::write(&middle, serde_json::to_string(&doc).unwrap()).unwrap();
    let (s2c, _) = summary(
        fx.mkimage(&middle, &extra4, &name, "l2")
            .args(["--load", "docker", "--json", "-"])
            .env("PATH", &path),
    );
    assert_eq!(s2c["loaded"]["layersOmitted"], 1, "{s2c}");
    assert_eq!(s2c["loaded"]["layersSent"], 3, "{s2c}");
    assert_eq!(questions(), only_the_replaced_image);
    assert_eq!(
        docker_run(&image("l2")),
        "hello from strata: world arg1 a fourth line"
    );

    // The images deleted between builds: their layers are gone, and every one is sent.
    // (l2's earlier images too, untagged when the next replaced them.)
    let replaced = [&s2, &s2b].map(|s| s["configDigest"].as_str().unwrap().to_string());
    rmi(&[&image("l1"), &image("l2"), &replaced[0], &replaced[1]]);
    let (s3, err3) = load(&layers2, &extra2, "l3");
    assert_eq!(s3["loaded"]["layersOmitted"], 0, "{s3}");
    assert_eq!(s3["loaded"]["layersSent"], 4);
    assert!(s3["loaded"]["fellBack"].is_null(), "{err3}");
    assert_eq!(
        docker_run(&image("l3")),
        "hello from strata: world arg1 a changed line"
    );

    // An engine that claims layers it does not have: docker refuses the thin archive and the
    // whole image is sent. The claim: the v1 image's diff_ids, as a `docker` on PATH that
    // adds them to every `image inspect` answer.
    rmi(&[&image("l3")]);
    let tar = fx.work.join("v1.tar");
    ok(&run(fx
        .mkimage(&layers1, &extra1, &name, "l1")
        .arg("-o")
        .arg(&tar)));
    let diff_ids = tar_diff_ids(&tar, &fx.work.join("v1-unpacked"));
    let claim = fx.work.join("claim.json");
    std::fs::write(&claim, serde_json::to_string(&diff_ids).unwrap()).unwrap();
    let path = docker_wrapper(
        &fx.work.join("lying-docker"),
        &format!(
            "if [ \"$1 $2\" = \"image inspect\" ]; then\n  \"$real\" \"$@\" || exit $?\n  cat '{}'; echo; exit 0\nfi",
            claim.display()
        ),
    );
    let (s4, err4) = summary(
        fx.mkimage(&layers1, &extra1, &name, "l4")
            .args(["--load", "docker", "--json", "-"])
            .env("PATH", path),
    );
    assert!(
        err4.contains("refused the image without the layers it said it had"),
        "{err4}"
    );
    assert!(!s4["loaded"]["fellBack"].is_null());
    assert_eq!(s4["loaded"]["layersSent"], 4);
    assert_eq!(
        docker_run(&image("l4")),
        "hello from strata: world arg1 from the store"
    );
    rmi(&[&image("l1"), &image("l4")]);
}

/// A `docker` in `bin` that runs `body` (a shell snippet; `$real` is the real docker) and then
/// the real docker with the same arguments; the PATH that finds it first.
fn docker_wrapper(bin: &Path, body: &str) -> String {
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v docker"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    std::fs::create_dir_all(bin).unwrap();
    let script = format!(
        "#!/bin/sh\nreal='{real}'\n{body}\nexec \"$real\" \"$@\"\n",
        real = real.trim()
    );
    std::fs::write(bin.join("docker"), script).unwrap();
    std::fs::set_permissions(bin.join("docker"), std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// The config's diff_ids of a docker-archive.
fn tar_diff_ids(tar: &Path, dir: &Path) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(tar)
        .arg("-C")
        .arg(dir)
        .status()
        .unwrap();
    assert!(st.success());
    let manifest = read_json(&dir.join("manifest.json"));
    let config = read_json(&dir.join(manifest[0]["Config"].as_str().unwrap()));
    config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn podman_and_containerd_get_the_whole_image_and_run_it() {
    let fx = Fixture::new("strata-direct-engines-");
    let name = "strata-test/direct-engines";
    let expected = "hello from strata: world arg1 from the store";
    let (extra, layers) = fx.version("from the store");

    let (s, _) = summary(
        fx.mkimage(&layers, &extra, name, "p1")
            .args(["--load", "podman", "--json", "-"]),
    );
    assert_eq!(s["loaded"]["engine"], "podman");
    assert_eq!(s["loaded"]["layersSent"], 4, "{s}");
    let out = podman_run()
        .arg(format!("localhost/{name}:p1"))
        .output()
        .expect("podman run");
    assert_eq!(ok(&out).trim(), expected);
    let _ = Command::new("podman")
        .args(["rmi", &format!("localhost/{name}:p1")])
        .output();

    sh(&format!(
        "{}/scripts/services.sh containerd",
        env!("CARGO_MANIFEST_DIR")
    ));
    let ns = "strata-test";
    let (s, _) = summary(
        fx.mkimage(&layers, &extra, name, "c1")
            .args(["--load", "containerd", "--json", "-"])
            .env("CONTAINERD_NAMESPACE", ns),
    );
    assert_eq!(s["loaded"]["engine"], "containerd");
    assert_eq!(s["loaded"]["layersSent"], 4, "{s}");
    let image = format!("docker.io/{name}:c1");
    let id = format!("strata-direct-{}", std::process::id());
    let out = Command::new("ctr")
        .args(["-n", ns, "run", "--rm", &image, &id])
        .output()
        .expect("ctr run");
    assert_eq!(ok(&out).trim(), expected);
    let _ = Command::new("ctr")
        .args(["-n", ns, "images", "rm", &image])
        .output();
}

#[test]
fn a_direct_push_takes_credentials_as_push_image_does() {
    let fx = Fixture::new("strata-direct-auth-");
    let reg = Registry::start(Some(("alice", "s3cret-pw")));
    let (extra, layers) = fx.version("from the store");
    let dest = format!("{}/{REPO}", reg.addr());
    // None: one line, exit 1, no tag.
    let out = run(fx
        .mkimage(&layers, &extra, REPO, "a1")
        .args(["--push", &dest]));
    fails_with(&out, 1, &["mkimage: ", "credentials"]);
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    assert!(!reg.has_tag(REPO, "a1", Some("alice:s3cret-pw")));
    // From the environment, and from stdin.
    ok(&run(fx
        .mkimage(&layers, &extra, REPO, "a1")
        .args(["--push", &dest])
        .env("STRATA_REGISTRY_USERNAME", "alice")
        .env("STRATA_REGISTRY_PASSWORD", "s3cret-pw")));
    assert!(reg.has_tag(REPO, "a1", Some("alice:s3cret-pw")));
    let out = run_with_input(
        fx.mkimage(&layers, &extra, REPO, "a2").args([
            "--push",
            &dest,
            "--username",
            "alice",
            "--password-stdin",
        ]),
        b"s3cret-pw\n",
    );
    ok(&out);
    assert!(reg.has_tag(REPO, "a2", Some("alice:s3cret-pw")));
    // --password-stdin and the layers on stdin cannot both be.
    let out = run(tool("mkimage", &fx.root).args([
        "--name",
        REPO,
        "--push",
        &dest,
        "--username",
        "alice",
        "--password-stdin",
    ]));
    fails_with(&out, 2, &["stdin"]);
}
