//! Automatic certificates (issue 15): certificates issued for real by Pebble, Let's Encrypt's
//! test ACME server (Debian `pebble`), on loopback. `pebble-challtestsrv` is Pebble's DNS,
//! answering every name with 127.0.0.1, and Pebble checks the challenges on the ports of this
//! test's own servers: a hyper HTTP server answering HTTP-01 from `Challenges`, and a
//! tokio-rustls server answering TLS-ALPN-01 through `CertResolver`. Pebble's own HTTPS
//! certificate is made here, and trusted through `ca_file`.
//!
//! Without pebble installed a test prints a skip note, except under `CI=true`, where it fails.

#[path = "support/pebble.rs"]
mod pebble;
mod support;

use bytes::Bytes;
use cutover::acme::{
    Acme, AcmeError, Backoff, CertManager, CertRequest, CertResolver, CertStatus, CertStore,
    ChallengeKind, Challenges, Clock, IssueOptions, RenewOptions, ACME_TLS_ALPN,
};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::AsyncWriteExt;

/// Longer than any order takes against Pebble with PEBBLE_VA_NOSLEEP (well under a second).
const ORDER_DEADLINE: Duration = Duration::from_secs(60);

use pebble::{provider, Pebble};

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

    // The order stores the certificate (so not_after shows) a moment before the loop records
    // it as issued: wait for the attempt to have finished, or the comparisons below race it
    // (a clean-clone CI run caught that).
    let first = eventually("the first certificate", ORDER_DEADLINE, || {
        let s = status_of(&manager, host);
        (s.not_after.is_some() && s.last_issued.is_some() && !s.issuing).then_some(s)
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
    // is in the clock's future however Pebble dates its certificates. Certificates are dated to
    // the second: a full second must pass first, or both may start in the same one; a clean-
    // clone CI run caught that.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
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
