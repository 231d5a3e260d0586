//! `/etc/passwd`, `/etc/group` and `/etc/nsswitch.conf` for an image without a
//! distribution's maintainer scripts (Debian's `base-passwd` writes these from its postinst,
//! which strata never runs). Like nixpkgs' `fakeNss`: root and nobody, plus the users asked
//! for, each with a primary group of the same name unless its GID is already a group.

use std::fmt::Write as _;

use super::{RootfsError, add_tree, write_file};
use crate::nix::path_info::PathInfo;
use crate::store::Store;

/// The store path name of the generated tree.
pub const NAME: &str = "nss-files";

/// `/etc/nsswitch.conf`: everything from files, hosts from files then DNS (glibc's
/// built-in resolver), so `getent hosts localhost` reads the `/etc/hosts` the runtime mounts.
pub const NSSWITCH: &str = "\
passwd:         files
group:          files
shadow:         files
hosts:          files dns
networks:       files
protocols:      files
services:       files
ethers:         files
rpc:            files
";

/// One `/etc/passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

/// The two users every image gets, as Debian's base-passwd defines them.
pub fn builtin_users() -> Vec<User> {
    let user = |name: &str, id: u32, home: &str, shell: &str| User {
        name: name.into(),
        uid: id,
        gid: id,
        home: home.into(),
        shell: shell.into(),
    };
    vec![
        user("root", 0, "/root", "/bin/sh"),
        user("nobody", 65534, "/nonexistent", "/usr/sbin/nologin"),
    ]
}

/// The groups every image gets (Debian's names: nobody's group is `nogroup`).
const BUILTIN_GROUPS: [(&str, u32); 2] = [("root", 0), ("nogroup", 65534)];

/// Parse `NAME:UID:GID[:HOME[:SHELL]]` (HOME defaults to `/`, SHELL to `/bin/sh`).
pub fn parse_user(spec: &str) -> Result<User, RootfsError> {
    let bad = |reason: &str| RootfsError::BadUser {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let fields: Vec<&str> = spec.split(':').collect();
    if !(3..=5).contains(&fields.len()) {
        return Err(bad("expected NAME:UID:GID[:HOME[:SHELL]]"));
    }
    let name = fields[0];
    let name_ok = !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !name_ok {
        return Err(bad(
            "a name is 1 to 32 of [a-z0-9_-], starting with a letter or _",
        ));
    }
    let id = |text: &str, what: &str| -> Result<u32, RootfsError> {
        match text.parse::<u32>() {
            // (uid_t)-1 means "no change" to chown and setuid.
            Ok(n) if n != u32::MAX && text.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(bad(&format!("{what} must be a number below 4294967295"))),
        }
    };
    let uid = id(fields[1], "UID")?;
    let gid = id(fields[2], "GID")?;
    let path = |text: Option<&&str>, default: &str, what: &str| -> Result<String, RootfsError> {
        let text = text.copied().unwrap_or(default);
        if !text.starts_with('/') || text.chars().any(|c| c.is_control()) {
            return Err(bad(&format!(
                "{what} must be an absolute path without control characters"
            )));
        }
        Ok(text.to_string())
    };
    let home = path(fields.get(3), "/", "HOME")?;
    let shell = path(fields.get(4), "/bin/sh", "SHELL")?;
    Ok(User {
        name: name.to_string(),
        uid,
        gid,
        home,
        shell,
    })
}

/// The three files' contents, in order: passwd, group, nsswitch.conf.
pub fn render(extra: &[User]) -> Result<(String, String, String), RootfsError> {
    let mut users = builtin_users();
    let mut groups: Vec<(String, u32)> = BUILTIN_GROUPS
        .iter()
        .map(|&(n, g)| (n.to_string(), g))
        .collect();
    for user in extra {
        let taken = |reason: String| RootfsError::BadUser {
            spec: user.name.clone(),
            reason,
        };
        if users.iter().any(|u| u.name == user.name) {
            return Err(taken(format!("user '{}' is defined twice", user.name)));
        }
        match groups.iter().find(|(_, g)| *g == user.gid) {
            Some(_) => {}
            None if groups.iter().any(|(n, _)| *n == user.name) => {
                return Err(taken(format!(
                    "group '{}' already exists with another GID",
                    user.name
                )));
            }
            None => groups.push((user.name.clone(), user.gid)),
        }
        users.push(user.clone());
    }
    let mut passwd = String::new();
    for u in &users {
        let _ = writeln!(
            passwd,
            "{}:x:{}:{}:{}:{}:{}",
            u.name, u.uid, u.gid, u.name, u.home, u.shell
        );
    }
    let mut group = String::new();
    for (name, gid) in &groups {
        let _ = writeln!(group, "{name}:x:{gid}:");
    }
    Ok((passwd, group, NSSWITCH.to_string()))
}

/// Add `etc/passwd`, `etc/group` and `etc/nsswitch.conf` as the store path `nss-files`.
pub fn add(store: &Store, extra: &[User]) -> Result<PathInfo, RootfsError> {
    let (passwd, group, nsswitch) = render(extra)?;
    add_tree(store, NAME, &Default::default(), |tree| {
        write_file(tree, "etc/passwd", passwd.as_bytes())?;
        write_file(tree, "etc/group", group.as_bytes())?;
        write_file(tree, "etc/nsswitch.conf", nsswitch.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_parsed_with_defaults() {
        assert_eq!(
            parse_user("app:1000:1000").unwrap(),
            User {
                name: "app".into(),
                uid: 1000,
                gid: 1000,
                home: "/".into(),
                shell: "/bin/sh".into()
            }
        );
        let u = parse_user("_svc-1:7:8:/srv:/bin/bash").unwrap();
        assert_eq!((u.home.as_str(), u.shell.as_str()), ("/srv", "/bin/bash"));
    }

    #[test]
    fn hostile_users_are_refused() {
        for spec in [
            "app",
            "app:1",
            "app:1:2:/h:/s:extra",
            "r00t:x:0",
            "app:1:-1",
            "app:+1:1",
            "app:1:4294967295",
            "app:1:99999999999",
            "App:1:1",
            "1app:1:1",
            "ap\np:1:1",
            "app:1:1:/home\nroot::0:0",
            "app:1:1:relative",
            "app:1:1:/h:sh",
            ":1:1",
            "a23456789012345678901234567890123:1:1",
        ] {
            let err = parse_user(spec).expect_err(spec);
            assert!(err.is_usage(), "{spec}");
            assert!(!err.to_string().contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn files_hold_root_nobody_and_the_users() {
        let users = [
            parse_user("app:1000:1000:/home/app").unwrap(),
            parse_user("worker:1001:1000").unwrap(),
            parse_user("daemon2:2:0").unwrap(),
        ];
        let (passwd, group, nsswitch) = render(&users).unwrap();
        assert_eq!(
            passwd,
            "root:x:0:0:root:/root:/bin/sh\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
             app:x:1000:1000:app:/home/app:/bin/sh\n\
             worker:x:1001:1000:worker:/:/bin/sh\n\
             daemon2:x:2:0:daemon2:/:/bin/sh\n"
        );
        assert_eq!(group, "root:x:0:\nnogroup:x:65534:\napp:x:1000:\n");
        assert!(nsswitch.contains("\nhosts:          files dns\n"));
    }

    #[test]
    fn clashing_names_are_refused() {
        for spec in ["root:5:5", "nobody:5:5", "nogroup:5:5"] {
            let err = render(&[parse_user(spec).unwrap()]).expect_err(spec);
            assert!(err.is_usage(), "{spec}");
        }
        let twice = [parse_user("a:5:5").unwrap(), parse_user("a:6:6").unwrap()];
        assert!(render(&twice).is_err());
    }
}
