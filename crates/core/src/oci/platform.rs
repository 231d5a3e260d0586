//! Platforms: the architecture names of the OCI image spec (Go's `GOARCH`), the machine
//! they run on, and the variant a platform is written with when none is asked for.

/// The Docker/OCI architecture name of the machine mkimage runs on.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// The image architectures (Docker/OCI names) strata knows the machine of; see
/// [`architecture_machine`].
pub const ARCHITECTURES: [&str; 7] = [
    "amd64", "arm64", "386", "arm", "ppc64le", "s390x", "riscv64",
];

/// `e_machine` and the Debian multiarch triplet of an image architecture.
pub fn architecture_machine(architecture: &str) -> Option<(u16, &'static str)> {
    Some(match architecture {
        "amd64" => (62, "x86_64-linux-gnu"),
        "arm64" => (183, "aarch64-linux-gnu"),
        "386" => (3, "i386-linux-gnu"),
        "arm" => (40, "arm-linux-gnueabihf"),
        "ppc64le" => (21, "powerpc64le-linux-gnu"),
        "s390x" => (22, "s390x-linux-gnu"),
        "riscv64" => (243, "riscv64-linux-gnu"),
        _ => return None,
    })
}

/// The variant an architecture's platform is written with when none is asked for, as
/// containerd normalises platforms: `arm64` is `arm64/v8`, and Debian's `armhf` is `arm/v7`.
pub fn default_variant(architecture: &str) -> Option<&'static str> {
    match architecture {
        "arm64" => Some("v8"),
        "arm" => Some("v7"),
        _ => None,
    }
}

/// The platform of one image of an index, as the index lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// `linux/arm64/v8`, as `docker --platform` spells it.
    pub fn shown(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }

    /// The platform as engines match it: an architecture without a variant has its default
    /// one ([`default_variant`]: arm64 is arm64/v8).
    pub fn key(&self) -> (String, String, String) {
        let variant = match &self.variant {
            Some(v) => v.clone(),
            None => default_variant(&self.architecture)
                .unwrap_or_default()
                .to_string(),
        };
        (self.os.clone(), self.architecture.clone(), variant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_architecture_has_a_machine() {
        for a in ARCHITECTURES {
            assert!(architecture_machine(a).is_some(), "{a}");
        }
        assert!(ARCHITECTURES.contains(&host_architecture()));
        assert_eq!(
            architecture_machine("amd64"),
            Some((62, "x86_64-linux-gnu"))
        );
        assert_eq!(architecture_machine("x86_64"), None);
        assert_eq!(default_variant("arm64"), Some("v8"));
        assert_eq!(default_variant("amd64"), None);
    }
}
