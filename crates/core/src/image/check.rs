//! Pre-flight checks, so bad input fails with one clear line before anything is written
//! instead of with a loader's confusing error later: the image name and tag grammar, the
//! layers JSON, paths inside the store only and without `..`, and times.

use super::ImageError;
use crate::oci::reference;

/// Parse the layers JSON: a list of lists of absolute store paths, or the object
/// `mklayers --explain` prints (its `layers` member).
pub fn parse_layers(text: &str) -> Result<Vec<Vec<String>>, ImageError> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Shape {
        List(Vec<Vec<String>>),
        Explained { layers: Vec<Vec<String>> },
    }
    let bad = |e: &dyn std::fmt::Display| {
        ImageError::Invalid(format!(
            "layers JSON: {e} (expected a list of lists of store paths)"
        ))
    };
    // Syntax errors first, with their line and column.
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(&e))?;
    match serde_json::from_value(value) {
        Ok(Shape::List(l)) | Ok(Shape::Explained { layers: l }) => Ok(l),
        Err(_) => Err(bad(&"wrong shape")),
    }
}

/// The repository name grammar (see [`crate::oci::reference::check_name`]).
pub fn check_name(name: &str) -> Result<(), ImageError> {
    reference::check_name(name).map_err(|e| ImageError::Invalid(e.to_string()))
}

/// A tag (see [`crate::oci::reference::check_tag`]).
pub fn check_tag(tag: &str) -> Result<(), ImageError> {
    reference::check_tag(tag).map_err(|e| ImageError::Invalid(e.to_string()))
}

/// A path from the input must not walk out of where it is with `..` (or `.`) components.
pub fn check_no_dotdot(path: &str, what: &str) -> Result<(), ImageError> {
    if path.split('/').any(|c| c == ".." || c == ".") {
        return Err(ImageError::Invalid(format!(
            "{what} '{path}' has a '.' or '..' component"
        )));
    }
    Ok(())
}

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

/// Seconds since the epoch as RFC 3339 in UTC (`1970-01-01T00:00:01Z`). Times outside the
/// years 0000–9999 (which [`parse_time`] never returns) are clamped to its bounds.
pub fn format_time(epoch: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(epoch).unwrap_or(if epoch < 0 {
        time::PrimitiveDateTime::MIN.assume_utc()
    } else {
        time::PrimitiveDateTime::MAX.assume_utc()
    });
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A time: `now`, `@SECONDS`, or RFC 3339 (`2024-05-01T12:00:00Z`, `…+02:00`, fractions
/// dropped), parsed by the `time` crate: a date that does not exist (`2024-02-31`) or any
/// other malformed text is an error, never a panic. Returns seconds since the epoch, within
/// the years 0000–9999.
pub fn parse_time(text: &str, what: &str) -> Result<i64, ImageError> {
    let bad = || {
        ImageError::Invalid(format!(
            "{what} '{text}' is not a time (RFC 3339 like 1970-01-01T00:00:01Z, @SECONDS or now)"
        ))
    };
    let seconds = if text == "now" {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| bad())?;
        i64::try_from(now.as_secs()).map_err(|_| bad())?
    } else if let Some(secs) = text.strip_prefix('@') {
        secs.parse().map_err(|_| bad())?
    } else {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map_err(|_| bad())?
            .unix_timestamp()
    };
    let in_range = time::OffsetDateTime::from_unix_timestamp(seconds)
        .is_ok_and(|t| (0..=9999).contains(&t.year()));
    if !in_range {
        return Err(bad());
    }
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "app",
            "my-app",
            "a__b",
            "team/app.x",
            "localhost:5000/app",
            "r.io/a/b",
        ] {
            check_name(ok).unwrap();
        }
        let err = |n: &str| check_name(n).unwrap_err().to_string();
        assert!(err("App").contains("must be lowercase"));
        assert!(err("app:1").contains("--tag"));
        assert!(err("-app").contains("invalid component"));
        assert!(err("").contains("empty"));
    }

    #[test]
    fn tags() {
        check_tag("1.0_rc-1").unwrap();
        assert!(check_tag("").unwrap_err().to_string().contains("empty"));
        assert!(check_tag(".x").is_err());
        assert!(check_tag(&"x".repeat(129)).is_err());
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z", "t").unwrap(), 1);
        assert_eq!(parse_time("@1700000000", "t").unwrap(), 1_700_000_000);
        assert_eq!(
            parse_time("2024-02-29T12:30:00.5+02:00", "t").unwrap(),
            parse_time("2024-02-29T10:30:00Z", "t").unwrap()
        );
        assert_eq!(format_time(1_709_202_600), "2024-02-29T10:30:00Z");
        assert!(parse_time("yesterday", "t").is_err());
        assert!(parse_time("2024-13-01T00:00:00Z", "t").is_err());
        // Dates that do not exist, and text a byte-slicing parser would panic on.
        for bad in [
            "2024-02-31T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "1970-01-01T00:00:0\u{e9}",
            "1970-01-01T00:00:0\u{e9}Z",
            "\u{e9}\u{e9}\u{e9}\u{e9}-01-01T00:00:00Z",
            "1970-01-01T24:00:00Z",
            "@99999999999999999",
            "@-99999999999999",
            "",
        ] {
            assert!(parse_time(bad, "t").is_err(), "{bad}");
        }
        assert_eq!(
            parse_time("2024-02-29t10:30:00z", "t").unwrap(),
            1_709_202_600
        );
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(253_402_300_799), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn dotdot() {
        check_no_dotdot("/nix/store/abc-x/bin", "p").unwrap();
        assert!(check_no_dotdot("/nix/store/../etc", "p").is_err());
    }

    #[test]
    fn layers_json() {
        assert_eq!(parse_layers(r#"[["/a"],["/b","/c"]]"#).unwrap().len(), 2);
        let explained = r#"{"algorithm":"popularity","layers":[["/a"]],"paths":[]}"#;
        assert_eq!(parse_layers(explained).unwrap(), [["/a"]]);
        assert!(
            parse_layers("[[")
                .unwrap_err()
                .to_string()
                .contains("line 1")
        );
        assert!(
            parse_layers("[\"/a\"]")
                .unwrap_err()
                .to_string()
                .contains("list of lists")
        );
    }
}
