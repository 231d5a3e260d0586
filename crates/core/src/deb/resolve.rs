//! Resolution: from package names to the closure of their `Pre-Depends` and `Depends` in a set
//! of package indexes, choosing as `apt-get install --no-install-recommends` does on an empty
//! system, so a runtime is named rather than hand-collected (see docs/debian.md for the rules).

use std::collections::{BTreeMap, BTreeSet};

use super::index::{Index, IndexPackage, Relation};

/// Errors resolving.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    #[error("no package '{0}' in the package indexes")]
    Unknown(String),
    #[error("no version '{version}' of '{name}' in the package indexes")]
    UnknownVersion { name: String, version: String },
    #[error("'{0}' is both asked for and excluded")]
    ExcludedRequest(String),
    #[error("{package} {version}: no package in the indexes satisfies its dependency '{clause}'")]
    Unsatisfiable {
        package: String,
        version: String,
        clause: String,
    },
}

/// One selected package and why it is there.
#[derive(Debug, Clone)]
pub struct Resolved<'a> {
    pub package: &'a IndexPackage,
    /// The package whose dependency pulled it in; `None` for a package asked for.
    pub pulled_by: Option<String>,
    /// That dependency as written (`libc6 (>= 2.34)`, `awk`).
    pub via: Option<String>,
}

/// The selected closure.
#[derive(Debug, Clone, Default)]
pub struct Resolution<'a> {
    /// Name → package (one version per name).
    pub packages: BTreeMap<String, Resolved<'a>>,
    /// Dependencies left out because they chose an excluded package: (package, excluded).
    pub pruned: Vec<(String, String)>,
}

impl Resolution<'_> {
    /// The chain from a package asked for down to `name` (`[python3, python3.11, libc6]`), or
    /// `None` when `name` is not in the closure.
    pub fn why(&self, name: &str) -> Option<Vec<(String, Option<String>)>> {
        let mut chain = Vec::new();
        let mut at = name.to_string();
        loop {
            let r = self.packages.get(&at)?;
            chain.push((at.clone(), r.via.clone()));
            match &r.pulled_by {
                Some(parent) if chain.len() <= self.packages.len() => at = parent.clone(),
                _ => break,
            }
        }
        chain.reverse();
        Some(chain)
    }
}

/// A request: `NAME` (its candidate) or `NAME=VERSION`.
fn request<'a>(index: &'a Index, text: &str) -> Result<&'a IndexPackage, ResolveError> {
    match text.split_once('=') {
        Some((name, version)) => {
            index
                .get(name, version)
                .ok_or_else(|| ResolveError::UnknownVersion {
                    name: name.to_string(),
                    version: version.to_string(),
                })
        }
        None => index
            .candidate(text)
            .ok_or_else(|| ResolveError::Unknown(text.to_string())),
    }
}

/// How strongly a `Priority` ranks when several packages provide a name (lower wins).
fn priority_rank(p: &IndexPackage) -> u8 {
    match p.priority.as_deref() {
        Some("required") => 1,
        Some("important") => 2,
        Some("standard") => 3,
        Some("optional") => 4,
        Some("extra") => 5,
        _ => 6,
    }
}

/// Whether the architecture qualifier of `rel` accepts the real package `p`.
fn arch_accepts(index: &Index, rel: &Relation, p: &IndexPackage) -> bool {
    match rel.arch.as_deref() {
        None | Some("native") => true,
        // `foo:any` is satisfied only by a package that declares it may serve any
        // architecture's dependents.
        Some("any") => p.multi_arch.as_deref() == Some("allowed"),
        Some(arch) => {
            p.architecture == arch || (p.architecture == "all" && arch == index.architecture)
        }
    }
}

/// Whether package `p` satisfies `rel`: by name (and version), or by what it provides.
pub fn satisfies(index: &Index, rel: &Relation, p: &IndexPackage) -> bool {
    if p.name == rel.name {
        return arch_accepts(index, rel, p)
            && rel
                .constraint
                .as_ref()
                .is_none_or(|c| c.matches(&p.version));
    }
    p.provides.iter().any(|(name, version)| {
        name == &rel.name
            && match (&rel.constraint, version) {
                (None, _) => true,
                (Some(c), Some(v)) => c.matches(v),
                (Some(_), None) => false,
            }
    })
}

/// The package apt installs for a clause nothing selected satisfies yet: the first
/// alternative a candidate satisfies, by name, else by the best of the candidates that
/// provide it (Essential first, then the more important `Priority`, then by name).
pub fn choose<'a>(index: &'a Index, clause: &[Relation]) -> Option<&'a IndexPackage> {
    for rel in clause {
        if let Some(c) = index.candidate(&rel.name)
            && satisfies(index, rel, c)
        {
            return Some(c);
        }
        let best = index
            .providers
            .get(&rel.name)
            .into_iter()
            .flatten()
            .filter_map(|(name, version)| {
                index
                    .candidate(name)
                    .filter(|c| &c.version == version && satisfies(index, rel, c))
            })
            .min_by(|a, b| {
                (!a.essential, priority_rank(a), &a.name).cmp(&(
                    !b.essential,
                    priority_rank(b),
                    &b.name,
                ))
            });
        if best.is_some() {
            return best;
        }
    }
    None
}

fn clause_text(clause: &[Relation]) -> String {
    clause
        .iter()
        .map(Relation::to_string)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Resolve the closure of `names` (each `NAME` or `NAME=VERSION`), leaving out `exclude`d
/// packages and what only they pull in.
pub fn resolve<'a>(
    index: &'a Index,
    names: &[String],
    exclude: &BTreeSet<String>,
) -> Result<Resolution<'a>, ResolveError> {
    let mut out = Resolution::default();
    for name in names {
        let p = request(index, name)?;
        if exclude.contains(&p.name) {
            return Err(ResolveError::ExcludedRequest(p.name.clone()));
        }
        install(index, p, None, exclude, &mut out)?;
    }
    Ok(out)
}

fn install<'a>(
    index: &'a Index,
    p: &'a IndexPackage,
    from: Option<(String, String)>,
    exclude: &BTreeSet<String>,
    out: &mut Resolution<'a>,
) -> Result<(), ResolveError> {
    if out.packages.contains_key(&p.name) {
        return Ok(());
    }
    let (pulled_by, via) = match from {
        Some((parent, via)) => (Some(parent), Some(via)),
        None => (None, None),
    };
    out.packages.insert(
        p.name.clone(),
        Resolved {
            package: p,
            pulled_by,
            via,
        },
    );
    for clause in &p.depends {
        let done = clause.iter().any(|rel| {
            out.packages
                .values()
                .any(|r| satisfies(index, rel, r.package))
        });
        if done {
            continue;
        }
        let Some(chosen) = choose(index, clause) else {
            return Err(ResolveError::Unsatisfiable {
                package: p.name.clone(),
                version: p.version.clone(),
                clause: clause_text(clause),
            });
        };
        if exclude.contains(&chosen.name) {
            out.pruned.push((p.name.clone(), chosen.name.clone()));
            continue;
        }
        install(
            index,
            chosen,
            Some((p.name.clone(), clause_text(clause))),
            exclude,
            out,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn index(text: &str) -> Index {
        let dir = tempfile::tempdir().unwrap();
        let path: PathBuf = dir.path().join("t_Packages");
        std::fs::write(&path, text).unwrap();
        Index::read(&[path], "amd64").unwrap()
    }

    const SET: &str = "\
Package: app\nVersion: 1\nArchitecture: amd64\nDepends: libc (>= 2), awk, py:any, gone | alt, tool\n\n\
Package: libc\nVersion: 1\nArchitecture: amd64\n\n\
Package: libc\nVersion: 2~rc1\nArchitecture: amd64\n\n\
Package: libc\nVersion: 2.1\nArchitecture: amd64\n\n\
Package: gawk\nVersion: 1\nArchitecture: amd64\nPriority: optional\nProvides: awk\n\n\
Package: mawk\nVersion: 1\nArchitecture: amd64\nPriority: required\nProvides: awk\n\n\
Package: py\nVersion: 3\nArchitecture: amd64\nMulti-Arch: allowed\n\n\
Package: alt\nVersion: 1\nArchitecture: all\n\n\
Package: tool\nVersion: 1\nArchitecture: amd64\nDepends: helper\n\n\
Package: helper\nVersion: 1\nArchitecture: amd64\nDepends: libc\n";

    fn names(r: &Resolution) -> Vec<String> {
        r.packages
            .iter()
            .map(|(n, p)| format!("{n}={}", p.package.version))
            .collect()
    }

    #[test]
    fn picks_as_apt() {
        let idx = index(SET);
        let r = resolve(&idx, &["app".into()], &BTreeSet::new()).unwrap();
        assert_eq!(
            names(&r),
            [
                "alt=1", "app=1", "helper=1", "libc=2.1", "mawk=1", "py=3", "tool=1"
            ]
        );
        let why = r.why("helper").unwrap();
        let chain: Vec<&str> = why.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(chain, ["app", "tool", "helper"]);
        assert!(r.why("gawk").is_none());
    }

    #[test]
    fn excludes_prune_what_only_they_pull() {
        let idx = index(SET);
        let ex: BTreeSet<String> = ["tool".to_string()].into();
        let r = resolve(&idx, &["app".into()], &ex).unwrap();
        assert!(!r.packages.contains_key("tool"));
        assert!(!r.packages.contains_key("helper"));
        assert!(r.packages.contains_key("libc"));
        assert_eq!(r.pruned, [("app".to_string(), "tool".to_string())]);
        assert_eq!(
            resolve(&idx, &["tool".into()], &ex).unwrap_err(),
            ResolveError::ExcludedRequest("tool".into())
        );
    }

    #[test]
    fn errors_name_the_input() {
        let idx = index(
            "Package: a\nVersion: 1\nArchitecture: amd64\nDepends: b (>= 3), c:any\n\n\
Package: b\nVersion: 2\nArchitecture: amd64\n\n\
Package: c\nVersion: 1\nArchitecture: amd64\n",
        );
        assert_eq!(
            resolve(&idx, &["a".into()], &BTreeSet::new()).unwrap_err(),
            ResolveError::Unsatisfiable {
                package: "a".into(),
                version: "1".into(),
                clause: "b (>= 3)".into()
            }
        );
        assert!(matches!(
            resolve(&idx, &["zz".into()], &BTreeSet::new()),
            Err(ResolveError::Unknown(_))
        ));
        assert!(matches!(
            resolve(&idx, &["b=1".into()], &BTreeSet::new()),
            Err(ResolveError::UnknownVersion { .. })
        ));
        // `c:any` needs Multi-Arch: allowed.
        let idx = index(
            "Package: a\nVersion: 1\nArchitecture: amd64\nDepends: c:any\n\n\
Package: c\nVersion: 1\nArchitecture: amd64\n",
        );
        assert!(resolve(&idx, &["a".into()], &BTreeSet::new()).is_err());
    }
}
