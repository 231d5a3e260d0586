//! The customisation layer: `--contents` store paths symlink-joined into a scratch root the
//! way nixpkgs' `symlinkJoin` (lndir) does it, `--extra-commands` run by bash in that root,
//! unprivileged and contained, and the tree then turned into normalised layer entries whose
//! ownership and modes come from `--perms` rules instead of fakeroot.
//!
//! Both trees are read without following a symlink (see `beneath`): a `--contents` path must
//! be a real directory inside the store (a symlink on the way is refused, not followed out of
//! the store), and the root the extra commands wrote is described from descriptors opened with
//! `O_NOFOLLOW`, so nothing they leave can make mkimage, often root, read another file. When
//! mkimage is root the commands run as nobody, in a PID namespace and a process group of their
//! own; everything they started is killed when the script ends.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::str::FromStr;

use regex::Regex;

use super::ImageError;
use super::beneath::{self, Node};
use super::tar::{Entry, EntryKind, Owner, Source};
use super::temp;

/// One `--perms 'REGEX MODE UID GID'` rule. The regex must match a whole path as it is in the
/// image (`/etc/shadow`, `/tmp`); `-` keeps that field's default. Later rules win.
#[derive(Debug, Clone)]
pub struct PermRule {
    pub text: String,
    regex: Regex,
    mode: Option<u32>,
    uid: Option<u64>,
    gid: Option<u64>,
}

impl FromStr for PermRule {
    type Err = String;

    fn from_str(text: &str) -> Result<PermRule, String> {
        let bad = |why: &str| format!("--perms '{text}': {why} (expected 'REGEX MODE UID GID')");
        let mut fields: Vec<&str> = text.rsplitn(4, char::is_whitespace).collect();
        if fields.len() != 4 {
            return Err(bad("four fields needed"));
        }
        fields.reverse();
        let pattern = fields[0].trim_end();
        if pattern.is_empty() {
            return Err(bad("empty regex"));
        }
        let regex = Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
            let text = e.to_string();
            bad(text.lines().last().unwrap_or("bad regex"))
        })?;
        let mode = match fields[1] {
            "-" => None,
            m => Some(
                u32::from_str_radix(m, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| bad("MODE must be octal, at most 7777"))?,
            ),
        };
        let num = |s: &str, what: &str| -> Result<Option<u64>, String> {
            match s {
                "-" => Ok(None),
                n => n
                    .parse()
                    .map(Some)
                    .map_err(|_| bad(&format!("{what} must be a number"))),
            }
        };
        Ok(PermRule {
            text: text.to_string(),
            regex,
            mode,
            uid: num(fields[2], "UID")?,
            gid: num(fields[3], "GID")?,
        })
    }
}

/// A `--contents` directory: a store path, or a directory inside one.
#[derive(Debug, Clone)]
pub struct ContentsDir {
    /// As given, without a trailing `/` (`/nix/store/…-app`, `/nix/store/…-app/share`).
    pub logical: String,
    /// The physical store directory (`<store root>/nix/store`).
    pub store_dir: PathBuf,
    /// Below `store_dir`: the store path's name, then the directories inside it.
    pub rel: PathBuf,
}

/// What goes into the customisation layer.
#[derive(Debug, Clone, Default)]
pub struct Customisation {
    /// Each `--contents` directory, in order.
    pub contents: Vec<ContentsDir>,
    pub extra_commands: Option<String>,
    pub perms: Vec<PermRule>,
    /// Keep the first of two colliding files (what `symlinkJoin` does) instead of failing.
    pub ignore_collisions: bool,
}

/// The `--contents` symlink-joined, in memory: what the customisation root holds before the
/// extra commands run (see `custom_root` for how it gets onto the disk).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinTree {
    pub entries: BTreeMap<OsString, JoinNode>,
}

/// One entry of a [`JoinTree`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinNode {
    Dir(JoinTree),
    /// A symlink and its target.
    Link(PathBuf),
}

/// Symlink-join `contents` the way `symlinkJoin` (lndir) does: directories become real
/// directories, merged; a file becomes a symlink to its logical store path; a symlink is copied
/// with the same target. Two contents putting different things at one path is an error unless
/// `ignore_collisions`, when the first stays. The store is read without following symlinks: a
/// contents path that is (or goes through) a symlink is an error.
pub fn symlink_join(
    contents: &[ContentsDir],
    ignore_collisions: bool,
) -> Result<JoinTree, ImageError> {
    let mut tree = JoinTree::default();
    let mut owners: BTreeMap<PathBuf, String> = BTreeMap::new();
    for c in contents {
        let not_dir =
            [rustix::io::Errno::LOOP, rustix::io::Errno::NOTDIR].map(|e| Some(e.raw_os_error()));
        let failed = |e: io::Error| {
            if not_dir.contains(&e.raw_os_error()) {
                ImageError::Invalid(format!(
                    "--contents '{}' is not a directory in the store (symlinkJoin merges directories; a symlink on the way is not followed)",
                    c.logical
                ))
            } else {
                ImageError::invalid_io(format_args!("--contents '{}'", c.logical), e)
            }
        };
        let store = beneath::open_root(&c.store_dir).map_err(ImageError::io(&c.store_dir))?;
        let dir = beneath::open_dir_below(&store, &c.rel).map_err(failed)?;
        let mut join = Join {
            logical: &c.logical,
            owners: &mut owners,
            ignore: ignore_collisions,
        };
        join.dir(&dir, &mut tree, Path::new(""))?;
    }
    Ok(tree)
}

/// Joining one contents directory into the tree; `owners` says which contents path put each
/// entry there (for the collision message).
struct Join<'a> {
    logical: &'a str,
    owners: &'a mut BTreeMap<PathBuf, String>,
    ignore: bool,
}

impl Join<'_> {
    fn dir(&mut self, dir: &OwnedFd, tree: &mut JoinTree, rel: &Path) -> Result<(), ImageError> {
        let here = Path::new(self.logical).join(rel);
        for name in beneath::list(dir).map_err(ImageError::io(&here))? {
            let rel = rel.join(&name);
            let node =
                beneath::open_entry(dir, &name).map_err(ImageError::io(&here.join(&name)))?;
            let target = match node {
                Node::Dir(sub) => {
                    let slot = tree
                        .entries
                        .entry(name)
                        .or_insert_with(|| JoinNode::Dir(JoinTree::default()));
                    match slot {
                        JoinNode::Dir(subtree) => {
                            self.owners
                                .entry(rel.clone())
                                .or_insert_with(|| self.logical.to_string());
                            self.dir(&sub, subtree, &rel)?;
                        }
                        JoinNode::Link(_) if self.ignore => {}
                        JoinNode::Link(_) => return Err(self.collision(&rel)),
                    }
                    continue;
                }
                Node::Symlink(target) => PathBuf::from(OsString::from_vec(target)),
                Node::File(..) | Node::Other(_) => PathBuf::from(self.logical).join(&rel),
            };
            match tree.entries.get(&name) {
                None => {
                    tree.entries.insert(name, JoinNode::Link(target));
                    self.owners.insert(rel, self.logical.to_string());
                }
                Some(JoinNode::Link(t)) if *t == target => {}
                Some(_) if self.ignore => {}
                Some(_) => return Err(self.collision(&rel)),
            }
        }
        Ok(())
    }

    fn collision(&self, rel: &Path) -> ImageError {
        ImageError::Invalid(format!(
            "contents collide at '{}': '{}' and '{}' both provide it (--ignore-collisions keeps the first)",
            Path::new("/").join(rel).display(),
            self.owners.get(rel).map_or("extra files", String::as_str),
            self.logical
        ))
    }
}

/// The user extra commands run as when mkimage runs as root.
pub const NOBODY: u32 = 65534;

/// Bytes of the commands' output searched for the last line of a failure.
const OUTPUT_TAIL: u64 = 64 * 1024;

/// Run `script` with `bash -e` in `root`, umask 022, `TZ=UTC`, `LC_ALL=C` and
/// `SOURCE_DATE_EPOCH`, unprivileged: as the invoking user, or as nobody (65534:65534, no
/// supplementary groups) when that is root — the caller has given nobody the root then
/// (`custom_root`). It runs in a
/// process group of its own (and, as root, a PID namespace of its own); when the script ends
/// every process it started is killed. Its output goes to a file (no pipe a leftover process
/// could hold open) and is returned for the caller to show; if it fails, the error carries
/// its last line.
pub fn run_extra_commands(script: &str, root: &Path, mtime: u64) -> Result<Vec<u8>, ImageError> {
    use std::os::unix::process::CommandExt;
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    let as_root = rustix::process::geteuid().is_root();
    let mut cmd = Command::new("bash");
    if as_root {
        cmd.uid(NOBODY).gid(NOBODY);
    }
    let stream = ImageError::stream;
    let mut log = tempfile::tempfile().map_err(stream)?;
    cmd.arg("-e")
        .arg("-c")
        .arg(format!("umask 022\n{script}"))
        .current_dir(root)
        .env_clear()
        .env("PATH", path)
        .env("HOME", root)
        .env("TZ", "UTC")
        .env("LC_ALL", "C")
        .env("SOURCE_DATE_EPOCH", mtime.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(stream)?)
        .stderr(log.try_clone().map_err(stream)?)
        .process_group(0);
    let status = run_contained(cmd, as_root)
        .map_err(|e| ImageError::invalid_io("--extra-commands: cannot run bash", e))?;
    // Only what was written by now: a process that escaped cannot keep this reading.
    let len = log.metadata().map_err(stream)?.len();
    if !status.success() {
        let from = len.saturating_sub(OUTPUT_TAIL);
        log.seek(SeekFrom::Start(from)).map_err(stream)?;
        let mut tail = Vec::new();
        (&mut log)
            .take(len - from)
            .read_to_end(&mut tail)
            .map_err(stream)?;
        let text = String::from_utf8_lossy(&tail);
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        return Err(ImageError::Invalid(format!(
            "--extra-commands failed ({status}): {last}"
        )));
    }
    log.seek(SeekFrom::Start(0)).map_err(stream)?;
    let mut output = Vec::new();
    (&mut log)
        .take(len)
        .read_to_end(&mut output)
        .map_err(stream)?;
    Ok(output)
}

/// Spawn `cmd` (which makes its own process group), wait for it, then SIGKILL its process
/// group. With `new_pid_ns` (as root) it is spawned from a thread that first moved its future
/// children into a new PID namespace: the script is that namespace's init, and when it ends
/// the kernel kills every process left in it, even one that left the process group
/// (`setsid`). Without the namespace (not root, or the kernel refused) the process group is
/// what is killed. While it runs, [`temp::interrupted`] kills it too.
fn run_contained(mut cmd: Command, new_pid_ns: bool) -> io::Result<ExitStatus> {
    let runner = std::thread::spawn(move || {
        if new_pid_ns {
            // Affects only this thread's children; this thread spawns one and ends.
            let _ = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID);
        }
        let mut child = cmd.spawn()?;
        let pgid = child.id();
        let _watch = temp::watch_group(pgid);
        let status = child.wait();
        temp::kill_process_group(pgid);
        status
    });
    runner
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the thread running the commands panicked")))
}

/// The normalised entries of the tree under `root`, named relative to `/` without a leading
/// `./` (`bin/`, `bin/hello`), in component-wise sorted order. Directories are 0755, files
/// 0755 if any execute bit is set and 0644 otherwise, symlinks 0777, owner 0:0 with numeric
/// names only; then every matching `--perms` rule applies in order.
///
/// The tree is read from descriptors (each entry opened with `O_NOFOLLOW` relative to its
/// parent, described by `fstat`), and a file's bytes are later read only if it is still the
/// file described. With `file_owner` (the extra commands' user), a regular file owned by
/// anyone else is refused: that user can only have made it by hard-linking another's file.
pub fn root_entries(
    root: &Path,
    perms: &[PermRule],
    mtime: u64,
    file_owner: Option<u32>,
) -> Result<Vec<Entry>, ImageError> {
    let owner = Owner {
        uid: 0,
        gid: 0,
        uname: String::new(),
        gname: String::new(),
        mtime,
    };
    let top = beneath::open_root(root).map_err(ImageError::io(root))?;
    let mut out = Vec::new();
    let walk = Walk {
        root,
        perms,
        owner: &owner,
        file_owner,
    };
    walk.dir(&top, Path::new(""), &mut out)?;
    Ok(out)
}

struct Walk<'a> {
    root: &'a Path,
    perms: &'a [PermRule],
    owner: &'a Owner,
    file_owner: Option<u32>,
}

impl Walk<'_> {
    fn dir(&self, dir: &OwnedFd, rel: &Path, out: &mut Vec<Entry>) -> Result<(), ImageError> {
        let shown_dir = Path::new("/").join(rel);
        for name in beneath::list(dir).map_err(ImageError::io(&shown_dir))? {
            let rel = rel.join(&name);
            let shown = format!("/{}", rel.to_string_lossy());
            let node = beneath::open_entry(dir, &name).map_err(|e| {
                ImageError::invalid_io(format_args!("customisation root: '{shown}'"), e)
            })?;
            let name_bytes = rel.as_os_str().as_encoded_bytes().to_vec();
            let mut sub = None;
            let (kind, mode) = match node {
                Node::Dir(fd) => {
                    sub = Some(fd);
                    (EntryKind::Dir, 0o755)
                }
                Node::Symlink(target) => (EntryKind::Symlink { target }, 0o777),
                Node::File(_, st) => {
                    if let Some(uid) = self.file_owner
                        && st.st_uid != uid
                    {
                        return Err(ImageError::Invalid(format!(
                            "customisation root: '{shown}' is owned by uid {}, not by the extra commands' user {uid} (a hard link to another user's file?)",
                            st.st_uid
                        )));
                    }
                    let mode = if st.st_mode & 0o111 != 0 {
                        0o755
                    } else {
                        0o644
                    };
                    let source = Source::Below {
                        root: self.root.to_path_buf(),
                        rel: rel.clone(),
                        dev: st.st_dev,
                        ino: st.st_ino,
                    };
                    let size = u64::try_from(st.st_size).unwrap_or(0);
                    (EntryKind::File { source, size }, mode)
                }
                Node::Other(ft) => {
                    return Err(ImageError::Invalid(format!(
                        "customisation root: '{shown}' is {}, not a file, directory or symlink",
                        crate::file_kind::of(ft)
                    )));
                }
            };
            let mut entry = Entry::new(name_bytes, kind, mode, self.owner);
            for rule in self.perms.iter().filter(|r| r.regex.is_match(&shown)) {
                if let Some(m) = rule.mode {
                    entry.mode = m;
                }
                if let Some(u) = rule.uid {
                    entry.uid = u;
                }
                if let Some(g) = rule.gid {
                    entry.gid = g;
                }
            }
            out.push(entry);
            if let Some(fd) = sub {
                self.dir(&fd, &rel, out)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// The contents directory `rel` of a "store" at `store`, named `/nix/store/<rel>`.
    fn dir(store: &Path, rel: &str) -> ContentsDir {
        ContentsDir {
            logical: format!("/nix/store/{rel}"),
            store_dir: store.to_path_buf(),
            rel: PathBuf::from(rel),
        }
    }

    /// `tree` written into the empty directory `root`, as a scratch customisation root is.
    fn materialise(tree: &JoinTree, root: &Path) {
        let dir = beneath::open_root(root).unwrap();
        super::super::custom_root::reconcile(&dir, tree, None).unwrap();
    }

    fn tree(root: &Path, files: &[(&str, &str)]) {
        for (rel, body) in files {
            let p = root.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, body).unwrap();
        }
    }

    #[test]
    fn perm_rules_parse() {
        let r: PermRule = "/etc/my file 0600 1000 -".parse().unwrap();
        assert!(r.regex.is_match("/etc/my file"));
        assert!(!r.regex.is_match("/etc/my file2"));
        assert_eq!((r.mode, r.uid, r.gid), (Some(0o600), Some(1000), None));
        assert!("x 999 0 0".parse::<PermRule>().is_err());
        assert!("x 0644 0".parse::<PermRule>().is_err());
        assert!("( 0644 0 0".parse::<PermRule>().is_err());
    }

    #[test]
    fn join_merges_directories_and_links_files() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        let b = t.path().join("b");
        tree(&a, &[("bin/x", "x"), ("share/doc/a", "a")]);
        tree(&b, &[("bin/y", "y")]);
        symlink("x", b.join("bin/z")).unwrap();
        let root = t.path().join("root");
        fs::create_dir(&root).unwrap();
        let contents = vec![dir(t.path(), "a"), dir(t.path(), "b")];
        materialise(&symlink_join(&contents, false).unwrap(), &root);
        assert!(fs::symlink_metadata(root.join("bin")).unwrap().is_dir());
        assert_eq!(
            fs::read_link(root.join("bin/x")).unwrap(),
            Path::new("/nix/store/a/bin/x")
        );
        assert_eq!(
            fs::read_link(root.join("bin/y")).unwrap(),
            Path::new("/nix/store/b/bin/y")
        );
        assert_eq!(fs::read_link(root.join("bin/z")).unwrap(), Path::new("x"));
        let names: Vec<String> = root_entries(&root, &[], 1, None)
            .unwrap()
            .iter()
            .map(|e| String::from_utf8(e.name.clone()).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/x",
                "bin/y",
                "bin/z",
                "share",
                "share/doc",
                "share/doc/a"
            ]
        );
    }

    #[test]
    fn collisions_fail_unless_ignored() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        let b = t.path().join("b");
        tree(&a, &[("bin/x", "1")]);
        tree(&b, &[("bin/x", "2")]);
        let contents = vec![dir(t.path(), "a"), dir(t.path(), "b")];
        let err = symlink_join(&contents, false).unwrap_err();
        assert!(err.to_string().contains("collide at '/bin/x'"), "{err}");
        let joined = symlink_join(&contents, true).unwrap();
        let JoinNode::Dir(bin) = &joined.entries[OsStr::new("bin")] else {
            panic!("bin is not a directory: {joined:?}");
        };
        assert_eq!(
            bin.entries[OsStr::new("x")],
            JoinNode::Link("/nix/store/a/bin/x".into())
        );
    }

    #[test]
    fn perms_apply_and_modes_are_normalised() {
        let t = tempfile::tempdir().unwrap();
        tree(t.path(), &[("etc/shadow", "s"), ("bin/run", "r")]);
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(t.path().join("bin/run"), fs::Permissions::from_mode(0o700)).unwrap();
        let rules = vec!["/etc/shadow 0600 0 42".parse().unwrap()];
        let entries = root_entries(t.path(), &rules, 5, None).unwrap();
        let find = |n: &str| entries.iter().find(|e| e.name == n.as_bytes()).unwrap();
        assert_eq!(find("bin/run").mode, 0o755);
        assert_eq!(
            (find("etc/shadow").mode, find("etc/shadow").gid),
            (0o600, 42)
        );
        assert_eq!(find("etc").mode, 0o755);
        assert_eq!(find("etc").mtime, 5);
    }

    #[test]
    fn extra_commands_run_in_the_root_and_failures_are_one_line() {
        let t = tempfile::tempdir().unwrap();
        // As root they run as nobody, who is given the root first.
        let me = rustix::process::geteuid();
        let user = me.is_root().then_some(NOBODY);
        let dir = beneath::open_root(t.path()).unwrap();
        super::super::custom_root::reconcile(&dir, &JoinTree::default(), user).unwrap();
        run_extra_commands(
            "mkdir -p tmp && echo hi > tmp/f && id -u > uid",
            t.path(),
            1,
        )
        .unwrap();
        assert_eq!(fs::read_to_string(t.path().join("tmp/f")).unwrap(), "hi\n");
        let expected = user.unwrap_or(me.as_raw());
        let uid = fs::read_to_string(t.path().join("uid")).unwrap();
        assert_eq!(uid.trim(), expected.to_string());
        let err = run_extra_commands("echo first >&2; echo boom >&2; false", t.path(), 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("boom") && !err.contains('\n'), "{err}");
    }

    #[test]
    fn contents_through_a_symlink_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let host = t.path().join("host");
        tree(&host, &[("sub/host-file", "h")]);
        let store = t.path().join("store");
        fs::create_dir_all(store.join("a")).unwrap();
        symlink(&host, store.join("a/out")).unwrap();
        symlink(&host, store.join("link")).unwrap();
        for rel in ["a/out", "a/out/sub", "link", "link/sub"] {
            let err = symlink_join(&[dir(&store, rel)], false)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("is not a directory in the store"),
                "{rel}: {err}"
            );
        }
        // The store path itself: its symlink stays a symlink.
        let joined = symlink_join(&[dir(&store, "a")], false).unwrap();
        assert_eq!(joined.entries[OsStr::new("out")], JoinNode::Link(host));
    }

    #[test]
    fn a_file_swapped_for_a_symlink_after_it_was_described_is_not_read() {
        let t = tempfile::tempdir().unwrap();
        let secret = t.path().join("secret");
        fs::write(&secret, "SECRET-BYTES").unwrap();
        let root = t.path().join("root");
        tree(&root, &[("etc/f", "decoy-bytes!")]);
        let entries = root_entries(&root, &[], 1, None).unwrap();
        // Between the look and the read, the file becomes a symlink to the secret.
        fs::rename(root.join("etc/f"), t.path().join("old")).unwrap();
        symlink(&secret, root.join("etc/f")).unwrap();
        let mut out = Vec::new();
        let err = super::super::tar::write_layer(&entries, &mut out).unwrap_err();
        assert!(err.to_string().contains("changed while"), "{err}");
        assert!(!out.windows(6).any(|w| w == b"SECRET"));
        // And the directory above it swapped for a symlink to a directory with an 'f'.
        let entries = {
            fs::remove_file(root.join("etc/f")).unwrap();
            fs::write(root.join("etc/f"), "decoy-bytes!").unwrap();
            root_entries(&root, &[], 1, None).unwrap()
        };
        let elsewhere = t.path().join("elsewhere");
        tree(&elsewhere, &[("f", "SECRET-BYTES")]);
        fs::rename(root.join("etc"), t.path().join("old-etc")).unwrap();
        symlink(&elsewhere, root.join("etc")).unwrap();
        let mut out = Vec::new();
        assert!(super::super::tar::write_layer(&entries, &mut out).is_err());
        assert!(!out.windows(6).any(|w| w == b"SECRET"));
    }

    #[test]
    fn special_files_in_the_root_are_refused_by_kind() {
        let t = tempfile::tempdir().unwrap();
        tree(t.path(), &[("etc/ok", "o")]);
        let socket = t.path().join("etc/sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let refusal = || {
            root_entries(t.path(), &[], 1, None)
                .unwrap_err()
                .to_string()
        };
        let err = refusal();
        assert!(
            err.contains("'/etc/sock' is a socket, not a file, directory or symlink"),
            "{err}"
        );
        fs::remove_file(&socket).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            t.path().join("etc/pipe"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let err = refusal();
        assert!(
            err.contains("'/etc/pipe' is a pipe, not a file, directory or symlink"),
            "{err}"
        );
    }

    #[test]
    fn files_not_owned_by_the_commands_user_are_refused() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        tree(t.path(), &[("mine", "m")]);
        let me = fs::metadata(t.path().join("mine")).unwrap().uid();
        root_entries(t.path(), &[], 1, Some(me)).unwrap();
        let err = root_entries(t.path(), &[], 1, Some(me + 1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("'/mine' is owned by uid"), "{err}");
    }

    #[test]
    fn background_processes_are_killed_when_the_script_ends() {
        let t = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(t.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let start = std::time::Instant::now();
        // One job holds the output open for a minute, one would write a file later, one
        // leaves the process group first.
        run_extra_commands(
            "sleep 60 & (sleep 0.5; touch late) & setsid sh -c 'sleep 0.5; touch later' &",
            t.path(),
            1,
        )
        .unwrap();
        assert!(start.elapsed().as_secs() < 30);
        std::thread::sleep(std::time::Duration::from_millis(1500));
        assert!(
            !t.path().join("late").exists(),
            "a background job outlived the script"
        );
        if rustix::process::geteuid().is_root() {
            assert!(
                !t.path().join("later").exists(),
                "setsid escaped the PID namespace"
            );
        }
    }
}
