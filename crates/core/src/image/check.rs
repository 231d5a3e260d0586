//! Pre-flight checks, so bad input fails with one clear line before anything is written
//! instead of with a loader's confusing error later: the image name and tag grammar, the
//! layers JSON, paths inside the store only and without `..`, and times. The grammars
//! themselves are formats and live in [`crate::oci`] and [`crate::layering`]; here they
//! answer with an [`ImageError`].

use super::ImageError;
use crate::oci::reference;

/// Parse the layers JSON (see [`crate::layering::parse_layers`]).
pub fn parse_layers(text: &str) -> Result<Vec<Vec<String>>, ImageError> {
    crate::layering::parse_layers(text).map_err(|e| ImageError::Invalid(e.to_string()))
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

pub use crate::oci::platform::{
    ARCHITECTURES, architecture_machine, default_variant, host_architecture,
};
pub use crate::oci::time::format_time;

/// A time (see [`crate::oci::time::parse_time`]); `what` names it in the message.
pub fn parse_time(text: &str, what: &str) -> Result<i64, ImageError> {
    crate::oci::time::parse_time(text, what).map_err(|e| ImageError::Invalid(e.to_string()))
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
    fn dotdot() {
        check_no_dotdot("/nix/store/abc-x/bin", "p").unwrap();
        assert!(check_no_dotdot("/nix/store/../etc", "p").is_err());
    }
}
