//! A small HTTP load generator for the demo and the tests: several kinds of clients hitting a
//! URL until stopped, counting every answer and every failure, and which release answered.
//!
//! A failure is anything a user would see as one: a connection error, a timeout or a 5xx.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Copy, Debug)]
pub enum ClientKind {
    /// Reuses one keep-alive connection.
    KeepAlive,
    /// Opens a new connection for every request.
    NewConnection,
    /// Sends requests that take `ms` milliseconds to answer.
    Slow { ms: u64 },
}

#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    pub ok: u64,
    pub failed: u64,
    /// Answers per `x-release` header value.
    pub by_release: BTreeMap<String, u64>,
    /// The first few failures, for messages.
    pub failures: Vec<String>,
    /// Failures by kind: `HTTP 500 from v2` (an answer) or `transport` (no answer at all).
    pub failures_by_kind: BTreeMap<String, u64>,
    /// The longest any request took, answered or not.
    pub slowest: Duration,
}

impl LoadReport {
    pub fn total(&self) -> u64 {
        self.ok + self.failed
    }
}

pub struct Load {
    stop: watch::Sender<bool>,
    report: Arc<Mutex<LoadReport>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts one task per entry of `clients` against `http://addr{path}`.
    pub fn start(addr: SocketAddr, path: &str, clients: &[ClientKind]) -> Load {
        let (stop, stop_rx) = watch::channel(false);
        let report = Arc::new(Mutex::new(LoadReport::default()));
        let tasks = clients
            .iter()
            .map(|kind| {
                let path = match kind {
                    ClientKind::Slow { ms } => format!("/slow?ms={ms}"),
                    _ => path.to_owned(),
                };
                tokio::spawn(client_loop(
                    addr,
                    path,
                    *kind,
                    stop_rx.clone(),
                    report.clone(),
                ))
            })
            .collect();
        Load {
            stop,
            report,
            tasks,
        }
    }

    pub fn snapshot(&self) -> LoadReport {
        self.report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops the clients after their current request and returns the totals.
    pub async fn stop(self) -> LoadReport {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let report = self
            .report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        report
    }
}

fn record(report: &Mutex<LoadReport>, outcome: Result<String, String>, took: Duration) {
    let mut report = report.lock().unwrap_or_else(|p| p.into_inner());
    report.slowest = report.slowest.max(took);
    match outcome {
        Ok(release) => {
            report.ok += 1;
            *report.by_release.entry(release).or_default() += 1;
        }
        Err(e) => {
            report.failed += 1;
            let kind = if e.starts_with("transport") {
                "transport".to_owned()
            } else {
                e.clone()
            };
            *report.failures_by_kind.entry(kind).or_default() += 1;
            if report.failures.len() < 10 {
                report.failures.push(e);
            }
        }
    }
}

fn client(kind: ClientKind) -> Client<HttpConnector, Empty<Bytes>> {
    let mut builder = Client::builder(TokioExecutor::new());
    if matches!(kind, ClientKind::NewConnection) {
        builder.pool_max_idle_per_host(0);
    }
    builder.build_http()
}

async fn client_loop(
    addr: SocketAddr,
    path: String,
    kind: ClientKind,
    stop: watch::Receiver<bool>,
    report: Arc<Mutex<LoadReport>>,
) {
    let client = client(kind);
    let uri: http::Uri = format!("http://{addr}{path}")
        .parse()
        .expect("valid load URL");
    while !*stop.borrow() {
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(30), async {
            let response = client
                .get(uri.clone())
                .await
                .map_err(|e| format!("transport: {e:?}"))?;
            let status = response.status();
            let release = response
                .headers()
                .get("x-release")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?")
                .to_owned();
            response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("transport: body: {e}"))?;
            if status.is_server_error() {
                return Err(format!("HTTP {} from {release}", status.as_u16()));
            }
            Ok(release)
        })
        .await
        .unwrap_or_else(|_| Err("transport: timed out after 30s".into()));
        record(&report, outcome, started.elapsed());
        if matches!(kind, ClientKind::NewConnection) {
            // Keep the rate of new connections sane (TIME_WAIT on loopback is finite).
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}
