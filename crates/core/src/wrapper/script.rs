//! Rendering a wrapper script: the shebang, one block per flag in the order given, then
//! `exec` with the add-flags, the caller's `"$@"` and the append-flags, byte for byte as
//! nixpkgs' shell `makeWrapper` writes them (except where strata quotes more, see the docs).

use std::fmt::Write as _;
use std::io;

use super::WrapperError;
use super::flags::{Flag, FlagError, ListEdit, ListEnd, ListValues, split_components};
use super::quote::{bash_quote, double_quote_inner};

/// What a wrapper script is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script<'a> {
    /// The bash executable for the shebang (`/nix/store/…-bash-5.2/bin/bash`).
    pub shell: &'a str,
    /// The program `exec` runs.
    pub program: &'a str,
    /// The makeWrapper flags, run left to right.
    pub flags: &'a [Flag],
    /// Lines written after the flags' lines, just before `exec`.
    pub before_exec: Vec<String>,
    /// Words (shell syntax) right after the program, before the `--add-flags` words.
    pub leading_words: Vec<String>,
}

/// Reads a `-contents` file when the wrapper is generated.
pub type ReadFile<'r> = dyn FnMut(&str) -> io::Result<Vec<u8>> + 'r;

/// How large a `-contents` file may be: it becomes part of the script (a value such as a
/// class path or a list of directories), not a data file.
pub const CONTENTS_LIMIT: u64 = 1 << 20;

/// Read a `-contents` file: a regular file (not `/dev/zero`, a FIFO that never ends, or a
/// directory) of at most [`CONTENTS_LIMIT`] bytes.
pub fn read_contents_file(path: &std::path::Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut data = Vec::new();
    file.take(CONTENTS_LIMIT + 1).read_to_end(&mut data)?;
    if data.len() as u64 > CONTENTS_LIMIT {
        return Err(io::Error::other(format!(
            "larger than {} KiB",
            CONTENTS_LIMIT >> 10
        )));
    }
    Ok(data)
}

/// Render the script. `read` is asked for the `-contents` files, in order.
pub fn render(script: &Script<'_>, read: &mut ReadFile<'_>) -> Result<String, WrapperError> {
    check_shell(script.shell)?;
    let mut out = format!("#! {} -e\n", script.shell);
    let mut argv0: Option<String> = None;
    let mut before = String::new();
    let mut after = String::new();
    for w in &script.leading_words {
        before.push(' ');
        before.push_str(w);
    }
    for flag in script.flags {
        match flag {
            Flag::Argv0(name) => argv0 = Some(bash_quote(name)),
            Flag::InheritArgv0 => argv0 = Some("\"$0\"".to_string()),
            Flag::ResolveArgv0 => {}
            Flag::Set { var, value } => {
                let _ = writeln!(out, "export {var}={}", bash_quote(value));
            }
            Flag::SetDefault { var, value } => {
                let _ = writeln!(out, "export {var}=${{{var}-{}}}", bash_quote(value));
            }
            Flag::Unset { var } => {
                let _ = writeln!(out, "unset {var}");
            }
            Flag::Chdir(dir) => {
                let _ = writeln!(out, "cd {}", bash_quote(dir));
            }
            Flag::Run(command) => {
                out.push_str(command);
                out.push('\n');
            }
            Flag::List(edit) => list_edit(&mut out, edit, read)?,
            Flag::AddFlags(words) => {
                before.push(' ');
                before.push_str(words);
            }
            Flag::AppendFlags(words) => {
                after.push(' ');
                after.push_str(words);
            }
            Flag::AddFlag(arg) => {
                before.push(' ');
                before.push_str(&bash_quote(arg));
            }
            Flag::AppendFlag(arg) => {
                after.push(' ');
                after.push_str(&bash_quote(arg));
            }
        }
    }
    for line in &script.before_exec {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("exec");
    if let Some(argv0) = argv0 {
        out.push_str(" -a ");
        out.push_str(&argv0);
    }
    let _ = writeln!(
        out,
        " \"{}\" {before} \"$@\" {after}",
        double_quote_inner(script.program)
    );
    Ok(out)
}

/// The shebang's interpreter must be one absolute word (the kernel splits at blanks).
fn check_shell(shell: &str) -> Result<(), WrapperError> {
    if !shell.starts_with('/') || shell.contains(char::is_whitespace) {
        return Err(WrapperError::BadShell(shell.to_string()));
    }
    // Linux reads at most 256 bytes of a `#!` line.
    if shell.len() + "#! ".len() + " -e".len() >= 256 {
        return Err(WrapperError::BadShell(shell.to_string()));
    }
    Ok(())
}

/// The flag a list edit came from, for messages.
pub fn list_flag_name(edit: &ListEdit) -> &'static str {
    match (edit.end, &edit.values) {
        (ListEnd::Prefix, ListValues::One(_)) => "--prefix",
        (ListEnd::Suffix, ListValues::One(_)) => "--suffix",
        (ListEnd::Prefix, ListValues::Each(_)) => "--prefix-each",
        (ListEnd::Suffix, ListValues::Each(_)) => "--suffix-each",
        (ListEnd::Prefix, ListValues::Contents(_)) => "--prefix-contents",
        (ListEnd::Suffix, ListValues::Contents(_)) => "--suffix-contents",
    }
}

fn list_edit(
    out: &mut String,
    edit: &ListEdit,
    read: &mut ReadFile<'_>,
) -> Result<(), WrapperError> {
    let flag = list_flag_name(edit);
    match &edit.values {
        ListValues::One(value) => add_value(out, flag, edit, value).map_err(WrapperError::from),
        ListValues::Each(values) => {
            for value in values {
                add_value(out, flag, edit, value)?;
            }
            Ok(())
        }
        ListValues::Contents(files) => {
            for file in files {
                let contents = read_contents(flag, file, read)?;
                add_value(out, flag, edit, &contents).map_err(|error| {
                    WrapperError::ContentsValue {
                        file: file.clone(),
                        error,
                    }
                })?;
            }
            Ok(())
        }
    }
}

/// A `-contents` file's text as `$(cat FILE)` gives it: trailing newlines removed.
fn read_contents(
    flag: &'static str,
    file: &str,
    read: &mut ReadFile<'_>,
) -> Result<String, WrapperError> {
    let failed = |reason: String| WrapperError::Contents {
        flag,
        file: file.to_string(),
        reason,
    };
    let bytes = read(file).map_err(|e| failed(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| failed("not UTF-8 text".to_string()))?;
    if text.contains('\0') {
        return Err(failed("contains a NUL byte".to_string()));
    }
    Ok(text.trim_end_matches('\n').to_string())
}

/// Write the blocks that add each component of `value` to the list, as makeWrapper does:
/// surround the list with separators, drop an existing copy (prefix) or skip if present
/// (suffix), add, strip the outer separators, export. Prefixed components are added last
/// first so that they keep their written order.
fn add_value(
    out: &mut String,
    flag: &'static str,
    edit: &ListEdit,
    value: &str,
) -> Result<(), FlagError> {
    let mut components = split_components(flag, value, &edit.sep)?;
    if edit.end == ListEnd::Prefix {
        components.reverse();
    }
    let var = &edit.var;
    let sep = bash_quote(&edit.sep);
    for component in components {
        let v = bash_quote(component);
        let _ = writeln!(out, "{var}=${{{var}:+{sep}${var}{sep}}}");
        match edit.end {
            ListEnd::Prefix => {
                let _ = writeln!(out, "{var}=${{{var}/{sep}{v}{sep}/{sep}}}");
                let _ = writeln!(out, "{var}={v}${var}");
            }
            ListEnd::Suffix => {
                let _ = writeln!(out, "if [[ ${var} != *{sep}{v}{sep}* ]]; then");
                let _ = writeln!(out, "    {var}=${var}{v}");
                out.push_str("fi\n");
            }
        }
        let _ = writeln!(out, "{var}=${{{var}#{sep}}}");
        let _ = writeln!(out, "{var}=${{{var}%{sep}}}");
        let _ = writeln!(out, "export {var}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wrapper::flags::parse_flags;

    fn render_flags(program: &str, args: &[&str]) -> String {
        let flags = parse_flags(args).unwrap();
        let script = Script {
            shell: "/nix/store/b-bash/bin/bash",
            program,
            flags: &flags,
            before_exec: Vec::new(),
            leading_words: Vec::new(),
        };
        render(&script, &mut |f: &str| {
            Ok(format!("{f}-contents\n\n").into_bytes())
        })
        .unwrap()
    }

    #[test]
    fn bare_wrapper() {
        assert_eq!(
            render_flags("/x/prog", &[]),
            "#! /nix/store/b-bash/bin/bash -e\nexec \"/x/prog\"  \"$@\" \n"
        );
    }

    #[test]
    fn flags_in_order() {
        let text = render_flags(
            "/x/p$rog",
            &[
                "--set-default",
                "A",
                "x y",
                "--argv0",
                "$0",
                "--run",
                "echo hi",
                "--unset",
                "B",
                "--chdir",
                "/t'mp",
                "--add-flag",
                "a b",
                "--append-flags",
                "-v $HOME",
            ],
        );
        assert_eq!(
            text,
            "#! /nix/store/b-bash/bin/bash -e\n\
             export A=${A-'x y'}\n\
             echo hi\n\
             unset B\n\
             cd '/t'\\''mp'\n\
             exec -a '$0' \"/x/p\\$rog\"  'a b' \"$@\"  -v $HOME\n"
        );
    }

    #[test]
    fn suffix_block_and_contents() {
        let text = render_flags("/p", &["--suffix-contents", "V", ":", "f"]);
        assert!(
            text.contains(
                "V=${V:+':'$V':'}\n\
                 if [[ $V != *':''f-contents'':'* ]]; then\n    V=$V'f-contents'\nfi\n\
                 V=${V#':'}\nV=${V%':'}\nexport V\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn bad_shell() {
        let script = Script {
            shell: "/bin/ba sh",
            program: "/p",
            flags: &[],
            before_exec: Vec::new(),
            leading_words: Vec::new(),
        };
        assert!(matches!(
            render(&script, &mut |_: &str| Ok(Vec::new())),
            Err(WrapperError::BadShell(_))
        ));
    }
}
