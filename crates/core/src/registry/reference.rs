//! The destination `REGISTRY/REPO[:TAG]`: which host to talk to (Docker Hub when the first
//! component is not a host), the repository path, the tag, and whether the host is loopback
//! (the only hosts plain HTTP is used for without `--plain-http`).

use std::net::IpAddr;

use super::RegistryError;
use crate::image::check::{check_name, check_tag};

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
    pub fn parse(text: &str) -> Result<Reference, RegistryError> {
        let bad = |why: &str| RegistryError::Invalid(format!("destination '{text}': {why}"));
        if text.contains('@') {
            return Err(bad(
                "a push goes to a tag, not a digest (drop the @sha256:…)",
            ));
        }
        let (name, tag) = match text.rfind(':') {
            Some(i) if !text[i..].contains('/') => (&text[..i], Some(text[i + 1..].to_string())),
            _ => (text, None),
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ if name.contains('/') => ("docker.io".to_string(), name.to_string()),
            _ => ("docker.io".to_string(), format!("library/{name}")),
        };
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
        if self.registry == "docker.io" {
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
