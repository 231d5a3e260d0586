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
    _dir: tempfile::TempDir,
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
        let dir = tempfile::Builder::new()
            .prefix("strata-image-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
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
            .args(["--contents", &hello, &extra])
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
    sh(&format!(
        "{}/scripts/services.sh docker",
        env!("CARGO_MANIFEST_DIR")
    ));
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
    let out = Command::new("podman")
        .args(["run", "--rm", "--runtime", "runc", "--network=none"])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ])
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
    assert!(std::fs::read(plain).unwrap() == std::fs::read(fx.work.join("cache3.tar")).unwrap());
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
           {m} --name strata-test/pipeline --tag 1 --contents {hello} {extra} \
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
