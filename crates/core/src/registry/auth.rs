//! Credentials and auth challenges. Credentials come, first found wins, from the caller
//! (`--username` + `--password-stdin`), the environment (`STRATA_REGISTRY_USERNAME` /
//! `STRATA_REGISTRY_PASSWORD`), or the docker config file (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`, its `auths` entry for the registry). A `WWW-Authenticate`
//! challenge says whether to send them as HTTP basic auth or trade them for a bearer token.
//!
//! A [`Credentials`] value never shows its secret: its `Debug` is redacted and no error
//! message holds it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::RegistryError;

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
    if registry == "docker.io" {
        keys.push("https://index.docker.io/v1/".to_string());
        keys.push("index.docker.io".to_string());
        keys.push("registry-1.docker.io".to_string());
    }
    keys
}

/// The credentials for `registry` in a docker config file's text (`auths.<key>.auth` as
/// base64 `user:password`, or `username` and `password`), if it has any.
pub fn from_docker_config(
    text: &str,
    registry: &str,
    source: &str,
) -> Result<Option<Credentials>, RegistryError> {
    let bad = |why: String| RegistryError::Invalid(format!("{source}: {why}"));
    let config: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    for key in auth_keys(registry) {
        let Some(entry) = auths.get(&key) else {
            continue;
        };
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

/// Find credentials for `registry`: explicit ones first, then the environment, then the
/// docker config file. `None` means anonymous.
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
        Ok(text) => from_docker_config(&text, registry, &path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RegistryError::Invalid(format!("{}: {e}", path.display()))),
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

    #[test]
    fn docker_config_entries() {
        let auth = STANDARD.encode("u:p:w");
        let text = format!(
            r#"{{"auths":{{"https://r.example":{{"auth":"{auth}"}},"other:5000":{{"username":"x","password":"y"}}}}}}"#
        );
        let c = from_docker_config(&text, "r.example", "cfg")
            .unwrap()
            .unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p:w"));
        let c = from_docker_config(&text, "other:5000", "cfg")
            .unwrap()
            .unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("x", "y"));
        assert!(from_docker_config(&text, "none", "cfg").unwrap().is_none());
        assert!(from_docker_config(r#"{"auths":{"h":{"auth":"!!"}}}"#, "h", "cfg").is_err());
        assert!(from_docker_config("{", "h", "cfg").is_err());
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
}
