//! Which components changed between two commits: `cutover changed --base SHA --head SHA`.
//!
//! Why it exists: the change detection this replaces looked at the last commit of a push only,
//! so a push of several commits (or a merge) deployed nothing. Here the answer is the difference
//! between two *trees*: everything that differs between `base` (what was deployed, e.g.
//! `github.event.before`) and `head`, however many commits, merges or branches lie between.
//!
//! - `git diff --name-only --no-renames -z BASE HEAD`: a rename is listed as a deletion of the
//!   old path and an addition of the new one, so a file moved from `frontend/` to `backend/`
//!   changes both components. A root commit as head needs no parent: two trees are compared.
//! - A base that is empty, all zeros (GitHub's `before` on a new branch) or not a commit in this
//!   repository (a force push, a shallow clone) gives [`Changed::All`] with the reason: when we
//!   cannot tell, every component is deployed.
//! - Globs ([`globset`]) match paths relative to the repository root, `/`-separated, as in
//!   GitHub's `paths:` filters: `*` and `?` stay within one path segment, `**` crosses
//!   directories (`backend/**`, `**/*.go`), `{a,b}` alternates, and a glob without `/` matches at
//!   the root only (`go.mod`).

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The components whose files changed, or all of them when that cannot be told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Changed {
    /// Deploy every component: the base could not be used.
    All {
        reason: String,
        /// Every component, in the order given, with no files.
        components: Vec<ComponentChange>,
    },
    /// Exactly the components listed (possibly none).
    Components {
        /// Full commit ids the range was resolved to.
        base: String,
        head: String,
        /// Changed components in the order given, each with the files that matched it.
        components: Vec<ComponentChange>,
        /// Changed files that matched no component (shown so a missing glob is noticed).
        unmatched: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentChange {
    pub name: String,
    pub files: Vec<String>,
}

impl Changed {
    /// The names of the components to deploy.
    pub fn names(&self) -> Vec<&str> {
        let (Changed::All { components, .. } | Changed::Components { components, .. }) = self;
        components.iter().map(|c| c.name.as_str()).collect()
    }

    pub fn is_all(&self) -> bool {
        matches!(self, Changed::All { .. })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChangesError {
    #[error("cannot run git in {repo}: {source}")]
    Spawn {
        repo: PathBuf,
        source: std::io::Error,
    },
    #[error("{repo} is not a git repository: {stderr}")]
    NotARepository { repo: PathBuf, stderr: String },
    #[error("head {head:?} is not a commit in {repo}")]
    Head { repo: PathBuf, head: String },
    #[error("git {args} failed in {repo}: {stderr}")]
    Git {
        repo: PathBuf,
        args: String,
        stderr: String,
    },
    #[error("component {component}: invalid path glob {glob:?}: {message}")]
    Glob {
        component: String,
        glob: String,
        message: String,
    },
}

/// Builds one glob with the semantics documented at the top of this module.
pub fn glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

/// Compiles a component's globs into one set; errors name the component and the glob. Config
/// validation can call this to reject a bad `paths` entry early.
pub fn compile(component: &str, globs: &[String]) -> Result<GlobSet, ChangesError> {
    let mut set = GlobSetBuilder::new();
    for pattern in globs {
        set.add(glob(pattern).map_err(|e| ChangesError::Glob {
            component: component.to_owned(),
            glob: pattern.clone(),
            message: e.kind().to_string(),
        })?);
    }
    set.build().map_err(|e| ChangesError::Glob {
        component: component.to_owned(),
        glob: globs.join(", "),
        message: e.kind().to_string(),
    })
}

/// The components (name, path globs) whose files differ between commits `base` and `head` of
/// the git repository at `repo`.
pub fn changed(
    repo: &Path,
    base: &str,
    head: &str,
    components: &[(String, Vec<String>)],
) -> Result<Changed, ChangesError> {
    let sets = components
        .iter()
        .map(|(name, globs)| compile(name, globs).map(|set| (name.as_str(), set)))
        .collect::<Result<Vec<_>, _>>()?;
    let all = |reason: String| Changed::All {
        reason,
        components: components
            .iter()
            .map(|(name, _)| ComponentChange {
                name: name.clone(),
                files: Vec::new(),
            })
            .collect(),
    };

    git(repo, &["rev-parse", "--git-dir"]).map_err(|e| match e {
        ChangesError::Git { repo, stderr, .. } => ChangesError::NotARepository { repo, stderr },
        other => other,
    })?;
    let head_id = resolve_commit(repo, head)?.ok_or_else(|| ChangesError::Head {
        repo: repo.to_owned(),
        head: head.to_owned(),
    })?;
    let base = base.trim();
    if base.is_empty() {
        return Ok(all("no base commit given: deploying all".into()));
    }
    let shown = short(base);
    if base.bytes().all(|b| b == b'0') {
        return Ok(all(format!(
            "base {shown} is not a commit in this repository (all zeros: a new branch or a \
             first push): deploying all"
        )));
    }
    let Some(base_id) = resolve_commit(repo, base)? else {
        return Ok(all(format!(
            "base {shown} is not a commit in this repository: deploying all"
        )));
    };

    let out = git(
        repo,
        &[
            "diff",
            "--name-only",
            "--no-renames",
            "--no-ext-diff",
            "-z",
            &base_id,
            &head_id,
            "--",
        ],
    )?;
    let mut files: Vec<String> = out
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    files.sort();
    files.dedup();

    let mut changed: Vec<ComponentChange> = Vec::new();
    let mut unmatched = Vec::new();
    for file in &files {
        let mut hit = false;
        for (name, set) in &sets {
            if set.is_match(file) {
                hit = true;
                match changed.iter_mut().find(|c| c.name == *name) {
                    Some(c) => c.files.push(file.clone()),
                    None => changed.push(ComponentChange {
                        name: (*name).to_owned(),
                        files: vec![file.clone()],
                    }),
                }
            }
        }
        if !hit {
            unmatched.push(file.clone());
        }
    }
    // In the order the components were given (the config's order).
    changed.sort_by_key(|c| sets.iter().position(|(n, _)| *n == c.name));
    Ok(Changed::Components {
        base: base_id,
        head: head_id,
        components: changed,
        unmatched,
    })
}

/// The full id of `rev` if it names a commit here; `None` if it does not.
fn resolve_commit(repo: &Path, rev: &str) -> Result<Option<String>, ChangesError> {
    if rev.is_empty() || rev.starts_with('-') || rev.contains(char::is_whitespace) {
        return Ok(None);
    }
    let spec = format!("{rev}^{{commit}}");
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &spec,
        ])
        .output()
        .map_err(|source| ChangesError::Spawn {
            repo: repo.to_owned(),
            source,
        })?;
    if !out.status.success() {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()))
}

fn git(repo: &Path, args: &[&str]) -> Result<Vec<u8>, ChangesError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .map_err(|source| ChangesError::Spawn {
            repo: repo.to_owned(),
            source,
        })?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(ChangesError::Git {
            repo: repo.to_owned(),
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// A commit id shortened for messages (7 characters, as git shows them); other text as is,
/// bounded.
fn short(rev: &str) -> String {
    if rev.len() >= 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()) {
        rev[..7].to_owned()
    } else {
        rev.chars().take(64).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(pattern: &str, path: &str, expect: bool) {
        let m = glob(pattern).unwrap().compile_matcher();
        assert_eq!(m.is_match(path), expect, "{pattern} vs {path}");
    }

    #[test]
    fn glob_semantics() {
        check("backend/**", "backend/main.go", true);
        check("backend/**", "backend/cmd/api/main.go", true);
        check("backend/**", "backend", false);
        check("backend/**", "frontend/backend/x", false);
        check("backend/*", "backend/cmd/main.go", false);
        check("go.mod", "go.mod", true);
        check("go.mod", "backend/go.mod", false);
        check("**/*.go", "main.go", true);
        check("**/*.go", "a/b/main.go", true);
        check("*.md", "docs/a.md", false);
        check("{backend,shared}/**", "shared/x", true);
        check("a/**/b", "a/b", true);
        check("a/**/b", "a/x/y/b", true);
    }

    #[test]
    fn short_ids() {
        assert_eq!(short(&"0".repeat(40)), "0000000");
        assert_eq!(short("v1"), "v1");
    }

    #[test]
    fn bad_glob_names_the_component() {
        let e = compile("backend", &["backend/[".into()]).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("component backend: invalid path glob"));
    }
}
