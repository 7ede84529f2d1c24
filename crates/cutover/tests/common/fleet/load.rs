//! Load on every host at once, from the root namespace through the veths: keep-alive HTTP/1.1
//! clients of `cutover::loadgen` on each host's public address, on a thread of their own so a
//! test can run a fleet deploy meanwhile.

use cutover::loadgen::{ClientKind, Load, LoadReport};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// What one host's clients saw; `report.by_release` counts answers per `x-release`.
#[derive(Debug, Clone)]
pub struct HostLoad {
    pub host: String,
    pub report: LoadReport,
}

#[derive(Debug, Clone)]
pub struct FleetLoadReport {
    pub hosts: Vec<HostLoad>,
}

impl FleetLoadReport {
    pub fn failed(&self) -> u64 {
        self.hosts.iter().map(|h| h.report.failed).sum()
    }

    pub fn ok(&self) -> u64 {
        self.hosts.iter().map(|h| h.report.ok).sum()
    }

    pub fn of(&self, host: &str) -> &LoadReport {
        &self
            .hosts
            .iter()
            .find(|h| h.host == host)
            .unwrap_or_else(|| panic!("no host {host} in the load report"))
            .report
    }

    /// The releases `host` answered with, in name order.
    pub fn releases_seen(&self, host: &str) -> Vec<String> {
        self.of(host).by_release.keys().cloned().collect()
    }
}

/// Clients running until `stop` (or their time limit).
pub struct FleetLoad {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<FleetLoadReport>,
}

impl FleetLoad {
    /// `clients_per_host` keep-alive clients on each of `targets` (host name, address) until
    /// `stop` is called or `at_most` has passed, whichever comes first.
    pub fn start(
        targets: Vec<(String, SocketAddr)>,
        clients_per_host: usize,
        at_most: Duration,
    ) -> FleetLoad {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a tokio runtime for the load");
            runtime.block_on(async move {
                let clients = vec![ClientKind::KeepAlive; clients_per_host];
                let loads: Vec<(String, Load)> = targets
                    .into_iter()
                    .map(|(host, addr)| (host, Load::start(addr, "/", &clients)))
                    .collect();
                // Waits off the runtime's workers, so the clients keep all of them.
                let _ = tokio::task::spawn_blocking(move || stopped.recv_timeout(at_most)).await;
                let mut hosts = Vec::with_capacity(loads.len());
                for (host, load) in loads {
                    hosts.push(HostLoad {
                        host,
                        report: load.stop().await,
                    });
                }
                FleetLoadReport { hosts }
            })
        });
        FleetLoad { stop, thread }
    }

    /// Stops the clients after their current request and returns what they saw.
    pub fn stop(self) -> FleetLoadReport {
        let _ = self.stop.send(());
        self.thread.join().expect("the load thread panicked")
    }
}
