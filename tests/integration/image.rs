//! mkimage: store layers byte-identical to nixpkgs' stream_layered_image.py (run live),
//! real consumers (docker, podman, skopeo, umoci + runc, containerd), reproducibility across
//! environments, the cache, the formats, a base image, and bad input.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::support::store_add as add;
use crate::support::*;

/// A store with a static hello program, a data tree with every awkward kind of name, and a
/// third path: three store layers.
struct Fixture {
    _dir: FixtureDir,
    work: PathBuf,
    root: PathBuf,
    hello: String,
    data: String,
    extra: String,
    layers: PathBuf,
    /// The consumer-test image (docker+OCI tar).
    image: PathBuf,
}

pub const NAME: &str = "strata-test/hello";
pub const TAG: &str = "t1";

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = FixtureDir::new("strata-image-");
        let work = dir.path().to_path_buf();
        let root = work.join("root");
        let hello_src = static_hello(&work);
        // Long, non-ASCII and non-UTF-8 names, hard links, long symlinks, empty dirs.
        let d = work.join("data");
        sh(&format!(
            r#"d={d}; mkdir -p "$d/share/a" "$d/share/b" "$d/share/empty" "$d/share/a-b"
            printf long > "$d/share/a/{long}"; printf u > "$d/share/b/é-ü"
            printf ab > "$d/share/a-b/f"; ln "$d/share/a-b/f" "$d/share/hard"
            ln -s "a/{long}" "$d/share/link-{long90}"; printf bad > "$d/share/bad"$'\xff'
            head -c 300000 /dev/urandom > "$d/share/big"; printf x > "$d/share/run"; chmod +x "$d/share/run""#,
            d = d.display(),
            long = "x".repeat(150),
            long90 = "y".repeat(90),
        ));
        sh(&format!(
            "mkdir -p {e}/etc && echo 'from the store' > {e}/etc/motd",
            e = work.join("extra").display()
        ));
        let hello = add(&root, "hello", &hello_src);
        let data = add(&root, "data", &d);
        let extra = add(&root, "extra", &work.join("extra"));
        let layers = work.join("layers.json");
        std::fs::write(
            &layers,
            serde_json::to_string(&vec![vec![&data], vec![&extra], vec![&hello]]).unwrap(),
        )
        .unwrap();
        let image = work.join("hello.tar");
        let out = run(mkimage(&root, &layers)
            .args(["--name", NAME, "--tag", TAG])
            .args(["--contents", &hello, "--contents", &extra])
            .args(["--cmd", "/bin/hello", "--cmd", "arg1"])
            .args(["--env", "GREETING=world", "--workdir", "/"])
            .args(["--extra-commands", "mkdir -p tmp var/empty"])
            .args(["--perms", "/tmp 1777 0 0"])
            .arg("-o")
            .arg(&image));
        ok(&out);
        Fixture {
            _dir: dir,
            work,
            root,
            hello,
            data,
            extra,
            layers,
            image,
        }
    })
}

const EXPECTED: &str = "hello from strata: world arg1 from the store";

fn mkimage(root: &Path, layers: &Path) -> Command {
    let mut cmd = tool("mkimage", root);
    cmd.arg(layers);
    cmd
}

/// Every member of a tar, by name.
fn members(tar: &Path) -> BTreeMap<String, Vec<u8>> {
    let file = std::fs::File::open(tar).unwrap();
    let mut archive = tar::Archive::new(file);
    let mut out = BTreeMap::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.insert(name, data);
    }
    out
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// The image config and layer blobs of a docker-archive, via manifest.json.
fn docker_view(tar: &Path) -> (Value, Vec<Vec<u8>>) {
    let mut m = members(tar);
    let manifest = json(&m["manifest.json"]);
    let config = json(&m[manifest[0]["Config"].as_str().unwrap()]);
    let layers = manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| m.remove(l.as_str().unwrap()).unwrap())
        .collect();
    (config, layers)
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Run nixpkgs' stream_layered_image.py with strata's store bind-mounted at /nix/store.
fn reference_image(fx: &Fixture, conf: &Value, out: &Path) {
    let conf_path = out.with_extension("conf.json");
    std::fs::write(&conf_path, serde_json::to_vec(conf).unwrap()).unwrap();
    let script = shared("reference/stream_layered_image.py");
    let cmd = format!(
        "mount --bind {store} /nix/store && python3 {script} {conf} > {out}",
        store = fx.root.join("nix/store").display(),
        script = script.display(),
        conf = conf_path.display(),
        out = out.display()
    );
    std::fs::create_dir_all("/nix/store").unwrap();
    let o = Command::new("unshare")
        .args(["-m", "sh", "-c", &cmd])
        .output()
        .expect("unshare");
    assert!(
        o.status.success(),
        "reference failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

#[test]
fn store_layers_are_byte_identical_to_nixpkgs() {
    let fx = fixture();
    let owners: [&[&str]; 2] = [
        &[],
        &[
            "--uid",
            "1000",
            "--gid",
            "100",
            "--uname",
            "a-rather-long-user-name-over-32-chars",
            "--gname",
            "users",
            "--mtime",
            "2024-05-01T12:00:00Z",
        ],
    ];
    for (i, extra) in owners.iter().enumerate() {
        let ours = fx.work.join(format!("ref-ours-{i}.tar"));
        ok(&run(mkimage(&fx.root, &fx.layers)
            .args(["--name", "x", "--tag", "1"])
            .args(*extra)
            .arg("-o")
            .arg(&ours)));
        let (config, layers) = docker_view(&ours);
        // The customisation layer is handed to the reference as it is (it builds none).
        let cust = fx.work.join(format!("cust-{i}"));
        std::fs::create_dir_all(&cust).unwrap();
        let last = layers.last().unwrap();
        std::fs::write(cust.join("layer.tar"), last).unwrap();
        std::fs::write(cust.join("checksum"), sha256_hex(last)).unwrap();
        let get = |k: &str, d: &str| {
            let pos = extra.iter().position(|a| *a == k);
            pos.map_or(d.to_string(), |p| extra[p + 1].to_string())
        };
        let conf = serde_json::json!({
            "store_dir": "/nix/store", "from_image": null,
            "store_layers": [[fx.data], [fx.extra], [fx.hello]],
            "customisation_layer": cust, "repo_tag": "x:1",
            "created": "1970-01-01T00:00:01Z", "mtime": get("--mtime", "1970-01-01T00:00:01Z"),
            "uid": get("--uid", "0").parse::<u64>().unwrap(),
            "gid": get("--gid", "0").parse::<u64>().unwrap(),
            "uname": get("--uname", "root"), "gname": get("--gname", "root"),
            "architecture": "amd64", "os": "linux", "config": {},
        });
        let reference = fx.work.join(format!("ref-{i}.tar"));
        reference_image(fx, &conf, &reference);
        let (ref_config, ref_layers) = docker_view(&reference);
        assert_eq!(ref_layers.len(), layers.len());
        for (n, (a, b)) in layers.iter().zip(&ref_layers).enumerate() {
            assert!(
                a == b,
                "run {i}: layer {} differs from the reference at byte {} (sizes {} / {})",
                n + 1,
                first_difference(a, b),
                a.len(),
                b.len()
            );
        }
        assert_eq!(
            config["rootfs"]["diff_ids"],
            ref_config["rootfs"]["diff_ids"]
        );
    }
}

/// `docker load` an image archive, then `docker run --network=none` the reference; returns what
/// the container printed and what the load printed.
fn docker_load_and_run(tar: &Path, reference: &str) -> (String, String) {
    start_docker();
    let load = Command::new("docker")
        .args(["load", "-i"])
        .arg(tar)
        .output()
        .expect("docker");
    let loaded = ok(&load);
    let out = Command::new("docker")
        .args(["run", "--rm", "--network=none", reference])
        .output()
        .expect("docker run");
    (ok(&out), loaded)
}

#[test]
fn docker_loads_and_runs_it() {
    let fx = fixture();
    let (printed, loaded) = docker_load_and_run(&fx.image, &format!("{NAME}:{TAG}"));
    assert!(loaded.contains(&format!("{NAME}:{TAG}")), "{loaded}");
    assert_eq!(printed.trim(), EXPECTED);
    // Compressed layers too.
    for c in ["gzip", "zstd"] {
        let tar = fx.work.join(format!("docker-{c}.tar"));
        ok(&run(mkimage(&fx.root, &fx.layers)
            .args(["--name", NAME, "--tag", c, "--compress", c])
            .args([
                "--contents",
                &fx.hello,
                "--contents",
                &fx.extra,
                "--env",
                "GREETING=world",
            ])
            .args(["--cmd", "/bin/hello", "--cmd", "arg1", "-o"])
            .arg(&tar)));
        let (printed, _) = docker_load_and_run(&tar, &format!("{NAME}:{c}"));
        assert_eq!(printed.trim(), EXPECTED, "{c}");
    }
}

#[test]
fn podman_loads_and_runs_it() {
    let fx = fixture();
    let load = Command::new("podman")
        .args(["load", "-i"])
        .arg(&fx.image)
        .output()
        .expect("podman");
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    let out = podman_run()
        .arg(format!("docker.io/{NAME}:{TAG}"))
        .output()
        .expect("podman run");
    assert_eq!(ok(&out).trim(), EXPECTED);
}

#[test]
fn skopeo_inspects_and_copies_both_views() {
    let fx = fixture();
    for transport in ["docker-archive", "oci-archive"] {
        let out = Command::new("skopeo")
            .args(["inspect", &format!("{transport}:{}", fx.image.display())])
            .output()
            .expect("skopeo");
        let info = json(ok(&out).as_bytes());
        assert_eq!(info["Layers"].as_array().unwrap().len(), 4, "{transport}");
        assert_eq!(info["Os"], "linux");
    }
    let dest = fx.work.join("skopeo-oci");
    let out = Command::new("skopeo")
        .args(["copy", &format!("oci-archive:{}", fx.image.display())])
        .arg(format!("oci:{}:{TAG}", dest.display()))
        .output()
        .expect("skopeo copy");
    ok(&out);
    let index = read_json(&dest.join("index.json"));
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        TAG
    );
}

#[test]
fn umoci_unpacks_and_runc_runs_it() {
    let fx = fixture();
    let dir = fx.work.join("umoci");
    std::fs::create_dir_all(&dir).unwrap();
    sh(&format!(
        "cd {d} && rm -rf layout bundle && mkdir layout && tar -xf {img} -C layout && umoci unpack --image layout:{TAG} bundle >/dev/null",
        d = dir.display(),
        img = fx.image.display()
    ));
    let cfg_path = dir.join("bundle/config.json");
    let mut cfg = read_json(&cfg_path);
    cfg["process"]["terminal"] = Value::Bool(false);
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let id = format!("strata-test-{}", std::process::id());
    let out = Command::new("runc")
        .args(["run", &id])
        .current_dir(dir.join("bundle"))
        .output()
        .expect("runc");
    assert_eq!(ok(&out).trim(), EXPECTED);
    // /tmp got its --perms mode.
    let meta = std::fs::symlink_metadata(dir.join("bundle/rootfs/tmp")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o7777, 0o1777);
}

#[test]
fn containerd_imports_it() {
    let fx = fixture();
    sh(&format!(
        "{}/scripts/services.sh containerd",
        env!("CARGO_MANIFEST_DIR")
    ));
    let ns = "strata-test";
    let out = Command::new("ctr")
        .args(["-n", ns, "images", "import"])
        .arg(&fx.image)
        .output()
        .expect("ctr");
    ok(&out);
    let name = format!("docker.io/{NAME}:{TAG}");
    let ls = Command::new("ctr")
        .args(["-n", ns, "images", "ls", "-q"])
        .output()
        .expect("ctr ls");
    assert!(ok(&ls).lines().any(|l| l == name), "{name} not imported");
    let id = format!("strata-test-{}", std::process::id());
    let out = Command::new("ctr")
        .args(["-n", ns, "run", "--rm", &name, &id])
        .output()
        .expect("ctr run");
    assert_eq!(ok(&out).trim(), EXPECTED);
}

#[test]
fn layout_holds_both_views_and_the_config_is_complete() {
    let fx = fixture();
    let m = members(&fx.image);
    assert_eq!(json(&m["oci-layout"])["imageLayoutVersion"], "1.0.0");
    let index = json(&m["index.json"]);
    let ann = &index["manifests"][0]["annotations"];
    assert_eq!(
        ann["io.containerd.image.name"],
        format!("docker.io/{NAME}:{TAG}")
    );
    assert_eq!(ann["org.opencontainers.image.ref.name"], TAG);
    let (config, layers) = docker_view(&fx.image);
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["history"].as_array().unwrap().len(), layers.len());
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["/bin/hello", "arg1"])
    );
    for (blob, diff) in layers
        .iter()
        .zip(config["rootfs"]["diff_ids"].as_array().unwrap())
    {
        assert_eq!(
            format!("sha256:{}", sha256_hex(blob)),
            diff.as_str().unwrap()
        );
        assert_eq!(blob.len() % 10240, 0);
    }
    // Every member name is relative and free of '..'.
    for layer in &layers {
        let mut a = tar::Archive::new(layer.as_slice());
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            let p = e.path().unwrap().display().to_string();
            assert!(!p.split('/').any(|c| c == ".."), "{p}");
        }
    }
}

/// Build with a shell around mkimage (umask, TZ, working directory, CPUs).
fn build_in(fx: &Fixture, env: &str, out: &Path, extra: &str) {
    let exe = env!("CARGO_BIN_EXE_mkimage");
    let cwd = out.parent().unwrap();
    sh(&format!(
        "cd {cwd} && {env} env STRATA_STORE_ROOT={root} {exe} {layers} --name app --contents {hello} \
         --extra-commands 'mkdir -p etc && echo hi > etc/greeting && touch -d @99999 etc/greeting' \
         --cmd /bin/hello {extra} -o {out}",
        cwd = cwd.display(),
        root = fx.root.display(),
        layers = fx.layers.display(),
        hello = fx.hello,
        out = out.display()
    ));
}

#[test]
fn builds_are_byte_identical_across_environments() {
    let fx = fixture();
    for extra in ["", "--compress gzip", "--compress zstd"] {
        let a_dir = fx.work.join(format!("repro-a{}", extra.len()));
        let b_dir = fx.work.join(format!("repro-b{}", extra.len()));
        std::fs::create_dir_all(&a_dir).unwrap();
        std::fs::create_dir_all(&b_dir).unwrap();
        let a = a_dir.join("img.tar");
        let b = b_dir.join("img.tar");
        build_in(fx, "umask 022; TZ=UTC taskset -c 0", &a, extra);
        build_in(fx, "umask 077; TZ=Asia/Kolkata", &b, extra);
        let (ba, bb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert!(
            ba == bb,
            "{extra}: builds differ at byte {}",
            first_difference(&ba, &bb)
        );
    }
    // stdout gives the same bytes as -o.
    let a = fx.work.join("repro-a0/img.tar");
    let exe = env!("CARGO_BIN_EXE_mkimage");
    let out = Command::new("bash")
        .arg("-ec")
        .arg(format!(
            "STRATA_STORE_ROOT={root} {exe} {layers} --name app --contents {hello} \
             --extra-commands 'mkdir -p etc && echo hi > etc/greeting && touch -d @99999 etc/greeting' \
             --cmd /bin/hello | sha256sum",
            root = fx.root.display(),
            layers = fx.layers.display(),
            hello = fx.hello
        ))
        .output()
        .unwrap();
    let stdout_sum = ok(&out);
    assert_eq!(
        stdout_sum.split_whitespace().next().unwrap(),
        sha256_hex(&std::fs::read(a).unwrap())
    );
}

#[test]
fn the_cache_skips_unchanged_layers_only() {
    let fx = fixture();
    let cache = fx.work.join("cache");
    let build = |layers: &Path, out: &str| -> String {
        let o = run(mkimage(&fx.root, layers)
            .args(["--name", "c", "--tag", "1", "-v", "--cache"])
            .arg(&cache)
            .arg("-o")
            .arg(fx.work.join(out)));
        ok(&o);
        String::from_utf8(o.stderr).unwrap()
    };
    let first = build(&fx.layers, "cache1.tar");
    assert_eq!(first.matches("built)").count(), 3, "{first}");
    // A changed top layer: a new path in place of hello.
    let changed = fx.work.join("changed");
    std::fs::create_dir_all(changed.join("bin")).unwrap();
    std::fs::write(changed.join("bin/other"), b"other").unwrap();
    let other = add(&fx.root, "other", &changed);
    let layers2 = fx.work.join("layers2.json");
    std::fs::write(
        &layers2,
        serde_json::to_string(&vec![vec![&fx.data], vec![&fx.extra], vec![&other]]).unwrap(),
    )
    .unwrap();
    let second = build(&layers2, "cache2.tar");
    assert_eq!(second.matches("cached)").count(), 2, "{second}");
    assert_eq!(second.matches("built)").count(), 1, "{second}");
    // Cached output is the same as a build without the cache.
    let third = build(&fx.layers, "cache3.tar");
    assert_eq!(third.matches("cached)").count(), 3, "{third}");
    let plain = fx.work.join("cache-plain.tar");
    ok(&run(mkimage(&fx.root, &fx.layers)
        .args(["--name", "c", "--tag", "1", "-o"])
        .arg(&plain)));
    assert_same_file(&plain, &fx.work.join("cache3.tar"));
}

/// Fail, naming both files and the first differing byte, unless they hold the same bytes.
fn assert_same_file(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(
        x == y,
        "{} and {} differ at byte {}",
        a.display(),
        b.display(),
        first_difference(&x, &y)
    );
}

/// What the extra commands of the kept-root tests do: write down the tree they start from
/// (every name, kind, mode, owner and link target), then change it in every way they can.
const CHANGING_COMMANDS: &str = "seen=$(find . -printf '%p %y %m %u %l\\n' | LC_ALL=C sort); \
    echo \"$seen\" > seen; \
    mkdir -p home/deep && echo x > home/deep/f && chmod 500 home/deep; \
    rm -f bin/hello; ln -s hello bin/h2; mkdir -p etc && echo junk > etc/junk; \
    chmod 700 bin";

/// An image of `contents` with [`CHANGING_COMMANDS`], into `out`, with or without a cache.
fn changing_build(fx: &Fixture, contents: &[&str], out: &Path, cache: Option<&Path>) {
    let mut cmd = mkimage(&fx.root, &fx.layers);
    cmd.args([
        "--name",
        "k",
        "--tag",
        "1",
        "--extra-commands",
        CHANGING_COMMANDS,
    ]);
    for c in contents {
        cmd.args(["--contents", c]);
    }
    if let Some(cache) = cache {
        cmd.arg("--cache").arg(cache);
    }
    ok(&run(cmd.arg("-o").arg(out)));
}

#[test]
fn a_kept_customisation_root_gives_what_a_fresh_one_gives() {
    let fx = fixture();
    let d = open_tempdir("strata-kept-root-");
    let cache = d.path().join("cache");
    let sets: [&[&str]; 3] = [
        &[&fx.hello, &fx.extra],
        &[&fx.data, &fx.hello],
        &[&fx.hello, &fx.extra],
    ];
    for (i, contents) in sets.iter().enumerate() {
        let kept = d.path().join(format!("kept{i}.tar"));
        let fresh = d.path().join(format!("fresh{i}.tar"));
        changing_build(fx, contents, &kept, Some(&cache));
        changing_build(fx, contents, &fresh, None);
        let (k, f) = (
            std::fs::read(&kept).unwrap(),
            std::fs::read(&fresh).unwrap(),
        );
        assert!(
            k == f,
            "build {i}: the kept root's image differs at byte {}",
            first_difference(&k, &f)
        );
        // The root was kept (what the commands left is still there until the next build).
        assert!(cache.join("customisation/root/etc/junk").exists());
    }
    assert_same_file(&d.path().join("kept0.tar"), &d.path().join("kept2.tar"));
}

#[test]
fn a_cache_nobody_can_reach_keeps_its_root_in_tmpdir() {
    if !is_root() {
        eprintln!("skipped: the extra commands only run as nobody when mkimage is root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let fx = fixture();
    let d = open_tempdir("strata-kept-private-");
    let private = d.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (cache, tmp) = (private.join("cache"), d.path().join("tmp"));
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let kept_roots = || -> Vec<PathBuf> {
        std::fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("mkimage-kept-")
            })
            .collect()
    };
    let build = |out: &Path, cache: Option<&Path>| {
        let mut cmd = mkimage(&fx.root, &fx.layers);
        cmd.env("TMPDIR", &tmp)
            .args([
                "--name",
                "k",
                "--tag",
                "1",
                "--extra-commands",
                CHANGING_COMMANDS,
            ])
            .args(["--contents", &fx.hello, "--contents", &fx.extra]);
        if let Some(cache) = cache {
            cmd.arg("--cache").arg(cache);
        }
        ok(&run(cmd.arg("-o").arg(out)));
    };
    for round in 0..2 {
        let out = d.path().join(format!("out{round}.tar"));
        build(&out, Some(&cache));
        let fresh = d.path().join("fresh.tar");
        build(&fresh, None);
        assert_same_file(&out, &fresh);
        // One kept root, beside the scratch roots (all removed), not in the cache.
        let kept = kept_roots();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert!(kept[0].join("root/etc/junk").exists());
        assert!(!cache.join("customisation").exists());
    }
    // A name planted there by someone else (here: a symlink to elsewhere) is not used.
    let kept = kept_roots().remove(0);
    std::fs::remove_dir_all(&kept).unwrap();
    let elsewhere = d.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &kept).unwrap();
    build(&d.path().join("planted.tar"), Some(&cache));
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    assert_same_file(&d.path().join("planted.tar"), &d.path().join("fresh.tar"));
}

#[test]
fn builds_sharing_a_cache_at_once_each_get_a_root_of_their_own() {
    let fx = fixture();
    let d = open_tempdir("strata-kept-race-");
    let cache = d.path().join("cache");
    let sets: [&[&str]; 2] = [&[&fx.hello, &fx.extra], &[&fx.data, &fx.hello]];
    for (i, contents) in sets.iter().enumerate() {
        changing_build(fx, contents, &d.path().join(format!("fresh{i}.tar")), None);
    }
    std::thread::scope(|s| {
        for (i, contents) in sets.iter().enumerate() {
            let (d, cache) = (d.path(), &cache);
            s.spawn(move || {
                let fresh = std::fs::read(d.join(format!("fresh{i}.tar"))).unwrap();
                for round in 0..4 {
                    let out = d.join(format!("race{i}-{round}.tar"));
                    changing_build(fx, contents, &out, Some(cache));
                    let got = std::fs::read(&out).unwrap();
                    assert!(
                        got == fresh,
                        "set {i}, round {round}: differs at byte {}",
                        first_difference(&got, &fresh)
                    );
                }
            });
        }
    });
}

#[test]
fn formats_and_a_base_image() {
    let fx = fixture();
    let skopeo = |r: String| {
        let o = Command::new("skopeo")
            .args(["inspect", &r])
            .output()
            .unwrap();
        json(ok(&o).as_bytes())
    };
    let base = fx.work.join("base.tar");
    ok(&run(mkimage(&fx.root, &fx.layers)
        .args([
            "--name",
            "base",
            "--tag",
            "1",
            "--env",
            "PATH=/bin",
            "--env",
            "A=1",
        ])
        .arg("-o")
        .arg(&base)));
    let oci = fx.work.join("img.oci.tar");
    let docker = fx.work.join("img.docker.tar");
    let dir = fx.work.join("img-oci-dir");
    let _ = std::fs::remove_dir_all(&dir);
    let one_layer = fx.work.join("one-layer.json");
    std::fs::write(
        &one_layer,
        serde_json::to_string(&vec![vec![&fx.hello]]).unwrap(),
    )
    .unwrap();
    for (fmt, out) in [("oci", &oci), ("docker", &docker), ("oci-dir", &dir)] {
        ok(&run(mkimage(&fx.root, &one_layer)
            .args(["--name", "app", "--tag", "2", "--format", fmt])
            .args(["--from"])
            .arg(&base)
            .args(["--env", "A=2", "--env", "B=3", "--compress", "gzip", "-o"])
            .arg(out)));
    }
    let m = members(&oci);
    assert!(m.contains_key("index.json") && !m.contains_key("manifest.json"));
    let m = members(&docker);
    assert!(!m.contains_key("index.json") && m.contains_key("manifest.json"));
    for r in [
        format!("oci-archive:{}", oci.display()),
        format!("docker-archive:{}", docker.display()),
        format!("oci:{}:2", dir.display()),
    ] {
        let info = skopeo(r.clone());
        assert_eq!(info["Layers"].as_array().unwrap().len(), 4 + 2, "{r}");
        assert_eq!(
            info["Env"],
            serde_json::json!(["PATH=/bin", "A=2", "B=3"]),
            "{r}"
        );
    }
    // Base layers are copied as they are: the base's diff_ids come first.
    let (base_cfg, _) = docker_view(&base);
    let (cfg, _) = docker_view(&docker);
    let ids = cfg["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(
        &ids[..4],
        base_cfg["rootfs"]["diff_ids"].as_array().unwrap()
    );
}

/// Each case: the arguments after the layers file, what stderr must say.
#[test]
fn bad_input_fails_with_one_line_and_leaves_no_output() {
    let fx = fixture();
    let dir = fx.work.join("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let unknown = write(
        "unknown.json",
        r#"[["/nix/store/00000000000000000000000000000000-nothing"]]"#,
    );
    let outside = write("outside.json", r#"[["/usr/lib/libc.so"]]"#);
    let dotdot = write("dotdot.json", &format!(r#"[["{}/../../etc"]]"#, fx.hello));
    let not_lists = write("notlists.json", &format!(r#"["{}"]"#, fx.hello));
    let many: Vec<Vec<&str>> = (0..125).map(|_| vec![fx.hello.as_str()]).collect();
    let too_many = write("many.json", &serde_json::to_string(&many).unwrap());
    let bad_config = write("config.json", r#"{"Cmd": ["/bin/hello"],"#);
    let unknown_key = write("config2.json", r#"{"Cmnd": ["/bin/hello"]}"#);
    // A second path with a /bin/hello of its own, in a layer of its own.
    let clash_src = dir.join("clash");
    std::fs::create_dir_all(clash_src.join("bin")).unwrap();
    std::fs::write(clash_src.join("bin/hello"), b"not hello").unwrap();
    let clash = add(&fx.root, "clash", &clash_src);
    let with_clash = write(
        "clash.json",
        &serde_json::to_string(&vec![
            vec![&fx.data],
            vec![&fx.extra],
            vec![&fx.hello],
            vec![&clash],
        ])
        .unwrap(),
    );
    // A path that refers to hello, layered without it.
    let refs = run_with_input(
        tool("store-add", &fx.root).args(["--text", "--name", "refs", "--ref", &fx.hello, "-"]),
        format!("uses {}/bin/hello", fx.hello).as_bytes(),
    );
    let refs: Value = serde_json::from_str(ok(&refs).trim()).unwrap();
    let partial = write(
        "partial.json",
        &serde_json::to_string(&vec![vec![refs["path"].as_str().unwrap()]]).unwrap(),
    );
    let partial_out = dir.join("partial.tar");
    ok(&run(mkimage(&fx.root, &partial)
        .args(["--name", "a", "--allow-partial-closure", "-o"])
        .arg(&partial_out)));
    std::fs::remove_file(partial_out).unwrap();
    let layers = fx.layers.to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, i32, Vec<&str>)> = vec![
        (
            vec![
                layers.clone(),
                "--name".into(),
                "a".into(),
                "--from".into(),
                layers.clone(),
            ],
            1,
            vec!["--from"],
        ),
        // A non-ASCII byte where a digit belongs (a slicing parser panicked on it), and a
        // date that does not exist.
        (
            vec![
                layers.clone(),
                "--name".into(),
                "a".into(),
                "--created".into(),
                "1970-01-01T00:00:0\u{e9}".into(),
            ],
            1,
            vec!["--created", "is not a time"],
        ),
        (
            vec![
                layers.clone(),
                "--name".into(),
                "a".into(),
                "--mtime".into(),
                "2024-02-31T00:00:00Z".into(),
            ],
            1,
            vec!["--mtime", "is not a time"],
        ),
        (
            vec![partial.display().to_string(), "--name".into(), "a".into()],
            1,
            vec!["which is in no layer", "-hello"],
        ),
        (
            vec![unknown.display().to_string(), "--name".into(), "a".into()],
            1,
            vec!["unknown store path", "nothing"],
        ),
        (
            vec![outside.display().to_string(), "--name".into(), "a".into()],
            1,
            vec!["not in the Nix store"],
        ),
        (
            vec![dotdot.display().to_string(), "--name".into(), "a".into()],
            1,
            vec!["'..'"],
        ),
        (
            vec![not_lists.display().to_string(), "--name".into(), "a".into()],
            1,
            vec!["list of lists"],
        ),
        (
            vec![layers.clone(), "--name".into(), "Hello".into()],
            1,
            vec!["must be lowercase"],
        ),
        (
            vec![layers.clone(), "--name".into(), "hello:1".into()],
            1,
            vec!["--tag"],
        ),
        (
            vec![
                layers.clone(),
                "--name".into(),
                "a".into(),
                "--tag".into(),
                "".into(),
            ],
            1,
            vec!["tag is empty"],
        ),
        (
            vec![layers.clone(), "--name".into(), "a".into(), "--tag".into()],
            2,
            vec!["--tag"],
        ),
        (
            vec![too_many.display().to_string(), "--name".into(), "a".into()],
            1,
            vec!["layer 1 and layer 2"],
        ),
        (
            vec![
                layers.clone(),
                "--name".into(),
                "a".into(),
                "--config".into(),
                bad_config.display().to_string(),
            ],
            1,
            vec!["config.json", "line 1"],
        ),
        (
            vec![
                layers.clone(),
                "--name".into(),
                "a".into(),
                "--config".into(),
                unknown_key.display().to_string(),
            ],
            1,
            vec!["unknown field `Cmnd`"],
        ),
        (
            vec![
                with_clash.display().to_string(),
                "--name".into(),
                "a".into(),
                "--contents".into(),
                fx.hello.clone(),
                "--contents".into(),
                clash,
            ],
            1,
            vec!["collide at '/bin/hello'"],
        ),
        (
            vec![
                layers.clone(),
                "--name".into(),
                "a".into(),
                "--contents".into(),
                "/nix/store/00000000000000000000000000000000-x".into(),
            ],
            1,
            vec!["in no layer"],
        ),
        (
            vec![
                layers.clone(),
                "--name".into(),
                "a".into(),
                "--extra-commands".into(),
                "echo oops >&2; exit 3".into(),
            ],
            1,
            vec!["extra-commands", "oops"],
        ),
        (
            vec![
                layers,
                "--name".into(),
                "a".into(),
                "--perms".into(),
                "/tmp 999 0 0".into(),
            ],
            2,
            vec!["MODE"],
        ),
    ];
    for (args, code, needles) in cases {
        let out_file = dir.join("out.tar");
        eprintln!("case: {args:?}");
        let out = run(tool("mkimage", &fx.root)
            .args(&args)
            .arg("-o")
            .arg(&out_file));
        fails_with(&out, code, &needles);
        assert!(!out_file.exists(), "{args:?} left {}", out_file.display());
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".mkimage"))
            .collect();
        assert!(left.is_empty(), "{args:?} left {left:?}");
    }
    // More than 125 layers of distinct paths.
    let mut paths = Vec::new();
    for i in 0..125 {
        let src = dir.join(format!("p{i}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("f"), i.to_string()).unwrap();
        paths.push(vec![add(&fx.root, &format!("p{i}"), &src)]);
    }
    let many = write("many2.json", &serde_json::to_string(&paths).unwrap());
    let out = run(mkimage(&fx.root, &many)
        .args(["--name", "a", "-o"])
        .arg(dir.join("out.tar")));
    fails_with(&out, 1, &["126 layers", "limit of 125"]);
    assert!(!dir.join("out.tar").exists());
}

/// Store files a build opened (not directories), with how often, seen by strace.
fn store_opens(fx: &Fixture, args: &[&str]) -> BTreeMap<String, usize> {
    let trace = fx.work.join(format!("strace-{}.txt", args.len()));
    let out = Command::new("strace")
        .args(["-f", "-e", "trace=openat,open", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_mkimage"))
        .arg(&fx.layers)
        .args(["--name", "s", "--tag", "1"])
        .args(args)
        .env("STRATA_STORE_ROOT", &fx.root)
        .output()
        .expect("strace (scripts/setup.sh installs it)");
    ok(&out);
    let store = format!("\"{}/", fx.root.join("nix/store").display());
    let mut opens = BTreeMap::new();
    for line in std::fs::read_to_string(&trace).unwrap().lines() {
        if let Some(at) = line.find(&store)
            && !line.contains("O_DIRECTORY")
            && !line.contains("= -1")
        {
            let name = line[at + 1..].split('"').next().unwrap();
            *opens.entry(unescape_strace(name)).or_insert(0) += 1;
        }
    }
    opens
}

#[test]
fn each_store_file_is_read_once_and_cached_layers_not_at_all() {
    let fx = fixture();
    let files: Vec<String> = [&fx.data, &fx.extra, &fx.hello]
        .iter()
        .flat_map(|p| {
            let top = fx.root.join(p.trim_start_matches('/'));
            walk_files(&top)
        })
        .collect();
    let out = fx.work.join("once.tar");
    let opens = store_opens(fx, &["-o", out.to_str().unwrap()]);
    for f in &files {
        assert_eq!(
            opens.get(f),
            Some(&1),
            "{f} opened {:?} times",
            opens.get(f)
        );
    }
    assert_eq!(opens.len(), files.len(), "{opens:?}");
    let cache = fx.work.join("once-cache");
    let c = cache.to_str().unwrap();
    store_opens(fx, &["--cache", c, "-o", out.to_str().unwrap()]);
    let again = store_opens(fx, &["--cache", c, "-o", out.to_str().unwrap()]);
    assert!(again.is_empty(), "a fully cached build opened {again:?}");
}

/// strace writes bytes outside printable ASCII as octal escapes (`\303\251`).
fn unescape_strace(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else if b[i] == b'\\' && i + 1 < b.len() {
            out.push(b[i + 1]);
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Regular files under a directory (symlinks and directories left out).
fn walk_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            out.extend(walk_files(&p));
        } else if m.is_file() {
            out.push(p.to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn store_query_mklayers_mkimage_pipeline_runs_in_docker() {
    let fx = fixture();
    let tar = fx.work.join("pipeline.tar");
    sh(&format!(
        "export STRATA_STORE_ROOT={root}
         {q} closure {hello} {extra} {data} | {l} | \
           {m} --name strata-test/pipeline --tag 1 --contents {hello} --contents {extra} \
               --env GREETING=world --cmd /bin/hello --cmd arg1 -o {tar}",
        root = fx.root.display(),
        q = env!("CARGO_BIN_EXE_store-query"),
        l = env!("CARGO_BIN_EXE_mklayers"),
        m = env!("CARGO_BIN_EXE_mkimage"),
        hello = fx.hello,
        extra = fx.extra,
        data = fx.data,
        tar = tar.display()
    ));
    let (printed, _) = docker_load_and_run(&tar, "strata-test/pipeline:1");
    assert_eq!(printed.trim(), EXPECTED);
}

#[test]
fn config_comes_from_the_file_and_the_flags() {
    let fx = fixture();
    let cfg = fx.work.join("config-in.json");
    std::fs::write(
        &cfg,
        r#"{"Entrypoint":["/bin/hello"],"Cmd":["x"],"Env":["A=1","B=2"],"User":"1000:1000",
            "WorkingDir":"/srv","ExposedPorts":{"8080/tcp":{}},"Volumes":{"/data":{}},
            "Labels":{"a":"1"},"StopSignal":"SIGINT"}"#,
    )
    .unwrap();
    let out = fx.work.join("config.tar");
    ok(&run(mkimage(&fx.root, &fx.layers)
        .args(["--name", "cfg", "--tag", "1", "--config"])
        .arg(&cfg)
        .args([
            "--cmd", "y", "--env", "B=3", "--expose", "53/udp", "--label", "b=2",
        ])
        // An arm64 image without /bin/hello: only its config is looked at here.
        .arg("--no-start-check")
        .args([
            "--created",
            "2024-05-01T14:00:00+02:00",
            "--architecture",
            "arm64",
        ])
        .arg("-o")
        .arg(&out)));
    let (config, _) = docker_view(&out);
    assert_eq!(
        config["config"],
        serde_json::json!({
            "Cmd": ["y"], "Entrypoint": ["/bin/hello"], "Env": ["A=1", "B=3"],
            "ExposedPorts": {"53/udp": {}, "8080/tcp": {}}, "Labels": {"a": "1", "b": "2"},
            "StopSignal": "SIGINT", "User": "1000:1000", "Volumes": {"/data": {}},
            "WorkingDir": "/srv"
        })
    );
    assert_eq!(config["created"], "2024-05-01T12:00:00Z");
    assert_eq!(config["architecture"], "arm64");
    assert_eq!(config["os"], "linux");
    for h in config["history"].as_array().unwrap() {
        assert_eq!(h["created"], "2024-05-01T12:00:00Z");
    }
}

#[test]
fn output_file_mode_follows_the_umask() {
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let layers = out.path().join("layers.json");
    std::fs::write(&layers, "[]").unwrap();
    for (umask, mode) in [("022", 0o644), ("077", 0o600)] {
        let tar = out.path().join(format!("img-{umask}.tar"));
        let script = format!(
            "umask {umask}; exec {} --store-root {} --name t --tag 1 -o {} {}",
            env!("CARGO_BIN_EXE_mkimage"),
            root.path().display(),
            tar.display(),
            layers.display()
        );
        let status = Command::new("bash").args(["-c", &script]).status().unwrap();
        assert!(status.success());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&tar).unwrap().permissions().mode() & 0o777,
            mode,
            "umask {umask}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Hostile input: extra commands, the output path, the base image, the cache, contents that
// leave the store, and inputs read into memory.

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

/// Wait at most `secs` for a child; kill it (and fail) if it is still running then.
fn wait_bounded(
    child: &mut std::process::Child,
    secs: u64,
    what: &str,
) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > std::time::Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(marker)
        {
            out.push(pid);
        }
    }
    out
}

/// A scratch directory nobody (the extra commands' user) can traverse.
fn open_tempdir(prefix: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    t
}

/// Every layer blob of an image tar, concatenated with its members' names.
fn all_bytes(tar: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in members(tar) {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&data);
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn extra_commands_cannot_swap_a_root_only_file_into_the_image() {
    if !is_root() {
        eprintln!("skipped: the extra commands only drop privileges when mkimage is root");
        return;
    }
    let fx = fixture();
    let t = open_tempdir("strata-swap-");
    // A root-only secret the size of the decoys.
    let secret = t.path().join("secret");
    let body = format!("{:-<64}", format!("TOP-SECRET-{}-", std::process::id()));
    std::fs::write(&secret, &body).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The scratch root is made under TMPDIR; the loop stages its swaps beside it (same
    // filesystem, outside the tree being packed) and renames them in.
    let tmp = t.path().join("tmp");
    let stage = tmp.join("stage");
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&stage, std::fs::Permissions::from_mode(0o777)).unwrap();
    // All forty become symlinks, then all files again, as fast as perl can rename.
    let script = format!(
        r#"for i in $(seq 1 40); do printf '%064d' 0 > f$i; done
        /usr/bin/perl -e '
          ($s, $st) = @ARGV;
          while (1) {{
            for $i (1..40) {{ symlink($s, "$st/l$i"); rename("$st/l$i", "f$i") }}
            for $i (1..40) {{
              open(F, ">", "$st/t$i"); print F "0" x 64; close F; rename("$st/t$i", "f$i")
            }}
          }}' {secret} {stage} </dev/null >/dev/null 2>&1 &
        sleep 0.5"#,
        secret = secret.display(),
        stage = stage.display()
    );
    for round in 0..4 {
        let out = t.path().join(format!("swap-{round}.tar"));
        let mut child = mkimage(&fx.root, &fx.layers)
            .args(["--name", "swap", "--tag", "1", "--extra-commands", &script])
            .arg("-o")
            .arg(&out)
            .env("TMPDIR", &tmp)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let status = wait_bounded(&mut child, 120, "mkimage with a swapping loop");
        // Stop any loop the build left running (the old behaviour) before looking.
        for pid in processes_with(&stage.display().to_string()) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        assert!(status.success(), "round {round}: {status}");
        assert!(
            !contains(&all_bytes(&out), body.as_bytes()),
            "round {round}: the root-only file's bytes are in the image"
        );
    }
}

#[test]
fn processes_the_extra_commands_start_do_not_outlive_them() {
    let root = tempfile::tempdir().unwrap();
    let t = open_tempdir("strata-orphans-");
    let layers = t.path().join("layers.json");
    std::fs::write(&layers, "[]").unwrap();
    let marker = format!("strata-orphan-{}", std::process::id());
    // A plain background job, one in a subshell, and one that leaves the process group.
    let script = format!(
        r#"sleep 60 &
        (exec -a {marker}-a sleep 60) &
        setsid -f bash -c 'exec -a {marker}-b sleep 60'
        echo started"#
    );
    let out = t.path().join("img.tar");
    let mut child = tool("mkimage", root.path())
        .arg(&layers)
        .args([
            "--name",
            "orphans",
            "--tag",
            "1",
            "--extra-commands",
            &script,
        ])
        .arg("-o")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = wait_bounded(&mut child, 30, "mkimage with 'sleep 60 &'");
    let left = processes_with(&marker);
    for pid in &left {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    assert!(status.success());
    assert!(started.elapsed().as_secs() < 30);
    assert!(out.exists());
    if is_root() {
        // As root the commands run in a PID namespace of their own: nothing escapes it.
        assert!(left.is_empty(), "left running: {left:?}");
    } else {
        assert!(
            left.iter()
                .all(|p| !std::fs::read(format!("/proc/{p}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(&format!("{marker}-a")))
                    .unwrap_or(false)),
            "a background job in the process group was left running"
        );
    }
}

/// An empty store, `[]` layers and the image those give with `-o` onto a regular file.
struct Small {
    dir: tempfile::TempDir,
    root: tempfile::TempDir,
    layers: PathBuf,
    reference: Vec<u8>,
}

fn small() -> Small {
    let root = tempfile::tempdir().unwrap();
    let dir = open_tempdir("strata-out-");
    let layers = dir.path().join("layers.json");
    std::fs::write(&layers, "[]").unwrap();
    let reference = dir.path().join("reference.tar");
    ok(&run(tool("mkimage", root.path())
        .arg(&layers)
        .args(["--name", "small", "--tag", "1", "-o"])
        .arg(&reference)));
    let reference = std::fs::read(&reference).unwrap();
    Small {
        dir,
        root,
        layers,
        reference,
    }
}

impl Small {
    fn build(&self, out: &Path) -> Command {
        let mut cmd = tool("mkimage", self.root.path());
        cmd.arg(&self.layers)
            .args(["--name", "small", "--tag", "1", "-o"])
            .arg(out);
        cmd
    }
}

fn file_type(p: &Path) -> std::fs::FileType {
    std::fs::symlink_metadata(p).unwrap().file_type()
}

#[test]
fn output_onto_a_fifo_is_streamed_to_its_reader() {
    use std::os::unix::fs::FileTypeExt;
    let s = small();
    let fifo = s.dir.path().join("out.fifo");
    sh(&format!("mkfifo {}", fifo.display()));
    let got = s.dir.path().join("got.tar");
    let mut reader = Command::new("cat")
        .arg(&fifo)
        .stdout(std::fs::File::create(&got).unwrap())
        .spawn()
        .unwrap();
    let mut writer = s.build(&fifo).spawn().unwrap();
    let status = wait_bounded(&mut writer, 60, "mkimage -o FIFO");
    assert!(status.success());
    let read = wait_bounded(&mut reader, 10, "the FIFO's reader");
    assert!(read.success());
    assert!(file_type(&fifo).is_fifo(), "the FIFO was replaced");
    assert!(std::fs::read(&got).unwrap() == s.reference);
}

#[test]
fn output_onto_a_full_device_fails_and_leaves_the_device() {
    use std::os::unix::fs::FileTypeExt;
    if !is_root() {
        eprintln!("skipped: mknod needs root");
        return;
    }
    let s = small();
    let full = s.dir.path().join("full");
    sh(&format!("mknod {} c 1 7", full.display()));
    let link = s.dir.path().join("full-link");
    std::os::unix::fs::symlink(&full, &link).unwrap();
    for out in [&full, &link] {
        let o = run(&mut s.build(out));
        fails_with(&o, 1, &["No space left on device"]);
        assert!(String::from_utf8_lossy(&o.stderr).contains(&*full.to_string_lossy()));
        assert!(
            std::fs::metadata(&full)
                .unwrap()
                .file_type()
                .is_char_device()
        );
    }
    assert!(file_type(&link).is_symlink(), "the link was replaced");
    let left: Vec<_> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".mkimage"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn output_through_a_symlink_writes_its_target() {
    let s = small();
    let d = s.dir.path();
    // A link to a regular file: the file is replaced atomically, the link stays.
    std::fs::write(d.join("real.tar"), b"old").unwrap();
    std::os::unix::fs::symlink("real.tar", d.join("link.tar")).unwrap();
    ok(&run(&mut s.build(&d.join("link.tar"))));
    assert!(file_type(&d.join("link.tar")).is_symlink());
    assert!(std::fs::read(d.join("real.tar")).unwrap() == s.reference);
    // A link to /proc/self/fd/1 (what /dev/stdout is): written as a stream to stdout.
    std::os::unix::fs::symlink("/proc/self/fd/1", d.join("stdout-link")).unwrap();
    let o = run(&mut s.build(&d.join("stdout-link")));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(file_type(&d.join("stdout-link")).is_symlink());
    assert!(o.stdout == s.reference, "stdout did not get the image");
    let o = run(&mut s.build(Path::new("/dev/stdout")));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout == s.reference, "/dev/stdout did not get the image");
    assert!(file_type(Path::new("/dev/stdout")).is_symlink());
    // A dangling link: its target is made.
    std::os::unix::fs::symlink("new.tar", d.join("dangling")).unwrap();
    ok(&run(&mut s.build(&d.join("dangling"))));
    assert!(file_type(&d.join("dangling")).is_symlink());
    assert!(std::fs::read(d.join("new.tar")).unwrap() == s.reference);
}

/// A store with one path holding a 96 MiB file: a build long enough to stop mid-write.
/// Made once in the target's tmp dir and reused by later runs (each test runs in a process of
/// its own; a lock keeps two from making it at once).
fn big_store() -> &'static (PathBuf, PathBuf) {
    static BIG: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BIG.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("strata-big-store-v1");
        std::fs::create_dir_all(&dir).unwrap();
        let lock = std::fs::File::create(dir.join("lock")).unwrap();
        lock.lock().unwrap();
        let root = dir.join("root");
        let layers = dir.join("layers.json");
        if !layers.exists() {
            let _ = std::fs::remove_dir_all(&root);
            let src = dir.join("src");
            let _ = std::fs::remove_dir_all(&src);
            std::fs::create_dir_all(&src).unwrap();
            sh(&format!("head -c 96M /dev/urandom > {}/big", src.display()));
            let path = add(&root, "big", &src);
            std::fs::remove_dir_all(&src).unwrap();
            let text = serde_json::to_string(&vec![vec![path]]).unwrap();
            std::fs::write(dir.join("layers.tmp"), text).unwrap();
            std::fs::rename(dir.join("layers.tmp"), &layers).unwrap();
        }
        (root, layers)
    })
}

fn temps_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".mkimage"))
        .collect()
}

/// Start a big build into `dir/name` and stop it (SIGSTOP) once its temporary output (one
/// that was not in `dir` before) holds more than 1 MiB.
fn stopped_build(dir: &Path, name: &str) -> std::process::Child {
    let before = temps_in(dir);
    let (root, layers) = big_store();
    let child = mkimage(root, layers)
        .args(["--name", "big", "--tag", "1", "-o"])
        .arg(dir.join(name))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let start = std::time::Instant::now();
    loop {
        let big_temp = std::fs::read_dir(dir).unwrap().flatten().any(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(".mkimage")
                && !before.contains(&n)
                && e.metadata().map(|m| m.len() > 1 << 20).unwrap_or(false)
        });
        if big_temp {
            break;
        }
        assert!(
            start.elapsed().as_secs() < 60,
            "no temporary output appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        !dir.join(name).exists(),
        "the build finished before it was stopped"
    );
    child
}

fn signal(child: &std::process::Child, sig: &str) {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-s", sig, &pid])
            .status()
            .unwrap()
            .success()
    );
}

#[test]
fn sigterm_and_sigint_mid_write_remove_the_temporary_output() {
    for sig in ["TERM", "INT"] {
        let d = open_tempdir("strata-sig-");
        let mut child = stopped_build(d.path(), "img.tar");
        assert!(!temps_in(d.path()).is_empty());
        signal(&child, sig);
        signal(&child, "CONT");
        let status = wait_bounded(&mut child, 30, "mkimage after a signal");
        assert!(!status.success());
        assert!(!d.path().join("img.tar").exists());
        assert_eq!(
            temps_in(d.path()),
            Vec::<String>::new(),
            "SIG{sig} left a temp"
        );
    }
}

#[test]
fn a_signal_during_the_extra_commands_kills_them_and_removes_the_scratch_root() {
    let s = small();
    let tmp = s.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let marker = format!("strata-interrupted-{}", std::process::id());
    let mut child = s.build(&s.dir.path().join("img.tar"));
    let mut child = child
        .args(["--extra-commands", &format!("exec -a {marker} sleep 60")])
        .env("TMPDIR", &tmp)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while processes_with(&marker).iter().all(|p| *p == child.id()) {
        assert!(
            start.elapsed().as_secs() < 30,
            "the extra commands did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        1,
        "no scratch root"
    );
    signal(&child, "TERM");
    let status = wait_bounded(&mut child, 30, "mkimage after SIGTERM");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let left: Vec<u32> = processes_with(&marker);
    for pid in &left {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    assert!(!status.success());
    assert!(
        left.is_empty(),
        "the extra commands outlived mkimage: {left:?}"
    );
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "the scratch root was left"
    );
    assert!(!s.dir.path().join("img.tar").exists());
}

#[test]
fn a_temp_left_by_sigkill_is_reclaimed_by_the_next_run_but_a_live_one_is_not() {
    let d = open_tempdir("strata-kill-");
    let mut killed = stopped_build(d.path(), "killed.tar");
    signal(&killed, "KILL");
    wait_bounded(&mut killed, 30, "killed mkimage");
    let stale = temps_in(d.path());
    assert_eq!(stale.len(), 1, "{stale:?}");
    // A build that is still running (stopped) holds its temp; the next run leaves it.
    let mut live = stopped_build(d.path(), "live.tar");
    let (root, layers) = big_store();
    ok(&run(mkimage(root, layers)
        .args(["--name", "big", "--tag", "1", "-o"])
        .arg(d.path().join("next.tar"))));
    let left = temps_in(d.path());
    assert!(
        !left.contains(&stale[0]),
        "the killed run's temp was not reclaimed"
    );
    assert_eq!(left.len(), 1, "the live run's temp must stay: {left:?}");
    signal(&live, "CONT");
    assert!(wait_bounded(&mut live, 60, "the live build").success());
    assert_same_file(&d.path().join("live.tar"), &d.path().join("next.tar"));
    assert_eq!(temps_in(d.path()), Vec::<String>::new());
}

/// Rewrite an image tar, passing each member's bytes through `edit`.
fn rewrite_tar(from: &Path, to: &Path, edit: &dyn Fn(&str, Vec<u8>) -> Vec<u8>) {
    let mut builder = tar::Builder::new(std::fs::File::create(to).unwrap());
    let mut archive = tar::Archive::new(std::fs::File::open(from).unwrap());
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let data = edit(&name, data);
        let mut h = e.header().clone();
        h.set_size(data.len() as u64);
        h.set_cksum();
        builder.append(&h, data.as_slice()).unwrap();
    }
    builder.finish().unwrap();
}

#[test]
fn a_base_layer_that_does_not_match_its_diff_id_is_refused() {
    let fx = fixture();
    let d = open_tempdir("strata-base-");
    for compress in ["none", "gzip"] {
        let base = d.path().join(format!("base-{compress}.tar"));
        ok(&run(mkimage(&fx.root, &fx.layers)
            .args(["--name", "base", "--tag", "1", "--compress", compress, "-o"])
            .arg(&base)));
        let manifest = json(&members(&base)["manifest.json"]);
        let victim = manifest[0]["Layers"][1].as_str().unwrap().to_string();
        // The second layer's last byte (end-of-archive padding) changed, its name kept.
        let tampered = d.path().join(format!("tampered-{compress}.tar"));
        let gz = compress == "gzip";
        rewrite_tar(&base, &tampered, &|name, data| {
            if name != victim {
                return data;
            }
            let mut plain = if gz {
                let mut v = Vec::new();
                flate2::read::GzDecoder::new(data.as_slice())
                    .read_to_end(&mut v)
                    .unwrap();
                v
            } else {
                data
            };
            *plain.last_mut().unwrap() ^= 1;
            if gz {
                use std::io::Write;
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(&plain).unwrap();
                enc.finish().unwrap()
            } else {
                plain
            }
        });
        let out = d.path().join("out.tar");
        let o = run(mkimage(&fx.root, &fx.layers)
            .args(["--name", "app", "--tag", "1", "--from"])
            .arg(&tampered)
            .arg("-o")
            .arg(&out));
        fails_with(&o, 1, &["--from", &victim]);
        assert!(!out.exists());
        assert_eq!(temps_in(d.path()), Vec::<String>::new());
        // The untouched base still works.
        ok(&run(mkimage(&fx.root, &fx.layers)
            .args(["--name", "app", "--tag", "1", "--from"])
            .arg(&base)
            .arg("-o")
            .arg(&out)));
        std::fs::remove_file(&out).unwrap();
    }
}

#[test]
fn a_corrupt_cached_blob_is_rebuilt_not_used() {
    let fx = fixture();
    let d = open_tempdir("strata-cache-bad-");
    let cache = d.path().join("cache");
    let build = |out: &str| -> String {
        let o = run(mkimage(&fx.root, &fx.layers)
            .args(["--name", "c", "--tag", "1", "-v", "--cache"])
            .arg(&cache)
            .arg("-o")
            .arg(d.path().join(out)));
        ok(&o);
        String::from_utf8(o.stderr).unwrap()
    };
    let first = build("first.tar");
    assert_eq!(first.matches("built)").count(), 3, "{first}");
    // Flip one byte in the middle of the biggest blob: same size, other bytes.
    let blob = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "blob"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let second = build("second.tar");
    assert_eq!(second.matches("built)").count(), 1, "{second}");
    assert_eq!(second.matches("cached)").count(), 2, "{second}");
    assert_same_file(&d.path().join("second.tar"), &d.path().join("first.tar"));
    // The entry was written again: the next build takes all three from the cache.
    let third = build("third.tar");
    assert_eq!(third.matches("cached)").count(), 3, "{third}");
    assert_same_file(&d.path().join("third.tar"), &d.path().join("first.tar"));
}

#[test]
fn contents_are_never_read_through_a_symlink_out_of_the_store() {
    let fx = fixture();
    let d = open_tempdir("strata-escape-");
    // A host directory that must not show up in an image.
    let host = d.path().join("host");
    std::fs::create_dir_all(host.join("sub/deeper")).unwrap();
    std::fs::write(host.join("sub/host-only-name"), b"host").unwrap();
    // A store path with a symlink to it, and a store path that is such a symlink.
    let src = d.path().join("escape");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::write(src.join("bin/tool"), b"tool").unwrap();
    std::os::unix::fs::symlink(&host, src.join("out")).unwrap();
    let escape = add(&fx.root, "escape", &src);
    let link_src = d.path().join("link");
    std::os::unix::fs::symlink(&host, &link_src).unwrap();
    let link = add(&fx.root, "link", &link_src);
    let layers = d.path().join("layers.json");
    std::fs::write(
        &layers,
        serde_json::to_string(&vec![vec![&escape], vec![&link]]).unwrap(),
    )
    .unwrap();
    let out = d.path().join("out.tar");
    for contents in [
        format!("{escape}/out/sub"),
        format!("{escape}/out"),
        format!("{link}/sub"),
        link,
    ] {
        let o = run(mkimage(&fx.root, &layers)
            .args(["--name", "esc", "--tag", "1", "--contents", &contents, "-o"])
            .arg(&out));
        fails_with(&o, 1, &["--contents", &contents]);
        assert!(!out.exists(), "{contents}");
    }
    // The store path itself: its symlink is copied as a symlink, never followed.
    ok(&run(mkimage(&fx.root, &layers)
        .args(["--name", "esc", "--tag", "1", "--contents", &escape, "-o"])
        .arg(&out)));
    let (_, blobs) = docker_view(&out);
    let custom = blobs.last().unwrap();
    let mut archive = tar::Archive::new(custom.as_slice());
    let mut names = Vec::new();
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        if name == "out" {
            assert!(e.header().entry_type().is_symlink());
            assert_eq!(e.link_name().unwrap().unwrap(), host.as_path());
        }
        names.push(name);
    }
    assert_eq!(names, ["bin/", "bin/tool", "out"]);
    assert!(!contains(custom, b"host-only-name"));
}

/// mkimage under a 2 GiB address-space limit, so an unbounded read fails fast instead of
/// eating the machine's memory.
fn bounded_mkimage(root: &Path, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(r#"ulimit -v 2097152; exec "$@""#)
        .arg("mkimage")
        .arg(env!("CARGO_BIN_EXE_mkimage"))
        .args(args)
        .env_remove("STRATA_STORE_DIR")
        .env("STRATA_STORE_ROOT", root);
    run_with_input(&mut cmd, stdin)
}

#[test]
fn inputs_read_into_memory_are_regular_files_or_pipes_and_bounded() {
    let s = small();
    let d = s.dir.path();
    let layers = s.layers.to_str().unwrap();
    let out = d.join("out.tar");
    let o = out.to_str().unwrap();
    let root = s.root.path();
    let cases: Vec<(Vec<&str>, &[u8], Vec<&str>)> = vec![
        (
            vec![layers, "--name", "a", "--config", "/dev/zero", "-o", o],
            b"",
            vec!["/dev/zero", "not a regular file"],
        ),
        (
            vec!["/dev/zero", "--name", "a", "-o", o],
            b"",
            vec!["/dev/zero", "not a regular file"],
        ),
        (
            vec![layers, "--name", "a", "--from", "/dev/zero", "-o", o],
            b"",
            vec!["/dev/zero", "not a regular file"],
        ),
        (
            vec![layers, "--name", "a", "--from", "/dev/stdin", "-o", o],
            b"[]",
            vec!["/dev/stdin", "not a regular file"],
        ),
        (
            vec![
                layers,
                "--name",
                "a",
                "--config",
                d.to_str().unwrap(),
                "-o",
                o,
            ],
            b"",
            vec!["--config", "not a regular file"],
        ),
    ];
    for (args, stdin, needles) in cases {
        eprintln!("case: {args:?}");
        fails_with(&bounded_mkimage(root, &args, stdin), 1, &needles);
        assert!(!out.exists());
    }
    // Too big: a config of 5 MiB, layers of 65 MiB on stdin.
    let big_config = d.join("big-config.json");
    let mut text = vec![b' '; 5 << 20];
    text.extend_from_slice(b"{}");
    std::fs::write(&big_config, &text).unwrap();
    let o2 = bounded_mkimage(
        root,
        &[
            layers,
            "--name",
            "a",
            "--config",
            big_config.to_str().unwrap(),
            "-o",
            o,
        ],
        b"",
    );
    fails_with(&o2, 1, &["big-config.json", "limit", "MiB"]);
    let mut huge = vec![b' '; 65 << 20];
    huge.extend_from_slice(b"[]");
    fails_with(
        &bounded_mkimage(root, &["-", "--name", "a", "-o", o], &huge),
        1,
        &["stdin", "limit", "MiB"],
    );
    assert!(!out.exists());
    // A base image whose manifest.json is over its 4 MiB limit.
    let base = d.join("padded-base.tar");
    rewrite_tar(&d.join("reference.tar"), &base, &|name, mut data| {
        if name == "manifest.json" {
            data.extend(std::iter::repeat_n(b' ', 5 << 20));
        }
        data
    });
    let padded = bounded_mkimage(
        root,
        &[
            layers,
            "--name",
            "a",
            "--from",
            base.to_str().unwrap(),
            "-o",
            o,
        ],
        b"",
    );
    fails_with(&padded, 1, &["--from", "manifest.json", "limit of 4 MiB"]);
    assert!(!out.exists());
    // A pipe is fine: the config and the layers from /dev/stdin and stdin.
    ok(&bounded_mkimage(
        root,
        &[
            layers,
            "--name",
            "small",
            "--tag",
            "1",
            "--config",
            "/dev/stdin",
            "-o",
            o,
        ],
        b"{}",
    ));
    assert!(std::fs::read(&out).unwrap() == s.reference);
    ok(&bounded_mkimage(
        root,
        &["-", "--name", "small", "--tag", "1", "-o", o],
        b"[]",
    ));
    assert!(std::fs::read(&out).unwrap() == s.reference);
}

// ---------------------------------------------------------------------------------------
// The start check: an image whose entrypoint cannot start does not build.

/// A store with real runtime files: the host's libc and loader (as a Debian libc6 lays them
/// out, `/lib64/ld-linux-x86-64.so.2` an absolute link to `/lib/x86_64-linux-gnu/…`), a
/// dynamic hello, a libgreet.so and programs linked to it, a script, a non-executable file.
struct StartFixture {
    _dir: FixtureDir,
    work: PathBuf,
    root: PathBuf,
    libc: String,
    dhello: String,
    shello: String,
    greetlib: String,
    greeter: String,
    origin_ok: String,
    origin_bad: String,
    script: String,
    noexec: String,
    /// The host's `/usr/bin/env` and a script that runs `#!/usr/bin/env hello`.
    envtool: String,
    envscript: String,
}

const GREET_C: &str = r#"
#include <stdio.h>
void greet(const char *who) { printf("greetings from libgreet, %s\n", who); }
"#;
const GREETER_C: &str = r#"
void greet(const char *who);
int main(void) { greet("strata"); return 0; }
"#;

fn start_fixture() -> &'static StartFixture {
    static F: OnceLock<StartFixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = FixtureDir::new("strata-start-");
        let work = dir.path().to_path_buf();
        let root = work.join("root");
        let shello_src = static_hello(&work);
        std::fs::write(work.join("greet.c"), GREET_C).unwrap();
        std::fs::write(work.join("greeter.c"), GREETER_C).unwrap();
        sh(&format!(
            r#"cd {w}
            mkdir -p libc/lib/x86_64-linux-gnu libc/lib64 dhello/bin greetlib/lib greeter/bin \
                     origin-ok/bin origin-ok/lib origin-bad/bin script/bin noexec/bin \
                     envtool/usr/bin envscript/bin
            cp -L /usr/bin/env envtool/usr/bin/env
            printf '#!/usr/bin/env hello\n' > envscript/bin/run-env.sh && chmod 755 envscript/bin/run-env.sh
            cp -L /lib/x86_64-linux-gnu/libc.so.6 /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 libc/lib/x86_64-linux-gnu/
            ln -s /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 libc/lib64/ld-linux-x86-64.so.2
            gcc -O1 -o dhello/bin/dhello hello.c
            gcc -O1 -shared -fPIC -o greetlib/lib/libgreet.so greet.c
            cp greetlib/lib/libgreet.so origin-ok/lib/
            gcc -O1 -o greeter/bin/greeter greeter.c -Lgreetlib/lib -lgreet
            gcc -O1 -o origin-ok/bin/greeter greeter.c -Lgreetlib/lib -lgreet -Wl,--enable-new-dtags,-rpath,'$ORIGIN/../lib'
            cp origin-ok/bin/greeter origin-bad/bin/
            printf '#!/bin/hello\n' > script/bin/run.sh && chmod 755 script/bin/run.sh
            printf 'echo not executable\n' > noexec/bin/app && chmod 644 noexec/bin/app"#,
            w = work.display()
        ));
        let p = |name: &str| add(&root, name, &work.join(name));
        StartFixture {
            libc: p("libc"),
            dhello: p("dhello"),
            shello: add(&root, "hello", &shello_src),
            greetlib: p("greetlib"),
            greeter: p("greeter"),
            origin_ok: p("origin-ok"),
            origin_bad: p("origin-bad"),
            script: p("script"),
            noexec: p("noexec"),
            envtool: p("envtool"),
            envscript: p("envscript"),
            _dir: dir,
            work,
            root,
        }
    })
}

impl StartFixture {
    /// mkimage with one layer per path of `layers`, `--contents` the `contents`, `args` after.
    fn mkimage(
        &self,
        layers: &[&String],
        contents: &[&String],
        args: &[&str],
        out: &Path,
    ) -> std::process::Output {
        let file = self.work.join(format!(
            "layers-{}.json",
            sha256_hex(out.to_string_lossy().as_bytes())
        ));
        let per: Vec<Vec<&String>> = layers.iter().map(|p| vec![*p]).collect();
        std::fs::write(&file, serde_json::to_string(&per).unwrap()).unwrap();
        let mut cmd = mkimage(&self.root, &file);
        for c in contents {
            cmd.arg("--contents").arg(c);
        }
        run(cmd.args(args).arg("-o").arg(out))
    }

    /// Build must fail with one line holding `needles`, and leave no output.
    fn refused(
        &self,
        name: &str,
        layers: &[&String],
        contents: &[&String],
        args: &[&str],
        needles: &[&str],
    ) {
        let out = self.work.join(format!("{name}.tar"));
        let o = self.mkimage(layers, contents, args, &out);
        fails_with(&o, 1, needles);
        assert!(!out.exists(), "{name}: output left");
    }

    /// Build must succeed; then docker load + run must print `expected`.
    fn runs(
        &self,
        name: &str,
        layers: &[&String],
        contents: &[&String],
        args: &[&str],
        expected: &str,
    ) {
        let out = self.work.join(format!("{name}.tar"));
        let reference = format!("strata-test/start-{name}:1");
        let mut all = vec!["--name", &reference[..reference.len() - 2], "--tag", "1"];
        all.extend_from_slice(args);
        ok(&self.mkimage(layers, contents, &all, &out));
        let (printed, _) = docker_load_and_run(&out, &reference);
        assert_eq!(printed.trim(), expected, "{name}");
    }
}

#[test]
fn start_check_a_missing_loader_stops_the_build_and_the_fixed_image_runs() {
    let fx = start_fixture();
    fx.refused(
        "noloader",
        &[&fx.dhello],
        &[&fx.dhello],
        &["--name", "a", "--cmd", "/bin/dhello"],
        &[
            "/lib64/ld-linux-x86-64.so.2",
            "the loader of /bin/dhello",
            "is not in the image",
            &format!("{} provides it", fx.libc),
        ],
    );
    // Broken, but asked for: it builds, and Docker cannot start it.
    let out = fx.work.join("nocheck.tar");
    ok(&fx.mkimage(
        &[&fx.dhello],
        &[&fx.dhello],
        &[
            "--name",
            "strata-test/start-nocheck",
            "--tag",
            "1",
            "--cmd",
            "/bin/dhello",
            "--no-start-check",
        ],
        &out,
    ));
    sh(&format!("docker load -i {} >/dev/null", out.display()));
    let o = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network=none",
            "strata-test/start-nocheck:1",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success(), "the broken image started");
    fx.runs(
        "dhello",
        &[&fx.libc, &fx.dhello],
        &[&fx.libc, &fx.dhello],
        &["--cmd", "/bin/dhello", "--cmd", "x"],
        "hello from strata: - x",
    );
}

#[test]
fn start_check_a_missing_library_is_named_with_its_provider() {
    let fx = start_fixture();
    // libc.so.6 is needed by the loader-less part: loader present, libc missing.
    let loader_only = fx.work.join("loader-only");
    sh(&format!(
        "mkdir -p {d}/lib/x86_64-linux-gnu {d}/lib64 && cp -L /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 {d}/lib/x86_64-linux-gnu/ && ln -sfn ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 {d}/lib64/",
        d = loader_only.display()
    ));
    let loader = add(&fx.root, "loader-only", &loader_only);
    fx.refused(
        "nolibc",
        &[&loader, &fx.dhello],
        &[&loader, &fx.dhello],
        &["--name", "a", "--cmd", "/bin/dhello"],
        &[
            "libc.so.6 (needed by /bin/dhello)",
            &format!("{} provides it", fx.libc),
        ],
    );
    // libgreet.so, looked up in the default directories.
    fx.refused(
        "nogreet",
        &[&fx.libc, &fx.greeter],
        &[&fx.libc, &fx.greeter],
        &["--name", "a", "--cmd", "/bin/greeter"],
        &[
            "libgreet.so (needed by /bin/greeter)",
            &format!("{} provides it", fx.greetlib),
        ],
    );
    fx.runs(
        "greeter",
        &[&fx.libc, &fx.greetlib, &fx.greeter],
        &[&fx.libc, &fx.greetlib, &fx.greeter],
        &["--cmd", "/bin/greeter"],
        "greetings from libgreet, strata",
    );
    // RUNPATH $ORIGIN/../lib: the directory of the binary itself (through /bin's symlink
    // into the store), not of the link.
    fx.refused(
        "noorigin",
        &[&fx.libc, &fx.origin_bad],
        &[&fx.libc, &fx.origin_bad],
        &["--name", "a", "--cmd", "/bin/greeter"],
        &["libgreet.so (needed by /bin/greeter)", "provides it"],
    );
    fx.runs(
        "origin",
        &[&fx.libc, &fx.origin_ok],
        &[&fx.libc, &fx.origin_ok],
        &["--cmd", "/bin/greeter"],
        "greetings from libgreet, strata",
    );
}

#[test]
fn start_check_scripts_need_their_interpreter_and_files_their_x_bit() {
    let fx = start_fixture();
    fx.refused(
        "nointerp",
        &[&fx.script],
        &[&fx.script],
        &["--name", "a", "--cmd", "/bin/run.sh"],
        &[
            "/bin/hello (the interpreter of /bin/run.sh) is not in the image",
            &format!("{} provides it", fx.shello),
        ],
    );
    fx.runs(
        "script",
        &[&fx.shello, &fx.script],
        &[&fx.shello, &fx.script],
        &["--cmd", "/bin/run.sh"],
        "hello from strata: - /bin/run.sh",
    );
    // `#!/usr/bin/env hello`: env is there (with its loader and libc), hello must be in PATH.
    let env_parts = [&fx.libc, &fx.envtool, &fx.envscript];
    fx.refused(
        "noenvprog",
        &env_parts,
        &env_parts,
        &["--name", "a", "--cmd", "/bin/run-env.sh"],
        &[
            "'hello' (run by /usr/bin/env in /bin/run-env.sh) is in no directory of PATH=",
            &format!("{} provides it", fx.shello),
        ],
    );
    fx.refused(
        "noenv",
        &[&fx.shello, &fx.envscript],
        &[&fx.shello, &fx.envscript],
        &["--name", "a", "--cmd", "/bin/run-env.sh"],
        &["/usr/bin/env (the interpreter of /bin/run-env.sh) is not in the image"],
    );
    let with_hello = [&fx.libc, &fx.envtool, &fx.envscript, &fx.shello];
    fx.runs(
        "envscript",
        &with_hello,
        &with_hello,
        &["--cmd", "/bin/run-env.sh"],
        "hello from strata: - /bin/run-env.sh",
    );
    fx.refused(
        "noexec",
        &[&fx.noexec],
        &[&fx.noexec],
        &["--name", "a", "--cmd", "/bin/app"],
        &["/bin/app (the entrypoint) is not executable"],
    );
    // A bare name is looked up in the config's PATH.
    fx.refused(
        "nopath",
        &[&fx.shello],
        &[&fx.shello],
        &[
            "--name",
            "a",
            "--entrypoint",
            "hello",
            "--env",
            "PATH=/usr/bin",
        ],
        &["'hello'", "PATH", "/usr/bin"],
    );
    fx.runs(
        "path",
        &[&fx.shello],
        &[&fx.shello],
        &["--entrypoint", "hello", "--cmd", "y"],
        "hello from strata: - y",
    );
}

#[test]
fn start_check_store_paths_in_the_config_must_be_in_the_layers() {
    let fx = start_fixture();
    let env = format!("PATH={}/bin:/bin", fx.dhello);
    fx.refused(
        "envpath",
        &[&fx.shello],
        &[&fx.shello],
        &["--name", "a", "--cmd", "/bin/hello", "--env", &env],
        &[&fx.dhello, "in no layer", "store-query closure"],
    );
    let cmd = format!("{}/bin/dhello", fx.dhello);
    fx.refused(
        "cmdpath",
        &[&fx.shello],
        &[&fx.shello],
        &[
            "--name",
            "a",
            "--entrypoint",
            "/bin/hello",
            "--cmd",
            &format!("run {cmd} now"),
        ],
        &[&fx.dhello, "in no layer"],
    );
    // Once in the layers: it builds, and the store path runs as the entrypoint.
    fx.runs(
        "storecmd",
        &[&fx.libc, &fx.dhello],
        &[&fx.libc],
        &["--cmd", &cmd, "--env", &env, "--env", "GREETING=store"],
        "hello from strata: store -",
    );
}

#[test]
fn mkimage_says_what_it_made_and_refuses_a_terminal() {
    let fx = start_fixture();
    let out = fx.work.join("summary.tar");
    let json = fx.work.join("summary.json");
    let o = fx.mkimage(
        &[&fx.shello],
        &[&fx.shello],
        &[
            "--name",
            "sum",
            "--tag",
            "2",
            "--cmd",
            "/bin/hello",
            "--json",
            json.to_str().unwrap(),
        ],
        &out,
    );
    ok(&o);
    let stderr = String::from_utf8(o.stderr).unwrap();
    let (config, layers) = docker_view(&out);
    let m = members(&out);
    let manifest = json_value(&m["manifest.json"]);
    let config_digest = manifest[0]["Config"]
        .as_str()
        .unwrap()
        .replace("blobs/sha256/", "sha256:");
    let total: usize = layers.iter().map(|l| l.len()).sum();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("sum:2") && stderr.contains(&config_digest),
        "{stderr}"
    );
    assert!(
        stderr.contains("2 layers") && stderr.contains(&format!("{total} bytes")),
        "{stderr}"
    );
    let summary = read_json(&json);
    assert_eq!(summary["image"], "sum:2");
    assert_eq!(summary["configDigest"], config_digest.as_str());
    assert_eq!(summary["layers"], 2);
    assert_eq!(summary["size"], total);
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    // A tar onto a terminal: refused, exit 2, before anything is built.
    let layers_file = fx.work.join("tty-layers.json");
    std::fs::write(
        &layers_file,
        serde_json::to_string(&vec![vec![&fx.shello]]).unwrap(),
    )
    .unwrap();
    for tail in ["", " -o -"] {
        let script_cmd = format!(
            "STRATA_STORE_ROOT={root} {exe} {layers} --name t --cmd /bin/hello{tail}; echo \"exit=$?\"",
            root = fx.root.display(),
            exe = env!("CARGO_BIN_EXE_mkimage"),
            layers = layers_file.display(),
        );
        let o = Command::new("script")
            .args(["-qec", &script_cmd, "/dev/null"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains("exit=2") && text.contains("terminal"),
            "{tail}: {text}"
        );
        assert!(
            text.len() < 400,
            "{tail}: wrote to the terminal: {} bytes",
            text.len()
        );
    }
}

fn json_value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn source_date_epoch_sets_created_and_mtime() {
    let fx = start_fixture();
    let a = fx.work.join("sde-env.tar");
    let b = fx.work.join("sde-flags.tar");
    let c = fx.work.join("sde-default.tar");
    let args = ["--name", "sde", "--tag", "1", "--cmd", "/bin/hello"];
    let file = fx.work.join("sde-layers.json");
    std::fs::write(
        &file,
        serde_json::to_string(&vec![vec![&fx.shello]]).unwrap(),
    )
    .unwrap();
    let build = |out: &Path, extra: &[&str], sde: Option<&str>| {
        let mut cmd = mkimage(&fx.root, &file);
        cmd.args(["--contents", &fx.shello])
            .args(args)
            .args(extra)
            .arg("-o")
            .arg(out);
        match sde {
            Some(v) => cmd.env("SOURCE_DATE_EPOCH", v),
            None => cmd.env_remove("SOURCE_DATE_EPOCH"),
        };
        ok(&run(&mut cmd));
    };
    build(&a, &[], Some("1700000000"));
    build(
        &b,
        &["--created", "@1700000000", "--mtime", "@1700000000"],
        None,
    );
    build(&c, &[], None);
    let (ba, bb, bc) = (
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        std::fs::read(&c).unwrap(),
    );
    assert!(ba == bb, "SOURCE_DATE_EPOCH differs from the flags");
    assert!(ba != bc, "SOURCE_DATE_EPOCH changed nothing");
    let (config, _) = docker_view(&a);
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    // Flags win over it.
    let d = fx.work.join("sde-both.tar");
    build(
        &d,
        &["--created", "@1700000000", "--mtime", "@1700000000"],
        Some("5"),
    );
    assert!(std::fs::read(&d).unwrap() == bb);
}

/// mkimage shows which layer it is writing on a terminal and nothing on a pipe; the progress
/// line is cleared before the summary.
#[test]
fn mkimage_progress_only_on_a_terminal() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // A sparse file: long to pack and hash, cheap to make.
    let src = work.path().join("big");
    std::fs::create_dir(&src).unwrap();
    std::fs::File::create(src.join("zeros"))
        .unwrap()
        .set_len(768 << 20)
        .unwrap();
    let path = add(root.path(), "big", &src);
    let layers = work.path().join("layers.json");
    std::fs::write(&layers, serde_json::json!([[path]]).to_string()).unwrap();
    let piped = Run::tool("mkimage", root.path())
        .args(["--name", "big", "--no-start-check", "-o", "/dev/null"])
        .arg(&layers)
        .succeeds();
    assert!(
        !piped.stderr().contains("layer 1/2"),
        "progress on a pipe: {:?}",
        piped.stderr()
    );
    let line = format!(
        "{} --store-root {} --name big --no-start-check -o /dev/null {}",
        env!("CARGO_BIN_EXE_mkimage"),
        root.path().display(),
        layers.display()
    );
    let text = on_a_terminal(&line);
    assert!(
        text.contains("mkimage: layer 1/2: 1 store path"),
        "no progress on a terminal: {text:?}"
    );
    let summary_at = text.find("mkimage: built").expect("summary printed");
    assert!(
        text[..summary_at].ends_with("\r\x1b[K"),
        "the progress line is not cleared before the summary: {text:?}"
    );
}
