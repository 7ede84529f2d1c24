//! The workflow's `detect` job script: which components a push changed, in bash, with the
//! same glob semantics as `cutover changed` ([`bash_pattern`] translates each glob).

use super::{line, sq, WorkflowError, WorkflowOptions};
use crate::ops::changes;

pub(super) fn detect_script(
    w: &mut String,
    opts: &WorkflowOptions,
    every: &str,
) -> Result<(), WorkflowError> {
    let names: Vec<&str> = opts.components.iter().map(|c| c.name.as_str()).collect();
    let all = names.join(" ");
    let mut s: Vec<String> = vec![
        "set -euo pipefail".into(),
        "shopt -s extglob".into(),
        format!("all='{all}'"),
        "# Whether file $2 belongs to component $1: the config's globs, in bash (extglob).".into(),
        "matches() {".into(),
        "  local p pats=()".into(),
        "  case \"$1\" in".into(),
    ];
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
        s.push(format!("    {}) pats=({}) ;;", c.name, pats.join(" ")));
    }
    s.extend(
        [
            "  esac",
            "  for p in \"${pats[@]}\"; do",
            "    # shellcheck disable=SC2053 # $p is a glob on purpose",
            "    [[ $2 == $p ]] && return 0",
            "  done",
            "  return 1",
            "}",
            "release=${RELEASE_INPUT:-$HEAD_SHA}",
            "if [[ ! $release =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ ]]; then",
            "  echo '::error::release must be 1-64 characters A-Z a-z 0-9 . _ - starting with a letter or digit'",
            "  exit 1",
            "fi",
            "target=${TARGET:-auto}",
            "selected=''",
            "reason=''",
            "case \"$target\" in",
        ]
        .map(String::from),
    );
    let every = if every == "all" { "all" } else { "both|all" };
    s.push(format!(
        "  auto) ;;\n  {every}) selected=$all; reason=\"target $target\" ;;"
    ));
    s.push(format!(
        "  {}) selected=$target; reason=\"target $target\" ;;",
        names.join("|")
    ));
    s.extend(
        [
            "  *) echo '::error::unknown target'; exit 1 ;;",
            "esac",
            "if [ \"$target\" = auto ]; then",
            "  if [ \"$EVENT\" != push ]; then",
            "    selected=$all; reason='manual run: no pushed range, deploying all'",
            "  elif [[ ! $BEFORE =~ ^[0-9a-f]{40}([0-9a-f]{24})?$ ]] || [[ $BEFORE =~ ^0+$ ]]; then",
            "    selected=$all; reason='base is all zeros or unknown (a new branch?): deploying all'",
            "  elif ! git cat-file -e \"$BEFORE^{commit}\" 2>/dev/null; then",
            "    selected=$all; reason=\"base ${BEFORE:0:7} is not a commit in this repository: deploying all\"",
        ]
        .map(String::from),
    );
    if let Some(config) = &opts.repo_config {
        s.push(format!(
            "  elif command -v cutover >/dev/null && command -v jq >/dev/null && [ -f {} ]; then",
            sq(config)
        ));
        s.push(format!(
            "    selected=$(cutover --config {} changed --base \"$BEFORE\" --head \"$HEAD_SHA\" --json | jq -r '[.components[].name] | join(\" \")')",
            sq(config)
        ));
        s.push("    reason=\"cutover changed ${BEFORE:0:7}..${HEAD_SHA:0:7}\"".into());
    }
    s.extend(
        [
            "  else",
            "    files=()",
            "    while IFS= read -r -d '' f; do files+=(\"$f\"); done \\",
            "      < <(git diff --name-only --no-renames -z \"$BEFORE\" \"$HEAD_SHA\" --)",
            "    for c in $all; do",
            "      for f in \"${files[@]}\"; do",
            "        if matches \"$c\" \"$f\"; then selected=\"${selected:+$selected }$c\"; break; fi",
            "      done",
            "    done",
            "    reason=\"${#files[@]} files changed in ${BEFORE:0:7}..${HEAD_SHA:0:7}\"",
            "  fi",
            "fi",
            "echo \"Deploying: ${selected:-nothing} ($reason)\" | tee -a \"$GITHUB_STEP_SUMMARY\"",
            "echo \"components=$selected\" >> \"$GITHUB_OUTPUT\"",
            "echo \"release=$release\" >> \"$GITHUB_OUTPUT\"",
        ]
        .map(String::from),
    );
    for text in s {
        for l in text.lines() {
            line(w, 5, l);
        }
    }
    Ok(())
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
