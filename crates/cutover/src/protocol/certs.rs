//! The control API's answer about certificates (`GET /v1/certs`, `cutover certs`).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `GET /v1/certs`, and `cutover certs` read from disk while the daemon is down.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CertsResponse {
    /// False when read from `data_dir/certs` and the config's `tls` files (no daemon answered).
    pub online: bool,
    pub certificates: Vec<CertificateInfo>,
}

/// Where a certificate comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertSource {
    /// Issued and renewed by cutover (`[edge] acme`).
    Acme,
    /// A component's own `tls = { cert, key }` files.
    File,
}

/// One certificate of the shared https listener. Times are ms since the epoch.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CertificateInfo {
    /// ACME: the first host (its directory under `data_dir/certs`); file: the component.
    pub name: String,
    pub hosts: Vec<String>,
    pub source: CertSource,
    /// The certificate file (ACME: under `data_dir/certs`).
    pub path: PathBuf,
    /// ACME: `http-01` or `tls-alpn-01`.
    #[serde(default)]
    pub challenge: Option<String>,
    /// The certificate served now; none when there is none (not issued yet, or unreadable).
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
    /// ACME: when it is renewed (two thirds into its lifetime).
    #[serde(default)]
    pub renew_at: Option<i64>,
    /// ACME, daemon running: when the next order starts (the past: as soon as it can).
    #[serde(default)]
    pub next_attempt: Option<i64>,
    /// ACME: an order for it runs now.
    #[serde(default)]
    pub issuing: bool,
    /// ACME: consecutive failed orders.
    #[serde(default)]
    pub failures: u32,
    /// Why the last order failed, or why the files on disk cannot be used.
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub last_attempt: Option<i64>,
}
