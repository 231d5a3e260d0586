//! Bash quoting as `${x@Q}` writes it: `'…'` normally, `$'…'` when the text has a control
//! character. Every generated wrapper quotes values through here.

/// Quote `text` so that bash reads it back as exactly `text`, the way bash's `${text@Q}` does:
/// single quotes (`''` for the empty string, `'\''` for a quote); if the text contains a
/// control character (newline, tab, ESC, DEL, C1 controls…) the ANSI-C form `$'…'` with
/// `\n`, `\t`, `\E`, `\\`, `\'` and three-digit octal escapes for the other control bytes.
/// Other non-ASCII characters are written as they are (bash does the same in a UTF-8 locale;
/// in both forms the bytes come back unchanged whatever the locale at run time).
pub fn bash_quote(text: &str) -> String {
    if text.chars().any(char::is_control) {
        ansi_c_quote(text)
    } else {
        single_quote(text)
    }
}

fn single_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

fn ansi_c_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 3);
    out.push_str("$'");
    for c in text.chars() {
        match c {
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            '\x1b' => out.push_str("\\E"),
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:03o}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Quote `text` for use inside double quotes: `\`, `"`, `$` and `` ` `` are escaped. Used for
/// the wrapped program's path, which makeWrapper writes as `"PATH"`; for ordinary paths the
/// result is the path itself.
pub fn double_quote_inner(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '"' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_bash_at_q() {
        let cases = [
            ("", "''"),
            ("abc", "'abc'"),
            ("it's", r"'it'\''s'"),
            ("a\nb", r"$'a\nb'"),
            ("\x1b[x", r"$'\E[x'"),
            ("a\x01b", r"$'a\001b'"),
            ("é", "'é'"),
            ("\x7f", r"$'\177'"),
            ("tab\there", r"$'tab\there'"),
            ("a'b\n", r"$'a\'b\n'"),
            ("back\\slash\n", r"$'back\\slash\n'"),
            ("$HOME `x` \"q\"", "'$HOME `x` \"q\"'"),
        ];
        for (input, want) in cases {
            assert_eq!(bash_quote(input), want, "quoting {input:?}");
        }
    }

    #[test]
    fn double_quoted_paths() {
        assert_eq!(double_quote_inner("/x/prog"), "/x/prog");
        assert_eq!(double_quote_inner("/a$b\"c`d\\e"), "/a\\$b\\\"c\\`d\\\\e");
    }
}
