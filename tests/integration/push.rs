//! push-image against Debian's docker-registry on 127.0.0.1 (started per test on a free port,
//! filesystem storage in a temporary directory; anonymous or htpasswd basic auth), with a
//! counting HTTP proxy written here between the tool and the registry: it counts the bytes
//! on the wire, plays a bearer-token server, refuses chunks, or fails the Nth blob upload.
//! The pushed images are pulled and run by docker and inspected by skopeo.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

use crate::support::*;

const REPO: &str = "strata-test/push";
const EXPECTED: &str = "hello from strata: world arg1 from the store";
const EXPECTED_V2: &str = "hello from strata: world arg1 a changed line";

// ---------------------------------------------------------------------------------------------
// The registry.

struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what} did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Registry {
    fn start(htpasswd: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("strata-registry-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let d = dir.path();
        let port = free_port();
        let mut auth = String::new();
        if let Some((user, pass)) = htpasswd {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .expect("htpasswd (apache2-utils; scripts/setup.sh)");
            assert!(out.status.success());
            std::fs::write(d.join("htpasswd"), &out.stdout).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
                d.join("htpasswd").display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}/storage\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n{auth}",
            d.display()
        );
        std::fs::write(d.join("config.yml"), config).unwrap();
        let log = std::fs::File::create(d.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("docker-registry (scripts/setup.sh)");
        wait_for_port(port, "docker-registry");
        Registry { child, port, dir }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The blob digests in the registry's storage.
    fn blobs(&self) -> BTreeSet<String> {
        let base = self
            .dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256");
        tree_listing(&base)
            .into_iter()
            .filter_map(|p| p.strip_suffix("/data").map(str::to_string))
            .filter_map(|p| p.split('/').nth(1).map(|h| format!("sha256:{h}")))
            .collect()
    }

    /// Completed blob uploads in the access log (`PUT …/blobs/uploads/…`).
    fn upload_puts(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("registry.log"))
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"PUT /v2/") && l.contains("/blobs/uploads/"))
            .count()
    }

    /// Whether `REPO:tag` resolves (curl, straight to the registry).
    fn has_tag(&self, repo: &str, tag: &str, creds: Option<&str>) -> bool {
        self.exists(&format!("{repo}/manifests/{tag}"), creds)
    }

    /// Whether the repository has the blob.
    fn has_blob(&self, repo: &str, digest: &str) -> bool {
        self.exists(&format!("{repo}/blobs/{digest}"), None)
    }

    fn exists(&self, path: &str, creds: Option<&str>) -> bool {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}"]);
        cmd.args(["-H", "Accept: application/vnd.oci.image.manifest.v1+json"]);
        if let Some(c) = creds {
            cmd.args(["-u", c]);
        }
        cmd.args(["-I", &format!("http://{}/v2/{path}", self.addr())]);
        let code = String::from_utf8(cmd.output().expect("curl").stdout).unwrap();
        match code.as_str() {
            "200" => true,
            "404" => false,
            other => panic!("HEAD {path} answered {other}"),
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The proxy.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Answer the Nth blob upload request (PUT or PATCH with a body) with 500.
    Fail500(usize),
    /// Cut the connection half-way through the Nth blob upload request's body.
    Cut(usize),
    /// Answer every PATCH with 405.
    RefusePatch,
    /// Put another digest in the `Docker-Content-Digest` of the manifest PUT's answer.
    WrongManifestDigest,
    /// (Bearer mode) the token expires at the Nth blob upload request: that request gets a
    /// 401 and a new token is issued.
    ExpireToken(usize),
}

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    /// Request body bytes.
    body: u64,
}

#[derive(Debug, Default)]
struct ProxyLog {
    requests: Vec<Seen>,
    /// Every byte the client sent (request lines, headers, bodies).
    wire: u64,
    uploads: usize,
    scopes: Vec<String>,
    /// The token in force is `tok-<generation>`.
    generation: u32,
}

struct Proxy {
    port: u16,
    log: Arc<Mutex<ProxyLog>>,
}

impl Proxy {
    fn start(upstream: u16, fault: Fault, bearer: Option<(&str, &str)>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(ProxyLog::default()));
        let basic = bearer.map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        let l = log.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (l, basic) = (l.clone(), basic.clone());
                std::thread::spawn(move || {
                    let _ = handle(conn, upstream, port, fault, basic.as_deref(), &l);
                });
            }
        });
        Proxy { port, log }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Body bytes of blob upload requests (POST/PUT/PATCH to …/blobs/uploads/…).
    fn upload_body_bytes(&self) -> u64 {
        self.log
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.path.contains("/blobs/uploads/"))
            .map(|r| r.body)
            .sum()
    }

    fn count(&self, method: &str, path_part: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.method == method && r.path.contains(path_part))
            .count()
    }

    fn reset(&self) {
        *self.log.lock().unwrap() = ProxyLog::default();
    }

    fn wire(&self) -> u64 {
        self.log.lock().unwrap().wire
    }
}

fn respond(client: &mut TcpStream, status: &str, headers: &str, body: &str) {
    let _ = write!(
        client,
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn handle(
    mut client: TcpStream,
    upstream: u16,
    own_port: u16,
    fault: Fault,
    basic: Option<&str>,
    log: &Mutex<ProxyLog>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut wire = 0u64;
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        if n == 0 {
            return Ok(());
        }
        wire += n as u64;
        if line == "\r\n" {
            break;
        }
        head.push(line.trim_end().to_string());
    }
    let request_line = head.remove(0);
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let header = |name: &str| {
        head.iter().find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let len: u64 = header("content-length")
        .map(|v| v.parse().unwrap())
        .unwrap_or(0);
    let is_upload =
        (method == "PUT" || method == "PATCH") && path.contains("/blobs/uploads/") && len > 0;
    let nth = if is_upload {
        let mut l = log.lock().unwrap();
        l.uploads += 1;
        l.uploads
    } else {
        0
    };
    if fault == Fault::Cut(nth) && is_upload {
        let mut half = vec![0u8; (len / 2) as usize];
        reader.read_exact(&mut half)?;
        let mut l = log.lock().unwrap();
        l.wire += wire + half.len() as u64;
        l.requests.push(Seen {
            method,
            path,
            body: half.len() as u64,
        });
        return client.shutdown(std::net::Shutdown::Both);
    }
    let mut body = vec![0u8; len as usize];
    reader.read_exact(&mut body)?;
    {
        let mut l = log.lock().unwrap();
        l.wire += wire + len;
        l.requests.push(Seen {
            method: method.clone(),
            path: path.clone(),
            body: len,
        });
    }
    if fault == Fault::Fail500(nth) && is_upload {
        respond(
            &mut client,
            "500 Internal Server Error",
            "",
            "{\"errors\":[{\"code\":\"UNKNOWN\",\"message\":\"injected by the test\"}]}",
        );
        return Ok(());
    }
    if fault == Fault::RefusePatch && method == "PATCH" {
        respond(&mut client, "405 Method Not Allowed", "", "");
        return Ok(());
    }
    if let Some(basic) = basic {
        if let Some(query) = path.strip_prefix("/token?") {
            for pair in query.split('&') {
                if let Some(scope) = pair.strip_prefix("scope=") {
                    let scope = scope
                        .replace("%3A", ":")
                        .replace("%2F", "/")
                        .replace("%2C", ",");
                    log.lock().unwrap().scopes.push(scope);
                }
            }
            if header("authorization").as_deref() == Some(basic) {
                let token = format!("tok-{}", log.lock().unwrap().generation);
                respond(
                    &mut client,
                    "200 OK",
                    "Content-Type: application/json\r\n",
                    &format!("{{\"token\":\"{token}\"}}"),
                );
            } else {
                respond(&mut client, "401 Unauthorized", "", "");
            }
            return Ok(());
        }
        let expired = fault == Fault::ExpireToken(nth) && is_upload;
        if expired {
            log.lock().unwrap().generation += 1;
        }
        let token = format!("tok-{}", log.lock().unwrap().generation);
        if expired || header("authorization") != Some(format!("Bearer {token}")) {
            let challenge = format!(
                "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{own_port}/token\",service=\"strata-test\"\r\n"
            );
            respond(&mut client, "401 Unauthorized", &challenge, "");
            return Ok(());
        }
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    let mut out = format!("{request_line}\r\n");
    for h in &head {
        let name = h.split(':').next().unwrap_or("").to_ascii_lowercase();
        if name == "connection" || (basic.is_some() && name == "authorization") {
            continue;
        }
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    up.write_all(out.as_bytes())?;
    up.write_all(&body)?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    if fault == Fault::WrongManifestDigest && method == "PUT" && path.contains("/manifests/") {
        let text = String::from_utf8_lossy(&response).to_string();
        let fake = format!("Docker-Content-Digest: sha256:{}", "0".repeat(64));
        let rewritten: Vec<String> = text
            .split("\r\n")
            .map(|l| {
                if l.to_ascii_lowercase().starts_with("docker-content-digest:") {
                    fake.clone()
                } else {
                    l.to_string()
                }
            })
            .collect();
        response = rewritten.join("\r\n").into_bytes();
    }
    client.write_all(&response)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The images.

struct Images {
    _dir: tempfile::TempDir,
    work: PathBuf,
    /// hello (static), 1.5 MB of data, /etc/motd "from the store": docker+OCI tar.
    v1: PathBuf,
    /// The same with another motd: one store layer and the customisation layer differ.
    v2: PathBuf,
    /// v1 as an OCI layout directory.
    v1_dir: PathBuf,
    /// v1 built with `mkimage --compress gzip` / `zstd` (OCI layout directories).
    v1_gzip: PathBuf,
    v1_zstd: PathBuf,
}

fn images() -> &'static Images {
    static I: OnceLock<Images> = OnceLock::new();
    I.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("strata-push-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let work = dir.path().to_path_buf();
        let root = work.join("root");
        let hello = store_add(&root, "hello", &static_hello(&work));
        let mut rng = SplitMix64::new(7);
        std::fs::create_dir_all(work.join("data/share")).unwrap();
        std::fs::write(work.join("data/share/blob"), rng.bytes(1_500_000)).unwrap();
        let data = store_add(&root, "data", &work.join("data"));
        let build = |motd: &str, name: &str, tag: &str, format: &str, compress: &str| -> PathBuf {
            let src = work.join(format!("extra-{tag}"));
            std::fs::create_dir_all(src.join("etc")).unwrap();
            std::fs::write(src.join("etc/motd"), format!("{motd}\n")).unwrap();
            let extra = store_add(&root, "extra", &src);
            let layers = work.join(format!("layers-{tag}.json"));
            std::fs::write(
                &layers,
                serde_json::to_string(&vec![vec![&data], vec![&extra], vec![&hello]]).unwrap(),
            )
            .unwrap();
            let out = work.join(name);
            ok(&run(tool("mkimage", &root)
                .arg(&layers)
                .args(["--name", REPO, "--tag", tag, "--format", format])
                .args(["--compress", compress])
                .args(["--contents", &hello, &extra])
                .args(["--cmd", "/bin/hello", "--cmd", "arg1"])
                .args(["--env", "GREETING=world"])
                .arg("-o")
                .arg(&out)));
            out
        };
        let v1 = build("from the store", "v1.tar", "t1", "docker-oci", "none");
        let v2 = build("a changed line", "v2.tar", "t2", "docker-oci", "none");
        let v1_dir = build("from the store", "v1-oci", "t1", "oci-dir", "none");
        let v1_gzip = build("from the store", "v1-gzip", "t1", "oci-dir", "gzip");
        let v1_zstd = build("from the store", "v1-zstd", "t1", "oci-dir", "zstd");
        Images {
            _dir: dir,
            work,
            v1,
            v2,
            v1_dir,
            v1_gzip,
            v1_zstd,
        }
    })
}

fn push(image: &Path, dest: &str, extra: &[&str]) -> Command {
    let mut cmd = tool("push-image", Path::new("/nonexistent"));
    cmd.arg(image)
        .arg(dest)
        .args(extra)
        .env_remove("STRATA_REGISTRY_USERNAME")
        .env_remove("STRATA_REGISTRY_PASSWORD")
        .env("DOCKER_CONFIG", "/nonexistent");
    cmd
}

/// Print a failure's one line (the test log then shows every message).
fn shown(out: &Output) {
    eprintln!("push: {}", String::from_utf8_lossy(&out.stderr).trim_end());
}

fn report(out: &Output) -> Value {
    serde_json::from_str(ok(out).trim()).expect("--json summary")
}

fn uploaded(r: &Value) -> u64 {
    r["uploadedBytes"].as_u64().unwrap()
}

fn blobs_with(r: &Value, action: &str) -> BTreeSet<String> {
    r["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["action"] == action)
        .map(|b| b["digest"].as_str().unwrap().to_string())
        .collect()
}

fn size_of(r: &Value, digests: &BTreeSet<String>) -> u64 {
    r["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| digests.contains(b["digest"].as_str().unwrap()))
        .map(|b| b["size"].as_u64().unwrap())
        .sum()
}

fn docker_pull_run(reference: &str) -> String {
    sh(&format!(
        "{}/scripts/services.sh docker",
        env!("CARGO_MANIFEST_DIR")
    ));
    let pull = Command::new("docker")
        .args(["pull", reference])
        .output()
        .unwrap();
    assert!(
        pull.status.success(),
        "docker pull: {}",
        String::from_utf8_lossy(&pull.stderr)
    );
    let out = Command::new("docker")
        .args(["run", "--rm", "--network=none", reference])
        .output()
        .unwrap();
    let _ = Command::new("docker")
        .args(["rmi", "-f", reference])
        .output();
    ok(&out).trim().to_string()
}

fn skopeo_inspect(reference: &str, creds: Option<&str>) -> Value {
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--tls-verify=false"]);
    if let Some(c) = creds {
        cmd.args(["--creds", c]);
    }
    let out = cmd.arg(format!("docker://{reference}")).output().unwrap();
    serde_json::from_str(&ok(&out)).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn push_pull_run_inspect_then_only_changed_layers_go_up() {
    let im = images();
    let reg = Registry::start(None);
    let proxy = Proxy::start(reg.port, Fault::None, None);
    let dest = |tag: &str| format!("{}/{REPO}:{tag}", proxy.addr());

    // First push: everything goes up; three witnesses agree on the bytes.
    let r1 = report(&run(&mut push(&im.v1, &dest("t1"), &["--json"])));
    let all: BTreeSet<String> = blobs_with(&r1, "uploaded");
    assert_eq!(all.len(), 5, "4 layers + config: {r1}");
    assert_eq!(uploaded(&r1), size_of(&r1, &all));
    assert_eq!(
        proxy.upload_body_bytes(),
        uploaded(&r1),
        "bytes on the wire"
    );
    let mut stored = all.clone();
    stored.insert(r1["digest"].as_str().unwrap().to_string());
    assert_eq!(
        reg.blobs(),
        stored,
        "blobs (and the manifest) in the registry's storage"
    );
    assert_eq!(reg.upload_puts(), 5, "completed uploads in the access log");
    eprintln!(
        "push: first push {} blob bytes (tool), {} (proxy), {} wire bytes in all",
        uploaded(&r1),
        proxy.upload_body_bytes(),
        proxy.wire()
    );

    let direct = format!("{}/{REPO}", reg.addr());
    assert_eq!(docker_pull_run(&format!("{direct}:t1")), EXPECTED);
    let inspected = skopeo_inspect(&format!("{direct}:t1"), None);
    assert_eq!(inspected["Digest"], r1["digest"]);
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 4);

    // Second push of the same image: zero blob bytes, no upload session at all.
    proxy.reset();
    let r2 = report(&run(&mut push(&im.v1, &dest("t1"), &["--json"])));
    assert_eq!(uploaded(&r2), 0);
    assert_eq!(blobs_with(&r2, "skipped"), all);
    assert_eq!(proxy.upload_body_bytes(), 0);
    assert_eq!(proxy.count("POST", "/blobs/uploads/"), 0);
    assert_eq!(proxy.count("HEAD", "/blobs/"), 5);
    assert_eq!(reg.upload_puts(), 5, "no new upload in the access log");
    assert_eq!(r2["digest"], r1["digest"]);
    eprintln!(
        "push: second push {} blob bytes, {} wire bytes in all (HEADs and the manifest)",
        proxy.upload_body_bytes(),
        proxy.wire()
    );

    // A changed layer: only the changed blobs go up.
    proxy.reset();
    let r3 = report(&run(&mut push(&im.v2, &dest("t2"), &["--json"])));
    let changed = blobs_with(&r3, "uploaded");
    let v2_all: BTreeSet<String> = r3["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(changed, v2_all.difference(&all).cloned().collect());
    assert_eq!(
        changed.len(),
        3,
        "the extra layer, the customisation layer, the config"
    );
    assert_eq!(
        blobs_with(&r3, "skipped").len(),
        2,
        "hello and data skipped"
    );
    assert_eq!(uploaded(&r3), size_of(&r3, &changed));
    assert_eq!(proxy.upload_body_bytes(), uploaded(&r3));
    assert_eq!(reg.upload_puts(), 5 + 3);
    assert!(
        uploaded(&r3) * 20 < uploaded(&r1),
        "{} vs {}",
        uploaded(&r3),
        uploaded(&r1)
    );
    eprintln!(
        "push: after a one-line change {} blob bytes (tool), {} (proxy) of {}",
        uploaded(&r3),
        proxy.upload_body_bytes(),
        size_of(&r3, &v2_all)
    );
    assert_eq!(docker_pull_run(&format!("{direct}:t2")), EXPECTED_V2);
    // The first tag is untouched.
    assert_eq!(
        skopeo_inspect(&format!("{direct}:t1"), None)["Digest"],
        r1["digest"]
    );
}

#[test]
fn basic_auth_from_the_environment_the_docker_config_and_stdin() {
    let im = images();
    let reg = Registry::start(Some(("alice", "s3cret-pw")));
    let dest = |tag: &str| format!("{}/{REPO}:{tag}", reg.addr());

    // No credentials: one line, no tag.
    let out = run(&mut push(&im.v1, &dest("anon"), &[]));
    fails_with(&out, 1, &["requires credentials"]);
    shown(&out);
    assert!(!reg.has_tag(REPO, "anon", Some("alice:s3cret-pw")));

    // Wrong password: one line, never the password, no tag.
    let out = run(push(&im.v1, &dest("wrong"), &[])
        .env("STRATA_REGISTRY_USERNAME", "alice")
        .env("STRATA_REGISTRY_PASSWORD", "not-the-pw"));
    fails_with(
        &out,
        1,
        &["authentication failed", "alice", "the environment"],
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("not-the-pw"));
    assert!(!reg.has_tag(REPO, "wrong", Some("alice:s3cret-pw")));

    // The environment.
    let r = report(&run(push(&im.v1, &dest("env"), &["--json"])
        .env("STRATA_REGISTRY_USERNAME", "alice")
        .env("STRATA_REGISTRY_PASSWORD", "s3cret-pw")));
    assert_eq!(blobs_with(&r, "uploaded").len(), 5);

    // The docker config file (auths.<host>.auth), as docker login writes it.
    let cfg = im.work.join(format!("docker-config-{}", reg.port));
    std::fs::create_dir_all(&cfg).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret-pw");
    std::fs::write(
        cfg.join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr()),
    )
    .unwrap();
    let r = report(&run(
        push(&im.v2, &dest("cfg"), &["--json"]).env("DOCKER_CONFIG", &cfg)
    ));
    assert_eq!(blobs_with(&r, "skipped").len(), 2);
    // The environment wins over the config file.
    let out = run(push(&im.v1, &dest("prec"), &[])
        .env("DOCKER_CONFIG", &cfg)
        .env("STRATA_REGISTRY_USERNAME", "alice")
        .env("STRATA_REGISTRY_PASSWORD", "bad"));
    fails_with(&out, 1, &["authentication failed"]);
    shown(&out);

    // --username with the password on stdin.
    let out = run_with_input(
        &mut push(
            &im.v1,
            &dest("stdin"),
            &["--username", "alice", "--password-stdin"],
        ),
        b"s3cret-pw\n",
    );
    ok(&out);
    assert!(reg.has_tag(REPO, "stdin", Some("alice:s3cret-pw")));
    let inspected = skopeo_inspect(&dest("stdin"), Some("alice:s3cret-pw"));
    assert_eq!(inspected["RepoTags"].as_array().unwrap().len(), 3);
}

#[test]
fn bearer_tokens_from_a_challenge() {
    let im = images();
    let reg = Registry::start(None);
    let proxy = Proxy::start(reg.port, Fault::None, Some(("bob", "tokpw")));
    let dest = format!("{}/{REPO}:bearer", proxy.addr());

    let out = run(push(&im.v1, &dest, &[])
        .env("STRATA_REGISTRY_USERNAME", "bob")
        .env("STRATA_REGISTRY_PASSWORD", "wrong"));
    fails_with(&out, 1, &["authentication failed", "bob"]);
    shown(&out);
    assert!(!reg.has_tag(REPO, "bearer", None));

    let r = report(&run(push(
        &im.v1,
        &dest,
        &["--json", "--mount-from", "strata-test/base"],
    )
    .env("STRATA_REGISTRY_USERNAME", "bob")
    .env("STRATA_REGISTRY_PASSWORD", "tokpw")));
    assert_eq!(blobs_with(&r, "uploaded").len(), 5);
    assert!(reg.has_tag(REPO, "bearer", None));
    let scopes = proxy.log.lock().unwrap().scopes.clone();
    assert!(
        scopes.contains(&format!("repository:{REPO}:pull,push")),
        "{scopes:?}"
    );
    assert!(
        scopes.contains(&"repository:strata-test/base:pull".to_string()),
        "{scopes:?}"
    );

    // The token expires in the middle of the push (at the second blob's PUT): the tool
    // fetches a new one and sends that blob again from its first byte.
    let expiring = Proxy::start(reg.port, Fault::ExpireToken(2), Some(("bob", "tokpw")));
    let dest = format!("{}/expiring/app:1", expiring.addr());
    let r = report(&run(push(&im.v1, &dest, &["--json"])
        .env("STRATA_REGISTRY_USERNAME", "bob")
        .env("STRATA_REGISTRY_PASSWORD", "tokpw")));
    let sizes: u64 = r["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["size"].as_u64().unwrap())
        .sum();
    let second = r["blobs"][1]["size"].as_u64().unwrap();
    assert_eq!(uploaded(&r), sizes + second, "the second blob went twice");
    assert_eq!(expiring.log.lock().unwrap().generation, 1);
    let inspected = skopeo_inspect(&format!("{}/expiring/app:1", reg.addr()), None);
    assert_eq!(inspected["Digest"], r["digest"]);
}

#[test]
fn chunks_the_post_put_fallback_mounts_and_compression() {
    let im = images();
    let reg = Registry::start(None);
    let proxy = Proxy::start(reg.port, Fault::None, None);
    let refusing = Proxy::start(reg.port, Fault::RefusePatch, None);

    // Chunked: 256 KiB PATCHes, the bytes add up, skopeo reads it back.
    let r = report(&run(&mut push(
        &im.v1,
        &format!("{}/chunked/app:1", proxy.addr()),
        &["--json", "--chunk-size", "256K"],
    )));
    let big = r["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["size"].as_u64().unwrap() > 1_000_000)
        .unwrap()
        .clone();
    let size = big["size"].as_u64().unwrap();
    assert_eq!(big["chunks"].as_u64().unwrap(), size.div_ceil(256 * 1024));
    assert!(proxy.count("PATCH", "/blobs/uploads/") >= 6);
    assert_eq!(proxy.upload_body_bytes(), uploaded(&r));
    let inspected = skopeo_inspect(&format!("{}/chunked/app:1", reg.addr()), None);
    assert_eq!(inspected["Digest"], r["digest"]);

    // A registry that refuses PATCH: each blob falls back to POST then PUT.
    let r = report(&run(&mut push(
        &im.v1,
        &format!("{}/fallback/app:1", refusing.addr()),
        &["--json", "--chunk-size", "1M"],
    )));
    assert!(
        r["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["fellBack"] == true),
        "{r}"
    );
    assert!(reg.has_tag("fallback/app", "1", None));

    // Mount from a repository that has the blobs: nothing uploaded.
    proxy.reset();
    let r = report(&run(&mut push(
        &im.v1,
        &format!("{}/mounted/app:1", proxy.addr()),
        &["--json", "--mount-from", "chunked/app"],
    )));
    assert_eq!(blobs_with(&r, "mounted").len(), 5);
    assert_eq!(uploaded(&r), 0);
    assert_eq!(proxy.upload_body_bytes(), 0);

    // gzip and zstd layers compressed by push-image: deterministic (a second push uploads
    // nothing); docker pulls and runs gzip, skopeo reads both. (Docker 20.10's pull fails on
    // zstd layers here with "invalid tar header".) Layers mkimage already compressed go up
    // as they are: the same digests, the same manifest bytes.
    for (c, built) in [("gzip", &im.v1_gzip), ("zstd", &im.v1_zstd)] {
        let dest = format!("{}/compressed/app:{c}", proxy.addr());
        let r = report(&run(&mut push(&im.v1, &dest, &["--json", "--compress", c])));
        let layer_types: BTreeSet<String> = r["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["kind"] == "layer")
            .map(|b| b["mediaType"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            layer_types,
            BTreeSet::from([format!("application/vnd.oci.image.layer.v1.tar+{c}")])
        );
        let inspected = skopeo_inspect(&format!("{}/compressed/app:{c}", reg.addr()), None);
        assert_eq!(inspected["Digest"], r["digest"]);
        if c == "gzip" {
            assert_eq!(
                docker_pull_run(&format!("{}/compressed/app:{c}", reg.addr())),
                EXPECTED
            );
        }
        let again = report(&run(&mut push(&im.v1, &dest, &["--json", "--compress", c])));
        assert_eq!(uploaded(&again), 0);
        assert_eq!(again["digest"], r["digest"]);

        // With --cache, an unchanged layer the registry has is not even read: push from a
        // copy whose layers are all overwritten (same sizes), and nothing notices.
        let copy = im.work.join(format!("cached-{c}-{}", reg.port));
        sh(&format!("cp -r {} {}", im.v1_dir.display(), copy.display()));
        let cache = im.work.join(format!("push-cache-{c}-{}", reg.port));
        let cache_arg = cache.to_str().unwrap();
        let dest = format!("{}/cached/app:{c}", proxy.addr());
        let flags = ["--json", "--compress", c, "--cache", cache_arg];
        let first = report(&run(&mut push(&copy, &dest, &flags)));
        assert_eq!(first["digest"], r["digest"]);
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 4);
        let index = read_json(&copy.join("index.json"));
        let mdigest = index["manifests"][0]["digest"].as_str().unwrap();
        let manifest = read_json(&copy.join("blobs/sha256").join(&mdigest[7..]));
        for l in manifest["layers"].as_array().unwrap() {
            let f = copy
                .join("blobs/sha256")
                .join(&l["digest"].as_str().unwrap()[7..]);
            let len = std::fs::metadata(&f).unwrap().len() as usize;
            std::fs::remove_file(&f).unwrap();
            std::fs::write(&f, vec![b'x'; len]).unwrap();
        }
        let second = report(&run(&mut push(&copy, &dest, &flags)));
        assert_eq!(uploaded(&second), 0);
        assert_eq!(second["digest"], r["digest"]);
        // Without the cache, the overwritten layers are read, and refused.
        let out = run(&mut push(&copy, &dest, &["--compress", c]));
        fails_with(&out, 1, &["corrupt"]);
        shown(&out);

        let dest = format!("{}/prebuilt/app:{c}", proxy.addr());
        let r = report(&run(&mut push(built, &dest, &["--json", "--compress", c])));
        let index = read_json(&built.join("index.json"));
        let digest = index["manifests"][0]["digest"].as_str().unwrap();
        let manifest = read_json(&built.join("blobs/sha256").join(&digest[7..]));
        let theirs: Vec<&Value> = manifest["layers"].as_array().unwrap().iter().collect();
        let ours: Vec<&Value> = r["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["kind"] == "layer")
            .collect();
        assert_eq!(ours.len(), theirs.len());
        for (o, t) in ours.iter().zip(&theirs) {
            assert_eq!(o["digest"], t["digest"], "{c}");
        }
        assert_eq!(
            r["digest"].as_str().unwrap(),
            digest,
            "{c}: the same manifest bytes"
        );
    }
}

#[test]
fn failures_are_one_line_and_leave_no_tag() {
    let im = images();
    let reg = Registry::start(None);

    // Unreachable.
    // (Port 1: nothing listens there, and no other test can take it.)
    let out = run(&mut push(&im.v1, "127.0.0.1:1/app:1", &[]));
    fails_with(
        &out,
        1,
        &[
            "push-image: GET http://127.0.0.1:1/v2/",
            "Connection refused",
        ],
    );
    shown(&out);

    // A 500 on the second blob upload, and a connection cut in the middle of the third; each
    // in a repository of its own, so no blob is there already.
    for (fault, tag) in [(Fault::Fail500(2), "e500"), (Fault::Cut(3), "cut")] {
        let proxy = Proxy::start(reg.port, fault, None);
        let out = run(&mut push(
            &im.v1,
            &format!("{}/fail/{tag}:1", proxy.addr()),
            &[],
        ));
        let needle = if tag == "e500" {
            "injected by the test"
        } else {
            "/blobs/uploads/"
        };
        fails_with(&out, 1, &[needle]);
        shown(&out);
        assert!(!reg.has_tag(&format!("fail/{tag}"), "1", None), "{tag}");
    }
    // The same with chunks.
    let proxy = Proxy::start(reg.port, Fault::Fail500(4), None);
    let out = run(&mut push(
        &im.v1,
        &format!("{}/fail/chunk500:1", proxy.addr()),
        &["--chunk-size", "512K"],
    ));
    fails_with(&out, 1, &["injected by the test"]);
    shown(&out);
    assert!(!reg.has_tag("fail/chunk500", "1", None));
    assert!(proxy.count("PATCH", "/blobs/uploads/") >= 4);

    // A corrupt layer (one byte changed in the OCI layout): digest mismatch, no tag, and the
    // corrupt blob is not in the registry.
    let bad = im.work.join(format!("corrupt-{}", reg.port));
    sh(&format!("cp -r {} {}", im.v1_dir.display(), bad.display()));
    let index: Value = read_json(&bad.join("index.json"));
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest = read_json(&bad.join("blobs/sha256").join(&manifest_digest[7..]));
    let biggest = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|l| l["size"].as_u64())
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = bad.join("blobs/sha256").join(&biggest[7..]);
    let mut bytes = std::fs::read(&blob).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::remove_file(&blob).unwrap();
    std::fs::write(&blob, bytes).unwrap();
    let out = run(&mut push(
        &bad,
        &format!("{}/{REPO}:corrupt", reg.addr()),
        &[],
    ));
    fails_with(&out, 1, &["corrupt", &biggest]);
    shown(&out);
    assert!(!reg.has_tag(REPO, "corrupt", None));
    assert!(!reg.has_blob(REPO, &biggest));

    // The registry answers the manifest PUT with another digest: one line, and the manifest
    // is deleted again (the registry allows deletes), so the tag does not stay.
    let proxy = Proxy::start(reg.port, Fault::WrongManifestDigest, None);
    let out = run(&mut push(
        &im.v1,
        &format!("{}/fail/digest:1", proxy.addr()),
        &[],
    ));
    fails_with(&out, 1, &["stored the manifest", "deleted again"]);
    shown(&out);
    assert!(!reg.has_tag("fail/digest", "1", None));

    // TLS on a plain-HTTP registry when asked for it; a bad destination is a usage error.
    let out = run(&mut push(
        &im.v1,
        &format!("{}/{REPO}:tls", reg.addr()),
        &["--tls"],
    ));
    fails_with(&out, 1, &["/v2/"]);
    shown(&out);
    let out = run(&mut push(&im.v1, "127.0.0.1:1/Upper:1", &[]));
    fails_with(&out, 2, &["lowercase"]);
    shown(&out);
    let out = run(&mut push(
        &im.work.join("nope.tar"),
        &format!("{}/{REPO}:x", reg.addr()),
        &[],
    ));
    fails_with(&out, 1, &["nope.tar"]);
    shown(&out);
    assert!(!reg.has_tag(REPO, "x", None));
}
