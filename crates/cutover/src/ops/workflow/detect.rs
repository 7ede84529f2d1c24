//! The workflow's `detect` job script: which components a push changed, in bash, with the
//! same glob semantics as `cutover changed` ([`bash_pattern`] translates each glob).

use super::fill::Fill;
use super::{sq, WorkflowError, WorkflowOptions};
use crate::ops::changes;

/// The detect job's script, with `%{...}` placeholders (see `fill.rs`).
const DETECT_TEMPLATE: &str = include_str!("templates/detect.sh");

/// The script of the detect job; `every` is the target that deploys every component.
pub(super) fn detect_script(opts: &WorkflowOptions, every: &str) -> Result<String, WorkflowError> {
    let names: Vec<&str> = opts.components.iter().map(|c| c.name.as_str()).collect();
    let mut glob_cases = Vec::new();
    for c in &opts.components {
        let mut pats = Vec::new();
        for g in &c.paths {
            let pattern = bash_pattern(g).map_err(|message| WorkflowError::Glob {
                component: c.name.clone(),
                glob: g.clone(),
                message,
            })?;
            pats.push(sq(&pattern));
        }
        glob_cases.push(format!("{}) pats=({}) ;;", c.name, pats.join(" ")));
    }
    // `all` deploys every component even when the choice offered is `both`.
    let all_targets = if every == "all" { "all" } else { "both|all" };
    let script = Fill::default()
        .text("all", names.join(" "))
        .lines("glob_cases", glob_cases)
        .text("all_targets", all_targets)
        .text("names", names.join("|"))
        .optional("repo_config", opts.repo_config.as_deref().map(sq))
        .render(DETECT_TEMPLATE);
    Ok(script)
}

/// Translates a glob (semantics of [`changes::glob`]) into a bash extglob pattern for
/// `[[ $path == $pattern ]]`: `*` → `*([!/])`, `?` → `[!/]`, `**/` → `?(*/)`, a final `/**` or
/// a lone `**` → `*`, `{a,b}` → `@(a|b)`; bash's own pattern characters are escaped.
pub fn bash_pattern(glob: &str) -> Result<String, String> {
    changes::glob(glob).map_err(|e| e.kind().to_string())?;
    let chars: Vec<char> = glob.chars().collect();
    let mut out = String::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let prev = if i == 0 { None } else { Some(chars[i - 1]) };
        match c {
            '\\' => {
                let Some(&next) = chars.get(i + 1) else {
                    return Err("dangling backslash".into());
                };
                out.push('\\');
                out.push(next);
                i += 2;
                continue;
            }
            '*' if chars.get(i + 1) == Some(&'*') => {
                let boundary_before = prev.is_none()
                    || prev == Some('/')
                    || (depth > 0 && matches!(prev, Some('{') | Some(',')));
                let next = chars.get(i + 2).copied();
                let end = next.is_none() || (depth > 0 && matches!(next, Some(',') | Some('}')));
                if boundary_before && next == Some('/') {
                    out.push_str("?(*/)");
                    i += 3;
                } else if boundary_before && end {
                    out.push('*');
                    i += 2;
                } else {
                    out.push_str("*([!/])");
                    i += 2;
                }
                continue;
            }
            '*' => out.push_str("*([!/])"),
            '?' => out.push_str("[!/]"),
            '[' => {
                // Copied as is up to the closing bracket (a `]` right after `[` or `[!` is literal).
                let mut j = i + 1;
                if matches!(chars.get(j), Some('!') | Some('^')) {
                    j += 1;
                }
                if chars.get(j) == Some(&']') {
                    j += 1;
                }
                while j < chars.len() && chars[j] != ']' {
                    j += 1;
                }
                if j >= chars.len() {
                    return Err("unclosed character class".into());
                }
                let class: String = chars[i..=j].iter().collect();
                if class.contains('/') {
                    return Err("a character class cannot contain '/'".into());
                }
                out.push_str(&class.replacen("[^", "[!", 1));
                i = j + 1;
                continue;
            }
            '{' => {
                depth += 1;
                out.push_str("@(");
            }
            ',' if depth > 0 => out.push('|'),
            '}' if depth > 0 => {
                depth -= 1;
                out.push(')');
            }
            '(' | ')' | '|' | '@' | '!' | '+' | ']' | '}' | ',' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;
    use std::process::Command;

    #[test]
    fn bash_patterns() {
        assert_eq!(bash_pattern("backend/**").unwrap(), "backend/*");
        assert_eq!(bash_pattern("**/*.go").unwrap(), "?(*/)*([!/]).go");
        assert_eq!(bash_pattern("a/**/b").unwrap(), "a/?(*/)b");
        assert_eq!(bash_pattern("{a,b}/**").unwrap(), "@(a|b)/*");
        assert_eq!(bash_pattern("x(1)").unwrap(), "x\\(1\\)");
        assert!(bash_pattern("a/[").is_err());
    }

    /// The inline detection in the workflow must agree with `cutover changed` on every glob.
    #[test]
    fn bash_translation_agrees_with_globset() {
        if Command::new("bash").arg("--version").output().is_err() {
            eprintln!("skipped: no bash");
            return;
        }
        let globs = [
            "backend/**",
            "backend/*",
            "go.mod",
            "**/*.go",
            "*.md",
            "a/**/b",
            "{backend,shared}/**",
            "{**/*.rs,Cargo.*}",
            "src/?.c",
            "web/[abc]*.js",
            "web/[!abc]*.js",
            "x(1)|y",
            "docs/**/*.{md,txt}",
            "**",
            "a**b/c",
        ];
        let paths = [
            "backend",
            "backend/main.go",
            "backend/cmd/api/main.go",
            "go.mod",
            "sub/go.mod",
            "main.go",
            "a/b/c.go",
            "README.md",
            "docs/x.md",
            "docs/a/b/x.txt",
            "a/b",
            "a/x/y/b",
            "ab",
            "shared/lib.rs",
            "lib.rs",
            "Cargo.toml",
            "crates/x/src/lib.rs",
            "src/a.c",
            "src/ab.c",
            "src/a/c",
            "web/a1.js",
            "web/d1.js",
            "web/x/a.js",
            "x(1)|y",
            "x1y",
            "aXb/c",
            "a/b/c",
            ".github/workflows/deploy.yml",
        ];
        let mut script = String::from("shopt -s extglob\n");
        let mut expected = String::new();
        for g in globs {
            let m = changes::glob(g).unwrap().compile_matcher();
            let p = bash_pattern(g).unwrap();
            for path in paths {
                // Unquoted expansion of a variable, as in the workflow.
                let _ = writeln!(
                    script,
                    "p={}; if [[ {} == $p ]]; then echo 1; else echo 0; fi",
                    sq(&p),
                    sq(path)
                );
                expected.push_str(if m.is_match(path) { "1\n" } else { "0\n" });
            }
        }
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = String::from_utf8(out.stdout).unwrap();
        let (mut i, mut diffs) = (0, Vec::new());
        for g in globs {
            for path in paths {
                let (e, o) = (&expected[i * 2..i * 2 + 1], &got[i * 2..i * 2 + 1]);
                if e != o {
                    diffs.push(format!("{g} vs {path}: globset {e}, bash {o}"));
                }
                i += 1;
            }
        }
        assert!(diffs.is_empty(), "{diffs:#?}");
    }
}
