//! push-image against Debian's docker-registry on 127.0.0.1 (started per test on a free port,
//! filesystem storage in a temporary directory; anonymous or htpasswd basic auth), with a
//! counting HTTP proxy written here between the tool and the registry: it counts the bytes
//! on the wire, plays a bearer-token server, refuses chunks, or fails the Nth blob upload.
//! The pushed images are pulled and run by docker and inspected by skopeo.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

use crate::support::*;

const REPO: &str = "strata-test/push";
const EXPECTED: &str = "hello from strata: world arg1 from the store";
const EXPECTED_V2: &str = "hello from strata: world arg1 a changed line";

// ---------------------------------------------------------------------------------------------
// The proxy.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
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
    /// Move every upload session to another origin: the `Location` of each `POST …/uploads/`
    /// answer names `http://127.0.0.1:PORT` with the registry's path.
    Relocate(u16),
    /// Give every upload `Location` as a relative reference (`../uploads/UUID?…`).
    RelativeLocation,
    /// Answer each blob `HEAD` with a 307 to the same path with `?redirected=1` (`None`: the
    /// same origin, then forwarded) or to `http://127.0.0.1:PORT` (another origin).
    RedirectHead(Option<u16>),
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

pub(crate) struct Proxy {
    port: u16,
    log: Arc<Mutex<ProxyLog>>,
}

impl Proxy {
    pub(crate) fn start(upstream: u16, fault: Fault, bearer: Option<(&str, &str)>) -> Proxy {
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

    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Body bytes of blob upload requests (POST/PUT/PATCH to …/blobs/uploads/…).
    pub(crate) fn upload_body_bytes(&self) -> u64 {
        self.log
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.path.contains("/blobs/uploads/"))
            .map(|r| r.body)
            .sum()
    }

    pub(crate) fn count(&self, method: &str, path_part: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.method == method && r.path.contains(path_part))
            .count()
    }

    pub(crate) fn reset(&self) {
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
    let mut request_line = head.remove(0);
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
    if let Fault::RedirectHead(to) = fault
        && method == "HEAD"
        && path.contains("/blobs/")
    {
        if let Some(plain) = path.strip_suffix("?redirected=1") {
            request_line = format!("HEAD {plain} HTTP/1.1");
        } else {
            let location = match to {
                None => format!("{path}?redirected=1"),
                Some(port) => format!("http://127.0.0.1:{port}{path}?redirected=1"),
            };
            respond(
                &mut client,
                "307 Temporary Redirect",
                &format!("Location: {location}\r\n"),
                "",
            );
            return Ok(());
        }
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
        let fake = format!("sha256:{}", "0".repeat(64));
        response = rewrite_header(&response, "docker-content-digest", |_| fake.clone());
    }
    let session = path.contains("/blobs/uploads/") && (method == "POST" || method == "PATCH");
    if let Fault::Relocate(port) = fault
        && session
    {
        response = rewrite_header(&response, "location", |l| {
            format!("http://127.0.0.1:{port}{}", &l[l.find("/v2/").unwrap()..])
        });
    }
    if fault == Fault::RelativeLocation && session {
        response = rewrite_header(&response, "location", |l| {
            let rest = &l[l.find("/blobs/uploads/").unwrap() + "/blobs/uploads/".len()..];
            format!("../uploads/{rest}")
        });
    }
    client.write_all(&response)?;
    Ok(())
}

/// A response with the value of header `name` (lowercase) replaced by `f(value)`.
fn rewrite_header(response: &[u8], name: &str, f: impl Fn(&str) -> String) -> Vec<u8> {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(response.len());
    let head = String::from_utf8_lossy(&response[..end]);
    let head: Vec<String> = head
        .split("\r\n")
        .map(|l| match l.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case(name) => format!("{k}: {}", f(v.trim())),
            _ => l.to_string(),
        })
        .collect();
    let mut out = head.join("\r\n").into_bytes();
    out.extend_from_slice(&response[end..]);
    out
}

// ---------------------------------------------------------------------------------------------
// Hostile servers.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hostile {
    /// Answer every request with a 401 and a Basic challenge: a server that asks for the
    /// credentials it was sent to.
    AskForCredentials,
    /// Read the request and never answer.
    Silent,
    /// Answer `200 OK` and then one byte of a header every 300 ms.
    DripHeaders,
    /// Ask for a bearer token from a realm here, and answer the token request with one byte
    /// of its body every 300 ms.
    DripToken,
}

/// A server on 127.0.0.1 that misbehaves in one way. It records the head of every request
/// (request line and headers) and stops by itself after a minute; so does each connection.
struct HostileServer {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

impl HostileServer {
    fn start(kind: Hostile) -> HostileServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let h = heads.clone();
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(60);
            while Instant::now() < end {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let h = h.clone();
                        std::thread::spawn(move || {
                            let _ = misbehave(conn, kind, port, &h, end);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        HostileServer { port, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

fn misbehave(
    conn: TcpStream,
    kind: Hostile,
    own_port: u16,
    heads: &Mutex<Vec<String>>,
    end: Instant,
) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "\r\n" {
            break;
        }
        head.push(line.trim_end().to_string());
    }
    heads.lock().unwrap().push(head.join("\n"));
    let drip = |out: &mut TcpStream, start: &str| -> std::io::Result<()> {
        out.write_all(start.as_bytes())?;
        while Instant::now() < end {
            out.write_all(b"a")?;
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(())
    };
    match kind {
        Hostile::AskForCredentials => {
            respond(
                &mut out,
                "401 Unauthorized",
                "WWW-Authenticate: Basic realm=\"elsewhere\"\r\n",
                "",
            );
            Ok(())
        }
        Hostile::Silent => {
            // Until the client hangs up (or the minute is over).
            out.set_read_timeout(Some(Duration::from_millis(200)))?;
            let mut byte = [0u8; 1];
            while Instant::now() < end {
                if let Ok(0) = out.read(&mut byte) {
                    break;
                }
            }
            Ok(())
        }
        Hostile::DripHeaders => drip(&mut out, "HTTP/1.1 200 OK\r\nX-Drip: "),
        Hostile::DripToken if head[0].starts_with("GET /token") => drip(
            &mut out,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"token\":\"",
        ),
        Hostile::DripToken => {
            let challenge = format!(
                "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{own_port}/token\",service=\"drip\"\r\n"
            );
            respond(&mut out, "401 Unauthorized", &challenge, "");
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The images.

struct Images {
    _dir: FixtureDir,
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
        let dir = FixtureDir::new("strata-push-");
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
                .args(["--contents", &hello, "--contents", &extra])
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

/// Print a failure's one line (the test log then shows every message), and check it says
/// each thing once: no doubled prefix (`x: x: …`, `Network Error: Network Error`).
fn shown(out: &Output) {
    let line = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    eprintln!("push: {line}");
    let parts: Vec<&str> = line.split(": ").collect();
    for pair in parts.windows(2) {
        assert_ne!(pair[0], pair[1], "a doubled prefix in {line:?}");
    }
}

fn report(out: &Output) -> Value {
    serde_json::from_str(ok(out).trim()).expect("--json summary")
}

fn uploaded(r: &Value) -> u64 {
    r["uploadedBytes"].as_u64().unwrap()
}

/// The digests of the blobs a push report says were `action` (`uploaded`, `skipped`, …).
pub(crate) fn blobs_with(r: &Value, action: &str) -> BTreeSet<String> {
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

pub(crate) fn docker_pull_run(reference: &str) -> String {
    start_docker();
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

/// A `docker-credential-NAME` helper script in its own bin dir, and a docker config naming it.
fn credential_helper(dir: &Path, name: &str, script: &str, config: &str) -> (PathBuf, PathBuf) {
    let bin = dir.join(format!("bin-{name}"));
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join(format!("docker-credential-{name}"));
    std::fs::write(&helper, format!("#!/bin/bash\n{script}\n")).unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = dir.join(format!("cfg-{name}"));
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(cfg.join("config.json"), config).unwrap();
    (bin, cfg)
}

fn with_path<'a>(cmd: &'a mut Command, bin: &Path) -> &'a mut Command {
    let path = std::env::var("PATH").unwrap_or_default();
    cmd.env("PATH", format!("{}:{path}", bin.display()))
}

#[test]
fn credentials_from_docker_credential_helpers() {
    let im = images();
    let reg = Registry::start(Some(("alice", "s3cret-pw")));
    let dest = |tag: &str| format!("{}/{REPO}:{tag}", reg.addr());
    let work = tempfile::tempdir().unwrap();
    // credHelpers names a helper for this registry; it checks it is asked `get` about it.
    let (bin, cfg) = credential_helper(
        work.path(),
        "good",
        &format!(
            r#"[ "$1" = get ] || exit 3; read -r server; [ "$server" = "{}" ] || exit 4
echo '{{"ServerURL":"'"$server"'","Username":"alice","Secret":"s3cret-pw"}}'"#,
            reg.addr()
        ),
        &format!(r#"{{"credHelpers":{{"{}":"good"}}}}"#, reg.addr()),
    );
    ok(&run(with_path(
        push(&im.v1, &dest("helper"), &[]).env("DOCKER_CONFIG", &cfg),
        &bin,
    )));
    assert!(reg.has_tag(REPO, "helper", Some("alice:s3cret-pw")));
    // credsStore, the same way.
    std::fs::write(cfg.join("config.json"), r#"{"credsStore":"good"}"#).unwrap();
    ok(&run(with_path(
        push(&im.v1, &dest("store"), &[]).env("DOCKER_CONFIG", &cfg),
        &bin,
    )));
    assert!(reg.has_tag(REPO, "store", Some("alice:s3cret-pw")));
    // A helper that fails: one line naming it, and nothing pushed anonymously.
    let (bin, cfg) = credential_helper(
        work.path(),
        "broken",
        "echo 'keychain is locked'; exit 1",
        r#"{"credsStore":"broken"}"#,
    );
    let out = run(with_path(
        push(&im.v1, &dest("broken"), &[]).env("DOCKER_CONFIG", &cfg),
        &bin,
    ));
    fails_with(&out, 1, &["docker-credential-broken", "keychain is locked"]);
    assert!(!reg.has_tag(REPO, "broken", Some("alice:s3cret-pw")));
    // A helper that is not installed is an error too.
    let out = run(push(&im.v1, &dest("missing"), &[]).env("DOCKER_CONFIG", &cfg));
    fails_with(&out, 1, &["docker-credential-broken", "cannot run it"]);
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

// ---------------------------------------------------------------------------------------------
// Hostile registries and images.

const PW: &str = "s3cret-pw";

fn with_alice(cmd: &mut Command) -> &mut Command {
    cmd.env("STRATA_REGISTRY_USERNAME", "alice")
        .env("STRATA_REGISTRY_PASSWORD", PW)
}

/// The registry answers the upload `POST` with a `Location` on another origin: the upload
/// goes there without the credentials, and when that origin asks for some it gets none.
#[test]
fn credentials_never_follow_an_upload_location_to_another_origin() {
    let im = images();
    let catcher = HostileServer::start(Hostile::AskForCredentials);
    let no_credentials_went_there = |what: &str| {
        let heads = catcher.heads();
        assert!(!heads.is_empty(), "{what}: the other origin was not asked");
        for h in &heads {
            assert!(
                !h.to_ascii_lowercase().contains("authorization"),
                "{what}: credentials went to another origin: {h}"
            );
        }
    };

    // Basic auth.
    let reg = Registry::start(Some(("alice", PW)));
    let proxy = Proxy::start(reg.port, Fault::Relocate(catcher.port), None);
    let out = run(with_alice(&mut push(
        &im.v1,
        &format!("{}/{REPO}:moved", proxy.addr()),
        &[],
    )));
    no_credentials_went_there("basic");
    fails_with(&out, 1, &[&format!("127.0.0.1:{}", catcher.port)]);
    shown(&out);
    assert!(!String::from_utf8_lossy(&out.stderr).contains(PW));
    assert!(!reg.has_tag(REPO, "moved", Some("alice:s3cret-pw")));

    // Bearer tokens.
    let reg = Registry::start(None);
    let proxy = Proxy::start(
        reg.port,
        Fault::Relocate(catcher.port),
        Some(("bob", "tokpw")),
    );
    let out = run(push(&im.v1, &format!("{}/{REPO}:moved", proxy.addr()), &[])
        .env("STRATA_REGISTRY_USERNAME", "bob")
        .env("STRATA_REGISTRY_PASSWORD", "tokpw"));
    no_credentials_went_there("bearer");
    fails_with(&out, 1, &[&format!("127.0.0.1:{}", catcher.port)]);
    shown(&out);
    assert!(!reg.has_tag(REPO, "moved", None));
}

/// Relative `Location` values resolve against the URL that answered (RFC 3986), for the
/// session `POST` and each chunk's `PATCH`.
#[test]
fn relative_upload_locations_resolve_against_the_answering_url() {
    let im = images();
    let reg = Registry::start(None);
    let proxy = Proxy::start(reg.port, Fault::RelativeLocation, None);
    for (tag, flags) in [
        ("mono", &[][..]),
        ("chunked", &["--chunk-size", "256K"][..]),
    ] {
        let mut flags = flags.to_vec();
        flags.push("--json");
        let r = report(&run(&mut push(
            &im.v1,
            &format!("{}/relative/{tag}:1", proxy.addr()),
            &flags,
        )));
        assert_eq!(blobs_with(&r, "uploaded").len(), 5, "{tag}");
        let inspected = skopeo_inspect(&format!("{}/relative/{tag}:1", reg.addr()), None);
        assert_eq!(inspected["Digest"], r["digest"], "{tag}");
    }
    assert!(proxy.count("PATCH", "/blobs/uploads/") >= 6);
}

/// A redirect (3xx) of a `HEAD` is followed: with the credentials on the same origin, without
/// them to another one, whose request for credentials is refused.
#[test]
fn redirects_keep_credentials_on_their_origin() {
    let im = images();
    let reg = Registry::start(Some(("alice", PW)));

    let same = Proxy::start(reg.port, Fault::RedirectHead(None), None);
    ok(&run(with_alice(&mut push(
        &im.v1,
        &format!("{}/{REPO}:redirected", same.addr()),
        &[],
    ))));
    assert_eq!(same.count("HEAD", "redirected=1"), 5);
    assert!(reg.has_tag(REPO, "redirected", Some("alice:s3cret-pw")));

    let catcher = HostileServer::start(Hostile::AskForCredentials);
    let other = Proxy::start(reg.port, Fault::RedirectHead(Some(catcher.port)), None);
    let out = run(with_alice(&mut push(
        &im.v2,
        &format!("{}/{REPO}:elsewhere", other.addr()),
        &[],
    )));
    fails_with(&out, 1, &[&format!("127.0.0.1:{}", catcher.port)]);
    shown(&out);
    assert!(!String::from_utf8_lossy(&out.stderr).contains(PW));
    let heads = catcher.heads();
    assert!(!heads.is_empty());
    for h in &heads {
        assert!(
            !h.to_ascii_lowercase().contains("authorization"),
            "credentials followed a redirect to another origin: {h}"
        );
    }
    assert!(!reg.has_tag(REPO, "elsewhere", Some("alice:s3cret-pw")));
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(data))
}

/// Add a layer descriptor to an OCI layout directory's manifest (a new manifest blob, and
/// index.json pointing at it).
fn with_extra_layer(dir: &Path, hex: &str, size: u64) {
    let mut index = read_json(&dir.join("index.json"));
    let old = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut manifest = read_json(&dir.join("blobs/sha256").join(&old[7..]));
    manifest["layers"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{hex}"),
            "size": size,
        }));
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let new = sha256_hex(&bytes);
    std::fs::write(dir.join("blobs/sha256").join(&new), &bytes).unwrap();
    index["manifests"][0]["digest"] = format!("sha256:{new}").into();
    index["manifests"][0]["size"] = bytes.len().into();
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Images whose manifests name files outside the image (absolute paths, `..`, symbolic links
/// out, `../` tar members): refused before anything is sent. A symbolic link inside the
/// image is followed.
#[test]
fn image_paths_outside_the_image_are_refused_before_anything_is_sent() {
    let im = images();
    let reg = Registry::start(None);
    let proxy = Proxy::start(reg.port, Fault::None, None);
    let base = im.work.join(format!("hostile-{}", reg.port));
    let outside = base.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let secret_data = b"root:$6$not-a-real-hash$:19000:0:99999:7:::\n".repeat(50);
    let secret = outside.join("secret");
    std::fs::write(&secret, &secret_data).unwrap();
    let secret_hex = sha256_hex(&secret_data);
    let secret_len = secret_data.len() as u64;

    let docker_dir = |name: &str, layers: &[&str]| -> PathBuf {
        let d = base.join(name);
        std::fs::create_dir_all(d.join("blobs/sha256")).unwrap();
        std::fs::write(
            d.join("config.json"),
            br#"{"architecture":"amd64","os":"linux"}"#,
        )
        .unwrap();
        let manifest = serde_json::json!([
            {"Config": "config.json", "RepoTags": ["hostile:1"], "Layers": layers}
        ]);
        std::fs::write(d.join("manifest.json"), manifest.to_string()).unwrap();
        d
    };
    let oci_copy = |name: &str| -> PathBuf {
        let d = base.join(name);
        sh(&format!("cp -r {} {}", im.v1_dir.display(), d.display()));
        d
    };
    let link = |target: &Path, at: &Path| std::os::unix::fs::symlink(target, at).unwrap();

    let mut cases: Vec<(&str, PathBuf)> = Vec::new();
    cases.push((
        "absolute",
        docker_dir("absolute", &[secret.to_str().unwrap()]),
    ));
    cases.push(("dotdot", docker_dir("dotdot", &["../outside/secret"])));
    cases.push((
        "blobs-dotdot",
        docker_dir("blobs-dotdot", &["blobs/sha256/../../../outside/secret"]),
    ));
    let d = docker_dir("link-layer", &["layer.tar"]);
    link(Path::new("../outside/secret"), &d.join("layer.tar"));
    cases.push(("link-layer", d));
    let d = oci_copy("link-blob");
    link(
        Path::new("../../../outside/secret"),
        &d.join("blobs/sha256").join(&secret_hex),
    );
    with_extra_layer(&d, &secret_hex, secret_len);
    cases.push(("link-blob", d));
    let d = oci_copy("absolute-link");
    link(&secret, &d.join("blobs/sha256").join(&secret_hex));
    with_extra_layer(&d, &secret_hex, secret_len);
    cases.push(("absolute-link", d));
    let d = oci_copy("linked-blobs");
    std::fs::rename(d.join("blobs"), outside.join("blobs")).unwrap();
    link(Path::new("../outside/blobs"), &d.join("blobs"));
    cases.push(("linked-blobs", d));
    // A docker-archive tar whose manifest.json names a `../` member.
    let tar_path = base.join("dotdot.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
        let mut add = |name: &[u8], data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append(&h, data).unwrap();
        };
        add(b"config.json", br#"{"architecture":"amd64","os":"linux"}"#);
        add(b"../secret", &secret_data);
        add(
            b"manifest.json",
            br#"[{"Config":"config.json","RepoTags":["hostile:1"],"Layers":["../secret"]}]"#,
        );
        b.finish().unwrap();
    }
    cases.push(("tar-dotdot", tar_path));

    for (case, image) in &cases {
        proxy.reset();
        let out = run(&mut push(
            image,
            &format!("{}/hostile/{case}:1", proxy.addr()),
            &[],
        ));
        fails_with(&out, 1, &["outside the image"]);
        shown(&out);
        let requests = proxy.log.lock().unwrap().requests.len();
        assert_eq!(requests, 0, "{case}: requests were sent");
        assert!(!reg.has_blob(&format!("hostile/{case}"), &format!("sha256:{secret_hex}")));
    }

    // A symbolic link inside the image is fine.
    let d = oci_copy("link-inside");
    let manifest_digest = read_json(&d.join("index.json"))["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest = read_json(&d.join("blobs/sha256").join(&manifest_digest[7..]));
    let layer = manifest["layers"][0]["digest"].as_str().unwrap()[7..].to_string();
    std::fs::create_dir_all(d.join("store")).unwrap();
    std::fs::rename(
        d.join("blobs/sha256").join(&layer),
        d.join("store").join(&layer),
    )
    .unwrap();
    link(
        &Path::new("../../store").join(&layer),
        &d.join("blobs/sha256").join(&layer),
    );
    ok(&run(&mut push(
        &d,
        &format!("{}/hostile/inside:1", proxy.addr()),
        &[],
    )));
    assert!(reg.has_blob("hostile/inside", &format!("sha256:{layer}")));
}

/// A blob whose bytes do not hash to its digest: not one byte of it goes to the registry,
/// monolithic or chunked.
#[test]
fn a_corrupt_blob_sends_no_byte_of_itself() {
    let im = images();
    let reg = Registry::start(None);
    let proxy = Proxy::start(reg.port, Fault::None, None);
    let bad = im.work.join(format!("corrupt-first-{}", reg.port));
    sh(&format!("cp -r {} {}", im.v1_dir.display(), bad.display()));
    let index = read_json(&bad.join("index.json"));
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest = read_json(&bad.join("blobs/sha256").join(&manifest_digest[7..]));
    // The first layer is the first blob pushed.
    let first = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = bad.join("blobs/sha256").join(&first[7..]);
    let mut bytes = std::fs::read(&blob).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::remove_file(&blob).unwrap();
    std::fs::write(&blob, bytes).unwrap();
    for (tag, flags) in [("mono", &[][..]), ("chunked", &["--chunk-size", "64K"][..])] {
        proxy.reset();
        let out = run(&mut push(
            &bad,
            &format!("{}/corrupt/app:{tag}", proxy.addr()),
            flags,
        ));
        fails_with(&out, 1, &["corrupt", &first]);
        shown(&out);
        assert_eq!(
            proxy.upload_body_bytes(),
            0,
            "{tag}: bytes of a corrupt blob were sent"
        );
        assert_eq!(proxy.count("POST", "/blobs/uploads/"), 0, "{tag}");
        assert!(!reg.has_blob("corrupt/app", &first));
    }
}

/// A registry that never answers, or drips its answer (or its token) a byte at a time, fails
/// the push within the time allowed (`--timeout`).
#[test]
fn silent_and_dripping_registries_time_out() {
    let im = images();
    for kind in [Hostile::Silent, Hostile::DripHeaders, Hostile::DripToken] {
        let server = HostileServer::start(kind);
        let start = Instant::now();
        let out = run(&mut push(
            &im.v1,
            &format!("127.0.0.1:{}/app:1", server.port),
            &["--timeout", "2"],
        ));
        let took = start.elapsed();
        fails_with(&out, 1, &["timed out", "--timeout"]);
        shown(&out);
        assert!(
            took < Duration::from_secs(10),
            "{kind:?} held push-image for {took:?}"
        );
    }
    let out = run(&mut push(&im.v1, "127.0.0.1:1/app:1", &["--timeout", "0"]));
    fails_with(&out, 2, &["--timeout"]);
}

/// `USER:PASSWORD@` in the destination is refused, and the password is not echoed.
#[test]
fn credentials_in_the_destination_are_never_echoed() {
    let im = images();
    let digest = format!("sha256:{}", "0".repeat(64));
    for dest in [
        format!("alice:{PW}@127.0.0.1:5000/app"),
        format!("alice:{PW}@127.0.0.1:5000/app:1"),
        format!("https://alice:{PW}@127.0.0.1:5000/app"),
        format!("alice:{PW}@x@127.0.0.1:5000/app:1"),
        format!("alice:{PW}@127.0.0.1:5000/app@{digest}"),
        format!("alice:{PW}/x@{digest}"),
    ] {
        let out = run(&mut push(&im.v1, &dest, &[]));
        fails_with(&out, 2, &["destination"]);
        shown(&out);
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains(PW),
            "{dest}: the password is echoed"
        );
    }
}
