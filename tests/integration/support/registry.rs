//! A real registry (`docker-registry`, optionally behind htpasswd basic auth) on a free local
//! port, with its storage and access log in a temp dir, for the tests that push and pull.

use std::collections::BTreeSet;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::tree_listing;

/// A running registry, stopped when dropped.
pub struct Registry {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait (at most 20 s) until something accepts connections on `port`.
pub fn wait_for_port(port: u16, what: &str) {
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
    pub fn start(htpasswd: Option<(&str, &str)>) -> Registry {
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

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The blob digests in the registry's storage.
    pub fn blobs(&self) -> BTreeSet<String> {
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
    pub fn upload_puts(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("registry.log"))
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"PUT /v2/") && l.contains("/blobs/uploads/"))
            .count()
    }

    /// Whether `REPO:tag` resolves (curl, straight to the registry).
    pub fn has_tag(&self, repo: &str, tag: &str, creds: Option<&str>) -> bool {
        self.exists(&format!("{repo}/manifests/{tag}"), creds)
    }

    /// Whether the repository has the blob.
    pub fn has_blob(&self, repo: &str, digest: &str) -> bool {
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
