//! Debian control data: the `Package`, `Version`, `Provides` and dependency fields of a
//! package, and the rule that turns a package into a valid store path name.

use std::collections::BTreeMap;

/// One alternative of a dependency clause (`libc6 (>= 2.34)`, `debconf-2.0`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Alternative {
    pub package: String,
    /// The version constraint as written, e.g. `>= 2.34`; not checked.
    pub constraint: Option<String>,
}

/// A comma-separated clause: satisfied by any one of its alternatives.
pub type Clause = Vec<Alternative>;

/// What strata needs from a package's `control` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    pub package: String,
    pub version: String,
    pub architecture: Option<String>,
    /// `Pre-Depends` then `Depends`.
    pub depends: Vec<Clause>,
    pub provides: Vec<String>,
}

/// Errors reading a control file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("control file has no '{0}' field")]
    MissingField(&'static str),
}

/// Parse RFC-822-style fields: `Name: value` with continuation lines starting with a space.
pub fn fields(text: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(key) = &last
                && let Some(value) = out.get_mut(key)
            {
                value.push('\n');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((key, value)) = line.split_once(':') {
            let key = key.trim().to_string();
            out.insert(key.clone(), value.trim().to_string());
            last = Some(key);
        }
    }
    out
}

/// Parse a dependency field (`a (>= 1) | b, c:any`).
pub fn parse_relations(value: &str) -> Vec<Clause> {
    value
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|clause| {
            clause
                .split('|')
                .map(|alt| {
                    let alt = alt.trim();
                    let (name, constraint) = match alt.split_once('(') {
                        Some((n, rest)) => (
                            n.trim(),
                            Some(rest.trim_end_matches(')').trim().to_string()),
                        ),
                        None => (alt, None),
                    };
                    // Drop architecture qualifiers (`:any`, `:amd64`) and restrictions (`[…]`, `<…>`).
                    let name = name.split([':', '[', '<', ' ']).next().unwrap_or(name);
                    Alternative {
                        package: name.to_string(),
                        constraint,
                    }
                })
                .collect()
        })
        .collect()
}

impl Control {
    pub fn parse(text: &str) -> Result<Control, ControlError> {
        let f = fields(text);
        let get = |k: &'static str| f.get(k).cloned().ok_or(ControlError::MissingField(k));
        let mut depends = Vec::new();
        for key in ["Pre-Depends", "Depends"] {
            if let Some(v) = f.get(key) {
                depends.extend(parse_relations(v));
            }
        }
        let provides = f
            .get("Provides")
            .map(|v| {
                parse_relations(v)
                    .into_iter()
                    .flatten()
                    .map(|a| a.package)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Control {
            package: get("Package")?,
            version: get("Version")?,
            architecture: f.get("Architecture").cloned(),
            depends,
            provides,
        })
    }

    /// The store path name: `PACKAGE-VERSION`, with every character a store path name may
    /// not hold (the epoch's `:`, `~`) replaced by `_`.
    pub fn store_name(&self) -> String {
        format!("{}-{}", self.package, self.version)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_' | '?' | '=') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JRE: &str = "Package: openjdk-17-jre-headless\nVersion: 17.0.15+6-1~deb12u1\nArchitecture: amd64\n\
Pre-Depends: libc6 (>= 2.34)\nDepends: java-common (>= 0.28), zlib1g (>= 1:1.1.4),\n libgcc-s1 | libgcc1, ca-certificates-java:any\n\
Provides: java-runtime-headless, java17-runtime-headless\nDescription: x\n more\n";

    #[test]
    fn parses_relations() {
        let c = Control::parse(JRE).unwrap();
        assert_eq!(c.package, "openjdk-17-jre-headless");
        let names: Vec<Vec<&str>> = c
            .depends
            .iter()
            .map(|cl| cl.iter().map(|a| a.package.as_str()).collect())
            .collect();
        assert_eq!(
            names,
            vec![
                vec!["libc6"],
                vec!["java-common"],
                vec!["zlib1g"],
                vec!["libgcc-s1", "libgcc1"],
                vec!["ca-certificates-java"]
            ]
        );
        assert_eq!(c.depends[2][0].constraint.as_deref(), Some(">= 1:1.1.4"));
        assert_eq!(
            c.provides,
            ["java-runtime-headless", "java17-runtime-headless"]
        );
    }

    #[test]
    fn store_names() {
        let c = Control::parse("Package: zlib1g\nVersion: 1:1.2.13.dfsg-1\n").unwrap();
        assert_eq!(c.store_name(), "zlib1g-1_1.2.13.dfsg-1");
        let c = Control::parse(JRE).unwrap();
        assert_eq!(
            c.store_name(),
            "openjdk-17-jre-headless-17.0.15+6-1_deb12u1"
        );
        assert!(Control::parse("Version: 1\n").is_err());
    }
}
