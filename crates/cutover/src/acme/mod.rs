//! Automatic certificates (ACME, RFC 8555): the account, the order, the challenges the public
//! listeners answer, the certificates on disk and their renewal. Nothing here knows about hyper
//! servers or listeners: they read [`Challenges`] and [`CertStore`] (or use [`CertResolver`]),
//! and the [`CertManager`] keeps both filled.
//!
//! # Layout
//! - `http_client.rs`: instant-acme's HTTP client: hyper-rustls trusting `ca_file` (or the
//!   system's roots), every request (body included) under a timeout.
//! - `account.rs`: the account, created on first use, its key in `data_dir/acme/account.json`.
//! - `challenges.rs`: what the listeners answer while an order is open (HTTP-01 key
//!   authorizations, TLS-ALPN-01 certificates, RFC 8737).
//! - `resolver.rs`: [`CertResolver`], rustls's certificate choice for the https listener.
//! - `issue.rs`: one order from new-order to the stored certificate ([`Acme::issue`]).
//! - `host.rs`: which host names may be ordered (and so name a directory under `certs/`).
//! - `der.rs`: the few fields of an X.509 certificate cutover reads (validity, DNS names).
//! - `files.rs`: the 0600 files, written atomically (temp file, fsync, rename, fsync dir).
//! - `store.rs`: [`CertStore`]: the certificates under `data_dir/certs`, by host for SNI.
//! - `schedule.rs`: when to renew and how long to back off (pure).
//! - `renew.rs`: [`CertManager`]: the wanted certificates, their status, the renewal loop.
//!
//! # What the listeners do with it
//! - http: `GET /.well-known/acme-challenge/<token>` answers [`Challenges::http01`] (200,
//!   the body as is) whenever it has one, before any routing or redirect.
//! - https: `ServerConfig::alpn_protocols` lists [`ACME_TLS_ALPN`] besides `h2`/`http/1.1`,
//!   its resolver is [`CertManager::resolver`] (or combines [`is_acme_tls_alpn`],
//!   [`Challenges::tls_alpn01`] and [`CertStore::lookup`] with certificates of its own), and a
//!   connection that negotiated `acme-tls/1` is closed after the handshake.
//! - the daemon: [`CertManager::set_wanted`] at start and on each reload, one task running
//!   [`CertManager::run`]; [`CertManager::status`] for `status`, `cutover certs` and metrics.
//!
//! # Files
//! ```text
//! data_dir/acme/account.json           the account URL and its private key (0600)
//! data_dir/certs/<first host>/cert.pem the chain, leaf first (0600)
//! data_dir/certs/<first host>/key.pem  its private key, PKCS#8 (0600)
//! ```

mod account;
mod challenges;
mod der;
mod error;
mod files;
mod host;
mod http_client;
mod issue;
mod renew;
mod resolver;
mod schedule;
mod store;

pub use challenges::{is_acme_tls_alpn, Challenges, ACME_TLS_ALPN};
pub use error::AcmeError;
pub use issue::{Acme, IssueOptions, Issued};
pub use renew::{CertManager, CertRequest, CertStatus, Clock, RenewOptions, SystemClock};
pub use resolver::CertResolver;
pub use schedule::{renew_at, Backoff};
pub use store::{CertStore, StoredCert};

use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

/// What `status`, `cutover certs` and metrics show of a certificate chain cutover did not
/// issue (a component's own `tls` files): its leaf's validity and DNS names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub dns_names: Vec<String>,
}

/// The leaf (first certificate) of a PEM chain, read only.
pub fn read_leaf(chain_pem: &[u8]) -> Result<Leaf, String> {
    use rustls::pki_types::pem::PemObject;
    let leaf = rustls::pki_types::CertificateDer::pem_slice_iter(chain_pem)
        .next()
        .ok_or("no certificate in it")?
        .map_err(|e| format!("not a PEM certificate chain: {e}"))?;
    let fields = der::cert_fields(leaf.as_ref())?;
    Ok(Leaf {
        not_before: fields.not_before,
        not_after: fields.not_after,
        dns_names: fields.dns_names,
    })
}

/// Where certificates come from: `[edge] acme = { directory, email, ca_file }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// The ACME server's directory URL (Let's Encrypt's, or a private one).
    pub directory: String,
    /// The account's contact; a CA may mail expiry warnings there.
    pub email: Option<String>,
    /// PEM roots to trust for the ACME server's own HTTPS (a private or test CA such as
    /// Pebble); instead of the system's roots, not besides them.
    pub ca_file: Option<PathBuf>,
}

/// How the CA checks that we control a host name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChallengeKind {
    /// `GET http://<host>/.well-known/acme-challenge/<token>` on port 80.
    Http01,
    /// A TLS handshake on port 443 with ALPN `acme-tls/1` (RFC 8737).
    TlsAlpn01,
}

impl ChallengeKind {
    /// The challenge's name in the protocol (and in every message about it).
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
        }
    }

    fn protocol_type(self) -> instant_acme::ChallengeType {
        match self {
            ChallengeKind::Http01 => instant_acme::ChallengeType::Http01,
            ChallengeKind::TlsAlpn01 => instant_acme::ChallengeType::TlsAlpn01,
        }
    }
}

impl fmt::Display for ChallengeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
