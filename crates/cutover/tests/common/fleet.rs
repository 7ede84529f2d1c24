//! A fleet of real hosts on this machine, for `cutover fleet` tests: each host is a network
//! namespace with a veth to the root namespace (10.231.X.2, X claimed per host so concurrent
//! test processes never collide), a real sshd, and a real `cutover serve` with one `backend`
//! component on 10.231.X.2:18080.
//!
//! Every host reads its config at the same path, `remote_config()`: the host's file lives in
//! /etc/netns/NS/cutover-fleet-X0/, which `ip netns exec` binds over the empty
//! /etc/cutover-fleet-X0 for everything started in the namespace (the daemon, sshd, and so
//! every ssh session). The operator reaches the hosts with `ssh -F <tmp>/ssh_config hN`.
//!
//! Needs root, iproute2 and OpenSSH (client and server). Without them `start` fails the test
//! under `CI=true` and otherwise prints why and returns `None`. Everything is torn down on drop,
//! also after a panic; what a killed test left is cleaned when its slot is claimed again.

mod host_config;
pub mod load;
mod netns;
mod prereq;
mod process;
mod slot;
mod ssh;

use load::{FleetLoad, FleetLoadReport};

use host_config::HostConfig;
use slot::{Claim, Slot};
use ssh::{ClientHost, Sshd};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The backend's public port, the same on every host (each host has its own address).
pub const PUBLIC_PORT: u16 = 18080;
const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_GRACE: Duration = Duration::from_secs(15);

/// One host of the fleet, as tests see it.
#[derive(Clone, Debug)]
pub struct TestHost {
    /// `h1`..`hN`: the ssh alias in `ssh_config`.
    pub name: String,
    /// The network namespace.
    pub ns: String,
    /// The veth end in the root namespace, and its peer inside the host's namespace.
    pub veth: String,
    pub veth_inside: String,
    pub ip: Ipv4Addr,
    /// The backend's public address (10.231.X.2:18080), reachable from the root namespace.
    pub public: SocketAddr,
    /// The host's own directory in the test's temp dir (logs, keys, sshd files).
    pub dir: PathBuf,
    pub data_dir: PathBuf,
    /// The host's config file as the root namespace sees it (under /etc/netns/NS/).
    pub config_path: PathBuf,
}

/// What the harness runs and holds for one host.
struct HostParts {
    config: HostConfig,
    sshd: Option<Sshd>,
    daemon: Option<Child>,
}

pub struct TestFleet {
    hosts: Vec<TestHost>,
    parts: Vec<HostParts>,
    remote_config: PathBuf,
    ssh_config: PathBuf,
    /// Held until everything under their names is gone (see `Drop`).
    claims: Vec<Claim>,
    dir: tempfile::TempDir,
}

/// Why `start` gave up: `Unavailable` when this machine cannot host a fleet at all.
enum SetupError {
    Unavailable(String),
    Failed(String),
}

impl From<String> for SetupError {
    fn from(message: String) -> Self {
        SetupError::Failed(message)
    }
}

impl TestFleet {
    /// `n` hosts, each with a `backend` component configured by `component` (TOML lines,
    /// like `common::FAST_COMPONENT`) and no release deployed yet.
    ///
    /// The hosts' daemons and sshds get SIGTERM when the thread that called `start` ends (so
    /// a killed test leaves none running): start and drop the fleet on the test's own thread,
    /// not in `spawn_blocking`.
    pub fn start(n: usize, component: &str) -> Option<TestFleet> {
        assert!(n > 0, "a fleet has at least one host");
        match Self::try_start(n, component) {
            Ok(fleet) => Some(fleet),
            Err(SetupError::Unavailable(why)) => {
                let message = format!("cannot run a test fleet here: {why}");
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("{message}");
                }
                eprintln!("SKIP: {message}");
                None
            }
            Err(SetupError::Failed(why)) => panic!("test fleet setup failed: {why}"),
        }
    }

    fn try_start(n: usize, component: &str) -> Result<TestFleet, SetupError> {
        prereq::check().map_err(SetupError::Unavailable)?;
        let dir = tempfile::Builder::new()
            .prefix("cutover-fleet-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let claims = slot::claim(n, dir.path())?;
        let first = claims[0].slot;
        let remote_config = first.mountpoint().join("cutover.toml");
        let mut fleet = TestFleet {
            hosts: Vec::with_capacity(n),
            parts: Vec::with_capacity(n),
            ssh_config: dir.path().join("ssh_config"),
            remote_config,
            claims,
            dir,
        };
        // A bind needs its mountpoint: every host's directory is mounted over this one.
        std::fs::create_dir(first.mountpoint())
            .map_err(|e| format!("{}: {e}", first.mountpoint().display()))?;
        let identity = fleet.dir.path().join("operator_key");
        ssh::keygen(&identity, "cutover-fleet-operator")?;
        let slots: Vec<Slot> = fleet.claims.iter().map(|c| c.slot).collect();
        for (i, slot) in slots.into_iter().enumerate() {
            fleet.add_host(i, slot, first, component)?;
        }
        fleet.write_client_files(&identity)?;
        Ok(fleet)
    }

    fn add_host(
        &mut self,
        i: usize,
        slot: Slot,
        first: Slot,
        component: &str,
    ) -> Result<(), SetupError> {
        netns::create(slot).map_err(|e| match e {
            // The first namespace is the probe of namespace support; later ones must work.
            netns::NetError::Unsupported(why) if i == 0 => SetupError::Unavailable(why),
            netns::NetError::Unsupported(why) | netns::NetError::Failed(why) => {
                SetupError::Failed(why)
            }
        })?;
        let name = format!("h{}", i + 1);
        let dir = self.dir.path().join(&name);
        let data_dir = dir.join("data");
        std::fs::create_dir_all(&data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
        let config_dir = slot.netns_etc().join(first.config_dir_name());
        std::fs::create_dir_all(&config_dir)
            .map_err(|e| format!("{}: {e}", config_dir.display()))?;
        let public = SocketAddr::from((slot.host_ip(), PUBLIC_PORT));
        let config = HostConfig::new(&data_dir, public, component)?;
        let config_path = config_dir.join("cutover.toml");
        config.write(&config_path)?;
        self.hosts.push(TestHost {
            name,
            ns: slot.namespace(),
            veth: slot.veth_root(),
            veth_inside: slot.veth_host(),
            ip: slot.host_ip(),
            public,
            dir: dir.clone(),
            data_dir,
            config_path,
        });
        self.parts.push(HostParts {
            config,
            sshd: None,
            daemon: None,
        });
        let authorized = self.dir.path().join("operator_key.pub");
        self.parts[i].sshd = Some(Sshd::start(slot, &dir, &authorized)?);
        self.start_daemon(i)?;
        Ok(())
    }

    /// `cutover serve` inside host `i`'s namespace, reading the shared path; waits until its
    /// control API answers.
    fn start_daemon(&mut self, i: usize) -> Result<(), String> {
        let host = &self.hosts[i];
        let log_path = host.dir.join("daemon.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let child = process::server_in_namespace(&host.ns, super::CUTOVER)
            .arg("serve")
            .arg("--config")
            .arg(&self.remote_config)
            .env("CUTOVER_LOG", "info")
            // So that `kill_processes_under(dir)` finds it too.
            .current_dir(&host.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start cutover serve on {}: {e}", host.name))?;
        self.parts[i].daemon = Some(child);
        let deadline = Instant::now() + DAEMON_START_TIMEOUT;
        loop {
            let out = self.host_cli(i, &["status", "--json"]);
            let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            if out.status.success() && !status["daemon"].is_null() {
                return Ok(());
            }
            let daemon = self.parts[i].daemon.as_mut().expect("just started");
            if let Ok(Some(exit)) = daemon.try_wait() {
                return Err(format!(
                    "cutover serve on {} exited ({exit}):\n{}",
                    self.hosts[i].name,
                    self.daemon_log(i)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "cutover serve on {} not ready after {DAEMON_START_TIMEOUT:?}:\n{}",
                    self.hosts[i].name,
                    self.daemon_log(i)
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn write_client_files(&self, identity: &Path) -> Result<(), String> {
        let clients: Vec<ClientHost> = self
            .hosts
            .iter()
            .zip(&self.parts)
            .map(|(host, parts)| ClientHost {
                alias: &host.name,
                ip: host.ip,
                host_key: &parts.sshd.as_ref().expect("sshd started").host_key,
                upload_cache: host.dir.join("upload-cache"),
            })
            .collect();
        let known_hosts = self.dir.path().join("known_hosts");
        std::fs::write(&known_hosts, ssh::known_hosts(&clients))
            .map_err(|e| format!("{}: {e}", known_hosts.display()))?;
        std::fs::write(
            &self.ssh_config,
            ssh::client_config(&clients, identity, &known_hosts),
        )
        .map_err(|e| format!("{}: {e}", self.ssh_config.display()))
    }

    pub fn hosts(&self) -> &[TestHost] {
        &self.hosts
    }

    /// The test's temp dir (the operator's files go in `operator/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The argv before the host alias of every ssh call: `ssh -F <tmp>/ssh_config`.
    pub fn ssh_argv(&self) -> Vec<String> {
        vec![
            "ssh".into(),
            "-F".into(),
            self.ssh_config.display().to_string(),
        ]
    }

    /// The config path every host's cutover reads (each host sees its own file there).
    pub fn remote_config(&self) -> PathBuf {
        self.remote_config.clone()
    }

    /// Writes `<tmp>/operator/cutover.toml`: host 1's components, the operator's own data_dir,
    /// and a `[fleet]` table naming every host, with `fleet_extra` (TOML lines such as
    /// `canary = 1`) added to it. Returns its path.
    pub fn operator_config(&self, fleet_extra: &str) -> PathBuf {
        let dir = self.dir.path().join("operator");
        std::fs::create_dir_all(&dir).unwrap();
        let mut fleet = toml::Table::new();
        let hosts: Vec<toml::Value> = self.hosts.iter().map(|h| h.name.clone().into()).collect();
        fleet.insert("hosts".into(), hosts.into());
        fleet.insert(
            "remote_config".into(),
            self.remote_config.display().to_string().into(),
        );
        let ssh: Vec<toml::Value> = self.ssh_argv().into_iter().map(Into::into).collect();
        fleet.insert("ssh".into(), ssh.into());
        fleet.insert("remote_binary".into(), cutover_binary().into());
        fleet.insert(
            "history".into(),
            dir.join("fleet.sqlite").display().to_string().into(),
        );
        let text = self.parts[0]
            .config
            .operator(&dir.join("data"), fleet, fleet_extra)
            .unwrap_or_else(|e| panic!("operator config: {e}"));
        let path = dir.join("cutover.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `cutover --config <remote_config> ARGS` run on host `i` (`hosts()[i]`) directly, not
    /// over ssh.
    pub fn host_cli(&self, i: usize, args: &[&str]) -> Output {
        process::in_namespace(&self.hosts[i].ns, super::CUTOVER)
            .arg("--config")
            .arg(&self.remote_config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `ssh -F <tmp>/ssh_config hN -- REMOTE_COMMAND` (a shell command line on host `i`).
    pub fn ssh(&self, i: usize, remote_command: &str) -> Output {
        Command::new("ssh")
            .arg("-F")
            .arg(&self.ssh_config)
            .args([self.hosts[i].name.as_str(), "--", remote_command])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Deploys `release` of `backend` on host `i` directly and asserts it succeeded.
    pub fn deploy_on_host(&self, i: usize, release: &str, artifact: &Path) {
        let out = self.host_cli(
            i,
            &[
                "deploy",
                "backend",
                "--release",
                release,
                "--artifact",
                artifact.to_str().unwrap(),
            ],
        );
        self.assert_ok(i, &format!("deploy {release}"), &out);
    }

    /// `status --json` on host `i`.
    pub fn status_json(&self, i: usize) -> serde_json::Value {
        let out = self.host_cli(i, &["status", "--json"]);
        self.assert_ok(i, "status", &out);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The release host `i` has committed as active for `component`.
    pub fn active_release(&self, i: usize, component: &str) -> Option<String> {
        let status = self.status_json(i);
        let entry = status["components"]
            .as_array()
            .and_then(|all| all.iter().find(|c| c["name"] == component))
            .unwrap_or_else(|| {
                panic!(
                    "no component {component} on {}: {status}",
                    self.hosts[i].name
                )
            })
            .clone();
        entry["active"].as_str().map(str::to_owned)
    }

    /// Adds `KEY = "value"` to host `i`'s backend `env` (the next release started there gets
    /// it, e.g. `DEMO_NEVER_HEALTHY`) and reloads that host's daemon.
    pub fn set_host_env(&mut self, i: usize, key: &str, value: &str) {
        let parts = &mut self.parts[i];
        parts.config.set_env(key, value);
        parts
            .config
            .write(&self.hosts[i].config_path)
            .unwrap_or_else(|e| panic!("{e}"));
        let out = self.host_cli(i, &["reload"]);
        self.assert_ok(i, &format!("reload after setting {key}"), &out);
    }

    /// One GET of `path` on host `i`'s public address from the root namespace: (status, body).
    pub fn get(&self, i: usize, path: &str) -> (u16, String) {
        let (status, _release, body) = super::get(self.hosts[i].public, path);
        (status, body)
    }

    /// Starts `clients_per_host` keep-alive clients on every host until `FleetLoad::stop`
    /// (or `at_most`).
    pub fn start_load(&self, clients_per_host: usize, at_most: Duration) -> FleetLoad {
        let targets = self
            .hosts
            .iter()
            .map(|h| (h.name.clone(), h.public))
            .collect();
        FleetLoad::start(targets, clients_per_host, at_most)
    }

    /// Load on every host for `duration`.
    pub fn load(&self, duration: Duration, clients_per_host: usize) -> FleetLoadReport {
        let load = self.start_load(clients_per_host, duration);
        std::thread::sleep(duration);
        load.stop()
    }

    /// Cuts host `i` off the network, as a host that went away: its end of the veth goes down,
    /// so connections to it time out. (The root end stays up: its route keeps 10.231.X.0/24
    /// on the veth rather than letting it fall to the default route.) `reconnect` undoes it.
    pub fn disconnect(&self, i: usize) {
        self.set_host_link(i, "down");
    }

    pub fn reconnect(&self, i: usize) {
        self.set_host_link(i, "up");
    }

    fn set_host_link(&self, i: usize, state: &str) {
        let host = &self.hosts[i];
        let out = Command::new("ip")
            .args(["-n", &host.ns, "link", "set", &host.veth_inside, state])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip link set {state} on {}: {}",
            host.name,
            super::text(&out.stderr)
        );
    }

    pub fn daemon_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.hosts[i].dir.join("daemon.log")).unwrap_or_default()
    }

    pub fn sshd_log(&self, i: usize) -> String {
        self.parts[i]
            .sshd
            .as_ref()
            .map(Sshd::log_text)
            .unwrap_or_default()
    }

    fn assert_ok(&self, i: usize, what: &str, out: &Output) {
        assert!(
            out.status.success(),
            "{what} on {} failed ({}):\n{}\n{}\ndaemon log:\n{}",
            self.hosts[i].name,
            out.status,
            super::text(&out.stdout),
            super::text(&out.stderr),
            self.daemon_log(i)
        );
    }
}

impl Drop for TestFleet {
    fn drop(&mut self) {
        // Daemons first: they stop their instances on SIGTERM.
        for parts in &mut self.parts {
            if let Some(daemon) = parts.daemon.as_mut() {
                process::stop(daemon, STOP_GRACE);
            }
        }
        // Instances a daemon left behind (and sshd, whose command line names its config).
        super::kill_processes_under(self.dir.path());
        for parts in &mut self.parts {
            if let Some(sshd) = parts.sshd.as_mut() {
                process::stop(&mut sshd.child, STOP_GRACE);
            }
        }
        // By name: what is left in each namespace, the veths, namespaces, /etc/netns dirs and
        // the config mountpoint (named after the first slot). The claims go last.
        for claim in &self.claims {
            slot::remove_leftovers(claim.slot);
        }
        self.claims.clear();
    }
}

/// The cutover binary's absolute path, as hosts run it.
fn cutover_binary() -> String {
    std::fs::canonicalize(super::CUTOVER)
        .unwrap_or_else(|_| PathBuf::from(super::CUTOVER))
        .display()
        .to_string()
}
