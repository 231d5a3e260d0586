//! Whose fault an error is: the command line's (a usage error, exit 2) or the work's (a
//! failure, exit 1). A property of each error type, so a tool's `?` carries it to the exit
//! code rather than each tool deciding it again.

/// Exit code 1: the work failed (bad input data, I/O, a registry refusing).
pub const FAILURE: u8 = 1;
/// Exit code 2: the command line asked for something that cannot be (a bad flag or operand).
pub const USAGE: u8 = 2;

/// An error that knows which exit code it ends a tool with.
pub trait Exit {
    /// Whether the command line is at fault. Most errors are failures.
    fn is_usage(&self) -> bool {
        false
    }

    /// The exit code: [`USAGE`] or [`FAILURE`].
    fn exit_code(&self) -> u8 {
        if self.is_usage() { USAGE } else { FAILURE }
    }
}

/// Errors that are failures whatever the input (their usage cases, if any, are told apart by
/// the caller, which knows whether the text came from the command line).
macro_rules! failures {
    ($($ty:ty),* $(,)?) => { $(impl Exit for $ty {})* };
}

failures!(
    std::io::Error,
    std::fmt::Error,
    std::string::FromUtf8Error,
    serde_json::Error,
    crate::nix::hash::HashParseError,
    crate::nix::nix32::Nix32Error,
    crate::nix::store_path::StorePathError,
    crate::nix::closure::ClosureError,
    crate::nix::content_address::ContentAddressError,
    crate::nix::nar::NarError,
    crate::store::StoreError,
    crate::layering::LayeringError,
    crate::deb::DebError,
    crate::deb::index::IndexError,
    crate::deb::lock::LockError,
    crate::deb::lock::BuildError,
    crate::deb::lock::LockingError,
    crate::deb::resolve::ResolveError,
    crate::deb::version::VersionError,
    crate::deb::control::ControlError,
    crate::deb::ar::ArError,
    crate::image::ImageError,
    crate::registry::RegistryError,
    crate::oci::digest::DigestError,
    crate::oci::reference::ReferenceError,
    crate::oci::layout::LayoutError,
    crate::oci::time::TimeError,
    crate::layering::LayersJsonError,
);

/// Every bad flag of a makeWrapper command line is the command line's fault.
impl Exit for crate::wrapper::flags::FlagError {
    fn is_usage(&self) -> bool {
        true
    }
}

impl Exit for crate::wrapper::WrapperError {
    fn is_usage(&self) -> bool {
        crate::wrapper::WrapperError::is_usage(self)
    }
}

impl Exit for crate::wrapper::operands::OperandError {
    fn is_usage(&self) -> bool {
        crate::wrapper::operands::OperandError::is_usage(self)
    }
}

impl Exit for crate::rootfs::RootfsError {
    fn is_usage(&self) -> bool {
        crate::rootfs::RootfsError::is_usage(self)
    }
}

impl Exit for crate::manifest::ManifestError {
    fn is_usage(&self) -> bool {
        crate::manifest::ManifestError::is_usage(self)
    }
}

impl Exit for crate::wrapper::operands::InstallError {
    fn is_usage(&self) -> bool {
        match self {
            crate::wrapper::operands::InstallError::Wrapper(e) => e.is_usage(),
            crate::wrapper::operands::InstallError::Store(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::ManifestError;
    use crate::wrapper::flags::FlagError;

    #[test]
    fn usage_errors_say_so_and_failures_do_not() {
        let usage = ManifestError::NoInput {
            name: "bash".into(),
            known: "none".into(),
        };
        assert!(Exit::is_usage(&usage));
        assert_eq!(Exit::exit_code(&usage), USAGE);
        let failure = ManifestError::Invalid {
            input: "m.json".into(),
            message: "bad".into(),
        };
        assert!(!Exit::is_usage(&failure));
        assert_eq!(Exit::exit_code(&failure), FAILURE);
        assert_eq!(Exit::exit_code(&FlagError::Unknown("--nope".into())), USAGE);
        let io = std::io::Error::other("disk on fire");
        assert_eq!(io.exit_code(), FAILURE);
    }
}
