//! HTTP to one repository of one registry, with auth and limits. Requests go out anonymously
//! until the registry answers 401 with a `WWW-Authenticate` challenge; then the credentials
//! are sent as HTTP basic auth, or traded at the challenge's realm for a bearer token for this
//! repository's scopes, and the request is sent again.
//!
//! Credentials are bound to an origin (scheme, host, port), as Docker and containerd bind
//! them: the `Authorization` value goes only to the registry's own origin, whatever a
//! `Location` or a redirect names, and a 401 from another origin is not answered. The
//! credentials go to a bearer realm (the token server, often on another host) only in the
//! token exchange, and never over plain HTTP to a host that is not loopback unless the user
//! asked for plain HTTP. `Location` values are resolved against the URL that answered (RFC
//! 3986). Every request has a time limit and every response body a size limit, so a broken or
//! hostile registry cannot hold a push forever. The `Authorization` value never appears in a
//! message.

use std::io::{self, Read};
use std::sync::Mutex;
use std::time::Duration;

use url::Url;

use super::RegistryError;
use super::auth::{Credentials, parse_challenge};
use super::reference::Reference;

/// How long the registry may take by default (`--timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of a response body that is read (error bodies: their message is in the first
/// bytes); the rest is left unread and the connection dropped.
pub const MAX_BODY: u64 = 64 * 1024;
/// The most of a token response that is read; a bigger one is refused.
pub const MAX_TOKEN_RESPONSE: u64 = 1 << 20;
/// Redirects followed for one `GET` or `HEAD` (other methods are not redirected).
pub const MAX_REDIRECTS: usize = 5;
/// A request with a body may take the timeout once more for each this many bytes of it.
pub const BYTES_PER_TIMEOUT: u64 = 1 << 20;
/// No request is given longer than this, whatever its size and the timeout.
const LONGEST_REQUEST: Duration = Duration::from_secs(30 * 24 * 3600);
/// Bodies up to this size go over kept-alive connections. Bigger ones (blob uploads) go each
/// on a new connection: the HTTP client bounds writes on new connections only.
const POOLED_BODY: u64 = 64 * 1024;

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

impl Body<'_> {
    fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::Stream { len, .. } => *len,
        }
    }
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

/// A response: status, the headers push reads, and the start of the body (for messages).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// The URL that answered (after redirects).
    pub url: String,
    /// The `Location` resolved against `url`, or why it cannot be used.
    pub location: Option<Result<String, String>>,
    pub digest: Option<String>,
    pub range: Option<String>,
    /// The first bytes of the body (at most the read limit), as text.
    pub body: String,
    /// The body went on past the read limit.
    pub truncated: bool,
}

/// How to talk to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// HTTPS to the registry (else plain HTTP).
    pub tls: bool,
    /// The user allowed plain HTTP to hosts that are not loopback (`--plain-http`): then
    /// credentials may go to a plain-HTTP token realm too.
    pub plain_http: bool,
    /// How long connecting, and a request with its answer, may take (a request with a body
    /// gets it once more per [`BYTES_PER_TIMEOUT`] bytes of it).
    pub timeout: Duration,
}

/// A client for one repository.
#[derive(Debug)]
pub struct Client {
    /// Kept-alive connections, for requests without a big body.
    pooled: ureq::Agent,
    /// A new connection per request, for blob uploads.
    fresh: ureq::Agent,
    /// The registry's API root (`https://host:port/`): its origin is the only one that gets
    /// the `Authorization` value.
    base: Url,
    registry: String,
    scopes: Vec<String>,
    credentials: Option<Credentials>,
    opts: ClientOptions,
    authorization: Mutex<Option<String>>,
}

impl Client {
    /// `scopes` are the token scopes asked for (`repository:team/app:pull,push`, and
    /// `repository:SOURCE:pull` for mounts).
    pub fn new(
        reference: &Reference,
        opts: ClientOptions,
        scopes: Vec<String>,
        credentials: Option<Credentials>,
    ) -> Result<Client, RegistryError> {
        let scheme = if opts.tls { "https" } else { "http" };
        let base = Url::parse(&format!("{scheme}://{}/", reference.api_host())).map_err(|e| {
            RegistryError::Invalid(format!("registry '{}': {e}", reference.registry))
        })?;
        let agent = |pooled: bool| {
            let mut builder = ureq::AgentBuilder::new()
                .timeout_connect(opts.timeout)
                .timeout_read(opts.timeout)
                .timeout_write(opts.timeout)
                .redirects(0)
                .user_agent(concat!("strata-push/", env!("CARGO_PKG_VERSION")));
            if !pooled {
                builder = builder
                    .max_idle_connections(0)
                    .max_idle_connections_per_host(0);
            }
            builder.build()
        };
        Ok(Client {
            pooled: agent(true),
            fresh: agent(false),
            base,
            registry: reference.registry.clone(),
            scopes,
            credentials,
            opts,
            authorization: Mutex::new(None),
        })
    }

    /// The absolute URL of an API path (`/v2/…`) on the registry.
    pub fn url(&self, path: &str) -> String {
        match self.base.join(path) {
            Ok(u) => u.into(),
            Err(_) => format!("{}{path}", self.base.as_str().trim_end_matches('/')),
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

    /// The `Authorization` value for a request to `url`: only on the registry's origin.
    fn authorization_for(&self, url: &Url) -> Option<String> {
        if same_origin(url, &self.base) {
            self.current_auth()
        } else {
            None
        }
    }

    /// How long a request with a body of `len` bytes may take.
    fn time_allowed(&self, len: u64) -> Duration {
        let extra = u32::try_from(len / BYTES_PER_TIMEOUT).unwrap_or(u32::MAX);
        self.opts
            .timeout
            .saturating_mul(extra.saturating_add(1))
            .min(LONGEST_REQUEST)
    }

    /// Send a request (following redirects of `GET` and `HEAD`); a 401 from the registry's
    /// origin is answered once (credentials or a token) and the request sent again. Every
    /// other status is returned for the caller to judge.
    pub fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &Body,
    ) -> Result<Response, RegistryError> {
        let mut authenticated = false;
        loop {
            let auth = |u: &Url| self.authorization_for(u);
            let (response, challenge) = self.follow(method, url, headers, body, &auth, MAX_BODY)?;
            if response.status != 401 {
                return Ok(response);
            }
            if !Url::parse(&response.url).is_ok_and(|u| same_origin(&u, &self.base)) {
                return Err(RegistryError::Auth(format!(
                    "{}: {} asks for credentials, but it is not the registry's origin ({}): credentials go only there",
                    self.registry,
                    shown_url(&response.url),
                    shown_url(self.base.as_str()).trim_end_matches('/'),
                )));
            }
            if authenticated {
                return Err(self.refused());
            }
            let challenge = challenge.ok_or_else(|| {
                RegistryError::Auth(format!(
                    "{}: 401 Unauthorized without a WWW-Authenticate challenge",
                    self.registry
                ))
            })?;
            self.authenticate(&challenge)?;
            authenticated = true;
        }
    }

    /// One request, and the redirects of a `GET` or `HEAD` (each target resolved against the
    /// URL that answered; `auth` says what `Authorization` each URL gets).
    fn follow(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &Body,
        auth: &dyn Fn(&Url) -> Option<String>,
        limit: u64,
    ) -> Result<(Response, Option<String>), RegistryError> {
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let (response, challenge) = self.send_once(method, &url, headers, body, auth, limit)?;
            let redirect = matches!(response.status, 301 | 302 | 303 | 307 | 308)
                && matches!(method, "GET" | "HEAD");
            match &response.location {
                Some(Ok(next)) if redirect => url = next.clone(),
                _ => return Ok((response, challenge)),
            }
        }
        Err(RegistryError::Registry(format!(
            "{method} {}: more than {MAX_REDIRECTS} redirects",
            shown_url(&url)
        )))
    }

    fn send_once(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &Body,
        auth: &dyn Fn(&Url) -> Option<String>,
        limit: u64,
    ) -> Result<(Response, Option<String>), RegistryError> {
        let parsed = Url::parse(url).map_err(|e| {
            RegistryError::Registry(format!("{method} {}: not a URL: {e}", shown_url(url)))
        })?;
        let allowed = self.time_allowed(body.len());
        let agent = if body.len() > POOLED_BODY {
            &self.fresh
        } else {
            &self.pooled
        };
        let mut req = agent.request_url(method, &parsed).timeout(allowed);
        for (k, v) in headers {
            req = req.set(k, v);
        }
        if let Some(value) = auth(&parsed) {
            req = req.set("Authorization", &value);
        }
        let result = match body {
            Body::Empty => req.call(),
            Body::Bytes(b) => req.send_bytes(b),
            Body::Stream { open, len } => {
                let reader = open().map_err(|e| {
                    RegistryError::Registry(format!("{method} {}: {e}", shown_url(url)))
                })?;
                req.set("Content-Length", &len.to_string()).send(reader)
            }
        };
        let failed = |what: String| {
            RegistryError::Unreachable(format!("{method} {}: {what}", shown_url(url)))
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => {
                return Err(failed(transport_message(&t, allowed, self.opts.timeout)));
            }
        };
        let header = |name: &str| resp.header(name).map(str::to_string);
        let challenge = header("WWW-Authenticate");
        let location = resp.header("Location").map(|l| {
            resolve(&parsed, l).map(String::from).map_err(|why| {
                format!(
                    "the answer's Location '{}' {why}",
                    l.chars().take(100).collect::<String>()
                )
            })
        });
        let mut out = Response {
            status: resp.status(),
            url: parsed.to_string(),
            location,
            digest: header("Docker-Content-Digest"),
            range: header("Range"),
            body: String::new(),
            truncated: false,
        };
        let mut raw = Vec::new();
        match resp.into_reader().take(limit + 1).read_to_end(&mut raw) {
            Err(e) if is_timeout(&e) => {
                return Err(failed(timeout_text(false, allowed, self.opts.timeout)));
            }
            // A body cut short is only a shorter message.
            _ => {}
        }
        if raw.len() as u64 > limit {
            raw.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            out.truncated = true;
        }
        out.body = String::from_utf8_lossy(&raw).into_owned();
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
                let token = self.fetch_token(realm, challenge.params.get("service"))?;
                self.set_auth(format!("Bearer {token}"));
                Ok(())
            }
            other => Err(RegistryError::Auth(format!(
                "{}: unsupported auth scheme '{other}'",
                self.registry
            ))),
        }
    }

    /// Trade the credentials (or nothing) for a token at the realm. The credentials go to
    /// the realm's origin only, and over plain HTTP only to loopback or with `--plain-http`.
    fn fetch_token(&self, realm: &str, service: Option<&String>) -> Result<String, RegistryError> {
        let bad = |why: String| RegistryError::Auth(format!("{}: {why}", self.registry));
        let mut url = Url::parse(realm)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| bad(format!("the bearer realm '{realm}' is not an http(s) URL")))?;
        url.set_fragment(None);
        let _ = url.set_username("");
        let _ = url.set_password(None);
        if self.credentials.is_some() && !credentials_may_go_to(&url, self.opts.plain_http) {
            return Err(bad(format!(
                "the token service {} is plain HTTP on a host that is not loopback: the credentials are not sent there (--plain-http allows it)",
                shown_url(url.as_str())
            )));
        }
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            for scope in &self.scopes {
                query.append_pair("scope", scope);
            }
        }
        let basic = self.credentials.as_ref().map(Credentials::basic_header);
        let realm_url = url.clone();
        let auth = |u: &Url| basic.clone().filter(|_| same_origin(u, &realm_url));
        let (resp, _) = self.follow(
            "GET",
            url.as_str(),
            &[],
            &Body::Empty,
            &auth,
            MAX_TOKEN_RESPONSE,
        )?;
        match resp.status {
            200 => {}
            401 | 403 => return Err(self.refused()),
            _ => {
                return Err(bad(format!(
                    "the token service {} answered {}",
                    shown_url(url.as_str()),
                    error_text(&resp)
                )));
            }
        }
        if resp.truncated {
            return Err(bad(format!(
                "the token response is bigger than {} KiB",
                MAX_TOKEN_RESPONSE / 1024
            )));
        }
        let doc: serde_json::Value = serde_json::from_str(&resp.body)
            .map_err(|e| bad(format!("the token response is not JSON: {e}")))?;
        let token = doc
            .get("token")
            .or_else(|| doc.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("the token response holds no token".to_string()))?;
        // A token goes into a header: visible ASCII only (the HTTP client would refuse it
        // and show it in its message).
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(
                "the token response holds a token that is not visible ASCII".to_string(),
            ));
        }
        Ok(token.to_string())
    }
}

/// Resolve a `Location` (or any URI reference) against the URL that answered, as RFC 3986
/// section 5 says. Only `http` and `https` results with a host are usable; the fragment and
/// any user info are dropped.
pub fn resolve(base: &Url, reference: &str) -> Result<Url, String> {
    let mut url = base
        .join(reference.trim())
        .map_err(|e| format!("is not a URL reference ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("has the scheme '{}', not http(s)", url.scheme()));
    }
    if url.host().is_none() {
        return Err("names no host".to_string());
    }
    url.set_fragment(None);
    // User info in a URL would become an `Authorization` header of its own.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok(url)
}

/// The same origin: scheme, host and port (the scheme's default port when none is written).
pub fn same_origin(a: &Url, b: &Url) -> bool {
    a.origin().is_tuple() && a.origin() == b.origin()
}

/// Whether credentials may be sent to `url`: over TLS, to a loopback host, or anywhere when
/// the user allowed plain HTTP.
pub fn credentials_may_go_to(url: &Url, plain_http_allowed: bool) -> bool {
    url.scheme() == "https" || plain_http_allowed || is_loopback(url)
}

/// `localhost`, 127.0.0.0/8 or `::1`.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A URL for messages: without its query (upload URLs carry opaque state), fragment or
/// user info.
pub fn shown_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.into()
        }
        Err(_) => url.split(['?', '#']).next().unwrap_or(url).to_string(),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// `timed out: …` naming the time allowed and the flag that sets it.
fn timeout_text(connecting: bool, allowed: Duration, timeout: Duration) -> String {
    let what = if connecting {
        "could not connect within".to_string()
    } else {
        "no complete answer within".to_string()
    };
    let secs = |d: Duration| {
        let s = d.as_secs_f64();
        if s.fract() == 0.0 {
            format!("{s:.0} s")
        } else {
            format!("{s:.1} s")
        }
    };
    if connecting || allowed == timeout {
        format!("timed out: {what} {} (--timeout)", secs(timeout))
    } else {
        format!(
            "timed out: {what} {} (--timeout {}, once more per MiB sent)",
            secs(allowed),
            secs(timeout)
        )
    }
}

/// A transport error in words, each part once: its kind, the HTTP client's message and the
/// underlying causes (`Connection Failed: Connect error: Connection refused (os error 111)`),
/// or what timed out.
fn transport_message(t: &ureq::Transport, allowed: Duration, timeout: Duration) -> String {
    let mut source = std::error::Error::source(t);
    while let Some(s) = source {
        if s.downcast_ref::<io::Error>().is_some_and(is_timeout) {
            let connecting = t.kind() == ureq::ErrorKind::ConnectionFailed;
            return timeout_text(connecting, allowed, timeout);
        }
        source = s.source();
    }
    let mut parts: Vec<String> = Vec::new();
    let mut add = |text: &str| {
        for part in text.split(": ") {
            let part = part.trim();
            if !part.is_empty() && !parts.iter().any(|p| p == part) {
                parts.push(part.to_string());
            }
        }
    };
    add(&t.kind().to_string());
    if let Some(m) = t.message() {
        add(m);
    }
    let mut source = std::error::Error::source(t);
    while let Some(s) = source {
        add(&s.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn resolved(base: &str, reference: &str) -> String {
        resolve(&url(base), reference).unwrap().to_string()
    }

    #[test]
    fn locations_resolve_as_rfc_3986_says() {
        let post = "http://127.0.0.1:7111/v2/team/app/blobs/uploads/";
        // Absolute, absolute-path, relative with `..`, a query only, a fragment dropped.
        assert_eq!(
            resolved(
                post,
                "http://127.0.0.1:7111/v2/team/app/blobs/uploads/u1?_state=x"
            ),
            "http://127.0.0.1:7111/v2/team/app/blobs/uploads/u1?_state=x"
        );
        assert_eq!(
            resolved(post, "/v2/team/app/blobs/uploads/u1?_state=x"),
            "http://127.0.0.1:7111/v2/team/app/blobs/uploads/u1?_state=x"
        );
        assert_eq!(resolved(post, "u1?a=1&b=2"), format!("{post}u1?a=1&b=2"));
        assert_eq!(
            resolved(post, "../../up"),
            "http://127.0.0.1:7111/v2/team/app/up"
        );
        assert_eq!(
            resolved(post, "../../../../../../up"),
            "http://127.0.0.1:7111/up",
            "`..` above the root stays at the root"
        );
        assert_eq!(
            resolved(&format!("{post}u1?_state=old"), "?_state=new"),
            format!("{post}u1?_state=new")
        );
        assert_eq!(resolved(post, "u1#frag"), format!("{post}u1"));
        assert_eq!(
            resolved(post, "http://u:p@127.0.0.1:7111/v2/x"),
            "http://127.0.0.1:7111/v2/x"
        );
        assert_eq!(
            resolved(post, "//other.example:8080/x"),
            "http://other.example:8080/x",
            "a network-path reference keeps the scheme only"
        );
        // RFC 3986 section 5.4.1, normal examples.
        let base = "http://a/b/c/d;p?q";
        for (reference, target) in [
            ("g", "http://a/b/c/g"),
            ("./g", "http://a/b/c/g"),
            ("g/", "http://a/b/c/g/"),
            ("/g", "http://a/g"),
            ("//g", "http://g/"),
            ("?y", "http://a/b/c/d;p?y"),
            ("g?y", "http://a/b/c/g?y"),
            ("#s", "http://a/b/c/d;p?q"),
            (";x", "http://a/b/c/;x"),
            ("", "http://a/b/c/d;p?q"),
            (".", "http://a/b/c/"),
            ("..", "http://a/b/"),
            ("../g", "http://a/b/g"),
            ("../..", "http://a/"),
            ("../../g", "http://a/g"),
        ] {
            assert_eq!(resolved(base, reference), target, "{reference}");
        }
        // Unusable: another scheme, no host.
        assert!(resolve(&url(post), "file:///etc/shadow").is_err());
        assert!(resolve(&url(post), "javascript:alert(1)").is_err());
        assert!(resolve(&url(post), "ftp://h/x").is_err());
        assert!(resolve(&url(post), "http://").is_err());
    }

    #[test]
    fn origins() {
        let registry = url("https://r.example/");
        for same in [
            "https://r.example/v2/x",
            "https://R.EXAMPLE:443/v2/x?y",
            "https://user:pw@r.example/z",
        ] {
            assert!(same_origin(&url(same), &registry), "{same}");
        }
        for other in [
            "http://r.example/v2/x",
            "https://r.example:5000/v2/x",
            "https://evil.example/v2/x",
            "https://r.example.evil.example/v2/x",
        ] {
            assert!(!same_origin(&url(other), &registry), "{other}");
        }
        assert!(same_origin(
            &url("http://127.0.0.1:80/x"),
            &url("http://127.0.0.1/")
        ));
        assert!(!same_origin(
            &url("http://127.0.0.1:7112/x"),
            &url("http://127.0.0.1:7111/")
        ));
    }

    #[test]
    fn credentials_over_plain_http_only_to_loopback_or_when_allowed() {
        assert!(credentials_may_go_to(
            &url("https://auth.example/token"),
            false
        ));
        assert!(credentials_may_go_to(
            &url("http://127.0.0.1:5000/token"),
            false
        ));
        assert!(credentials_may_go_to(&url("http://localhost/token"), false));
        assert!(credentials_may_go_to(
            &url("http://[::1]:5000/token"),
            false
        ));
        assert!(!credentials_may_go_to(
            &url("http://auth.example/token"),
            false
        ));
        assert!(!credentials_may_go_to(&url("http://10.0.0.1/token"), false));
        assert!(!credentials_may_go_to(
            &url("http://127.0.0.1.evil/token"),
            false
        ));
        assert!(credentials_may_go_to(
            &url("http://auth.example/token"),
            true
        ));
    }

    #[test]
    fn a_plain_http_realm_elsewhere_gets_no_credentials() {
        let reference = Reference::parse("r.example/team/app").unwrap();
        let opts = ClientOptions {
            tls: true,
            plain_http: false,
            timeout: Duration::from_secs(1),
        };
        let creds = Credentials::new("alice", "pw-1", "the environment");
        let client = Client::new(&reference, opts, vec![], Some(creds)).unwrap();
        // Refused before any request is made (auth.example is never looked up).
        let e = client
            .authenticate(r#"Bearer realm="http://auth.example/token",service="r""#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("plain HTTP") && !e.contains("pw-1"), "{e}");
        let e = client
            .authenticate(r#"Bearer realm="file:///etc/shadow""#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an http(s) URL"), "{e}");
        assert!(client.current_auth().is_none());
    }

    #[test]
    fn urls_in_messages_carry_no_query_or_user_info() {
        assert_eq!(
            shown_url("http://u:pw@127.0.0.1:1/v2/a/blobs/uploads/x?_state=s#f"),
            "http://127.0.0.1:1/v2/a/blobs/uploads/x"
        );
        assert_eq!(shown_url("not a url?x"), "not a url");
    }

    #[test]
    fn transport_messages_say_each_thing_once() {
        // What the HTTP client makes of a read that timed out in the status line: an I/O
        // error wrapping its own error wrapping the I/O error.
        let inner: ureq::Error = io::Error::new(io::ErrorKind::TimedOut, "timed out").into();
        let wrapped: ureq::Error = io::Error::new(io::ErrorKind::TimedOut, inner).into();
        let ureq::Error::Transport(t) = wrapped else {
            panic!("a transport error")
        };
        let s = Duration::from_secs(2);
        assert_eq!(
            transport_message(&t, s, s),
            "timed out: no complete answer within 2 s (--timeout)"
        );
        assert_eq!(
            transport_message(&t, 3 * s, s),
            "timed out: no complete answer within 6 s (--timeout 2 s, once more per MiB sent)"
        );
        // Not a timeout: each part once.
        let inner: ureq::Error =
            io::Error::new(io::ErrorKind::ConnectionReset, "connection reset").into();
        let wrapped: ureq::Error = io::Error::new(io::ErrorKind::ConnectionReset, inner).into();
        let ureq::Error::Transport(t) = wrapped else {
            panic!("a transport error")
        };
        assert_eq!(
            transport_message(&t, s, s),
            "Network Error: connection reset"
        );
    }
}
