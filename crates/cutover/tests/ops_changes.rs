//! `cutover changed` on a real git repository built by the test: ranges of several commits, a
//! merge, a rename across components, a root commit, and bases it cannot use (issue 5).

use cutover::ops::changes::{changed, Changed, ChangesError};
use std::path::Path;
use std::process::Command;

/// git with no user or system configuration, fixed identities and dates.
fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
        .output()
        .expect("git is installed");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn write(repo: &Path, path: &str, text: &str) {
    let path = repo.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn commit(repo: &Path, message: &str) -> String {
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "--no-gpg-sign", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
}

fn components() -> Vec<(String, Vec<String>)> {
    vec![
        ("backend".into(), vec!["backend/**".into(), "go.mod".into()]),
        ("frontend".into(), vec!["frontend/**".into()]),
    ]
}

/// Names and files per component, for compact assertions.
fn summary(c: &Changed) -> Vec<(String, Vec<String>)> {
    let (Changed::All { components, .. } | Changed::Components { components, .. }) = c;
    components
        .iter()
        .map(|c| (c.name.clone(), c.files.clone()))
        .collect()
}

fn files(pairs: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    pairs
        .iter()
        .map(|(n, f)| (n.to_string(), f.iter().map(|s| s.to_string()).collect()))
        .collect()
}

struct Repo {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    root: String,
    backend_change: String,
    merge: String,
    feature: String,
    rename: String,
}

/// root -> backend change -> (feature: frontend change, merged) + README on main -> merge
/// -> rename frontend/index.html to backend/index.html.
fn repo() -> Repo {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    git(&path, &["init", "-q", "-b", "main"]);
    write(&path, "backend/main.go", "package main\n");
    write(&path, "frontend/index.html", "<h1>hi</h1>\n");
    write(&path, "README.md", "readme\n");
    write(&path, "go.mod", "module x\n");
    let root = commit(&path, "root");

    write(&path, "backend/main.go", "package main\n// v2\n");
    let backend_change = commit(&path, "backend v2");

    git(&path, &["checkout", "-q", "-b", "feature"]);
    write(&path, "frontend/app js/with space.js", "1\n");
    let feature = commit(&path, "frontend feature");

    git(&path, &["checkout", "-q", "main"]);
    write(&path, "README.md", "readme v2\n");
    commit(&path, "readme");
    git(
        &path,
        &[
            "merge",
            "-q",
            "--no-ff",
            "--no-gpg-sign",
            "-m",
            "merge",
            "feature",
        ],
    );
    let merge = git(&path, &["rev-parse", "HEAD"]);

    git(&path, &["mv", "frontend/index.html", "backend/index.html"]);
    let rename = commit(&path, "move index.html to the backend");
    Repo {
        _dir: dir,
        path,
        root,
        backend_change,
        merge,
        feature,
        rename,
    }
}

#[test]
fn whole_range_merges_and_renames() {
    let r = repo();
    let c = components();

    // One commit.
    let got = changed(&r.path, &r.root, &r.backend_change, &c).unwrap();
    assert_eq!(summary(&got), files(&[("backend", &["backend/main.go"])]));

    // Same commit: nothing.
    let got = changed(&r.path, &r.merge, &r.merge, &c).unwrap();
    assert!(got.names().is_empty());
    assert!(!got.is_all());

    // The whole range, across a merge: the frontend change came in through the merge.
    let got = changed(&r.path, &r.backend_change, &r.merge, &c).unwrap();
    assert_eq!(
        summary(&got),
        files(&[("frontend", &["frontend/app js/with space.js"])])
    );
    let Changed::Components { unmatched, .. } = &got else {
        panic!("{got:?}")
    };
    assert_eq!(unmatched, &["README.md"]);

    // Several commits including the merge.
    let got = changed(&r.path, &r.root, &r.merge, &c).unwrap();
    assert_eq!(got.names(), ["backend", "frontend"]);

    // A merge commit against its first parent: what the merge brought in.
    let got = changed(&r.path, &format!("{}^1", r.merge), &r.merge, &c).unwrap();
    assert_eq!(got.names(), ["frontend"]);

    // A rename counts for the old path (frontend) and the new one (backend).
    let got = changed(&r.path, &r.merge, &r.rename, &c).unwrap();
    assert_eq!(
        summary(&got),
        files(&[
            ("backend", &["backend/index.html"]),
            ("frontend", &["frontend/index.html"])
        ])
    );

    // Base and head on different branches: the difference of the trees.
    let got = changed(&r.path, &r.feature, &r.backend_change, &c).unwrap();
    assert_eq!(got.names(), ["frontend"]);

    // Full ids in the answer, whatever names were given.
    let got = changed(&r.path, "main~1", "main", &c).unwrap();
    let Changed::Components { base, head, .. } = &got else {
        panic!("{got:?}")
    };
    assert_eq!(
        (base.as_str(), head.as_str()),
        (r.merge.as_str(), r.rename.as_str())
    );
}

#[test]
fn unusable_base_means_all_with_a_reason() {
    let r = repo();
    let c = components();
    let zeros = "0".repeat(40);
    for (base, expect) in [
        (
            zeros.as_str(),
            "base 0000000 is not a commit in this repository",
        ),
        (
            "1234567890abcdef1234567890abcdef12345678",
            "base 1234567 is not a commit in this repository: deploying all",
        ),
        ("no-such-branch", "base no-such-branch is not a commit"),
        ("", "no base commit given: deploying all"),
        ("--output=/tmp/x", "is not a commit"),
    ] {
        let got = changed(&r.path, base, &r.merge, &c).unwrap();
        let Changed::All { reason, .. } = &got else {
            panic!("{base:?}: {got:?}")
        };
        assert!(reason.contains(expect), "{base:?}: {reason}");
        assert_eq!(got.names(), ["backend", "frontend"]);
    }
    // A tree is an object but not a commit.
    let tree = git(&r.path, &["rev-parse", &format!("{}^{{tree}}", r.root)]);
    assert!(changed(&r.path, &tree, &r.merge, &c).unwrap().is_all());
    // The parent of a root commit does not exist.
    let got = changed(&r.path, &format!("{}~1", r.root), &r.root, &c).unwrap();
    assert!(got.is_all(), "{got:?}");
}

#[test]
fn root_commit_as_head() {
    let r = repo();
    let c = components();
    // An orphan branch: its commit has no parent.
    git(&r.path, &["checkout", "-q", "--orphan", "fresh"]);
    git(&r.path, &["rm", "-q", "-rf", "."]);
    write(&r.path, "frontend/index.html", "<h1>fresh</h1>\n");
    let orphan = commit(&r.path, "a new root");
    assert_eq!(
        git(&r.path, &["rev-list", "--parents", "-n", "1", &orphan]),
        orphan,
        "no parent"
    );
    // Against an unrelated history: everything that differs.
    let got = changed(&r.path, &r.root, &orphan, &c).unwrap();
    assert_eq!(got.names(), ["backend", "frontend"]);
    let got = changed(&r.path, &"0".repeat(40), &orphan, &c).unwrap();
    assert!(got.is_all());
}

#[test]
fn errors_and_json() {
    let r = repo();
    let c = components();
    assert!(matches!(
        changed(&r.path, &r.root, "no-such-head", &c),
        Err(ChangesError::Head { .. })
    ));
    let not_repo = tempfile::tempdir().unwrap();
    let e = changed(not_repo.path(), &r.root, &r.merge, &c).unwrap_err();
    assert!(matches!(e, ChangesError::NotARepository { .. }), "{e}");
    let bad = vec![("backend".to_string(), vec!["backend/[".to_string()])];
    let e = changed(&r.path, &r.root, &r.merge, &bad).unwrap_err();
    assert!(e.to_string().contains("backend/["), "{e}");

    let got = changed(&r.path, &r.root, &r.backend_change, &c).unwrap();
    let json = serde_json::to_value(&got).unwrap();
    assert_eq!(json["kind"], "components");
    assert_eq!(json["components"][0]["name"], "backend");
    assert_eq!(json["components"][0]["files"][0], "backend/main.go");
    assert_eq!(json["base"], r.root.as_str());
    let all = changed(&r.path, "", &r.merge, &c).unwrap();
    let json = serde_json::to_value(&all).unwrap();
    assert_eq!(json["kind"], "all");
    assert_eq!(json["components"][1]["name"], "frontend");
    assert!(json["reason"].as_str().unwrap().contains("deploying all"));
}
