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
        // Whatever precedes an `@` may be a password (`user:secret@host/app`): no message
        // shows it.
        if let Some((before, after)) = text.rsplit_once('@') {
            let digest = after.split_once(':').is_some_and(|(algo, hex)| {
                !algo.is_empty()
                    && algo.bytes().all(|b| b.is_ascii_alphanumeric())
                    && !hex.is_empty()
                    && hex.bytes().all(|b| b.is_ascii_hexdigit())
            });
            return Err(RegistryError::Invalid(if digest && !before.contains('@') {
                "destination '…@DIGEST': a push goes to a tag, not a digest (drop the @…)"
                    .to_string()
            } else {
                format!(
                    "destination '…@{after}': credentials do not go in the destination (use --username with --password-stdin, STRATA_REGISTRY_USERNAME/STRATA_REGISTRY_PASSWORD, or docker login)"
                )
            }));
        }
        let bad = |why: &str| RegistryError::Invalid(format!("destination '{text}': {why}"));
        if let Some((scheme, _)) = text.split_once("://") {
            return Err(bad(&format!(
                "no '{scheme}://': write REGISTRY/REPO[:TAG] (plain HTTP is chosen by --plain-http)"
            )));
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
