//! One certificate from the ACME server: new order, one authorization per host answered
//! through the chosen challenge (published in [`Challenges`] until the order is done), ready,
//! poll, finalize with a CSR for a fresh key, download the chain, store it.

use super::account;
use super::challenges::{Challenges, Published};
use super::error::AcmeError;
use super::host::orderable;
use super::http_client::AcmeHttp;
use super::store::CertStore;
use super::{AcmeConfig, ChallengeKind};
use instant_acme::{
    Account, AuthorizationStatus, Identifier, NewOrder, Order, OrderStatus, Problem, RetryPolicy,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Every wait of an order is bounded by these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssueOptions {
    /// One HTTP request to the ACME server, its body included.
    pub request_timeout: Duration,
    /// Waiting for the CA's verdict on the challenges, and again for the certificate once the
    /// order is finalized.
    pub poll_timeout: Duration,
}

impl Default for IssueOptions {
    fn default() -> IssueOptions {
        IssueOptions {
            request_timeout: Duration::from_secs(30),
            poll_timeout: Duration::from_secs(120),
        }
    }
}

/// A certificate just issued and stored.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The hosts it covers, in the order asked (the first names its directory).
    pub hosts: Vec<String>,
    /// `data_dir/certs/<first host>`, holding `cert.pem` and `key.pem`.
    pub dir: PathBuf,
    /// The chain, leaf first.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// The ACME client of one directory. Cheap to clone.
#[derive(Clone)]
pub struct Acme {
    inner: Arc<Inner>,
}

struct Inner {
    config: AcmeConfig,
    account_file: PathBuf,
    challenges: Challenges,
    store: CertStore,
    options: IssueOptions,
    /// Created or loaded on first use; a failure leaves it empty for the next order to retry.
    account: tokio::sync::Mutex<Option<Account>>,
}

impl Acme {
    /// Checks `ca_file` now (a bad one is a configuration error); contacts the server only
    /// when a first certificate is ordered.
    pub fn new(
        config: AcmeConfig,
        data_dir: &Path,
        challenges: Challenges,
        store: CertStore,
        options: IssueOptions,
    ) -> Result<Acme, AcmeError> {
        AcmeHttp::new(config.ca_file.as_deref(), options.request_timeout)?;
        Ok(Acme {
            inner: Arc::new(Inner {
                account_file: data_dir.join("acme").join("account.json"),
                config,
                challenges,
                store,
                options,
                account: tokio::sync::Mutex::new(None),
            }),
        })
    }

    pub fn config(&self) -> &AcmeConfig {
        &self.inner.config
    }

    pub fn challenges(&self) -> &Challenges {
        &self.inner.challenges
    }

    pub fn store(&self) -> &CertStore {
        &self.inner.store
    }

    /// `data_dir/acme/account.json`.
    pub fn account_file(&self) -> &Path {
        &self.inner.account_file
    }

    /// Orders one certificate for `hosts` (at least one; the first names its directory),
    /// proving each through `kind`, stores it and serves it from the store.
    pub async fn issue(&self, hosts: &[String], kind: ChallengeKind) -> Result<Issued, AcmeError> {
        let hosts = orderable_hosts(hosts)?;
        let label = hosts.join(", ");
        let account = self.account().await?;
        let identifiers: Vec<Identifier> =
            hosts.iter().map(|h| Identifier::Dns(h.clone())).collect();
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|source| AcmeError::Order {
                hosts: label.clone(),
                source,
            })?;
        let published = self.answer_challenges(&mut order, kind, &label).await?;
        let polled = order.poll_ready(&self.retry_policy()).await;
        if !matches!(polled, Ok(OrderStatus::Ready)) {
            return Err(self.why_not_ready(&mut order, kind, &label, polled).await);
        }
        // The CA has checked every host: nothing more to answer.
        drop(published);

        let (csr, key_pem) = csr(&hosts).map_err(|reason| AcmeError::Certificate {
            hosts: label.clone(),
            reason,
        })?;
        let finalize_err = |source| AcmeError::Finalize {
            hosts: label.clone(),
            source,
        };
        order.finalize_csr(&csr).await.map_err(finalize_err)?;
        let cert_pem = order
            .poll_certificate(&self.retry_policy())
            .await
            .map_err(finalize_err)?;
        let stored = self.inner.store.save(&hosts[0], &cert_pem, &key_pem)?;
        tracing::info!(hosts = %label, not_after = %humantime::format_rfc3339_seconds(stored.not_after), "certificate issued");
        Ok(Issued {
            dir: self.inner.store.dir().join(&hosts[0]),
            hosts,
            cert_pem,
            key_pem,
            not_before: stored.not_before,
            not_after: stored.not_after,
        })
    }

    async fn account(&self) -> Result<Account, AcmeError> {
        let mut cached = self.inner.account.lock().await;
        if let Some(account) = cached.as_ref() {
            return Ok(account.clone());
        }
        let http = AcmeHttp::new(
            self.inner.config.ca_file.as_deref(),
            self.inner.options.request_timeout,
        )?;
        let account =
            account::load_or_create(&self.inner.config, &self.inner.account_file, Box::new(http))
                .await?;
        *cached = Some(account.clone());
        Ok(account)
    }

    /// Publishes the answer to each pending authorization's challenge and tells the CA to
    /// check it. Hosts the account already proved recently (valid authorizations) need none.
    async fn answer_challenges(
        &self,
        order: &mut Order,
        kind: ChallengeKind,
        label: &str,
    ) -> Result<Vec<Published>, AcmeError> {
        let mut published = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(next) = authorizations.next().await {
            let mut authz = next.map_err(|source| AcmeError::Order {
                hosts: label.to_owned(),
                source,
            })?;
            let host = authz.identifier().to_string();
            let failed = |detail: String| AcmeError::Authorization {
                host: host.clone(),
                challenge: kind,
                detail,
            };
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => return Err(failed(format!("the authorization is {other:?}"))),
            }
            let Some(mut challenge) = authz.challenge(kind.protocol_type()) else {
                return Err(failed(
                    "the ACME server does not offer it for this host".into(),
                ));
            };
            let key_authorization = challenge.key_authorization();
            published.push(match kind {
                ChallengeKind::Http01 => self
                    .inner
                    .challenges
                    .publish_http01(&challenge.token, key_authorization.as_str()),
                ChallengeKind::TlsAlpn01 => self
                    .inner
                    .challenges
                    .publish_tls_alpn01(&host, key_authorization.digest().as_ref())
                    .map_err(failed)?,
            });
            challenge
                .set_ready()
                .await
                .map_err(|e| failed(format!("the ACME server refused to check it: {e}")))?;
        }
        Ok(published)
    }

    /// The clearest reason an order did not become ready: the first host whose authorization
    /// failed (with the CA's words), else the first still pending when the wait ran out.
    async fn why_not_ready(
        &self,
        order: &mut Order,
        kind: ChallengeKind,
        label: &str,
        polled: Result<OrderStatus, instant_acme::Error>,
    ) -> AcmeError {
        let mut pending = None;
        let mut authorizations = order.authorizations();
        while let Some(Ok(mut authz)) = authorizations.next().await {
            let host = authz.identifier().to_string();
            let Ok(state) = authz.refresh().await else {
                continue;
            };
            match state.status {
                AuthorizationStatus::Invalid => {
                    let detail = state
                        .challenges
                        .iter()
                        .find(|c| c.r#type == kind.protocol_type())
                        .and_then(|c| c.error.as_ref())
                        .map(problem_text)
                        .unwrap_or_else(|| "the ACME server found the answer wrong".to_owned());
                    return AcmeError::Authorization {
                        host,
                        challenge: kind,
                        detail,
                    };
                }
                AuthorizationStatus::Pending if pending.is_none() => pending = Some(host),
                _ => {}
            }
        }
        let waited = humantime::format_duration(self.inner.options.poll_timeout);
        match (polled, pending) {
            (Err(instant_acme::Error::Timeout(_)), Some(host)) => AcmeError::Authorization {
                host,
                challenge: kind,
                detail: format!("the ACME server gave no verdict within {waited}"),
            },
            (Err(source), _) => AcmeError::Order {
                hosts: label.to_owned(),
                source,
            },
            (Ok(status), _) => AcmeError::Order {
                hosts: label.to_owned(),
                source: instant_acme::Error::Other(
                    format!("the order became {status:?} instead of ready").into(),
                ),
            },
        }
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(self.inner.options.poll_timeout)
    }
}

/// Lower-cased, checked, each once, in the order given.
fn orderable_hosts(hosts: &[String]) -> Result<Vec<String>, AcmeError> {
    let mut out: Vec<String> = Vec::with_capacity(hosts.len());
    for host in hosts {
        let host = orderable(host)?;
        if !out.contains(&host) {
            out.push(host);
        }
    }
    if out.is_empty() {
        return Err(AcmeError::InvalidHost {
            host: String::new(),
            reason: "no host to order a certificate for",
        });
    }
    Ok(out)
}

/// A CSR for `hosts` with a fresh ECDSA P-256 key, and that key as PEM.
fn csr(hosts: &[String]) -> Result<(Vec<u8>, String), String> {
    let failed = |e: rcgen::Error| format!("cannot make the certificate request: {e}");
    let mut params = rcgen::CertificateParams::new(hosts.to_vec()).map_err(failed)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let key = rcgen::KeyPair::generate().map_err(failed)?;
    let csr = params.serialize_request(&key).map_err(failed)?;
    Ok((csr.der().to_vec(), key.serialize_pem()))
}

/// The CA's words: its detail, and the problem type without the URN prefix.
fn problem_text(problem: &Problem) -> String {
    let kind = problem
        .r#type
        .as_deref()
        .map(|t| t.trim_start_matches("urn:ietf:params:acme:error:"));
    match (problem.detail.as_deref(), kind) {
        (Some(detail), Some(kind)) => format!("{detail} ({kind})"),
        (Some(detail), None) => detail.to_owned(),
        (None, Some(kind)) => kind.to_owned(),
        (None, None) => "the ACME server gave no reason".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_checked_lower_cased_and_deduplicated() {
        let hosts = ["B.example", "a.example", "b.example"].map(String::from);
        assert_eq!(orderable_hosts(&hosts).unwrap(), ["b.example", "a.example"]);
        assert!(orderable_hosts(&[]).is_err());
        let err = orderable_hosts(&["ok.example".into(), "../x".into()]).unwrap_err();
        assert!(err.to_string().starts_with("../x: "), "{err}");
    }

    #[test]
    fn problem_text_keeps_the_detail_and_the_short_type() {
        let problem: Problem = serde_json::from_value(serde_json::json!({
            "type": "urn:ietf:params:acme:error:connection",
            "detail": "127.0.0.2: Connection refused",
        }))
        .unwrap();
        assert_eq!(
            problem_text(&problem),
            "127.0.0.2: Connection refused (connection)"
        );
    }
}
