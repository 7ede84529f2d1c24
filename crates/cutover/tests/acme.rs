//! Automatic certificates (issue 15): certificates issued for real by Pebble, Let's Encrypt's
//! test ACME server (Debian `pebble`), on loopback. `pebble-challtestsrv` is Pebble's DNS,
//! answering every name with 127.0.0.1, and Pebble checks the challenges on the ports of this
//! test's own servers: a hyper HTTP server answering HTTP-01 from `Challenges`, and a
//! tokio-rustls server answering TLS-ALPN-01 through `CertResolver`. Pebble's own HTTPS
//! certificate is made here, and trusted through `ca_file`.
//!
//! Without pebble installed a test prints a skip note, except under `CI=true`, where it fails.

mod support;

use bytes::Bytes;
use cutover::acme::{
    Acme, AcmeConfig, AcmeError, Backoff, CertManager, CertRequest, CertResolver, CertStatus,
    CertStore, ChallengeKind, Challenges, Clock, IssueOptions, RenewOptions, ACME_TLS_ALPN,
};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::AsyncWriteExt;

const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Longer than any order takes against Pebble with PEBBLE_VA_NOSLEEP (well under a second).
const ORDER_DEADLINE: Duration = Duration::from_secs(60);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// ---------------------------------------------------------------------------------------------
// Pebble and its DNS

/// Pebble and pebble-challtestsrv, each with its own ports and files, killed on drop.
struct Pebble {
    dir: tempfile::TempDir,
    children: Vec<(&'static str, Child)>,
    directory: String,
    management: u16,
    dns_management: u16,
    /// The CA that signed Pebble's HTTPS certificate: what `ca_file` trusts.
    ca_file: PathBuf,
}

fn installed(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

impl Pebble {
    /// Pebble checking HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port` of whatever its DNS
    /// answers (127.0.0.1 unless told otherwise); `None` (after a skip note) when not installed
    /// and not under CI.
    fn start(http_port: u16, tls_port: u16) -> Option<Pebble> {
        let (Some(pebble), Some(challtestsrv)) =
            (installed("pebble"), installed("pebble-challtestsrv"))
        else {
            let message = "pebble is not installed (Debian package `pebble`: pebble and \
                           pebble-challtestsrv); scripts/test installs it";
            if support::in_ci() {
                panic!("{message}");
            }
            eprintln!("SKIP: {message}");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let ca_file = pebble_https_cert(dir.path());
        let (dns, dns_management) = (support::free_port(), support::free_port());
        let (listen, management) = (support::free_port(), support::free_port());
        let mut this = Pebble {
            directory: format!("https://localhost:{listen}/dir"),
            management,
            dns_management,
            ca_file,
            children: Vec::new(),
            dir,
        };

        let mut dns_server = this.command(&challtestsrv, "challtestsrv");
        dns_server.args([
            "-dns01",
            &format!("127.0.0.1:{dns}"),
            "-management",
            &format!("127.0.0.1:{dns_management}"),
            "-defaultIPv4",
            "127.0.0.1",
            // No AAAA answers: the test servers listen on 127.0.0.1 only.
            "-defaultIPv6",
            "",
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
        ]);
        this.spawn("challtestsrv", dns_server);
        this.wait_listening("challtestsrv", dns_management);

        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{listen}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": this.dir.path().join("pebble-cert.pem"),
                "privateKey": this.dir.path().join("pebble-key.pem"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }
        });
        let config_path = this.dir.path().join("pebble-config.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let mut server = this.command(&pebble, "pebble");
        server
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            // Check challenges at once, accept every nonce, and check every order's hosts
            // (no reuse of an earlier valid authorization).
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0");
        this.spawn("pebble", server);
        this.wait_listening("pebble", listen);
        this.wait_listening("pebble", management);
        Some(this)
    }

    /// `program` dying with this thread when setpriv is there, its output in a log file.
    fn command(&self, program: &Path, name: &str) -> Command {
        let mut cmd = match installed("setpriv") {
            Some(setpriv) => {
                let mut cmd = Command::new(setpriv);
                cmd.arg("--pdeathsig=SIGKILL").arg(program);
                cmd
            }
            None => Command::new(program),
        };
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        cmd
    }

    fn spawn(&mut self, name: &'static str, mut cmd: Command) {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        self.children.push((name, child));
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    fn wait_listening(&mut self, name: &str, port: u16) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            let exited = self.children.iter_mut().find_map(|(child_name, child)| {
                let status = child.try_wait().ok().flatten()?;
                Some((*child_name, status))
            });
            if let Some((child_name, status)) = exited {
                panic!("{child_name} exited ({status}):\n{}", self.log(child_name));
            }
            assert!(
                Instant::now() < deadline,
                "{name} not listening on {port} after {START_TIMEOUT:?}:\n{}",
                self.log(name)
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn config(&self) -> AcmeConfig {
        AcmeConfig {
            directory: self.directory.clone(),
            email: Some("ops@cutover.test".into()),
            ca_file: Some(self.ca_file.clone()),
        }
    }

    /// The root Pebble issues under (it makes a new one at each start).
    async fn root(&self) -> CertificateDer<'static> {
        let url = format!("https://localhost:{}/roots/0", self.management);
        let pem = https_get(&url, &self.ca_file).await;
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    /// Makes Pebble's DNS answer `host` with `ip` instead of 127.0.0.1.
    fn point_at(&self, host: &str, ip: &str) {
        let body = serde_json::json!({ "host": format!("{host}."), "addresses": [ip] }).to_string();
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.dns_management)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "POST /add-a HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "add-a: {answer}");
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A CA and, signed by it, Pebble's HTTPS certificate for localhost; returns the CA's file.
fn pebble_https_cert(dir: &Path) -> PathBuf {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(DnType::CommonName, "cutover test CA for Pebble's HTTPS");
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("pebble-cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("pebble-key.pem"), key.serialize_pem()).unwrap();
    let ca_file = dir.join("pebble-https-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    ca_file
}

async fn https_get(url: &str, ca_file: &Path) -> String {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
    let response = tokio::time::timeout(Duration::from_secs(10), client.get(url.parse().unwrap()))
        .await
        .expect("GET timed out")
        .unwrap_or_else(|e| panic!("GET {url}: {e:?}"));
    assert_eq!(response.status(), 200, "GET {url}");
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .unwrap()
        .unwrap();
    String::from_utf8(body.to_bytes().to_vec()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The listeners Pebble checks: minimal stand-ins for cutover's http and https listeners

/// The test's two challenge servers, its data_dir and the shared challenge store.
struct Harness {
    pebble: Pebble,
    data: tempfile::TempDir,
    challenges: Challenges,
    /// The store the TLS server serves from (and that `acme()` issues into).
    store: CertStore,
    tls_port: u16,
    /// Challenge answers each server gave (HTTP-01 bodies; `acme-tls/1` handshakes).
    http01_answers: Arc<AtomicUsize>,
    tls_alpn01_answers: Arc<AtomicUsize>,
}

impl Harness {
    async fn start() -> Option<Harness> {
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (http_port, tls_port) = (
            http.local_addr().unwrap().port(),
            tls.local_addr().unwrap().port(),
        );
        let pebble = Pebble::start(http_port, tls_port)?;
        let data = tempfile::tempdir().unwrap();
        let challenges = Challenges::new();
        let store = CertStore::load(data.path()).unwrap();
        let http01_answers = Arc::new(AtomicUsize::new(0));
        let tls_alpn01_answers = Arc::new(AtomicUsize::new(0));
        tokio::spawn(serve_http01(
            http,
            challenges.clone(),
            http01_answers.clone(),
        ));
        let resolver = CertResolver::new(challenges.clone(), store.clone());
        tokio::spawn(serve_tls(tls, resolver, tls_alpn01_answers.clone()));
        Some(Harness {
            pebble,
            data,
            challenges,
            store,
            tls_port,
            http01_answers,
            tls_alpn01_answers,
        })
    }

    fn acme(&self) -> Acme {
        Acme::new(
            self.pebble.config(),
            self.data.path(),
            self.challenges.clone(),
            self.store.clone(),
            IssueOptions {
                request_timeout: Duration::from_secs(10),
                poll_timeout: Duration::from_secs(30),
            },
        )
        .unwrap()
    }

    fn manager(&self, clock: Arc<TestClock>) -> CertManager {
        CertManager::new(
            self.acme(),
            RenewOptions {
                clock,
                backoff: Backoff {
                    min: Duration::from_secs(60),
                    max: Duration::from_secs(6 * 3600),
                },
                max_sleep: Duration::from_millis(50),
            },
        )
    }

    /// Connects to the TLS server as a client trusting only Pebble's root, for `host`.
    async fn served_leaf(&self, host: &str, root: &CertificateDer<'static>) -> Vec<u8> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.tls_port))
            .await
            .unwrap();
        let name = ServerName::try_from(host.to_owned()).unwrap();
        let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
            .await
            .expect("TLS handshake timed out")
            .unwrap_or_else(|e| panic!("TLS handshake for {host}: {e}"));
        let (_, conn) = tls.get_ref();
        conn.peer_certificates().unwrap()[0].as_ref().to_vec()
    }
}

async fn serve_http01(
    listener: tokio::net::TcpListener,
    challenges: Challenges,
    answers: Arc<AtomicUsize>,
) {
    while let Ok((stream, _)) = listener.accept().await {
        let challenges = challenges.clone();
        let answers = answers.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: http::Request<_>| {
                let answer = request
                    .uri()
                    .path()
                    .strip_prefix("/.well-known/acme-challenge/")
                    .and_then(|token| challenges.http01(token));
                if answer.is_some() {
                    answers.fetch_add(1, Ordering::SeqCst);
                }
                let response = match answer {
                    Some(body) => http::Response::new(Full::new(Bytes::from(body))),
                    None => http::Response::builder()
                        .status(404)
                        .body(Full::new(Bytes::new()))
                        .unwrap(),
                };
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn serve_tls(
    listener: tokio::net::TcpListener,
    resolver: CertResolver,
    answers: Arc<AtomicUsize>,
) {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    while let Ok((stream, _)) = listener.accept().await {
        let acceptor = acceptor.clone();
        let answers = answers.clone();
        tokio::spawn(async move {
            let accepted =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await;
            let Ok(Ok(mut tls)) = accepted else { return };
            if tls.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN) {
                answers.fetch_add(1, Ordering::SeqCst);
            }
            // A challenge connection carries no data (RFC 8737); neither does a test client's.
            let _ = tls.shutdown().await;
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// A clock the test moves.
struct TestClock(Mutex<SystemTime>);

impl TestClock {
    fn new() -> Arc<TestClock> {
        Arc::new(TestClock(Mutex::new(SystemTime::now())))
    }

    fn set(&self, to: SystemTime) {
        *self.0.lock().unwrap() = to;
    }

    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

/// Polls `check` every 20 ms until it gives a value, failing after `deadline`.
async fn eventually<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < until, "not within {deadline:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn status_of(manager: &CertManager, name: &str) -> CertStatus {
    manager
        .status()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no status for {name}"))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Checks `chain_pem` (leaf first) for `host` the way a TLS client trusting only `root` would.
fn assert_chain_verifies(chain_pem: &str, host: &str, root: &CertificateDer<'static>) {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        chain.len() >= 2,
        "the chain has the leaf and an intermediate"
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
    let name = ServerName::try_from(host.to_owned()).unwrap();
    verifier
        .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
        .unwrap_or_else(|e| panic!("the chain for {host} does not verify: {e}"));
    let other = ServerName::try_from("other.cutover.test").unwrap();
    assert!(
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &other, &[], UnixTime::now())
            .is_err(),
        "the certificate must not cover other names"
    );
}

fn leaf_of(pem: &str) -> Vec<u8> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .as_ref()
        .to_vec()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_certificate_is_issued_stored_0600_and_loaded_back() {
    let Some(h) = Harness::start().await else {
        return;
    };
    let host = "api.cutover.test";
    let issued = h
        .acme()
        .issue(&[host.into()], ChallengeKind::Http01)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", h.pebble.log("pebble")));

    assert!(
        h.http01_answers.load(Ordering::SeqCst) >= 1,
        "Pebble asked our HTTP server"
    );
    assert_eq!(
        h.challenges.open(),
        0,
        "the challenge is withdrawn after the order"
    );
    assert_eq!(issued.hosts, [host]);
    assert!(issued.not_after > SystemTime::now() + Duration::from_secs(86_400));
    assert!(issued.not_before < issued.not_after);

    let dir = h.data.path().join("certs").join(host);
    assert_eq!(issued.dir, dir);
    for file in ["cert.pem", "key.pem"] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    let account = h.data.path().join("acme/account.json");
    assert_eq!(mode(&account), 0o600);
    assert_eq!(
        std::fs::read_to_string(dir.join("cert.pem")).unwrap(),
        issued.cert_pem
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("key.pem")).unwrap(),
        issued.key_pem
    );

    let root = h.pebble.root().await;
    assert_chain_verifies(&issued.cert_pem, host, &root);

    // A fresh store (a restart) loads it back and serves it for the host's SNI name.
    let fresh = CertStore::load(h.data.path()).unwrap();
    let loaded = fresh.get(host).expect("loaded back");
    assert_eq!(loaded.hosts, [host]);
    assert_eq!(loaded.not_after, issued.not_after);
    let served = fresh
        .lookup("API.cutover.test")
        .expect("served by SNI name");
    assert_eq!(
        served.cert[0].as_ref(),
        leaf_of(&issued.cert_pem).as_slice()
    );
    assert!(fresh.lookup("other.cutover.test").is_none());

    // A fresh client (a restart) reuses the stored account rather than creating another.
    let account_before = std::fs::read(&account).unwrap();
    let second = Acme::new(
        h.pebble.config(),
        h.data.path(),
        h.challenges.clone(),
        fresh.clone(),
        IssueOptions::default(),
    )
    .unwrap();
    let www = second
        .issue(&["www.cutover.test".into()], ChallengeKind::Http01)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&account).unwrap(), account_before);
    assert_chain_verifies(&www.cert_pem, "www.cutover.test", &root);
    assert!(fresh.lookup("www.cutover.test").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_certificate_is_issued_and_served_by_the_tls_listener() {
    let Some(h) = Harness::start().await else {
        return;
    };
    let host = "tls.cutover.test";
    let issued = h
        .acme()
        .issue(&[host.into()], ChallengeKind::TlsAlpn01)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", h.pebble.log("pebble")));

    assert!(
        h.tls_alpn01_answers.load(Ordering::SeqCst) >= 1,
        "Pebble completed an acme-tls/1 handshake with our TLS server"
    );
    assert_eq!(h.http01_answers.load(Ordering::SeqCst), 0);
    assert_eq!(h.challenges.open(), 0);
    let dir = h.data.path().join("certs").join(host);
    for file in ["cert.pem", "key.pem"] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }

    let root = h.pebble.root().await;
    assert_chain_verifies(&issued.cert_pem, host, &root);
    // A client trusting only Pebble's root completes a handshake and sees the new certificate.
    let served = h.served_leaf(host, &root).await;
    assert_eq!(served, leaf_of(&issued.cert_pem));

    let fresh = CertStore::load(h.data.path()).unwrap();
    assert_eq!(
        fresh.lookup(host).unwrap().cert[0].as_ref(),
        served.as_slice()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_authorization_names_host_and_challenge_and_other_hosts_still_get_theirs() {
    let Some(h) = Harness::start().await else {
        return;
    };
    // Nothing listens on 127.0.0.2: Pebble's check of this host cannot connect.
    let down = "down.cutover.test";
    h.pebble.point_at(down, "127.0.0.2");

    for kind in [ChallengeKind::Http01, ChallengeKind::TlsAlpn01] {
        let err = h.acme().issue(&[down.into()], kind).await.unwrap_err();
        match &err {
            AcmeError::Authorization {
                host, challenge, ..
            } => {
                assert_eq!(host, down);
                assert_eq!(*challenge, kind);
            }
            other => panic!("expected an authorization error, got: {other}"),
        }
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("{down}: the {kind} challenge failed: ")),
            "{text}"
        );
        assert!(
            text.contains("127.0.0.2"),
            "the CA's reason is kept: {text}"
        );
        assert_eq!(h.challenges.open(), 0, "withdrawn after a failure too");
    }

    // Through the manager's loop: the failing host backs off, the other is issued.
    let clock = TestClock::new();
    let manager = h.manager(clock.clone());
    let up = "up.cutover.test";
    manager.set_wanted(vec![
        CertRequest {
            hosts: vec![down.into()],
            kind: ChallengeKind::Http01,
        },
        CertRequest {
            hosts: vec![up.into()],
            kind: ChallengeKind::Http01,
        },
    ]);
    let (stop, shutdown) = cutover::shutdown::channel();
    let running = tokio::spawn(manager.clone().run(shutdown));

    let failed = eventually(
        "the failing host's first order ends",
        ORDER_DEADLINE,
        || {
            let s = status_of(&manager, down);
            (s.failures >= 1 && !s.issuing).then_some(s)
        },
    )
    .await;
    let issued = eventually("the other host is issued", ORDER_DEADLINE, || {
        let s = status_of(&manager, up);
        s.not_after.is_some().then_some(s)
    })
    .await;
    assert_eq!(issued.last_error, None);
    assert_eq!(issued.failures, 0);
    assert!(h.store.lookup(up).is_some());
    assert!(h.store.lookup(down).is_none());

    assert_eq!(failed.failures, 1);
    let error = failed.last_error.clone().unwrap();
    assert!(
        error.starts_with(&format!("{down}: the http-01 challenge failed: ")),
        "{error}"
    );
    assert_eq!(failed.not_after, None);
    let first_failure = failed.last_attempt.unwrap();
    assert_eq!(failed.next_attempt, clock.now() + Duration::from_secs(60));

    // Nothing more before the backoff has passed (the loop wakes every 50 ms meanwhile).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status_of(&manager, down).failures, 1);
    // After it, the next failure doubles the wait.
    clock.advance(Duration::from_secs(61));
    let again = eventually("the failing host is retried", ORDER_DEADLINE, || {
        let s = status_of(&manager, down);
        (s.failures >= 2 && !s.issuing).then_some(s)
    })
    .await;
    assert!(again.last_attempt.unwrap() > first_failure);
    assert_eq!(again.next_attempt, clock.now() + Duration::from_secs(120));
    assert_eq!(status_of(&manager, up).failures, 0);

    stop.trigger();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the loop stops on shutdown")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_renewal_loop_replaces_the_certificate_at_two_thirds_of_its_lifetime() {
    let Some(h) = Harness::start().await else {
        return;
    };
    let host = "renew.cutover.test";
    let clock = TestClock::new();
    let manager = h.manager(clock.clone());
    manager.set_wanted(vec![CertRequest {
        hosts: vec![host.into()],
        kind: ChallengeKind::TlsAlpn01,
    }]);
    let (stop, shutdown) = cutover::shutdown::channel();
    let running = tokio::spawn(manager.clone().run(shutdown));

    let first = eventually("the first certificate", ORDER_DEADLINE, || {
        let s = status_of(&manager, host);
        s.not_after.is_some().then_some(s)
    })
    .await;
    let (not_before, not_after) = (first.not_before.unwrap(), first.not_after.unwrap());
    let lifetime = not_after.duration_since(not_before).unwrap();
    assert_eq!(first.renew_at, Some(not_before + lifetime * 2 / 3));
    assert_eq!(first.next_attempt, first.renew_at.unwrap());
    let root = h.pebble.root().await;
    let old_leaf = h.served_leaf(host, &root).await;

    // Just before two thirds: nothing happens.
    clock.set(first.renew_at.unwrap() - Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status_of(&manager, host).last_issued, first.last_issued);
    assert_eq!(h.served_leaf(host, &root).await, old_leaf);

    // At it: the loop orders a new one, stores it and serves it instead. (Exactly at it: the
    // new certificate starts later than the first by the real time passed, so its own renewal
    // is in the clock's future however Pebble dates its certificates.)
    clock.set(first.renew_at.unwrap());
    let renewed = eventually("the renewed certificate", ORDER_DEADLINE, || {
        let s = status_of(&manager, host);
        (s.last_issued != first.last_issued).then_some(s)
    })
    .await;
    assert_eq!(renewed.failures, 0);
    assert_eq!(renewed.last_error, None);
    assert!(
        renewed.next_attempt > clock.now(),
        "the next renewal is in the future"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        status_of(&manager, host).last_issued,
        renewed.last_issued,
        "renewed once, not again and again"
    );
    let new_leaf = h.served_leaf(host, &root).await;
    assert_ne!(
        new_leaf, old_leaf,
        "the listener serves the new certificate"
    );
    let on_disk =
        std::fs::read_to_string(h.data.path().join("certs").join(host).join("cert.pem")).unwrap();
    assert_eq!(leaf_of(&on_disk), new_leaf);
    assert_chain_verifies(&on_disk, host, &root);
    assert_eq!(
        CertStore::load(h.data.path())
            .unwrap()
            .lookup(host)
            .unwrap()
            .cert[0]
            .as_ref(),
        new_leaf.as_slice(),
        "a restart loads the new one"
    );

    stop.trigger();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the loop stops on shutdown")
        .unwrap();
}
