//! Pebble (Let's Encrypt's test ACME server, Debian `pebble`) and pebble-challtestsrv (its DNS,
//! answering every name with 127.0.0.1) on loopback, for the ACME tests.

#![allow(dead_code)] // each test that includes it uses a part

use bytes::Bytes;
use cutover::acme::AcmeConfig;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(20);

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Pebble and pebble-challtestsrv, each with its own ports and files, killed on drop.
pub struct Pebble {
    dir: tempfile::TempDir,
    children: Vec<(&'static str, Child)>,
    directory: String,
    management: u16,
    dns_management: u16,
    /// The CA that signed Pebble's HTTPS certificate: what `ca_file` trusts.
    ca_file: PathBuf,
}

pub fn installed(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

impl Pebble {
    /// Pebble checking HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port` of whatever its DNS
    /// answers (127.0.0.1 unless told otherwise); `None` (after a skip note) when not installed
    /// and not under CI.
    pub fn start(http_port: u16, tls_port: u16) -> Option<Pebble> {
        let (Some(pebble), Some(challtestsrv)) =
            (installed("pebble"), installed("pebble-challtestsrv"))
        else {
            let message = "pebble is not installed (Debian package `pebble`: pebble and \
                           pebble-challtestsrv); scripts/test installs it";
            if crate::support::in_ci() {
                panic!("{message}");
            }
            eprintln!("SKIP: {message}");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let ca_file = pebble_https_cert(dir.path());
        let (dns, dns_management) = (crate::support::free_port(), crate::support::free_port());
        let (listen, management) = (crate::support::free_port(), crate::support::free_port());
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

    pub fn log(&self, name: &str) -> String {
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

    pub fn config(&self) -> AcmeConfig {
        AcmeConfig {
            directory: self.directory.clone(),
            email: Some("ops@cutover.test".into()),
            ca_file: Some(self.ca_file.clone()),
        }
    }

    /// The root Pebble issues under, as PEM (it makes a new one at each start).
    pub async fn root_pem(&self) -> String {
        let url = format!("https://localhost:{}/roots/0", self.management);
        https_get(&url, &self.ca_file).await
    }

    /// The root Pebble issues under (it makes a new one at each start).
    pub async fn root(&self) -> CertificateDer<'static> {
        let url = format!("https://localhost:{}/roots/0", self.management);
        let pem = https_get(&url, &self.ca_file).await;
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    /// Makes Pebble's DNS answer `host` with `ip` instead of 127.0.0.1.
    pub fn point_at(&self, host: &str, ip: &str) {
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
pub fn pebble_https_cert(dir: &Path) -> PathBuf {
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

pub async fn https_get(url: &str, ca_file: &Path) -> String {
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
