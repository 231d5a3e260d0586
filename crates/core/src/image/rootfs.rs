//! The image's root filesystem as a container will see it, without unpacking anything: the
//! customisation root over the store layers, each store path of the layers at its logical
//! store dir (`/nix/store/…`), the store dir's ancestors directories. The start check looks
//! files up here. Paths are resolved component by component, following symlinks against the
//! image's root (never the host's: `/bin/app -> /nix/store/…` leads into the store layers),
//! with the kernel's bound of 40 links; every entry is opened with `O_NOFOLLOW` relative to
//! its directory's descriptor (see `beneath`), so nothing outside the image is looked at.

use std::collections::{BTreeSet, VecDeque};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rustix::fs::Stat;

use super::ImageError;
use super::beneath::{Node, list, open_entry, open_root};

/// Most symlinks followed while resolving one path (the kernel's `MAXSYMLINKS`).
pub(crate) const MAX_LINKS: usize = 40;

/// A directory of the union: its descriptor in each layer that has it (customisation first),
/// and, for the store dir and its ancestors, how deep in the store dir it is.
pub(crate) struct DirView {
    fds: Vec<OwnedFd>,
    store_depth: Option<usize>,
}

/// What a path resolves to.
pub(crate) enum Found {
    /// A regular file: its descriptor, its `fstat`, and its resolved path in the image.
    File {
        file: File,
        stat: Stat,
        path: String,
    },
    Dir(DirView),
    /// A FIFO, socket or device.
    Other,
}

/// The root filesystem: the customisation root and the store paths of the layers.
pub(crate) struct ImageFs {
    custom: OwnedFd,
    /// The physical store dir (none when no store path is in the layers).
    store: Option<OwnedFd>,
    store_dir: Vec<Vec<u8>>,
    paths: BTreeSet<Vec<u8>>,
}

enum Entry {
    Dir(DirView),
    Node(Node),
}

/// The components of a path, without empty ones and `.`.
fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
}

fn missing(e: &io::Error) -> bool {
    let code = e.raw_os_error();
    code == Some(rustix::io::Errno::NOENT.raw_os_error())
        || code == Some(rustix::io::Errno::NOTDIR.raw_os_error())
}

impl ImageFs {
    /// `custom`: the customisation root; `store_dir`: the physical store dir; `logical`: the
    /// store dir as the image names it; `paths`: base names of the layers' store paths.
    pub(crate) fn open(
        custom: &Path,
        store_dir: &Path,
        logical: &str,
        paths: BTreeSet<String>,
    ) -> Result<ImageFs, ImageError> {
        Ok(ImageFs {
            custom: open_root(custom).map_err(ImageError::io(custom))?,
            store: match paths.is_empty() {
                true => None,
                false => Some(open_root(store_dir).map_err(ImageError::io(store_dir))?),
            },
            store_dir: components(logical.as_bytes()).map(<[u8]>::to_vec).collect(),
            paths: paths.into_iter().map(String::into_bytes).collect(),
        })
    }

    fn root(&self) -> io::Result<DirView> {
        Ok(DirView {
            fds: vec![self.custom.try_clone()?],
            store_depth: Some(0),
        })
    }

    /// `name` in `dir`: an upper layer's non-directory hides what is below it; directories
    /// merge.
    fn lookup(&self, dir: &DirView, name: &[u8]) -> io::Result<Option<Entry>> {
        let mut layers: Vec<&OwnedFd> = dir.fds.iter().collect();
        if dir.store_depth == Some(self.store_dir.len())
            && self.paths.contains(name)
            && let Some(store) = &self.store
        {
            layers.push(store);
        }
        let mut dirs = Vec::new();
        for fd in layers {
            match open_entry(fd, OsStr::from_bytes(name)) {
                Ok(Node::Dir(d)) => dirs.push(d),
                Ok(other) if dirs.is_empty() => return Ok(Some(Entry::Node(other))),
                Ok(_) => break,
                Err(e) if missing(&e) => {}
                Err(e) => return Err(e),
            }
        }
        let store_depth = match dir.store_depth {
            Some(d) if self.store_dir.get(d).is_some_and(|c| c == name) => Some(d + 1),
            _ => None,
        };
        if dirs.is_empty() && store_depth.is_none() {
            return Ok(None);
        }
        Ok(Some(Entry::Dir(DirView {
            fds: dirs,
            store_depth,
        })))
    }

    /// Resolve an absolute image path, following every symlink inside the image. `None`:
    /// it does not exist (or goes through a non-directory).
    pub(crate) fn resolve(&self, path: &str) -> Result<Option<Found>, ImageError> {
        let fail = |e: io::Error| ImageError::invalid_io(format_args!("{path} in the image"), e);
        let mut todo: VecDeque<Vec<u8>> = components(path.as_bytes()).map(<[u8]>::to_vec).collect();
        let mut stack: Vec<(Vec<u8>, DirView)> = Vec::new();
        let root = self.root().map_err(fail)?;
        let mut links = 0;
        while let Some(name) = todo.pop_front() {
            if name == b".." {
                stack.pop();
                continue;
            }
            let here = stack.last().map_or(&root, |(_, v)| v);
            match self.lookup(here, &name).map_err(fail)? {
                None => return Ok(None),
                Some(Entry::Dir(view)) => stack.push((name, view)),
                Some(Entry::Node(Node::Symlink(target))) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(ImageError::Invalid(format!(
                            "{path} in the image: more than {MAX_LINKS} symlinks (a loop?)"
                        )));
                    }
                    if target.starts_with(b"/") {
                        stack.clear();
                    }
                    for c in components(&target).rev() {
                        todo.push_front(c.to_vec());
                    }
                }
                Some(Entry::Node(_)) if !todo.is_empty() => return Ok(None),
                Some(Entry::Node(Node::File(fd, stat))) => {
                    let mut full: Vec<u8> = Vec::new();
                    for (n, _) in &stack {
                        full.push(b'/');
                        full.extend_from_slice(n);
                    }
                    full.push(b'/');
                    full.extend_from_slice(&name);
                    let path = String::from_utf8_lossy(&full).into_owned();
                    return Ok(Some(Found::File {
                        file: File::from(fd),
                        stat,
                        path,
                    }));
                }
                Some(Entry::Node(_)) => return Ok(Some(Found::Other)),
            }
        }
        Ok(Some(match stack.pop() {
            Some((_, view)) => Found::Dir(view),
            None => Found::Dir(root),
        }))
    }

    /// The names in a directory of the union, sorted.
    pub(crate) fn list(&self, dir: &DirView) -> BTreeSet<Vec<u8>> {
        let mut names = BTreeSet::new();
        for fd in &dir.fds {
            for n in list(fd).unwrap_or_default() {
                names.insert(n.as_bytes().to_vec());
            }
        }
        match dir.store_depth {
            Some(d) if d < self.store_dir.len() => {
                names.insert(self.store_dir[d].clone());
            }
            Some(_) => names.extend(self.paths.iter().cloned()),
            None => {}
        }
        names
    }
}

/// Up to `max` bytes from the start of `file`.
pub(crate) fn read_head(file: &File, max: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; max];
    let mut got = 0;
    while got < max {
        match file.read_at(&mut buf[got..], got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    buf.truncate(got);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A customisation root and a store with one path in the layers and one outside them.
    fn image() -> (tempfile::TempDir, ImageFs) {
        let dir = tempfile::tempdir().unwrap();
        let (custom, store) = (dir.path().join("custom"), dir.path().join("store"));
        let app = "00000000000000000000000000000000-app";
        let other = "11111111111111111111111111111111-other";
        for d in [
            custom.join("bin"),
            store.join(app).join("bin"),
            store.join(other),
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(store.join(app).join("bin/app"), b"app").unwrap();
        std::fs::write(store.join(other).join("secret"), b"x").unwrap();
        let link = |target: &str, at: &str| symlink(target, custom.join(at)).unwrap();
        link(&format!("/nix/store/{app}/bin/app"), "bin/app");
        link(
            "../nix/store/../../nix/store/00000000000000000000000000000000-app/bin/app",
            "bin/rel",
        );
        link(
            &format!("{}/secret", store.join(other).display()),
            "bin/host",
        );
        link(&format!("/nix/store/{other}/secret"), "bin/unlayered");
        link("loop-b", "bin/loop-a");
        link("loop-a", "bin/loop-b");
        link("/etc/passwd", "bin/passwd");
        let fs = ImageFs::open(&custom, &store, "/nix/store", [app.to_string()].into()).unwrap();
        (dir, fs)
    }

    fn resolved(fs: &ImageFs, path: &str) -> Option<String> {
        match fs.resolve(path).unwrap() {
            Some(Found::File { path, .. }) => Some(path),
            Some(Found::Dir(_)) => Some("dir".into()),
            Some(Found::Other) => Some("other".into()),
            None => None,
        }
    }

    #[test]
    fn links_resolve_inside_the_image_never_on_the_host() {
        let (_dir, fs) = image();
        let app = Some("/nix/store/00000000000000000000000000000000-app/bin/app".to_string());
        assert_eq!(resolved(&fs, "/bin/app"), app);
        assert_eq!(resolved(&fs, "/bin/rel"), app);
        assert_eq!(resolved(&fs, "/../bin/./app"), app);
        assert_eq!(resolved(&fs, "/nix/store"), Some("dir".into()));
        // A host path, a store path outside the layers, /etc/passwd: not in the image.
        assert_eq!(resolved(&fs, "/bin/host"), None);
        assert_eq!(resolved(&fs, "/bin/unlayered"), None);
        assert_eq!(resolved(&fs, "/bin/passwd"), None);
        assert_eq!(resolved(&fs, "/bin/app/x"), None);
        let e = fs.resolve("/bin/loop-a").err().unwrap().to_string();
        assert!(e.contains("more than 40 symlinks"), "{e}");
        let root = fs.resolve("/").unwrap();
        let Some(Found::Dir(view)) = root else {
            panic!("/ is a directory")
        };
        let names: Vec<Vec<u8>> = fs.list(&view).into_iter().collect();
        assert_eq!(names, vec![b"bin".to_vec(), b"nix".to_vec()]);
    }
}
