//! The fleet test harness itself (tests/common/fleet.rs): three real hosts on this machine,
//! reached over real ssh with host key checking, each reading its own config at one shared
//! path, each serving its own release on its own address; all of it gone after the drop.

mod common;

use common::fleet::{TestFleet, TestHost};
use common::*;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

#[test]
fn three_hosts_over_ssh_each_with_its_own_config_serve_and_are_torn_down() {
    let Some(mut fleet) = TestFleet::start(3, FAST_COMPONENT) else {
        return;
    };
    let remote = fleet.remote_config();
    let names: Vec<_> = fleet
        .hosts()
        .iter()
        .map(|h| (&h.name, &h.ns, h.ip))
        .collect();
    eprintln!("fleet hosts: {names:?}, config at {}", remote.display());
    for (i, host) in fleet.hosts().iter().enumerate() {
        shows_its_own_config_over_ssh(&fleet, i, host, &remote);
    }

    let api = demo_api();
    for (i, host) in fleet.hosts().iter().enumerate() {
        fleet.deploy_on_host(i, "v1", &api);
        assert_eq!(fleet.active_release(i, "backend").as_deref(), Some("v1"));
        let (status, body) = fleet.get(i, "/");
        assert_eq!(
            (status, body.trim()),
            (200, "demo-api v1"),
            "{} at {}",
            host.name,
            host.public
        );
    }

    let report = fleet.load(Duration::from_secs(1), 2);
    assert_eq!(report.failed(), 0, "{report:?}");
    for host in fleet.hosts() {
        assert!(
            report.of(&host.name).ok > 0,
            "no answers from {}",
            host.name
        );
        assert_eq!(report.releases_seen(&host.name), ["v1"]);
    }

    one_host_gets_its_own_env(&mut fleet, &api);
    operator_config_names_every_host(&fleet);

    let hosts = fleet.hosts().to_vec();
    let mountpoint = remote.parent().unwrap().to_owned();
    drop(fleet);
    everything_is_gone(&hosts, &mountpoint);
}

/// Over ssh, `remote_config` is host `i`'s own file (the per-namespace /etc bind reaches ssh
/// sessions), and the daemon answering there is the one reading it.
fn shows_its_own_config_over_ssh(fleet: &TestFleet, i: usize, host: &TestHost, remote: &Path) {
    let own_file = std::fs::read(&host.config_path).unwrap();
    let out = fleet.ssh(i, &format!("cat {}", remote.display()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        text(&own_file),
        "{} reads another file",
        host.name
    );
    let seen: toml::Table = text(&out.stdout).parse().unwrap();
    assert_eq!(
        seen["daemon"]["data_dir"].as_str(),
        host.data_dir.to_str(),
        "{}",
        host.name
    );

    let out = fleet.ssh(
        i,
        &format!("{CUTOVER} --config {} status --json", remote.display()),
    );
    assert!(
        out.status.success(),
        "status over ssh on {}: {}\n{}",
        host.name,
        text(&out.stderr),
        fleet.sshd_log(i)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        status["daemon"]["config"]["sha256"].as_str(),
        Some(hex(&Sha256::digest(&own_file)).as_str()),
        "{}: {status}",
        host.name
    );
    assert_eq!(
        status["components"][0]["listen"].as_str(),
        Some(host.public.to_string().as_str())
    );
    assert!(
        host.data_dir.join("control.sock").exists(),
        "{}'s daemon has no socket in its data_dir",
        host.name
    );
}

/// `set_host_env` changes that host's next release only.
fn one_host_gets_its_own_env(fleet: &mut TestFleet, api: &Path) {
    fleet.set_host_env(2, "FLEET_HARNESS_MARK", "h3-only");
    fleet.deploy_on_host(2, "v2", api);
    assert_eq!(fleet.active_release(2, "backend").as_deref(), Some("v2"));
    assert_eq!(fleet.active_release(0, "backend").as_deref(), Some("v1"));
    let environ = |i: usize| {
        let pid = fleet.status_json(i)["components"][0]["serving"]["pid"]
            .as_u64()
            .unwrap();
        text(&std::fs::read(format!("/proc/{pid}/environ")).unwrap())
    };
    assert!(environ(2)
        .split('\0')
        .any(|v| v == "FLEET_HARNESS_MARK=h3-only"));
    assert!(!environ(0).contains("FLEET_HARNESS_MARK"));
}

/// The operator's file is TOML naming every host the way the fleet code reads them (it is not
/// given to cutover here: its parser learns `[fleet]` with that code).
fn operator_config_names_every_host(fleet: &TestFleet) {
    let path = fleet.operator_config("canary = 1\nmax_parallel = 2");
    let config: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    let fleet_table = &config["fleet"];
    let names: Vec<&str> = fleet.hosts().iter().map(|h| h.name.as_str()).collect();
    let hosts: Vec<&str> = fleet_table["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert_eq!(hosts, names);
    let ssh: Vec<&str> = fleet_table["ssh"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(ssh, fleet.ssh_argv());
    assert_eq!(
        fleet_table["remote_config"].as_str(),
        fleet.remote_config().to_str()
    );
    assert!(Path::new(fleet_table["remote_binary"].as_str().unwrap()).is_absolute());
    assert_eq!(fleet_table["canary"].as_integer(), Some(1));
    assert_eq!(fleet_table["max_parallel"].as_integer(), Some(2));
    let host1: toml::Table = std::fs::read_to_string(&fleet.hosts()[0].config_path)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(config["components"], host1["components"]);
    assert!(config["daemon"]["data_dir"]
        .as_str()
        .unwrap()
        .starts_with(fleet.dir().join("operator").to_str().unwrap()));
}

fn everything_is_gone(hosts: &[TestHost], mountpoint: &Path) {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let namespaces = text(&out.stdout);
    let links = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    for host in hosts {
        assert!(
            !namespaces
                .lines()
                .any(|l| l.split_whitespace().next() == Some(&host.ns)),
            "namespace {} is left: {namespaces}",
            host.ns
        );
        assert!(
            !links.contains(&host.veth),
            "veth {} is left: {links:?}",
            host.veth
        );
        let etc = Path::new("/etc/netns").join(&host.ns);
        assert!(!etc.exists(), "{} is left", etc.display());
        assert!(!host.dir.exists(), "{} is left", host.dir.display());
    }
    assert!(!mountpoint.exists(), "{} is left", mountpoint.display());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
