//! Nothing cutover does loses data: artifact paths, retention, temp files, a full disk.

mod common;

use common::disk::{fill, leftovers, Tmpfs};
use common::*;
use std::time::Duration;

/// Regression: a `--no-upload` artifact inside `data_dir/uploads` made the cleanup remove its
/// parent, the whole data_dir (state, releases, socket).
#[test]
fn a_deployers_own_path_is_never_removed() {
    let daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    let data = daemon.dir.path().join(".cutover");
    let uploads = data.join("uploads");
    std::fs::create_dir_all(&uploads).unwrap();

    let out = daemon.cli(&[
        "deploy",
        "backend",
        "--release",
        "x1",
        "--no-upload",
        "--artifact",
        uploads.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(data.join("state.db").exists(), "the state database is gone");
    assert!(data.join("releases/backend/v1/artifact").exists());
    assert!(uploads.is_dir(), "the deployer's directory is gone");
    assert_eq!(get(daemon.public, "/version").2, "v1");

    // A file the deployer put under uploads/ and deployed by path stays where it was.
    let mine = uploads.join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::copy(demo_api(), mine.join("api")).unwrap();
    let out = daemon.cli(&[
        "deploy",
        "backend",
        "--release",
        "v2",
        "--no-upload",
        "--artifact",
        mine.join("api").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(mine.join("api").exists(), "the deployer's file was removed");
    assert_eq!(get(daemon.public, "/version").2, "v2");
    let status = daemon.status_json();
    assert_eq!(status["components"][0]["active"], "v2");
    // Nor at the next start, when stale uploads of the previous daemon are cleared.
    let mut daemon = daemon;
    daemon.terminate();
    daemon.spawn();
    assert!(
        mine.join("api").exists(),
        "a restart removed the deployer's file"
    );
}

fn release_kept(daemon: &Daemon, id: &str) -> bool {
    daemon
        .dir
        .path()
        .join(".cutover/releases/backend")
        .join(id)
        .join("release.json")
        .exists()
}

/// Regression: with keep_releases = 5, four failed deploys after v1, v2 pushed v2 (the last
/// good release before the active one) out and kept the failed ones.
#[test]
fn retention_prunes_failed_releases_first_and_keeps_the_last_good_one() {
    let daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    daemon.deploy_ok("v2", &demo_api());
    for release in ["v3", "v4", "v5", "v6"] {
        let broken = daemon.script(
            &format!("broken-{release}"),
            &format!("echo {release} dies; exit 3"),
        );
        let out = daemon.deploy(release, &broken);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{release}: {}",
            text(&out.stdout)
        );
    }
    assert_eq!(get(daemon.public, "/version").2, "v2");
    let (_, releases) = daemon.releases_json();
    let outcome = |id: &str| {
        releases["releases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .map(|r| r["outcome"].clone())
    };
    assert_eq!(outcome("v6"), Some("failed".into()), "{releases}");
    assert_eq!(outcome("v2"), Some("succeeded".into()), "{releases}");
    let table = text(&daemon.cli(&["releases", "backend"]).stdout);
    assert!(
        table.contains("OUTCOME") && table.contains("failed"),
        "{table}"
    );

    daemon.deploy_ok("v7", &demo_api());
    assert!(
        release_kept(&daemon, "v2"),
        "the last good release was pruned"
    );
    assert!(
        release_kept(&daemon, "v1"),
        "a release that was active was pruned before failed ones"
    );
    assert!(
        !release_kept(&daemon, "v3"),
        "the oldest failed release is kept"
    );
    let (ids, _) = daemon.releases_json();
    assert!(ids.len() <= 6, "{ids:?}");

    let out = daemon.cli(&["rollback", "backend", "--to", "v2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(get(daemon.public, "/version").2, "v2");
}

#[test]
fn temp_files_of_an_interrupted_store_go_at_start_up() {
    let mut daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    let data = daemon.dir.path().join(".cutover");
    // What a daemon killed in the middle of storing or pruning leaves.
    std::fs::create_dir_all(data.join("releases/backend/.tmp-v9-12345")).unwrap();
    std::fs::write(
        data.join("releases/backend/.tmp-v9-12345/artifact"),
        vec![0u8; 4096],
    )
    .unwrap();
    std::fs::create_dir_all(data.join("releases/backend/.trash-v0")).unwrap();
    // And something cutover did not create, which must stay.
    std::fs::write(data.join("releases/backend/NOTES.txt"), b"mine").unwrap();
    daemon.kill9();
    daemon.spawn();
    assert_eq!(leftovers(&data), Vec::<String>::new());
    assert!(data.join("releases/backend/NOTES.txt").exists());
    assert_eq!(get(daemon.public, "/version").2, "v1");
}

/// Regression: a failed store leaked its temp copy, the disk filled, and the daemon could not
/// start again ("database is full"): the public port stayed closed.
#[test]
fn a_full_disk_refuses_deploys_and_never_keeps_the_daemon_from_serving() {
    let config = format!(
        "[daemon]\ndata_dir = \"data\"\ncontrol_socket = \"data/control.sock\"\n\n\
         [components.backend]\nlisten = \"127.0.0.1:0\"\n{FAST_COMPONENT}"
    );
    let mut mounted = None;
    let mut daemon = Daemon::start_with_config_and(&config, |dir| {
        mounted = Tmpfs::mount(&dir.join("data"), "160m");
    });
    let Some(_tmpfs) = mounted else { return };
    let data = daemon.dir.path().join("data");
    daemon.deploy_ok("v1", &demo_api());

    // Leave less room than the next artifact needs: refused before anything is copied.
    let filler = data.join("filler");
    let artifact_size = std::fs::metadata(demo_api()).unwrap().len();
    fill(&filler, artifact_size / 2);
    let out = daemon.cli(&[
        "deploy",
        "backend",
        "--release",
        "v2",
        "--no-upload",
        "--artifact",
        demo_api().to_str().unwrap(),
    ]);
    let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("free"),
        "the refusal should say how much room is missing: {shown}"
    );
    assert_eq!(leftovers(&data), Vec::<String>::new());
    assert_eq!(get(daemon.public, "/version").2, "v1");
    let history = daemon.cli(&["history", "--json"]);
    assert!(history.status.success());
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    assert!(
        history["deploys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| !d["ended_at"].is_null()),
        "a deploy stays open: {history}"
    );

    // Completely full: a restart still serves the committed release.
    std::fs::remove_file(&filler).unwrap();
    fill(&filler, 0);
    daemon.terminate();
    daemon.spawn();
    eventually(
        Duration::from_secs(10),
        "v1 serving after a restart on a full disk",
        || get(daemon.public, "/version").2 == "v1",
    );
    assert!(filler.exists(), "cutover removed a file it did not create");

    // Full again with the reserve already spent, and the instance gone too (as under systemd,
    // which kills it with the daemon): the release is started without a state write.
    fill(&data.join("filler-2"), 0);
    let pid = daemon.component_status("backend")["serving"]["pid"]
        .as_i64()
        .unwrap() as i32;
    daemon.kill9();
    unsafe { libc::kill(pid, libc::SIGKILL) };
    daemon.spawn();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(daemon.public, "/version").2 != "v1" {
        assert!(
            std::time::Instant::now() < deadline,
            "v1 not serving after a second restart on a full disk:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        daemon.log().contains("not recorded") || daemon.log().contains("read-only view"),
        "the daemon should say it serves without recording: {}",
        daemon.log()
    );
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(data.join("filler-2")).unwrap();
    drop(daemon);
}
