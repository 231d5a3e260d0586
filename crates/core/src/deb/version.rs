//! Debian version numbers and relations, compared as dpkg compares them (Debian policy
//! §5.6.12): `[epoch:]upstream[-revision]`, where non-digit runs sort with `~` before
//! everything (even the end of the string) and letters before other characters, and digit runs
//! compare as numbers. Resolution needs this to pick the highest candidate and to check
//! constraints such as `libc6 (>= 2.34)`.

use std::cmp::Ordering;

/// A relation operator of a dependency (`<<`, `<=`, `=`, `>=`, `>>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
}

/// A version constraint: `>= 2.34`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Constraint {
    pub op: Op,
    pub version: String,
}

/// Errors reading a constraint.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VersionError {
    #[error("bad version constraint '{0}'")]
    BadConstraint(String),
}

impl Constraint {
    /// Parse `>= 2.34` (also the obsolete `<` and `>`, which mean `<=` and `>=`).
    pub fn parse(text: &str) -> Result<Constraint, VersionError> {
        let t = text.trim();
        let bad = || VersionError::BadConstraint(text.to_string());
        let (op, rest) = [
            ("<<", Op::Lt),
            ("<=", Op::Le),
            (">=", Op::Ge),
            (">>", Op::Gt),
            ("=", Op::Eq),
            ("<", Op::Le),
            (">", Op::Ge),
        ]
        .iter()
        .find_map(|(s, op)| t.strip_prefix(s).map(|rest| (*op, rest)))
        .ok_or_else(bad)?;
        let version = rest.trim();
        if version.is_empty() || version.contains(char::is_whitespace) {
            return Err(bad());
        }
        Ok(Constraint {
            op,
            version: version.to_string(),
        })
    }

    /// Whether `version` satisfies the constraint.
    pub fn matches(&self, version: &str) -> bool {
        let ord = compare(version, &self.version);
        match self.op {
            Op::Lt => ord == Ordering::Less,
            Op::Le => ord != Ordering::Greater,
            Op::Eq => ord == Ordering::Equal,
            Op::Ge => ord != Ordering::Less,
            Op::Gt => ord == Ordering::Greater,
        }
    }
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            Op::Lt => "<<",
            Op::Le => "<=",
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Gt => ">>",
        };
        write!(f, "{op} {}", self.version)
    }
}

/// Split `epoch:upstream-revision` (a missing epoch is 0, a missing revision is empty).
fn split(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, rest)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => {
            (e.parse().unwrap_or(u64::MAX), rest)
        }
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((up, rev)) => (epoch, up, rev),
        None => (epoch, rest, ""),
    }
}

/// The weight of a character in a non-digit run: `~` lowest, then the end, then letters,
/// then everything else.
fn weight(c: Option<u8>) -> i32 {
    match c {
        Some(b'~') => -1,
        None => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

fn compare_part(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    while !a.is_empty() || !b.is_empty() {
        // Non-digit prefix.
        loop {
            let ca = a.first().copied().filter(|c| !c.is_ascii_digit());
            let cb = b.first().copied().filter(|c| !c.is_ascii_digit());
            if ca.is_none() && cb.is_none() {
                break;
            }
            let (wa, wb) = (weight(ca), weight(cb));
            if wa != wb {
                return wa.cmp(&wb);
            }
            a = &a[1..];
            b = &b[1..];
        }
        // Digit run, as a number (leading zeros ignored; any length).
        let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
        let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let na = trim_zeros(&a[..da]);
        let nb = trim_zeros(&b[..db]);
        let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
        if ord != Ordering::Equal {
            return ord;
        }
        a = &a[da..];
        b = &b[db..];
    }
    Ordering::Equal
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let start = d.iter().take_while(|c| **c == b'0').count();
    &d[start..]
}

/// Compare two Debian versions as dpkg does.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| compare_part(ua, ub))
        .then_with(|| compare_part(ra, rb))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn compares_as_dpkg() {
        // (a, b, expected): checked against `dpkg --compare-versions`.
        let cases = [
            ("1.0", "1.0", Equal),
            ("1.0", "1.1", Less),
            ("1.0~rc1", "1.0", Less),
            ("1.0~~", "1.0~", Less),
            ("1.0~", "1.0", Less),
            ("1.0", "1.0+b1", Less),
            ("1.0a", "1.0", Greater),
            ("1.0.", "1.0a", Greater),
            ("1:1.0", "2.0", Greater),
            ("0:1.0", "1.0", Equal),
            ("1.10", "1.9", Greater),
            ("1.010", "1.10", Equal),
            ("2.36-9+deb12u14", "2.36-9+deb12u4", Greater),
            ("17.0.15+6-1~deb12u1", "17.0.15+6-1", Less),
            ("5.2.15-2+b13", "5.2.15-2+b2", Greater),
            ("1.2.3-1-2", "1.2.3-1-10", Less),
            ("1:1.2.13.dfsg-1", "1:1.1.4", Greater),
            ("99999999999999999999999", "9", Greater),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn constraints() {
        let c = Constraint::parse(">= 2.34").unwrap();
        assert!(c.matches("2.36-9"));
        assert!(!c.matches("2.33"));
        assert!(Constraint::parse("<< 1.0").unwrap().matches("1.0~rc1"));
        assert!(!Constraint::parse(">> 1.0").unwrap().matches("1.0"));
        assert!(Constraint::parse("= 1:1.0").unwrap().matches("1:1.0"));
        assert!(Constraint::parse("<= 1.0").unwrap().matches("1.0"));
        assert_eq!(Constraint::parse(">=2.34").unwrap().to_string(), ">= 2.34");
        assert!(Constraint::parse("~ 1").is_err());
        assert!(Constraint::parse(">=").is_err());
    }
}
