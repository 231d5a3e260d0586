//! Credentials and auth challenges. Credentials come, first found wins, from the caller
//! (`--username` + `--password-stdin`), the environment (`STRATA_REGISTRY_USERNAME` /
//! `STRATA_REGISTRY_PASSWORD`), or the docker config file (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`), resolved as the Docker CLI resolves it: a credential helper named
//! for the registry in `credHelpers`, else the `credsStore` helper, else the registry's `auths`
//! entry. A helper is the program `docker-credential-NAME` on `PATH`, asked with `get`. A
//! `WWW-Authenticate` challenge says whether to send them as HTTP basic auth or trade them
//! for a bearer token.
//!
//! A [`Credentials`] value never shows its secret: its `Debug` is redacted and no error
//! message holds it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::RegistryError;
use crate::oci::reference::DOCKER_HUB;

/// A user name and a password (or token), with the place they came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    password: String,
    /// Where they came from, for messages (`the environment`, `/root/.docker/config.json`).
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

impl Credentials {
    pub fn new(username: &str, password: &str, source: &str) -> Credentials {
        Credentials {
            username: username.to_string(),
            password: password.to_string(),
            source: source.to_string(),
        }
    }

    /// The `Authorization` value for HTTP basic auth.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", STANDARD.encode(raw))
    }
}

/// The docker config file: `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
pub fn docker_config_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(dir) = env("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(Path::new(&dir).join("config.json"));
    }
    env("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| Path::new(&h).join(".docker/config.json"))
}

/// The keys an `auths` entry for `registry` may be filed under.
fn auth_keys(registry: &str) -> Vec<String> {
    let mut keys = vec![
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
        format!("https://{registry}/v1/"),
        format!("https://{registry}/v2/"),
    ];
    if registry == DOCKER_HUB {
        keys.push("https://index.docker.io/v1/".to_string());
        keys.push("index.docker.io".to_string());
        keys.push("registry-1.docker.io".to_string());
    }
    keys
}

/// Asks a credential helper for a server's credentials: `Ok(None)` when it has none.
pub type CredentialHelper<'a> =
    dyn Fn(&str, &str) -> Result<Option<Credentials>, RegistryError> + 'a;

/// The credentials for `registry` in a docker config file's text: from the helper that
/// `credHelpers` names for it, else the `credsStore` helper, else its `auths` entry
/// (`auth` as base64 `user:password`, or `username` and `password`). A helper that has no
/// credentials for the registry falls through to the `auths` entry, as in the Docker CLI;
/// a helper that fails is an error, never an anonymous push.
pub fn from_docker_config(
    text: &str,
    registry: &str,
    source: &str,
    helper: &CredentialHelper<'_>,
) -> Result<Option<Credentials>, RegistryError> {
    let bad = |why: String| RegistryError::Invalid(format!("{source}: {why}"));
    let config: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let named = config
        .get("credHelpers")
        .and_then(|h| h.as_object())
        .and_then(|h| auth_keys(registry).iter().find_map(|k| h.get(k)))
        .or_else(|| config.get("credsStore"));
    if let Some(name) = named {
        let name = name
            .as_str()
            .filter(|n| is_helper_name(n))
            .ok_or_else(|| bad(format!("credential helper name {name} is not a plain name")))?;
        if let Some(found) = helper(name, &helper_server(registry))? {
            return Ok(Some(found));
        }
    }
    let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    for key in auth_keys(registry) {
        let Some(entry) = auths.get(&key) else {
            continue;
        };
        if entry
            .get("identitytoken")
            .is_some_and(|t| t.as_str() != Some(""))
        {
            return Err(bad(format!(
                "auths.\"{key}\" holds an identity token, which strata does not use; log in with a user name and password"
            )));
        }
        if let Some(auth) = entry
            .get("auth")
            .and_then(|a| a.as_str())
            .filter(|a| !a.is_empty())
        {
            let decoded = STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
                .ok_or_else(|| {
                    bad(format!(
                        "auths.\"{key}\".auth is not base64 of user:password"
                    ))
                })?;
            let (user, pass) = decoded.split_once(':').ok_or_else(|| {
                bad(format!(
                    "auths.\"{key}\".auth is not base64 of user:password"
                ))
            })?;
            return Ok(Some(Credentials::new(user, pass, source)));
        }
        let user = entry.get("username").and_then(|u| u.as_str());
        let pass = entry.get("password").and_then(|p| p.as_str());
        if let (Some(u), Some(p)) = (user, pass) {
            return Ok(Some(Credentials::new(u, p, source)));
        }
    }
    Ok(None)
}

/// Whether `name` may be run as `docker-credential-NAME` (no path, no option).
fn is_helper_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The server name a helper is asked about: Docker Hub's legacy URL, else the host[:port].
fn helper_server(registry: &str) -> String {
    if registry == DOCKER_HUB {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    }
}

/// How long a credential helper may take (it may ask a keychain or a cloud API).
const HELPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// How much of a helper's answer is read.
const HELPER_OUTPUT_LIMIT: u64 = 64 << 10;

/// Run `docker-credential-NAME get` with `server` on its stdin, as the Docker CLI does, and
/// read its JSON answer (`Username`, `Secret`). "credentials not found" is `None`; any other
/// failure, a hang past a minute, or an identity token (`Username` `<token>`) is an
/// error. The secret never appears in a message.
pub fn run_credential_helper(
    name: &str,
    server: &str,
) -> Result<Option<Credentials>, RegistryError> {
    use std::io::{Read, Write};
    let program = format!("docker-credential-{name}");
    let fail = |why: String| RegistryError::Auth(format!("credential helper {program}: {why}"));
    let fail_io = |why: &str, source: std::io::Error| RegistryError::AuthIo {
        message: format!("credential helper {program}: {why}{source}"),
        source,
    };
    let mut child = std::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| fail_io("cannot run it: ", e))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = (&mut stdout)
            .take(HELPER_OUTPUT_LIMIT)
            .read_to_end(&mut out);
        out
    });
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| fail_io("", e))? {
            break status;
        }
        if start.elapsed() > HELPER_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!("no answer in {} s", HELPER_TIMEOUT.as_secs())));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let out = reader.join().unwrap_or_default();
    let text = String::from_utf8_lossy(&out);
    if !status.success() {
        // The helpers' own word for "nothing stored for this server".
        if text.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        let first = text.lines().next().unwrap_or("").trim();
        let first: String = first.chars().take(200).collect();
        return Err(fail(format!("failed ({status}): {first}")));
    }
    let answer: serde_json::Value =
        serde_json::from_str(&text).map_err(|_| fail("did not answer with JSON".to_string()))?;
    let field = |k: &str| answer.get(k).and_then(|v| v.as_str()).unwrap_or("");
    match (field("Username"), field("Secret")) {
        ("<token>", _) => Err(fail(
            "gave an identity token, which strata does not use; store a user name and password"
                .to_string(),
        )),
        (_, "") | ("", _) => Err(fail("answered without a user name or secret".to_string())),
        (user, secret) => Ok(Some(Credentials::new(
            user,
            secret,
            &format!("credential helper {program}"),
        ))),
    }
}

/// Find credentials for `registry`: explicit ones first, then the environment, then the
/// docker config file (with its credential helpers). `None` means anonymous.
pub fn find_credentials(
    explicit: Option<Credentials>,
    registry: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Credentials>, RegistryError> {
    if explicit.is_some() {
        return Ok(explicit);
    }
    let user = env("STRATA_REGISTRY_USERNAME").filter(|u| !u.is_empty());
    let pass = env("STRATA_REGISTRY_PASSWORD");
    match (user, pass) {
        (Some(u), Some(p)) => return Ok(Some(Credentials::new(&u, &p, "the environment"))),
        (Some(_), None) | (None, Some(_)) => {
            return Err(RegistryError::Invalid(
                "set both STRATA_REGISTRY_USERNAME and STRATA_REGISTRY_PASSWORD, or neither"
                    .to_string(),
            ));
        }
        (None, None) => {}
    }
    let Some(path) = docker_config_path(env) else {
        return Ok(None);
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => from_docker_config(
            &text,
            registry,
            &path.display().to_string(),
            &run_credential_helper,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RegistryError::AuthIo {
            message: format!("{}: {e}", path.display()),
            source: e,
        }),
    }
}

/// A `WWW-Authenticate` challenge: the scheme (lowercase) and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

/// Parse `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"` (quoted values may
/// hold commas).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.is_empty() {
        return None;
    }
    let mut params = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["service"], "reg");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let c = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "Registry Realm");
        assert!(parse_challenge("").is_none());
    }

    fn no_helper(name: &str, _: &str) -> Result<Option<Credentials>, RegistryError> {
        panic!("helper {name} asked")
    }

    #[test]
    fn docker_config_entries() {
        let auth = STANDARD.encode("u:p:w");
        let text = format!(
            r#"{{"auths":{{"https://r.example":{{"auth":"{auth}"}},"other:5000":{{"username":"x","password":"y"}}}}}}"#
        );
        let c = from_docker_config(&text, "r.example", "cfg", &no_helper)
            .unwrap()
            .unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p:w"));
        let c = from_docker_config(&text, "other:5000", "cfg", &no_helper)
            .unwrap()
            .unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("x", "y"));
        assert!(
            from_docker_config(&text, "none", "cfg", &no_helper)
                .unwrap()
                .is_none()
        );
        let bad = r#"{"auths":{"h":{"auth":"!!"}}}"#;
        assert!(from_docker_config(bad, "h", "cfg", &no_helper).is_err());
        assert!(from_docker_config("{", "h", "cfg", &no_helper).is_err());
        let token = r#"{"auths":{"h":{"identitytoken":"t"}}}"#;
        let err = from_docker_config(token, "h", "cfg", &no_helper).unwrap_err();
        assert!(err.to_string().contains("identity token"), "{err}");
    }

    #[test]
    fn credential_helpers_as_docker_resolves_them() {
        let asked = std::cell::RefCell::new(Vec::new());
        let helper = |name: &str, server: &str| {
            asked.borrow_mut().push(format!("{name} {server}"));
            Ok(match name {
                "pass" => Some(Credentials::new("h", "s", "helper")),
                _ => None,
            })
        };
        let auth = STANDARD.encode("a:b");
        // credHelpers for this registry wins over credsStore and auths.
        let text = format!(
            r#"{{"credHelpers":{{"r:5000":"pass"}},"credsStore":"none","auths":{{"r:5000":{{"auth":"{auth}"}}}}}}"#
        );
        let c = from_docker_config(&text, "r:5000", "cfg", &helper)
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "h");
        // credsStore for the others; a helper with nothing falls through to auths.
        let c = from_docker_config(&text, "docker.io", "cfg", &helper).unwrap();
        assert!(c.is_none());
        let text2 = format!(r#"{{"credsStore":"none","auths":{{"q":{{"auth":"{auth}"}}}}}}"#);
        let c = from_docker_config(&text2, "q", "cfg", &helper)
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "a");
        assert_eq!(
            *asked.borrow(),
            ["pass r:5000", "none https://index.docker.io/v1/", "none q"]
        );
        // A helper name that would be a path or an option is refused, never run.
        for name in ["../x", "/bin/sh", "-x", ""] {
            let text = format!(r#"{{"credsStore":"{name}"}}"#);
            assert!(from_docker_config(&text, "q", "cfg", &no_helper).is_err());
        }
        // A helper that fails is an error, not an anonymous push.
        let failing = |_: &str, _: &str| -> Result<Option<Credentials>, RegistryError> {
            Err(RegistryError::Auth("boom".into()))
        };
        assert!(from_docker_config(r#"{"credsStore":"x"}"#, "q", "cfg", &failing).is_err());
    }

    #[test]
    fn precedence_and_redaction() {
        let dir = tempfile::tempdir().unwrap();
        let auth = STANDARD.encode("cfguser:cfgpass");
        std::fs::write(
            dir.path().join("config.json"),
            format!(r#"{{"auths":{{"h:1":{{"auth":"{auth}"}}}}}}"#),
        )
        .unwrap();
        let d = dir.path().to_str().unwrap();
        let env = env_of(&[("DOCKER_CONFIG", d)]);
        let c = find_credentials(None, "h:1", &env).unwrap().unwrap();
        assert_eq!(c.username, "cfguser");
        let env = env_of(&[
            ("DOCKER_CONFIG", d),
            ("STRATA_REGISTRY_USERNAME", "envuser"),
            ("STRATA_REGISTRY_PASSWORD", "envpass"),
        ]);
        let c = find_credentials(None, "h:1", &env).unwrap().unwrap();
        assert_eq!(c.username, "envuser");
        let explicit = Credentials::new("flag", "secret", "--username");
        let c = find_credentials(Some(explicit), "h:1", &env)
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "flag");
        assert!(!format!("{c:?}").contains("secret"));
        assert_eq!(
            c.basic_header(),
            format!("Basic {}", STANDARD.encode("flag:secret"))
        );
        let env = env_of(&[("STRATA_REGISTRY_USERNAME", "u")]);
        assert!(find_credentials(None, "h:1", &env).is_err());
        let env = env_of(&[("HOME", "/nonexistent")]);
        assert!(find_credentials(None, "h:1", &env).unwrap().is_none());
    }

    #[test]
    fn a_helper_that_cannot_run_keeps_its_io_error() {
        use std::error::Error as _;
        let e = run_credential_helper("strata-test-no-such-helper", "r.example").unwrap_err();
        assert_eq!(
            e.to_string(),
            "credential helper docker-credential-strata-test-no-such-helper: cannot run it: \
             No such file or directory (os error 2)"
        );
        let kind = e
            .source()
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .map(std::io::Error::kind);
        assert_eq!(kind, Some(std::io::ErrorKind::NotFound));
    }
}
