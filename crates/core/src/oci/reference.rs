//! Image references, the distribution spec's grammar: a repository name (an optional
//! registry `host[:port]/` and lowercase path components), a tag, and the Docker Hub rule
//! (a name whose first component is not a host is on `docker.io`, a one-component one in
//! `library/`), defined here once for the name containerd records and for a push's
//! destination. [`Reference`] is a push destination `REGISTRY/REPO[:TAG]`: which host to
//! talk to, the repository path, the tag, and whether the host is loopback (the only hosts
//! plain HTTP is used for without `--plain-http`).

use std::net::IpAddr;

/// Why a name, tag or reference is refused: one line naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReferenceError(pub String);

/// Docker Hub's registry name.
pub const DOCKER_HUB: &str = "docker.io";

/// The Docker Hub rule: a name's first component is a registry host when more components
/// follow and it holds a `.` or a `:` or is `localhost`; then `(host, rest)`.
pub fn split_domain(name: &str) -> Option<(&str, &str)> {
    let (first, rest) = name.split_once('/')?;
    (first.contains('.') || first.contains(':') || first == "localhost").then_some((first, rest))
}

/// `(registry, repository)` of a name: on [`DOCKER_HUB`] when it names no host, and in
/// `library/` there when it has one component.
pub fn registry_and_repository(name: &str) -> (String, String) {
    match split_domain(name) {
        Some((host, rest)) => (host.to_string(), rest.to_string()),
        None if name.contains('/') => (DOCKER_HUB.to_string(), name.to_string()),
        None => (DOCKER_HUB.to_string(), format!("library/{name}")),
    }
}

/// The name containerd gives `name:tag` (`io.containerd.image.name`): the name with its
/// registry and repository made explicit by the Docker Hub rule.
pub fn qualified_name(name: &str, tag: &str) -> String {
    let (registry, repository) = registry_and_repository(name);
    format!("{registry}/{repository}:{tag}")
}

fn path_component_ok(c: &str) -> bool {
    // [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(x: u8) -> bool {
    x.is_ascii_lowercase() || x.is_ascii_digit()
}

/// The repository name grammar of the distribution reference spec: an optional registry
/// (`host[:port]/`) and lowercase path components.
pub fn check_name(name: &str) -> Result<(), ReferenceError> {
    let bad = |why: &str| Err(ReferenceError(format!("image name '{name}' {why}")));
    if name.is_empty() {
        return bad("is empty (give --name)");
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    let first = parts[0];
    if split_domain(name).is_some() {
        let (host, port) = first.split_once(':').unwrap_or((first, ""));
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|x| x.is_ascii_alphanumeric() || x == b'.' || x == b'-');
        let port_ok = port.is_empty() && !first.ends_with(':')
            || !port.is_empty() && port.bytes().all(|x| x.is_ascii_digit());
        if !host_ok || !port_ok {
            return bad("has an invalid registry part");
        }
        parts.remove(0);
    } else if name.contains(':') {
        return bad("holds a tag; give the tag with --tag");
    }
    if name.contains('@') {
        return bad("holds a digest; give a name and --tag");
    }
    if parts
        .iter()
        .any(|p| p.bytes().any(|x| x.is_ascii_uppercase()))
    {
        return bad("must be lowercase");
    }
    if let Some(p) = parts.iter().find(|p| !path_component_ok(p)) {
        return bad(&format!(
            "has an invalid component '{p}' (lowercase letters and digits, separated by '.', '_', '__' or '-')"
        ));
    }
    if name.len() > 255 {
        return bad("is longer than 255 characters");
    }
    Ok(())
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn check_tag(tag: &str) -> Result<(), ReferenceError> {
    let bad = |why: &str| Err(ReferenceError(format!("tag '{tag}' {why}")));
    if tag.is_empty() {
        return Err(ReferenceError(
            "the tag is empty: give --tag TAG, or leave --tag out for a hash of the inputs".into(),
        ));
    }
    if tag.len() > 128 {
        return bad("is longer than 128 characters");
    }
    let b = tag.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    if !word(b[0]) || !b.iter().all(|&x| word(x) || x == b'.' || x == b'-') {
        return bad(
            "may hold only letters, digits, '_', '.' and '-', and not start with '.' or '-'",
        );
    }
    Ok(())
}

/// A parsed push destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]` as written (`docker.io` for Docker Hub).
    pub registry: String,
    /// The repository path inside the registry (`team/app`, `library/app`).
    pub repository: String,
    pub tag: Option<String>,
}

impl Reference {
    /// Parse `REGISTRY/REPO[:TAG]`; a name whose first component is not a host (no `.`, no
    /// `:`, not `localhost`) is on Docker Hub, and a one-component name there is in
    /// `library/`. Digest references are refused: a push names a tag.
    pub fn parse(text: &str) -> Result<Reference, ReferenceError> {
        // Whatever precedes an `@` may be a password (`user:secret@host/app`): no message
        // shows it.
        if let Some((before, after)) = text.rsplit_once('@') {
            let digest = after.split_once(':').is_some_and(|(algo, hex)| {
                !algo.is_empty()
                    && algo.bytes().all(|b| b.is_ascii_alphanumeric())
                    && !hex.is_empty()
                    && hex.bytes().all(|b| b.is_ascii_hexdigit())
            });
            return Err(ReferenceError(if digest && !before.contains('@') {
                "destination '…@DIGEST': a push goes to a tag, not a digest (drop the @…)"
                    .to_string()
            } else {
                format!(
                    "destination '…@{after}': credentials do not go in the destination (use --username with --password-stdin, STRATA_REGISTRY_USERNAME/STRATA_REGISTRY_PASSWORD, or docker login)"
                )
            }));
        }
        let bad = |why: &str| ReferenceError(format!("destination '{text}': {why}"));
        if let Some((scheme, _)) = text.split_once("://") {
            return Err(bad(&format!(
                "no '{scheme}://': write REGISTRY/REPO[:TAG] (plain HTTP is chosen by --plain-http)"
            )));
        }
        let (name, tag) = match text.rfind(':') {
            Some(i) if !text[i..].contains('/') => (&text[..i], Some(text[i + 1..].to_string())),
            _ => (text, None),
        };
        let (registry, repository) = registry_and_repository(name);
        if repository.is_empty() {
            return Err(bad("no repository"));
        }
        check_name(&repository).map_err(|e| bad(&e.to_string()))?;
        if let Some(t) = &tag {
            check_tag(t).map_err(|e| bad(&e.to_string()))?;
        }
        Ok(Reference {
            registry,
            repository,
            tag,
        })
    }

    /// The host the API is on (`registry-1.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// The host without its port (`[::1]:5000` → `::1`).
    pub fn hostname(&self) -> &str {
        let h = self.api_host();
        if let Some(rest) = h.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        h.rsplit_once(':').map_or(h, |(host, _)| host)
    }

    /// `localhost`, 127.0.0.0/8 or `::1`.
    pub fn is_loopback(&self) -> bool {
        let host = self.hostname();
        host.eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// `REGISTRY/REPO:TAG` as the user would write it.
    pub fn display_with(&self, tag: &str) -> String {
        format!("{}/{}:{tag}", self.registry, self.repository)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_repos_and_tags() {
        let r = Reference::parse("127.0.0.1:5000/team/app:1.0").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "team/app", Some("1.0"))
        );
        assert!(r.is_loopback());
        assert_eq!(r.hostname(), "127.0.0.1");
        let r = Reference::parse("localhost/app").unwrap();
        assert_eq!((r.registry.as_str(), r.tag.as_deref()), ("localhost", None));
        assert!(r.is_loopback());
        let r = Reference::parse("[::1]:5000/app:x").unwrap();
        assert_eq!(r.hostname(), "::1");
        assert!(r.is_loopback());
        let r = Reference::parse("app:2").unwrap();
        assert_eq!(
            (r.api_host(), r.repository.as_str()),
            ("registry-1.docker.io", "library/app")
        );
        assert!(!r.is_loopback());
        let r = Reference::parse("ghcr.io/o/app").unwrap();
        assert_eq!((r.hostname(), r.is_loopback()), ("ghcr.io", false));
        let r = Reference::parse("127.0.0.2.example.com/app").unwrap();
        assert!(!r.is_loopback());
    }

    #[test]
    fn credentials_in_a_destination_are_refused_and_never_shown() {
        let digest = format!("sha256:{}", "0".repeat(64));
        for text in [
            "alice:pw-1@127.0.0.1:5000/app".to_string(),
            "alice:pw-1@127.0.0.1:5000/app:1".to_string(),
            "https://alice:pw-1@r.example/app".to_string(),
            "alice:p@w-1@r.example/app".to_string(),
            format!("alice:pw-1@r.example/app@{digest}"),
            format!("alice:pw-1/x@{digest}"),
            format!("alice:pw-1@{digest}"),
        ] {
            let msg = Reference::parse(&text).unwrap_err().to_string();
            assert!(
                !msg.contains("pw-1") && !msg.contains("w-1"),
                "{text}: {msg}"
            );
        }
        let msg = Reference::parse("alice:pw-1@r.example/app:1")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("r.example/app:1") && msg.contains("credentials"),
            "{msg}"
        );
        let msg = Reference::parse(&format!("r.example/app@{digest}"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("not a digest"), "{msg}");
        let msg = Reference::parse("https://r.example/app")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("https://") && !msg.contains("--tag"), "{msg}");
    }

    #[test]
    fn the_docker_hub_rule() {
        assert_eq!(qualified_name("app", "1"), "docker.io/library/app:1");
        assert_eq!(qualified_name("me/app", "1"), "docker.io/me/app:1");
        assert_eq!(
            qualified_name("localhost:5000/app", "1"),
            "localhost:5000/app:1"
        );
        assert_eq!(qualified_name("ghcr.io/me/app", "t"), "ghcr.io/me/app:t");
        assert_eq!(qualified_name("localhost/app", "t"), "localhost/app:t");
        // A host needs a component after it; `localhost` alone is a name.
        assert_eq!(
            qualified_name("localhost", "t"),
            "docker.io/library/localhost:t"
        );
        assert_eq!(split_domain("a.b"), None);
        assert_eq!(split_domain("a_b/c"), None);
        assert_eq!(split_domain("h:1/c/d"), Some(("h:1", "c/d")));
        let r = Reference::parse("me/app").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "me/app")
        );
    }

    #[test]
    fn name_and_tag_grammar() {
        for ok in [
            "app",
            "a0",
            "my-app",
            "my--app",
            "a__b",
            "a.b_c",
            "team/app.x",
            "localhost:5000/app",
            "r.io/a/b",
            "r-1.io:443/a",
        ] {
            check_name(ok).unwrap();
        }
        for (bad, why) in [
            ("", "empty"),
            ("App", "must be lowercase"),
            ("app:1", "--tag"),
            ("app@x", "digest"),
            ("-app", "invalid component"),
            ("app-", "invalid component"),
            ("a___b", "invalid component"),
            ("a..b", "invalid component"),
            ("team//app", "invalid component"),
            ("r.io:x/app", "registry part"),
            ("r_io.x:1/app", "registry part"),
            ("r.io:/app", "registry part"),
        ] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(
            check_name(&"a".repeat(256))
                .unwrap_err()
                .to_string()
                .contains("255")
        );
        for ok in ["1", "latest", "_x", "1.0_rc-1", &"x".repeat(128)] {
            check_tag(ok).unwrap();
        }
        for bad in ["", ".x", "-x", "a:b", "a/b", "é", &"x".repeat(129)] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_destinations() {
        for bad in [
            "h.io/App:1",
            "h.io/app@sha256:00",
            "h.io/app:",
            "h.io/",
            "h.io/a:b:c",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }
}
