//! The customisation layer: `--contents` store paths symlink-joined into a scratch root the
//! way nixpkgs' `symlinkJoin` (lndir) does it, `--extra-commands` run by bash in that root as
//! the invoking user, and the tree then turned into normalised layer entries whose ownership
//! and modes come from `--perms` rules instead of fakeroot.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

use regex::Regex;

use super::ImageError;
use super::tar::{Entry, EntryKind, Owner};

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

/// What goes into the customisation layer.
#[derive(Debug, Clone, Default)]
pub struct Customisation {
    /// `(logical path, physical path)` of each `--contents` path, in order.
    pub contents: Vec<(String, PathBuf)>,
    pub extra_commands: Option<String>,
    pub perms: Vec<PermRule>,
    /// Keep the first of two colliding files (what `symlinkJoin` does) instead of failing.
    pub ignore_collisions: bool,
}

/// Symlink-join `contents` into `root` (an empty directory): directories become real
/// directories, merged; a file becomes a symlink to its logical store path; a symlink is copied
/// with the same target. Two contents putting different things at one path is an error unless
/// `ignore_collisions`, when the first stays.
pub fn symlink_join(
    contents: &[(String, PathBuf)],
    root: &Path,
    ignore_collisions: bool,
) -> Result<(), ImageError> {
    let mut owners: BTreeMap<PathBuf, String> = BTreeMap::new();
    for (logical, physical) in contents {
        let meta = fs::symlink_metadata(physical).map_err(ImageError::io(physical))?;
        if !meta.is_dir() {
            return Err(ImageError::Invalid(format!(
                "--contents '{logical}' is not a directory (symlinkJoin merges directories)"
            )));
        }
        join_dir(
            physical,
            logical,
            root,
            Path::new(""),
            &mut owners,
            ignore_collisions,
        )?;
    }
    Ok(())
}

fn join_dir(
    src: &Path,
    logical: &str,
    root: &Path,
    rel: &Path,
    owners: &mut BTreeMap<PathBuf, String>,
    ignore: bool,
) -> Result<(), ImageError> {
    let dir = src.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .map_err(ImageError::io(&dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(ImageError::io(&dir))?;
    names.sort();
    for name in names {
        let rel = rel.join(&name);
        let s = src.join(&rel);
        let d = root.join(&rel);
        let shown = Path::new("/").join(&rel);
        let meta = fs::symlink_metadata(&s).map_err(ImageError::io(&s))?;
        let existing = fs::symlink_metadata(&d).ok();
        let collision = |owners: &BTreeMap<PathBuf, String>| {
            ImageError::Invalid(format!(
                "contents collide at '{}': '{}' and '{logical}' both provide it (--ignore-collisions keeps the first)",
                shown.display(),
                owners.get(&rel).map_or("extra files", String::as_str)
            ))
        };
        if meta.is_dir() {
            match existing {
                None => fs::create_dir(&d).map_err(ImageError::io(&d))?,
                Some(m) if m.is_dir() => {}
                Some(_) if ignore => continue,
                Some(_) => return Err(collision(owners)),
            }
            owners
                .entry(rel.clone())
                .or_insert_with(|| logical.to_string());
            join_dir(src, logical, root, &rel, owners, ignore)?;
            continue;
        }
        let target = if meta.file_type().is_symlink() {
            fs::read_link(&s).map_err(ImageError::io(&s))?
        } else {
            PathBuf::from(logical).join(&rel)
        };
        match existing {
            None => {
                symlink(&target, &d).map_err(ImageError::io(&d))?;
                owners.insert(rel, logical.to_string());
            }
            Some(m) if m.file_type().is_symlink() && fs::read_link(&d).ok() == Some(target) => {}
            Some(_) if ignore => {}
            Some(_) => return Err(collision(owners)),
        }
    }
    Ok(())
}

/// The user extra commands run as when mkimage runs as root.
pub const NOBODY: u32 = 65534;

/// Run `script` with `bash -e` in `root`, umask 022, `TZ=UTC`, `LC_ALL=C` and
/// `SOURCE_DATE_EPOCH`, unprivileged: as the invoking user, or as nobody (65534:65534, no
/// supplementary groups, the root chowned to it first) when that is root. Its output goes to
/// stderr; if it fails, the error carries its last line.
pub fn run_extra_commands(script: &str, root: &Path, mtime: u64) -> Result<(), ImageError> {
    use std::os::unix::process::CommandExt;
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    let mut cmd = Command::new("bash");
    if fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
    {
        for entry in walkdir::WalkDir::new(root) {
            let entry = entry.map_err(|e| ImageError::Io {
                path: root.to_path_buf(),
                source: e.into(),
            })?;
            std::os::unix::fs::lchown(entry.path(), Some(NOBODY), Some(NOBODY))
                .map_err(ImageError::io(entry.path()))?;
        }
        cmd.uid(NOBODY).gid(NOBODY);
    }
    let out = cmd
        .arg("-e")
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
        .output()
        .map_err(|e| ImageError::Invalid(format!("--extra-commands: cannot run bash: {e}")))?;
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        return Err(ImageError::Invalid(format!(
            "--extra-commands failed ({}): {last}",
            out.status
        )));
    }
    if !text.is_empty() {
        eprint!("{text}");
    }
    Ok(())
}

/// The normalised entries of the tree under `root`, named relative to `/` without a leading
/// `./` (`bin/`, `bin/hello`), in component-wise sorted order. Directories are 0755, files
/// 0755 if any execute bit is set and 0644 otherwise, symlinks 0777, owner 0:0 with numeric
/// names only; then every matching `--perms` rule applies in order.
pub fn root_entries(root: &Path, perms: &[PermRule], mtime: u64) -> Result<Vec<Entry>, ImageError> {
    let owner = Owner {
        uid: 0,
        gid: 0,
        uname: String::new(),
        gname: String::new(),
        mtime,
    };
    let mut out = Vec::new();
    let walk = walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by(|a, b| a.file_name().cmp(b.file_name()));
    for item in walk {
        let item = item.map_err(|e| ImageError::Io {
            path: e.path().unwrap_or(root).to_path_buf(),
            source: e.into(),
        })?;
        let path = item.path();
        let rel = path.strip_prefix(root).unwrap_or(path);
        let name = rel.as_os_str().as_encoded_bytes().to_vec();
        let meta = fs::symlink_metadata(path).map_err(ImageError::io(path))?;
        let ft = meta.file_type();
        let (kind, mode) = if ft.is_dir() {
            (EntryKind::Dir, 0o755)
        } else if ft.is_symlink() {
            let target = fs::read_link(path).map_err(ImageError::io(path))?;
            let target = target.into_os_string().into_encoded_bytes();
            (EntryKind::Symlink { target }, 0o777)
        } else if ft.is_file() {
            let mode = if meta.mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            let size = meta.len();
            let source = path.to_path_buf();
            (EntryKind::File { source, size }, mode)
        } else {
            return Err(ImageError::Invalid(format!(
                "customisation root: '/{}' is not a file, directory or symlink",
                rel.display()
            )));
        };
        let mut entry = Entry::new(name, kind, mode, &owner);
        let shown = format!("/{}", rel.to_string_lossy());
        for rule in perms.iter().filter(|r| r.regex.is_match(&shown)) {
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
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let contents = vec![
            ("/nix/store/a".to_string(), a.clone()),
            ("/nix/store/b".to_string(), b.clone()),
        ];
        symlink_join(&contents, &root, false).unwrap();
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
        let names: Vec<String> = root_entries(&root, &[], 1)
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
        let contents = vec![
            ("/nix/store/a".to_string(), a),
            ("/nix/store/b".to_string(), b),
        ];
        let root = t.path().join("root");
        fs::create_dir(&root).unwrap();
        let err = symlink_join(&contents, &root, false).unwrap_err();
        assert!(err.to_string().contains("collide at '/bin/x'"), "{err}");
        let root2 = t.path().join("root2");
        fs::create_dir(&root2).unwrap();
        symlink_join(&contents, &root2, true).unwrap();
        assert_eq!(
            fs::read_link(root2.join("bin/x")).unwrap(),
            Path::new("/nix/store/a/bin/x")
        );
    }

    #[test]
    fn perms_apply_and_modes_are_normalised() {
        let t = tempfile::tempdir().unwrap();
        tree(t.path(), &[("etc/shadow", "s"), ("bin/run", "r")]);
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(t.path().join("bin/run"), fs::Permissions::from_mode(0o700)).unwrap();
        let rules = vec!["/etc/shadow 0600 0 42".parse().unwrap()];
        let entries = root_entries(t.path(), &rules, 5).unwrap();
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
        run_extra_commands(
            "mkdir -p tmp && echo hi > tmp/f && id -u > uid",
            t.path(),
            1,
        )
        .unwrap();
        assert_eq!(fs::read_to_string(t.path().join("tmp/f")).unwrap(), "hi\n");
        let me = fs::metadata("/proc/self").unwrap().uid();
        let expected = if me == 0 { NOBODY } else { me };
        let uid = fs::read_to_string(t.path().join("uid")).unwrap();
        assert_eq!(uid.trim(), expected.to_string());
        let err = run_extra_commands("echo first >&2; echo boom >&2; false", t.path(), 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("boom") && !err.contains('\n'), "{err}");
    }
}
