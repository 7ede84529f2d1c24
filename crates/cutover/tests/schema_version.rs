//! The state database's schema version across binaries: a database a newer cutover wrote is
//! refused by `serve` and the offline CLI, untouched; one an older cutover wrote is upgraded on
//! start, with a copy of it kept.

mod common;

use common::*;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn state_db(daemon: &Daemon) -> PathBuf {
    daemon.dir.path().join(".cutover/state.db")
}

fn user_version(db: &Path) -> i64 {
    Connection::open(db)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

/// `cutover serve` run to its exit (a daemon that starts anyway is killed and fails the test).
fn serve_until_exit(daemon: &Daemon) -> Output {
    let mut child = Command::new(CUTOVER)
        .args(["serve", "--config"])
        .arg(&daemon.config)
        .env("CUTOVER_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!("serve kept running:\n{}", text(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_database_of_a_newer_cutover_is_refused_by_serve_and_the_cli_and_left_as_it_was() {
    let mut daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    daemon.terminate();
    let db = state_db(&daemon);
    Connection::open(&db)
        .unwrap()
        .pragma_update(None, "user_version", 999)
        .unwrap();
    let before = std::fs::read(&db).unwrap();

    let out = serve_until_exit(&daemon);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr
            .contains("was written by a newer cutover (schema v999; this binary supports up to v")
            && stderr.contains("to downgrade deliberately"),
        "{stderr}"
    );
    // Refused outright, not served from a read-only view of a schema it does not know.
    assert!(!stderr.contains("read-only view"), "{stderr}");

    // The CLI, reading the database while the daemon is down, says the same.
    let status = daemon.cli(&["status"]);
    assert!(!status.status.success());
    assert!(
        text(&status.stderr).contains("was written by a newer cutover"),
        "{}",
        text(&status.stderr)
    );

    assert_eq!(std::fs::read(&db).unwrap(), before, "the database changed");
    assert_eq!(user_version(&db), 999);
}

#[test]
fn a_database_of_an_older_cutover_is_upgraded_on_start_and_a_copy_kept() {
    let mut daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    daemon.terminate();
    let db = state_db(&daemon);
    let current = user_version(&db);
    // As a cutover before the schema had a version (and before `last_active_at`) left it.
    Connection::open(&db)
        .unwrap()
        .execute_batch("ALTER TABLE releases DROP COLUMN last_active_at; PRAGMA user_version = 0;")
        .unwrap();

    daemon.spawn();
    eventually(Duration::from_secs(5), "v1 serving again", || {
        get(daemon.public, "/version").2 == "v1"
    });
    assert_eq!(user_version(&db), current);
    let copy = db.with_file_name("state.db.bak-v0");
    assert_eq!(user_version(&copy), 0);
    let (releases, _) = daemon.releases_json();
    assert_eq!(releases, ["v1"]);
}
