//! What can go wrong getting a certificate, one variant per step; each message names the host(s)
//! and, for a challenge, which one.

use super::ChallengeKind;
use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME ca_file {}: {reason}", path.display())]
    CaFile { path: PathBuf, reason: String },
    #[error("ACME account at {directory}: {source}")]
    Account {
        directory: String,
        source: instant_acme::Error,
    },
    #[error("ACME account file {}: {reason}", path.display())]
    AccountFile { path: PathBuf, reason: String },
    #[error("{host}: cannot order a certificate for it: {reason}")]
    InvalidHost { host: String, reason: &'static str },
    #[error("{hosts}: the ACME server refused the order: {source}")]
    Order {
        hosts: String,
        source: instant_acme::Error,
    },
    /// The CA could not check this host through this challenge (unreachable, wrong answer,
    /// not offered, or no verdict in time).
    #[error("{host}: the {challenge} challenge failed: {detail}")]
    Authorization {
        host: String,
        challenge: ChallengeKind,
        detail: String,
    },
    #[error("{hosts}: finalizing the order failed: {source}")]
    Finalize {
        hosts: String,
        source: instant_acme::Error,
    },
    /// What the CA sent back (or the key and CSR made for it) is not usable.
    #[error("{hosts}: {reason}")]
    Certificate { hosts: String, reason: String },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

pub(super) fn io_err(
    action: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(io::Error) -> AcmeError {
    let path = path.to_path_buf();
    move |source| AcmeError::Io {
        action,
        path,
        source,
    }
}
