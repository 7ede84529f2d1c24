//! `scripts/test`, the README's test command (issue 14, item 9): not as root, with tools
//! missing, it prints the one `apt-get install` line to run and stops; it and `.ci/run` pass
//! shellcheck.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The absolute path of `program` on this machine's PATH.
fn which(program: &str) -> PathBuf {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .unwrap();
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!path.is_empty(), "{program} is not on PATH");
    PathBuf::from(path)
}

#[test]
fn not_as_root_it_prints_the_apt_line_for_what_is_missing() {
    // A PATH with only what the script itself runs: every tool the tests need is missing.
    let bin = tempfile::tempdir().unwrap();
    for tool in ["dirname", "id"] {
        symlink(which(tool), bin.path().join(tool)).unwrap();
    }
    let bash = which("bash");
    let script = repo().join("scripts/test");
    let root = unsafe { libc::geteuid() } == 0;
    let mut command = if root {
        // As nobody, through setpriv (util-linux), the way a developer would run it.
        let mut c = Command::new(which("setpriv"));
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
        c.arg(&bash);
        c
    } else {
        Command::new(&bash)
    };
    let out = command
        .arg(&script)
        .env_clear()
        .env("PATH", bin.path())
        .env("HOME", bin.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let mut missing = vec!["systemd", "redis-server"];
    if !Path::new("/usr/lib/postgresql/15/bin/initdb").is_file() {
        missing.push("postgresql-15");
    }
    missing.extend(["util-linux", "shellcheck", "nodejs", "golang-go"]);
    if !Path::new("/usr/lib/python3/dist-packages/gunicorn").is_dir() {
        missing.push("python3-gunicorn");
    }
    missing.extend(["passwd", "tmux", "pebble", "docker.io", "docker-compose"]);
    if !Path::new("/bin/busybox").exists() {
        missing.push("busybox-static");
    }
    // The fleet tests' hosts: `ip` and ssh come from PATH (empty here); sshd by its path.
    missing.push("iproute2");
    if !Path::new("/usr/sbin/sshd").exists() {
        missing.push("openssh-server");
    }
    missing.push("openssh-client");
    missing.push("python3-pip");
    let line = format!("    sudo apt-get install -y {}", missing.join(" "));
    assert!(
        stderr.lines().any(|l| l == line),
        "want the line {line:?} in:\n{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing ran: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_scripts_pass_shellcheck() {
    let Ok(out) = Command::new("shellcheck")
        .arg(repo().join("scripts/test"))
        .arg(repo().join(".ci/run"))
        .output()
    else {
        assert!(!in_ci(), "shellcheck is required under CI=true");
        eprintln!("note: shellcheck not found; skipped");
        return;
    };
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
