//! Issue 14 item 7: the README's server setup, with real users. The daemon runs as its own user;
//! a deploy user in `[daemon] socket_group` deploys and reads the status over the control
//! socket (mode 0660); a user outside the group is refused with the permission-denied message.

mod common;

use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Users and a group made for one test, removed when it ends.
struct Accounts {
    group: String,
    users: Vec<String>,
}

impl Accounts {
    fn create(tag: &str) -> Option<Accounts> {
        let root = unsafe { libc::geteuid() } == 0;
        let tools = [
            "/usr/sbin/useradd",
            "/usr/sbin/groupadd",
            "/usr/bin/setpriv",
        ]
        .iter()
        .all(|t| Path::new(t).is_file());
        if !(root && tools) {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "this test needs root, useradd/groupadd (passwd) and setpriv (util-linux) under CI"
            );
            eprintln!("skipped: needs root, useradd and setpriv");
            return None;
        }
        let id = std::process::id() % 100_000;
        let group = format!("cg{tag}{id}");
        let accounts = Accounts {
            group: group.clone(),
            users: Vec::new(),
        };
        let _ = Command::new("/usr/sbin/groupdel").arg(&group).output();
        run_ok(Command::new("/usr/sbin/groupadd").arg(&group));
        Some(accounts)
    }

    /// A system user without a home; in the test's group when `member`.
    fn user(&mut self, name: &str, member: bool) -> String {
        let name = format!("{name}{}", &self.group[2..]);
        let _ = Command::new("/usr/sbin/userdel").arg(&name).output();
        let mut useradd = Command::new("/usr/sbin/useradd");
        useradd.args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ]);
        if member {
            useradd.args(["--groups", &self.group]);
        }
        run_ok(useradd.arg(&name));
        self.users.push(name.clone());
        name
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        for user in &self.users {
            let _ = Command::new("/usr/sbin/userdel").arg(user).output();
        }
        let _ = Command::new("/usr/sbin/groupdel").arg(&self.group).output();
    }
}

fn run_ok(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(out.status.success(), "{command:?}: {}", text(&out.stderr));
}

fn id_of(user: &str, flag: &str) -> u32 {
    let out = Command::new("id").args([flag, user]).output().unwrap();
    text(&out.stdout).trim().parse().unwrap()
}

/// `cutover ARGS --config CONFIG` as `user`, with that user's groups.
fn cli_as(user: &str, config: &Path, args: &[&str]) -> Output {
    Command::new("/usr/bin/setpriv")
        .arg(format!("--reuid={user}"))
        .arg(format!("--regid={}", id_of(user, "-g")))
        .arg("--init-groups")
        .arg(CUTOVER)
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("CUTOVER_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn a_deploy_user_in_the_socket_group_deploys_and_others_are_refused() {
    let Some(mut accounts) = Accounts::create("d") else {
        return;
    };
    let service = accounts.user("srv", true);
    let deployer = accounts.user("dep", true);
    let outsider = accounts.user("out", false);

    let dir = tempfile::Builder::new()
        .prefix("cutover-users-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // As systemd's StateDirectory= and RuntimeDirectory= would make them: the daemon's, with
    // its group; the socket's directory is open, so only the socket's own mode decides.
    let (uid, gid) = (id_of(&service, "-u"), id_of(&service, "-g"));
    for (sub, mode) in [("state", 0o750), ("run", 0o755)] {
        let path = dir.path().join(sub);
        std::fs::create_dir(&path).unwrap();
        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let config = dir.path().join("cutover.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ndata_dir = \"state\"\ncontrol_socket = \"run/control.sock\"\n\
             socket_group = \"{}\"\n\n[components.backend]\nlisten = \"127.0.0.1:0\"\n{FAST_COMPONENT}",
            accounts.group
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let _server = Server {
        child: Command::new("/usr/bin/setpriv")
            .arg(format!("--reuid={service}"))
            .arg(format!("--regid={gid}"))
            .arg("--init-groups")
            .arg(CUTOVER)
            .args(["serve", "--config"])
            .arg(&config)
            .env("CUTOVER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    };
    let daemon_log = || std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
    let socket = dir.path().join("run/control.sock");
    // Ready, not merely bound: the socket is 0600 for the instant between bind and chmod.
    eventually(Duration::from_secs(15), "the daemon is ready", || {
        socket.exists() && daemon_log().contains("cutover daemon ready")
    });
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660, "{}", daemon_log());
    let group = nix::unistd::Group::from_name(&accounts.group)
        .unwrap()
        .unwrap();
    assert_eq!(
        meta.gid(),
        group.gid.as_raw(),
        "the socket belongs to the group"
    );

    let api = demo_api();
    let out = cli_as(
        &deployer,
        &config,
        &[
            "deploy",
            "backend",
            "--release",
            "v1",
            "--artifact",
            api.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "the deploy user's deploy: {}{}\n{}",
        text(&out.stdout),
        text(&out.stderr),
        daemon_log()
    );
    let out = cli_as(&deployer, &config, &["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        !status["daemon"].is_null(),
        "answered by the daemon: {status}"
    );
    assert_eq!(status["components"][0]["active"], "v1", "{status}");
    let public: std::net::SocketAddr = status["components"][0]["listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(get(public, "/version").0, 200);
    // The release runs as the daemon's user, not as whoever deployed it.
    let pid = status["components"][0]["serving"]["pid"].as_i64().unwrap();
    let owner = std::fs::metadata(format!("/proc/{pid}")).unwrap().uid();
    assert_eq!(owner, uid);

    for args in [
        &["status"][..],
        &[
            "deploy",
            "backend",
            "--release",
            "v2",
            "--artifact",
            api.to_str().unwrap(),
        ],
    ] {
        let out = cli_as(&outsider, &config, args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            text(&out.stdout)
        );
        assert_eq!(
            text(&out.stderr),
            format!(
                "error: permission denied on {}: run as the cutover user or join its group\n",
                socket.display()
            ),
            "{args:?}"
        );
    }
    let out = cli_as(&deployer, &config, &["history", "--json"]);
    let history = text(&out.stdout);
    assert!(
        !history.contains("\"v2\""),
        "the outsider deployed nothing: {history}"
    );
}
