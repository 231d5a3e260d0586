//! HTTP to one repository of one registry, with auth: requests go out anonymously until the
//! registry answers 401 with a `WWW-Authenticate` challenge; then the credentials are sent as
//! HTTP basic auth, or traded at the challenge's realm for a bearer token for this
//! repository's scopes, and the request is sent again. The `Authorization` value is kept for
//! the requests that follow and never appears in a message.

use std::io::{self, Read};
use std::sync::Mutex;
use std::time::Duration;

use super::RegistryError;
use super::auth::{Credentials, parse_challenge};
use super::reference::Reference;

/// A request body.
pub enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// A stream of exactly `len` bytes, opened afresh for each attempt.
    Stream {
        open: &'a dyn Fn() -> io::Result<Box<dyn Read + Send + 'a>>,
        len: u64,
    },
}

impl std::fmt::Debug for Body<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Empty => write!(f, "Empty"),
            Body::Bytes(b) => write!(f, "Bytes({})", b.len()),
            Body::Stream { len, .. } => write!(f, "Stream({len})"),
        }
    }
}

/// A response: status, the headers push reads, and the body for error messages.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub location: Option<String>,
    pub digest: Option<String>,
    pub range: Option<String>,
    pub body: String,
}

/// A client for one repository.
#[derive(Debug)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    registry: String,
    scopes: Vec<String>,
    credentials: Option<Credentials>,
    authorization: Mutex<Option<String>>,
}

impl Client {
    /// `scopes` are the token scopes asked for (`repository:team/app:pull,push`, and
    /// `repository:SOURCE:pull` for mounts).
    pub fn new(
        reference: &Reference,
        tls: bool,
        scopes: Vec<String>,
        credentials: Option<Credentials>,
    ) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(Duration::from_secs(300))
            .timeout_write(Duration::from_secs(300))
            .user_agent(concat!("strata-push/", env!("CARGO_PKG_VERSION")))
            .build();
        let scheme = if tls { "https" } else { "http" };
        Client {
            agent,
            base: format!("{scheme}://{}", reference.api_host()),
            registry: reference.registry.clone(),
            scopes,
            credentials,
            authorization: Mutex::new(None),
        }
    }

    /// An absolute URL for an API path (`/v2/…`) or a `Location` header (absolute or not).
    pub fn url(&self, path_or_location: &str) -> String {
        if path_or_location.starts_with("http://") || path_or_location.starts_with("https://") {
            path_or_location.to_string()
        } else {
            format!("{}{}", self.base, path_or_location)
        }
    }

    fn current_auth(&self) -> Option<String> {
        self.authorization.lock().ok().and_then(|a| a.clone())
    }

    fn set_auth(&self, value: String) {
        if let Ok(mut a) = self.authorization.lock() {
            *a = Some(value);
        }
    }

    /// Send a request; a 401 is answered once (credentials or a token) and the request sent
    /// again. Every other status is returned for the caller to judge.
    pub fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &Body,
    ) -> Result<Response, RegistryError> {
        let mut authenticated = false;
        loop {
            let response = self.send_once(method, url, headers, body)?;
            if response.0.status != 401 {
                return Ok(response.0);
            }
            if authenticated {
                return Err(self.refused());
            }
            let challenge = response.1.ok_or_else(|| {
                RegistryError::Auth(format!(
                    "{}: 401 Unauthorized without a WWW-Authenticate challenge",
                    self.registry
                ))
            })?;
            self.authenticate(&challenge)?;
            authenticated = true;
        }
    }

    fn send_once(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &Body,
    ) -> Result<(Response, Option<String>), RegistryError> {
        let mut req = self.agent.request(method, url);
        for (k, v) in headers {
            req = req.set(k, v);
        }
        if let Some(auth) = self.current_auth() {
            req = req.set("Authorization", &auth);
        }
        let result = match body {
            Body::Empty => req.call(),
            Body::Bytes(b) => req.send_bytes(b),
            Body::Stream { open, len } => {
                let reader = open().map_err(|e| RegistryError::Image {
                    path: url_path(url).to_string(),
                    message: e.to_string(),
                })?;
                req.set("Content-Length", &len.to_string()).send(reader)
            }
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => {
                return Err(RegistryError::Unreachable(format!(
                    "{method} {}: {}",
                    url_path(url),
                    transport_message(&t)
                )));
            }
        };
        let header = |name: &str| resp.header(name).map(str::to_string);
        let challenge = header("WWW-Authenticate");
        let mut out = Response {
            status: resp.status(),
            location: header("Location"),
            digest: header("Docker-Content-Digest"),
            range: header("Range"),
            body: String::new(),
        };
        let mut text = String::new();
        // Error bodies are short JSON; read a bounded amount (and drain the connection).
        let _ = resp.into_reader().take(64 * 1024).read_to_string(&mut text);
        out.body = text;
        Ok((out, challenge))
    }

    fn refused(&self) -> RegistryError {
        match &self.credentials {
            Some(c) => RegistryError::Auth(format!(
                "{}: authentication failed for user '{}' (credentials from {}): wrong user name or password, or no push access",
                self.registry, c.username, c.source
            )),
            None => self.no_credentials(),
        }
    }

    fn no_credentials(&self) -> RegistryError {
        RegistryError::Auth(format!(
            "{} requires credentials and none were found (--username with --password-stdin, STRATA_REGISTRY_USERNAME/STRATA_REGISTRY_PASSWORD, or an auths entry in the docker config file)",
            self.registry
        ))
    }

    /// Answer a challenge: basic auth with the credentials, or a bearer token from the realm.
    fn authenticate(&self, header: &str) -> Result<(), RegistryError> {
        let challenge = parse_challenge(header).ok_or_else(|| {
            RegistryError::Auth(format!(
                "{}: unreadable WWW-Authenticate challenge",
                self.registry
            ))
        })?;
        match challenge.scheme.as_str() {
            "basic" => {
                let creds = self
                    .credentials
                    .as_ref()
                    .ok_or_else(|| self.no_credentials())?;
                self.set_auth(creds.basic_header());
                Ok(())
            }
            "bearer" => {
                let realm = challenge.params.get("realm").ok_or_else(|| {
                    RegistryError::Auth(format!(
                        "{}: bearer challenge without a realm",
                        self.registry
                    ))
                })?;
                let mut req = self.agent.get(realm);
                if let Some(service) = challenge.params.get("service") {
                    req = req.query("service", service);
                }
                for scope in &self.scopes {
                    req = req.query("scope", scope);
                }
                if let Some(creds) = &self.credentials {
                    req = req.set("Authorization", &creds.basic_header());
                }
                let resp = match req.call() {
                    Ok(r) => r,
                    Err(ureq::Error::Status(401 | 403, _)) => return Err(self.refused()),
                    Err(ureq::Error::Status(code, _)) => {
                        return Err(RegistryError::Auth(format!(
                            "{}: the token service {} answered {code}",
                            self.registry,
                            url_path(realm)
                        )));
                    }
                    Err(ureq::Error::Transport(t)) => {
                        return Err(RegistryError::Unreachable(format!(
                            "token service {}: {}",
                            url_path(realm),
                            transport_message(&t)
                        )));
                    }
                };
                let doc: serde_json::Value = resp
                    .into_string()
                    .map_err(|e| e.to_string())
                    .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
                    .map_err(|e| {
                        RegistryError::Auth(format!("{}: token response: {e}", self.registry))
                    })?;
                let token = doc
                    .get("token")
                    .or_else(|| doc.get("access_token"))
                    .and_then(|t| t.as_str())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        RegistryError::Auth(format!(
                            "{}: the token response holds no token",
                            self.registry
                        ))
                    })?;
                self.set_auth(format!("Bearer {token}"));
                Ok(())
            }
            other => Err(RegistryError::Auth(format!(
                "{}: unsupported auth scheme '{other}'",
                self.registry
            ))),
        }
    }
}

/// A URL without its query (upload URLs carry opaque state) for messages.
pub fn url_path(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// A transport error in words: its kind, ureq's message and the underlying cause
/// (`Connection Failed: Connect error: Connection refused (os error 111)`).
fn transport_message(t: &ureq::Transport) -> String {
    let mut parts = vec![t.kind().to_string()];
    if let Some(m) = t.message() {
        parts.push(m.to_string());
    }
    let mut source = std::error::Error::source(t);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// The registry's own words from an error response (`CODE: message` of the first error), or
/// the status alone.
pub fn error_text(resp: &Response) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(&resp.body).ok();
    let first = parsed
        .as_ref()
        .and_then(|d| d.get("errors"))
        .and_then(|e| e.as_array())
        .and_then(|e| e.first())
        .map(|e| {
            let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
            let msg = e.get("message").and_then(|m| m.as_str()).unwrap_or("");
            format!("{code}: {msg}")
        });
    match first {
        Some(f) => format!("{} {f}", resp.status),
        None => {
            let body: String = resp.body.split_whitespace().collect::<Vec<_>>().join(" ");
            let body: String = body.chars().take(200).collect();
            if body.is_empty() {
                resp.status.to_string()
            } else {
                format!("{} {body}", resp.status)
            }
        }
    }
}
