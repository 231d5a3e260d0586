//! The directory the customisation layer is made in: the `--contents` symlink-joined (a
//! [`JoinTree`]), then changed by `--extra-commands`, then read back as the layer.
//!
//! Making that tree from nothing costs an inode per entry (the example's has about a
//! thousand), and removing it afterwards frees them all again; on a busy file system that is
//! most of a rebuild's time (ext4 without a journal, for one, searches past every inode freed
//! in the last half minute on each allocation). Between two builds of an image only a few
//! entries change (a new jar moves the launcher's store path, so the handful of links into
//! it), so with a layer cache the root is **kept** in it (`<cache>/customisation/root`) and
//! brought up to date: entries the tree does not have are removed (whatever extra commands
//! left), wrong ones replaced, missing ones made, modes and owners set, so the commands always
//! start from exactly what a fresh directory would hold. Without a cache, or while another
//! build holds the kept root, a fresh scratch directory is used (and removed afterwards).
//!
//! The kept root belongs to one build at a time (an `flock` on `<cache>/customisation`,
//! taken without waiting). Its parent is 0700 (0711 while extra commands run as nobody, who
//! must reach the root), so between builds no other user can touch the tree nobody owns. For
//! a cache nobody could not reach (below a 0700 home, while mkimage is root and the commands
//! run as nobody) the kept root lives in `$TMPDIR` instead, under a name made from the cache's
//! path; one there that is not this user's directory is not used.
//! Every change is made relative to an open directory, never following a symlink. A build
//! killed half-way leaves a root the next one corrects like any other; one that cannot be
//! corrected (a tree deeper than [`MAX_DEPTH`], entries this user cannot change) is removed
//! and made again.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, FlockOperation, Gid, Mode, OFlags, Uid};
use rustix::io::Errno;

use sha2::{Digest, Sha256};

use super::ImageError;
use super::beneath;
use super::contents::{JoinNode, JoinTree};
use super::temp::{self, Temp, reclaim};
use crate::hashing::hex;

/// The prefix of scratch roots in `$TMPDIR` (`mkimage-root-XXXXXX.tmp`).
const SCRATCH_PREFIX: &str = "mkimage-root-";

/// The kept root's directory inside the layer cache.
const KEPT_DIR: &str = "customisation";

/// The prefix of a kept root in `$TMPDIR` (`mkimage-kept-<euid>-<hash of the cache's path>`),
/// for a cache the extra commands' user could not reach.
const KEPT_PREFIX: &str = "mkimage-kept-";

/// How deep a tree left in the kept root is taken apart entry by entry; a deeper one is
/// removed whole.
pub(crate) const MAX_DEPTH: usize = 256;

/// The mode of every directory of the joined tree (whatever the umask).
const DIR_MODE: u32 = 0o755;

/// The customisation root of one build: kept in the layer cache or a scratch directory.
#[derive(Debug)]
pub(crate) struct CustomRoot {
    root: PathBuf,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// `<cache>/customisation` (or its stand-in in `$TMPDIR`), open and locked for this build.
    Kept(OwnedFd),
    /// A scratch directory (registered: removed when dropped or on a signal, reclaimed after
    /// a kill).
    Scratch { _dir: Temp },
}

impl CustomRoot {
    /// The root holding exactly `tree`, owned by `owner` (the extra commands' user, when
    /// mkimage is root and they run as nobody; `None` leaves owners alone): kept in `cache`
    /// when there is one and no other build holds it, otherwise a fresh scratch directory.
    pub(crate) fn prepare(
        cache: Option<&Path>,
        tree: &JoinTree,
        owner: Option<u32>,
    ) -> Result<CustomRoot, ImageError> {
        if let Some(kept) = cache.and_then(|c| CustomRoot::kept(c, tree, owner)) {
            return Ok(kept);
        }
        CustomRoot::scratch(tree, owner)
    }

    /// The directory the tree is in.
    pub(crate) fn path(&self) -> &Path {
        &self.root
    }

    /// Whether this build uses the root kept in the cache.
    #[cfg(test)]
    fn is_kept(&self) -> bool {
        matches!(self.kind, Kind::Kept(_))
    }

    fn scratch(tree: &JoinTree, owner: Option<u32>) -> Result<CustomRoot, ImageError> {
        let tmpdir = std::env::temp_dir();
        reclaim(&tmpdir, SCRATCH_PREFIX);
        let scratch = Temp::dir(&tmpdir, SCRATCH_PREFIX).map_err(ImageError::io(&tmpdir))?;
        // Traversable, so extra commands run as nobody can reach the root (but not rename it).
        fs::set_permissions(scratch.path(), fs::Permissions::from_mode(0o711))
            .map_err(ImageError::io(scratch.path()))?;
        let root = scratch.path().join("root");
        fs::create_dir(&root).map_err(ImageError::io(&root))?;
        let dir = beneath::open_root(&root).map_err(ImageError::io(&root))?;
        reconcile(&dir, tree, owner).map_err(ImageError::io(&root))?;
        Ok(CustomRoot {
            root,
            kind: Kind::Scratch { _dir: scratch },
        })
    }

    /// The kept root, locked and up to date; `None` (a scratch root will do) when it is busy,
    /// is not ours, or cannot be made right. It lives in the cache, unless the extra
    /// commands' user could not reach it there: then in `$TMPDIR`, named after the cache.
    fn kept(cache: &Path, tree: &JoinTree, owner: Option<u32>) -> Option<CustomRoot> {
        let (home, name) = if owner.is_none() || others_can_reach(cache) {
            (cache.to_path_buf(), KEPT_DIR.to_string())
        } else {
            let tmpdir = std::env::temp_dir();
            if !others_can_reach(&tmpdir) {
                return None;
            }
            let cache = fs::canonicalize(cache).ok()?;
            let id = hex(&Sha256::digest(cache.as_os_str().as_encoded_bytes()));
            let euid = rustix::process::geteuid().as_raw();
            (tmpdir, format!("{KEPT_PREFIX}{euid}-{}", &id[..32]))
        };
        let home_fd = beneath::open_root(&home).ok()?;
        match rustix::fs::mkdirat(&home_fd, name.as_str(), Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(_) => return None,
        }
        // Ours and a directory (a name planted in a shared $TMPDIR by another user is not).
        let parent = open_dir(&home_fd, OsStr::new(&name)).ok()?;
        let st = rustix::fs::fstat(&parent).ok()?;
        if st.st_uid != rustix::process::geteuid().as_raw() {
            return None;
        }
        rustix::fs::flock(&parent, FlockOperation::NonBlockingLockExclusive).ok()?;
        let mode = if owner.is_some() { 0o711 } else { 0o700 };
        rustix::fs::fchmod(&parent, Mode::from_raw_mode(mode)).ok()?;
        let path = home.join(&name).join("root");
        if bring_up_to_date(&parent, tree, owner).is_err() {
            // Start again from nothing; if even that fails, a scratch root it is.
            temp::remove(&path, true);
            bring_up_to_date(&parent, tree, owner).ok()?;
        }
        Some(CustomRoot {
            root: path,
            kind: Kind::Kept(parent),
        })
    }
}

impl Drop for CustomRoot {
    fn drop(&mut self) {
        if let Kind::Kept(parent) = &self.kind {
            // Nobody's tree is out of everyone else's reach again.
            let _ = rustix::fs::fchmod(parent, Mode::from_raw_mode(0o700));
        }
    }
}

/// Whether a user with no group of its own here (nobody, whom the extra commands run as) can
/// reach `dir`: every directory from `/` down to it searchable by others.
fn others_can_reach(dir: &Path) -> bool {
    let Ok(dir) = fs::canonicalize(dir) else {
        return false;
    };
    dir.ancestors()
        .all(|a| fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// `parent/root` made (if missing) and reconciled with `tree`.
fn bring_up_to_date(parent: &OwnedFd, tree: &JoinTree, owner: Option<u32>) -> io::Result<()> {
    match rustix::fs::mkdirat(parent, "root", Mode::from_raw_mode(DIR_MODE)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let root = open_dir(parent, OsStr::new("root"))?;
    reconcile(&root, tree, owner)
}

fn open_dir(dir: &OwnedFd, name: &OsStr) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(dir, name, flags, Mode::empty())?)
}

fn ids(owner: u32) -> (Uid, Gid) {
    (Uid::from_raw(owner), Gid::from_raw(owner))
}

/// Make the open directory `dir` hold exactly `tree`, every directory mode 0755 and, with
/// `owner`, every entry owned by it (uid and gid). Entries already right are only looked at.
pub(crate) fn reconcile(dir: &OwnedFd, tree: &JoinTree, owner: Option<u32>) -> io::Result<()> {
    let st = rustix::fs::fstat(dir)?;
    if let Some(o) = owner.filter(|o| st.st_uid != *o || st.st_gid != *o) {
        let (uid, gid) = ids(o);
        rustix::fs::fchown(dir, Some(uid), Some(gid))?;
    }
    if st.st_mode & 0o7777 != DIR_MODE {
        rustix::fs::fchmod(dir, Mode::from_raw_mode(DIR_MODE))?;
    }
    let mut kept = BTreeSet::new();
    for name in beneath::list(dir)? {
        let keep = match tree.entries.get(&name) {
            None => false,
            Some(node) => is_right(dir, &name, node, owner)?,
        };
        if keep {
            kept.insert(name);
        } else {
            remove_entry(dir, &name, 0)?;
        }
    }
    for (name, node) in tree.entries.iter().filter(|(n, _)| !kept.contains(*n)) {
        match node {
            JoinNode::Dir(sub) => {
                rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(DIR_MODE))?;
                reconcile(&open_dir(dir, name)?, sub, owner)?;
            }
            JoinNode::Link(target) => {
                rustix::fs::symlinkat(target, dir, name)?;
                if let Some(o) = owner {
                    let (uid, gid) = ids(o);
                    rustix::fs::chownat(
                        dir,
                        name,
                        Some(uid),
                        Some(gid),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// Whether the entry `name` of `dir` is what `node` says (a directory, then reconciled in
/// turn, or a symlink to the same target, then given its owner); `false`: replace it.
fn is_right(dir: &OwnedFd, name: &OsStr, node: &JoinNode, owner: Option<u32>) -> io::Result<bool> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    match (node, FileType::from_raw_mode(st.st_mode)) {
        (JoinNode::Dir(sub), FileType::Directory) => {
            reconcile(&open_dir(dir, name)?, sub, owner)?;
            Ok(true)
        }
        (JoinNode::Link(target), FileType::Symlink) => {
            let now = rustix::fs::readlinkat(dir, name, Vec::new())?;
            if now.as_bytes() != target.as_os_str().as_encoded_bytes() {
                return Ok(false);
            }
            if let Some(o) = owner.filter(|o| st.st_uid != *o || st.st_gid != *o) {
                let (uid, gid) = ids(o);
                rustix::fs::chownat(dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)?;
            }
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Remove the entry `name` of `dir`, a whole directory tree if it is one, never following a
/// symlink. A directory that is not writable is made so first (as its owner; root needs
/// no permission).
pub(crate) fn remove_entry(dir: &OwnedFd, name: &OsStr, depth: usize) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e.into()),
    }
    if depth > MAX_DEPTH {
        return Err(io::Error::other("tree too deep"));
    }
    let sub = open_dir(dir, name)?;
    let st = rustix::fs::fstat(&sub)?;
    if st.st_mode & 0o700 != 0o700 {
        rustix::fs::fchmod(&sub, Mode::from_raw_mode(0o700))?;
    }
    for entry in beneath::list(&sub)? {
        remove_entry(&sub, &entry, depth + 1)?;
    }
    drop(sub);
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::{MetadataExt, symlink};

    fn link(target: &str) -> JoinNode {
        JoinNode::Link(PathBuf::from(target))
    }

    fn dir(entries: Vec<(&str, JoinNode)>) -> JoinNode {
        JoinNode::Dir(JoinTree {
            entries: entries.into_iter().map(|(n, e)| (n.into(), e)).collect(),
        })
    }

    fn tree(entries: Vec<(&str, JoinNode)>) -> JoinTree {
        match dir(entries) {
            JoinNode::Dir(t) => t,
            JoinNode::Link(_) => unreachable!(),
        }
    }

    /// Every entry under `root`: path → "dir MODE" or "-> TARGET" or "file".
    fn listing(root: &Path) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for e in walkdir::WalkDir::new(root).min_depth(1) {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            let m = e.path().symlink_metadata().unwrap();
            let what = if m.is_dir() {
                format!("dir {:o}", m.mode() & 0o7777)
            } else if m.file_type().is_symlink() {
                format!("-> {}", fs::read_link(e.path()).unwrap().display())
            } else {
                "file".into()
            };
            out.insert(rel, what);
        }
        out
    }

    fn sample() -> JoinTree {
        tree(vec![
            ("bin", dir(vec![("app", link("/nix/store/a-app/bin/app"))])),
            (
                "share",
                dir(vec![("doc", dir(vec![("x", link("/nix/store/b-x/x"))]))]),
            ),
        ])
    }

    #[test]
    fn a_used_root_is_brought_back_to_what_a_fresh_one_holds() {
        let t = tempfile::tempdir().unwrap();
        let (fresh, used) = (t.path().join("fresh"), t.path().join("used"));
        fs::create_dir(&fresh).unwrap();
        fs::create_dir(&used).unwrap();
        reconcile(&beneath::open_root(&fresh).unwrap(), &sample(), None).unwrap();
        // What earlier contents and extra commands could leave behind.
        let old = tree(vec![
            (
                "bin",
                dir(vec![("app", link("/nix/store/old-app/bin/app"))]),
            ),
            ("gone", link("/nix/store/gone")),
        ]);
        reconcile(&beneath::open_root(&used).unwrap(), &old, None).unwrap();
        fs::create_dir_all(used.join("home/deep/er")).unwrap();
        fs::write(used.join("home/deep/er/f"), "x").unwrap();
        fs::set_permissions(used.join("home/deep"), fs::Permissions::from_mode(0o500)).unwrap();
        fs::write(used.join("share"), "a file where a directory belongs").unwrap();
        fs::set_permissions(used.join("bin"), fs::Permissions::from_mode(0o700)).unwrap();
        symlink("/etc", used.join("bin/etc")).unwrap();
        reconcile(&beneath::open_root(&used).unwrap(), &sample(), None).unwrap();
        assert_eq!(listing(&used), listing(&fresh));
        assert_eq!(listing(&fresh)["bin"], "dir 755");
        assert_eq!(listing(&fresh).len(), 5);
        // Nothing was followed out of the tree.
        assert!(Path::new("/etc/passwd").exists());
    }

    #[test]
    fn the_kept_root_is_used_by_one_build_at_a_time() {
        let t = tempfile::tempdir().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        // SAFETY-free: temp_dir() only reads TMPDIR; no other test here sets it.
        let first = CustomRoot::prepare(Some(t.path()), &sample(), None).unwrap();
        assert!(first.is_kept());
        assert_eq!(first.path(), t.path().join("customisation/root"));
        let mode = fs::metadata(t.path().join("customisation")).unwrap().mode();
        assert_eq!(mode & 0o777, 0o700);
        // A second build meanwhile gets a scratch root with the same tree.
        let second = CustomRoot::prepare(Some(t.path()), &sample(), None).unwrap();
        assert!(!second.is_kept());
        assert_eq!(listing(second.path()), listing(first.path()));
        let scratch = second.path().to_path_buf();
        drop(second);
        assert!(!scratch.exists());
        drop(first);
        // Kept between builds, and taken again once free.
        assert!(
            t.path()
                .join("customisation/root/bin/app")
                .symlink_metadata()
                .is_ok()
        );
        let again = CustomRoot::prepare(Some(t.path()), &JoinTree::default(), None).unwrap();
        assert!(again.is_kept());
        assert!(listing(again.path()).is_empty());
        drop(tmp);
    }

    #[test]
    fn a_kept_root_that_is_a_symlink_is_not_used() {
        let t = tempfile::tempdir().unwrap();
        let elsewhere = t.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let cache = t.path().join("cache");
        fs::create_dir(&cache).unwrap();
        symlink(&elsewhere, cache.join("customisation")).unwrap();
        let root = CustomRoot::prepare(Some(&cache), &sample(), None).unwrap();
        assert!(!root.is_kept());
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
        // The same for the root inside it: it is removed, not followed.
        fs::remove_file(cache.join("customisation")).unwrap();
        fs::create_dir(cache.join("customisation")).unwrap();
        symlink(&elsewhere, cache.join("customisation/root")).unwrap();
        fs::write(elsewhere.join("keep"), "k").unwrap();
        let root = CustomRoot::prepare(Some(&cache), &sample(), None).unwrap();
        assert!(root.is_kept());
        assert_eq!(
            listing(root.path()),
            listing(&{
                let fresh = t.path().join("fresh");
                fs::create_dir(&fresh).unwrap();
                reconcile(&beneath::open_root(&fresh).unwrap(), &sample(), None).unwrap();
                fresh
            })
        );
        assert!(elsewhere.join("keep").exists());
    }

    #[test]
    fn a_tree_too_deep_to_take_apart_is_refused_not_overflowed() {
        let t = tempfile::tempdir().unwrap();
        let mut p = t.path().to_path_buf();
        for _ in 0..MAX_DEPTH + 5 {
            p.push("d");
        }
        fs::create_dir_all(&p).unwrap();
        let top = beneath::open_root(t.path()).unwrap();
        assert!(remove_entry(&top, OsStr::new("d"), 0).is_err());
    }
}
