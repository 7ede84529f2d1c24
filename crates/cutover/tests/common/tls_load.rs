//! A bounded load generator over TLS, for the edge's https listener: HTTP/1.1 keep-alive
//! clients, clients that make a new TLS connection (a full handshake) per request, and HTTP/2
//! clients running several concurrent streams on one connection. Every client trusts only the
//! test's own CA and names the host by SNI.
//!
//! Counted like `cutover::loadgen`: a failure is what a user would see as one (a connection or
//! handshake error, a timeout, a 5xx), and every answer is filed under the `x-release` that
//! gave it, here per protocol as well. Besides requests it records every connection: the leaf
//! certificate the handshake got, how many answers it carried and when the last came, so a
//! test can tell "connections stayed open across X" from "requests kept succeeding".

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Longer than any request of the tests needs, short enough to keep a test bounded.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Http1,
    Http2,
}

impl Protocol {
    fn alpn(self) -> &'static [u8] {
        match self {
            Protocol::Http1 => b"http/1.1",
            Protocol::Http2 => b"h2",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsClient {
    /// HTTP/1.1 on one keep-alive connection (a new one only if it breaks).
    KeepAlive,
    /// HTTP/1.1, a new TCP connection and full TLS handshake for every request.
    NewConnection,
    /// HTTP/2: `streams` requests in flight at once on one connection.
    Http2 { streams: usize },
}

use super::tls::{fingerprint, Fingerprint};

/// Where the clients go: `https://{host}{path}` with `host` resolved to `addr`.
#[derive(Clone)]
pub struct TlsTarget {
    pub addr: SocketAddr,
    pub host: String,
    http1: tokio_rustls::TlsConnector,
    http2: tokio_rustls::TlsConnector,
}

impl TlsTarget {
    /// Clients trusting only the CA certificate in `ca_pem`. Session resumption is off: every
    /// connection makes a full handshake, so the certificate it reports is the one served now.
    pub fn new(addr: SocketAddr, host: &str, ca_pem: &Path) -> TlsTarget {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(ca_pem).unwrap();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        let connector = |protocol: Protocol| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            config.alpn_protocols = vec![protocol.alpn().to_vec()];
            config.resumption = rustls::client::Resumption::disabled();
            tokio_rustls::TlsConnector::from(Arc::new(config))
        };
        TlsTarget {
            addr,
            host: host.to_owned(),
            http1: connector(Protocol::Http1),
            http2: connector(Protocol::Http2),
        }
    }
}

/// What one request got.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub release: String,
    pub version: http::Version,
    pub body: String,
}

enum Sender {
    Http1(http1::SendRequest<Empty<Bytes>>),
    Http2(http2::SendRequest<Empty<Bytes>>),
}

/// One TLS connection with the protocol its ALPN chose.
pub struct Connection {
    sender: Sender,
    pub protocol: Protocol,
    /// The leaf certificate the handshake got.
    pub leaf: Fingerprint,
    target: TlsTarget,
}

impl Connection {
    /// TCP connect, TLS handshake offering only `protocol`, then the HTTP handshake. The
    /// connection runs on its own task until both ends are done with it.
    pub async fn open(target: &TlsTarget, protocol: Protocol) -> Result<Connection, String> {
        let handshake = async {
            let tcp = tokio::net::TcpStream::connect(target.addr)
                .await
                .map_err(|e| format!("transport: connect: {e}"))?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(target.host.clone()).expect("a valid host name");
            let connector = match protocol {
                Protocol::Http1 => &target.http1,
                Protocol::Http2 => &target.http2,
            };
            connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("transport: TLS handshake: {e}"))
        };
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| "transport: TLS handshake timed out".to_owned())??;
        let session = tls.get_ref().1;
        if session.alpn_protocol() != Some(protocol.alpn()) {
            return Err(format!(
                "protocol: offered {:?}, the server chose {:?}",
                String::from_utf8_lossy(protocol.alpn()),
                session.alpn_protocol().map(String::from_utf8_lossy)
            ));
        }
        let leaf = fingerprint(
            session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .ok_or("transport: no server certificate")?,
        );
        let io = TokioIo::new(tls);
        let sender = match protocol {
            Protocol::Http1 => {
                let (sender, conn) = http1::handshake(io)
                    .await
                    .map_err(|e| format!("transport: HTTP/1.1 handshake: {e}"))?;
                tokio::spawn(conn);
                Sender::Http1(sender)
            }
            Protocol::Http2 => {
                let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| format!("transport: HTTP/2 handshake: {e}"))?;
                tokio::spawn(conn);
                Sender::Http2(sender)
            }
        };
        Ok(Connection {
            sender,
            protocol,
            leaf,
            target: target.clone(),
        })
    }

    /// Whether the connection has ended (the server closed it, or it broke).
    pub fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::Http1(s) => s.is_closed(),
            Sender::Http2(s) => s.is_closed(),
        }
    }

    /// Another handle on the same HTTP/2 connection: one more concurrent stream.
    pub fn stream(&self) -> Connection {
        let Sender::Http2(sender) = &self.sender else {
            panic!("only an HTTP/2 connection multiplexes");
        };
        Connection {
            sender: Sender::Http2(sender.clone()),
            protocol: self.protocol,
            leaf: self.leaf,
            target: self.target.clone(),
        }
    }

    /// `GET path`, the whole body read, within [`REQUEST_TIMEOUT`]. `close`: HTTP/1.1's
    /// `Connection: close` (the server ends the connection after answering).
    pub async fn get(&mut self, path: &str, close: bool) -> Result<Answer, RequestError> {
        let request = match self.sender {
            Sender::Http1(_) => {
                let request =
                    http::Request::get(path).header(http::header::HOST, &self.target.host);
                match close {
                    true => request.header(http::header::CONNECTION, "close"),
                    false => request,
                }
            }
            Sender::Http2(_) => http::Request::get(format!(
                "https://{}:{}{path}",
                self.target.host,
                self.target.addr.port()
            )),
        }
        .body(Empty::new())
        .unwrap();
        let exchange = async {
            let sent = match &mut self.sender {
                Sender::Http1(sender) => {
                    sender.ready().await.map_err(RequestError::closed)?;
                    sender.try_send_request(request).await
                }
                Sender::Http2(sender) => {
                    sender.ready().await.map_err(RequestError::closed)?;
                    sender.try_send_request(request).await
                }
            };
            let response = sent.map_err(|mut e| match e.take_message() {
                Some(_) => RequestError::NotSent(format!("transport: {}", e.error())),
                None => RequestError::Failed(format!("transport: {}", e.into_error())),
            })?;
            let (status, version) = (response.status().as_u16(), response.version());
            let release = response
                .headers()
                .get("x-release")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?")
                .to_owned();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| RequestError::Failed(format!("transport: body: {e}")))?
                .to_bytes();
            Ok(Answer {
                status,
                release,
                version,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(RequestError::Failed(format!(
                    "transport: timed out after {REQUEST_TIMEOUT:?}"
                )))
            })
    }
}

/// Why a request got no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// It never left the client: the connection was closing (the server's HTTP/2 GOAWAY or
    /// HTTP/1.1 `Connection: close`) before it could be sent. Clients send such a request
    /// again on a new connection (hyper's pooled client, which `cutover::loadgen` uses, does
    /// it without a word), so no user sees it fail.
    NotSent(String),
    /// Sent, and no whole answer came: a failure a user sees.
    Failed(String),
}

impl RequestError {
    fn closed(e: hyper::Error) -> RequestError {
        RequestError::NotSent(format!("transport: connection closed: {e}"))
    }
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::NotSent(e) => write!(f, "not sent: {e}"),
            RequestError::Failed(e) => f.write_str(e),
        }
    }
}

/// What one connection of the load did.
#[derive(Clone, Debug)]
pub struct ConnectionRecord {
    /// Which entry of the clients list opened it.
    pub client: usize,
    pub kind: TlsClient,
    pub leaf: Fingerprint,
    /// When its TCP connect began: the server chose `leaf` after that.
    pub opened: Instant,
    pub answers: u64,
    pub last_answer: Option<Instant>,
    /// When a client saw it end before the load stopped (closed by the server, or broken).
    pub ended: Option<Instant>,
}

#[derive(Clone, Debug, Default)]
pub struct TlsReport {
    pub ok: u64,
    pub failed: u64,
    /// Answers per (`x-release`, protocol of the answer).
    pub by_release: BTreeMap<(String, Protocol), u64>,
    /// The first few failures, for messages.
    pub failures: Vec<String>,
    /// Requests that never left the client (the connection was closing) and were sent again
    /// on a new connection: not failures, counted to show the path was taken.
    pub resent: u64,
    pub connections: Vec<ConnectionRecord>,
    pub slowest: Duration,
}

impl TlsReport {
    pub fn answers(&self, release: &str, protocol: Protocol) -> u64 {
        self.by_release
            .get(&(release.to_owned(), protocol))
            .copied()
            .unwrap_or(0)
    }

    pub fn connections_of(&self, kind: TlsClient) -> Vec<&ConnectionRecord> {
        self.connections.iter().filter(|c| c.kind == kind).collect()
    }
}

pub struct TlsLoad {
    stop: watch::Sender<bool>,
    report: Arc<Mutex<TlsReport>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl TlsLoad {
    /// One task per entry of `clients`, each sending `GET path` until stopped.
    pub fn start(target: &TlsTarget, path: &str, clients: &[TlsClient]) -> TlsLoad {
        let (stop, stop_rx) = watch::channel(false);
        let report = Arc::new(Mutex::new(TlsReport::default()));
        let tasks = clients
            .iter()
            .enumerate()
            .map(|(index, kind)| {
                let client = Client {
                    index,
                    kind: *kind,
                    target: target.clone(),
                    path: path.to_owned(),
                    stop: stop_rx.clone(),
                    report: report.clone(),
                };
                tokio::spawn(client.run())
            })
            .collect();
        TlsLoad {
            stop,
            report,
            tasks,
        }
    }

    pub fn snapshot(&self) -> TlsReport {
        lock(&self.report).clone()
    }

    /// Stops the clients after their current requests and returns the totals.
    pub async fn stop(self) -> TlsReport {
        let _ = self.stop.send(true);
        for task in self.tasks {
            task.await.expect("a load client panicked");
        }
        let report = lock(&self.report).clone();
        report
    }
}

fn lock(report: &Mutex<TlsReport>) -> std::sync::MutexGuard<'_, TlsReport> {
    report.lock().unwrap_or_else(|p| p.into_inner())
}

struct Client {
    index: usize,
    kind: TlsClient,
    target: TlsTarget,
    path: String,
    stop: watch::Receiver<bool>,
    report: Arc<Mutex<TlsReport>>,
}

impl Client {
    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    async fn run(self) {
        while !self.stopped() {
            let protocol = match self.kind {
                TlsClient::Http2 { .. } => Protocol::Http2,
                _ => Protocol::Http1,
            };
            let started = Instant::now();
            let conn = match Connection::open(&self.target, protocol).await {
                Ok(conn) => conn,
                Err(e) => {
                    // A request that could not even be sent: the user sees it fail.
                    self.record(None, Err(RequestError::Failed(e)), started.elapsed());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let id = self.opened(&conn, started);
            match self.kind {
                TlsClient::KeepAlive => self.requests(conn, id).await,
                TlsClient::NewConnection => {
                    let mut conn = conn;
                    let outcome = conn.get(&self.path, true).await;
                    self.record(Some(id), outcome, started.elapsed());
                    // Keep the rate of new connections sane (TIME_WAIT on loopback is finite).
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                TlsClient::Http2 { streams } => {
                    let all = (0..streams).map(|_| self.requests(conn.stream(), id));
                    futures_util::future::join_all(all).await;
                }
            }
            if !self.stopped() {
                lock(&self.report).connections[id].ended = Some(Instant::now());
            }
        }
    }

    /// Requests on `conn` until the load stops or the connection ends or closes. An HTTP/1.1
    /// connection is given up after a failure too: a request cut off mid-way (a timeout)
    /// leaves it in no state to carry the next one.
    async fn requests(&self, mut conn: Connection, id: usize) {
        while !self.stopped() && !conn.is_closed() {
            let started = Instant::now();
            let outcome = conn.get(&self.path, false).await;
            let give_up = match &outcome {
                Ok(_) => false,
                Err(RequestError::NotSent(_)) => true,
                Err(RequestError::Failed(_)) => conn.protocol == Protocol::Http1,
            };
            self.record(Some(id), outcome, started.elapsed());
            if give_up {
                return;
            }
        }
    }

    fn opened(&self, conn: &Connection, started: Instant) -> usize {
        let mut report = lock(&self.report);
        report.connections.push(ConnectionRecord {
            client: self.index,
            kind: self.kind,
            leaf: conn.leaf,
            opened: started,
            answers: 0,
            last_answer: None,
            ended: None,
        });
        report.connections.len() - 1
    }

    fn record(&self, conn: Option<usize>, outcome: Result<Answer, RequestError>, took: Duration) {
        let mut report = lock(&self.report);
        report.slowest = report.slowest.max(took);
        // Like hyper's pooled client: a request that never went out on a connection that had
        // answered before is sent again on a new one; on a fresh connection it is a failure.
        let reused = conn.is_some_and(|id| report.connections[id].answers > 0);
        let failure = match outcome {
            Err(RequestError::NotSent(_)) if reused => {
                report.resent += 1;
                return;
            }
            Ok(answer) if answer.status >= 500 => {
                format!("HTTP {} from {}", answer.status, answer.release)
            }
            Ok(answer) => {
                let protocol = match answer.version {
                    http::Version::HTTP_2 => Protocol::Http2,
                    _ => Protocol::Http1,
                };
                report.ok += 1;
                *report
                    .by_release
                    .entry((answer.release, protocol))
                    .or_default() += 1;
                if let Some(id) = conn {
                    let record = &mut report.connections[id];
                    record.answers += 1;
                    record.last_answer = Some(Instant::now());
                }
                return;
            }
            Err(e) => e.to_string(),
        };
        report.failed += 1;
        if report.failures.len() < 10 {
            let kind = self.kind;
            report.failures.push(format!("{kind:?}: {failure}"));
        }
    }
}
