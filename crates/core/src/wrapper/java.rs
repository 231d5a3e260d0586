//! Java mode: the layout the seed's Nix expression built for a Java application
//! (`share/java/NAME-VERSION.jar` and `bin/NAME` exec'ing `${jre}/bin/java`), with JVM options
//! that can be overridden at run time from `JAVA_OPTS` and `<APP>_OPTS`, split without `eval`.

use super::WrapperError;
use super::quote::bash_quote;
use crate::nix::store_path::check_name;

/// How the JVM finds the application's entry point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JavaMain {
    /// `java … -jar JAR`: the jar's manifest names the main class.
    Jar,
    /// `java … -cp JAR[:CLASSPATH…] CLASS`.
    Class {
        class: String,
        classpath: Vec<String>,
    },
}

/// A Java application to wrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JavaApp {
    /// Application name: `bin/NAME`, part of the jar's name and of `<APP>_OPTS`.
    pub name: String,
    pub version: String,
    /// The `java` executable (`${jre}/bin/java`).
    pub java: String,
    pub main: JavaMain,
    /// JVM options baked into the wrapper, one argument each, before the run-time ones.
    pub jvm_flags: Vec<String>,
}

/// Names of the wrapper's own (unexported) arrays.
const JAVA_OPTS_ARRAY: &str = "_strata_java_opts";
const APP_OPTS_ARRAY: &str = "_strata_app_opts";

impl JavaApp {
    /// Check the names that become file and store path names.
    pub fn validate(&self) -> Result<(), WrapperError> {
        let bad = |what: &'static str, value: &str, reason: &str| WrapperError::BadName {
            what,
            value: value.to_string(),
            reason: reason.to_string(),
        };
        for (what, value) in [("name", &self.name), ("version", &self.version)] {
            if value.is_empty() {
                return Err(bad(what, value, "it is empty"));
            }
            check_name(value, value).map_err(|e| bad(what, value, &e.to_string()))?;
        }
        if self.name.starts_with('.') {
            return Err(bad("name", &self.name, "it starts with '.'"));
        }
        check_name(&self.out_name(), &self.out_name())
            .map_err(|e| bad("name", &self.name, &e.to_string()))?;
        if let JavaMain::Class { class, classpath } = &self.main {
            if class.is_empty() || class.contains(char::is_whitespace) {
                return Err(bad("main class", class, "it is empty or has blanks"));
            }
            for entry in classpath {
                if entry.is_empty() || entry.contains(':') {
                    return Err(bad("classpath entry", entry, "it is empty or has a ':'"));
                }
            }
        }
        Ok(())
    }

    /// The store path name of the output: `NAME-VERSION`.
    pub fn out_name(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }

    /// Where the jar goes, relative to the output.
    pub fn jar_rel_path(&self) -> String {
        format!("share/java/{}-{}.jar", self.name, self.version)
    }

    /// The application's own options variable: the name upper-cased, every character other
    /// than an ASCII letter or digit replaced by `_`, then `_OPTS` (`my-app` → `MY_APP_OPTS`);
    /// a leading digit gets a `_` in front so the result is a variable name.
    pub fn opts_var(&self) -> String {
        let mut var: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        if var.starts_with(|c: char| c.is_ascii_digit()) {
            var.insert(0, '_');
        }
        var.push_str("_OPTS");
        var
    }

    /// Lines run just before `exec`: split `JAVA_OPTS` and `<APP>_OPTS` into arrays at
    /// blanks, with `read -r -a` (no quote removal, no globbing, no `eval`) and a fixed IFS.
    pub fn before_exec(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut read = |array: &str, var: &str| {
            lines.push(format!("{array}=()"));
            lines.push(format!(
                "IFS=$' \\t\\n' read -r -d '' -a {array} <<< \"${{{var}-}}\" || true"
            ));
        };
        read(JAVA_OPTS_ARRAY, "JAVA_OPTS");
        let app_var = self.opts_var();
        if app_var != "JAVA_OPTS" {
            read(APP_OPTS_ARRAY, &app_var);
        }
        lines
    }

    /// The words between `java` and the `--add-flags` words: baked JVM options, then the
    /// run-time ones (`JAVA_OPTS`, then `<APP>_OPTS`: later options win in the JVM), then
    /// `-jar JAR` or `-cp CLASSPATH CLASS`. `out` is the output's final absolute path.
    pub fn leading_words(&self, out: &str) -> Vec<String> {
        let mut words: Vec<String> = self.jvm_flags.iter().map(|f| bash_quote(f)).collect();
        words.push(format!("\"${{{JAVA_OPTS_ARRAY}[@]}}\""));
        if self.opts_var() != "JAVA_OPTS" {
            words.push(format!("\"${{{APP_OPTS_ARRAY}[@]}}\""));
        }
        let jar = format!("{out}/{}", self.jar_rel_path());
        match &self.main {
            JavaMain::Jar => {
                words.push("-jar".to_string());
                words.push(bash_quote(&jar));
            }
            JavaMain::Class { class, classpath } => {
                let mut cp = jar;
                for entry in classpath {
                    cp.push(':');
                    cp.push_str(entry);
                }
                words.push("-cp".to_string());
                words.push(bash_quote(&cp));
                words.push(bash_quote(class));
            }
        }
        words
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str) -> JavaApp {
        JavaApp {
            name: name.to_string(),
            version: "1.0".to_string(),
            java: "/nix/store/j-jre/bin/java".to_string(),
            main: JavaMain::Jar,
            jvm_flags: vec!["-Da=b c".to_string()],
        }
    }

    #[test]
    fn opts_var_names() {
        assert_eq!(app("my-app").opts_var(), "MY_APP_OPTS");
        assert_eq!(app("App.v2").opts_var(), "APP_V2_OPTS");
        assert_eq!(app("7zip").opts_var(), "_7ZIP_OPTS");
        assert_eq!(app("java").opts_var(), "JAVA_OPTS");
        assert_eq!(app("java").before_exec().len(), 2);
    }

    #[test]
    fn words() {
        let a = app("demo");
        assert_eq!(
            a.leading_words("/out"),
            [
                "'-Da=b c'",
                "\"${_strata_java_opts[@]}\"",
                "\"${_strata_app_opts[@]}\"",
                "-jar",
                "'/out/share/java/demo-1.0.jar'"
            ]
        );
        let b = JavaApp {
            main: JavaMain::Class {
                class: "x.Main".into(),
                classpath: vec!["/lib/a.jar".into()],
            },
            ..a
        };
        assert_eq!(
            b.leading_words("/out")[3..],
            [
                "-cp",
                "'/out/share/java/demo-1.0.jar:/lib/a.jar'",
                "'x.Main'"
            ]
        );
    }

    #[test]
    fn validation() {
        assert!(app("demo").validate().is_ok());
        for bad in ["", "a/b", ".hidden", "a b"] {
            assert!(app(bad).validate().is_err(), "{bad:?}");
        }
        let mut c = app("demo");
        c.main = JavaMain::Class {
            class: "M".into(),
            classpath: vec!["a:b".into()],
        };
        assert!(c.validate().is_err());
    }
}
