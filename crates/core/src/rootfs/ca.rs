//! A CA bundle from Debian's `ca-certificates` package. Debian builds
//! `/etc/ssl/certs/ca-certificates.crt` in a maintainer script (`update-ca-certificates`),
//! which strata never runs; this concatenates the package's certificates the same way, into
//! a store path of its own that references nothing (the image does not need the package).
//!
//! The package is read below its store path without following any symlink (a `.crt` that is
//! a symlink is refused, so nothing outside the package is read), with bounded sizes.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use super::{RootfsError, add_tree, write_file};
use crate::image::beneath::{Node, list, open_dir_below, open_entry, open_root};
use crate::nix::path_info::PathInfo;
use crate::nix::store_path::AbsStorePath;
use crate::store::Store;

/// The store path name of the generated tree.
pub const NAME: &str = "ca-bundle";
/// Where the bundle is, in the tree and so in the image.
pub const BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";
/// Where the certificates are in the package.
pub const CERT_DIR: &str = "usr/share/ca-certificates";
/// The largest certificate file read (real ones are a few KiB).
pub const MAX_CERT: u64 = 256 << 10;
/// The largest bundle made.
pub const MAX_BUNDLE: u64 = 16 << 20;
/// How deep below [`CERT_DIR`] directories are walked.
const MAX_DEPTH: usize = 8;

/// The bundle: every `*.crt` below `usr/share/ca-certificates` of the package at `pkg_dir`
/// (a physical directory, opened from its parent without following it if it is a symlink),
/// sorted by their path below that directory (byte order, as `LC_ALL=C sort`), each ending
/// with a newline. `shown` names the package in messages.
pub fn bundle(pkg_dir: &Path, shown: &str) -> Result<Vec<u8>, RootfsError> {
    let io_err = |rel: &str| {
        let path = format!("{shown}/{rel}");
        move |source: std::io::Error| RootfsError::Io {
            path: path.into(),
            source,
        }
    };
    let parent = pkg_dir.parent().unwrap_or(Path::new("/"));
    let base = pkg_dir.file_name().map(Path::new).unwrap_or(Path::new("."));
    let top = open_root(parent).map_err(io_err(""))?;
    let pkg = open_dir_below(&top, base).map_err(io_err(""))?;
    let dir = open_dir_below(&pkg, Path::new(CERT_DIR)).map_err(io_err(CERT_DIR))?;
    let mut certs = Vec::new();
    collect(&dir, CERT_DIR, shown, 0, &mut certs)?;
    // Sorted by their relative paths' bytes, whatever the walk order was.
    certs.sort();
    if certs.is_empty() {
        return Err(RootfsError::NoCertificates(shown.to_string()));
    }
    let mut out = Vec::new();
    for (_, mut pem) in certs {
        if !pem.ends_with(b"\n") {
            pem.push(b'\n');
        }
        out.extend_from_slice(&pem);
        if out.len() as u64 > MAX_BUNDLE {
            return Err(RootfsError::BadCertificate {
                path: format!("{shown}/{CERT_DIR}"),
                reason: format!("the certificates exceed {MAX_BUNDLE} bytes in all"),
            });
        }
    }
    Ok(out)
}

/// Every `.crt` below `dir` (at `rel` in the package), as (relative path, contents).
fn collect(
    dir: &OwnedFd,
    rel: &str,
    shown: &str,
    depth: usize,
    out: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<(), RootfsError> {
    let bad = |rel: &str, reason: String| RootfsError::BadCertificate {
        path: format!("{shown}/{rel}"),
        reason,
    };
    let io = |rel: &str, source: std::io::Error| RootfsError::Io {
        path: format!("{shown}/{rel}").into(),
        source,
    };
    if depth > MAX_DEPTH {
        return Err(bad(rel, format!("nested more than {MAX_DEPTH} deep")));
    }
    for name in list(dir).map_err(|e| io(rel, e))? {
        let child = format!("{rel}/{}", name.to_string_lossy());
        let is_crt = name.as_encoded_bytes().ends_with(b".crt");
        match open_entry(dir, &name).map_err(|e| io(&child, e))? {
            Node::Dir(fd) => collect(&fd, &child, shown, depth + 1, out)?,
            Node::File(fd, st) if is_crt => {
                if st.st_size as u64 > MAX_CERT {
                    return Err(bad(&child, format!("larger than {MAX_CERT} bytes")));
                }
                let mut pem = Vec::new();
                std::fs::File::from(fd)
                    .take(MAX_CERT + 1)
                    .read_to_end(&mut pem)
                    .map_err(|e| io(&child, e))?;
                if pem.len() as u64 > MAX_CERT {
                    return Err(bad(&child, format!("larger than {MAX_CERT} bytes")));
                }
                check_pem(&pem).map_err(|reason| bad(&child, reason.into()))?;
                let key = child.as_bytes()[CERT_DIR.len() + 1..].to_vec();
                out.push((key, pem));
            }
            Node::Symlink(_) if is_crt => {
                return Err(bad(&child, "is a symlink (not followed)".into()));
            }
            Node::Other(_) if is_crt => {
                return Err(bad(&child, "is not a regular file".into()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// A PEM certificate file: ASCII text with a certificate's begin and end lines.
fn check_pem(pem: &[u8]) -> Result<(), &'static str> {
    let text = std::str::from_utf8(pem).map_err(|_| "not ASCII text")?;
    if !text
        .bytes()
        .all(|b| b == b'\n' || b == b'\r' || b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return Err("not ASCII text");
    }
    match (
        text.find("-----BEGIN CERTIFICATE-----"),
        text.rfind("-----END CERTIFICATE-----"),
    ) {
        (Some(begin), Some(end)) if begin < end => Ok(()),
        _ => Err("not a PEM certificate"),
    }
}

/// Add the bundle of the `ca-certificates` package at `package` (a valid store path) as the
/// store path `ca-bundle`, holding only `etc/ssl/certs/ca-certificates.crt`.
pub fn add(store: &Store, package: &AbsStorePath) -> Result<PathInfo, RootfsError> {
    let path = store.check_abs(package)?;
    store.query_valid(path)?;
    let pem = bundle(&store.physical_path(path), &package.to_string())?;
    add_tree(store, NAME, &Default::default(), |tree| {
        write_file(tree, BUNDLE, &pem)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";

    fn package(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in files {
            let path = dir.path().join("pkg").join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("pkg").join(CERT_DIR)).unwrap();
        dir
    }

    #[test]
    fn certificates_are_sorted_by_path_and_end_in_a_newline() {
        let a = format!("{PEM}\n").replace("MIIB", "AAAA");
        let b = PEM.replace("MIIB", "BBBB");
        let z = format!("# comment\n{PEM}\n").replace("MIIB", "ZZZZ");
        let dir = package(&[
            ("usr/share/ca-certificates/mozilla/b.crt", &b),
            ("usr/share/ca-certificates/mozilla/a.crt", &a),
            ("usr/share/ca-certificates/mozilla/README", "not a cert"),
            ("usr/share/ca-certificates/zz/z.crt", &z),
            ("usr/share/ca-certificates/mozilla-extra.crt", &a),
        ]);
        let got = bundle(&dir.path().join("pkg"), "pkg").unwrap();
        // "mozilla-extra.crt" < "mozilla/…" in byte order ('-' < '/').
        let expected = format!("{a}{a}{b}\n{z}");
        assert_eq!(String::from_utf8(got).unwrap(), expected);
    }

    #[test]
    fn hostile_packages_are_refused() {
        // A .crt symlink out of the package (to a host file), a directory symlink, a huge
        // file, a file that is not PEM, a package without certificates.
        let dir = package(&[]);
        let certs = dir.path().join("pkg").join(CERT_DIR);
        std::os::unix::fs::symlink("/etc/passwd", certs.join("evil.crt")).unwrap();
        let err = bundle(&dir.path().join("pkg"), "pkg").unwrap_err();
        assert!(err.to_string().contains("evil.crt: is a symlink"), "{err}");

        let dir = package(&[]);
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("x.crt"), PEM).unwrap();
        let root = dir.path().join("pkg/usr/share");
        std::fs::remove_dir(root.join("ca-certificates")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("ca-certificates")).unwrap();
        let err = bundle(&dir.path().join("pkg"), "pkg").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("pkg/usr/share/ca-certificates: "),
            "{err}"
        );

        let huge = format!("{PEM}\n{}", "A".repeat(MAX_CERT as usize));
        let dir = package(&[("usr/share/ca-certificates/m/huge.crt", &huge)]);
        let err = bundle(&dir.path().join("pkg"), "pkg").unwrap_err();
        assert!(err.to_string().contains("huge.crt: larger than"), "{err}");

        let dir = package(&[("usr/share/ca-certificates/m/bin.crt", "\0\x01garbage")]);
        let err = bundle(&dir.path().join("pkg"), "pkg").unwrap_err();
        assert!(err.to_string().contains("bin.crt: not ASCII"), "{err}");

        let dir = package(&[]);
        let err = bundle(&dir.path().join("pkg"), "pkg").unwrap_err();
        assert!(err.to_string().contains("no .crt file"), "{err}");

        // The package path itself being a symlink is not followed either.
        let dir = package(&[("usr/share/ca-certificates/m/a.crt", PEM)]);
        std::os::unix::fs::symlink(dir.path().join("pkg"), dir.path().join("link")).unwrap();
        assert!(bundle(&dir.path().join("link"), "link").is_err());
    }
}
