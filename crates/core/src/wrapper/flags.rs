//! The makeWrapper flag language: raw arguments parsed left to right into [`Flag`]s, with
//! everything nixpkgs would accept silently (bad names, empty values, unknown flags, missing
//! operands) refused before anything is written.

use super::quote::bash_quote;

/// One makeWrapper flag, validated. Order matters: the wrapper runs them as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flag {
    /// `--argv0 NAME`: the program's `argv[0]` (quoted, so `$0` is literal here).
    Argv0(String),
    /// `--inherit-argv0`: the program gets the wrapper's own `$0`.
    InheritArgv0,
    /// `--resolve-argv0`: accepted for compatibility; bash already resolves `$0`.
    ResolveArgv0,
    /// `--set VAR VALUE`.
    Set { var: String, value: String },
    /// `--set-default VAR VALUE`: only if VAR is unset (an empty value is kept).
    SetDefault { var: String, value: String },
    /// `--unset VAR`.
    Unset { var: String },
    /// `--chdir DIR`.
    Chdir(String),
    /// `--run COMMAND`: a line of bash, written as it is.
    Run(String),
    /// `--prefix`, `--suffix`, and their `-each` and `-contents` forms.
    List(ListEdit),
    /// `--add-flags ARGS`: shell words before the caller's arguments (split, expanded at run
    /// time, as in nixpkgs).
    AddFlags(String),
    /// `--append-flags ARGS`: shell words after the caller's arguments.
    AppendFlags(String),
    /// `--add-flag ARG`: one argument before the caller's arguments (quoted).
    AddFlag(String),
    /// `--append-flag ARG`: one argument after the caller's arguments (quoted).
    AppendFlag(String),
}

impl Flag {
    /// Replace the values that may name paths through `expand` (which turns `@NAME[/SUB]` into
    /// a path): the VALUE of `--set`/`--set-default`, the DIR of `--chdir`, the ARG of
    /// `--add-flag`/`--append-flag`, each SEP-separated component of a `--prefix`/`--suffix`
    /// (and `-each`) value, and each `-contents` file. Variable names, separators, `--argv0`,
    /// `--run` and the shell words of `--add-flags`/`--append-flags` are left as they are.
    pub fn expand_values<E>(
        &mut self,
        expand: &mut dyn FnMut(&str) -> Result<String, E>,
    ) -> Result<(), E> {
        let mut list = |value: &mut String, sep: &str| -> Result<(), E> {
            let parts = value
                .split(sep)
                .map(&mut *expand)
                .collect::<Result<Vec<_>, E>>()?;
            *value = parts.join(sep);
            Ok(())
        };
        match self {
            Flag::Set { value, .. } | Flag::SetDefault { value, .. } => *value = expand(value)?,
            Flag::Chdir(dir) => *dir = expand(dir)?,
            Flag::AddFlag(arg) | Flag::AppendFlag(arg) => *arg = expand(arg)?,
            Flag::List(edit) => match &mut edit.values {
                ListValues::One(value) => list(value, &edit.sep)?,
                ListValues::Each(values) => {
                    for value in values {
                        list(value, &edit.sep)?;
                    }
                }
                ListValues::Contents(files) => {
                    for file in files {
                        *file = expand(file)?;
                    }
                }
            },
            Flag::Argv0(_)
            | Flag::InheritArgv0
            | Flag::ResolveArgv0
            | Flag::Unset { .. }
            | Flag::Run(_)
            | Flag::AddFlags(_)
            | Flag::AppendFlags(_) => {}
        }
        Ok(())
    }
}

/// Which end of a separated list a value goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListEnd {
    Prefix,
    Suffix,
}

/// Where the values of a list edit come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListValues {
    /// `--prefix`/`--suffix`: one value, itself split on the separator.
    One(String),
    /// `--prefix-each`/`--suffix-each`: whitespace-separated values, each as with `One`.
    Each(Vec<String>),
    /// `--prefix-contents`/`--suffix-contents`: files read when the wrapper is generated;
    /// each file's text (trailing newlines removed) is a value as with `One`.
    Contents(Vec<String>),
}

/// Add values to the list variable `var`, separated by `sep`, without duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEdit {
    pub end: ListEnd,
    pub var: String,
    pub sep: String,
    pub values: ListValues,
}

/// Why a makeWrapper flag list is refused: all of these are usage errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    #[error("unknown flag {}", bash_quote(.0))]
    Unknown(String),
    #[error("unexpected argument {} (makeWrapper flags start with --)", bash_quote(.0))]
    Unexpected(String),
    #[error("{flag}: missing operand {operand}")]
    MissingOperand {
        flag: &'static str,
        operand: &'static str,
    },
    #[error("{flag}: invalid variable name {}", bash_quote(.name))]
    InvalidName { flag: &'static str, name: String },
    #[error("{flag}: empty {what}")]
    Empty {
        flag: &'static str,
        what: &'static str,
    },
    #[error("{flag}: value {} has an empty component between separators {}", bash_quote(.value), bash_quote(.sep))]
    EmptyComponent {
        flag: &'static str,
        value: String,
        sep: String,
    },
    #[error("{flag}: {} contains a newline, which would end the exec line", bash_quote(.value))]
    Newline { flag: &'static str, value: String },
    #[error("{flag}: {} {problem}; only words and $VARIABLES go on the exec line", bash_quote(.value))]
    ShellCode {
        flag: &'static str,
        value: String,
        problem: &'static str,
    },
}

/// Check that `words`, placed unquoted on the wrapper's `exec` line, stay words: bash splits
/// and expands them (so `$VAR` and `${VAR:-default}` work, and quotes group words), but an
/// unquoted control operator (`;`, `&`, `|`, `<`, `>`, `(`, `)`) would start or redirect
/// another command, and a command substitution (`` ` ``, `$(`) would run one.
fn check_words(flag: &'static str, words: &str) -> Result<(), FlagError> {
    #[derive(PartialEq)]
    enum Quote {
        None,
        Single,
        Double,
    }
    let fail = |problem| {
        Err(FlagError::ShellCode {
            flag,
            value: words.to_string(),
            problem,
        })
    };
    if words.contains(['\n', '\r']) {
        return Err(FlagError::Newline {
            flag,
            value: words.to_string(),
        });
    }
    let mut quote = Quote::None;
    let mut chars = words.chars().peekable();
    while let Some(c) = chars.next() {
        match (&quote, c) {
            (Quote::Single, '\'') => quote = Quote::None,
            (Quote::Single, _) => {}
            (_, '\\') => {
                chars.next();
            }
            (Quote::None, '\'') => quote = Quote::Single,
            (Quote::None, '"') => quote = Quote::Double,
            (Quote::Double, '"') => quote = Quote::None,
            (_, '`') => return fail("has a command substitution (`)"),
            (_, '$') if chars.peek() == Some(&'(') => {
                return fail("has a command substitution ($( … ))");
            }
            (Quote::None, ';' | '&' | '|' | '<' | '>' | '(' | ')') => {
                return fail("has a shell control operator");
            }
            _ => {}
        }
    }
    if quote != Quote::None {
        return fail("has an unterminated quote");
    }
    Ok(())
}

/// Whether `name` is a bash variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Split a list value on the separator (the whole string, not each of its characters),
/// refusing empty components.
pub fn split_components<'a>(
    flag: &'static str,
    value: &'a str,
    sep: &str,
) -> Result<Vec<&'a str>, FlagError> {
    if value.is_empty() {
        return Err(FlagError::Empty {
            flag,
            what: "value",
        });
    }
    let parts: Vec<&str> = value.split(sep).collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(FlagError::EmptyComponent {
            flag,
            value: value.to_string(),
            sep: sep.to_string(),
        });
    }
    Ok(parts)
}

/// Split a `-each`/`-contents` list on blanks (space, tab, newline); no globbing.
fn split_words(text: &str) -> Vec<String> {
    text.split([' ', '\t', '\n'])
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// The flags this parser knows, for `--help` texts.
pub const FLAG_NAMES: &[&str] = &[
    "--argv0",
    "--inherit-argv0",
    "--resolve-argv0",
    "--set",
    "--set-default",
    "--unset",
    "--chdir",
    "--run",
    "--prefix",
    "--suffix",
    "--prefix-each",
    "--suffix-each",
    "--prefix-contents",
    "--suffix-contents",
    "--add-flags",
    "--append-flags",
    "--add-flag",
    "--append-flag",
];

/// The first makeWrapper flag among a command line's arguments before `--`, where the tool's
/// own options go (the value after `--jvm-flag` is skipped: it may start with `--`).
pub fn misplaced_flag<S: AsRef<str>>(args: &[S]) -> Option<&str> {
    let mut args = args.iter().map(AsRef::as_ref);
    while let Some(arg) = args.next() {
        match arg {
            "--" => return None,
            "--jvm-flag" => {
                args.next();
            }
            _ if FLAG_NAMES.contains(&arg) => return Some(arg),
            _ => {}
        }
    }
    None
}

/// Parse makeWrapper flags left to right. Nothing is read or written; `-contents` files are
/// only named here.
pub fn parse_flags<S: AsRef<str>>(args: &[S]) -> Result<Vec<Flag>, FlagError> {
    let mut out = Vec::new();
    let mut rest = args.iter().map(AsRef::as_ref);
    while let Some(arg) = rest.next() {
        let Some(&flag) = FLAG_NAMES.iter().find(|f| **f == arg) else {
            return Err(if arg.starts_with('-') {
                FlagError::Unknown(arg.to_string())
            } else {
                FlagError::Unexpected(arg.to_string())
            });
        };
        let mut operands = Operands {
            flag,
            rest: &mut rest,
        };
        out.push(parse_flag(&mut operands)?);
    }
    Ok(out)
}

/// The operands following one flag.
struct Operands<'a, 'b> {
    flag: &'static str,
    rest: &'a mut dyn Iterator<Item = &'b str>,
}

impl Operands<'_, '_> {
    /// The next operand, called `name` in the message if it is missing.
    fn next(&mut self, name: &'static str) -> Result<String, FlagError> {
        self.rest
            .next()
            .map(str::to_string)
            .ok_or(FlagError::MissingOperand {
                flag: self.flag,
                operand: name,
            })
    }

    /// The next operand, which must not be empty (`what` names it in the message).
    fn non_empty(&mut self, name: &'static str, what: &'static str) -> Result<String, FlagError> {
        let value = self.next(name)?;
        if value.is_empty() {
            return Err(FlagError::Empty {
                flag: self.flag,
                what,
            });
        }
        Ok(value)
    }

    /// The next operand as a list of words, which must not be empty.
    fn words(&mut self, name: &'static str, what: &'static str) -> Result<Vec<String>, FlagError> {
        let words = split_words(&self.next(name)?);
        if words.is_empty() {
            return Err(FlagError::Empty {
                flag: self.flag,
                what,
            });
        }
        Ok(words)
    }

    fn var(&mut self) -> Result<String, FlagError> {
        var_name(self.flag, self.next("VAR")?)
    }
}

/// One flag with its operands.
fn parse_flag(operands: &mut Operands<'_, '_>) -> Result<Flag, FlagError> {
    let flag = operands.flag;
    Ok(match flag {
        "--argv0" => Flag::Argv0(operands.non_empty("NAME", "name")?),
        "--inherit-argv0" => Flag::InheritArgv0,
        "--resolve-argv0" => Flag::ResolveArgv0,
        "--set" => Flag::Set {
            var: operands.var()?,
            value: operands.next("VALUE")?,
        },
        "--set-default" => Flag::SetDefault {
            var: operands.var()?,
            value: operands.next("VALUE")?,
        },
        "--unset" => Flag::Unset {
            var: operands.var()?,
        },
        "--chdir" => Flag::Chdir(operands.non_empty("DIR", "directory")?),
        "--run" => Flag::Run(operands.next("COMMAND")?),
        "--add-flags" | "--append-flags" => {
            let words = operands.next("ARGS")?;
            check_words(flag, &words)?;
            if flag == "--add-flags" {
                Flag::AddFlags(words)
            } else {
                Flag::AppendFlags(words)
            }
        }
        "--add-flag" => Flag::AddFlag(operands.next("ARG")?),
        "--append-flag" => Flag::AppendFlag(operands.next("ARG")?),
        _ => Flag::List(parse_list_edit(operands)?),
    })
}

/// The six list edits: `--prefix`/`--suffix`[`-each`|`-contents`] VAR SEP VALUE(S)/FILES.
fn parse_list_edit(operands: &mut Operands<'_, '_>) -> Result<ListEdit, FlagError> {
    let flag = operands.flag;
    let end = if flag.starts_with("--prefix") {
        ListEnd::Prefix
    } else {
        ListEnd::Suffix
    };
    let var = operands.var()?;
    let sep = operands.non_empty("SEP", "separator")?;
    let values = if flag.ends_with("-each") {
        let words = operands.words("VALUES", "list of values")?;
        for w in &words {
            split_components(flag, w, &sep)?;
        }
        ListValues::Each(words)
    } else if flag.ends_with("-contents") {
        ListValues::Contents(operands.words("FILES", "list of files")?)
    } else {
        let value = operands.next("VALUE")?;
        split_components(flag, &value, &sep)?;
        ListValues::One(value)
    };
    Ok(ListEdit {
        end,
        var,
        sep,
        values,
    })
}

fn var_name(flag: &'static str, name: String) -> Result<String, FlagError> {
    if is_var_name(&name) {
        Ok(name)
    } else {
        Err(FlagError::InvalidName { flag, name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Vec<Flag>, FlagError> {
        parse_flags(args)
    }

    #[test]
    fn keeps_order_and_operands() {
        let flags = parse(&[
            "--run",
            "echo hi",
            "--set",
            "A",
            "1",
            "--prefix",
            "PATH",
            ":",
            "/a:/b",
            "--add-flag",
            "",
            "--inherit-argv0",
        ])
        .unwrap();
        assert_eq!(flags.len(), 5);
        assert_eq!(flags[0], Flag::Run("echo hi".into()));
        assert_eq!(
            flags[2],
            Flag::List(ListEdit {
                end: ListEnd::Prefix,
                var: "PATH".into(),
                sep: ":".into(),
                values: ListValues::One("/a:/b".into()),
            })
        );
        assert_eq!(flags[3], Flag::AddFlag(String::new()));
    }

    #[test]
    fn each_splits_on_blanks_without_globbing() {
        let flags = parse(&["--suffix-each", "V", ":", " a\tb:c\n* "]).unwrap();
        let Flag::List(edit) = &flags[0] else {
            panic!("{flags:?}")
        };
        assert_eq!(
            edit.values,
            ListValues::Each(vec!["a".into(), "b:c".into(), "*".into()])
        );
    }

    #[test]
    fn references_expand_in_values_only() {
        let refused = parse_flags(&[
            "--set",
            "@V",
            "@a/x",
            "--prefix",
            "P",
            ":",
            "@a/bin:/usr/bin:@b/bin",
            "--add-flag",
            "@b/app.py",
            "--add-flags",
            "@a/y",
            "--run",
            "@a",
            "--chdir",
            "@a",
        ])
        .unwrap_err();
        // `@V` is no variable name: refused before any expansion.
        assert!(matches!(refused, FlagError::InvalidName { .. }));
        let mut parsed = parse_flags(&[
            "--set",
            "V",
            "@a/x",
            "--prefix",
            "P",
            ":",
            "@a/bin:/usr/bin:@b/bin",
            "--add-flag",
            "@b/app.py",
            "--add-flags",
            "@a/y",
            "--run",
            "@a",
            "--chdir",
            "@a",
        ])
        .unwrap();
        let mut expand = |v: &str| -> Result<String, ()> {
            Ok(match v.strip_prefix('@') {
                Some(r) => format!("/s/{r}"),
                None => v.to_string(),
            })
        };
        for flag in &mut parsed {
            flag.expand_values(&mut expand).unwrap();
        }
        assert_eq!(
            parsed[0],
            Flag::Set {
                var: "V".into(),
                value: "/s/a/x".into()
            }
        );
        let Flag::List(edit) = &parsed[1] else {
            panic!("a list edit")
        };
        assert_eq!(
            edit.values,
            ListValues::One("/s/a/bin:/usr/bin:/s/b/bin".into())
        );
        assert_eq!(parsed[2], Flag::AddFlag("/s/b/app.py".into()));
        assert_eq!(parsed[3], Flag::AddFlags("@a/y".into()));
        assert_eq!(parsed[4], Flag::Run("@a".into()));
        assert_eq!(parsed[5], Flag::Chdir("/s/a".into()));
        assert_eq!(
            misplaced_flag(&["--bash", "/b", "--set", "A", "1"]),
            Some("--set")
        );
        assert_eq!(
            misplaced_flag(&["--jvm-flag", "--run", "--", "--set"]),
            None
        );
    }

    #[test]
    fn refusals() {
        let msg = |args: &[&str]| parse(args).unwrap_err().to_string();
        assert_eq!(
            msg(&["--set", "1X", "v"]),
            "--set: invalid variable name '1X'"
        );
        assert_eq!(
            msg(&["--unset", "A-B"]),
            "--unset: invalid variable name 'A-B'"
        );
        assert_eq!(
            msg(&["--set", "a\nb", "v"]),
            "--set: invalid variable name $'a\\nb'"
        );
        assert_eq!(msg(&["--prefix", "P", ":", ""]), "--prefix: empty value");
        assert_eq!(
            msg(&["--suffix", "P", "", "x"]),
            "--suffix: empty separator"
        );
        assert_eq!(
            msg(&["--prefix", "P", ":", "a::b"]),
            "--prefix: value 'a::b' has an empty component between separators ':'"
        );
        assert_eq!(
            msg(&["--prefix-each", "P", ":", "  "]),
            "--prefix-each: empty list of values"
        );
        assert_eq!(msg(&["--frobnicate"]), "unknown flag '--frobnicate'");
        assert_eq!(
            msg(&["stray"]),
            "unexpected argument 'stray' (makeWrapper flags start with --)"
        );
        assert_eq!(msg(&["--set", "A"]), "--set: missing operand VALUE");
        assert_eq!(
            msg(&["--prefix", "A", ":"]),
            "--prefix: missing operand VALUE"
        );
        assert_eq!(msg(&["--argv0"]), "--argv0: missing operand NAME");
        assert_eq!(msg(&["--argv0", ""]), "--argv0: empty name");
        assert_eq!(msg(&["--chdir", ""]), "--chdir: empty directory");
        assert_eq!(
            msg(&["--add-flags", "a\nb"]),
            "--add-flags: $'a\\nb' contains a newline, which would end the exec line"
        );
        assert_eq!(
            msg(&["--add-flags", "-x; id"]),
            "--add-flags: '-x; id' has a shell control operator; only words and $VARIABLES go on the exec line"
        );
    }

    #[test]
    fn flag_words_stay_words() {
        for ok in [
            "-x -y",
            "-Dk=$HOME ${OPTS:-}",
            "-Da='x;y|z' \"b&c\"",
            "a\\;b",
            "-jar /nix/store/x/app.jar",
            "${X:-\"a b\"}",
            "'it''s' \"ok\"",
        ] {
            assert_eq!(check_words("--add-flags", ok), Ok(()), "{ok}");
        }
        for bad in [
            "a; id",
            "a & id",
            "a && b",
            "a | b",
            "a > /etc/x",
            "< f",
            "(id)",
            "a `id`",
            "\"$(id)\"",
            "$(id)",
            "'open",
            "\"open",
            "x)",
        ] {
            assert!(
                matches!(
                    check_words("--append-flags", bad),
                    Err(FlagError::ShellCode { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn var_names() {
        for ok in ["A", "_", "_a1", "PATH", "x_Y_9"] {
            assert!(is_var_name(ok), "{ok}");
        }
        for bad in ["", "1X", "A-B", "A B", "é", "A=B", "$A"] {
            assert!(!is_var_name(bad), "{bad}");
        }
    }
}
