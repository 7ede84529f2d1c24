//! Env file checks for `cutover env check` and the gate before a deploy starts.
//!
//! Why it exists: the env files this replaces were copied by hand, world-readable, with
//! `changeme` still in them, and a missing variable showed up as a crash after the switch.
//! [`check_env_file`] reports, without ever showing a value:
//! - required keys that are missing or empty;
//! - a file readable or writable by group or others while it holds secret-looking keys,
//!   refused with the exact `chmod 600 <path>` to run;
//! - placeholder values in secret-looking keys ("changeme", "your-...", "example", "xxx",
//!   "todo", empty...): refused in production, a warning elsewhere.
//!
//! A key looks secret ([`is_secret`]) when its name contains `SECRET`, `PASS` (PASSWORD,
//! PASSWD), `TOKEN`, `KEY`, `PRIVATE`, `CREDENTIAL` or `DSN`, or when its value is a URL with a
//! password (`postgres://app:pw@db/app` in `DATABASE_URL`, `REDIS_URL`, ...).
//!
//! # The dotenv dialect (one parser: dotenvy, through [`crate::envfile::read`])
//! Every env file cutover reads goes through the same function. What it accepts (each line is
//! checked by the table test below):
//! - `KEY=value`; keys are letters, digits, `_` and `.`; `export KEY=value` is the same.
//! - `# comment` lines and blank lines are skipped; ` # comment` after an unquoted value is
//!   dropped (a `#` inside a value with no space before it is kept: `A=x#y` is `x#y`).
//! - Unquoted values are trimmed; a space inside one is an error (`A=a b`: quote it).
//! - `'single quotes'`: literal, no escapes and no `$` substitution.
//! - `"double quotes"`: escapes `\n`, `\\`, `\"`, `\$`; a value may span several lines.
//! - `${NAME}` is substituted in unquoted and double-quoted values, from keys earlier in the
//!   same file, else from the daemon's environment, else empty. `$NAME` without braces takes
//!   letters and digits only: `$DB_HOST` is `$DB` followed by `_HOST`, so always use braces.
//! - `KEY=` is an empty value. A syntax error is reported with its position only (the line may
//!   hold a secret).
//!
//! Values never leave this module unmasked: reports carry [`mask`]ed values only.

use serde::Serialize;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The outcome of checking one env file. Serializable for `--json`; holds no value in clear.
#[derive(Debug, Clone, Serialize)]
pub struct EnvReport {
    pub path: PathBuf,
    pub production: bool,
    /// Every key in the file, with its masked value.
    pub keys: Vec<EnvKey>,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EnvKey {
    pub name: String,
    pub masked: String,
    pub secret: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Refuses the deploy (and makes `cutover env check` exit 1).
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub severity: Severity,
    #[serde(flatten)]
    pub kind: ProblemKind,
    /// One line for people, naming keys but never values.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProblemKind {
    /// The file is missing, unreadable or not valid dotenv.
    Unreadable { reason: String },
    /// A required key is absent (`empty: false`) or has an empty value.
    Missing { key: String, empty: bool },
    /// Secrets in a file that group or others may read or write.
    Permissions {
        mode: String,
        secret_keys: Vec<String>,
        fix: String,
    },
    /// A secret-looking key with a placeholder value.
    Placeholder { key: String, masked: String },
}

impl EnvReport {
    /// No error (warnings allowed).
    pub fn ok(&self) -> bool {
        self.problems.iter().all(|p| p.severity != Severity::Error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
    }
}

/// Checks the env file at `path`: `required` keys present and non-empty, permissions if it
/// holds secrets, and (refused when `production`) placeholder values in secret-looking keys.
pub fn check_env_file(path: &Path, required: &[String], production: bool) -> EnvReport {
    let mut report = EnvReport {
        path: path.to_owned(),
        production,
        keys: Vec::new(),
        problems: Vec::new(),
    };
    let unreadable = |reason: String| Problem {
        severity: Severity::Error,
        message: format!("{}: {reason}", path.display()),
        kind: ProblemKind::Unreadable { reason },
    };
    let mode = match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => meta.permissions().mode() & 0o7777,
        Ok(_) => {
            report
                .problems
                .push(unreadable("not a regular file".into()));
            return report;
        }
        Err(e) => {
            report.problems.push(unreadable(e.to_string()));
            return report;
        }
    };
    let vars = match crate::envfile::read(path) {
        Ok(vars) => vars,
        Err(e) => {
            report.problems.push(unreadable(e.message));
            return report;
        }
    };

    let source = path.display().to_string();
    report.keys = vars
        .iter()
        .map(|(k, v)| EnvKey {
            name: k.clone(),
            masked: mask(v),
            secret: is_secret(k, v),
        })
        .collect();
    report
        .problems
        .extend(check_vars(&source, &vars, required, production));

    let mut secret_keys: Vec<String> = vars
        .iter()
        .filter(|(k, v)| is_secret(k, v))
        .map(|(k, _)| k.clone())
        .collect();
    secret_keys.dedup();
    if mode & 0o077 != 0 && !secret_keys.is_empty() {
        let fix = format!("chmod 600 {}", shell_quote(&source));
        let mode = format!("{mode:04o}");
        report.problems.push(Problem {
            severity: Severity::Error,
            message: format!(
                "{source} holds secrets ({}) but is accessible to group or others (mode {mode}): run `{fix}`",
                secret_keys.join(", ")
            ),
            kind: ProblemKind::Permissions {
                mode,
                secret_keys,
                fix,
            },
        });
    }
    report
}

/// The key checks of [`check_env_file`] on variables from elsewhere (a component's `env` table;
/// `source` names it in messages): required keys and placeholders.
pub fn check_vars(
    source: &str,
    vars: &[(String, String)],
    required: &[String],
    production: bool,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    // The last definition wins, as when the file is loaded.
    let value = |key: &str| vars.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v);
    for key in required {
        let empty = match value(key) {
            None => false,
            Some(v) if v.is_empty() => true,
            Some(_) => continue,
        };
        problems.push(Problem {
            severity: Severity::Error,
            message: if empty {
                format!("{source}: required {key} is empty")
            } else {
                format!("{source}: required {key} is missing")
            },
            kind: ProblemKind::Missing {
                key: key.clone(),
                empty,
            },
        });
    }
    let mut placeholders = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (key, _) in vars.iter().rev() {
        if !seen.insert(key.as_str()) {
            continue;
        }
        let v = value(key).map(String::as_str).unwrap_or_default();
        if !is_secret(key, v) || !is_placeholder(v) {
            continue;
        }
        // An empty required key is already reported as such.
        if v.is_empty() && required.iter().any(|r| r == key) {
            continue;
        }
        let severity = if production {
            Severity::Error
        } else {
            Severity::Warning
        };
        let what = if v.is_empty() {
            "is empty"
        } else {
            "holds a placeholder value"
        };
        placeholders.push(Problem {
            severity,
            message: format!(
                "{source}: secret {key} {what}{}",
                if production {
                    " (refused in production)"
                } else {
                    ""
                }
            ),
            kind: ProblemKind::Placeholder {
                key: key.clone(),
                masked: mask(v),
            },
        });
    }
    placeholders.reverse();
    problems.extend(placeholders);
    problems
}

/// Whether a key holds a secret: by its name, or because its value is a URL with a password.
pub fn is_secret(key: &str, value: &str) -> bool {
    let upper = key.to_ascii_uppercase();
    const WORDS: [&str; 7] = [
        "SECRET",
        "PASS",
        "TOKEN",
        "KEY",
        "PRIVATE",
        "CREDENTIAL",
        "DSN",
    ];
    WORDS.iter().any(|w| upper.contains(w)) || url_password(value).is_some()
}

/// The password of a `scheme://user:password@host...` URL.
fn url_password(value: &str) -> Option<&str> {
    let (_, rest) = value.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    Some(password)
}

/// Whether a value is a well-known placeholder (for a URL, its password is checked).
pub fn is_placeholder(value: &str) -> bool {
    let value = url_password(value).unwrap_or(value);
    let v = value.trim().to_ascii_lowercase();
    if v.is_empty() {
        return true;
    }
    const EXACT: [&str; 14] = [
        "changeme",
        "change-me",
        "change_me",
        "changethis",
        "replaceme",
        "replace-me",
        "example",
        "todo",
        "tbd",
        "fixme",
        "placeholder",
        "secret",
        "password",
        "null",
    ];
    EXACT.contains(&v.as_str())
        || v.starts_with("your-")
        || v.starts_with("your_")
        || v.starts_with("change-me")
        || v.starts_with("changeme")
        || (v.starts_with('<') && v.ends_with('>'))
        || (v.len() >= 3 && v.chars().all(|c| c == 'x' || c == '*'))
}

/// A value as it may be shown: `(empty)`, or `****` with its length and, for values long
/// enough that it cannot be brute-forced, the first 8 hex digits of its sha256 (enough to tell
/// two values apart or notice a change, while no character of the value is ever shown).
pub fn mask(value: &str) -> String {
    use sha2::{Digest, Sha256};
    let length = value.chars().count();
    if value.is_empty() {
        "(empty)".into()
    } else if length < 12 {
        format!("**** ({length} chars)")
    } else {
        let digest = Sha256::digest(value.as_bytes());
        let fingerprint: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        format!("**** ({length} chars, sha256 {fingerprint})")
    }
}

fn shell_quote(text: &str) -> String {
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@".contains(c))
    {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dialect documented at the top of this module, through the one parser.
    #[test]
    fn dotenv_dialect() {
        std::env::set_var("CUTOVER_ENVCHECK_FROM_PROCESS", "outer");
        /// A file's text, and the pairs it parses to (`None`: a syntax error).
        type Case = (
            &'static str,
            Option<&'static [(&'static str, &'static str)]>,
        );
        let cases: &[Case] = &[
            ("A=1", Some(&[("A", "1")])),
            ("export A=1", Some(&[("A", "1")])),
            ("# comment\n\nA=1\n", Some(&[("A", "1")])),
            ("A=1 # trailing comment", Some(&[("A", "1")])),
            ("A=x#y", Some(&[("A", "x#y")])),
            ("A=  padded  ", Some(&[("A", "padded")])),
            ("A=a b", None),
            ("A=", Some(&[("A", "")])),
            ("A='single $B \\n'", Some(&[("A", "single $B \\n")])),
            (
                "A=\"dq \\\"q\\\" \\\\ \\$x\"",
                Some(&[("A", "dq \"q\" \\ $x")]),
            ),
            ("A=\"l1\\nl2\"", Some(&[("A", "l1\nl2")])),
            ("A=\"line1\nline2\"", Some(&[("A", "line1\nline2")])),
            (
                "A=\"a # not a comment\"",
                Some(&[("A", "a # not a comment")]),
            ),
            ("B=b\nA=${B}x", Some(&[("B", "b"), ("A", "bx")])),
            ("B=b\nA=\"$B y\"", Some(&[("B", "b"), ("A", "b y")])),
            (
                "A=${CUTOVER_ENVCHECK_FROM_PROCESS}",
                Some(&[("A", "outer")]),
            ),
            ("A=${CUTOVER_ENVCHECK_UNSET}", Some(&[("A", "")])),
            // Unbraced, a name stops at the first character that is not a letter or digit.
            ("A_B=1\nC=$A_B", Some(&[("A_B", "1"), ("C", "_B")])),
            ("A.B_1=v", Some(&[("A.B_1", "v")])),
            ("A=\"unterminated", None),
            ("not a line", None),
        ];
        let dir = tempfile::tempdir().unwrap();
        let mut failures = Vec::new();
        for (i, (text, expected)) in cases.iter().enumerate() {
            let path = dir.path().join(format!("case{i}.env"));
            std::fs::write(&path, text).unwrap();
            let got = crate::envfile::read(&path).ok();
            let expected: Option<Vec<(String, String)>> = expected.map(|pairs| {
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            });
            if got != expected {
                failures.push(format!("{text:?}: expected {expected:?}, got {got:?}"));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn parse_errors_never_quote_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, "API_TOKEN=sup3r secret value\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let report = check_env_file(&path, &[], true);
        assert!(!report.ok());
        let json = serde_json::to_string(&report).unwrap();
        assert!(!json.contains("sup3r"), "{json}");
    }

    #[test]
    fn secrets_and_placeholders() {
        assert!(is_secret("API_KEY", "x"));
        assert!(is_secret("db_password", "x"));
        assert!(is_secret("GITHUB_TOKEN", "x"));
        assert!(is_secret("DATABASE_URL", "postgres://app:pw@db:5432/app"));
        assert!(is_secret("REDIS_URL", "redis://:pw@localhost:6379/0"));
        assert!(!is_secret("DATABASE_URL", "postgres://db:5432/app"));
        assert!(!is_secret("PORT", "8080"));
        for v in [
            "",
            "changeme",
            "CHANGE-ME",
            "your-api-key",
            "your_token",
            "example",
            "xxx",
            "XXXXXX",
            "todo",
            "<secret>",
            "postgres://app:changeme@db/app",
        ] {
            assert!(is_placeholder(v), "{v:?}");
        }
        for v in [
            "s3cr3t-Value-9",
            "postgres://app:Zq8v@db/app",
            "xx",
            "examples-are-fine-here",
        ] {
            assert!(!is_placeholder(v), "{v:?}");
        }
    }

    #[test]
    fn masking() {
        assert_eq!(mask(""), "(empty)");
        assert_eq!(mask("short"), "**** (5 chars)");
        // sha256("sk_live_abcdefghijkl") starts with these 8 hex digits; no character shown.
        let long = mask("sk_live_abcdefghijkl");
        assert!(long.starts_with("**** (20 chars, sha256 "), "{long}");
        assert!(!long.contains("sk"), "{long}");
        assert_ne!(
            long,
            mask("sk_live_abcdefghijkm"),
            "two values are told apart"
        );
    }

    #[test]
    fn check_vars_reports_missing_empty_and_placeholders() {
        let vars = vec![
            ("A".to_string(), "1".to_string()),
            ("EMPTY".to_string(), String::new()),
            ("API_TOKEN".to_string(), "changeme".to_string()),
        ];
        let required = vec!["A".to_string(), "B".to_string(), "EMPTY".to_string()];
        let problems = check_vars("env", &vars, &required, true);
        let kinds: Vec<&ProblemKind> = problems.iter().map(|p| &p.kind).collect();
        assert_eq!(
            kinds,
            vec![
                &ProblemKind::Missing {
                    key: "B".into(),
                    empty: false
                },
                &ProblemKind::Missing {
                    key: "EMPTY".into(),
                    empty: true
                },
                &ProblemKind::Placeholder {
                    key: "API_TOKEN".into(),
                    masked: "**** (8 chars)".into()
                },
            ]
        );
        let relaxed = check_vars("env", &vars, &[], false);
        assert!(relaxed.iter().all(|p| p.severity == Severity::Warning));
    }
}
